"""Ship the per-segment selection only if no single scorer beats it out of sample.

Choosing a scorer per segment is itself a fit, and on a small base it fits noise: with a
handful of holders per segment, the scorer that wins a segment's comparison is often just the
luckiest (5k demo base, all methods under the same thresholds, mean of 3 seeds: the
per-segment selection 0.488 / 0.375 micro / macro-F1 on the test split, the blend alone
0.522 / 0.360, LightGBM alone 0.509 / 0.375; bench/README.md, "Micro/macro thresholds and the
selection guard"). The scorers' own out-of-sample F1 cannot
show this: the selection was made on those very scores.

So the whole selection procedure is cross-validated one level up (nested): the non-test
anchors are split into folds, :func:`selection.select` runs on the other folds, and each held
fold is decided by that selection and by every candidate alone (its thresholds and shipping
from the same run). Pooled over the folds this gives honest micro/macro-F1 for "select per
segment" and for "this scorer everywhere". A single scorer replaces the selection only if it
is better by more than ``tolerance`` on one of the two and not worse by more than
``tolerance`` on the other; among several, the best micro + macro wins. Nothing here reads
the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from index_builder.micro_macro_thresholds import micro_macro
from index_builder.scorers import OutOfSample, fold_ids
from index_builder.selection import SegmentChoice, Selection, select

SELECTED = "per-segment selection"
# Above this many non-test anchors the nested comparison runs on a seeded sample of them.
MAX_ROWS = 50_000


def _restrict(oos: Mapping[str, OutOfSample], rows: np.ndarray) -> dict[str, OutOfSample]:
    kept = {}
    for name, scored in oos.items():
        inside = np.isin(scored.rows, rows)
        if inside.any():
            kept[name] = OutOfSample(scored.rows[inside], scored.scores[inside])
    return kept


def nested_scores(oos: Mapping[str, OutOfSample], labels: np.ndarray, segments: Sequence[str],
                  rows: np.ndarray, singles: Sequence[str], folds: int, seed: int,
                  select_kwargs: Mapping[str, Any]) -> dict[str, list[float]]:
    """Nested cross-validated ``[micro-F1, macro-F1]`` of the per-segment selection and of each
    scorer in ``singles`` alone, on ``rows`` (anchors every single was scored on)."""
    truth = np.asarray(labels, dtype=bool)[rows]
    decided = {name: np.zeros(truth.shape, dtype=bool) for name in [SELECTED, *singles]}
    outer = fold_ids(len(rows), folds, seed + 1)  # not the inner folds' assignment
    for f in np.unique(outer):
        held, kept = rows[outer == f], rows[outer != f]
        inner = select(_restrict(oos, kept), labels, segments, **{**select_kwargs, "prevalence_rows": kept})
        for j, choice in enumerate(inner.segments):
            if choice.shipped and choice.scorer is not None and choice.scorer in oos:
                # a scorer measured on fewer anchors (the tower's validation split) decides only those
                scores, covered = oos[choice.scorer].at(held)
                decided[SELECTED][outer == f, j] = covered & (scores[:, j] >= choice.threshold - 1e-6)
        for name in singles:
            scores, _ = oos[name].at(held)
            decided[name][outer == f] = (scores >= inner.thresholds_of(name) - 1e-6) & inner.shipped_of(name)
    return {name: [round(v, 6) for v in micro_macro(predicted, truth)] for name, predicted in decided.items()}


def winner(table: Mapping[str, Sequence[float]], tolerance: float) -> str:
    """The per-segment selection, unless a single scorer is better by more than ``tolerance`` on
    micro- or macro-F1 and worse by no more than ``tolerance`` on the other (best sum among those)."""
    micro, macro = table[SELECTED]
    better = [name for name, (mi, ma) in table.items() if name != SELECTED
              and ((mi > micro + tolerance and ma >= macro - tolerance)
                   or (ma > macro + tolerance and mi >= micro - tolerance))]
    return max(better, key=lambda name: sum(table[name])) if better else SELECTED


def guard(selection: Selection, oos: Mapping[str, OutOfSample], labels: np.ndarray, segments: Sequence[str],
          fit_rows: np.ndarray, *, tolerance: float, folds: int, seed: int, min_rows: int,
          select_kwargs: Mapping[str, Any], ship_segments: Sequence[str] = (),
          ship_without_signal: bool = False) -> Selection:
    """A copy of ``selection``, or of the single scorer that beats it out of sample (nested
    cross-validation) shipped on every segment, with the comparison in ``Selection.guard``."""
    fit_rows = np.sort(np.asarray(fit_rows))
    singles = [name for name in selection.scorers if name in oos and oos[name].covers(fit_rows)]
    if not singles:
        return replace(selection, guard={"skipped": f"no candidate was scored on all {len(fit_rows)} non-test "
                                                    "anchors, so none can be shipped alone"})
    if len(fit_rows) < min_rows:
        return replace(selection, guard={"skipped": f"{len(fit_rows)} non-test anchors, fewer than the "
                                                    f"{min_rows} a nested comparison needs"})
    rows = fit_rows
    if len(rows) > MAX_ROWS:  # the comparison needs ~0.005 of precision, not every anchor
        rows = np.sort(np.random.default_rng(seed).choice(fit_rows, MAX_ROWS, replace=False))
    table = nested_scores(oos, labels, segments, rows, singles, folds, seed, select_kwargs)
    chosen = winner(table, tolerance)
    selection = replace(selection, guard={"nested_cv": table, "tolerance": tolerance, "chosen": chosen,
                                          "anchors": int(len(rows))})
    if chosen == SELECTED:
        return selection
    (mi, ma), (own_mi, own_ma) = table[chosen], table[SELECTED]
    why = (f"{chosen} alone beat the per-segment selection out of sample (nested cross-validation, "
           f"micro/macro-F1 {mi:.3f}/{ma:.3f} vs {own_mi:.3f}/{own_ma:.3f}), so it scores every segment")
    return alone(selection, chosen, why, ship_segments, ship_without_signal)


def alone(selection: Selection, scorer: str, why: str, ship_segments: Sequence[str] = (),
          ship_without_signal: bool = False) -> Selection:
    """A copy of ``selection`` with ``scorer`` on every segment, at its own (traded) thresholds
    and under the same shipping rule as the per-segment choice."""
    forced = set(ship_segments)
    thresholds = selection.thresholds_of(scorer)
    signal = selection.shipped_of(scorer)
    choices = []
    for j, choice in enumerate(selection.segments):
        fit = choice.candidates.get(scorer)
        if fit is None or not fit.eligible:
            choices.append(SegmentChoice(choice.segment, None, 1.0, 0.0, choice.prior_f1, False,
                                         f"{why}; fewer than {selection.min_positives} opt-in holders to measure it",
                                         choice.candidates, 1.0))
            continue
        shipped = bool(signal[j]) or ship_without_signal or choice.segment in forced
        reason = f"{why}; out-of-sample F1 {fit.oos_f1:.3f}" + (
            "" if signal[j] else f", does not beat the prevalence prior {choice.prior_f1:.3f} by more than its "
                                 f"standard error" + ("; shipped by configuration" if shipped else ": no lookalikes"))
        choices.append(SegmentChoice(choice.segment, scorer, float(thresholds[j]), fit.oos_f1, choice.prior_f1,
                                     shipped, reason, choice.candidates, fit.threshold))
    return replace(selection, segments=choices,
                   tradeoff=dict(selection.tradeoff.get("by_scorer", {}).get(scorer, {})))
