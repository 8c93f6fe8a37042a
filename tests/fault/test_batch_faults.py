"""Fault suite, batch jobs: empty inputs, shrinking outputs, bad dates, materialization
progress per online store, and reruns with an earlier end date."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from lookalike.artifacts import read_json, sha256_tree
from lookalike.cli import main as cli_main
from lookalike.errors import DataValidationError
from tests.fixtures.data import FEATURE_START_DATE, RUN_DATE
from tests.fixtures.feast import SYNTHETIC_CUSTOMERS, apply_repo

pytestmark = pytest.mark.fault


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.integration
@pytest.mark.parametrize("table", ["customers", "consent"])
def test_empty_input_table_is_refused_and_keeps_the_previous_output(
        table: str, raw_data_dir: Path, feature_tables_dir: Path, spark: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(raw_data_dir, raw)
    source = pq.read_table(raw / f"{table}.parquet")
    pq.write_table(source.slice(0, 0), raw / f"{table}.parquet")
    out = tmp_path / "features"
    shutil.copytree(feature_tables_dir, out)
    before = sha256_tree(out)
    capsys.readouterr()
    code = cli_main(["features", "--raw-dir", str(raw), "--out-dir", str(out), "--start-date", FEATURE_START_DATE,
                     "--end-date", RUN_DATE, "shuffle_partitions=2"])
    assert code == 1
    message = one_line_error(capsys)
    assert f"table '{table}'" in message and "is empty" in message
    assert sha256_tree(out) == before


@pytest.mark.integration
def test_row_count_drop_names_the_table(feature_tables_dir: Path) -> None:
    from spark_jobs.runner import _check_row_drops

    previous = read_json(feature_tables_dir / "manifest.json")
    dates = len(previous["snapshot_dates"])
    rows = {t: int(v["rows"]) for t, v in previous["tables"].items()}
    _check_row_drops(feature_tables_dir, rows, dates, 0.5)  # unchanged: fine
    _check_row_drops(feature_tables_dir, {t: n // dates for t, n in rows.items()}, 1, 0.5)  # per date: fine
    shrunk = {**rows, "profile": rows["profile"] // 3}
    with pytest.raises(DataValidationError, match="feature table 'profile'.*67% fewer") as info:
        _check_row_drops(feature_tables_dir, shrunk, dates, 0.5)
    assert "\n" not in str(info.value)
    _check_row_drops(feature_tables_dir, shrunk, dates, 1.0)  # an expected purge, said so explicitly


@pytest.mark.unit
@pytest.mark.parametrize("argv", [
    ["snapshot", "--repo", "feature_repo", "--label-date", "2026-13-45"],
    ["weekly", "--date", "2026-13-45"],
    ["features", "--end-date", "2026-02-30"],
    ["materialize", "--end-date", "2026-13-45"],
    ["build-index", "--date", "2026-13-45"],
    ["assign", "--date", "2026-13-45"],
    ["snapshot", "--repo", "feature_repo", "label_date=yesterday"],
])
def test_date_like_values_give_one_line_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli_main(argv) == 1
    message = one_line_error(capsys)
    assert "date" in message, message


@pytest.mark.integration
def test_fresh_redis_gets_the_full_load_and_earlier_reruns_do_nothing(
        synthetic_repo_dir: Path, redis_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    from lookalike.materialize import MaterializeConfig, run

    repo = apply_repo(tmp_path / "repo", synthetic_repo_dir.parent / "features")
    sqlite = run(MaterializeConfig(repo=repo, end_date=RUN_DATE))
    assert {v.view: v.rows for v in sqlite.views}["profile"] == SYNTHETIC_CUSTOMERS

    db = 9
    redis.Redis(host="127.0.0.1", port=redis_server.port, db=db).flushdb()
    connection = f"{redis_server.connection_string},db={db}"
    fresh = run(MaterializeConfig(repo=repo, end_date=RUN_DATE, online="redis", redis_connection=connection))
    assert {v.view: v.rows for v in fresh.views}["profile"] == SYNTHETIC_CUSTOMERS  # not 0: its own progress

    again = run(MaterializeConfig(repo=repo, end_date=RUN_DATE, online="redis", redis_connection=connection))
    assert again.nothing_to_do and again.rows == 0
    capsys.readouterr()
    for store in ([], ["--online", "redis", "--redis", connection]):
        assert cli_main(["materialize", "--repo", str(repo), "--end-date", "2026-11-15", *store]) == 0
        out = capsys.readouterr().out
        assert out.startswith("nothing to do: every online view is already materialized up to 2026-11-22"), out
