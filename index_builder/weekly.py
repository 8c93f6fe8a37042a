"""``lookalike weekly``: snapshot, (re)train?, embed, index, assign, report -- all or nothing.

Every step writes into a private staging directory under the workspace; the live outputs
(``index/<version>``, ``segments/<date>``, ``reports/<date>`` and their ``current.json``
pointers) are swapped in only after every step has succeeded. A failure at any step
removes the staging directory and leaves last week's outputs byte-for-byte untouched.
The last step compares the run with the last published one (:mod:`index_builder.drift`); a
drift FAIL is such a failure unless ``drift.accept_fail`` (``--accept-drift``) overrides it.

A run killed outright (SIGKILL, OOM) cannot clean up: its ``.weekly-*`` staging directory
is removed by the next run, which holds ``<workspace>/.weekly.lock`` (released by the
kernel when a process dies) so that it never deletes the staging of a run still going.
Manifests record final paths only: staged paths are rewritten before the swap. A segment
table whose row count fell by more than ``max_row_drop_fraction`` below the live one fails
the run, and the live outputs stay.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index_builder.bundle import CURRENT_FILE, load_bundle, set_current
from index_builder.config import AssignConfig, BuildConfig, EvaluateConfig, WeeklyConfig
from lookalike.artifacts import MANIFEST_NAME, read_json, replace_dir, write_json
from lookalike.config import cli_overrides, load_config
from lookalike.errors import ArtifactError, ConfigError
from lookalike.row_guard import check_row_drop

log = logging.getLogger(__name__)


@dataclass
class WeeklyResult:
    run_date: str
    model_version: str
    index_dir: Path
    segments_dir: Path
    report_dir: Path | None
    retrained: bool
    steps: list[str] = field(default_factory=list)


def _retrain(config: WeeklyConfig, staging: Path, run_date: str) -> str:
    """Training snapshot at the run date + a training run; returns the model ref to use:
    the new version when the trainer promoted it, else the configured ref (champion)."""
    from lookalike.snapshot import SnapshotConfig
    from lookalike.snapshot import run as snapshot_run
    from training.config import TrainConfig
    from training.train import run as train_run

    snapshot_dir = snapshot_run(load_config(SnapshotConfig, None, [
        f"repo={config.repo}", f"label_date={run_date}", f"out={staging / 'snapshots'}"]))
    from lookalike.mlflow_store import default_artifact_location

    # repo: the trainer re-runs the privacy guard on it and, with distill.enabled, reads its privileged view
    overrides = [f"tracking.tracking_uri={config.model.tracking_uri}", f"tracking.model_name={config.model.name}",
                 f"repo={config.repo}"]
    location = default_artifact_location(config.model.tracking_uri)
    if location:
        overrides.append(f"tracking.artifact_location={location}")
    overrides += [*config.training_overrides, f"snapshot={snapshot_dir}"]
    result = train_run(load_config(TrainConfig, config.training_config, overrides))
    if result.promoted and result.model_version:
        return str(result.model_version)
    log.warning("retrained model v%s was not promoted (%s); indexing with %s", result.model_version,
                result.promotion_reason, config.model.ref)
    return config.model.ref


def _upload(publish_uri: str | None, index: Path, segments: Path, report: Path | None, bundle: Any,
            run_date: str) -> list[Any]:
    """Copy the staged outputs under ``publish_uri`` (fresh names; no pointer moves yet)."""
    if not publish_uri:
        return []
    from lookalike.storage import Publication, join, upload

    items = [Publication(index, join(publish_uri, "index"), bundle.index_version,
                         {"model_version": bundle.model_version}),
             Publication(segments, join(publish_uri, "segments"), run_date, {"index_version": bundle.index_version})]
    if report is not None:
        items.append(Publication(report, join(publish_uri, "reports"), run_date))
    for item in items:
        upload(item)
    return items
STAGING_PREFIX = ".weekly-"
LOCK_NAME = ".weekly.lock"


@contextlib.contextmanager
def exclusive_workspace(workspace: Path) -> Iterator[None]:
    """Hold the workspace's weekly lock; refuse (one line) when another run holds it."""
    with open(workspace / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ConfigError(f"another weekly run is using {workspace} (lock {LOCK_NAME} is held)") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftover_staging(workspace: Path) -> list[Path]:
    """Staging directories of killed runs (call with the workspace lock held)."""
    leftovers = sorted(p for p in workspace.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    for path in leftovers:
        log.warning("removing %s, left behind by a weekly run that was killed", path.name)
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def finalize_manifest_paths(directory: Path, moves: dict[Path, Path]) -> None:
    """Rewrite every path under a staged directory, in every manifest below ``directory``, to
    where it will live after the swap (the manifest is outside the content hash)."""
    pairs = sorted(((str(src.resolve()), str(dst.resolve())) for src, dst in moves.items()),
                   key=lambda pair: -len(pair[0]))
    pairs += [(str(src), str(dst)) for src, dst in moves.items()]

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            for src, dst in pairs:
                if value == src or value.startswith(src + "/"):
                    return dst + value[len(src):]
            return value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    for manifest in directory.rglob(MANIFEST_NAME):
        write_json(manifest, fix(read_json(manifest)))


def _segment_rows(directory: Path) -> int | None:
    counts = read_json(directory / MANIFEST_NAME).get("counts") or {}
    if "opt_in_rows" not in counts or "lookalike_rows" not in counts:
        return None
    return int(counts["opt_in_rows"]) + int(counts["lookalike_rows"])


def _live_segment_rows(segments_root: Path) -> int | None:
    pointer = segments_root / CURRENT_FILE
    if not pointer.is_file():
        return None
    try:
        return _segment_rows(segments_root / str(read_json(pointer)["name"]))
    except (ArtifactError, KeyError):
        return None


def run(config: WeeklyConfig) -> WeeklyResult:
    workspace = Path(config.workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    with exclusive_workspace(workspace):
        remove_leftover_staging(workspace)
        return _run(config, workspace)


def _run(config: WeeklyConfig, workspace: Path) -> WeeklyResult:
    from index_builder import assign, build, evaluate
    from index_builder.features import check_encoder_contract
    from index_builder.population import load_population, parse_date
    from index_builder.population_embeddings import add_anchors_and_customers
    from lookalike.contract import load_contract
    from lookalike.feast_utils import open_store
    from training.artifact import load_registered_encoder

    as_of = parse_date(config.date)
    run_date = as_of.date().isoformat()
    staging = workspace / f"{STAGING_PREFIX}{run_date}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    steps: list[str] = []
    try:
        model_ref = config.model.ref
        if config.retrain:
            model_ref = _retrain(config, staging, run_date)
            steps.append(f"trained model v{model_ref}")
        store = open_store(config.repo)
        encoder, info = load_registered_encoder(config.model.tracking_uri, config.model.name, model_ref)
        check_encoder_contract(encoder, load_contract(store, encoder.contract.service_name))
        population = load_population(store, as_of, encoder.contract.service_name)
        steps.append("snapshot: population and point-in-time features")
        anchors = build.collect_anchors(store, population, encoder, config.batch_size)
        steps.append(f"embedded {len(anchors.ids)} anchors")
        build_config = BuildConfig(repo=config.repo, date=run_date, model=config.model, index=config.index,
                                   assignment=config.assignment, output_root=staging / "index",
                                   batch_size=config.batch_size, log_mlflow=False,
                                   segment_catalog=config.segment_catalog)
        staged_index = build.run(build_config, population=population, encoder_and_info=(encoder, info),
                                 anchors=anchors, set_as_current=False)
        bundle = load_bundle(staged_index)
        steps.append(f"index {bundle.index_version}")
        assign_config = AssignConfig(repo=config.repo, date=run_date, model=config.model,
                                     batch_size=config.batch_size)
        scored: list[Any] = []
        if config.engine == "spark":
            from index_builder import spark_engine

            shards_dir = staging / "population_shards"
            staged_segments = spark_engine.run(assign_config, config.spark, population=population,
                                               encoder_and_info=(encoder, info), bundle=bundle,
                                               output_dir=staging / "segments" / run_date, population_dir=shards_dir)
            customer_ids = spark_engine.shard_customer_ids(shards_dir)
            customer_blocks: Any = spark_engine.shard_embeddings(shards_dir)
        else:
            staged_segments = assign.run(assign_config, population=population, encoder_and_info=(encoder, info),
                                         bundle=bundle, output_dir=staging / "segments" / run_date,
                                         set_as_current=False, on_scored=scored.append)
            customer_ids = scored[0].customer_ids
            customer_blocks = [(scored[0].customer_ids, scored[0].embeddings)]
        steps.append(f"assigned segments ({config.engine} engine)")
        bundle.manifest = add_anchors_and_customers(staged_index, anchors.ids, anchors.embeddings, customer_ids,
                                                    customer_blocks)
        steps.append(f"population embeddings ({len(anchors.ids) + len(customer_ids)} customers)")
        rows = _segment_rows(staged_segments)
        if rows is not None:
            check_row_drop(f"segment table {run_date}", _live_segment_rows(workspace / "segments"), rows,
                           config.max_row_drop_fraction)
        staged_report = None
        if config.evaluate:
            eval_config = EvaluateConfig(repo=config.repo, date=run_date, model=config.model,
                                         baselines=list(config.baselines), log_mlflow=False,
                                         segment_catalog=config.segment_catalog)
            staged_report = evaluate.run(eval_config, population=population, encoder_and_info=(encoder, info),
                                         bundle=bundle, anchors=anchors, segment_table_dir=staged_segments,
                                         output_dir=staging / "reports" / run_date)
            steps.append("evaluation report")
        staged_drift = staging / "drift" / run_date
        if config.drift.enabled:
            from index_builder.drift import check_weekly

            drift = check_weekly(config.drift, workspace / "drift", staged_drift, store=store, population=population,
                                 encoder=encoder, model_version=info.version, bundle=bundle,
                                 segments_dir=staged_segments, report_dir=staged_report)
            steps.append(f"drift {drift.verdict}")
        # Manifests name where the outputs will live, never this staging directory.
        index_dir = workspace / "index" / bundle.index_version
        segments_dir = workspace / "segments" / run_date
        report_dir = workspace / "reports" / run_date if staged_report is not None else None
        moves = {staged_index: index_dir, staged_segments: segments_dir}
        if staged_report is not None and report_dir is not None:
            moves[staged_report] = report_dir
        if config.drift.enabled:
            moves[staged_drift] = workspace / "drift" / run_date
        finalize_manifest_paths(staging, moves)
        publications = _upload(config.publish_uri, staged_index, staged_segments, staged_report, bundle, run_date)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        log.error("weekly run %s failed; last week's outputs are untouched", run_date)
        raise
    # every step succeeded: swap the outputs in, pointers last
    replace_dir(staged_index, index_dir)
    replace_dir(staged_segments, segments_dir)
    if staged_report is not None and report_dir is not None:
        replace_dir(staged_report, report_dir)
    if config.drift.enabled:
        replace_dir(staged_drift, workspace / "drift" / run_date)
    shutil.rmtree(staging, ignore_errors=True)
    set_current(workspace / "index", bundle.index_version, model_version=info.version)
    set_current(workspace / "segments", run_date, index_version=bundle.index_version)
    if report_dir is not None:
        set_current(workspace / "reports", run_date)
    if config.drift.enabled:
        set_current(workspace / "drift", run_date)
    if publications:
        from lookalike.storage import move_pointers

        move_pointers(publications)
        steps.append(f"published to {config.publish_uri}")
    if config.log_mlflow:
        _log(config, info, bundle, index_dir, report_dir, run_date)
    log.info("weekly run %s done: %s", run_date, "; ".join(steps))
    return WeeklyResult(run_date, info.version, index_dir, segments_dir, report_dir, config.retrain, steps)


def _log(config: WeeklyConfig, info: Any, bundle: Any, index_dir: Path, report_dir: Path | None,
         run_date: str) -> None:
    import json

    from index_builder.tracking import log_run
    from lookalike.config import config_to_dict, flatten

    metrics: dict[str, float] = {"recall_at_k": bundle.manifest.get("recall_at_k") or 0.0}
    if report_dir is not None:
        for row in json.loads((report_dir / "metrics.json").read_text())["methods"]:
            metrics.update({f"{row['method']}.{k}": v for k, v in row.items() if k != "method"})
    dirs = {"index_bundle": index_dir, **({"report": report_dir} if report_dir else {})}
    log_run(config.model.tracking_uri, "lookalike-index", f"weekly-{run_date}",
            tags={"stage": "weekly", "model_name": info.name, "model_version": info.version,
                  "index_version": bundle.index_version, "run_date": run_date},
            params=flatten(config_to_dict(config)), metrics=metrics, artifact_dirs=dirs)


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/weekly.yaml"))
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--date", required=False)
    parser.add_argument("--retrain", action="store_true", help="build a training snapshot and retrain first")
    parser.add_argument("--engine", choices=("local", "spark"),
                        help="where customers are embedded and scored (default local; docs/scaling.md)")
    parser.add_argument("--accept-drift", action="store_true",
                        help="publish even if the drift verdict is FAIL (recorded in the manifests)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")

    def handler(args: argparse.Namespace) -> int:
        overrides = cli_overrides(args, ["repo", "date", "engine"])
        if args.retrain:
            overrides.append("retrain=true")
        if args.accept_drift:
            overrides.append("drift.accept_fail=true")
        config_path = args.config if args.config and Path(args.config).is_file() else None
        result = run(load_config(WeeklyConfig, config_path, overrides))
        print(result.segments_dir)
        return 0

    parser.set_defaults(func=handler)
