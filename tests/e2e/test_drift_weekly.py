"""Drift between weekly runs on the synthetic base: a clean week passes, a planted drift is caught.

Three weekly runs share one workspace: 2026-11-15 (the first: no reference), 2026-11-22 on the
clean base (compared with 11-15), then 2026-11-22 again on a copy of the feature tables where
``minutes_30d`` is tripled and 40% of ``data_gb_30d`` is null (a unit bug and a broken join).
The planted run must be blocked with last week's outputs untouched, and published only with
``--accept-drift``, which the manifests record.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from index_builder.drift import DriftBlocked
from tests.e2e.test_weekly import weekly_config
from tests.fixtures.data import LABEL_DATE, RUN_DATE
from tests.fixtures.feast import apply_repo

pytestmark = pytest.mark.e2e

PLANTED = ("content_consumption__minutes_30d", "mobile_roaming__data_gb_30d")
QUICK = ["log_mlflow=false", "baselines=[]"]


def plant_drift(features: Path, out: Path, date: str) -> Path:
    """Copy of the feature tables with the planted drift in the ``date`` snapshot."""
    shutil.copytree(features, out)
    stamp = pa.scalar(np.datetime64(date, "us"), pa.timestamp("us", "UTC"))
    rng = np.random.default_rng(0)
    for table_name, column, change in (
        ("content_consumption", "minutes_30d", lambda v, n: pc.multiply(v, 3.0)),
        ("mobile_roaming", "data_gb_30d",
         lambda v, n: pc.if_else(pa.array(rng.random(n) < 0.4), pa.nulls(n, v.type), v)),
    ):
        directory = out / table_name
        table = pq.read_table(directory)
        week = pc.equal(table["event_timestamp"], stamp)
        changed = pc.if_else(week, change(table[column].combine_chunks(), table.num_rows), table[column])
        table = table.set_column(table.schema.get_field_index(column), column, changed)
        for part in directory.glob("*.parquet"):
            part.unlink()
        pq.write_table(table, directory / "part-00000.parquet")
    return out


@pytest.fixture(scope="module")
def two_weeks(trained_model, feature_repo_dir, tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    from index_builder.weekly import run

    workspace = tmp_path_factory.mktemp("drift_weekly")
    first = run(weekly_config(feature_repo_dir, trained_model, workspace, [f"date={LABEL_DATE}", "evaluate=false",
                                                                             *QUICK]))
    second = run(weekly_config(feature_repo_dir, trained_model, workspace, QUICK))
    return first, second, workspace


def test_first_run_is_the_reference_and_the_clean_week_passes(two_weeks) -> None:  # type: ignore[no-untyped-def]
    first, second, workspace = two_weeks
    first_drift = json.loads((workspace / "drift" / LABEL_DATE / "drift.json").read_text())
    assert first_drift["verdict"] == "NO_REFERENCE"
    assert (workspace / "drift" / LABEL_DATE / "profile.json").stat().st_size < 200_000  # summaries, not rows
    drift = json.loads((workspace / "drift" / RUN_DATE / "drift.json").read_text())
    assert drift["compared_with"] == LABEL_DATE
    assert drift["verdict"] in ("PASS", "WARN"), drift["flagged"]
    assert not [f for f in drift["features"] if f["status"] == "FAIL"]
    assert len(drift["features"]) > 50 and len(drift["volumes"]) > 10
    assert {r["check"] for r in drift["embedding"]} == {"embedding mean shift", "nearest-anchor cosine PSI"}
    metrics = json.loads((second.report_dir / "metrics.json").read_text())
    assert metrics["drift"]["verdict"] == drift["verdict"]
    assert "Drift against the previous run" in (second.report_dir / "report.md").read_text()
    assert "Drift verdict" in (second.report_dir / "report.html").read_text()
    segments_manifest = json.loads((second.segments_dir / "manifest.json").read_text())
    assert segments_manifest["drift"] == {"verdict": drift["verdict"], "compared_with": LABEL_DATE,
                                          "accepted_override": False}
    from lookalike.artifacts import verify_manifest

    verify_manifest(second.report_dir)  # the report's hash covers the appended drift section


def test_planted_drift_blocks_the_run_until_overridden(two_weeks, trained_model, feature_tables_dir,
                                                       tmp_path) -> None:  # type: ignore[no-untyped-def]
    from index_builder.weekly import run
    from lookalike.cli import main

    _, second, workspace = two_weeks
    planted_repo = apply_repo(tmp_path / "repo", plant_drift(feature_tables_dir, tmp_path / "features", RUN_DATE))
    watched = [second.segments_dir / "segments.parquet", second.segments_dir / "manifest.json",
               workspace / "segments" / "current.json", workspace / "index" / "current.json",
               workspace / "drift" / "current.json", workspace / "drift" / RUN_DATE / "profile.json"]
    before = {p: p.read_bytes() for p in watched}

    with pytest.raises(DriftBlocked, match="accept-drift"):
        run(weekly_config(planted_repo, trained_model, workspace, [*QUICK, "evaluate=false"]))
    assert {p: p.read_bytes() for p in watched} == before
    rejected = json.loads((workspace / "drift" / "rejected" / RUN_DATE / "drift.json").read_text())
    assert rejected["verdict"] == "FAIL"
    status = {f["feature"]: f for f in rejected["features"]}
    assert status[PLANTED[0]]["status"] == "FAIL" and status[PLANTED[0]]["psi"] > 0.25
    assert status[PLANTED[1]]["status"] == "FAIL" and status[PLANTED[1]]["null_share"] > 0.3
    clean = [name for name, f in status.items() if name not in PLANTED and f["status"] == "FAIL"]
    assert not clean, clean

    code = main(["weekly", "--repo", str(planted_repo), "--date", RUN_DATE, "--accept-drift",
                 f"workspace={workspace}", f"model.tracking_uri={trained_model.tracking_uri}",
                 f"model.name={trained_model.model_name}", f"model.ref={trained_model.model_version}",
                 "evaluate=false", *QUICK])
    assert code == 0
    manifest = json.loads((workspace / "segments" / RUN_DATE / "manifest.json").read_text())
    assert manifest["drift"]["verdict"] == "FAIL" and manifest["drift"]["accepted_override"] is True
    drift_manifest = json.loads((workspace / "drift" / RUN_DATE / "manifest.json").read_text())
    assert drift_manifest["accepted_override"] is True
