"""Fold towers on a small base (~650 opt-in customers): trained, saved beside the main
checkpoint, and used by the index builder to score the tower out of sample on every non-test
anchor (training/crossfit.py, training/fold_towers.py, index_builder/tower_crossfit.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index_builder.bundle import load_bundle
from tests.fixtures.model import FOLD_TOWER_OVERRIDES, TrainedModel
from training.artifact import load_registered_encoder, split_of
from training.data import load_snapshot
from training.fold_towers import load_registered_fold_towers

pytestmark = pytest.mark.integration
FOLDS = int(FOLD_TOWER_OVERRIDES[-1].split("=")[1])


def test_fold_towers_are_saved_beside_the_main_checkpoint(trained_model: TrainedModel) -> None:
    towers = load_registered_fold_towers(trained_model.tracking_uri, trained_model.model_name,
                                         trained_model.model_version)
    assert towers is not None and len(towers.encoders) == FOLDS
    main, _ = load_registered_encoder(trained_model.tracking_uri, trained_model.model_name, "champion")
    assert "fold_tower" not in main.metadata  # only the main model is registered as the encoder
    snapshot = load_snapshot(trained_model.snapshot_dir, min_customers=1)
    split = main.split_of(snapshot.customer_ids)
    # the assignment holds exactly the snapshot's non-test customers, in balanced folds
    assert set(towers.customer_ids.tolist()) == set(snapshot.customer_ids[split != "test"].tolist())
    assert not (split_of(towers.customer_ids, **main.metadata["split"]) == "test").any()
    sizes = np.bincount(towers.folds, minlength=FOLDS)
    assert sizes.max() - sizes.min() <= 1
    assert towers.epochs == main.metadata["best_epoch"]
    frame = snapshot.frame.head(40)
    for fold, encoder in enumerate(towers.encoders):
        # self-describing like the main checkpoint: same contract, segments, split; own weights
        assert encoder.metadata["fold_tower"] == {"fold": fold, "folds": FOLDS, "epochs": towers.epochs}
        assert encoder.contract == main.contract and encoder.segments == main.segments
        assert encoder.metadata["split"] == main.metadata["split"]
        assert encoder.segment_head_arrays() is not None
        assert not np.allclose(encoder.embed(frame), main.embed(frame))
    held = towers.fold_of(np.r_[towers.customer_ids[:5], -1])
    np.testing.assert_array_equal(held[:5], towers.folds[:5])
    assert held[-1] == -1


def test_index_scores_the_tower_out_of_sample_on_every_non_test_anchor(index_bundle_dir: Path) -> None:
    bundle = load_bundle(index_bundle_dir)
    counts = bundle.manifest["counts"]
    assert counts["tower_fold_towers"] == FOLDS
    assert bundle.selection is not None
    for choice in bundle.selection.segments:
        rows = {name: fit.rows for name, fit in choice.candidates.items()}
        # the tower's evidence now covers every non-test anchor, like the cross-fitted scorers
        assert rows["tower_knn"] == rows["tower_head"] == counts["calibration_customers"], rows
        assert rows["tower_knn"] == rows["logistic_regression"]
