"""Governance checks on the synthetic base: drift between weekly runs, the fairness and proxy
audit, and the system review -- the clean base passes, planted problems are caught.

Three weekly runs share one workspace: 2026-11-15 (the first: no reference), 2026-11-22 on the
clean base (compared with 11-15), then 2026-11-22 again on a copy of the feature tables where
``minutes_30d`` is tripled and 40% of ``data_gb_30d`` is null (a unit bug and a broken join).
The planted run must be blocked with last week's outputs untouched, and published only with
``--accept-drift``, which the manifests record. The audit runs on the clean live table and on
a copy of the base where ``tech_config.bandwidth_mbps`` is planted as a proxy for gender.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
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
    stamp = pa.scalar(datetime.fromisoformat(date).replace(tzinfo=timezone.utc), pa.timestamp("us", "UTC"))
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


def plant_proxy(features: Path, out: Path) -> Path:
    """Copy of the feature tables where bandwidth_mbps is a noisy copy of gender."""
    import pandas as pd

    shutil.copytree(features, out)
    gender = pq.read_table(out / "profile", columns=["customer_id", "event_timestamp", "gender"]).to_pandas()
    tech = pq.read_table(out / "tech_config").to_pandas()
    tech = tech.merge(gender, on=["customer_id", "event_timestamp"], how="left")
    noise = np.random.default_rng(1).lognormal(0.0, 0.15, len(tech))
    tech["bandwidth_mbps"] = np.where(tech.pop("gender") == "F", 400.0, 100.0) * noise
    schema = pq.read_schema(next((features / "tech_config").glob("*.parquet")))
    for part in (out / "tech_config").glob("*.parquet"):
        part.unlink()
    pq.write_table(pa.Table.from_pandas(tech[schema.names], schema=schema, preserve_index=False),
                   out / "tech_config" / "part-00000.parquet")
    assert pd.read_parquet(out / "tech_config")["bandwidth_mbps"].notna().all()
    return out


def test_audit_on_the_clean_base_finds_no_proxy(two_weeks, feature_repo_dir) -> None:  # type: ignore[no-untyped-def]
    from lookalike.cli import main

    _, second, workspace = two_weeks
    code = main(["governance", "audit", "--repo", str(feature_repo_dir), "--workspace", str(workspace)])
    audit = json.loads((workspace / "audits" / RUN_DATE / "audit.json").read_text())
    assert code == (0 if audit["verdict"] == "PASS" else 1)
    assert audit["protected_attributes"] == ["profile__age", "profile__gender", "profile__region_code"]
    assert audit["direct_inputs"] == audit["protected_attributes"]
    assert not [p for p in audit["proxies"] if p["flagged"]], audit["proxies"][:3]
    assert len(audit["proxies"]) > 200 and max(p["auc"] for p in audit["proxies"]) < 0.8
    judged = [s for s in audit["segments"] if s["added_skew"] is not None]
    assert len(judged) >= 10
    assert "Skew added by the lookalike model" in (workspace / "audits" / RUN_DATE / "audit.md").read_text()


def test_planted_proxy_is_caught(two_weeks, feature_tables_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lookalike.cli import main

    _, second, _ = two_weeks
    repo = apply_repo(tmp_path / "repo", plant_proxy(feature_tables_dir, tmp_path / "features"))
    code = main(["governance", "audit", "--repo", str(repo), "--segments", str(second.segments_dir),
                 "--out", str(tmp_path / "audit")])
    assert code == 1
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    flagged = [(p["input"], p["attribute"]) for p in audit["proxies"] if p["flagged"]]
    assert flagged == [("tech_config__bandwidth_mbps", "profile__gender")], flagged
    assert audit["proxies"][0]["auc"] > 0.95 and audit["verdict"] == "FAIL"
    assert any("bandwidth_mbps predicts profile__gender" in p for p in audit["problems"])


def test_system_review_covers_model_outputs_checks_and_suppression(two_weeks, feature_repo_dir, trained_model,
                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lookalike.cli import main

    _, second, workspace = two_weeks
    args = ["governance", "review", "--system", "--repo", str(feature_repo_dir), "--tracking-uri",
            trained_model.tracking_uri, "--model-name", trained_model.model_name]
    code = main([*args, "--workspace", str(workspace), "--out", str(tmp_path / "review")])
    review = json.loads((tmp_path / "review" / "system_review.json").read_text())
    assert code == (0 if review["verdict"] == "PASS" else 1)
    assert review["champion"]["version"] == trained_model.model_version
    assert review["champion"]["tags"]["feature_service"] == "lookalike_legit_v1"
    assert review["model_card"]["source"].endswith("/model_card.md")  # the trainer's card artifact
    assert "lookalike_legit_v1" in review["model_card"]["content"]
    assert review["live"]["segments"]["path"] == str(second.segments_dir)
    assert len(review["inputs"]) > 80 and {i["legal_basis"] for i in review["inputs"]} == {"legitimate_interest"}
    assert review["drift"]["verdict"] in ("PASS", "WARN") and review["drift"]["compared_with"] == LABEL_DATE
    assert review["audit"]["verdict"] in ("PASS", "FAIL") and review["audit"]["run_date"] == RUN_DATE
    suppression = review["suppression"]
    assert suppression["suppressed_customers"] > 0 and suppression["lookalike_rows_for_suppressed"] == 0
    problems = [p for p in review["problems"] if "fairness audit" not in p]
    assert not problems, problems

    # a live table that hands a suppressed customer lookalike segments fails the review
    tampered = tmp_path / "workspace"
    shutil.copytree(workspace, tampered)
    table_path = tampered / "segments" / RUN_DATE / "segments.parquet"
    table = pq.read_table(table_path)
    from index_builder.population import load_population, parse_date
    from lookalike.feast_utils import open_store

    population = load_population(open_store(feature_repo_dir), parse_date(RUN_DATE))
    victim = int(population.customer_ids[population.suppressed & ~population.opt_in][0])
    row = table.slice(table.num_rows - 1, 1).to_pylist()[0]
    row.update(customer_id=victim, source="lookalike")
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([row], schema=table.schema)]), table_path)
    assert main([*args, "--workspace", str(tampered), "--out", str(tmp_path / "tampered")]) == 1
    review = json.loads((tmp_path / "tampered" / "system_review.json").read_text())
    assert review["suppression"]["lookalike_rows_for_suppressed"] == 1
    assert any("1 suppressed customer(s) hold 1 lookalike row(s)" in p for p in review["problems"])


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
