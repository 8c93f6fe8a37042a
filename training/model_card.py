"""What a registered model version says about itself: MLflow signature and input example
(both from the feature contract), the version description, the model card, and the
training snapshot as an MLflow dataset.

The input example is synthesised from the fitted preprocessing state (medians, known
categories), never copied from customer rows: the registry is read by more people than
the feature store is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from lookalike.contract import FeatureContract, cast_to_contract
from training.artifact import LookalikeEncoder

# Feast dtype -> the MLflow type of the column after cast_to_contract (numbers are float64).
MLFLOW_TYPES = {"Float64": "double", "Float32": "double", "Int64": "double", "Int32": "double",
                "Bool": "boolean", "String": "string"}
LEGITIMATE_INTEREST = "legitimate_interest"


def model_signature(contract: FeatureContract, embedding_dim: int) -> ModelSignature:
    """One column per contract feature in, one float32 embedding row per customer out."""
    unknown = sorted({f.dtype for f in contract.features} - set(MLFLOW_TYPES))
    if unknown:
        raise ValueError(f"feature contract has dtypes with no MLflow type: {unknown}")
    inputs = Schema([ColSpec(MLFLOW_TYPES[f.dtype], f.column) for f in contract.features])  # type: ignore[arg-type]
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, embedding_dim), "embedding")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(encoder: LookalikeEncoder) -> pd.DataFrame:
    """Two plausible customers from the fitted preprocessing state (no real customer's row)."""
    state = encoder.preprocessor.state
    rows: list[dict[str, Any]] = [{}, {}]
    for item in state["numeric"]:
        rows[0][item["column"]] = round(float(item["median"]), 3)
        rows[1][item["column"]] = round(float(item["mean"]), 3)
    for item in state["categorical"]:
        categories = item["categories"] or [None]
        rows[0][item["column"]] = categories[0]
        rows[1][item["column"]] = categories[-1]
    for item in state["boolean"]:
        rows[0][item["column"]] = False
        rows[1][item["column"]] = True
    for item in state["high_cardinality"]:
        values = item["top_values"] or item["vocabulary"] or [None]
        rows[0][item["column"]] = values[0]
        rows[1][item["column"]] = values[min(1, len(values) - 1)]
    frame = pd.DataFrame(rows, columns=encoder.contract.columns)
    return cast_to_contract(frame, encoder.contract)


@dataclass(frozen=True)
class CardFacts:
    """Everything the card and the description state, gathered by the tracking step."""

    model_name: str
    model_version: str | None
    run_id: str
    contract: FeatureContract
    snapshot_path: str
    snapshot_hash: str
    snapshot_manifest: dict[str, Any]
    split_sizes: dict[str, int]
    segments: Sequence[str]
    segment_weights: Sequence[float] | None
    weight_floor: float | None
    metrics: dict[str, float]
    embedding_dim: int
    promotion_reason: str
    # view name -> (legal basis, role) for the registry's views that are not model inputs
    other_views: dict[str, tuple[str, str]]


def hard_to_recover(facts: CardFacts) -> list[str]:
    """Segments the legitimate-interest features barely explain on the training split
    (predictability weight at its floor): lookalike assignment will add little for them."""
    if facts.segment_weights is None or facts.weight_floor is None:
        return []
    return [s for s, w in zip(facts.segments, facts.segment_weights, strict=True)
            if w <= facts.weight_floor * (1 + 1e-6)]


def version_description(facts: CardFacts) -> str:
    manifest = facts.snapshot_manifest
    m = facts.metrics
    verdict = "beats" if m["val_knn_micro_f1"] > m["raw_knn_micro_f1"] else "does not beat"
    return (
        f"Two-tower customer encoder ({facts.embedding_dim}-dim embeddings) over feature service "
        f"{facts.contract.service_name} v{facts.contract.service_version} ({len(facts.contract.features)} "
        f"legitimate-interest features), trained on the snapshot at label date {manifest.get('label_date')} "
        f"({facts.split_sizes.get('train', 0)} opt-in customers in training, hash {facts.snapshot_hash[:12]}). "
        f"Test pair MAE {m['test_mae']:.4f}; validation kNN micro-F1 {m['val_knn_micro_f1']:.3f}, which "
        f"{verdict} raw-feature kNN ({m['raw_knn_micro_f1']:.3f}). {facts.promotion_reason}. "
        "Model card: artifact model_card.md."
    )


def model_card(facts: CardFacts) -> str:
    manifest = facts.snapshot_manifest
    m = facts.metrics
    by_view: dict[str, int] = {}
    for feature in facts.contract.features:
        by_view[feature.view] = by_view.get(feature.view, 0) + 1
    lines = [
        f"# Model card: {facts.model_name}" + (f" v{facts.model_version}" if facts.model_version else ""),
        "",
        "Embeds a customer from legitimate-interest features only, so that the cosine of two "
        "customers' embeddings approximates the cosine of their marketing-segment vectors. "
        "Non-opt-in customers inherit segments from their nearest opt-in neighbours in this "
        "embedding space (index_builder); the model itself assigns nothing.",
        "",
        f"MLflow run `{facts.run_id}`.",
        "",
        "## Data",
        "",
        "| item | value |",
        "|---|---|",
        f"| snapshot | `{facts.snapshot_path}` |",
        f"| content hash | `{facts.snapshot_hash}` |",
        f"| label date | {manifest.get('label_date', '')} |",
        f"| customers in the snapshot (opt-in, not suppressed) | {manifest.get('row_count', '')} |",
        f"| train / validation / test customers | {facts.split_sizes.get('train', 0)} / "
        f"{facts.split_sizes.get('validation', 0)} / {facts.split_sizes.get('test', 0)} |",
        f"| rows missing features, per view | {manifest.get('rows_missing_features', {})} |",
        f"| segments | {len(facts.segments)} |",
        "",
        "## Feature views by legal basis",
        "",
        "| legal basis | view | fields | role |",
        "|---|---|---|---|",
    ]
    for view, count in sorted(by_view.items()):
        lines.append(f"| {LEGITIMATE_INTEREST} | {view} | {count} | model input |")
    for view, (basis, role) in sorted(facts.other_views.items()):
        lines.append(f"| {basis} | {view} | - | {role} |")
    lines += [
        "",
        f"Model inputs come only from feature service `{facts.contract.service_name}` "
        f"v{facts.contract.service_version}, whose views the privacy guard checked to be tagged "
        f"`{LEGITIMATE_INTEREST}` before any value was read. Segment labels (held under consent) "
        "are training targets for opt-in customers only, never inputs.",
        "",
        "## Metrics against baselines",
        "",
        "| metric | this model | baseline |",
        "|---|---|---|",
        f"| validation kNN micro-F1 (k neighbours, best threshold) | {m['val_knn_micro_f1']:.4f} | "
        f"{m['raw_knn_micro_f1']:.4f} (raw-feature kNN) |",
        f"| test pair MAE (cosine of segment vectors) | {m['test_mae']:.4f} | - |",
        f"| validation pair MAE | {m['val_mae']:.4f} | - |",
        "",
        "The full comparison with the other baselines (information-value-weighted kNN, k-means "
        "propagation, per-segment logistic regression) on held-out opt-in customers is made by "
        "the weekly evaluation (`lookalike weekly`), logged to the `lookalike-index` experiment.",
        "",
        "## Segments the features cannot recover",
        "",
    ]
    hard = hard_to_recover(facts)
    if facts.segment_weights is None:
        lines.append("Not assessed at training (segment weighting off); see the weekly evaluation report.")
    elif hard:
        lines.append(f"{len(hard)} segment(s) are barely explained by legitimate-interest features on the "
                     f"training split (predictability weight at its floor {facts.weight_floor}): "
                     + ", ".join(f"`{s}`" for s in hard) + ". Do not expect lookalike volume for them.")
    else:
        lines.append("None: every segment is partly explained by legitimate-interest features.")
    lines += [
        "",
        "## Limits",
        "",
        "- Trained on opt-in customers only; non-opt-in customers may differ in ways the features "
        "do not show, and their assigned segments cannot be checked against truth.",
        "- Segments driven by consent-only data (for example web navigation) are not recoverable "
        "from legitimate-interest features, whatever the model.",
        "- Embedding similarity is not a probability; segment decisions come from the per-segment "
        "thresholds of the index bundle.",
        f"- Valid only with feature service `{facts.contract.service_name}` "
        f"v{facts.contract.service_version}: serving refuses any other version.",
        "- Quality was measured on the snapshot above; drift in the features or the segment "
        "definitions needs retraining and re-evaluation.",
        "",
    ]
    return "\n".join(lines)
