from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from index_builder.bundle import current_path
from lookalike.errors import ConfigError
from tests.fixtures.data import RUN_DATE

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def weekly_config(repo: Path, trained: Any, workspace: Path, extra: list[str] | None = None,
                  catalog: Path | None = None) -> Any:
    from index_builder.config import WeeklyConfig
    from lookalike.config import load_config

    return load_config(WeeklyConfig, REPO_ROOT / "configs" / "weekly.yaml", [
        f"repo={repo}", f"date={RUN_DATE}", f"workspace={workspace}",
        f"model.tracking_uri={trained.tracking_uri}", f"model.name={trained.model_name}",
        f"model.ref={trained.model_version}", *([f"segment_catalog={catalog}"] if catalog else []),
        *(extra or []),
    ])


@pytest.fixture(scope="module")
def weekly_run(trained_model, feature_repo_dir, raw_data_dir, tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    from index_builder.weekly import run

    workspace = tmp_path_factory.mktemp("weekly")
    catalog = Path(raw_data_dir) / "segment_catalog.parquet"
    return run(weekly_config(feature_repo_dir, trained_model, workspace, catalog=catalog)), workspace


def test_unified_table_follows_the_contract(weekly_run, feature_store) -> None:  # type: ignore[no-untyped-def]
    from index_builder.population import load_population, parse_date

    result, workspace = weekly_run
    assert current_path(workspace / "segments") == result.segments_dir
    table = pq.read_table(result.segments_dir / "segments.parquet").to_pandas()
    assert list(table.columns) == ["customer_id", "segment", "source", "score", "model_version",
                                   "index_version", "run_date"]
    assert set(table["source"]) == {"opt_in", "lookalike"}
    population = load_population(feature_store, parse_date(RUN_DATE))
    opt_in = set(population.customer_ids[population.opt_in].tolist())
    suppressed = set(population.customer_ids[population.suppressed].tolist())
    opt_rows = table[table["source"] == "opt_in"]
    look_rows = table[table["source"] == "lookalike"]
    assert (opt_rows["score"] == 1.0).all() and set(opt_rows["customer_id"]) <= opt_in
    # explicit segments are kept exactly
    some = int(opt_rows["customer_id"].iloc[0])
    row = int(np.searchsorted(population.customer_ids, some))
    assert sorted(opt_rows.loc[opt_rows["customer_id"] == some, "segment"]) == population.segment_lists[row]
    assert not set(look_rows["customer_id"]) & opt_in
    assert not set(look_rows["customer_id"]) & suppressed
    assert ((look_rows["score"] > 0) & (look_rows["score"] <= 1)).all()
    assert look_rows["customer_id"].nunique() > 0.3 * (len(population.customer_ids) - len(opt_in))
    manifest = json.loads((result.segments_dir / "manifest.json").read_text())
    assert manifest["counts"]["suppressed_customers"] == len(suppressed - opt_in) > 0
    assert manifest["model_version"] == result.model_version
    assert (table["index_version"] == manifest["index_version"]).all()
    # the bundle carries this week's population embeddings for /expand (suppressed never in it)
    from index_builder.bundle import load_bundle
    from index_builder.population_embeddings import load_population as load_population_embeddings

    embedded = load_population_embeddings(result.index_dir)
    assert embedded is not None and load_bundle(result.index_dir).manifest["population"]["customers"] == len(embedded.ids)
    assert set(look_rows["customer_id"]) <= set(embedded.ids[~embedded.opt_in].tolist())
    assert not set(embedded.ids.tolist()) & suppressed and set(embedded.ids[embedded.opt_in].tolist()) <= opt_in


def test_report_has_expansion_quality_and_baselines(weekly_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = weekly_run
    report = result.report_dir
    for name in ("report.md", "report.html", "metrics.json", "volume_expansion.png", "segment_distribution.png",
                 "f1_by_segment.png", "confusion_matrices.png", "methods.png"):
        assert (report / name).is_file(), name
    metrics = json.loads((report / "metrics.json").read_text())
    methods = {m["method"]: m for m in metrics["methods"]}
    assert set(methods) == {"selected", "two_tower", "tower_head", "logistic_regression", "iv_weighted_knn",
                            "gradient_boosting", "raw_feature_knn", "kmeans_propagation", "blend"}
    assert all(0 <= m["micro_f1"] <= 1 for m in methods.values())
    assert methods["two_tower"]["micro_f1"] > 0.2, metrics["methods"]
    # the selected system is compared with the best single method, with a visible warning if below
    best_micro = max(m["micro_f1"] for name, m in methods.items() if name != "selected")
    below = methods["selected"]["micro_f1"] < best_micro - 0.005
    text = (report / "report.md").read_text()
    assert below == any("micro-F1" in w for w in metrics["warnings"]) == ("BELOW the best single method" in text
                                                                          and "micro-F1" in text)
    # one scorer per segment with its reason; excluded segments listed in the summary, with names
    assert len(metrics["selection"]) == len(metrics["per_segment"])
    assert all(row["why"] and row["name"] for row in metrics["selection"])
    assert text.index("## Summary") < text.index("## Methods on the test split") < text.index("## Scorer per segment")
    assert "selected (this system)" in text and "Customers reached" in text and "median" in text
    for segment in metrics["excluded_segments"]:
        assert segment in metrics["summary"][-1]
    # navigation segments carry no legitimate-interest signal: most must be flagged
    navigation = metrics["navigation_segments"]
    assert navigation and len(metrics["navigation_flagged_unrecoverable"]) >= 0.7 * len(navigation), (
        metrics["navigation_not_flagged"], metrics["methods"])
    increases = [e["increase_pct"] for e in metrics["expansion"] if e["increase_pct"] is not None]
    assert max(increases) > 50
    assert "Volume expansion" in (report / "report.md").read_text()


def test_rerun_same_date_gives_the_same_table(weekly_run, trained_model, feature_repo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from index_builder.weekly import run

    first, _ = weekly_run
    again = run(weekly_config(feature_repo_dir, trained_model, tmp_path, ["evaluate=false", "log_mlflow=false"]))
    a = pq.read_table(first.segments_dir / "segments.parquet")
    b = pq.read_table(again.segments_dir / "segments.parquet")
    assert a.equals(b)
    hash_a = json.loads((first.segments_dir / "manifest.json").read_text())["content_hash"]
    assert hash_a == json.loads((again.segments_dir / "manifest.json").read_text())["content_hash"]


@pytest.mark.parametrize("breakage", [["baselines=[no_such_baseline]"], ["model.ref=999"]])
def test_failed_run_leaves_last_weeks_outputs_untouched(weekly_run, trained_model, feature_repo_dir,
                                                        breakage) -> None:  # type: ignore[no-untyped-def]
    from index_builder.weekly import run

    result, workspace = weekly_run
    watched = [result.segments_dir / "segments.parquet", result.segments_dir / "manifest.json",
               workspace / "segments" / "current.json", workspace / "index" / "current.json",
               result.report_dir / "metrics.json"]
    before = {p: p.read_bytes() for p in watched}
    with pytest.raises(Exception) as caught:
        run(weekly_config(feature_repo_dir, trained_model, workspace, breakage))
    assert isinstance(caught.value, ConfigError) or "999" in str(caught.value)
    assert {p: p.read_bytes() for p in watched} == before
    assert not list(workspace.glob(".weekly-*"))


def test_assign_cli_on_the_shared_bundle(index_bundle_dir, trained_model, feature_repo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lookalike.cli import main

    code = main(["assign", "--repo", str(feature_repo_dir), "--date", RUN_DATE, "--bundle", str(index_bundle_dir),
                 f"output_root={tmp_path}", f"model.tracking_uri={trained_model.tracking_uri}"])
    assert code == 0
    table = pq.read_table(tmp_path / RUN_DATE / "segments.parquet")
    assert table.num_rows > 0 and (tmp_path / "current.json").is_file()
    assert main(["assign", "--repo", str(feature_repo_dir), "--date", "not-a-date",
                 "--bundle", str(index_bundle_dir)]) == 1
