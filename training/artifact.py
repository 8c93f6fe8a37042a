"""The trained model as downstream stages see it (docs/contracts.md section 5).

``checkpoint.pt`` is self-describing: tower weights, model config, fitted preprocessing
state, FeatureContract, segment vocabulary, bin weights, split seed/fractions and the
snapshot manifest. It holds only tensors and JSON-able values, so it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from lookalike.contract import FeatureContract
from lookalike.errors import ArtifactError, PrivacyViolationError
from lookalike.settings import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from training.config import ModelConfig
from training.model import Tower, embed_arrays
from training.preprocessing import Preprocessor

__all__ = ["LookalikeEncoder", "ModelInfo", "embed_arrays", "load_registered_encoder", "split_of"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# Payload key marking a teacher checkpoint (privileged inputs, training/distill.py): the loader
# every downstream stage uses refuses it, so a teacher can never be indexed or served.
TEACHER_ROLE_KEY = "teacher_of"
SPLITS = np.array(["train", "validation", "test"])


def _splitmix64(values: np.ndarray) -> np.ndarray:
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_of(customer_ids: Any, seed: int, validation_fraction: float, test_fraction: float) -> np.ndarray:
    """Deterministic train/validation/test assignment from a seeded hash of customer_id."""
    ids = np.asarray(customer_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        hashed = _splitmix64(ids ^ _splitmix64(np.array([seed], dtype=np.uint64))[0])
    unit = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    index = np.where(unit < test_fraction, 2, np.where(unit < test_fraction + validation_fraction, 1, 0))
    return SPLITS[index]


class LookalikeEncoder:
    """Embeds customers from their legitimate-interest features (contract columns)."""

    def __init__(
        self, tower: Tower, preprocessor: Preprocessor, contract: FeatureContract, segments: list[str],
        metadata: dict[str, Any], segment_head: torch.nn.Linear | None = None,
    ) -> None:
        self.tower = tower.eval()
        # The auxiliary segment head trained with the tower (None when aux_weight was 0 or the
        # checkpoint predates it): one of the per-segment scorers the index builder selects from.
        self.segment_head = segment_head.eval() if segment_head is not None else None
        self.preprocessor = preprocessor
        self.contract = contract
        self.segments = list(segments)
        self.metadata = metadata

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["model_config"]["embedding_dim"])

    @property
    def bin_weights(self) -> np.ndarray:
        return np.asarray(self.metadata["bin_weights"], dtype=np.float64)

    def split_of(self, customer_ids: Any) -> np.ndarray:
        split = self.metadata["split"]
        return split_of(customer_ids, split["seed"], split["validation_fraction"], split["test_fraction"])

    def feature_matrix(self, frame: Any) -> np.ndarray:
        """The preprocessed feature matrix of a DataFrame or a {column: array} mapping."""
        return self.preprocessor.feature_matrix(frame)

    def segment_head_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(weight (n_segments, dim), bias (n_segments,))`` of the auxiliary head, or None."""
        if self.segment_head is None:
            return None
        return (self.segment_head.weight.detach().numpy().astype(np.float32).copy(),
                self.segment_head.bias.detach().numpy().astype(np.float32).copy())

    @torch.no_grad()
    def embed(self, frame: Any, batch_size: int = 16384) -> np.ndarray:
        """Embeddings of a DataFrame or a {column: array} mapping of contract columns."""
        features = self.preprocessor.transform(frame)
        return embed_arrays(self.tower, features.dense, features.categorical_index, batch_size)

    # -------------------------------------------------------------- checkpoint
    def checkpoint_payload(self) -> dict[str, Any]:
        head = {} if self.segment_head is None else {
            "segment_head": {k: v.detach().clone() for k, v in self.segment_head.state_dict().items()}}
        return {
            **head,
            "format": CHECKPOINT_FORMAT,
            "state_dict": {k: v.detach().clone() for k, v in self.tower.state_dict().items()},
            "metadata_json": json.dumps(self.metadata, sort_keys=True),
            "preprocessing_json": json.dumps(self.preprocessor.state, sort_keys=True),
            "contract_json": json.dumps(self.contract.to_dict(), sort_keys=True),
            "segments": list(self.segments),
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.checkpoint_payload(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LookalikeEncoder:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"model checkpoint not found: {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if TEACHER_ROLE_KEY in payload:
            raise PrivacyViolationError(
                f"{path} is a teacher checkpoint (trained on the privileged view for run "
                f"{payload[TEACHER_ROLE_KEY]}); it cannot embed, index or serve customers"
            )
        return cls.from_payload(payload, path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path = "<payload>") -> LookalikeEncoder:
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ArtifactError(f"{path}: unsupported checkpoint format {payload.get('format')!r}")
        metadata = json.loads(payload["metadata_json"])
        preprocessor = Preprocessor.from_state(json.loads(payload["preprocessing_json"]))
        contract = FeatureContract.from_dict(json.loads(payload["contract_json"]))
        tower = Tower(preprocessor.dense_dim, preprocessor.cardinalities, ModelConfig(**metadata["model_config"]))
        tower.load_state_dict(payload["state_dict"])
        head = None
        if "segment_head" in payload:
            weight = payload["segment_head"]["weight"]
            head = torch.nn.Linear(weight.shape[1], weight.shape[0])
            head.load_state_dict(payload["segment_head"])
        return cls(tower, preprocessor, contract, payload["segments"], metadata, head)


class EncoderPyfunc(PythonModel):
    """MLflow pyfunc wrapper: a DataFrame with contract columns in, embeddings out."""

    def load_context(self, context: Any) -> None:
        self.encoder = LookalikeEncoder.load(context.artifacts["checkpoint"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.encoder.embed(model_input)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    run_id: str
    model_uri: str
    snapshot_hash: str
    feature_service: str
    feature_service_version: str
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _global_mlflow_uris(tracking_uri: str) -> Iterator[None]:
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


@contextlib.contextmanager
def downloaded_model(
    tracking_uri: str, model_name: str = REGISTERED_MODEL_NAME, alias_or_version: str | int = CHAMPION_ALIAS,
    cache_dir: str | Path | None = None,
) -> Iterator[tuple[Path, Any]]:
    """The directory holding a registered version's ``checkpoint.pt`` (and the artifacts logged
    beside it), and the version; temporary unless ``cache_dir`` is given."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = str(alias_or_version)
    try:
        version = client.get_model_version(model_name, ref) if ref.isdigit() else (
            client.get_model_version_by_alias(model_name, ref)
        )
    except MlflowException as exc:
        raise ArtifactError(f"registered model {model_name!r} has no version or alias {ref!r} at {tracking_uri}") from exc
    with contextlib.ExitStack() as stack:
        destination = Path(cache_dir) if cache_dir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="lookalike-model-")))
        # `models:/` resolution consults MLflow's global URIs, not only the arguments below.
        stack.enter_context(_global_mlflow_uris(tracking_uri))
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version.version}", dst_path=str(destination),
            tracking_uri=tracking_uri, registry_uri=tracking_uri,
        ))
        candidates = sorted(local.rglob(CHECKPOINT_NAME))
        if not candidates:
            raise ArtifactError(f"model {model_name} v{version.version} has no {CHECKPOINT_NAME} artifact")
        yield candidates[0].parent, version


def load_registered_encoder(
    tracking_uri: str, model_name: str = REGISTERED_MODEL_NAME, alias_or_version: str | int = CHAMPION_ALIAS,
    cache_dir: str | Path | None = None,
) -> tuple[LookalikeEncoder, ModelInfo]:
    """Fetch a registered model version (by alias or number) and build its encoder."""
    # The checkpoint is read fully into memory, so without a cache_dir the download is temporary.
    with downloaded_model(tracking_uri, model_name, alias_or_version, cache_dir) as (directory, version):
        encoder = LookalikeEncoder.load(directory / CHECKPOINT_NAME)
    snapshot = encoder.metadata.get("snapshot_manifest", {})
    info = ModelInfo(
        name=model_name,
        version=str(version.version),
        run_id=str(version.run_id),
        model_uri=f"models:/{model_name}/{version.version}",
        snapshot_hash=str(snapshot.get("content_hash", "")),
        feature_service=encoder.contract.service_name,
        feature_service_version=encoder.contract.service_version,
        aliases=tuple(getattr(version, "aliases", []) or []),
    )
    return encoder, info
