"""Teacher-student training on a synthetic snapshot: the teacher sees a privileged column that
reveals segments the legitimate-interest features cannot, the student never sees it, the
blend weight is chosen on validation, and the teacher checkpoint can never be loaded as an
encoder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.config import load_config
from lookalike.contract import FeatureContract, FeatureSpec
from lookalike.errors import PrivacyViolationError
from lookalike.privileged import check_privileged_view
from tests.fixtures.model import REPO_ROOT, SMOKE_OVERRIDES
from training.artifact import LookalikeEncoder
from training.config import TrainConfig
from training.data import load_snapshot
from training.distill import PLAIN, TeacherInputs, fit_distilled, load_teacher, save_teacher
from training.synthetic import make_synthetic_snapshot

pytestmark = pytest.mark.unit

PRIVILEGED = FeatureContract("web_navigation", "1", (
    FeatureSpec("web_navigation", "nav_share_pets_30d", "Float64", "numeric"),
    FeatureSpec("web_navigation", "nav_share_crypto_30d", "Float64", "numeric"),
))


def _teacher_inputs(snapshot_frame: pd.DataFrame, seed: int = 5) -> TeacherInputs:
    """Privileged shares that reveal two segments (noisily), absent for some customers."""
    rng = np.random.default_rng(seed)
    held = snapshot_frame["segments"].map(set)
    frame = pd.DataFrame({
        "customer_id": snapshot_frame["customer_id"].to_numpy(),
        "web_navigation__nav_share_pets_30d": held.map(lambda s: "S03" in s).to_numpy() * 0.6
        + rng.random(len(held)) * 0.4,
        "web_navigation__nav_share_crypto_30d": held.map(lambda s: "S07" in s).to_numpy() * 0.6
        + rng.random(len(held)) * 0.4,
    })
    frame.loc[rng.random(len(frame)) < 0.05, "web_navigation__nav_share_pets_30d"] = np.nan
    return TeacherInputs(PRIVILEGED, frame)


def test_distilled_student_sees_legitimate_interest_only_and_weight_is_chosen_on_validation(
    tmp_path: Path,
) -> None:
    path = make_synthetic_snapshot(tmp_path / "snapshot", n=900, seed=3)
    config = load_config(TrainConfig, REPO_ROOT / "configs" / "training.yaml", [
        *SMOKE_OVERRIDES, f"snapshot={path}", "epochs=1", "sampling.pairs_per_epoch=10000", "distill.enabled=true",
        "distill.modes=[similarity,regression]", "distill.weights=[0.5]",
    ])
    snapshot = load_snapshot(path, 50)
    result = fit_distilled(config, snapshot, _teacher_inputs(snapshot.frame))

    assert [c.key for c in result.candidates] == [PLAIN, "similarity@0.5", "regression@0.5"]
    best = max(c.val_knn_micro_f1 for c in result.candidates)
    assert result.chosen.val_knn_micro_f1 == best
    assert result.student is result.fits[result.chosen.key]
    # the student's contract is the snapshot's: no privileged column, ever
    assert result.student.encoder.contract == snapshot.contract
    assert not any(c.startswith("web_navigation") for c in result.student.encoder.preprocessor.columns)
    assert result.student.encoder.metadata["distillation"]["chosen"] == result.chosen.key
    # the teacher sees both, and the privileged signal makes it the better kNN assigner
    assert set(PRIVILEGED.columns) <= set(result.teacher.encoder.contract.columns)
    assert result.teacher.best_knn.best > result.fits[PLAIN].best_knn.best

    checkpoint = save_teacher(result, tmp_path / "teacher.pt", run_id="run123")
    with pytest.raises(PrivacyViolationError, match="teacher checkpoint"):
        LookalikeEncoder.load(checkpoint)
    teacher = load_teacher(checkpoint)
    widened = result.teacher_snapshot.frame
    np.testing.assert_allclose(teacher.embed(widened.head(50)), result.teacher.encoder.embed(widened.head(50)),
                               atol=1e-6)


@pytest.mark.parametrize(("tags", "online", "fields", "problem"), [
    ({"legal_basis": "legitimate_interest"}, False, [("a", {"encoding": "numeric"})], "must be tagged legal_basis"),
    ({"legal_basis": "consent"}, True, [("a", {"encoding": "numeric"})], "online=True"),
    ({"legal_basis": "consent"}, False, [("a", {})], r"without a valid encoding tag \['a'\]"),
])
def test_privileged_view_rules(tags: dict[str, str], online: bool, fields: list[tuple[str, dict[str, str]]],
                               problem: str) -> None:
    problems = check_privileged_view("nav", tags, online, fields)
    assert len(problems) == 1 and re.search(problem, problems[0])
    assert check_privileged_view("nav", {"legal_basis": "consent"}, False, [("a", {"encoding": "numeric"})]) == []
