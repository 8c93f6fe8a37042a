"""Framework-free serving runtime: champion model + matching index bundle + online store.

:class:`LookalikeRuntime` is immutable once built. The service holds one reference to the
current runtime; a reload builds a complete new runtime (model, bundle, store, population
embeddings, consistency checks) and then swaps that single reference, so a request always
runs against one consistent model/index pair and in-flight requests finish on the old one.

Privacy: model inputs are read through :class:`lookalike.online.OnlineFeatureReader`, built
on :func:`lookalike.contract.load_contract` (legitimate-interest views only). Segment labels
never come from the online store: opt-in customers' explicit segments come from the
bundle's anchor segment matrix. Results never expose neighbours' ids or feature values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lookalike.artifacts import read_manifest, utc_now
from lookalike.errors import ArtifactError, ConfigError, LookalikeError
from serving.config import ServingConfig
from serving.models import (
    CustomerAssignment,
    Evidence,
    Lookalike,
    SeedDiagnostics,
    SegmentScore,
    Versions,
)

log = logging.getLogger(__name__)


class VersionMismatchError(ArtifactError):
    """Model, index bundle and feature registry do not describe the same model/contract."""


class SeedRejectedError(LookalikeError):
    """The seed audience cannot be expanded meaningfully (too small or too generic)."""


class StoreUnavailableError(LookalikeError):
    """The online feature store cannot be reached; the request may be retried later."""


class InvalidRequestError(LookalikeError):
    """The request itself is wrong (HTTP 422); nothing was read for it."""


class BudgetExceededError(LookalikeError):
    """A request ran past its time budget and was stopped."""


# A store that failed is reopened on the next read, but not more often than this.
REOPEN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Population:
    """Embeddings of every customer /expand may rank (the bundle's, or built from the store)."""

    ids: np.ndarray  # int64 (n,), ascending
    embeddings: np.ndarray  # float32 (n, dim), L2-normalised (a read-only memory map from the bundle)
    opt_in: np.ndarray  # bool (n,)
    centroid: np.ndarray  # float32 (dim,), L2-normalised mean embedding
    mean_similarity: float  # mean pairwise cosine of the population (baseline for seeds)
    mean: np.ndarray  # float64 (dim,), unnormalised mean embedding
    variance: float  # mean squared distance of an embedding from ``mean``
    source: str = field(default="online store")  # "index bundle" or "online store"

    def rows_of(self, customer_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each id, ``-1`` where the customer is not in the population."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


def population_from_arrays(ids: np.ndarray, embeddings: np.ndarray, opt_in: np.ndarray,
                           source: str, sums: tuple[np.ndarray, float] | None = None) -> Population:
    """A :class:`Population` with its summary statistics: from ``sums`` (sum of the rows,
    sum of their squared norms; the bundle manifest's) or one chunked O(n d) pass."""
    from index_builder.population_embeddings import embedding_sums

    if len(ids) > 1 and not (np.diff(ids) > 0).all():  # the bundle's are sorted already
        order = np.argsort(ids, kind="stable")
        ids, embeddings, opt_in = ids[order], embeddings[order], opt_in[order]
    total, squares = sums if sums is not None else embedding_sums(embeddings)
    n = max(len(ids), 1)
    mean = total / n
    norm = float(np.linalg.norm(total))
    centroid = (total / norm if norm > 0 else total).astype(np.float32)
    # embeddings are unit vectors: sum_{i != j} <e_i, e_j> = ||sum e||^2 - n
    mean_sim = 1.0 if len(ids) < 2 else (norm**2 - len(ids)) / (len(ids) * (len(ids) - 1))
    return Population(ids=np.asarray(ids, dtype=np.int64), embeddings=embeddings, opt_in=np.asarray(opt_in, bool),
                      centroid=centroid, mean_similarity=float(mean_sim), mean=mean,
                      variance=float(squares / n - mean @ mean), source=source)


@dataclass(frozen=True)
class ExpandResult:
    seed: SeedDiagnostics
    population: str
    population_size: int
    customer_ids: np.ndarray  # int64, best first
    scores: np.ndarray  # float64 cosine to the seed centroid, rounded to 6 decimals

    @property
    def customers(self) -> list[Lookalike]:
        """The ranking as response objects (in-process callers; HTTP serialises the arrays
        directly, :mod:`serving.responses`: 100,000 pydantic objects cost ~0.6 s)."""
        return [Lookalike.model_construct(customer_id=c, score=v)
                for c, v in zip(self.customer_ids.tolist(), self.scores.tolist(), strict=True)]


def seed_distinctiveness(seed: np.ndarray, population_mean: np.ndarray, population_variance: float,
                         population_size: int) -> float:
    """||seed mean - population mean||^2 over its expectation for a random seed of that size.

    A simple random sample of ``m`` out of ``N`` has E||mean - mu||^2 = var / m * (N - m) / (N - 1),
    so a random seed scores ~1 whatever its size and a real audience scores well above.
    """
    m = seed.shape[0]
    if m == 0 or m >= population_size or population_variance <= 0:
        return 0.0
    diff = seed.mean(axis=0, dtype=np.float64) - population_mean
    expected = population_variance / m * (population_size - m) / (population_size - 1)
    return float(diff @ diff / expected)


def _mean_pairwise_cosine(embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """(normalised centroid, mean cosine over distinct pairs) in O(n d), no n x n matrix."""
    n = embeddings.shape[0]
    total = embeddings.sum(axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(total))
    centroid = (total / norm if norm > 0 else total).astype(np.float32)
    if n < 2:
        return centroid, 1.0
    # sum_{i != j} <e_i, e_j> = ||sum e||^2 - sum ||e_i||^2 and every ||e_i|| = 1
    mean = (norm**2 - n) / (n * (n - 1))
    return centroid, float(mean)


class LookalikeRuntime:
    """Everything needed to answer /assign and /expand for one model/index version."""

    def __init__(
        self,
        *,
        config: ServingConfig,
        encoder: Any,
        model_info: Any,
        bundle: Any,
        store: Any,
        reader: Any,
        contract: Any,
        metadata: dict[str, Any],
    ) -> None:
        self.contract = contract
        self.config = config
        self.encoder = encoder
        self.model_info = model_info
        self.bundle = bundle
        self.store = store
        self.reader = reader
        self.metadata = metadata
        self.anchor_ids = np.asarray(bundle.anchor_ids, dtype=np.int64)
        self.anchor_segments = sp.csr_matrix(bundle.anchor_segments)
        # Paid here, not by the first request: the sorted anchor ids behind bundle.anchor_rows
        # (opt-in lookups and self-exclusion by binary search; the former {id: row} dict of 1M
        # Python ints cost more start-up time and ~100 MB) and the float32 label matrix that
        # scoring would otherwise convert on every request.
        bundle.anchor_rows(np.zeros(0, dtype=np.int64))
        _ = bundle.label_weights
        assignment = bundle.assignment
        self.segments: list[str] = list(_get(assignment, "segments"))
        names = _get(assignment, "segment_names", default=None) or {}
        self.segment_names: dict[str, str] = dict(names) if isinstance(names, dict) else dict(
            zip(self.segments, names, strict=False)
        )
        self.thresholds = np.asarray(_get(assignment, "thresholds"), dtype=np.float32)
        self.aggregation: str = str(_get(assignment, "aggregation"))
        self.k: int = int(config.k or _get(assignment, "k"))
        self.versions = Versions(
            model_name=str(metadata["model_name"]),
            model_version=str(metadata["model_version"]),
            index_version=str(metadata["index_version"]),
            feature_service=str(metadata["feature_service"]),
            feature_service_version=str(metadata["feature_service_version"]),
        )
        self._population: Population | None = None
        # The store connection is the one part that is replaced in place: after a failure
        # (Redis restarted, SQLite file swapped) the next read reopens it.
        self._store_lock = threading.Lock()
        self._store_failed = False
        self._reopened_at = 0.0
        # /readyz answers from the last probe while it is fresh (config.readiness_cache_s).
        self._probe_lock = threading.Lock()
        self._probed_at = float("-inf")
        self._ready = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: ServingConfig) -> LookalikeRuntime:
        """Load champion model, its index bundle and the store; refuse any inconsistency."""
        import mlflow

        from index_builder.bundle import load_bundle
        from lookalike.contract import load_contract
        from lookalike.online import OnlineFeatureReader
        from training.artifact import load_registered_encoder

        started = time.perf_counter()
        repo = Path(config.feature_repo)
        store = open_feature_store(config)
        # MLflow resolves ``models:/`` downloads through the process-wide registry URI, not the
        # client's: point it at the configured store or a YAML-only config reads ./mlflow.db.
        mlflow.set_tracking_uri(config.tracking_uri)
        mlflow.set_registry_uri(config.tracking_uri)
        encoder, info = load_registered_encoder(config.tracking_uri, config.model_name, config.model_alias)
        bundle_dir = resolve_bundle_dir(config, str(info.version))
        bundle = load_bundle(bundle_dir, verify=config.verify_bundle)
        contract = load_contract(store, encoder.contract.service_name)
        check_consistency(config, encoder, info, bundle_dir, _manifest_of(bundle, bundle_dir), contract)
        reader = OnlineFeatureReader(store, contract)
        manifest = _manifest_of(bundle, bundle_dir)
        metadata = {
            "model_name": config.model_name,
            "model_alias": config.model_alias,
            "model_version": str(info.version),
            "model_run_id": getattr(info, "run_id", None),
            "model_snapshot_hash": getattr(info, "snapshot_hash", None),
            "index_version": str(manifest.get("index_version") or bundle_dir.name),
            "index_dir": str(bundle_dir),
            "index_type": manifest.get("index_type"),
            "index_created_at": manifest.get("created_at"),
            "index_run_date": manifest.get("run_date"),
            "feature_service": contract.service_name,
            "feature_service_version": contract.service_version,
            "feature_repo": str(repo),
            "n_anchors": int(len(bundle.anchor_ids)),
            "loaded_at": utc_now(),
        }
        runtime = cls(
            config=config, encoder=encoder, model_info=info, bundle=bundle, store=store,
            reader=reader, contract=contract, metadata=metadata,
        )
        if config.expand.build_population_at_load:
            runtime.population()
        log.info(
            "runtime loaded in %.1fs: model %s v%s, index %s, feature service %s v%s",
            time.perf_counter() - started, config.model_name, info.version, bundle_dir.name,
            contract.service_name, contract.service_version,
        )
        return runtime

    # ------------------------------------------------------------------ health
    def is_ready(self) -> bool:
        """Model and index are loaded by construction; the store must answer a read.

        Answered from the last probe (or the last request's store read) while it is younger
        than ``readiness_cache_s``, and only one probe runs at a time: a flood of /readyz
        costs at most one store round trip per period, never one per call.
        """
        if time.monotonic() - self._probed_at < self.config.readiness_cache_s:
            return self._ready
        never_probed = self._probed_at == float("-inf")
        if not self._probe_lock.acquire(blocking=never_probed):
            return self._ready  # another caller is probing right now: its last answer stands
        try:
            if time.monotonic() - self._probed_at < self.config.readiness_cache_s:
                return self._ready  # probed while this caller waited for the first probe
            try:
                self._read([0])
                ready = True
            except StoreUnavailableError:
                ready = False
            self._ready, self._probed_at = ready, time.monotonic()
            return ready
        finally:
            self._probe_lock.release()

    # ------------------------------------------------------------------ store access
    def _read(self, ids: list[int]) -> tuple[Any, np.ndarray, Any]:
        """Features and status of ``ids`` as frames (see :meth:`_guarded`)."""
        frame, found, status = self._guarded(lambda reader: reader.read_with_status(ids))
        return frame, np.asarray(found, dtype=bool), status

    def _read_columns(self, ids: list[int]) -> tuple[dict[str, Any], np.ndarray, dict[str, np.ndarray]]:
        """The hot path's read: column arrays and status arrays, no DataFrames."""
        if not hasattr(self.reader, "read_columns_with_status"):  # readers without the fast path
            frame, found, status = self._read(ids)
            columns = {c: frame[c].to_numpy() for c in frame.columns}
            return columns, found, {name: _status_column(status, name, len(ids)) for name in ("opt_in", "suppressed")}
        columns, found, status = self._guarded(lambda reader: reader.read_columns_with_status(ids))
        return columns, np.asarray(found, dtype=bool), status

    def _guarded(self, read: Any) -> Any:
        """``read(reader)``; any store failure is a :class:`StoreUnavailableError` (HTTP 503)
        and makes the next read reopen the store (Redis restarted, SQLite file replaced)."""
        if self._store_failed:
            self._reopen_store()
        try:
            result = read(self.reader)
        except Exception as exc:
            self._store_failed = True
            self._ready, self._probed_at = False, time.monotonic()
            # Type only: driver messages can carry hosts, paths or credentials.
            log.warning("online store read failed (%s); reopening it on the next request",
                        type(exc).__name__, exc_info=True)
            raise StoreUnavailableError(
                f"online feature store unavailable ({type(exc).__name__}); retry shortly"
            ) from exc
        self._store_failed = False
        # Every answered read is a readiness probe for free: /readyz follows real traffic.
        self._ready, self._probed_at = True, time.monotonic()
        return result

    def _reopen_store(self) -> None:
        from lookalike.online import OnlineFeatureReader

        with self._store_lock:
            if not self._store_failed or time.monotonic() - self._reopened_at < REOPEN_INTERVAL_S:
                return
            self._reopened_at = time.monotonic()
            try:
                store = open_feature_store(self.config)
                reader = OnlineFeatureReader(store, self.contract)
            except Exception as exc:  # noqa: BLE001 - keep the old one; the read below reports
                log.warning("reopening the online store failed (%s)", type(exc).__name__)
                return
            self.store, self.reader = store, reader
            log.info("online store reopened after a failure")

    # ------------------------------------------------------------------ assign
    def assign(self, customer_ids: Sequence[int]) -> tuple[Versions, list[CustomerAssignment]]:
        """One result per requested id, in request order (duplicates answered twice)."""
        requested = _int64_ids(customer_ids)
        unique = list(dict.fromkeys(requested))
        columns, found, status = self._read_columns(unique)
        anchor_rows = self.bundle.anchor_rows(unique)
        suppressed = status["suppressed"]
        opt_in = status["opt_in"]
        results: dict[int, CustomerAssignment] = {}
        to_embed: list[int] = []
        for row, cid in enumerate(unique):
            if not found[row]:
                results[cid] = CustomerAssignment(customer_id=cid, status="unknown_customer")
            elif suppressed[row]:
                results[cid] = CustomerAssignment(customer_id=cid, status="suppressed")
            elif opt_in[row] and anchor_rows[row] >= 0:
                results[cid] = self._explicit(cid, int(anchor_rows[row]))
            else:
                to_embed.append(row)
        if to_embed:
            rows = np.asarray(to_embed)
            selected = columns if len(rows) == len(unique) else {c: v[rows] for c, v in columns.items()}
            embeddings = self.encoder.embed(selected)
            # per-segment scorers other than the tower kNN read the preprocessed features
            features = self.encoder.feature_matrix(selected) if self.bundle.needs_features else None
            ids = np.asarray([unique[r] for r in to_embed], dtype=np.int64)
            for cid, item in zip(ids.tolist(), self._lookalike(ids, embeddings, features), strict=True):
                results[cid] = item
        return self.versions, [results[cid] for cid in requested]

    def _explicit(self, cid: int, anchor_row: int) -> CustomerAssignment:
        row = self.anchor_segments.getrow(anchor_row)
        segments = [
            SegmentScore(segment=self.segments[j], name=self.segment_names.get(self.segments[j]), score=1.0)
            for j in sorted(row.indices.tolist())
        ]
        return CustomerAssignment(customer_id=cid, status="ok", source="opt_in", segments=segments)

    def _lookalike(self, ids: np.ndarray, embeddings: np.ndarray,
                   features: np.ndarray | None = None) -> list[CustomerAssignment]:
        # A customer who withdrew consent is still an anchor until the next bundle: exclude
        # their own anchor row so nobody inherits their own former labels. The bundle scores
        # each segment with its selected scorer, exactly as batch assignment does.
        scored = self.bundle.assign_scores(embeddings, features, self.bundle.anchor_rows(ids), self.k)
        sims, idx, scores, members = scored.sims, scored.neighbours, scored.scores, scored.decisions
        out = []
        for i, cid in enumerate(ids.tolist()):
            valid = idx[i] >= 0
            columns = np.flatnonzero(members[i])
            columns = columns[np.argsort(-scores[i, columns], kind="stable")]
            out.append(
                CustomerAssignment(
                    customer_id=int(cid),
                    status="ok",
                    source="lookalike",
                    segments=[
                        SegmentScore(
                            segment=self.segments[j],
                            name=self.segment_names.get(self.segments[j]),
                            score=round(float(scores[i, j]), 6),
                        )
                        for j in columns
                    ],
                    evidence=Evidence(
                        neighbours=int(valid.sum()),
                        mean_similarity=round(float(sims[i][valid].mean()) if valid.any() else 0.0, 6),
                    ),
                )
            )
        return out

    # ------------------------------------------------------------------ expand
    def population(self) -> Population:
        """Embeddings of all customers known to the store, built once per runtime."""
        if self._population is None:
            self._population = self._build_population()
        return self._population

    def _build_population(self) -> Population:
        from index_builder.population_embeddings import load_population

        stored = load_population(self.bundle.path) if getattr(self.bundle, "path", None) else None
        if stored is not None:  # written by the weekly job: memory-mapped, nothing to embed
            return population_from_arrays(stored.ids, stored.embeddings, stored.opt_in, "index bundle", stored.sums)
        return self._embed_population_from_store()

    def _embed_population_from_store(self) -> Population:
        """Fallback for bundles without population files (``lookalike build-index`` alone)."""
        from tqdm import tqdm

        all_ids = known_customer_ids(self.store, self.reader, self.contract)
        chunk = self.config.expand.population_chunk_size
        ids_parts, emb_parts, opt_parts = [], [], []
        for start in tqdm(range(0, len(all_ids), chunk), desc="population embeddings", unit="chunk",
                          disable=len(all_ids) <= chunk):
            ids = all_ids[start:start + chunk].tolist()
            frame, found, status = self._read(ids)
            keep = found & ~_status_column(status, "suppressed", len(ids))
            if not keep.any():
                continue
            rows = np.flatnonzero(keep)
            emb_parts.append(self.encoder.embed(frame.iloc[rows].reset_index(drop=True)))
            ids_parts.append(np.asarray(ids, dtype=np.int64)[rows])
            opt_parts.append(_status_column(status, "opt_in", len(ids))[rows])
        if not ids_parts:
            raise StoreUnavailableError("no customer features found in the online store")
        embeddings = np.ascontiguousarray(np.concatenate(emb_parts), dtype=np.float32)
        return population_from_arrays(np.concatenate(ids_parts), embeddings, np.concatenate(opt_parts),
                                      "online store")

    def _suppressed_now(self, ids: np.ndarray) -> np.ndarray:
        """Current suppression flags from the online store (request time, not the bundle's date)."""

        def read(reader: Any) -> np.ndarray:
            if hasattr(reader, "suppressed"):
                return np.asarray(reader.suppressed(ids), dtype=bool)
            return _status_column(reader.read_status(ids), "suppressed", len(ids))

        return np.asarray(self._guarded(read), dtype=bool)

    def _top_unsuppressed(self, candidates: np.ndarray, scores: np.ndarray, limit: int,
                          pop: Population) -> np.ndarray:
        """The ``limit`` best candidates by score, minus customers suppressed right now.

        The population is as of the weekly run; objections since then come from the online
        store at request time. Over-fetches a little and refills when someone drops out.
        """
        if limit <= 0 or len(candidates) == 0:
            return np.zeros(0, dtype=np.int64)
        fetch = min(len(candidates), limit + max(64, limit // 20))
        while True:
            if fetch < len(candidates):
                top = candidates[np.argpartition(-scores[candidates], fetch - 1)[:fetch]]
            else:
                top = candidates
            top = top[np.argsort(-scores[top], kind="stable")]
            kept = top[~self._suppressed_now(pop.ids[top])]
            if len(kept) >= limit or fetch >= len(candidates):
                return kept[:limit]
            fetch = min(len(candidates), 2 * fetch)

    def seed_ids_for_segment(self, segment: str) -> list[int]:
        if segment not in self.segments:
            raise SeedRejectedError(f"unknown segment {segment!r}")
        column = self.segments.index(segment)
        holders = self.anchor_segments[:, column].nonzero()[0]
        return self.anchor_ids[holders].tolist()

    def expand(
        self,
        seed_ids: Sequence[int] | None = None,
        seed_segment: str | None = None,
        target_size: int | None = None,
        min_similarity: float | None = None,
        population: str = "non_opt_in",
        exclude_seed: bool = True,
        deadline: float | None = None,
    ) -> ExpandResult:
        """Rank the population by cosine similarity to the seed centroid.

        ``deadline`` (``time.monotonic()`` value, default now + ``expand.time_budget_s``) is
        checked between store round trips; past it :class:`BudgetExceededError` is raised.
        """
        cfg = self.config.expand
        if deadline is None:
            deadline = time.monotonic() + cfg.time_budget_s
        if seed_segment is not None:
            seed_ids = self.seed_ids_for_segment(seed_segment)
        requested = list(dict.fromkeys(_int64_ids(seed_ids or [])))
        if len(requested) > cfg.max_seed_ids:
            raise SeedRejectedError(f"seed too large: {len(requested)} customers (maximum {cfg.max_seed_ids})")
        pop = self.population()
        # Current status from the store: suppressed seed members are dropped, unknown ones counted.
        requested_ids = np.asarray(requested, dtype=np.int64)
        seed_rows = pop.rows_of(requested_ids)
        found = seed_rows >= 0
        suppressed = self._seed_suppressed(requested_ids, deadline)
        rows = seed_rows[found & ~suppressed]
        matched = len(rows)
        if matched < cfg.min_seed_matched:
            raise SeedRejectedError(
                f"seed too small: {matched} of {len(requested)} seed customers found in the "
                f"{pop.source} population (minimum {cfg.min_seed_matched})"
            )
        seed_emb = pop.embeddings[rows]
        seed_centroid, intra = _mean_pairwise_cosine(seed_emb)
        distinctiveness = seed_distinctiveness(seed_emb, pop.mean, pop.variance, len(pop.ids))
        diagnostics = SeedDiagnostics(
            requested=len(requested), matched=matched, unknown=int((~found & ~suppressed).sum()),
            suppressed=int(suppressed.sum()), distinctiveness=round(distinctiveness, 4),
            centroid_distance=round(float(1.0 - float(seed_centroid @ pop.centroid)), 6),
            mean_intra_seed_similarity=round(intra, 6),
            population_mean_similarity=round(pop.mean_similarity, 6),
        )
        if distinctiveness < cfg.min_distinctiveness:
            raise SeedRejectedError(
                f"seed too generic: distinctiveness {distinctiveness:.2f} below {cfg.min_distinctiveness} "
                "(its centroid is no farther from the population's than a random seed of the same size)"
            )
        _check_deadline(deadline, cfg.time_budget_s)
        scores = pop.embeddings @ seed_centroid
        eligible = np.ones(len(pop.ids), dtype=bool)
        if population == "non_opt_in":
            eligible &= ~pop.opt_in
        if exclude_seed:
            eligible[rows] = False
        if min_similarity is not None:
            eligible &= scores >= min_similarity
        candidates = np.flatnonzero(eligible)
        limit = min(target_size or cfg.default_target_size, cfg.max_target_size)
        if min_similarity is not None and target_size is None:
            limit = min(len(candidates), cfg.max_target_size)
        order = self._top_unsuppressed(candidates, scores, limit, pop)
        return ExpandResult(seed=diagnostics, population=population,
                            population_size=int(eligible.size if population == "all" else (~pop.opt_in).sum()),
                            customer_ids=pop.ids[order], scores=np.round(scores[order].astype(np.float64), 6))


    def _seed_suppressed(self, ids: np.ndarray, deadline: float) -> np.ndarray:
        """Suppression flags of the seed, read in chunks so the time budget is enforced."""
        suppressed = np.zeros(len(ids), dtype=bool)
        step = self.config.expand.seed_read_chunk
        for start in range(0, len(ids), step):
            _check_deadline(deadline, self.config.expand.time_budget_s)
            suppressed[start:start + step] = self._suppressed_now(ids[start:start + step])
        return suppressed


# ---------------------------------------------------------------------- helpers
def _int64_ids(ids: Sequence[int]) -> list[int]:
    from serving.models import INT64_MAX, INT64_MIN

    values = [int(i) for i in ids]
    outside = sum(1 for v in values if not INT64_MIN <= v <= INT64_MAX)
    if outside:
        raise InvalidRequestError(f"{outside} customer id(s) outside the int64 range")
    return values


def _check_deadline(deadline: float, budget_s: float) -> None:
    if time.monotonic() > deadline:
        raise BudgetExceededError(
            f"expand stopped after its time budget of {budget_s:g}s; use a smaller seed or target_size"
        )


def limit_intra_op_threads(threads: int) -> None:
    """Process-wide thread count of torch and FAISS for request work (0: library defaults)."""
    if threads <= 0:
        return
    import torch

    from index_builder.faiss_backend import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def open_feature_store(config: ServingConfig) -> Any:
    """The Feast store the service reads online features from (the repo's, or Redis)."""
    from lookalike.feast_utils import open_store, open_store_with_online

    repo = Path(config.feature_repo)
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"feature repo {repo} has no feature_store.yaml (LOOKALIKE_FEATURE_REPO)")
    if config.online_store:
        return open_store_with_online(repo, config.online_store, config.redis_connection)
    return open_store(repo)


def _get(obj: Any, name: str, default: Any = ...) -> Any:
    if isinstance(obj, dict):
        if name in obj:
            return obj[name]
    elif hasattr(obj, name):
        return getattr(obj, name)
    if default is ...:
        raise ArtifactError(f"index bundle assignment settings lack {name!r}")
    return default


def _status_column(status: Any, column: str, n: int) -> np.ndarray:
    if status is None:
        return np.zeros(n, dtype=bool)
    values = status[column] if column in status else np.zeros(n, dtype=bool)
    return np.asarray(values, dtype=object).astype(bool) if n else np.zeros(0, dtype=bool)


def known_customer_ids(store: Any, reader: Any, contract: Any) -> np.ndarray:
    """Every customer id the feature tables know (the online store cannot list its keys).

    Uses the reader's own listing when it has one; otherwise the ``customer_id`` column of
    the model-input views' offline Parquet sources (the same tables that were materialized).
    """
    if hasattr(reader, "known_customer_ids"):
        return np.unique(np.asarray(reader.known_customer_ids(), dtype=np.int64))
    import pyarrow.dataset as ds

    ids: list[np.ndarray] = []
    for view_name in contract.views:
        source = store.get_feature_view(view_name).batch_source
        path = getattr(source, "path", None)
        if not path or not Path(path).exists():
            continue
        table = ds.dataset(path, format="parquet").to_table(columns=["customer_id"])
        ids.append(table.column("customer_id").to_numpy())
    if not ids:
        raise ArtifactError("no offline feature table found to list the population's customer ids")
    return np.unique(np.concatenate(ids).astype(np.int64))


def _manifest_of(bundle: Any, bundle_dir: Path) -> dict[str, Any]:
    manifest = getattr(bundle, "manifest", None)
    return dict(manifest) if manifest else read_manifest(bundle_dir, "index_bundle")


def resolve_bundle_dir(config: ServingConfig, model_version: str) -> Path:
    """The configured bundle, or the newest bundle under index_root built from ``model_version``."""
    if config.index_dir is not None:
        path = Path(config.index_dir)
        if not path.is_dir():
            raise ArtifactError(f"index bundle {path} does not exist (LOOKALIKE_INDEX_DIR)")
        return path
    root = Path(config.index_root)
    candidates = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            manifest = read_manifest(child, "index_bundle")
        except ArtifactError:
            continue
        if str(manifest.get("model_version")) == model_version and (
            manifest.get("model_name") in (None, config.model_name)
        ):
            candidates.append((str(manifest.get("created_at", "")), child.name, child))
    if not candidates:
        raise ArtifactError(
            f"no index bundle under {root} was built from {config.model_name} version {model_version}; "
            "run `lookalike build-index` for the champion or set LOOKALIKE_INDEX_DIR"
        )
    return max(candidates)[2]


def check_consistency(
    config: ServingConfig, encoder: Any, info: Any, bundle_dir: Path, manifest: dict[str, Any],
    registry_contract: Any,
) -> None:
    """Refuse to serve when model, bundle and feature registry disagree."""
    problems = []
    model_contract = encoder.contract
    if str(manifest.get("model_version")) != str(info.version):
        problems.append(
            f"index bundle {bundle_dir.name} was built from model version {manifest.get('model_version')}, "
            f"but {config.model_name}@{config.model_alias} is version {info.version}"
        )
    if manifest.get("model_name") not in (None, config.model_name):
        problems.append(f"index bundle was built from model {manifest.get('model_name')!r}, "
                        f"serving {config.model_name!r}")
    bundle_service = manifest.get("feature_service")
    bundle_service_version = str(manifest.get("feature_service_version"))
    if bundle_service != model_contract.service_name or bundle_service_version != model_contract.service_version:
        problems.append(
            f"index bundle uses feature service {bundle_service} v{bundle_service_version}, the model "
            f"{model_contract.service_name} v{model_contract.service_version}"
        )
    if registry_contract.service_version != model_contract.service_version:
        problems.append(
            f"feature repo registry has {registry_contract.service_name} v{registry_contract.service_version}, "
            f"the model was trained on v{model_contract.service_version}"
        )
    elif list(registry_contract.columns) != list(model_contract.columns):
        missing = sorted(set(model_contract.columns) - set(registry_contract.columns))
        extra = sorted(set(registry_contract.columns) - set(model_contract.columns))
        problems.append(
            f"feature service {registry_contract.service_name} v{registry_contract.service_version} "
            f"changed without a version bump: missing {missing[:5]}, extra {extra[:5]}"
        )
    dim = manifest.get("dim")
    model_dim = getattr(encoder, "embedding_dim", None)
    if dim is not None and model_dim is not None and int(dim) != int(model_dim):
        problems.append(f"index dim {dim} differs from model embedding dim {model_dim}")
    if problems:
        raise VersionMismatchError("refusing to serve: " + "; ".join(problems))
