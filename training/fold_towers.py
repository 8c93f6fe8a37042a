"""Fold towers as downstream stages see them: the artifact, not how it is trained.

On small bases the trainer (training/crossfit.py) also trains K fold towers, each on the
non-test customers outside its fold. They are saved beside the main ``checkpoint.pt`` in the
model artifact, in the same self-describing checkpoint format, and the model's
``manifest.json`` records which fold every non-test customer of the snapshot fell in. The
index builder reads them to score each customer with a tower that never trained on it; they
are never indexed or served (only ``checkpoint.pt`` is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.artifacts import write_json
from lookalike.errors import ArtifactError
from lookalike.settings import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from training.artifact import LookalikeEncoder, downloaded_model

FOLD_DIR = "fold_towers"
MANIFEST_NAME = "manifest.json"
MANIFEST_KEY = "fold_towers"


@dataclass
class FoldTowers:
    encoders: list[LookalikeEncoder]  # encoders[f] never trained on the customers of fold f
    customer_ids: np.ndarray  # int64, the snapshot's non-test customers
    folds: np.ndarray  # int64, fold number of each of them
    epochs: int  # the main run's best epoch count, trained without early stopping

    def fold_of(self, customer_ids: Any) -> np.ndarray:
        """Fold number per customer, -1 for customers no fold tower held out (unseen by all)."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        order = np.argsort(self.customer_ids)
        sorted_ids = self.customer_ids[order]
        position = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = (sorted_ids[position] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
        return np.where(found, self.folds[order][position], -1)

    def manifest_entry(self) -> dict[str, Any]:
        return {"folds": len(self.encoders), "epochs": self.epochs,
                "files": [f"{FOLD_DIR}/fold_{f}.pt" for f in range(len(self.encoders))],
                "assignment": {"customer_ids": self.customer_ids.tolist(), "folds": self.folds.tolist()}}


def save_fold_towers(towers: FoldTowers, model_dir: Path) -> Path:
    """Write the fold checkpoints under ``model_dir/fold_towers`` and add the assignment to
    ``model_dir/manifest.json`` (which must exist); returns the fold directory."""
    manifest_path = model_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    entry = towers.manifest_entry()
    for encoder, name in zip(towers.encoders, entry["files"], strict=True):
        encoder.save(model_dir / name)
    write_json(manifest_path, {**manifest, MANIFEST_KEY: entry})
    return model_dir / FOLD_DIR


def read_fold_towers(model_dir: Path) -> FoldTowers | None:
    """The fold towers saved beside ``model_dir/checkpoint.pt``; None when the run has none."""
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    entry = json.loads(manifest_path.read_text()).get(MANIFEST_KEY)
    if not entry:
        return None
    try:
        encoders = [LookalikeEncoder.load(model_dir / name) for name in entry["files"]]
        ids = np.asarray(entry["assignment"]["customer_ids"], dtype=np.int64)
        folds = np.asarray(entry["assignment"]["folds"], dtype=np.int64)
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path}: malformed {MANIFEST_KEY} entry: {exc}") from exc
    if len(ids) != len(folds) or (len(folds) and (folds.min() < 0 or folds.max() >= len(encoders))):
        raise ArtifactError(f"{manifest_path}: fold assignment does not match its {len(encoders)} fold towers")
    return FoldTowers(encoders, ids, folds, int(entry["epochs"]))


def load_registered_fold_towers(
    tracking_uri: str, model_name: str = REGISTERED_MODEL_NAME, alias_or_version: str | int = CHAMPION_ALIAS,
) -> FoldTowers | None:
    """The fold towers of a registered model version (None: trained without them)."""
    with downloaded_model(tracking_uri, model_name, alias_or_version) as (directory, _):
        return read_fold_towers(directory)
