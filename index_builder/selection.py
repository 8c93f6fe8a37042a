"""Per-segment choice of scorer, threshold and shipping, from out-of-sample scores only.

For every segment and every candidate scorer (:mod:`index_builder.scorers`):

- the threshold maximises F1 over the scorer's out-of-sample scores on non-test anchors;
- its *out-of-sample F1* is cross-validated as well: the anchors are split into folds, each
  fold is decided with the threshold chosen on the other folds, and F1 is computed over the
  pooled decisions. A threshold never grades itself, so a scorer with few out-of-sample rows
  (the tower's validation split) is not favoured by the optimism of picking the best cut-off;
- a scorer with fewer than ``min_positives`` holders among its rows is not eligible.

Only the candidates scored out of sample on the most anchors compete: every non-test anchor
for the kNN, cross-fitted and blended scorers, and for the tower when the model has fold
towers. Without fold towers the tower's scorers are scored on the validation split only (15%
of the anchors); they are still fitted and reported alone, but they are chosen only where no
candidate covers every anchor. Compared on the rows they share, a rare segment has a handful
of holders there: F1 differences and their bootstrap error are noise, and the best of several
challengers beats the incumbent by one standard error by chance (20k demo, seed 1: the tower
head won two segments on validation rows, one with 0 true and 152 false positives on the test
split; bench/README.md, "Scorer selection").

Each segment starts from the scorer with the best mean out-of-sample F1 over all segments
(``pooled_best``; simplest first on ties): pooled over tens of segments that comparison is far
less noisy than any one segment's, where a rare segment has a handful of holders. The other
competitors then challenge it pairwise, simplest first (order of ``scorers.SCORERS``), on the
same rows: a challenger replaces the current choice only if its F1 is higher by more than one
bootstrap standard error of the paired difference (and ``tie_tolerance``) -- the
one-standard-error rule, so a segment keeps the scorer that is best across the base unless
its own data clearly says otherwise. (Starting from the simplest scorer instead let logistic
regression keep 8-22 of 60 segments that LightGBM scored better on the 5k demo base: -0.020
micro-F1 against LightGBM alone; bench/README.md, "Assignment quality".) The ``blend`` (mean of the candidates scored on every non-test anchor) is last.
A segment whose chosen scorer does not beat the prevalence prior (F1 of "everybody holds it",
``2p / (1 + p)``) on the same rows by more than one bootstrap standard error is not shipped
as a lookalike segment unless the configuration says so (the best of five scorers beats the
prior by chance on a segment the features know nothing about).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from index_builder import micro_macro_thresholds
from index_builder.aggregation import best_f1_threshold
from index_builder.metrics import prior_f1
from index_builder.scorers import BLEND, SCORERS, OutOfSample, fold_ids
from lookalike.errors import ArtifactError

SELECTION_FILE = "selection.json"


@dataclass
class CandidateFit:
    threshold: float
    oos_f1: float
    rows: int
    positives: int
    eligible: bool
    # beats the prevalence prior by more than one standard error on its out-of-sample rows
    beats_prior: bool = False
    # its threshold under the micro/macro trade-off when shipped alone (None: not traded)
    traded_threshold: float | None = None


@dataclass
class SegmentChoice:
    segment: str
    scorer: str | None  # None: no scorer could be measured (too few holders)
    threshold: float
    oos_f1: float
    prior_f1: float
    shipped: bool
    reason: str
    candidates: dict[str, CandidateFit] = field(default_factory=dict)
    # the chosen scorer's own F1-optimal threshold; ``threshold`` is the one shipped, moved by the
    # micro/macro trade-off (micro_macro_thresholds.py); None in bundles from before it
    f1_threshold: float | None = None


@dataclass
class Selection:
    segments: list[SegmentChoice]
    scorers: list[str]  # candidates that were evaluated
    folds: int
    tie_tolerance: float
    min_positives: int
    # candidates left out before scoring, and why (e.g. the feature-kNN scale guard)
    excluded_scorers: dict[str, str] = field(default_factory=dict)
    # the scorers the ``blend`` candidate averages (empty: no blend was a candidate)
    blend_members: list[str] = field(default_factory=list)
    # how the shipped thresholds trade macro- for micro-F1 (micro_macro_thresholds.Tradeoff),
    # and under "by_scorer" each candidate's own trade-off when shipped alone
    tradeoff: dict[str, Any] = field(default_factory=dict)
    # the nested comparison of this selection with each scorer alone (selection_guard.py)
    guard: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.segment for c in self.segments]

    @property
    def thresholds(self) -> np.ndarray:
        return np.asarray([c.threshold for c in self.segments], dtype=np.float32)

    @property
    def shipped(self) -> np.ndarray:
        return np.asarray([c.shipped for c in self.segments], dtype=bool)

    @property
    def chosen(self) -> list[str | None]:
        return [c.scorer for c in self.segments]

    def columns_by_scorer(self, only_shipped: bool = True) -> dict[str, np.ndarray]:
        """Segment columns each scorer must score (shipped segments only, by default)."""
        out: dict[str, list[int]] = {}
        for j, choice in enumerate(self.segments):
            if choice.scorer is not None and (choice.shipped or not only_shipped):
                out.setdefault(choice.scorer, []).append(j)
        return {name: np.asarray(cols, dtype=np.int64) for name, cols in out.items()}

    def scorers_in_use(self) -> set[str]:
        """Stored scorers that shipped segments read (the blend's members in place of the blend)."""
        used = set(self.columns_by_scorer())
        return (used - {BLEND}) | (set(self.blend_members) if BLEND in used else set())

    def thresholds_of(self, scorer: str) -> np.ndarray:
        """That scorer's own out-of-sample thresholds, traded for micro-F1 like the system's where
        it was (for reporting it, or shipping it, as a single method)."""
        fits = [c.candidates.get(scorer) for c in self.segments]
        return np.asarray([1.0 if f is None else f.threshold if f.traded_threshold is None else f.traded_threshold
                           for f in fits], dtype=np.float32)

    def shipped_of(self, scorer: str) -> np.ndarray:
        """Segments that scorer would ship alone under the same prior rule (for the report)."""
        return np.asarray([scorer in c.candidates and c.candidates[scorer].beats_prior for c in self.segments],
                          dtype=bool)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Selection:
        try:
            segments = [SegmentChoice(**{**c, "candidates": {k: CandidateFit(**v) for k, v in c["candidates"].items()}})
                        for c in payload["segments"]]
            return cls(segments, list(payload["scorers"]), int(payload["folds"]), float(payload["tie_tolerance"]),
                       int(payload["min_positives"]), dict(payload.get("excluded_scorers", {})),
                       list(payload.get("blend_members", [])), dict(payload.get("tradeoff", {})),
                       dict(payload.get("guard", {})))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{SELECTION_FILE}: malformed ({exc})") from exc


def cross_validated_decisions(scores: np.ndarray, truth: np.ndarray, folds: int, seed: int = 0,
                              floor: float = 0.0) -> tuple[float, np.ndarray]:
    """``(threshold on all rows, decisions of each fold at the threshold chosen on the others)``."""
    truth = np.asarray(truth, dtype=bool)
    threshold, _ = best_f1_threshold(scores, truth)
    fold = fold_ids(len(scores), folds, seed)
    predicted = np.zeros(len(scores), dtype=bool)
    for f in np.unique(fold):
        held = fold == f
        cut, _ = best_f1_threshold(scores[~held], truth[~held])
        predicted[held] = scores[held] >= max(cut, floor) - 1e-6
    return max(threshold, floor), predicted


def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = int((predicted & truth).sum())
    wrong = int((predicted != truth).sum())
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def cross_validated_f1(scores: np.ndarray, truth: np.ndarray, folds: int, seed: int = 0,
                       floor: float = 0.0) -> tuple[float, float]:
    """``(threshold on all rows, F1 of thresholds chosen on the other folds)`` for one segment."""
    threshold, predicted = cross_validated_decisions(scores, truth, folds, seed, floor)
    return threshold, _f1(predicted, np.asarray(truth, dtype=bool))


def _resampled_cells(cells: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap counts of the cells of a contingency table, ``(resamples, cells)``.

    F1 and prevalence depend on the rows only through these counts, and resampling ``n`` rows
    with replacement is a multinomial draw over the cells: the same bootstrap as indexing rows,
    without materialising ``resamples x n`` rows.
    """
    n = int(cells.sum())
    return np.random.default_rng(seed).multinomial(n, cells / n, size=resamples)


def _f1_of_counts(tp: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    return np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)


def beats_prior(predicted: np.ndarray, truth: np.ndarray, resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """``(F1 - prior F1, its bootstrap standard error)`` over the same rows.

    The best of several noisy scorers beats the prior by chance on a segment the features
    know nothing about; shipping requires the gain to exceed one standard error. The error is
    at least the prior's own (the prevalence is estimated on the same rows): a scorer that
    flags nearly every customer has a paired error near zero, and would otherwise ship a
    segment everyone gets on a gain smaller than the uncertainty of the prevalence.
    """
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    p = truth.mean()
    gain = _f1(predicted, truth) - 2 * p / (1 + p)
    # cells: true positive, false positive, false negative, true negative
    cells = np.array([(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum(),
                      (~predicted & ~truth).sum()], dtype=np.float64)
    tp, fp, fn, _ = _resampled_cells(cells, resamples, seed).T
    q = (tp + fn) / len(truth)
    priors = np.where(q > 0, 2 * q / (1 + q), 0.0)
    gains = _f1_of_counts(tp, fp + fn) - priors
    return float(gain), float(max(gains.std(), priors.std()))


def paired_gain(predicted_a: np.ndarray, predicted_b: np.ndarray, truth: np.ndarray, resamples: int = 100,
                seed: int = 0) -> tuple[float, float]:
    """``(F1(b) - F1(a), bootstrap standard error of that difference)`` on the same rows."""
    a, b, t = (np.asarray(x, dtype=bool) for x in (predicted_a, predicted_b, truth))
    gain = _f1(b, t) - _f1(a, t)
    # cells indexed by (a, b, truth) as a 3-bit number
    cells = np.bincount(a.astype(np.int64) * 4 + b.astype(np.int64) * 2 + t, minlength=8).astype(np.float64)
    c = _resampled_cells(cells, resamples, seed).T
    # a: tp = (1,*,1), wrong = (1,*,0) + (0,*,1); likewise for b
    tp_a, wrong_a = c[5] + c[7], c[4] + c[6] + c[1] + c[3]
    tp_b, wrong_b = c[3] + c[7], c[2] + c[6] + c[1] + c[5]
    gains = _f1_of_counts(tp_b, wrong_b) - _f1_of_counts(tp_a, wrong_a)
    return float(gain), float(gains.std())


def _tournament(eligible: Sequence[str], decisions: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                tie_tolerance: float, seed: int = 0) -> str:
    """Simplest first; a later scorer takes over only if its F1 beats the current one's by more
    than one standard error (and ``tie_tolerance``) on the rows both were scored on out of
    sample -- the one-standard-error rule, on paired rows so that the tower's few validation
    rows cannot win on noise."""
    current = eligible[0]
    for challenger in eligible[1:]:
        rows_a, predicted_a, truth_a = decisions[current]
        rows_b, predicted_b, _ = decisions[challenger]
        common, in_a, in_b = np.intersect1d(rows_a, rows_b, assume_unique=True, return_indices=True)
        if len(common) == 0:
            continue
        gain, error = paired_gain(predicted_a[in_a], predicted_b[in_b], truth_a[in_a], seed=seed)
        if gain > max(tie_tolerance, error):
            current = challenger
    return current


def pooled_best(order: Sequence[str], segments: Sequence[tuple[Mapping[str, CandidateFit], Sequence[str]]],
                tie_tolerance: float) -> str | None:
    """The scorer with the best mean out-of-sample F1 over the segments where every competitor
    was measured (simplest first on ties): each segment's starting choice. Pooled over all
    segments, this is far less noisy than any one segment's comparison."""
    measured = [eligible for _, eligible in segments if eligible]
    # scorers that compete in most segments (not the tower on the few segments where only it was measured)
    competitors = [n for n in order if 2 * sum(n in eligible for eligible in measured) > len(measured)]
    common = [fits for fits, eligible in segments if eligible and all(n in eligible for n in competitors)]
    if not competitors or not common:
        return None
    means = {n: float(np.mean([fits[n].oos_f1 for fits in common])) for n in competitors}
    best = competitors[0]
    for name in competitors[1:]:
        if means[name] > means[best] + tie_tolerance:
            best = name
    return best


def select(
    oos: Mapping[str, OutOfSample],
    labels: np.ndarray,
    segments: Sequence[str],
    *,
    folds: int = 5,
    tie_tolerance: float = 0.002,
    min_positives: int = 5,
    threshold_floor: float = 0.0,
    prevalence_rows: np.ndarray | None = None,
    ship_without_signal: bool = False,
    ship_segments: Sequence[str] = (),
    seed: int = 0,
    excluded_scorers: Mapping[str, str] | None = None,
    blend_members: Sequence[str] = (),
    f1_tolerance: float = 0.0,
) -> Selection:
    """Choose a scorer per segment. ``labels`` is the dense anchors x segments matrix (only the
    rows named by each :class:`OutOfSample` are read); ``prevalence_rows`` the anchors the prior
    is measured on (non-test anchors); ``excluded_scorers`` the candidates left out, with why;
    ``blend_members`` the scorers ``oos["blend"]`` averages; ``f1_tolerance`` the
    cross-validated macro-F1 the shipped thresholds may give up for micro-F1
    (:mod:`index_builder.micro_macro_thresholds`; 0 keeps per-segment F1 thresholds)."""
    labels = np.asarray(labels, dtype=bool)
    base = labels if prevalence_rows is None else labels[prevalence_rows]
    priors = prior_f1(base.mean(axis=0)) if len(base) else np.zeros(len(segments))
    order = [s for s in SCORERS if s in oos]
    forced = set(ship_segments)
    measured_segments = []
    for j in range(len(segments)):
        fits: dict[str, CandidateFit] = {}
        gains: dict[str, tuple[float, float]] = {}
        decisions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name in order:
            rows, scores = oos[name].rows, oos[name].scores[:, j]
            truth = labels[rows, j]
            positives = int(truth.sum())
            if positives < min_positives:
                fits[name] = CandidateFit(1.0, 0.0, len(rows), positives, False)
                continue
            threshold, predicted = cross_validated_decisions(scores, truth, folds, seed, threshold_floor)
            gain, gain_se = beats_prior(predicted, truth, seed=seed)
            gains[name] = (gain, gain_se)
            decisions[name] = (rows, predicted, truth)
            fits[name] = CandidateFit(round(threshold, 6), round(_f1(predicted, truth), 6), len(rows), positives,
                                      True, bool(gain > gain_se))
        measured = [n for n in order if fits[n].eligible]
        # compared on the same rows: the candidates scored on the most anchors (docstring)
        eligible = [n for n in measured if fits[n].rows == max(fits[m].rows for m in measured)]
        measured_segments.append((fits, gains, decisions, eligible))
    default = pooled_best(order, [(fits, eligible) for fits, _, _, eligible in measured_segments], tie_tolerance)
    choices = []
    for j, segment in enumerate(segments):
        fits, gains, decisions, eligible = measured_segments[j]
        prior = float(priors[j])
        if not eligible:
            choices.append(SegmentChoice(segment, None, 1.0, 0.0, round(prior, 6), False,
                                         f"fewer than {min_positives} opt-in holders to measure any scorer",
                                         fits, 1.0))
            continue
        if default in eligible:
            eligible = [default, *[n for n in eligible if n != default]]
        chosen = _tournament(eligible, decisions, tie_tolerance, seed)
        fit = fits[chosen]
        gain, gain_se = gains[chosen]
        signal = fit.beats_prior
        shipped = signal or ship_without_signal or segment in forced
        if signal:
            runner = [n for n in eligible if n != chosen]
            reason = f"out-of-sample F1 {fit.oos_f1:.3f}"
            if runner:
                second = max(runner, key=lambda n: fits[n].oos_f1)
                reason += (f"; next {second} {fits[second].oos_f1:.3f}"
                           + (f": not better by more than a standard error on the same rows, so "
                              f"{'the best scorer over all segments' if chosen == default else 'the simpler one'}"
                              if fits[second].oos_f1 > fit.oos_f1 else ""))
        else:
            reason = (f"out-of-sample F1 {fit.oos_f1:.3f} does not beat the prevalence prior {prior:.3f} "
                      f"by more than its standard error ({gain:+.3f} ± {gain_se:.3f})"
                      + ("; shipped by configuration" if shipped else ": no lookalikes"))
        choices.append(SegmentChoice(segment, chosen, fit.threshold, fit.oos_f1, round(prior, 6), shipped,
                                     reason, fits, fit.threshold))
    tradeoff = _trade_macro_for_micro(choices, oos, labels, f1_tolerance, folds, seed, threshold_floor)
    return Selection(choices, order, folds, tie_tolerance, min_positives, dict(excluded_scorers or {}),
                     list(blend_members) if BLEND in oos else [], tradeoff)


def _trade_macro_for_micro(choices: list[SegmentChoice], oos: Mapping[str, OutOfSample], labels: np.ndarray,
                           f1_tolerance: float, folds: int, seed: int, floor: float) -> dict[str, Any]:
    """Move the shipped thresholds by :func:`micro_macro_thresholds.choose`, on the rows every
    candidate scoring all non-test anchors shares; a segment whose scorer was measured on fewer
    rows (the tower on its validation split) keeps its own F1 threshold. Every candidate scored
    on those rows gets its own traded thresholds too (``CandidateFit.traded_threshold``), so
    that it is reported, and can be shipped alone, under the same rule."""
    if not oos or f1_tolerance <= 0:
        return {}
    rows = np.sort(max(oos.values(), key=lambda o: len(o.rows)).rows)
    truth = labels[rows]

    def traded(scores: np.ndarray, start: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, Any]:
        return micro_macro_thresholds.choose(scores, truth, start, active, macro_tolerance=f1_tolerance, folds=folds,
                                             seed=seed, floor=floor)

    aligned = {name: scored.at(rows)[0] for name, scored in oos.items() if scored.covers(rows)}
    by_scorer = {}
    for name, scores in aligned.items():
        fits = [c.candidates.get(name) for c in choices]
        start = np.asarray([f.threshold if f is not None else 1.0 for f in fits])
        active = np.asarray([f is not None and f.eligible and f.beats_prior for f in fits])
        thresholds, alone = traded(scores, start, active)
        by_scorer[name] = asdict(alone)
        for fit, threshold in zip(fits, thresholds, strict=True):
            if fit is not None:
                fit.traded_threshold = round(float(threshold), 6)
    scores = np.zeros((len(rows), len(choices)), np.float32)
    active = np.zeros(len(choices), dtype=bool)
    for j, choice in enumerate(choices):
        if choice.shipped and choice.scorer in aligned:
            scores[:, j] = aligned[choice.scorer][:, j]
            active[j] = True
    thresholds, tradeoff = traded(scores, np.asarray([c.threshold for c in choices]), active)
    for j, choice in enumerate(choices):
        choice.threshold = round(float(thresholds[j]), 6)
    return {**asdict(tradeoff), "by_scorer": by_scorer}
