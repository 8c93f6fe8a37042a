"""Fold towers on a small base: what they cost in training and what they change downstream.

Runs ``lookalike weekly --retrain`` twice on the hand-written small base of
``tests/e2e/test_small_base.py`` (~480 opt-in customers, 10 segments; same smoke training
schedule as that test): once with fold towers disabled (``tower_crossfit.max_customers=0``:
the tower's out-of-sample scores come from the validation split) and once with the default
(K fold towers, out-of-sample tower scores on every non-test anchor).

    OMP_NUM_THREADS=1 python bench/bench_tower_crossfit.py --workdir /tmp/towercv-bench

Prints, side by side: the training CPU time (whole weekly run, and the fold towers alone),
the load average, the tower scorers' out-of-sample rows and mean out-of-sample F1 over the
measured segments, how many segments select a tower scorer, and the test-split micro/macro-F1
of the selected system and of the best single method (the weekly report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TOWER = ("tower_knn", "tower_head")


def one_run(workdir: Path, name: str, extra: list[str]) -> dict[str, Any]:
    from mlflow import MlflowClient

    from index_builder.bundle import load_bundle
    from index_builder.config import WeeklyConfig
    from index_builder.weekly import run
    from lookalike.config import load_config
    from lookalike.feast_utils import feast_apply
    from tests.e2e.test_small_base import DATES, OWN_REPO, write_small_base
    from tests.fixtures.model import SMOKE_OVERRIDES

    base = workdir / name
    shutil.rmtree(base, ignore_errors=True)
    write_small_base(base / "features")
    repo = base / "own_repo"
    shutil.copytree(OWN_REPO, repo)
    feast_apply(repo, data_dir=base / "features")
    tracking = f"sqlite:///{base / 'mlflow.db'}"
    config = load_config(WeeklyConfig, REPO_ROOT / "configs" / "weekly.yaml", [
        f"repo={repo}", f"date={DATES[-1]}", f"workspace={base / 'artifacts'}", "retrain=true",
        f"training_config={REPO_ROOT / 'configs' / 'training.yaml'}",
        f"model.tracking_uri={tracking}", "model.name=small-two-tower",
    ])
    smoke = [o for o in SMOKE_OVERRIDES if not o.startswith("tower_crossfit.")]
    config.training_overrides = [*smoke, "tracking.promote=always", "min_customers=50", "threads=1",
                                 "tracking.experiment=small", *extra]
    load_before = os.getloadavg()
    cpu = time.process_time()
    wall = time.perf_counter()
    result = run(config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    client = MlflowClient(tracking_uri=tracking)
    version = client.get_model_version("small-two-tower", result.model_version)
    metrics = client.get_run(str(version.run_id)).data.metrics
    bundle = load_bundle(result.index_dir)
    assert bundle.selection is not None
    measured = [c for c in bundle.selection.segments if all(s in c.candidates for s in TOWER)]
    assert result.report_dir is not None
    report = json.loads((result.report_dir / "metrics.json").read_text())
    methods = {m["method"]: m for m in report["methods"]}
    singles = {k: v for k, v in methods.items() if k != "selected"}
    best = max(singles, key=lambda k: singles[k]["micro_f1"])
    return {
        "name": name, "weekly_cpu_s": cpu, "weekly_wall_s": wall,
        "load_before": load_before, "load_after": os.getloadavg(),
        "train_s": metrics.get("timing_train_s"), "fold_towers_cpu_s": metrics.get("timing_fold_towers_cpu_s", 0.0),
        "fold_towers": bundle.manifest["counts"].get("tower_fold_towers", 0),
        **{f"{s}_rows": measured[0].candidates[s].rows if measured else 0 for s in TOWER},
        **{f"{s}_oos_f1": sum(c.candidates[s].oos_f1 for c in measured) / max(len(measured), 1) for s in TOWER},
        "segments_selecting_tower": sum(c.scorer in TOWER for c in bundle.selection.segments),
        "selected_micro_f1": methods["selected"]["micro_f1"], "selected_macro_f1": methods["selected"]["macro_f1"],
        "best_single": best, "best_single_micro_f1": singles[best]["micro_f1"],
        "best_single_macro_f1": max(v["macro_f1"] for v in singles.values()),
        # the tower's own rows in the report: same main model, thresholds from the out-of-sample scores
        **{f"test_{m}_{k}": methods[m][k] for m in ("two_tower", "tower_head") for k in ("micro_f1", "macro_f1")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/towercv-bench"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rows = [one_run(args.workdir, "validation_split", ["tower_crossfit.max_customers=0"]),
            one_run(args.workdir, "fold_towers", [])]
    (args.workdir / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    keys = [k for k in rows[0] if k != "name"]
    print(f"{'':28s}" + "".join(f"{r['name']:>22s}" for r in rows))
    for key in keys:
        cells = "".join(f"{v:>22.3f}" if isinstance(v, float) else f"{str(v):>22s}" for v in (r[key] for r in rows))
        print(f"{key:28s}{cells}")


if __name__ == "__main__":
    main()
