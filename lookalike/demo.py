"""``lookalike demo``: the whole system end to end on the synthetic base, embedded defaults.

generate data -> Spark feature tables -> ``feast apply`` -> governance review ->
materialize (SQLite online store) -> point-in-time snapshot -> train + register in MLflow ->
weekly job (embed, index, assign, evaluate, drift) -> fairness audit + system review. Each step is the same stage function the CLI
and tests call; this module only wires their artifacts together.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.config import IsoDate, PositiveInt, load_config, stage_config
from lookalike.errors import LookalikeError
from lookalike.settings import DEFAULT_TRACKING_URI

log = logging.getLogger(__name__)


@stage_config
class DemoConfig:
    customers: PositiveInt = 5_000
    seed: int = 42
    repo: Path = Path("feature_repo")
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")
    tracking_uri: str = DEFAULT_TRACKING_URI
    # Weekly feature snapshots from feature_start to run_date; the model learns labels as of
    # label_date and the weekly job assigns segments as of run_date.
    feature_start: IsoDate = "2026-11-01"
    label_date: IsoDate = "2026-11-15"
    run_date: IsoDate = "2026-11-22"
    training_config: Path | None = Path("configs/training.yaml")
    training_overrides: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    segment_table: Path
    report: Path | None
    governance: Path
    model_version: str
    timings: dict[str, float]


@contextmanager
def _step(name: str, timings: dict[str, float]) -> Iterator[None]:
    print(f"\n==> {name}", flush=True)
    began = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - began, 1)
    print(f"    done in {timings[name]:.1f}s", flush=True)


def run(config: DemoConfig) -> DemoResult:
    from index_builder.config import ModelRef, WeeklyConfig
    from index_builder.weekly import run as weekly_run
    from lookalike.datagen import DatagenConfig
    from lookalike.datagen import run as datagen_run
    from lookalike.feast_utils import feast_apply
    from lookalike.governance import GovernanceConfig
    from lookalike.governance import run as governance_run
    from lookalike.materialize import MaterializeConfig
    from lookalike.materialize import run as materialize_run
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from spark_jobs.runner import FeaturesConfig
    from spark_jobs.runner import run as features_run
    from training.config import TrainConfig
    from training.train import run as train_run

    timings: dict[str, float] = {}
    raw_dir = config.data_dir / "raw"
    features_dir = config.data_dir / "features"

    with _step(f"generate a synthetic customer base ({config.customers:,} customers)", timings):
        datagen_run(DatagenConfig(customers=config.customers, seed=config.seed, end_date=config.run_date,
                                  out_dir=raw_dir))
    with _step("build weekly feature tables with PySpark", timings):
        features_run(FeaturesConfig(raw_dir=raw_dir, out_dir=features_dir, start_date=config.feature_start,
                                    end_date=config.run_date))
    with _step("feast apply", timings):
        feast_apply(config.repo, data_dir=features_dir)
    governance_dir = config.artifacts_dir / "governance"
    with _step("governance review of the applied registry", timings):
        report = governance_run(GovernanceConfig(repo=config.repo, out=governance_dir))
        if not report.passed:
            raise LookalikeError(f"governance review FAILED; see {governance_dir}")
    with _step("materialize the latest features into the online store", timings):
        materialize_run(MaterializeConfig(repo=config.repo, end_date=config.run_date))
    with _step(f"point-in-time training snapshot as of {config.label_date}", timings):
        snapshot_dir = snapshot_run(SnapshotConfig(repo=config.repo, label_date=config.label_date,
                                                   out=config.artifacts_dir / "snapshots"))
    with _step("train the two-tower model; track and register it in MLflow", timings):
        training_config = config.training_config if config.training_config and config.training_config.is_file() else None
        overrides = [f"snapshot={snapshot_dir}", f"repo={config.repo}",
                     f"tracking.tracking_uri={config.tracking_uri}", *config.training_overrides]
        trained = train_run(load_config(TrainConfig, training_config, overrides))
        print(f"    registered model v{trained.model_version}: test MAE {trained.test_mae:.3f}; "
              f"{trained.promotion_reason}")
    with _step(f"weekly job for {config.run_date}: embed, index, assign, evaluate", timings):
        weekly = weekly_run(WeeklyConfig(repo=config.repo, date=config.run_date, workspace=config.artifacts_dir,
                                         model=ModelRef(tracking_uri=config.tracking_uri)))
    with _step("fairness and proxy audit; system governance review", timings):
        # Findings are shown, not fatal: the demo exists to let reviewers read them.
        from lookalike.fairness_audit import AuditConfig
        from lookalike.fairness_audit import run as audit_run
        from lookalike.system_review import SystemReviewConfig
        from lookalike.system_review import run as system_review_run

        audit, _ = audit_run(AuditConfig(repo=config.repo, workspace=config.artifacts_dir))
        system = system_review_run(SystemReviewConfig(repo=config.repo, workspace=config.artifacts_dir,
                                                      tracking_uri=config.tracking_uri, out=governance_dir))
        print(f"    audit {audit.verdict} ({len(audit.problems)} finding(s)); system review {system.verdict}")

    result = DemoResult(
        segment_table=weekly.segments_dir / "segments.parquet",
        report=weekly.report_dir / "report.md" if weekly.report_dir else None,
        governance=governance_dir,
        model_version=str(weekly.model_version),
        timings=timings,
    )
    _print_summary(config, result)
    return result


def _print_summary(config: DemoConfig, result: DemoResult) -> None:
    total = sum(result.timings.values())
    print(f"\nDone in {total:.0f}s.")
    print(f"  unified segment table : {result.segment_table}")
    if result.report is not None:
        print(f"  evaluation report     : {result.report}")
    print(f"  governance review     : {result.governance / 'governance_review.md'}")
    print(f"  system review         : {result.governance / 'system_review.md'} (drift, audit, suppression)")
    print(f"  model                 : lookalike-two-tower v{result.model_version} (alias champion)")
    print(f"  MLflow UI             : .venv/bin/mlflow ui --backend-store-uri {config.tracking_uri}  "
          "(then open http://127.0.0.1:5000)")
    print("  serve online          : LOOKALIKE_FEATURE_REPO=feature_repo "
          f"MLFLOW_TRACKING_URI={config.tracking_uri} .venv/bin/bentoml serve serving.service:LookalikeService")
    print("                          then: curl -s -XPOST localhost:3000/assign -H 'content-type: application/json' "
          "-d @serving/example_request.json")


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config for the demo")
    parser.add_argument("--customers", type=int, default=None, help="synthetic customers (default 5000)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    def handler(args: argparse.Namespace) -> int:
        overrides = list(args.overrides)
        if args.customers is not None:
            overrides.append(f"customers={args.customers}")
        run(load_config(DemoConfig, args.config, overrides))
        return 0

    parser.set_defaults(func=handler)
