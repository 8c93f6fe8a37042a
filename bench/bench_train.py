"""Training benchmark: step throughput (pairs/s), time to convergence on 100,000 opt-in
customers, and MAE against the published reference (train 0.09 / val 0.12 / test 0.12).

Shortcut (documented in bench/README.md): the 100k snapshot is produced by
``training.synthetic`` (persona-driven features and segments in the exact snapshot
contract format) rather than datagen -> Spark -> Feast, whose 100k-customer build would
dominate the run time and is benchmarked by bench_features / bench_materialize. Pass
``--snapshot DIR`` to benchmark on a real snapshot instead.

    .venv/bin/python bench/bench_train.py [--customers 100000] [--snapshot DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from lookalike.config import load_config
from training.config import TrainConfig
from training.data import load_snapshot
from training.loss import PairObjective
from training.model import TwoTowerModel
from training.preprocessing import Preprocessor
from training.sampling import BalancedPairSampler, bin_weights_from_counts, n_bins, natural_bin_counts
from training.synthetic import make_synthetic_snapshot
from training.targets import get_target
from training.train import fit

ROOT = Path(__file__).resolve().parents[1]
TARGET_PAIRS_PER_S = 20_000  # a 200k-pair epoch in <= 10 s on 2 cores
TARGET_CONVERGENCE_S = 600  # 100k opt-in customers trained to early stop in <= 10 min
REFERENCE_MAE = {"train": 0.09, "validation": 0.12, "test": 0.12}


def throughput(config: TrainConfig, snapshot_dir: Path, steps: int = 60) -> float:
    torch.set_num_threads(config.threads)
    snapshot = load_snapshot(snapshot_dir, 1)
    pre = Preprocessor.fit(snapshot.frame, snapshot.contract, config.preprocessing)
    features = pre.transform(snapshot.frame)
    labels = torch.from_numpy(snapshot.label_matrix())
    dense, index = torch.from_numpy(features.dense), torch.from_numpy(features.categorical_index)
    generator = torch.Generator().manual_seed(0)
    target_fn = get_target(config.target)
    bins = n_bins(config.sampling.bin_width)
    weights = bin_weights_from_counts(natural_bin_counts(labels, target_fn, 100_000, bins, generator))
    sampler = BalancedPairSampler(labels, target_fn, weights, config.sampling.batch_size,
                                  config.sampling.pool_factor, config.sampling.natural_fraction, generator)
    model = TwoTowerModel(pre.dense_dim, pre.cardinalities, labels.shape[1], config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    objective = PairObjective(config.aux_weight)

    phases = {"sample pairs": 0.0, "forward + loss": 0.0, "backward": 0.0, "optimizer step": 0.0}

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        batch = sampler.sample()
        rows = torch.cat([batch.left, batch.right])
        t1 = time.perf_counter()
        emb = model(dense[rows], index[rows])
        half = batch.left.shape[0]
        parts = objective(emb[:half], emb[half:], batch.target, model.segment_head(emb), labels[rows])
        t2 = time.perf_counter()
        optimizer.zero_grad()
        parts.total.backward()
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        if record:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[name] += seconds

    for _ in range(5):
        step(False)
    started = time.perf_counter()
    for _ in range(steps):
        step(True)
    elapsed = time.perf_counter() - started
    # Where a step's time goes, and the arithmetic floor: forward ~2*P FLOPs per row (P =
    # tower weights), backward ~2x forward, 2 rows per pair.
    weights = sum(p.numel() for p in model.tower.parameters() if p.dim() == 2)
    flops_per_pair = 2 * 3 * 2 * weights
    print(f"step profile over {steps} steps of {config.sampling.batch_size} pairs ({os.getloadavg()[0]:.2f} load):")
    for name, seconds in phases.items():
        print(f"  {name:<16} {1000 * seconds / steps:7.2f} ms/step  {100 * seconds / elapsed:5.1f}%")
    achieved = flops_per_pair * steps * config.sampling.batch_size / elapsed / 1e9
    print(f"  tower matmul FLOPs {flops_per_pair / 1e3:.0f} kFLOP/pair -> {achieved:.1f} GFLOP/s achieved; "
          f"at 50 GFLOP/s (2 cores, fp32 small GEMMs) the floor is {50e9 / flops_per_pair:,.0f} pairs/s")
    return steps * config.sampling.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--snapshot", type=Path, default=None)
    parser.add_argument("--throughput-only", action="store_true", help="step throughput and profile, no full fit")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        snapshot = args.snapshot
        if snapshot is None:
            started = time.perf_counter()
            snapshot = make_synthetic_snapshot(Path(scratch) / "snapshot", n=args.customers, seed=0)
            print(f"synthetic snapshot: {args.customers:,} opt-in customers in {time.perf_counter() - started:.1f} s")
        config = load_config(TrainConfig, ROOT / "configs" / "training.yaml",
                             [f"snapshot={snapshot}", "progress=false", *args.overrides])
        pairs_per_s = throughput(config, snapshot)
        print(f"throughput: {pairs_per_s:,.0f} pairs/s (target {TARGET_PAIRS_PER_S:,}; "
              f"ratio {pairs_per_s / TARGET_PAIRS_PER_S:.2f}x) batch {config.sampling.batch_size}, "
              f"{config.threads} threads")
        if args.throughput_only:
            return
        started = time.perf_counter()
        result = fit(config)
        elapsed = time.perf_counter() - started
    best = result.history[result.best_epoch - 1]
    print(f"convergence: {elapsed:.0f} s to early stop after {len(result.history)} epochs, best epoch "
          f"{result.best_epoch} (target {TARGET_CONVERGENCE_S} s; ratio {TARGET_CONVERGENCE_S / elapsed:.2f}x)")
    print(f"  of which prepare {result.timings['prepare_s']:.0f} s, train+eval {result.timings['train_s']:.0f} s")
    for split, value in (("train", best.train_mae), ("validation", best.val_mae), ("test", result.test.mae)):
        print(f"MAE {split:<10} {value:.4f} (reference {REFERENCE_MAE[split]:.2f}; ratio "
              f"{value / REFERENCE_MAE[split]:.2f})")
    print(f"val kNN micro-F1 (k={config.knn_k}, best threshold): embeddings {result.best_knn.best:.4f} "
          f"vs raw features {result.raw_knn.best:.4f}")


if __name__ == "__main__":
    main()
