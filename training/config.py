"""Trainer configuration: one dataclass tree, YAML in ``configs/training.yaml``."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field

from lookalike.config import Fraction, Location, NonNegativeFloat, PositiveFloat, PositiveInt, stage_config
from lookalike.mlflow_store import default_tracking_uri
from lookalike.settings import EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from training.segment_weights import WEIGHTINGS

Promote = Literal["always", "if_better", "never"]
PROMOTE_CHOICES: tuple[str, ...] = get_args(Promote)
Dropout = Annotated[float, Field(ge=0, lt=1)]


@stage_config
class ModelConfig:
    hidden: list[PositiveInt] = field(default_factory=lambda: [256, 128])
    embedding_dim: PositiveInt = 64
    input_dropout: Dropout = 0.1
    dropout: Dropout = 0.2
    # Learned embedding width for each high-cardinality column (region_code).
    high_cardinality_dim: PositiveInt = 8


@stage_config
class PreprocessingConfig:
    # High-cardinality values seen fewer times than this in training map to the OOV bucket.
    min_category_count: PositiveInt = 5
    # feature_matrix(): one-hot of this many most frequent high-cardinality values + "other".
    feature_matrix_top_values: PositiveInt = 50
    # z-scores are clipped so a handful of heavy users cannot dominate a batch.
    clip_z: PositiveFloat = 5.0


@stage_config
class SamplingConfig:
    bin_width: Annotated[float, Field(gt=0, le=1)] = 0.1
    # Random pairs used once to estimate the natural similarity distribution (bin weights).
    natural_pairs: PositiveInt = 200_000
    # Candidate pairs drawn per batch = pool_factor * batch_size, then importance-resampled.
    pool_factor: PositiveInt = 8
    # Share of each batch kept at the natural distribution (0 = fully bin-balanced, as published;
    # 0.5 measured better on both natural MAE and the kNN proxy).
    natural_fraction: Fraction = 0.5
    batch_size: Annotated[int, Field(ge=2)] = 1024
    pairs_per_epoch: PositiveInt = 200_000
    validation_pairs: PositiveInt = 20_000
    test_pairs: PositiveInt = 20_000


@stage_config
class SegmentWeightingConfig:
    # none: every segment counts equally in the pair target (as published); predictability:
    # each segment weighted by how well the legitimate-interest features explain it on the
    # training split (training/segment_weights.py), so unexplainable segments stop being noise.
    method: str = "predictability"
    # weight = (held-out Gini / max Gini) ** power, never below floor.
    power: NonNegativeFloat = 1.0
    floor: Annotated[float, Field(gt=0, le=1)] = 0.05


@stage_config
class SplitConfig:
    seed: int = 20240501
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.15
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.15


DistillMode = Literal["similarity", "regression"]
DISTILL_MODES: tuple[str, ...] = get_args(DistillMode)


@stage_config
class DistillConfig:
    """Teacher-student training (training/distill.py): a teacher tower also sees the repo's
    privileged view (consented features, opt-in customers only) and guides the student, which
    sees legitimate-interest features only and is the one model registered."""

    # Needs `repo` (the privileged view is read from the Feast repo); a repo without a
    # privileged view trains the plain student.
    enabled: bool = False
    # Teacher terms to try: "similarity" blends the pair target with the teacher's cosine on the
    # same pairs; "regression" pulls each student embedding toward the teacher's.
    modes: list[DistillMode] = field(default_factory=lambda: ["similarity", "regression"])
    # Candidate weights of the teacher term. Every (mode, weight) student and the plain student
    # (weight 0) are trained; the best validation kNN micro-F1 is kept, so the weight is chosen
    # out of sample and distillation is dropped when it does not help on the data given.
    weights: list[Annotated[float, Field(gt=0, le=1)]] = field(default_factory=lambda: [0.3, 0.7])


@stage_config
class TowerCrossFitConfig:
    """Fold towers for out-of-sample tower scores on small bases (training/crossfit.py).

    The index builder calibrates and selects scorers on out-of-sample scores. The tower's come
    from the validation split, which holds 15% of the non-test customers: about 70 customers
    on a 470-customer base, too few for per-segment thresholds. At or below ``max_customers``
    non-test customers, ``folds`` extra towers are trained, each on the non-test customers
    outside its fold, and every non-test customer gets a tower score from the tower that never
    saw it. 3,000 is where the validation split reaches ~530 customers (enough positives for
    per-segment thresholds on segments of a few % prevalence) while fold training stays cheap:
    its cost grows with the base, its benefit shrinks. 0 disables fold towers.
    """

    max_customers: Annotated[int, Field(ge=0)] = 3000
    folds: Annotated[int, Field(ge=2, le=20)] = 5


@stage_config
class TrackingConfig:
    # $MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db (lookalike/mlflow_store.py).
    tracking_uri: str = field(default_factory=default_tracking_uri)
    experiment: str = EXPERIMENT_NAME
    # None: beside a SQLite store (<db dir>/mlartifacts), or the tracking server's choice
    # (mlflow-artifacts:/ with `mlflow server --serve-artifacts`). Used when the experiment is created.
    artifact_location: str | None = None
    model_name: str = REGISTERED_MODEL_NAME
    register: bool = True
    promote: Promote = "if_better"
    run_name: str | None = None


@stage_config
class TrainConfig:
    # A snapshot directory or URI (file://, s3a://, gs://, hdfs://; its current.json is followed).
    snapshot: Location | None = None
    # Feast repo: when given, the privacy guard is re-run and compared with the snapshot.
    repo: Path | None = None
    seed: int = 7
    epochs: PositiveInt = 30
    patience: PositiveInt = 4
    learning_rate: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-5
    # Pair target: a name in training.targets.TARGETS (cosine, jaccard, hamming).
    target: str = "cosine"
    # Auxiliary multi-label segment head (BCE on the embedding); 0 disables it (as published).
    # 1.0 measured better kNN assignment at realistic scale (bench/README.md, Training).
    aux_weight: NonNegativeFloat = 1.0
    # Early stopping monitor: val_mae (lower is better) or val_knn_micro_f1 (higher is better);
    # the kNN proxy tracks what the model is for (segment assignment), so it is the default.
    monitor: Literal["val_mae", "val_knn_micro_f1"] = "val_knn_micro_f1"
    knn_k: PositiveInt = 10
    knn_max_queries: PositiveInt = 5000
    min_customers: PositiveInt = 100
    # One intra-op thread: the tower's GEMMs are small (batch 1024, widths 256/128/64), and two
    # OpenMP threads collapse as soon as anything else uses the second core (bench/README.md,
    # 2026-11-27 at load 3.6: 3,318 pairs/s with 2 threads, 52,478 with 1). Raise it on a
    # dedicated multi-core trainer.
    threads: PositiveInt = 1
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    segment_weighting: SegmentWeightingConfig = field(default_factory=SegmentWeightingConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    tower_crossfit: TowerCrossFitConfig = field(default_factory=TowerCrossFitConfig)

    def __post_init__(self) -> None:
        fractions = self.split.validation_fraction + self.split.test_fraction
        if not 0 < fractions < 1:
            raise ValueError("split.validation_fraction + split.test_fraction must be in (0, 1)")
        if self.segment_weighting.method not in WEIGHTINGS:
            raise ValueError(f"segment_weighting.method must be one of {WEIGHTINGS}, "
                             f"got {self.segment_weighting.method!r}")
        if self.segment_weighting.method != "none" and self.target != "cosine":
            # scaling label vectors by sqrt(weight) is an exact weighted cosine, not a weighted Jaccard/Hamming
            raise ValueError(f"segment_weighting.method={self.segment_weighting.method} needs target=cosine; "
                             f"with target={self.target} also set segment_weighting.method=none")
