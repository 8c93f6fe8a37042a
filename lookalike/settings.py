"""Names shared by every stage. Hyperparameters do not live here: they live in each
stage's config dataclass, and travel between stages inside artifact manifests."""

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
REGISTERED_MODEL_NAME = "lookalike-two-tower"
CHAMPION_ALIAS = "champion"
CANDIDATE_ALIAS = "candidate"
EXPERIMENT_NAME = "lookalike"

# Environment variables understood across stages.
ENV_DATA_DIR = "LOOKALIKE_DATA_DIR"  # where feature_repo's file sources point
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REDIS_URL = "LOOKALIKE_REDIS_URL"
