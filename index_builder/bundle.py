"""The versioned index bundle (contracts section 6): write it atomically, load it back.

``artifacts/index/<index_version>/`` holds ``index.faiss``, ``anchor_ids.npy``,
``anchor_segments.npz`` (CSR anchors x segments, uint8), ``assignment.json`` (k,
aggregation, per-segment thresholds, segment names, search parameters) and
``manifest.json``; bundles built with scorer selection add ``selection.json`` (scorer,
threshold, out-of-sample F1 and shipping decision per segment) and ``scorers/`` (the fitted
state of every candidate scorer). Batch assignment, evaluation and online serving all score
through :meth:`IndexBundle.assign_scores`, so they cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.aggregation import AGGREGATIONS, decide, score_neighbours
from index_builder.scorers import BLEND, FEATURE_SCORERS, FittedScorers
from index_builder.selection import SELECTION_FILE, Selection
from index_builder.spilled_lists import BULK_FROM, SpilledLists, ivf_centroids, spill_lists
from lookalike.artifacts import atomic_dir, read_json, verify_manifest, write_manifest
from lookalike.errors import ArtifactError

log = logging.getLogger(__name__)

BUNDLE_KIND = "index_bundle"
INDEX_FILE = "index.faiss"
ANCHOR_IDS_FILE = "anchor_ids.npy"
ANCHOR_SEGMENTS_FILE = "anchor_segments.npz"
ASSIGNMENT_FILE = "assignment.json"
SCORERS_DIR = "scorers"


@dataclass
class AssignmentSpec:
    """How neighbours become segments; identical for batch and online assignment."""

    k: int
    aggregation: str
    segments: list[str]
    thresholds: list[float]
    threshold_mode: str = "calibrated"
    threshold_source: list[str] = field(default_factory=list)
    validation_f1: list[float | None] = field(default_factory=list)
    search_params: dict[str, Any] = field(default_factory=dict)
    # calibration settings, so evaluation can calibrate baselines exactly the same way
    fixed_threshold: float = 0.5
    threshold_floor: float = 0.2
    min_positives: int = 5
    # segment id -> display name from the segment catalog (empty when the repo has none)
    segment_names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ArtifactError(f"assignment.json: unknown aggregation {self.aggregation!r}")
        if len(self.thresholds) != len(self.segments):
            raise ArtifactError(
                f"assignment.json: {len(self.thresholds)} thresholds for {len(self.segments)} segments"
            )

    @property
    def threshold_array(self) -> np.ndarray:
        return np.asarray(self.thresholds, dtype=np.float32)

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["thresholds_by_segment"] = dict(zip(self.segments, self.thresholds, strict=True))
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> AssignmentSpec:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in payload.items() if k in names})


@dataclass
class ScoredCustomers:
    """Per-segment scores (each from the segment's selected scorer), decisions, neighbours."""

    scores: np.ndarray  # (n, n_segments) float32
    decisions: np.ndarray  # (n, n_segments) bool
    sims: np.ndarray  # (n, k) cosine of the tower-kNN neighbours
    neighbours: np.ndarray  # (n, k) anchor rows, -1 = none


@dataclass
class IndexBundle:
    path: Path
    index: Any
    anchor_ids: np.ndarray
    anchor_segments: sp.csr_matrix
    assignment: AssignmentSpec
    manifest: dict[str, Any]
    device: str = "cpu"
    selection: Selection | None = None
    scorers: FittedScorers | None = None

    @property
    def index_version(self) -> str:
        return str(self.manifest["index_version"])

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def segments(self) -> list[str]:
        return self.assignment.segments

    def search(self, vectors: np.ndarray, k: int | None = None,
               exclude_anchor_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (cosine, anchor row) for embeddings; ``exclude_anchor_rows`` drops self-matches."""
        k = k or self.assignment.k
        k = min(k, len(self.anchor_ids) - (1 if exclude_anchor_rows is not None else 0))
        if k < 1:
            raise ArtifactError(f"{self.path}: too few anchors ({len(self.anchor_ids)}) to search")
        queries = faiss_backend.l2_normalise(vectors)
        bulk = self._bulk_for(len(queries))
        if exclude_anchor_rows is not None:
            return faiss_backend.search_excluding_self(self.index, queries, exclude_anchor_rows, k, bulk=bulk)
        return faiss_backend.search(self.index, queries, k, bulk=bulk)

    def search_recall(self, vectors: np.ndarray, sample: int = 1000, seed: int = 0) -> dict[str, Any] | None:
        """Recall@k of the search ``vectors`` got (all of them searched at once), against exact
        search, on a sample of them; ``None`` for an exact index or a GPU one.

        The build-time guarantee is measured on held-out anchors (opt-in customers); this
        measures it on the customers actually scored, who may be distributed differently.
        """
        if self.manifest.get("index_type") == "flat" or self.device != "cpu" or len(vectors) == 0:
            return None
        k = min(self.assignment.k, len(self.anchor_ids))
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), min(sample, len(vectors)), replace=False))
        queries = faiss_backend.l2_normalise(vectors[rows])
        # a bulk search answers each query alone (its group's list), so the sample gets the same answers
        bulk = self._bulk_for(len(vectors))
        found = bulk.search(queries, k)[1] if bulk is not None else faiss_backend.search(self.index, queries, k)[1]
        truth = faiss_backend.exact_search(self.anchor_vectors).search(queries, k)[1]
        return {"k": k, "queries": len(rows), "path": "spilled lists" if bulk is not None else "index",
                "recall_at_k": round(faiss_backend.recall_between(found, truth), 5),
                "min_recall": self.manifest.get("recall_check", {}).get("min_recall")}

    def _bulk_for(self, n_queries: int) -> SpilledLists | None:
        """The spilled lists when a search of ``n_queries`` takes the bulk path, else None."""
        return self.bulk_lists if n_queries >= BULK_FROM else None

    @functools.cached_property
    def anchor_vectors(self) -> np.ndarray:
        """The index's (L2-normalised) anchor vectors, reconstructed once on first use."""
        return faiss_backend.stored_vectors(self.index)

    @functools.cached_property
    def bulk_lists(self) -> SpilledLists | None:
        """The anchors in spilled lists for bulk searches, as the recall guarantee tuned them
        (built on first use: serving never searches in bulk)."""
        spill = int(self.manifest.get("index_params", {}).get("spill", 0))
        if not spill or self.device != "cpu" or not isinstance(self.index, faiss_backend.faiss.IndexIVF):
            return None
        return spill_lists(self.anchor_vectors, ivf_centroids(self.index), spill)

    @functools.cached_property
    def label_weights(self) -> sp.csr_matrix:
        """The anchor label matrix as float32, converted once (not per scoring call)."""
        return sp.csr_matrix(self.anchor_segments, dtype=np.float32)

    def score(self, vectors: np.ndarray, exclude_anchor_rows: np.ndarray | None = None) -> np.ndarray:
        """Per-segment scores (n, n_segments) for embeddings, with the bundle's aggregation."""
        sims, ids = self.search(vectors, exclude_anchor_rows=exclude_anchor_rows)
        return self.score_neighbours(sims, ids)

    def score_neighbours(self, sims: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Per-segment scores from already-found neighbours (cosine, anchor row): the part of
        :meth:`score` after the search, for callers that search elsewhere (sharded Spark search)."""
        return score_neighbours(sims, ids, self.label_weights, self.assignment.aggregation)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Decisions for :meth:`assign_scores`-style scores: thresholds, minus unshipped segments."""
        decisions = decide(scores, self.assignment.threshold_array)
        if self.selection is not None:
            decisions &= self.selection.shipped[None, :]
        return decisions

    @property
    def needs_features(self) -> bool:
        """Whether a shipped segment's scorer reads the feature matrix, not only embeddings."""
        if self.selection is None:
            return False
        return bool(FEATURE_SCORERS & self.selection.scorers_in_use())

    def assign_scores(self, vectors: np.ndarray, features: np.ndarray | None = None,
                      exclude_anchor_rows: np.ndarray | None = None, k: int | None = None) -> ScoredCustomers:
        """The one scoring path of batch assignment, evaluation and ``/assign``.

        Each shipped segment is scored by its selected scorer; the others keep the tower-kNN
        score (reported, never decided on). ``features`` (``encoder.feature_matrix``) is needed
        when :attr:`needs_features`; ``k`` overrides the tower kNN's neighbour count.
        """
        sims, ids = self.search(vectors, k, exclude_anchor_rows=exclude_anchor_rows)
        return self.scores_from_neighbours(sims, ids, vectors, features, exclude_anchor_rows)

    def scores_from_neighbours(self, sims: np.ndarray, ids: np.ndarray, vectors: np.ndarray,
                               features: np.ndarray | None = None,
                               exclude_anchor_rows: np.ndarray | None = None) -> ScoredCustomers:
        """:meth:`assign_scores` after the tower-kNN search (for searches done elsewhere: the
        sharded Spark engine merges per-shard top-k first)."""
        tower = score_neighbours(sims, ids, self.label_weights, self.assignment.aggregation)
        scores = tower.copy()
        if self.selection is not None:
            for name, columns in self.selection.columns_by_scorer().items():
                if name != "tower_knn":
                    scores[:, columns] = self.method_scores(name, vectors, features, columns, exclude_anchor_rows,
                                                            tower_scores=tower[:, columns])
        return ScoredCustomers(scores, self.decide(scores), sims, ids)

    def method_scores(self, name: str, vectors: np.ndarray, features: np.ndarray | None,
                      columns: np.ndarray | None = None,
                      exclude_anchor_rows: np.ndarray | None = None,
                      tower_scores: np.ndarray | None = None) -> np.ndarray:
        """Scores of one candidate scorer on ``columns`` (all segments by default); the blend is
        the mean of its members' scores. ``tower_scores``: the tower kNN's scores of ``columns``
        when the caller has searched already."""
        columns = np.arange(len(self.segments)) if columns is None else np.asarray(columns)
        if name == "tower_knn":
            return self.score(vectors, exclude_anchor_rows)[:, columns] if tower_scores is None else tower_scores
        if name == BLEND:
            members = self.selection.blend_members if self.selection is not None else []
            if not members:
                raise ArtifactError(f"index bundle {self.path} selected the blend but lists no blend members")
            total = np.zeros((vectors.shape[0], len(columns)), np.float64)
            for member in members:
                total += self.method_scores(member, vectors, features, columns, exclude_anchor_rows, tower_scores)
            return (total / len(members)).astype(np.float32)
        if self.scorers is None or name not in self.scorers.names:
            raise ArtifactError(f"index bundle {self.path} has no fitted scorer {name!r}")
        return self.scorers.score(name, faiss_backend.l2_normalise(vectors), features, columns,
                                  exclude_anchor_rows)

    @functools.cached_property
    def _sorted_anchor_ids(self) -> tuple[np.ndarray, np.ndarray]:
        # Sorted once per bundle: serving looks anchors up on every request.
        order = np.argsort(self.anchor_ids, kind="stable")
        return order, self.anchor_ids[order]

    def anchor_rows(self, customer_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each customer id among the anchors, ``-1`` where it is not an anchor."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        order, sorted_ids = self._sorted_anchor_ids
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        return np.where(found, order[pos], -1)


def write_bundle(
    final_dir: str | Path,
    built: faiss_backend.BuiltIndex,
    anchor_ids: np.ndarray,
    anchor_segments: sp.spmatrix,
    assignment: AssignmentSpec,
    selection: Selection | None = None,
    scorers: FittedScorers | None = None,
    **manifest_fields: Any,
) -> dict[str, Any]:
    """Write the bundle atomically into ``final_dir`` and return its manifest."""
    anchor_ids = np.asarray(anchor_ids, dtype=np.int64)
    labels = sp.csr_matrix(anchor_segments, dtype=np.uint8)
    if labels.shape != (len(anchor_ids), len(assignment.segments)):
        raise ArtifactError(
            f"anchor segment matrix {labels.shape} does not match {len(anchor_ids)} anchors x "
            f"{len(assignment.segments)} segments"
        )
    if built.ntotal != len(anchor_ids):
        raise ArtifactError(f"index holds {built.ntotal} vectors but there are {len(anchor_ids)} anchors")
    with atomic_dir(final_dir) as tmp:
        faiss_backend.write_index(built.index, str(tmp / INDEX_FILE))
        np.save(tmp / ANCHOR_IDS_FILE, anchor_ids)
        sp.save_npz(tmp / ANCHOR_SEGMENTS_FILE, labels)
        (tmp / ASSIGNMENT_FILE).write_text(json.dumps(assignment.to_json(), indent=2, sort_keys=True) + "\n")
        if selection is not None:
            (tmp / SELECTION_FILE).write_text(json.dumps(selection.to_json(), indent=2) + "\n")
        if scorers is not None:
            scorers.save(tmp / SCORERS_DIR)
        manifest = write_manifest(
            tmp, BUNDLE_KIND, record_files=True,
            dim=built.dim, metric="cosine", index_type=built.index_type, index_params=built.params,
            built_on=built.device, gpu_fallback_reason=built.fallback_reason,
            recall_at_k=built.recall_at_k, recall_k=built.recall_k, recall_check=built.recall_check,
            build_seconds=round(built.build_seconds, 3),
            **manifest_fields,
        )
    return manifest


def load_bundle(path: str | Path, device: str = "cpu", verify: bool | str = True) -> IndexBundle:
    """Load a bundle written by :func:`write_bundle`.

    ``verify``: ``True``/``"full"`` rehashes every file (batch jobs, ``lookalike
    verify-bundle``), ``"fast"`` checks the file list, sizes, small files' hashes and large
    files' sample digests (the service's default: seconds less start-up at millions of
    anchors; :mod:`lookalike.file_integrity` says what each mode catches), ``False``/``"none"``
    nothing.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"index bundle not found: {path}")
    mode = ("full" if verify else "none") if isinstance(verify, bool) else verify
    manifest = verify_manifest(path, BUNDLE_KIND, mode=mode)
    for name in (INDEX_FILE, ANCHOR_IDS_FILE, ANCHOR_SEGMENTS_FILE, ASSIGNMENT_FILE):
        if not (path / name).is_file():
            raise ArtifactError(f"index bundle {path} is missing {name}")
    assignment = AssignmentSpec.from_json(read_json(path / ASSIGNMENT_FILE))
    index, used_device = faiss_backend.read_index(str(path / INDEX_FILE), device)
    faiss_backend.set_search_params(index, assignment.search_params)
    anchor_ids = np.load(path / ANCHOR_IDS_FILE)
    anchor_segments = sp.load_npz(path / ANCHOR_SEGMENTS_FILE).tocsr()
    if index.ntotal != len(anchor_ids) or anchor_segments.shape[0] != len(anchor_ids):
        raise ArtifactError(
            f"index bundle {path} is inconsistent: index {index.ntotal} vectors, "
            f"{len(anchor_ids)} anchor ids, {anchor_segments.shape[0]} label rows"
        )
    selection = Selection.from_json(read_json(path / SELECTION_FILE)) if (path / SELECTION_FILE).is_file() else None
    scorers = (FittedScorers.load(path / SCORERS_DIR, anchor_segments)
               if (path / SCORERS_DIR).is_dir() else None)
    if selection is not None and selection.names != assignment.segments:
        raise ArtifactError(f"index bundle {path}: {SELECTION_FILE} and {ASSIGNMENT_FILE} list different segments")
    if selection is not None and scorers is not None:
        by_scorer = selection.columns_by_scorer()
        scorers.prepare(by_scorer)
        if BLEND in by_scorer:  # the members score the blend's columns as one more column set
            scorers.prepare({member: by_scorer[BLEND] for member in selection.blend_members})
    return IndexBundle(path, index, anchor_ids, anchor_segments, assignment, manifest, used_device,
                       selection, scorers)


CURRENT_FILE = "current.json"


def set_current(root: str | Path, name: str, **fields: Any) -> None:
    """Atomically point ``<root>/current.json`` at ``<root>/<name>`` (the live artifact)."""
    from lookalike.artifacts import utc_now, write_json

    write_json(Path(root) / CURRENT_FILE, {"name": name, "updated_at": utc_now(), **fields})


def current_path(root: str | Path, what: str = "artifact") -> Path:
    """The directory ``<root>/current.json`` points at, or a clear error."""
    root = Path(root)
    pointer = root / CURRENT_FILE
    if not pointer.is_file():
        raise ArtifactError(f"no current {what} under {root} ({CURRENT_FILE} missing); build one first")
    target = root / str(read_json(pointer)["name"])
    if not target.is_dir():
        raise ArtifactError(f"{pointer} points at {target}, which does not exist")
    return target


def add_cli(parser: Any) -> None:
    """``lookalike verify-bundle [DIR] [--mode full|fast]``: the integrity check on demand."""
    parser.add_argument("bundle", nargs="?", default=None,
                        help="bundle directory (default: the current bundle under --index-root)")
    parser.add_argument("--index-root", default="artifacts/index")
    parser.add_argument("--mode", choices=["full", "fast"], default="full",
                        help="full: rehash every byte (default); fast: what the service checks at start-up")
    parser.set_defaults(func=_verify_cli)


def _verify_cli(args: Any) -> int:
    path = Path(args.bundle) if args.bundle else current_path(args.index_root, "index bundle")
    manifest = verify_manifest(path, BUNDLE_KIND, mode=args.mode)
    files = manifest.get("files") or {}
    size = sum(int(r["bytes"]) for r in files.values()) / 1e6 if files else None
    print(f"ok: {path} matches its manifest ({args.mode} verification"
          + (f", {len(files)} files, {size:,.0f} MB)" if files else ")"))
    return 0
