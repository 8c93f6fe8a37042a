"""Publishing artifacts to URI roots with a ``current.json`` pointer, never a rename.

On fsspec's memory filesystem and on a real S3 API (moto's server on loopback, through
s3fs, addressed as ``s3a://``): the pointer moves only after every upload of a publish
succeeded, readers resolve it to a complete artifact, and a failed publish leaves the
previous pointer and artifact untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lookalike.errors import ArtifactError
from lookalike.storage import (
    Publication,
    fetch,
    filesystem,
    publish,
    publish_all,
    read_pointer,
    resolve_current,
)

pytestmark = pytest.mark.integration


def _artifact(directory: Path, rows: int) -> Path:
    (directory / "sub").mkdir(parents=True)
    pq.write_table(_table(rows), directory / "segments.parquet")
    (directory / "sub" / "manifest.json").write_text(json.dumps({"rows": rows}))
    return directory


def _table(rows: int):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.table({"customer_id": pa.array(range(rows), pa.int64())})


def _check_publish_cycle(root: str, tmp_path: Path) -> None:
    first = publish(_artifact(tmp_path / "a", 3), root, "2026-11-15", index_version="v1")
    assert resolve_current(root).endswith(first.rsplit("/", 1)[1])
    assert read_pointer(root)["name"] == "2026-11-15" and read_pointer(root)["index_version"] == "v1"
    second = publish(_artifact(tmp_path / "b", 5), root, "2026-11-22")
    assert second != first
    local = fetch(resolve_current(root), tmp_path / "fetched")
    assert pq.read_table(local / "segments.parquet").num_rows == 5
    assert json.loads((local / "sub" / "manifest.json").read_text()) == {"rows": 5}
    fs, path = filesystem(resolve_current(root))
    with fs.open(f"{path}/segments.parquet", "rb") as handle:  # readers can stream it in place
        assert pq.read_table(handle).num_rows == 5

    # a publish whose second upload fails moves no pointer
    good = Publication(_artifact(tmp_path / "c", 7), root, "2026-11-29")
    missing = Publication(tmp_path / "does-not-exist", root + "/other", "2026-11-29")
    with pytest.raises(ArtifactError, match="nothing to publish"):
        publish_all([good, missing])
    assert read_pointer(root)["name"] == "2026-11-22"
    assert pq.read_table(fetch(resolve_current(root), tmp_path / "again") / "segments.parquet").num_rows == 5


def test_publish_to_memory_filesystem(tmp_path: Path) -> None:
    _check_publish_cycle("memory://lookalike-test/segments", tmp_path)


def test_publish_to_a_local_file_uri(tmp_path: Path) -> None:
    _check_publish_cycle(f"file://{tmp_path / 'published'}", tmp_path / "work")
    assert (tmp_path / "published" / "current.json").is_file()


def test_publish_to_s3a_on_a_local_s3_server(s3_server: str, tmp_path: Path) -> None:
    import s3fs

    _check_publish_cycle("s3a://lookalike-artifacts/segments", tmp_path)
    keys = s3fs.S3FileSystem().find("lookalike-artifacts/segments")
    assert "lookalike-artifacts/segments/current.json" in keys
    # three complete artifacts were uploaded; the failed publish's one is orphaned, never pointed at
    assert len([k for k in keys if k.endswith("segments.parquet")]) == 3
    frame = pd.read_parquet(resolve_current("s3a://lookalike-artifacts/segments") + "/segments.parquet")
    assert len(frame) == 5
