"""Governance review of the applied registry, and the guard against a tampered service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.cli import main as cli_main
from lookalike.contract import load_contract
from lookalike.errors import PrivacyViolationError
from lookalike.feast_utils import DEFAULT_REPO, feast_apply, open_store, prepare_repo
from lookalike.governance import GovernanceConfig, run

pytestmark = pytest.mark.integration

TAMPERED_SERVICE = '''

from web_navigation import web_navigation

lookalike_legit_v1_tampered = FeatureService(
    name="lookalike_legit_v1_tampered",
    features=[content_consumption, devices, profile, mobile_roaming, tech_config, web_navigation],
    description="A copy of the model contract that sneaks in web navigation.",
    owner=OWNER_DATA,
    tags={"version": "1", "lookalike_role": "model_input"},
)
'''


def test_review_passes_and_writes_reports(synthetic_repo_dir: Path, tmp_path: Path) -> None:
    report = run(GovernanceConfig(repo=synthetic_repo_dir, out=tmp_path))
    assert report.verdict == "PASS", report.problems
    saved = json.loads((tmp_path / "governance_review.json").read_text())
    assert saved["verdict"] == "PASS"
    by_view = {v["name"]: v for v in saved["views"]}
    assert by_view["web_navigation"]["legal_basis"] == "consent"
    assert by_view["web_navigation"]["services"] == []
    assert by_view["profile"]["services"] == ["lookalike_legit_v1"]
    assert by_view["profile"]["pii"] == "quasi" and by_view["profile"]["field_count"] == 9
    markdown = (tmp_path / "governance_review.md").read_text()
    assert "**Verdict: PASS**" in markdown and "| `web_navigation` | consent |" in markdown
    assert cli_main(["governance", "review", "--repo", str(synthetic_repo_dir)]) == 0


def test_tampered_service_is_refused_by_guard_and_review(synthetic_repo_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    repo = prepare_repo(DEFAULT_REPO, tmp_path / "repo")
    with open(repo / "feature_services.py", "a") as handle:
        handle.write(TAMPERED_SERVICE)
    feast_apply(repo, data_dir=synthetic_repo_dir.parent / "features")
    store = open_store(repo)

    with pytest.raises(PrivacyViolationError, match="web_navigation"):
        load_contract(store, "lookalike_legit_v1_tampered")
    load_contract(store, "lookalike_legit_v1")  # the untouched service still passes

    report = run(GovernanceConfig(repo=repo, out=tmp_path / "review"))
    assert report.verdict == "FAIL"
    verdicts = {s.name: s.verdict for s in report.services}
    assert verdicts == {"lookalike_legit_v1": "PASS", "lookalike_legit_v1_tampered": "FAIL"}
    assert any("web_navigation" in p for p in report.problems)
    assert json.loads((tmp_path / "review" / "governance_review.json").read_text())["verdict"] == "FAIL"

    capsys.readouterr()
    assert cli_main(["governance", "review", "--repo", str(repo)]) == 1
    assert "verdict: FAIL" in capsys.readouterr().out
