"""Fault suite, privacy: ``web_navigation`` falsely tagged legitimate interest and added to the
published ``lookalike_legit_v1`` without a version bump (the issue's first probe), on the
real applied registry. Governance review, snapshot, train and serving start-up all refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lookalike.cli import main as cli_main
from lookalike.contract import load_contract
from lookalike.errors import PrivacyViolationError
from lookalike.feast_utils import DEFAULT_REPO, feast_apply, open_store, prepare_repo
from tests.fixtures.data import LABEL_DATE

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def tampered_repo(workdir: Path, data_dir: Path) -> Path:
    """The shipped repo with the lie applied: web_navigation tagged legitimate interest (its
    pii/domain tags left honest) and slipped into the published v1 service."""
    repo = prepare_repo(DEFAULT_REPO, workdir)
    nav = repo / "web_navigation.py"
    nav.write_text(nav.read_text().replace('"legal_basis": "consent"', '"legal_basis": "legitimate_interest"'))
    services = repo / "feature_services.py"
    text = services.read_text().replace("from tech_config import tech_config",
                                        "from tech_config import tech_config\nfrom web_navigation import web_navigation")
    services.write_text(text.replace("mobile_roaming, tech_config]", "mobile_roaming, tech_config, web_navigation]"))
    feast_apply(repo, data_dir=data_dir)
    return repo


@pytest.fixture(scope="module")
def lying_repo(synthetic_repo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tampered_repo(tmp_path_factory.mktemp("lying") / "repo", synthetic_repo_dir.parent / "features")


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_guard_refuses_the_lying_view(lying_repo: Path) -> None:
    with pytest.raises(PrivacyViolationError) as info:
        load_contract(open_store(lying_repo), "lookalike_legit_v1")
    message = str(info.value)
    assert "web_navigation (" in message and "pii=yes" in message and "sensitive domain=navigation" in message
    assert "denied source table(s) ['web_navigation']" in message
    for clean in ("devices (", "profile (", "content_consumption ("):
        assert clean not in message


def test_governance_review_fails(lying_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli_main(["governance", "review", "--repo", str(lying_repo)]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "web_navigation (" in out


def test_snapshot_refuses_before_reading_features(lying_repo: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = cli_main(["snapshot", "--repo", str(lying_repo), "--label-date", LABEL_DATE, "--out", str(tmp_path)])
    assert code == 1
    assert "web_navigation" in one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_training_on_an_older_snapshot_refuses_the_edited_registry(synthetic_repo_dir: Path, lying_repo: Path,
                                                                   tmp_path: Path) -> None:
    """A snapshot built before the edit: train re-runs the guard on the registry and stops."""
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from training.config import TrainConfig
    from training.train import load_checked_snapshot

    snapshot = snapshot_run(SnapshotConfig(repo=synthetic_repo_dir, label_date=LABEL_DATE, out=tmp_path))
    load_checked_snapshot(TrainConfig(snapshot=snapshot, min_customers=10))  # its own registry: fine
    with pytest.raises(PrivacyViolationError, match="web_navigation"):
        load_checked_snapshot(TrainConfig(snapshot=snapshot, repo=lying_repo, min_customers=10))


def test_in_place_edit_of_a_clean_view_names_the_change(synthetic_repo_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """No privacy problem at all, but v1 is not what was published: the recorded fingerprint
    stops every path and says what changed."""
    repo = prepare_repo(DEFAULT_REPO, tmp_path / "repo")
    devices = repo / "devices.py"
    devices.write_text(devices.read_text().replace(
        'feature("max_screen_inches", Float64, "numeric"', 'feature("max_screen_inches", Int64, "numeric"'))
    feast_apply(repo, data_dir=synthetic_repo_dir.parent / "features")
    with pytest.raises(PrivacyViolationError, match="changed without a version bump") as info:
        load_contract(open_store(repo), "lookalike_legit_v1")
    assert "field devices:max_screen_inches dtype Float64 -> Int64" in str(info.value)
    capsys.readouterr()
    assert cli_main(["governance", "review", "--repo", str(repo)]) == 1
    assert "fingerprint changed" in capsys.readouterr().out


def serving_refuses(repo: Path, trained_model: Any, index_bundle_dir: Path) -> str:
    from serving.config import ServingConfig
    from serving.core import LookalikeRuntime

    config = ServingConfig(feature_repo=repo, tracking_uri=trained_model.tracking_uri,
                           model_name=trained_model.model_name, index_dir=index_bundle_dir)
    with pytest.raises(PrivacyViolationError) as info:
        LookalikeRuntime.load(config)
    return str(info.value)
