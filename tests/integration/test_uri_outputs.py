"""Feature tables and training snapshots written to URI roots, swapped in by ``current.json``.

- the pointer swap itself (fsspec memory and ``file://``): the pointer moves only after a
  complete write with its manifest, a run failing mid-write leaves it (and the previous
  output) untouched, and the streamed content hash equals the local one;
- feature tables on S3 (moto's server on loopback, ``s3a://``) read by ``feast apply``'s
  sources and by the snapshot, the snapshot written to S3 and read back by training's
  loader, equal to the local snapshot; a snapshot failing mid-write keeps the last good one;
- the Spark feature job writing to a ``file://`` root through Spark's writer, a run failing
  mid-write keeping the previous tables current, and ``feast apply`` following the pointer.

Spark itself writing to ``s3a://`` needs the hadoop-aws jars, which are not installed here;
that path is not tested (docs/scaling.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookalike import artifacts
from lookalike.errors import ArtifactError, DataValidationError
from lookalike.storage import filesystem, publish, read_pointer
from lookalike.uri_outputs import pointer_swap, resolve, sha256_tree, verify_manifest, write_manifest
from tests.fixtures.data import LABEL_DATE, RUN_DATE
from tests.fixtures.feast import apply_repo
from tests.fixtures.object_store import BUCKET

pytestmark = pytest.mark.integration


def _write_generation(uri: str, rows: int) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(f"{path}/data.parquet", exist_ok=True)
    with fs.open(f"{path}/data.parquet/part-0.parquet", "wb") as handle:
        pq.write_table(pa.table({"customer_id": pa.array(range(rows), pa.int64())}), handle)


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_pointer_moves_only_after_a_complete_write(scheme: str, tmp_path: Path) -> None:
    root = f"memory://uri-outputs-{tmp_path.name}/snap" if scheme == "memory" else f"file://{tmp_path / 'snap'}"
    with pointer_swap(root, "snapshot") as first:
        _write_generation(first.uri, 3)
        write_manifest(first.uri, "test", rows=3)
    assert resolve(root) == first.uri and verify_manifest(resolve(root), "test")["rows"] == 3

    # fails mid-write: data half there, no manifest -- the pointer and the first output stay
    with pytest.raises(RuntimeError, match="disk full"), pointer_swap(root, "snapshot") as failed:
        _write_generation(failed.uri, 5)
        raise RuntimeError("disk full")
    assert resolve(root) == first.uri
    fs, failed_path = filesystem(failed.uri)
    assert not fs.exists(failed_path)  # the partial generation was removed, never pointed at

    # a writer that forgets the manifest cannot move the pointer either
    with pytest.raises(ArtifactError, match="has no manifest.json"), pointer_swap(root, "snapshot") as unfinished:
        _write_generation(unfinished.uri, 7)
    assert resolve(root) == first.uri and read_pointer(root)["name"] == "snapshot"

    # the streamed hash of a URI directory is the local hash of the same files
    local = tmp_path / "local"
    fs, path = filesystem(first.uri)
    fs.get(f"{path}/", str(local) + "/", recursive=True)
    assert sha256_tree(first.uri) == artifacts.sha256_tree(local)


def test_snapshot_on_s3_reads_s3_feature_tables_and_trains_from_s3(
        s3_server: str, synthetic_repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike import snapshot as snapshot_module
    from lookalike.feast_utils import open_store
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from training.data import load_snapshot

    features_root = f"s3a://{BUCKET}/features"
    published = publish(synthetic_repo_dir.parent / "features", features_root, "features")
    repo = apply_repo(tmp_path / "repo", features_root)  # type: ignore[arg-type]
    store = open_store(repo)
    view = store.get_feature_view("devices")
    # the registered source is the pointer's target, in the file store's fsspec spelling (s3://)
    assert view.batch_source.path == published.replace("s3a://", "s3://") + "/devices"

    local = load_snapshot(snapshot_run(SnapshotConfig(repo=synthetic_repo_dir, label_date=LABEL_DATE,
                                                      out=tmp_path / "local")), min_customers=1)
    out = f"s3a://{BUCKET}/snapshots"
    written = snapshot_run(SnapshotConfig(repo=repo, label_date=LABEL_DATE, out=out))
    date_root = f"{out}/{local.contract.service_name}/{LABEL_DATE}"
    assert isinstance(written, str) and written.startswith(date_root + "/snapshot.")
    remote = load_snapshot(date_root, min_customers=1)  # through current.json
    assert remote.path == written
    pd.testing.assert_frame_equal(remote.frame, local.frame)
    assert remote.content_hash == local.content_hash  # same bytes, same relative paths
    for key in ("row_count", "rows_missing_features", "segment_vocabulary", "customers_opted_in"):
        assert remote.manifest[key] == local.manifest[key]

    # a snapshot failing after its data is written, before its manifest: the last good one stays
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("connection reset while writing manifest.json")

    monkeypatch.setattr(snapshot_module, "write_uri_manifest", fail)
    with pytest.raises(OSError, match="connection reset"):
        snapshot_run(SnapshotConfig(repo=repo, label_date=LABEL_DATE, out=out))
    fs, root_path = filesystem(date_root)
    assert [p.rsplit("/", 1)[1] for p in fs.ls(root_path, detail=False)] == sorted(
        ["current.json", written.rsplit("/", 1)[1]])
    assert load_snapshot(date_root, min_customers=1).content_hash == remote.content_hash
    with pytest.raises(DataValidationError, match="snapshot not found"):
        load_snapshot(f"s3a://{BUCKET}/snapshots/nothing-here", min_customers=1)


def test_feature_job_writes_a_file_uri_and_a_failed_run_keeps_the_last_good_tables(
        tmp_path: Path, spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookalike.datagen import DatagenConfig
    from lookalike.datagen import run as datagen
    from lookalike.feast_utils import open_store
    from spark_jobs import runner
    from spark_jobs.runner import FEATURE_TABLES, FeaturesConfig

    raw = datagen(DatagenConfig(customers=300, seed=5, out_dir=tmp_path / "raw"))
    root = f"file://{tmp_path / 'features'}"
    config = FeaturesConfig(raw_dir=raw, out_dir=root, start_date=LABEL_DATE, end_date=RUN_DATE, shuffle_partitions=2)
    tables = runner.run(config, spark=spark)
    generation = resolve(root)
    assert set(tables) == set(FEATURE_TABLES) and all(str(t).startswith(generation) for t in tables.values())
    manifest = verify_manifest(generation, "feature_tables")
    assert manifest["snapshot_dates"] == [LABEL_DATE, RUN_DATE]
    profile = pd.read_parquet(tmp_path / "features" / generation.rsplit("/", 1)[1] / "profile")
    assert len(profile) == manifest["tables"]["profile"]["rows"] > 0

    # fail after some tables were written by Spark: nothing moves, the partial run is removed
    validate = runner.validate_output

    def fail_on_tech_config(table: str, *args: Any) -> None:
        if table == "tech_config":
            raise DataValidationError("tech_config: injected failure mid-write")
        validate(table, *args)

    monkeypatch.setattr(runner, "validate_output", fail_on_tech_config)
    pointer_before = (tmp_path / "features" / "current.json").read_text()
    with pytest.raises(DataValidationError, match="injected failure"):
        runner.run(config, spark=spark)
    assert (tmp_path / "features" / "current.json").read_text() == pointer_before
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == sorted(
        ["current.json", generation.rsplit("/", 1)[1]])
    assert verify_manifest(resolve(root), "feature_tables")["content_hash"] == manifest["content_hash"]

    # Feast's sources follow the pointer, whether given the URI or the plain directory
    for number, data_dir in enumerate((root, tmp_path / "features")):
        repo = apply_repo(tmp_path / f"repo-{number}", data_dir)  # type: ignore[arg-type]
        source = open_store(repo).get_feature_view("profile").batch_source.path
        assert source == str(tmp_path / "features" / generation.rsplit("/", 1)[1] / "profile")
    assert json.loads(pointer_before)["snapshot_dates"] == [LABEL_DATE, RUN_DATE]


def test_a_plain_directory_keeps_the_rename_swap(tmp_path: Path) -> None:
    """The local default is unchanged: no pointer, the output is the directory itself."""
    from spark_jobs.runner import _previous_manifest

    out = tmp_path / "features"
    with artifacts.atomic_dir(out) as tmp:
        artifacts.write_manifest(tmp, "feature_tables", tables={})
    assert resolve(str(out)) == str(out) and not (out / "current.json").exists()
    assert _previous_manifest(out) is not None and _previous_manifest(str(tmp_path / "none")) is None
    shutil.rmtree(out)


def test_training_fits_a_snapshot_read_through_a_uri_pointer(tmp_path: Path) -> None:
    """``lookalike train snapshot=<uri>``: same data through the pointer, same model as from the directory."""
    from lookalike.config import load_config
    from tests.fixtures.model import REPO_ROOT, SMOKE_OVERRIDES
    from training.config import TrainConfig
    from training.synthetic import make_synthetic_snapshot
    from training.train import fit

    local = make_synthetic_snapshot(tmp_path / "snapshot", n=600, seed=3)
    root = f"file://{tmp_path / 'published'}"
    published = publish(local, root, "snapshot")

    def trained(snapshot: str | Path) -> Any:
        return fit(load_config(TrainConfig, REPO_ROOT / "configs" / "training.yaml",
                               [*SMOKE_OVERRIDES, f"snapshot={snapshot}", "epochs=1"]))

    from_uri, from_dir = trained(root), trained(local)
    assert from_uri.snapshot.path == published and from_uri.snapshot.content_hash == from_dir.snapshot.content_hash
    for key, value in from_dir.encoder.tower.state_dict().items():
        assert (from_uri.encoder.tower.state_dict()[key] == value).all(), key
