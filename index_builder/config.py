"""Configuration of the index-builder stages (YAML in ``configs/index.yaml`` and
``configs/weekly.yaml``; every key overridable with ``key=value`` on the command line)."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from index_builder.aggregation import AGGREGATIONS, THRESHOLD_MODES
from index_builder.drift import DriftConfig
from index_builder.faiss_backend import IndexParams
from index_builder.scorers import SCORERS, check_scorer_names
from index_builder.spark_engine import SparkParams
from lookalike.config import Fraction, IsoDate, PositiveInt, stage_config
from lookalike.errors import ConfigError
from lookalike.mlflow_store import default_tracking_uri
from lookalike.settings import CHAMPION_ALIAS, REGISTERED_MODEL_NAME

WEEKLY_ENGINES = ("local", "spark")


@stage_config
class AssignmentParams:
    """How k nearest anchors become segments (stored in the bundle's assignment.json)."""

    # 40 beat 10 and 20 by ~0.03 micro-F1 on a 20k-customer base; 80 added nothing and cost
    # macro-F1 (bench/README.md, Training: assignment quality vs baselines).
    k: PositiveInt = 40
    aggregation: str = "weighted"
    # calibrated: per-segment F1-optimal thresholds on the encoder's validation split;
    # fixed: fixed_threshold everywhere (0.5 with majority = a majority vote).
    threshold_mode: str = "calibrated"
    fixed_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    # Thresholds are F1-optimal on out-of-sample scores and graded on folds they were not
    # chosen on, so no floor is needed against flooding; a floor would cut calibrated
    # probabilities whose F1-optimal threshold is F1/2 (below 0.2 for any F1 < 0.4).
    threshold_floor: Fraction = 0.0
    min_positives: PositiveInt = 5
    # candidate scorers per segment (index_builder/scorers.py), selected by out-of-sample F1
    scorers: list[str] = field(default_factory=lambda: list(SCORERS))
    cv_folds: Annotated[int, Field(ge=2)] = 5
    # a more complex scorer replaces a simpler one only if it wins by more than this and by
    # more than one bootstrap standard error of the paired difference (selection.py)
    tie_tolerance: Fraction = 0.002
    # segments whose selected scorer does not beat the prevalence prior out of sample get no
    # lookalike rows, unless shipped anyway: all of them, or the ones listed
    ship_without_signal: bool = False
    ship_segments: list[str] = field(default_factory=list)
    # F1 differences smaller than this count as ties: the cross-validated macro-F1 the shipped
    # thresholds may give up for micro-F1 (per-segment F1 thresholds flag many customers on
    # weak segments, micro_macro_thresholds.py; 0 keeps them), and the margin by which a single
    # scorer must beat the per-segment selection out of sample to replace it
    # (selection_guard.py). The default is the band inside which two systems count as equal in
    # the quality report (evaluate.MATCH_TOLERANCE).
    f1_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.005
    # ship a single scorer everywhere when it beats the per-segment selection out of sample
    # (nested cross-validation; selection_guard.py): on small bases the selection fits noise
    selection_guard: bool = True
    seed: int = 0
    # threads per LightGBM fit (more than 1 oversubscribes a shared machine, see scorers.py)
    threads: PositiveInt = 1
    # Above this many anchors in the index, raw-feature and IV-weighted kNN (exact scans of
    # every anchor's features per query) are not candidates. At 10,000 anchors x 187 features,
    # IV-kNN costs ~2 ms of CPU per /assign customer for 15 segments (4.8 ms for 60) and ~50 s of
    # leave-one-out scoring at build; at 50,000, 13 ms and 11-19 min (bench/README.md, "Scale
    # guard": python bench/bench_scorers.py --scale).
    feature_knn_max_anchors: PositiveInt = 10_000

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"assignment.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ConfigError(
                f"assignment.threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}"
            )
        check_scorer_names(self.scorers)


@stage_config
class ModelRef:
    # $MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db
    tracking_uri: str = field(default_factory=default_tracking_uri)
    name: str = REGISTERED_MODEL_NAME
    # a registry alias (champion/candidate) or a version number
    ref: str = CHAMPION_ALIAS


@stage_config
class BuildConfig:
    repo: Path = Path("feature_repo")
    date: IsoDate = ""
    model: ModelRef = field(default_factory=ModelRef)
    index: IndexParams = field(default_factory=IndexParams)
    assignment: AssignmentParams = field(default_factory=AssignmentParams)
    output_root: Path = Path("artifacts/index")
    batch_size: PositiveInt = 16384
    log_mlflow: bool = True
    experiment: str = "lookalike-index"
    # segment catalog (segment_id, name, kind) for display names; None: guessed from the repo
    segment_catalog: Path | None = None


@stage_config
class AssignConfig:
    repo: Path = Path("feature_repo")
    date: IsoDate = ""
    bundle: Path | None = None  # default: the current bundle recorded under index root
    index_root: Path = Path("artifacts/index")
    output_root: Path = Path("artifacts/segments")
    model: ModelRef = field(default_factory=ModelRef)
    batch_size: PositiveInt = 16384


@stage_config
class EvaluateConfig:
    repo: Path = Path("feature_repo")
    date: IsoDate = ""
    bundle: Path | None = None
    index_root: Path = Path("artifacts/index")
    segments_root: Path = Path("artifacts/segments")
    output_root: Path = Path("artifacts/reports")
    model: ModelRef = field(default_factory=ModelRef)
    baselines: list[str] = field(default_factory=lambda: [
        "raw_feature_knn", "iv_weighted_knn", "kmeans_propagation", "logistic_regression"])
    kmeans_clusters: PositiveInt = 32
    # segment catalog (segment_id, kind) to check flagged segments against; None: guessed
    # as <features>/../raw/segment_catalog.parquet
    segment_catalog: Path | None = None
    unrecoverable_margin: Fraction = 0.05
    confusion_segments: PositiveInt = 6
    log_mlflow: bool = True
    experiment: str = "lookalike-index"


@stage_config
class WeeklyConfig:
    repo: Path = Path("feature_repo")
    date: IsoDate = ""
    workspace: Path = Path("artifacts")
    retrain: bool = False
    # training config YAML used when retrain=true (overrides as "training.<key>=...")
    training_config: Path | None = None
    training_overrides: list[str] = field(default_factory=list)
    model: ModelRef = field(default_factory=ModelRef)
    index: IndexParams = field(default_factory=IndexParams)
    assignment: AssignmentParams = field(default_factory=AssignmentParams)
    evaluate: bool = True
    segment_catalog: Path | None = None
    baselines: list[str] = field(default_factory=lambda: [
        "raw_feature_knn", "iv_weighted_knn", "kmeans_propagation", "logistic_regression"])
    log_mlflow: bool = True
    batch_size: PositiveInt = 16384
    # where the population is embedded and scored: local (one process, the default) or spark
    # (executors; index_builder/spark_engine.py, docs/scaling.md)
    engine: str = "local"
    spark: SparkParams = field(default_factory=SparkParams)
    # drift against the last published run (index_builder/drift.py); a FAIL blocks publication
    drift: DriftConfig = field(default_factory=DriftConfig)
    # also publish index / segments / reports under this URI root (s3a://, gs://, hdfs://,
    # file://; lookalike/storage.py): uploaded before the local swap, pointers moved after it
    publish_uri: str | None = None

    # Fail when the new segment table has more than this fraction fewer rows than the live
    # one (1.0 accepts any drop); the live outputs are kept.
    max_row_drop_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.engine not in WEEKLY_ENGINES:
            raise ConfigError(f"engine must be one of {WEEKLY_ENGINES}, got {self.engine!r}")
