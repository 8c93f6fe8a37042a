"""``lookalike train``: fit the two-tower model on a snapshot, track and register it in MLflow.

``fit(config)`` is the pure training step (no MLflow); ``run(config)`` wraps it with
tracking, registration and champion promotion and is what the CLI calls.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lookalike.config import config_to_dict, load_config
from lookalike.errors import ConfigError, DataValidationError
from training.artifact import LookalikeEncoder, embed_arrays, split_of
from training.config import TrainConfig
from training.data import Snapshot, guard_against_repo, load_snapshot
from training.evaluation import KnnF1, PairMetrics, embedding_pair_metrics, knn_micro_f1, pair_metrics
from training.loss import LossParts, PairObjective
from training.model import TwoTowerModel
from training.preprocessing import Preprocessor
from training.sampling import (
    BalancedPairSampler,
    PairBatch,
    bin_weights_from_counts,
    fixed_pairs,
    n_bins,
    natural_bin_counts,
)
from training.segment_weights import scale_labels, segment_weights
from training.targets import get_target

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path("configs/training.yaml")


@dataclass
class EpochRecord:
    epoch: int
    train_mae: float
    aux_bce: float
    val_mae: float
    train: PairMetrics
    validation: PairMetrics
    val_knn: KnnF1

    def metrics(self) -> dict[str, float]:
        values = {
            "train_mae": self.train_mae,
            "aux_bce": self.aux_bce,
            "val_mae": self.val_mae,
            "val_knn_micro_f1": self.val_knn.at_half,
            "val_knn_micro_f1_best": self.val_knn.best,
        }
        width = 1.0 / len(self.validation.bin_mae)
        for i, mae in enumerate(self.validation.bin_mae):
            if not math.isnan(mae):
                values[f"val_mae_bin_{i * width:.1f}-{(i + 1) * width:.1f}"] = mae
        return values


@dataclass
class SplitData:
    frame: pd.DataFrame
    dense: np.ndarray
    categorical_index: np.ndarray
    labels: np.ndarray


@dataclass
class FitResult:
    encoder: LookalikeEncoder
    snapshot: Snapshot
    history: list[EpochRecord]
    best_epoch: int
    val: PairMetrics
    test: PairMetrics
    test_pairs: PairBatch
    test_split: SplitData
    natural_counts: np.ndarray
    bin_weights: np.ndarray
    split_sizes: dict[str, int]
    raw_knn: KnnF1
    best_knn: KnnF1
    timings: dict[str, float] = field(default_factory=dict)


def _split_data(snapshot: Snapshot, mask: np.ndarray, preprocessor: Preprocessor, labels: np.ndarray) -> SplitData:
    frame = snapshot.frame.loc[mask].reset_index(drop=True)
    features = preprocessor.transform(frame)
    return SplitData(frame, features.dense, features.categorical_index, labels[mask])


def _knn_queries(split: SplitData, limit: int, generator: torch.Generator) -> np.ndarray:
    n = split.dense.shape[0]
    if n <= limit:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=generator)[:limit].numpy())


def load_checked_snapshot(config: TrainConfig) -> Snapshot:
    """The validated snapshot, after the privacy guard when a Feast repo is configured."""
    if config.snapshot is None:
        raise ConfigError("no snapshot given (snapshot=... or --snapshot DIR)")
    snapshot = load_snapshot(config.snapshot, config.min_customers)
    # Without an explicit repo, the registry the snapshot was built from: a service edited
    # in place since then must stop training too, not only the next snapshot.
    repo = config.repo or snapshot.manifest.get("feature_repo")
    if repo is not None and (config.repo is not None or Path(repo, "feature_store.yaml").is_file()):
        guard_against_repo(repo, snapshot.contract)
    return snapshot


# (pair batch, left embeddings, right embeddings, loss parts) -> the loss to minimise instead of
# parts.total; the teacher's guidance of a distilled student (training/distill.py).
PairLoss = Callable[[PairBatch, torch.Tensor, torch.Tensor, LossParts], torch.Tensor]


def fit(
    config: TrainConfig, on_epoch: Callable[[EpochRecord], None] | None = None, snapshot: Snapshot | None = None,
    pair_loss: PairLoss | None = None, split: np.ndarray | None = None, fixed_epochs: int | None = None,
) -> FitResult:
    """Train on ``config.snapshot``; deterministic for a given seed and thread count.

    ``split`` overrides the hashed train/validation/test split of the snapshot's rows (fold
    towers, training/crossfit.py). ``fixed_epochs`` trains exactly that many epochs and keeps
    the final state: no early stopping, the validation split is then only reported on.
    """
    import time

    started = time.perf_counter()
    torch.set_num_threads(max(1, config.threads))
    if snapshot is None:
        snapshot = load_checked_snapshot(config)
    target_fn = get_target(config.target)
    bins = n_bins(config.sampling.bin_width)

    if split is None:
        split = split_of(snapshot.customer_ids, config.split.seed, config.split.validation_fraction,
                         config.split.test_fraction)
    sizes = {name: int((split == name).sum()) for name in ("train", "validation", "test")}
    too_small = {name: size for name, size in sizes.items() if size < 2}
    if too_small or sizes["train"] < config.sampling.batch_size // 8:
        raise DataValidationError(
            f"snapshot of {len(split)} customers splits into {sizes}; too small to train and evaluate "
            "(lower split fractions or use a larger snapshot)"
        )
    labels = snapshot.label_matrix()
    preprocessor = Preprocessor.fit(snapshot.frame.loc[split == "train"], snapshot.contract, config.preprocessing)
    train = _split_data(snapshot, split == "train", preprocessor, labels)
    val = _split_data(snapshot, split == "validation", preprocessor, labels)
    test = _split_data(snapshot, split == "test", preprocessor, labels)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_features = preprocessor.feature_matrix(train.frame)
    weights = segment_weights(train_features, train.labels, config.segment_weighting.method,
                              config.segment_weighting.power, config.segment_weighting.floor, config.seed)
    train_labels = torch.from_numpy(train.labels)
    train_targets = torch.from_numpy(scale_labels(train.labels, weights))
    natural_counts = natural_bin_counts(train_targets, target_fn, config.sampling.natural_pairs, bins, generator)
    bin_weights = bin_weights_from_counts(natural_counts)
    sampler = BalancedPairSampler(
        train_targets, target_fn, bin_weights, config.sampling.batch_size, config.sampling.pool_factor,
        config.sampling.natural_fraction, generator,
    )
    val_pairs = fixed_pairs(torch.from_numpy(scale_labels(val.labels, weights)), target_fn,
                            config.sampling.validation_pairs, generator)
    test_pairs = fixed_pairs(torch.from_numpy(scale_labels(test.labels, weights)), target_fn,
                             config.sampling.test_pairs, generator)
    knn_queries = _knn_queries(val, config.knn_max_queries, generator)
    raw_knn = knn_micro_f1(train_features, train.labels,
                           preprocessor.feature_matrix(val.frame.iloc[knn_queries]), val.labels[knn_queries],
                           config.knn_k)

    model = TwoTowerModel(preprocessor.dense_dim, preprocessor.cardinalities, len(snapshot.vocabulary), config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    objective = PairObjective(config.aux_weight)
    dense_t = torch.from_numpy(train.dense)
    index_t = torch.from_numpy(train.categorical_index)
    steps = max(1, math.ceil(config.sampling.pairs_per_epoch / config.sampling.batch_size))
    prepared = time.perf_counter()

    history: list[EpochRecord] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score = -math.inf
    best_epoch = 0
    stale = 0
    epochs = config.epochs if fixed_epochs is None else fixed_epochs
    for epoch in range(1, epochs + 1):
        model.train()
        predictions, targets = [], []
        sim_total = aux_total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", leave=False, disable=not config.progress)
        for _ in bar:
            batch = sampler.sample()
            rows = torch.cat([batch.left, batch.right])
            embeddings = model(dense_t[rows], index_t[rows])
            half = batch.left.shape[0]
            logits = model.segment_head(embeddings) if config.aux_weight > 0 else None
            parts = objective(embeddings[:half], embeddings[half:], batch.target, logits, train_labels[rows])
            loss = parts.total if pair_loss is None else pair_loss(batch, embeddings[:half], embeddings[half:], parts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sim_total += parts.similarity.item()
            aux_total += parts.auxiliary.item()
            predictions.append(parts.prediction.detach())
            targets.append(batch.target)
            bar.set_postfix(mae=f"{sim_total / len(predictions):.4f}")
        train_metrics = pair_metrics(torch.cat(predictions), torch.cat(targets), bins)

        val_emb = embed_arrays(model.tower, val.dense, val.categorical_index)
        val_metrics = embedding_pair_metrics(val_emb, val_pairs, bins)
        train_emb = embed_arrays(model.tower, train.dense, train.categorical_index)
        val_knn = knn_micro_f1(train_emb, train.labels, val_emb[knn_queries], val.labels[knn_queries], config.knn_k)
        record = EpochRecord(epoch, sim_total / steps, aux_total / steps, val_metrics.mae, train_metrics,
                             val_metrics, val_knn)
        history.append(record)
        log.info("epoch %d: train_mae=%.4f val_mae=%.4f val_knn_micro_f1=%.4f (best thr %.4f, raw %.4f)",
                 epoch, record.train_mae, record.val_mae, val_knn.at_half, val_knn.best, raw_knn.best)
        if on_epoch is not None:
            on_epoch(record)
        score = -val_metrics.mae if config.monitor == "val_mae" else val_knn.best
        if fixed_epochs is not None:
            best_epoch = epoch
            if epoch == epochs:
                best_state = copy.deepcopy(model.state_dict())
        elif score > best_score + 1e-6:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                log.info("early stopping after epoch %d (best epoch %d)", epoch, best_epoch)
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    trained = time.perf_counter()

    metadata: dict[str, Any] = {
        "model_config": config_to_dict(config.model),
        "bin_weights": bin_weights.tolist(),
        "natural_bin_counts": natural_counts.tolist(),
        "bin_width": config.sampling.bin_width,
        "target": config.target,
        "segment_weights": [round(float(w), 6) for w in weights],
        "split": {"seed": config.split.seed, "validation_fraction": config.split.validation_fraction,
                  "test_fraction": config.split.test_fraction},
        "snapshot_manifest": snapshot.manifest,
        "best_epoch": best_epoch,
    }
    encoder = LookalikeEncoder(model.tower, preprocessor, snapshot.contract, snapshot.vocabulary, metadata,
                               model.segment_head if config.aux_weight > 0 else None)
    test_metrics = embedding_pair_metrics(
        embed_arrays(model.tower, test.dense, test.categorical_index), test_pairs, bins)
    return FitResult(
        encoder=encoder, snapshot=snapshot, history=history, best_epoch=best_epoch,
        val=history[best_epoch - 1].validation, test=test_metrics, test_pairs=test_pairs, test_split=test,
        natural_counts=natural_counts, bin_weights=bin_weights, split_sizes=sizes, raw_knn=raw_knn,
        best_knn=history[best_epoch - 1].val_knn,
        timings={"prepare_s": prepared - started, "train_s": trained - prepared,
                 "pairs_trained": float(len(history) * steps * config.sampling.batch_size)},
    )


@dataclass
class TrainResult:
    run_id: str
    model_name: str
    model_version: str | None
    promoted: bool
    promotion_reason: str
    test_mae: float
    val_mae: float
    best_epoch: int
    val_knn_micro_f1: float
    raw_knn_micro_f1: float
    tracking_uri: str
    model_uri: str | None
    # The in-memory encoder, for parity checks against the registered one.
    encoder: LookalikeEncoder | None = field(default=None, repr=False)


def run(config: TrainConfig) -> TrainResult:
    """Train, log to MLflow, register as ``candidate`` and decide on ``champion``."""
    from training.tracking import track_training

    return track_training(config)


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshot", help="training snapshot: a directory or URI (data.parquet + manifest.json)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML config (default {DEFAULT_CONFIG} when it exists)")
    parser.add_argument("--repo", type=Path, default=None,
                        help="Feast repo: re-run the privacy guard and compare its contract with the snapshot")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=5")

    def handler(args: argparse.Namespace) -> int:
        path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        overrides = list(args.overrides)
        if args.snapshot is not None:
            overrides.append(f"snapshot={args.snapshot}")
        if args.repo is not None:
            overrides.append(f"repo={args.repo}")
        result = run(load_config(TrainConfig, path, overrides))
        print(
            f"run {result.run_id}: test MAE {result.test_mae:.4f}, val kNN micro-F1 {result.val_knn_micro_f1:.4f} "
            f"(raw features {result.raw_knn_micro_f1:.4f}); registered {result.model_name} "
            f"v{result.model_version}; {result.promotion_reason}"
        )
        return 0

    parser.set_defaults(func=handler)
