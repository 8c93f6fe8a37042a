"""Candidate per-segment scorers: out-of-sample scores for selection, fitted state for serving.

Every scorer maps a customer to one score per segment (higher = more likely a holder). The
index builder computes, for each scorer, scores on opt-in anchors that the scorer did not
train on, and fits the state that batch assignment, evaluation and ``/assign`` use:

========================  ==================================================  ======================================
scorer (simplest first)   out-of-sample scores                                fitted state (bundle ``scorers/``)
========================  ==================================================  ======================================
``logistic_regression``   K-fold cross-fitting over non-test anchors          one coefficient row per segment
``tower_head``            validation anchors (the head trained with the        the auxiliary head's weight and bias
                          tower on the train split)
``tower_knn``             validation anchors, neighbours among non-test        the FAISS index itself
                          anchors without themselves (the tower trained on
                          the train split)
``raw_feature_knn``       leave-one-out among non-test anchors                the anchors' feature matrix
``iv_weighted_knn``       leave-one-out among non-test anchors, IV weights    IV weights per segment + anchor features
                          from the other K folds (never the query's label)
``gradient_boosting``     K-fold cross-fitting over non-test anchors          one LightGBM model per segment
``blend``                 mean of the members' out-of-sample scores           none of its own: the members' state
                          (members: the candidates scored out of sample on     (members listed in ``selection.json``)
                          every non-test anchor)
========================  ==================================================  ======================================

The blend is the unweighted mean of its members' scores (all are probability-like, in [0, 1]):
no weight is fitted, so it needs no further out-of-sample split; it is last in the order (the
most complex candidate), so it is chosen only where it beats a single scorer by more than the
noise of the comparison (:mod:`index_builder.selection`).

When the model carries fold towers (small bases, training/crossfit.py), the two tower scorers
are scored on every non-test anchor instead of the validation split
(:mod:`index_builder.tower_crossfit`).

The test split never enters a fit, a threshold or a selection: it is for the report only.
The two feature-space kNN scorers scan every anchor per query; above
``assignment.feature_knn_max_anchors`` anchors they are not candidates (:func:`feature_knn_guard`).
Inputs are the encoder's embeddings (L2-normalised) and ``encoder.feature_matrix`` (the
preprocessed legitimate-interest features), so the privacy guard upstream covers every scorer.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from index_builder import faiss_backend
from index_builder.aggregation import score_neighbours
from index_builder.baselines import information_value
from index_builder.booster_merge import MergedBoosters, merge_boosters
from lookalike.errors import ArtifactError, ConfigError
from lookalike.folds import fold_ids

log = logging.getLogger(__name__)

# Simplest first (linear before non-parametric, fewest fitted degrees of freedom first): a
# later scorer must beat an earlier one by more than the noise of the comparison.
BLEND = "blend"
SCORERS = ("logistic_regression", "tower_head", "tower_knn", "raw_feature_knn", "iv_weighted_knn",
           "gradient_boosting", BLEND)
# Scorers that need the preprocessed feature matrix (the others only need embeddings).
FEATURE_SCORERS = frozenset({"logistic_regression", "raw_feature_knn", "iv_weighted_knn", "gradient_boosting"})
# Exact searches in the feature space: cost O(queries x anchors x features), no index to prune
# them, so they are candidates only up to ``assignment.feature_knn_max_anchors`` anchors.
FEATURE_KNN_SCORERS = frozenset({"raw_feature_knn", "iv_weighted_knn"})
STATE_FILE = "state.npz"
GBM_DIR = "gradient_boosting"
ANCHOR_FEATURES_FILE = "anchor_features.npy"
SCORERS_JSON = "scorers.json"
# Up to this many rows, all gradient-boosting segments are scored by one merged LightGBM model
# (one predict call instead of one per segment: the per-call overhead dominates small requests);
# above it per-segment models are faster per row (bench/README.md, "Per-request cost").
MERGED_BOOSTER_MAX_ROWS = 64


def check_scorer_names(names: Sequence[str]) -> list[str]:
    unknown = sorted(set(names) - set(SCORERS))
    if unknown or not names:
        raise ConfigError(f"assignment.scorers must be a non-empty subset of {list(SCORERS)}; unknown {unknown}")
    return [s for s in SCORERS if s in names]


def feature_knn_guard(names: Sequence[str], anchors: int, max_anchors: int) -> tuple[list[str], dict[str, str]]:
    """``(candidates, {scorer: why it is not one})``: drops the exact feature-space kNN scorers
    when the index holds more than ``max_anchors`` anchors (every query would scan them all)."""
    if anchors <= max_anchors:
        return list(names), {}
    excluded = {name: (f"not a candidate: exact feature-space kNN over {anchors:,} anchors exceeds "
                       f"assignment.feature_knn_max_anchors={max_anchors:,} (cost grows with queries x "
                       f"anchors x features)") for name in names if name in FEATURE_KNN_SCORERS}
    return [n for n in names if n not in excluded], excluded


@dataclass
class AnchorData:
    """What the scorers learn from: every anchor, in index row order."""

    embeddings: np.ndarray  # (n, dim) float32, L2-normalised
    features: np.ndarray  # (n, d) float32, encoder.feature_matrix
    labels: sp.csr_matrix  # (n, n_segments) binary
    split: np.ndarray  # "train" | "validation" | "test" per anchor

    @property
    def fit_rows(self) -> np.ndarray:
        """Anchors a scorer may learn from: everything outside the test split."""
        return np.flatnonzero(self.split != "test")

    @property
    def validation_rows(self) -> np.ndarray:
        return np.flatnonzero(self.split == "validation")

    def dense_labels(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels[rows].toarray(), dtype=bool)


@dataclass
class ScorerParams:
    k: int
    aggregation: str
    folds: int = 5
    seed: int = 0
    # One thread: on a shared 2-core box LightGBM's OpenMP with 2 threads took 39 s for a fit
    # that takes 0.6 s with 1 (bench/README.md, "Scorer selection").
    threads: int = 1
    # Generic, untuned defaults (never fitted to one base): shallow trees, coarse histograms.
    gbm_trees: int = 100
    gbm_learning_rate: float = 0.1
    gbm_leaves: int = 15
    gbm_max_bin: int = 63
    gbm_min_child_samples: int = 20
    logistic_c: float = 1.0


@dataclass
class OutOfSample:
    rows: np.ndarray  # anchor rows the scores belong to
    scores: np.ndarray  # (len(rows), n_segments)

    def covers(self, rows: np.ndarray) -> bool:
        """Whether these are scores of exactly ``rows`` (in any order)."""
        return bool(np.array_equal(np.sort(self.rows), np.sort(rows)))

    def at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores of rows in that order, whether each row was scored)``; unscored rows get 0."""
        order = np.argsort(self.rows)
        ranked = self.rows[order]
        at = np.minimum(np.searchsorted(ranked, rows), len(ranked) - 1)
        covered = ranked[at] == rows
        return np.where(covered[:, None], self.scores[order[at]], 0.0).astype(self.scores.dtype), covered


