"""Fold towers on small bases: out-of-sample tower scores for every non-test customer.

The index builder fits scorer thresholds and picks scorers on out-of-sample scores. For the
tower, that is the validation split by default: 15% of the non-test customers, about 70 on a
470-customer base. When the base has at most ``tower_crossfit.max_customers`` non-test
customers, K more towers are trained here, each on the non-test customers outside its fold,
with the main run's resolved config and its best epoch count (chosen out of sample by the
main run's early stopping; a fold has no held-out split of its own to stop on). The test
split is never trained on, by any tower. Saved as a model artifact (training/fold_towers.py).
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from lookalike.folds import fold_ids
from training.artifact import split_of
from training.config import TrainConfig
from training.data import Snapshot
from training.fold_towers import FoldTowers
from training.train import FitResult, fit

log = logging.getLogger(__name__)


def wants_fold_towers(config: TrainConfig, result: FitResult) -> bool:
    """Small base (non-test customers at most ``tower_crossfit.max_customers``) and a model
    artifact to carry the fold towers (``tracking.register``)."""
    non_test = result.split_sizes["train"] + result.split_sizes["validation"]
    return config.tracking.register and 0 < non_test <= config.tower_crossfit.max_customers


def fit_fold_towers(config: TrainConfig, snapshot: Snapshot, best_epoch: int) -> FoldTowers:
    """K towers, tower f trained on the non-test customers outside fold f for ``best_epoch`` epochs."""
    split = split_of(snapshot.customer_ids, config.split.seed, config.split.validation_fraction,
                     config.split.test_fraction)
    non_test = np.flatnonzero(split != "test")
    k = config.tower_crossfit.folds
    folds = fold_ids(len(non_test), k, config.seed)
    encoders = []
    for fold in tqdm(range(k), desc=f"fold towers ({best_epoch} epochs each)", unit="fold",
                     disable=not config.progress):
        # the held-out fold takes the validation role, reported on only (fixed_epochs: no early stopping)
        fold_split = np.where(split == "test", "test", "train").astype(split.dtype)
        fold_split[non_test[folds == fold]] = "validation"
        result = fit(config, snapshot=snapshot, split=fold_split, fixed_epochs=best_epoch)
        result.encoder.metadata["fold_tower"] = {"fold": fold, "folds": k, "epochs": best_epoch}
        log.info("fold tower %d/%d: trained on %d customers, held-out kNN micro-F1 %.4f", fold + 1, k,
                 result.split_sizes["train"], result.history[-1].val_knn.best)
        encoders.append(result.encoder)
    return FoldTowers(encoders, snapshot.customer_ids[non_test], folds, best_epoch)
