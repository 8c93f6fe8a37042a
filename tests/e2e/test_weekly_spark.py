"""``lookalike weekly --engine spark`` gives the local engine's segment table.

Same model, same date, same fixture: the local engine, the Spark engine with the index
broadcast whole, and the Spark engine with the index split into anchor-range shards (a tiny
``spark.shard_above_mb``) must build the same index bundle and write the same unified table.
Rows are compared exactly; scores to 1e-6 (float32 aggregation over the same neighbours, in
possibly another summation order). Every bundle file is compared, the population embeddings
(/expand's) included: ids and opt-in flags byte for byte, the embeddings to
``EMBEDDING_TOLERANCE`` (the executors embed in Arrow batches, the local engine in
``batch_size`` chunks: torch's CPU kernels may sum in another order for another batch shape;
measured on the fixture: byte-equal, the three bundles have the same content hash).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from index_builder import population_embeddings
from lookalike.artifacts import sha256_file
from tests.e2e.test_weekly import weekly_config

pytestmark = pytest.mark.e2e
SCORE_TOLERANCE = 1e-6
EMBEDDING_TOLERANCE = 1e-6
KEYS = ["customer_id", "segment", "source", "model_version", "index_version", "run_date"]


def _weekly(trained_model: Any, repo: Path, workspace: Path, extra: list[str]) -> Any:
    from index_builder.weekly import run

    return run(weekly_config(repo, trained_model, workspace, ["evaluate=false", "log_mlflow=false", *extra]))


@pytest.fixture(scope="module")
def engines(trained_model, feature_repo_dir, spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("weekly_engines")
    return {
        "local": _weekly(trained_model, feature_repo_dir, root / "local", []),
        "spark": _weekly(trained_model, feature_repo_dir, root / "spark",
                         ["engine=spark", f"publish_uri=file://{root / 'published'}"]),
        "spark_sharded": _weekly(trained_model, feature_repo_dir, root / "sharded",
                                 ["engine=spark", "spark.shard_above_mb=0.02", "spark.partitions=3"]),
    }


POPULATION_FILES = {population_embeddings.IDS_FILE, population_embeddings.EMBEDDINGS_FILE,
                    population_embeddings.OPT_IN_FILE}


def _bundle_files(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): sha256_file(path) for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != "manifest.json"}


def _table(result: Any) -> pd.DataFrame:
    return pq.read_table(result.segments_dir / "segments.parquet").to_pandas()


def _manifest(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "manifest.json").read_text()))


@pytest.mark.parametrize("engine", ["spark", "spark_sharded"])
def test_spark_engine_writes_the_local_engines_table(engines: dict[str, Any], engine: str) -> None:
    local, other = engines["local"], engines[engine]
    # same model, same index, same population: every file of the Spark bundle equals the local one
    local_files, other_files = _bundle_files(local.index_dir), _bundle_files(other.index_dir)
    assert set(other_files) == set(local_files) and set(local_files) >= POPULATION_FILES
    embeddings = population_embeddings.EMBEDDINGS_FILE
    assert {k: v for k, v in other_files.items() if k != embeddings} == \
        {k: v for k, v in local_files.items() if k != embeddings}
    expected_population = population_embeddings.load_population(local.index_dir)
    actual_population = population_embeddings.load_population(other.index_dir)
    assert expected_population is not None and actual_population is not None
    assert len(actual_population.ids) > 1000 and 0 < actual_population.opt_in.sum() < len(actual_population.ids)
    difference = np.abs(np.asarray(actual_population.embeddings) - np.asarray(expected_population.embeddings))
    assert difference.max() <= EMBEDDING_TOLERANCE
    local_bundle, other_bundle = _manifest(local.index_dir)["population"], _manifest(other.index_dir)["population"]
    assert {k: v for k, v in other_bundle.items() if not k.startswith("sum")} == \
        {k: v for k, v in local_bundle.items() if not k.startswith("sum")}
    assert np.allclose(other_bundle["sum"], local_bundle["sum"], atol=1e-3)
    expected, actual = _table(local), _table(other)
    assert actual.dtypes.to_dict() == expected.dtypes.to_dict()
    assert len(actual) == len(expected) and (actual["source"] == "lookalike").sum() > 100
    pd.testing.assert_frame_equal(actual[KEYS], expected[KEYS])  # same rows in the same order
    assert (actual["score"] - expected["score"]).abs().max() <= SCORE_TOLERANCE

    spark_manifest, local_manifest = _manifest(other.segments_dir), _manifest(local.segments_dir)
    assert spark_manifest["counts"] == local_manifest["counts"]
    assert spark_manifest["volumes"] == local_manifest["volumes"]
    assert spark_manifest["engine"] == "spark"
    assert spark_manifest["index_shards"] == (1 if engine == "spark" else 5)


def test_spark_engine_output_is_staged_and_swapped_like_the_local_one(engines: dict[str, Any]) -> None:
    from index_builder.bundle import current_path

    result = engines["spark"]
    workspace = result.segments_dir.parents[1]
    assert current_path(workspace / "segments") == result.segments_dir
    assert not list(workspace.glob(".weekly-*"))  # staging removed
    parts = sorted((result.segments_dir / "segments.parquet").glob("part-*.parquet"))
    assert parts, "Spark's writer produced the table"


def test_spark_engine_output_is_published_behind_pointers(engines: dict[str, Any]) -> None:
    from lookalike.storage import fetch, read_pointer, resolve_current

    result = engines["spark"]
    published = f"file://{result.segments_dir.parents[2] / 'published'}"
    assert read_pointer(published + "/segments")["name"] == result.run_date
    assert read_pointer(published + "/index")["name"] == result.index_dir.name
    local_copy = fetch(resolve_current(published + "/segments"), result.segments_dir.parents[2] / "fetched")
    pd.testing.assert_frame_equal(pq.read_table(local_copy / "segments.parquet").to_pandas(), _table(result))
    assert "reports" not in {p.name for p in (result.segments_dir.parents[2] / "published").iterdir()}