# ---------------------------------------------------------------- per-segment learners
def _fit_logistic(x: np.ndarray, y: np.ndarray, params: ScorerParams) -> tuple[np.ndarray, float] | float:
    """``(coef, intercept)``, or the constant prevalence when one class is missing."""
    from sklearn.linear_model import LogisticRegression

    if y.all() or not y.any():
        return float(y.mean()) if len(y) else 0.0
    model = LogisticRegression(C=params.logistic_c, max_iter=500)
    model.fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _logistic_apply(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    logits = x @ coef.T + intercept
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)


def _fit_gbm(x: np.ndarray, y: np.ndarray, params: ScorerParams) -> Any:
    """A LightGBM booster, or the constant prevalence when one class is missing."""
    import lightgbm as lgb

    if y.all() or not y.any():
        return float(y.mean()) if len(y) else 0.0
    model = lgb.LGBMClassifier(
        n_estimators=params.gbm_trees, learning_rate=params.gbm_learning_rate, num_leaves=params.gbm_leaves,
        min_child_samples=min(params.gbm_min_child_samples, max(2, len(y) // 10)),
        subsample=0.8, subsample_freq=1, colsample_bytree=0.5, reg_lambda=1.0, max_bin=params.gbm_max_bin,
        n_jobs=params.threads, random_state=params.seed, verbose=-1,
    )
    model.fit(x, y.astype(np.int32))
    return model.booster_


def _gbm_apply(model: Any, x: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(x.shape[0], model, dtype=np.float32)
    return np.asarray(model.predict(x, num_threads=1 if x.shape[0] < 256 else 0), dtype=np.float32)


def _cross_fit(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fit: Any, apply: Any) -> np.ndarray:
    out = np.zeros(len(y), dtype=np.float32)
    for fold in np.unique(folds):
        held = folds == fold
        model = fit(x[~held], y[~held])
        out[held] = apply(model, x[held])
    return out


def _iv_weights(features: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Information-value weights of the features for one segment (None: no usable signal)."""
    weights = information_value(features > 0, y)
    return weights if np.any(weights > 0) else None


def _flat_index(pool: np.ndarray) -> Any:
    index = faiss_backend.faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    return index


def _knn(pool: np.ndarray, pool_labels: sp.csr_matrix, queries: np.ndarray, k: int, aggregation: str,
         exclude_rows: np.ndarray | None, index: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact cosine kNN scores (and the neighbours) of ``queries`` against ``pool``; pass the
    pool's prebuilt ``index`` where it is searched more than once (serving)."""
    if index is None:
        index = _flat_index(pool)
    k = min(k, pool.shape[0] - (1 if exclude_rows is not None else 0))
    normalised = faiss_backend.l2_normalise(queries)
    if exclude_rows is None:
        sims, ids = faiss_backend.search(index, normalised, k)
    else:
        sims, ids = faiss_backend.search_excluding_self(index, normalised, exclude_rows, k)
    return score_neighbours(sims, ids, pool_labels, aggregation), sims, ids


def weighted_knn_votes(pool: np.ndarray, holders: np.ndarray, queries: np.ndarray, weights: np.ndarray, k: int,
                       exclude_rows: np.ndarray | None = None, inverse_norms: np.ndarray | None = None,
                       memory_bytes: int = 2 << 20) -> np.ndarray:
    """IV-weighted kNN votes of several segments at once: ``(queries, segments)``.

    For segment ``s``: the share of holders (``holders[:, s]``) among the k nearest pool rows
    by cosine in the feature space scaled by ``weights[s]``. ``exclude_rows[i]`` (pool row or
    -1) is left out of query i's neighbours; ``inverse_norms`` (:func:`inverse_weighted_norms`
    of the pool) may be passed where the pool is searched more than once.

    The scaled pool is never materialised (``(q w^2) . a``): the similarities of all segments
    for a block of queries come from one matrix product ``(segments x block, d) @ (d, pool)``,
    so one online query reads the pool once instead of once per segment. The block is sized so
    the ``segments x block x pool`` array stays within ``memory_bytes`` (1-2 MB blocks ran 1.5x
    faster per query than 64 MB ones, bound by memory bandwidth). Ranking needs neither the
    query's norm (a positive constant per row) nor a separate negation (the product is taken
    with ``-w^2``): one multiply by the pool's inverse norms, then ``argpartition`` along the
    pool axis (bench/README.md, "Per-request cost").
    """
    n_segments, n_pool = weights.shape[0], pool.shape[0]
    out = np.empty((queries.shape[0], n_segments), dtype=np.float32)
    holders = np.asarray(holders, dtype=np.float32).reshape(n_pool, n_segments)
    k = min(k, n_pool - (1 if exclude_rows is not None else 0))
    if k < 1 or n_segments == 0:
        out[:] = holders.mean(axis=0) if n_pool else 0.0
        return out
    negated = -(weights * weights).astype(np.float32)
    if inverse_norms is None:
        inverse_norms = inverse_weighted_norms(pool, weights)
    by_segment, holders_t = inverse_norms[:, None, :], holders.T
    block = max(1, memory_bytes // (4 * n_segments * n_pool))
    segment_axis = np.arange(n_segments)[:, None, None]
    for start in range(0, queries.shape[0], block):
        q = queries[start:start + block]
        scaled = (q[None, :, :] * negated[:, None, :]).reshape(-1, q.shape[1])
        minus_sims = (scaled @ pool.T).reshape(n_segments, q.shape[0], n_pool)
        minus_sims *= by_segment
        if exclude_rows is not None:
            rows = np.asarray(exclude_rows[start:start + block])
            mine = np.flatnonzero(rows >= 0)
            minus_sims[:, mine, rows[mine]] = np.inf
        top = np.argpartition(minus_sims, k - 1, axis=2)[:, :, :k]
        out[start:start + block] = holders_t[segment_axis, top].mean(axis=2).T
    return out


def inverse_weighted_norms(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``1 / ||x_i||_{w_s}``, ``(segments, rows)``: the cosine's pool-side denominators."""
    squared = (weights * weights).astype(np.float32)
    norms = np.sqrt(np.maximum((x * x) @ squared.T, 1e-12)).astype(np.float32)
    return np.ascontiguousarray((1.0 / norms).T)


def iv_weights(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IV weights per segment ``(segments, d)`` and, per segment, the holders' share where no
    feature carries signal (the scorer is then that constant; NaN elsewhere)."""
    n_segments = labels.shape[1]
    weights = np.zeros((n_segments, features.shape[1]), np.float32)
    constant = np.full(n_segments, np.nan, np.float32)
    for j in range(n_segments):
        w = _iv_weights(features, labels[:, j])
        if w is None:
            constant[j] = labels[:, j].mean() if len(labels) else 0.0
        else:
            weights[j] = w
    return weights, constant


# ---------------------------------------------------------------- out-of-sample scores
def _iv_knn_leave_one_out(x: np.ndarray, y: np.ndarray, params: ScorerParams) -> np.ndarray:
    """IV-weighted kNN scores of every row without its own label: neighbours are all other
    rows, and the IV weights of a row's segment come from the other folds only (weights from
    all rows would let the held-out label shape its own metric)."""
    folds = fold_ids(len(y), params.folds, params.seed)
    out = np.empty(y.shape, dtype=np.float32)
    everyone = np.arange(len(y))
    for fold in tqdm(np.unique(folds), desc="iv-weighted kNN (leave-one-out)", unit="fold", leave=False):
        held = np.flatnonzero(folds == fold)
        others = folds != fold
        weights, constant = iv_weights(x[others], y[others])
        voting = np.isnan(constant)
        out[np.ix_(held, ~voting)] = constant[~voting]
        if voting.any():
            out[np.ix_(held, voting)] = weighted_knn_votes(x, y[:, voting], x[held], weights[voting], params.k,
                                                           everyone[held])
    return out


def out_of_sample(name: str, data: AnchorData, params: ScorerParams,
                  head: tuple[np.ndarray, np.ndarray] | None = None) -> OutOfSample | None:
    """Scores of ``name`` on anchors it did not learn from (None when it cannot run here)."""
    fit_rows = data.fit_rows
    n_segments = data.labels.shape[1]
    if name == "tower_knn" or name == "tower_head":
        rows = data.validation_rows
        if len(rows) == 0:
            return None
        if name == "tower_head":
            if head is None:
                return None
            return OutOfSample(rows, _logistic_apply(data.embeddings[rows], head[0], head[1]))
        # neighbours among non-test anchors only, so test labels never shape a threshold
        pool = data.embeddings[fit_rows]
        position = np.searchsorted(fit_rows, rows)
        scores, _, _ = _knn(pool, data.labels[fit_rows], data.embeddings[rows], params.k,
                            params.aggregation, position)
        return OutOfSample(rows, scores)
    x, y_all = data.features[fit_rows], data.dense_labels(fit_rows)
    out = np.zeros((len(fit_rows), n_segments), dtype=np.float32)
    if name == "raw_feature_knn":
        scores, _, _ = _knn(faiss_backend.l2_normalise(x), data.labels[fit_rows], x, params.k, params.aggregation,
                            np.arange(len(fit_rows)))
        return OutOfSample(fit_rows, scores)
    if name == "iv_weighted_knn":
        return OutOfSample(fit_rows, _iv_knn_leave_one_out(x, y_all, params))
    folds = fold_ids(len(fit_rows), params.folds, params.seed)
    if name == "logistic_regression":
        def fit(a: np.ndarray, b: np.ndarray) -> Any:
            return _fit_logistic(a, b, params)

        def apply(m: Any, a: np.ndarray) -> np.ndarray:
            if isinstance(m, float):
                return np.full(a.shape[0], m, np.float32)
            return _logistic_apply(a, m[0][None, :], np.asarray([m[1]]))[:, 0]
    elif name == "gradient_boosting":
        def fit(a: np.ndarray, b: np.ndarray) -> Any:
            return _fit_gbm(a, b, params)

        apply = _gbm_apply  # type: ignore[assignment]
    else:
        raise ConfigError(f"unknown scorer {name!r}")
    for j in tqdm(range(n_segments), desc=f"{name} ({params.folds}-fold cross-fit)", unit="segment",
                  leave=False):
        out[:, j] = _cross_fit(x, y_all[:, j], folds, fit, apply)
    return OutOfSample(fit_rows, out)


def blend_out_of_sample(oos: dict[str, OutOfSample], fit_rows: np.ndarray) -> tuple[list[str], OutOfSample] | None:
    """``(members, out-of-sample scores)`` of the blend: the mean of the candidates scored out of
    sample on every non-test anchor (``fit_rows``), or None with fewer than two such candidates
    (a candidate with fewer rows, the tower on its validation split, would leave the mean
    undefined on the other anchors)."""
    members = [name for name in SCORERS if name in oos and name != BLEND and oos[name].covers(fit_rows)]
    if len(members) < 2:
        return None
    total = np.zeros((len(fit_rows), oos[members[0]].scores.shape[1]), np.float64)
    for name in members:
        total += oos[name].at(fit_rows)[0]
    return members, OutOfSample(np.asarray(fit_rows), (total / len(members)).astype(np.float32))


# ---------------------------------------------------------------- fitted state
@dataclass
class FittedScorers:
    """The state of every available scorer, fitted on all non-test anchors."""

    names: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    boosters: list[Any] = field(default_factory=list)  # per segment: Booster | float
    anchor_features: np.ndarray | None = None
    k: int = 40
    aggregation: str = "weighted"
    iv_pool_labels: sp.csr_matrix | None = None
    # per (scorer, column set): what a request needs, derived from the fitted state once
    _per_columns: dict[tuple[str, bytes], Any] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def _normalised_anchor_features(self) -> np.ndarray:
        assert self.anchor_features is not None
        return faiss_backend.l2_normalise(self.anchor_features)

    @functools.cached_property
    def _raw_feature_index(self) -> Any:
        """Built once per bundle: rebuilding it cost every online request a copy of all anchors."""
        return _flat_index(self._normalised_anchor_features)

    def _iv_pool(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Holders, inverse weighted anchor norms and IV weights of ``columns``' voting segments, made once
        per bundle and column set: an online request then allocates nothing sized by the anchors
        but its similarity row."""
        key = ("iv_weighted_knn", columns.tobytes())
        if key not in self._per_columns:
            assert self.anchor_features is not None and self.iv_pool_labels is not None
            weights = self.arrays["iv_weights"][columns]
            self._per_columns[key] = (np.asarray(self.iv_pool_labels[:, columns].toarray(), dtype=np.float32),
                                      inverse_weighted_norms(self.anchor_features, weights), weights)
        return self._per_columns[key]  # type: ignore[no-any-return]

    def _merged_boosters(self, columns: np.ndarray) -> MergedBoosters:
        key = ("gradient_boosting", columns.tobytes())
        if key not in self._per_columns:
            self._per_columns[key] = merge_boosters([self.boosters[j] for j in columns])
        return self._per_columns[key]  # type: ignore[no-any-return]

    @property
    def needs_features(self) -> bool:
        return bool(FEATURE_SCORERS & set(self.names))

    def prepare(self, columns_by_scorer: dict[str, np.ndarray]) -> None:
        """Build the per-column-set state of the selected scorers now (merged LightGBM model, IV
        holders and norms), so that the first request does not pay for it."""
        for name, columns in columns_by_scorer.items():
            columns = np.asarray(columns, dtype=np.int64)
            if name == "iv_weighted_knn" and name in self.names:
                voting = columns[np.isnan(self.arrays["iv_constant"][columns])]
                if len(voting):
                    self._iv_pool(voting)
            elif name == "gradient_boosting" and name in self.names:
                trees = np.asarray([j for j in columns if not isinstance(self.boosters[j], float)], dtype=np.int64)
                if len(trees):
                    self._merged_boosters(trees)

    def score(self, name: str, embeddings: np.ndarray, features: np.ndarray | None, columns: np.ndarray,
              exclude_anchor_rows: np.ndarray | None = None) -> np.ndarray:
        """Scores ``(n, len(columns))`` of scorer ``name`` (not ``tower_knn``: the bundle's index)."""
        n = embeddings.shape[0]
        columns = np.asarray(columns, dtype=np.int64)
        if name == "tower_head":
            return _logistic_apply(embeddings, self.arrays["head_weight"][columns],
                                   self.arrays["head_bias"][columns])
        if features is None or features.shape[0] != n:
            raise ArtifactError(f"scorer {name} needs the feature matrix of the {n} customers")
        if name == "logistic_regression":
            scores = _logistic_apply(features, self.arrays["logistic_coef"][columns],
                                     self.arrays["logistic_intercept"][columns])
            constant = self.arrays["logistic_constant"][columns]
            return np.where(np.isnan(constant), scores, constant).astype(np.float32)
        if name == "gradient_boosting":
            out = np.empty((n, len(columns)), dtype=np.float32)
            trees = np.asarray([not isinstance(self.boosters[j], float) for j in columns], dtype=bool)
            for i in np.flatnonzero(~trees):
                out[:, i] = self.boosters[columns[i]]
            if trees.any() and n <= MERGED_BOOSTER_MAX_ROWS:
                out[:, trees] = self._merged_boosters(columns[trees]).predict(features)
            elif trees.any():
                for i in np.flatnonzero(trees):
                    out[:, i] = _gbm_apply(self.boosters[columns[i]], features)
            return out
        if name == "raw_feature_knn":
            assert self.anchor_features is not None and self.iv_pool_labels is not None
            return _knn(self._normalised_anchor_features, self.iv_pool_labels, features, self.k, self.aggregation,
                        exclude_anchor_rows, index=self._raw_feature_index)[0][:, columns]
        if name == "iv_weighted_knn":
            assert self.anchor_features is not None
            constant = self.arrays["iv_constant"][columns]
            out = np.empty((n, len(columns)), dtype=np.float32)
            out[:, ~np.isnan(constant)] = constant[~np.isnan(constant)]
            voting = np.flatnonzero(np.isnan(constant))
            if len(voting):
                holders, norms, weights = self._iv_pool(columns[voting])
                out[:, voting] = weighted_knn_votes(self.anchor_features, holders, features, weights, self.k,
                                                    exclude_anchor_rows, inverse_norms=norms)
            return out
        raise ArtifactError(f"scorer {name!r} is not stored in this bundle")

    # -------------------------------------------------------------- persistence
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / STATE_FILE, **self.arrays)  # type: ignore[arg-type]
        if self.anchor_features is not None:
            np.save(directory / ANCHOR_FEATURES_FILE, self.anchor_features.astype(np.float32))
        constants: dict[str, float] = {}
        if self.boosters:
            (directory / GBM_DIR).mkdir(exist_ok=True)
            for j, model in enumerate(self.boosters):
                if isinstance(model, float):
                    constants[str(j)] = model
                else:
                    model.save_model(str(directory / GBM_DIR / f"{j}.txt"))
        (directory / SCORERS_JSON).write_text(json.dumps(
            {"names": self.names, "k": self.k, "aggregation": self.aggregation,
             "gradient_boosting_segments": len(self.boosters), "gradient_boosting_constants": constants},
            indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path, anchor_labels: sp.csr_matrix) -> FittedScorers:
        meta = json.loads((directory / SCORERS_JSON).read_text())
        with np.load(directory / STATE_FILE) as state:
            arrays = {k: state[k] for k in state.files}
        features_path = directory / ANCHOR_FEATURES_FILE
        anchor_features = np.load(features_path) if features_path.is_file() else None
        boosters: list[Any] = []
        if meta.get("gradient_boosting_segments"):
            import lightgbm as lgb

            constants = meta.get("gradient_boosting_constants", {})
            for j in range(int(meta["gradient_boosting_segments"])):
                boosters.append(float(constants[str(j)]) if str(j) in constants else
                                lgb.Booster(model_file=str(directory / GBM_DIR / f"{j}.txt")))
        return cls(list(meta["names"]), arrays, boosters, anchor_features, int(meta["k"]), meta["aggregation"],
                   sp.csr_matrix(anchor_labels, dtype=np.uint8) if anchor_features is not None else None)


def fit_scorers(names: Sequence[str], data: AnchorData, params: ScorerParams,
                head: tuple[np.ndarray, np.ndarray] | None = None) -> FittedScorers:
    """Fit every scorer in ``names`` on non-test anchors (not ``tower_knn``, which is the index, nor
    the ``blend``, which is its members' state)."""
    fit_rows = data.fit_rows
    x, y_all = data.features[fit_rows], data.dense_labels(fit_rows)
    n_segments = y_all.shape[1]
    names = [n for n in names if n not in ("tower_knn", BLEND)]
    fitted = FittedScorers([n for n in names if n != "tower_head" or head is not None], k=params.k,
                           aggregation=params.aggregation)
    if "tower_head" in names and head is not None:
        fitted.arrays["head_weight"], fitted.arrays["head_bias"] = head[0], head[1]
    if "logistic_regression" in names:
        coef = np.zeros((n_segments, x.shape[1]), np.float32)
        intercept = np.zeros(n_segments, np.float32)
        constant = np.full(n_segments, np.nan, np.float32)
        for j in tqdm(range(n_segments), desc="logistic regression (fit)", unit="segment", leave=False):
            model = _fit_logistic(x, y_all[:, j], params)
            if isinstance(model, float):
                constant[j] = model
            else:
                coef[j], intercept[j] = model
        fitted.arrays.update(logistic_coef=coef, logistic_intercept=intercept, logistic_constant=constant)
    if "gradient_boosting" in names:
        fitted.boosters = [_fit_gbm(x, y_all[:, j], params)
                           for j in tqdm(range(n_segments), desc="gradient boosting (fit)", unit="segment",
                                         leave=False)]
    if "iv_weighted_knn" in names:
        weights, constant = iv_weights(x, y_all)
        fitted.arrays.update(iv_weights=weights, iv_constant=constant)
    if "iv_weighted_knn" in names or "raw_feature_knn" in names:
        # every anchor is a neighbour candidate at assignment time, like the tower's index
        fitted.anchor_features = np.ascontiguousarray(data.features, dtype=np.float32)
        fitted.iv_pool_labels = sp.csr_matrix(data.labels, dtype=np.uint8)
    return fitted
