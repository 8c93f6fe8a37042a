"""Registry-driven preprocessing: each column's Feast ``encoding`` tag decides its transform.

The fitted state is a plain JSON-able dict stored inside the model checkpoint, so training,
index building and serving apply exactly the same transform. Policies:

- ``numeric``: median fill, z-score (clipped), plus an ``is_missing`` indicator when the
  training split had nulls in that column;
- ``categorical``: one-hot over the training categories plus an explicit ``unknown`` bucket
  (unseen values and nulls);
- ``boolean``: 0/1 pass-through, nulls -> 0 plus an indicator when training had nulls;
- ``high_cardinality``: an integer index (0 = OOV: unseen, rare below ``min_category_count``,
  or null) consumed by a learned embedding inside the tower; for the raw-feature baselines
  (:meth:`Preprocessor.feature_matrix`) a one-hot of the most frequent values plus ``other``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from lookalike.contract import FeatureContract
from lookalike.errors import DataValidationError
from training.config import PreprocessingConfig

STATE_VERSION = 1
UNKNOWN = "__unknown__"
# Below this many rows, categorical codes come from dict lookups instead of pandas
# (serving's single-customer path: pandas' fixed cost per column dominates there).
SMALL_BATCH_ROWS = 64

# A DataFrame, or a mapping of column name -> array (numpy, pandas extension array or
# Series): what the online reader hands over without building a DataFrame per request.
Columns: TypeAlias = pd.DataFrame | Mapping[str, Any]


def _n_rows(frame: Columns) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if len(frame) else 0


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (not isinstance(value, str) and bool(value != value))


def _as_numeric(series: Any, column: str) -> np.ndarray:
    if isinstance(series, np.ndarray) and series.dtype.kind in "fiu":
        return series.astype(np.float64, copy=False)
    try:
        values = pd.to_numeric(series, errors="raise")
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"column {column!r} is tagged numeric but holds non-numeric values: {exc}") from exc
    return np.asarray(values, dtype=np.float64)


def _as_boolean(series: Any, column: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(series, pd.arrays.BooleanArray):
        return series.to_numpy(dtype=np.float32, na_value=0.0), np.asarray(series.isna())
    if isinstance(series, np.ndarray) and series.dtype.kind == "b":
        return series.astype(np.float32), np.zeros(len(series), dtype=bool)
    series = pd.Series(series) if not isinstance(series, pd.Series) else series
    missing = series.isna().to_numpy()
    filled = series.where(~series.isna(), False)
    try:
        values = np.asarray(filled.astype(bool), dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"column {column!r} is tagged boolean but holds {series.dtype} values") from exc
    return values, missing


def _as_strings(series: Any) -> tuple[np.ndarray, np.ndarray]:
    series = pd.Series(series) if not isinstance(series, pd.Series) else series
    missing = series.isna().to_numpy()
    return series.astype(object).where(~series.isna(), None).astype(str).to_numpy(), missing


def _codes(series: Any, values: list[str], default: int, offset: int = 0,
           lookup: dict[str, int] | None = None) -> np.ndarray:
    """Position of each value in ``values`` (+ ``offset``); ``default`` for unseen or null.

    With ``lookup`` (value -> position) and a small batch: plain dict lookups, same result.
    """
    if lookup is not None and len(series) <= SMALL_BATCH_ROWS:
        return np.fromiter(
            (default if _is_missing(v) or (code := lookup.get(v if isinstance(v, str) else str(v))) is None
             else code + offset for v in series),
            dtype=np.int64, count=len(series))
    strings, missing = _as_strings(series)
    codes = pd.Categorical(strings, categories=values).codes.astype(np.int64)
    return np.where((codes < 0) | missing, default, codes + offset)


@dataclass
class TransformedFeatures:
    """Model input: dense float features and one index column per high-cardinality feature."""

    dense: np.ndarray  # float32 (n, dense_dim)
    categorical_index: np.ndarray  # int64 (n, n_high_cardinality)


class Preprocessor:
    """Fitted transform; build with :meth:`fit` or :meth:`from_state`."""

    def __init__(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataValidationError(f"unsupported preprocessing state version {state.get('version')!r}")
        self.state = state
        # value -> position per categorical / high-cardinality column, for small batches
        self._lookups: dict[tuple[str, str], dict[str, int]] = {}
        for item in state.get("categorical", []):
            self._lookups[("categories", item["column"])] = {v: i for i, v in enumerate(item["categories"])}
        for item in state.get("high_cardinality", []):
            self._lookups[("vocabulary", item["column"])] = {v: i for i, v in enumerate(item["vocabulary"])}

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, frame: pd.DataFrame, contract: FeatureContract, config: PreprocessingConfig) -> Preprocessor:
        if len(frame) == 0:
            raise DataValidationError("cannot fit preprocessing on zero rows")
        numeric, categorical, boolean, high = [], [], [], []
        for spec in contract.features:
            column = spec.column
            if column not in frame.columns:
                raise DataValidationError(f"contract column {column!r} is missing from the data")
            series = frame[column]
            if spec.encoding == "numeric":
                values = _as_numeric(series, column)
                observed = values[~np.isnan(values)]
                if observed.size == 0:
                    raise DataValidationError(f"numeric column {column!r} is entirely null in the training split")
                median = float(np.median(observed))
                filled = np.where(np.isnan(values), median, values)
                std = float(filled.std())
                numeric.append({
                    "column": column,
                    "median": median,
                    "mean": float(filled.mean()),
                    "std": std if std > 1e-12 else 1.0,
                    "indicator": bool(np.isnan(values).any()),
                })
            elif spec.encoding == "categorical":
                strings, missing = _as_strings(series)
                categories = sorted(set(strings[~missing].tolist()))
                categorical.append({"column": column, "categories": categories})
            elif spec.encoding == "boolean":
                _, missing = _as_boolean(series, column)
                boolean.append({"column": column, "indicator": bool(missing.any())})
            elif spec.encoding == "high_cardinality":
                strings, missing = _as_strings(series)
                counts = pd.Series(strings[~missing]).value_counts()
                frequent = sorted(counts[counts >= config.min_category_count].index.tolist())
                # Ties broken by value so the state is deterministic.
                ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                top = [value for value, _ in ranked[: config.feature_matrix_top_values]]
                high.append({"column": column, "vocabulary": frequent, "top_values": top})
            else:
                raise DataValidationError(f"column {column!r} has unknown encoding {spec.encoding!r}")
        state = {
            "version": STATE_VERSION,
            "clip_z": config.clip_z,
            "numeric": numeric,
            "categorical": categorical,
            "boolean": boolean,
            "high_cardinality": high,
        }
        return cls(state)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        return cls(state)

    # ------------------------------------------------------------- properties
    @property
    def columns(self) -> list[str]:
        return [item["column"] for kind in ("numeric", "categorical", "boolean", "high_cardinality")
                for item in self.state[kind]]

    @property
    def dense_names(self) -> list[str]:
        names: list[str] = []
        for item in self.state["numeric"]:
            names.append(item["column"])
            if item["indicator"]:
                names.append(f"{item['column']}__is_missing")
        for item in self.state["categorical"]:
            names.extend(f"{item['column']}={c}" for c in item["categories"])
            names.append(f"{item['column']}={UNKNOWN}")
        for item in self.state["boolean"]:
            names.append(item["column"])
            if item["indicator"]:
                names.append(f"{item['column']}__is_missing")
        return names

    @property
    def dense_dim(self) -> int:
        return len(self.dense_names)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per high-cardinality column (OOV bucket 0 included)."""
        return [len(item["vocabulary"]) + 1 for item in self.state["high_cardinality"]]

    # -------------------------------------------------------------- transform
    def _check_columns(self, frame: Columns) -> None:
        present = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
        missing = [c for c in self.columns if c not in present]
        if missing:
            raise DataValidationError(f"input is missing contract column(s): {missing}")

    def _dense_blocks(self, frame: Columns) -> list[np.ndarray]:
        clip = float(self.state["clip_z"])
        n = _n_rows(frame)
        blocks: list[np.ndarray] = []
        for item in self.state["numeric"]:
            values = _as_numeric(frame[item["column"]], item["column"])
            missing = np.isnan(values)
            z = (np.where(missing, item["median"], values) - item["mean"]) / item["std"]
            blocks.append(np.clip(z, -clip, clip)[:, None])
            if item["indicator"]:
                blocks.append(missing[:, None].astype(np.float64))
        for item in self.state["categorical"]:
            unknown = len(item["categories"])
            index = _codes(frame[item["column"]], item["categories"], unknown,
                           lookup=self._lookups[("categories", item["column"])])
            onehot = np.zeros((n, unknown + 1))
            onehot[np.arange(n), index] = 1.0
            blocks.append(onehot)
        for item in self.state["boolean"]:
            values, missing = _as_boolean(frame[item["column"]], item["column"])
            blocks.append(values[:, None].astype(np.float64))
            if item["indicator"]:
                blocks.append(missing[:, None].astype(np.float64))
        return blocks

    def transform(self, frame: Columns) -> TransformedFeatures:
        """Model input for a DataFrame or a mapping of column -> array (same result)."""
        self._check_columns(frame)
        n = _n_rows(frame)
        blocks = self._dense_blocks(frame)
        dense = np.hstack(blocks).astype(np.float32) if blocks else np.zeros((n, 0), np.float32)
        indices = []
        for item in self.state["high_cardinality"]:
            indices.append(_codes(frame[item["column"]], item["vocabulary"], 0, offset=1,
                                  lookup=self._lookups[("vocabulary", item["column"])]))
        categorical_index = np.stack(indices, axis=1) if indices else np.zeros((n, 0), np.int64)
        return TransformedFeatures(dense=dense, categorical_index=categorical_index)

    def feature_matrix(self, frame: Columns) -> np.ndarray:
        """The fitted preprocessing as one flat float32 matrix (input of the feature-based
        scorers); a DataFrame or a mapping of column -> array, like :meth:`transform`."""
        self._check_columns(frame)
        n = _n_rows(frame)
        blocks = self._dense_blocks(frame)
        for item in self.state["high_cardinality"]:
            other = len(item["top_values"])
            index = _codes(frame[item["column"]], item["top_values"], other)
            onehot = np.zeros((n, other + 1))
            onehot[np.arange(n), index] = 1.0
            blocks.append(onehot)
        if not blocks:
            return np.zeros((n, 0), np.float32)
        return np.hstack(blocks).astype(np.float32)
