"""Several binary LightGBM models as one multi-output LightGBM model, for cheap small requests.

``Booster.predict`` costs about 20-30 µs per call however little it computes (one row through
100 shallow trees is well under 1 µs of tree walking), so scoring one customer on 16
gradient-boosting segments cost 16 calls. LightGBM's multiclass layout evaluates
``num_tree_per_iteration`` trees per iteration, one per output column, and returns each
column's raw sum with ``raw_score=True``: the per-segment models, interleaved into that layout,
give every segment's raw score in one call, still computed by LightGBM's own tree walker
(missing values, ``default_left``, ``<=`` at the threshold). The sigmoid is applied here.
Measurements: bench/README.md, "Per-request cost".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.errors import ArtifactError

_TREE_HEADER = re.compile(r"^Tree=\d+\n", re.MULTILINE)
# what LightGBM writes for a tree that never split; pads segments with fewer trees (a model
# that stopped early) so that every iteration holds one tree per segment
_ZERO_TREE = ("num_leaves=1\nnum_cat=0\nsplit_feature=\nsplit_gain=\nthreshold=\ndecision_type=\nleft_child=\n"
              "right_child=\nleaf_value=0\nleaf_weight=\nleaf_count=0\ninternal_value=\ninternal_weight=\n"
              "internal_count=\nis_linear=0\nshrinkage=1\n")
_HEADER_KEYS_REPLACED = ("num_class=", "num_tree_per_iteration=", "objective=", "tree_sizes=")


@dataclass
class MergedBoosters:
    """One LightGBM booster whose output column ``s`` is ``sigmoid(raw score of model s)``."""

    booster: Any
    sigmoid: np.ndarray  # per column, the binary objective's sigmoid scale

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.predict(x, raw_score=True, num_threads=1), dtype=np.float64)
        raw = raw.reshape(x.shape[0], len(self.sigmoid))
        return (1.0 / (1.0 + np.exp(-self.sigmoid[None, :] * raw))).astype(np.float32)


def _split_model(text: str) -> tuple[list[str], list[str]]:
    """``(header lines, tree bodies)`` of a saved LightGBM model."""
    head, _, rest = text.partition("\nTree=0\n")
    trees_text = "Tree=0\n" + rest.partition("\nend of trees")[0]
    bodies = [b.strip("\n") + "\n" for b in _TREE_HEADER.split(trees_text) if b.strip()]
    return head.splitlines(), bodies


def merge_boosters(boosters: Sequence[Any]) -> MergedBoosters:
    """Interleave binary-objective boosters (same feature columns) into one multi-output model."""
    import lightgbm as lgb

    if not boosters:
        raise ArtifactError("no LightGBM models to merge")
    headers, forests, sigmoids = [], [], []
    first_header: list[str] = []
    for booster in boosters:
        header, bodies = _split_model(booster.model_to_string(num_iteration=-1))
        objective = next((line for line in header if line.startswith("objective=")), "")
        found = re.search(r"sigmoid:(\S+)", objective)
        if not objective.startswith("objective=binary") or found is None or booster.num_model_per_iteration() != 1:
            raise ArtifactError(f"can only merge binary LightGBM models, got {objective or 'no objective'!r}")
        first_header = first_header or header
        headers.append([line for line in header if line.startswith("max_feature_idx=")])
        forests.append(bodies)
        sigmoids.append(float(found.group(1)))
    if any(h != headers[0] for h in headers):
        raise ArtifactError("LightGBM models to merge read different feature columns")
    n_outputs, iterations = len(boosters), max(len(f) for f in forests)
    header = [line for line in first_header if not line.startswith(_HEADER_KEYS_REPLACED)]
    header.insert(2, f"num_class={n_outputs}\nnum_tree_per_iteration={n_outputs}")
    trees: list[str] = []
    for iteration in range(iterations):
        for forest in forests:
            body = forest[iteration] if iteration < len(forest) else _ZERO_TREE
            trees.append(f"Tree={len(trees)}\n{body}")
    text = "\n".join(header) + "\n\n" + "\n".join(trees) + "\nend of trees\n"
    return MergedBoosters(lgb.Booster(model_str=text), np.asarray(sigmoids, dtype=np.float64))
