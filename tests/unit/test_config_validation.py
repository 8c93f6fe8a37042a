"""Stage configs are pydantic dataclasses: ranges, enums and dates are checked on every
path (YAML, key=value overrides, construction in code), each failure one ConfigError line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from index_builder.config import BuildConfig, WeeklyConfig
from index_builder.faiss_backend import IndexParams
from index_builder.spark_engine import SparkParams
from lookalike.cli import main as cli_main
from lookalike.config import load_config
from lookalike.errors import ConfigError
from lookalike.materialize import MaterializeConfig
from lookalike.snapshot import SnapshotConfig
from training.config import TrainConfig


@pytest.mark.unit
@pytest.mark.parametrize("cls, overrides, message", [
    (MaterializeConfig, ["chunk_rows=-5"], "chunk_rows: Input should be greater than or equal to 1, got -5"),
    (MaterializeConfig, ["engine=turbo"], "engine: Input should be 'auto', 'fast' or 'feast', got 'turbo'"),
    (MaterializeConfig, ["end_date=next-friday"], "end_date: not an ISO date (YYYY-MM-DD): 'next-friday'"),
    (SnapshotConfig, ["label_date=2026-13-45"], "label_date: not an ISO date"),
    (TrainConfig, ["epochs=0"], "epochs: Input should be greater than or equal to 1, got 0"),
    (TrainConfig, ["learning_rate=-0.1"], "learning_rate: Input should be greater than 0"),
    (TrainConfig, ["tracking.promote=sometimes"], "tracking.promote: Input should be 'always', 'if_better' or 'never'"),
    (TrainConfig, ["sampling.natural_fraction=1.5"], "sampling.natural_fraction: Input should be less than or equal to 1"),
    (TrainConfig, ["model.hidden=[64,-1]"], "model.hidden.1: Input should be greater than or equal to 1"),
    (TrainConfig, ["split.test_fraction=0.6", "split.validation_fraction=0.5"], "must be in (0, 1)"),
    (TrainConfig, ["epochs=2.5"], "epochs: expected int, got 2.5"),
    (BuildConfig, ["assignment.k=0"], "assignment.k: Input should be greater than or equal to 1, got 0"),
    (BuildConfig, ["index.hnsw_m=0"], "index.hnsw_m: Input should be greater than or equal to 1, got 0"),
    (WeeklyConfig, ["date=22/11/2026"], "date: not an ISO date"),
    (WeeklyConfig, ["spark.shard_above_mb=0"], "spark.shard_above_mb: Input should be greater than 0, got 0"),
    (WeeklyConfig, ["spark.partitions=-2"], "spark.partitions: Input should be greater than or equal to 0, got -2"),
    (WeeklyConfig, ["spark.batch_rows=0"], "spark.batch_rows: Input should be greater than or equal to 1, got 0"),
    (WeeklyConfig, ["spark.master="], "spark.master: String should have at least 1 character"),
    (WeeklyConfig, ["spark.executors=4"], "unknown key(s) ['executors']"),
])
def test_bad_values_are_one_line_config_errors(cls: type, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(cls, None, overrides)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.unit
def test_good_values_still_load_and_coerce() -> None:
    config = load_config(MaterializeConfig, None, ["chunk_rows=64", "end_date=2026-11-22", "repo=somewhere"])
    assert config.chunk_rows == 64 and config.end_date == "2026-11-22" and config.repo == Path("somewhere")
    assert load_config(TrainConfig, None, ["learning_rate=1", "sampling.natural_fraction=0"]).learning_rate == 1.0
    assert load_config(MaterializeConfig, None, ["end_date=2026-11-22T06:00:00+00:00"]).end_date


@pytest.mark.unit
def test_construction_in_code_and_replace_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="MaterializeConfig.chunk_rows"):
        MaterializeConfig(chunk_rows=0)
    with pytest.raises(ConfigError, match="IndexParams.nprobe"):
        IndexParams(nprobe=-1)
    with pytest.raises(ConfigError, match="chunk_rows"):
        dataclasses.replace(MaterializeConfig(), chunk_rows=-1)
    with pytest.raises(ConfigError, match="SparkParams.shard_above_mb"):
        SparkParams(shard_above_mb=-1.0)
    assert load_config(WeeklyConfig, None, ["spark.shard_above_mb=8", "spark.partitions=3"]).spark == SparkParams(
        shard_above_mb=8.0, partitions=3)
    # still ValueError for callers that catch it
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)


@pytest.mark.unit
def test_cli_prints_one_line_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["materialize", "chunk_rows=-5"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "chunk_rows" in err and "-5" in err
