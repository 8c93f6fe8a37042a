"""Teacher-student training: a teacher that may see consented features guides a student that may not.

Opt-in customers consented to profiling on sensitive data (the repo's privileged view, e.g.
web navigation), which predicts segments the legitimate-interest features cannot. The
*teacher* tower is trained like the normal model on legitimate-interest + privileged inputs,
on opt-in customers only. The *student* tower sees legitimate-interest inputs only and is
trained on the usual pair objective plus a teacher term, weighted by ``w``:

- ``similarity``: the pair target becomes ``(1 - w) * segment cosine + w * teacher cosine``
  on the same pairs (the teacher's view of who is alike, smoother than binary segments);
- ``regression``: ``(1 - w) * pair loss + w * (1 - cos(student, teacher))`` per customer.

Every (mode, weight) in the config and the plain student (``w = 0``) are trained; the one
with the best validation kNN micro-F1 is kept. Only the student is ever registered. The
teacher is logged to the MLflow run as an artifact with its own metrics; its checkpoint
carries :data:`training.artifact.TEACHER_ROLE_KEY`, which the loader every downstream stage
uses refuses, so it can never be promoted, indexed or served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from lookalike.contract import JOIN_KEY, FeatureContract
from lookalike.errors import DataValidationError
from training.artifact import CHECKPOINT_NAME, TEACHER_ROLE_KEY, LookalikeEncoder, split_of
from training.config import TrainConfig
from training.data import Snapshot
from training.loss import LossParts
from training.sampling import PairBatch
from training.train import EpochRecord, FitResult, PairLoss, fit

log = logging.getLogger(__name__)
PLAIN = "none"
# Same file name as the student's, so a teacher registered by hand meets the loader's refusal.
TEACHER_CHECKPOINT = CHECKPOINT_NAME


@dataclass(frozen=True)
class TeacherInputs:
    """The privileged view's contract and its columns for the snapshot's customers."""

    contract: FeatureContract
    frame: pd.DataFrame  # customer_id + privileged contract columns


def read_teacher_inputs(repo: str | Path, snapshot: Snapshot) -> TeacherInputs | None:
    """The privileged columns of the snapshot's (opt-in) customers at its label date, or None
    when the repo has no privileged view. Goes through :mod:`lookalike.privileged` only."""
    from lookalike.feast_utils import open_store
    from lookalike.privileged import load_privileged_contract, read_privileged_features
    from lookalike.snapshot import parse_date

    store = open_store(repo)
    contract = load_privileged_contract(store)
    if contract is None:
        return None
    label_date = parse_date(str(snapshot.manifest.get("label_date", "")), "snapshot label_date")
    frame = read_privileged_features(store, contract, snapshot.customer_ids, label_date)
    return TeacherInputs(contract, frame)


def teacher_snapshot(snapshot: Snapshot, inputs: TeacherInputs) -> Snapshot:
    """The snapshot widened by the privileged columns, same customers in the same order."""
    clash = sorted(set(inputs.contract.columns) & set(snapshot.contract.columns))
    if clash:
        raise DataValidationError(f"privileged view columns {clash} are also model inputs")
    frame = snapshot.frame.merge(inputs.frame[[JOIN_KEY, *inputs.contract.columns]], on=JOIN_KEY, how="left",
                                 validate="one_to_one")
    contract = FeatureContract(
        service_name=f"{snapshot.contract.service_name}+{inputs.contract.service_name}",
        service_version=f"{snapshot.contract.service_version}+{inputs.contract.service_version}",
        features=snapshot.contract.features + inputs.contract.features,
    )
    return Snapshot(snapshot.path, frame, snapshot.manifest, contract, snapshot.vocabulary)


def teacher_guidance(teacher_train: np.ndarray, mode: str, weight: float) -> PairLoss:
    """The student's loss given the teacher's embeddings of the training customers (row-aligned
    with the trainer's training split, which pair batches index)."""
    teacher = torch.from_numpy(np.ascontiguousarray(teacher_train, dtype=np.float32))

    def similarity(batch: PairBatch, left: torch.Tensor, right: torch.Tensor, parts: LossParts) -> torch.Tensor:
        teacher_cosine = (teacher[batch.left] * teacher[batch.right]).sum(dim=1).clamp(0.0, 1.0)
        blended = (1.0 - weight) * batch.target + weight * teacher_cosine
        return parts.total - parts.similarity + F.l1_loss(parts.prediction, blended)

    def regression(batch: PairBatch, left: torch.Tensor, right: torch.Tensor, parts: LossParts) -> torch.Tensor:
        # embeddings are L2-normalised, so 1 - cosine is half the squared distance
        pull = 1.0 - 0.5 * ((left * teacher[batch.left]).sum(dim=1).mean()
                            + (right * teacher[batch.right]).sum(dim=1).mean())
        return parts.total - weight * parts.similarity + weight * pull

    functions: dict[str, Callable[..., torch.Tensor]] = {"similarity": similarity, "regression": regression}
    return functions[mode]


@dataclass
class Candidate:
    mode: str
    weight: float
    val_knn_micro_f1: float
    test_mae: float
    best_epoch: int

    @property
    def key(self) -> str:
        return PLAIN if self.mode == PLAIN else f"{self.mode}@{self.weight:g}"


@dataclass
class DistillResult:
    student: FitResult  # the chosen candidate (may be the plain student)
    teacher: FitResult
    teacher_snapshot: Snapshot
    chosen: Candidate
    candidates: list[Candidate]
    fits: dict[str, FitResult]  # every candidate, by Candidate.key (for measurement)

    def summary(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.key, "mode": self.chosen.mode, "weight": self.chosen.weight,
            "teacher_inputs": self.teacher_snapshot.contract.service_name,
            "selected_on": "validation kNN micro-F1 (best global threshold)",
            "candidates": [{"key": c.key, "mode": c.mode, "weight": c.weight, "val_knn_micro_f1": c.val_knn_micro_f1,
                            "test_mae": c.test_mae, "best_epoch": c.best_epoch} for c in self.candidates],
            "teacher": {"val_knn_micro_f1": self.teacher.best_knn.best, "test_mae": self.teacher.test.mae,
                        "best_epoch": self.teacher.best_epoch},
        }


def _candidate(mode: str, weight: float, result: FitResult) -> Candidate:
    return Candidate(mode, weight, result.best_knn.best, result.test.mae, result.best_epoch)


def fit_distilled(config: TrainConfig, snapshot: Snapshot, inputs: TeacherInputs) -> DistillResult:
    """Teacher, then the plain student and every configured teacher-guided student; keeps the
    one with the best validation kNN micro-F1 (ties go to the plain student)."""
    widened = teacher_snapshot(snapshot, inputs)
    log.info("distillation: training the teacher on %d inputs (%d privileged)",
             len(widened.contract.columns), len(inputs.contract.columns))
    teacher = fit(config, snapshot=widened)
    split = split_of(snapshot.customer_ids, config.split.seed, config.split.validation_fraction,
                     config.split.test_fraction)
    teacher_train = teacher.encoder.embed(widened.frame.loc[split == "train"].reset_index(drop=True))

    fits = {PLAIN: fit(config, snapshot=snapshot)}
    candidates = [_candidate(PLAIN, 0.0, fits[PLAIN])]
    for mode in config.distill.modes:
        for weight in config.distill.weights:
            result = fit(config, snapshot=snapshot, pair_loss=teacher_guidance(teacher_train, mode, weight))
            candidate = _candidate(mode, weight, result)
            fits[candidate.key] = result
            candidates.append(candidate)
            log.info("distillation candidate %s: val kNN micro-F1 %.4f (plain %.4f, teacher %.4f)",
                     candidate.key, candidate.val_knn_micro_f1, candidates[0].val_knn_micro_f1,
                     teacher.best_knn.best)
    chosen = candidates[0]
    for candidate in candidates[1:]:
        if candidate.val_knn_micro_f1 > chosen.val_knn_micro_f1 + 1e-9:
            chosen = candidate
    distilled = DistillResult(fits[chosen.key], teacher, widened, chosen, candidates, fits)
    distilled.student.encoder.metadata["distillation"] = distilled.summary()
    return distilled


def fit_for_run(
    config: TrainConfig, snapshot: Snapshot, on_epoch: Callable[[EpochRecord], None] | None = None
) -> tuple[FitResult, DistillResult | None]:
    """What ``lookalike train`` fits: the plain model, or the distilled student when
    ``distill.enabled`` and the repo has a privileged view."""
    if not config.distill.enabled:
        return fit(config, on_epoch=on_epoch, snapshot=snapshot), None
    inputs = read_teacher_inputs(config.repo, snapshot) if config.repo is not None else None
    if inputs is None:
        log.warning("distill.enabled but %s; training the plain student",
                    "no repo is given (repo=...)" if config.repo is None else f"{config.repo} has no privileged view")
        return fit(config, on_epoch=on_epoch, snapshot=snapshot), None
    distilled = fit_distilled(config, snapshot, inputs)
    if on_epoch is not None:
        for record in distilled.student.history:
            on_epoch(record)
    return distilled.student, distilled


def save_teacher(result: DistillResult, path: str | Path, run_id: str) -> Path:
    """The teacher's checkpoint, marked so that :meth:`LookalikeEncoder.load` refuses it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**result.teacher.encoder.checkpoint_payload(), TEACHER_ROLE_KEY: run_id}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_teacher(path: str | Path) -> LookalikeEncoder:
    """The teacher as an encoder of legitimate-interest + privileged columns (analysis only)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if TEACHER_ROLE_KEY not in payload:
        raise DataValidationError(f"{path} is not a teacher checkpoint")
    return LookalikeEncoder.from_payload(payload, path)


def log_distillation(result: DistillResult, scratch: Path, run_id: str) -> None:
    """Teacher artifact, teacher metrics and the candidate table on the active MLflow run."""
    import mlflow

    teacher = result.teacher
    mlflow.log_artifact(str(save_teacher(result, scratch / "teacher" / TEACHER_CHECKPOINT, run_id)), "teacher")
    mlflow.log_text(json.dumps(result.summary(), indent=2), "teacher/distillation.json")
    mlflow.log_metrics({
        "teacher_test_mae": teacher.test.mae, "teacher_val_knn_micro_f1": teacher.best_knn.best,
        "teacher_best_epoch": teacher.best_epoch, "distill_weight": result.chosen.weight,
        **{f"distill_val_knn_micro_f1.{c.key.replace('@', '_')}": c.val_knn_micro_f1 for c in result.candidates},
    })
    mlflow.set_tags({"distillation": result.chosen.key, "teacher_inputs": result.teacher_snapshot.contract.service_name,
                     "teacher_servable": "false"})
