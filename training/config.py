"""Trainer configuration: one dataclass tree, YAML in ``configs/training.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lookalike.mlflow_store import default_tracking_uri
from lookalike.settings import EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from training.segment_weights import WEIGHTINGS

PROMOTE_CHOICES = ("always", "if_better", "never")


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    embedding_dim: int = 64
    input_dropout: float = 0.1
    dropout: float = 0.2
    # Learned embedding width for each high-cardinality column (region_code).
    high_cardinality_dim: int = 8


@dataclass
class PreprocessingConfig:
    # High-cardinality values seen fewer times than this in training map to the OOV bucket.
    min_category_count: int = 5
    # feature_matrix(): one-hot of this many most frequent high-cardinality values + "other".
    feature_matrix_top_values: int = 50
    # z-scores are clipped so a handful of heavy users cannot dominate a batch.
    clip_z: float = 5.0


@dataclass
class SamplingConfig:
    bin_width: float = 0.1
    # Random pairs used once to estimate the natural similarity distribution (bin weights).
    natural_pairs: int = 200_000
    # Candidate pairs drawn per batch = pool_factor * batch_size, then importance-resampled.
    pool_factor: int = 8
    # Share of each batch kept at the natural distribution (0 = fully bin-balanced, as published;
    # 0.5 measured better on both natural MAE and the kNN proxy).
    natural_fraction: float = 0.5
    batch_size: int = 1024
    pairs_per_epoch: int = 200_000
    validation_pairs: int = 20_000
    test_pairs: int = 20_000


@dataclass
class SegmentWeightingConfig:
    # none: every segment counts equally in the pair target (as published); predictability:
    # each segment weighted by how well the legitimate-interest features explain it on the
    # training split (training/segment_weights.py), so unexplainable segments stop being noise.
    method: str = "predictability"
    # weight = (held-out Gini / max Gini) ** power, never below floor.
    power: float = 1.0
    floor: float = 0.05


@dataclass
class SplitConfig:
    seed: int = 20240501
    validation_fraction: float = 0.15
    test_fraction: float = 0.15


@dataclass
class TrackingConfig:
    # $MLFLOW_TRACKING_URI when set, else sqlite:///mlflow.db (lookalike/mlflow_store.py).
    tracking_uri: str = field(default_factory=default_tracking_uri)
    experiment: str = EXPERIMENT_NAME
    # None: beside a SQLite store (<db dir>/mlartifacts), or the tracking server's choice
    # (mlflow-artifacts:/ with `mlflow server --serve-artifacts`). Used when the experiment is created.
    artifact_location: str | None = None
    model_name: str = REGISTERED_MODEL_NAME
    register: bool = True
    promote: str = "if_better"
    run_name: str | None = None


@dataclass
class TrainConfig:
    snapshot: Path | None = None
    # Feast repo: when given, the privacy guard is re-run and compared with the snapshot.
    repo: Path | None = None
    seed: int = 7
    epochs: int = 30
    patience: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    # Pair target: a name in training.targets.TARGETS (cosine, jaccard, hamming).
    target: str = "cosine"
    # Auxiliary multi-label segment head (BCE on the embedding); 0 disables it (as published).
    # 1.0 measured better kNN assignment at realistic scale (bench/README.md, Training).
    aux_weight: float = 1.0
    # Early stopping monitor: val_mae (lower is better) or val_knn_micro_f1 (higher is better);
    # the kNN proxy tracks what the model is for (segment assignment), so it is the default.
    monitor: str = "val_knn_micro_f1"
    knn_k: int = 10
    knn_max_queries: int = 5000
    min_customers: int = 100
    threads: int = 2
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    segment_weighting: SegmentWeightingConfig = field(default_factory=SegmentWeightingConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.tracking.promote not in PROMOTE_CHOICES:
            raise ValueError(f"tracking.promote must be one of {PROMOTE_CHOICES}, got {self.tracking.promote!r}")
        if self.monitor not in ("val_mae", "val_knn_micro_f1"):
            raise ValueError(f"monitor must be val_mae or val_knn_micro_f1, got {self.monitor!r}")
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
        if not 0 < self.segment_weighting.floor <= 1:
            raise ValueError("segment_weighting.floor must be in (0, 1]")
        if not 0 <= self.sampling.natural_fraction <= 1:
            raise ValueError("sampling.natural_fraction must be in [0, 1]")
