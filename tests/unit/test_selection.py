"""Per-segment scorer selection: out-of-sample only, sensible choices, no shipping without signal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.build import build_bundle_from_arrays
from index_builder.bundle import load_bundle
from index_builder.config import AssignmentParams
from index_builder.faiss_backend import IndexParams
from index_builder.scorers import OutOfSample
from index_builder.selection import cross_validated_f1, pooled_best, select
from index_builder.tower_crossfit import FoldEmbeddings

pytestmark = pytest.mark.unit

SEGMENTS = ["linear", "cluster", "noise", "rare_linear"]


def synthetic_anchors(n: int = 700, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, embeddings, labels, split. ``linear`` is a threshold on one feature, ``cluster``
    is membership of one of six tight clusters (which the embedding separates), ``noise`` is
    independent of everything."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 6, n)
    centres = rng.normal(size=(6, 12)) * 3
    features = (centres[cluster] + rng.normal(size=(n, 12))).astype(np.float32)
    features[:, 0] = rng.normal(size=n)  # the linear feature is independent of the clusters
    labels = np.zeros((n, len(SEGMENTS)), dtype=bool)
    labels[:, 0] = features[:, 0] > 0.4
    labels[:, 1] = cluster == 2
    labels[:, 2] = rng.random(n) < 0.3
    labels[:, 3] = features[:, 0] > 1.3
    embeddings = np.eye(6, 16, dtype=np.float32)[cluster] + 0.05 * rng.normal(size=(n, 16)).astype(np.float32)
    split = np.array(["train", "validation", "test"])[rng.choice(3, n, p=[0.6, 0.25, 0.15])]
    return features, embeddings, labels, split


def build(tmp: Path, labels: np.ndarray, features: np.ndarray, embeddings: np.ndarray, split: np.ndarray,
          fold_embeddings: FoldEmbeddings | None = None, **params: object) -> Path:
    assignment = AssignmentParams(k=15, **params)  # type: ignore[arg-type]
    head = (np.zeros((len(SEGMENTS), embeddings.shape[1]), np.float32), np.zeros(len(SEGMENTS), np.float32))
    build_bundle_from_arrays(tmp, embeddings, np.arange(len(labels)) + 1000, sp.csr_matrix(labels), SEGMENTS, split,
                             IndexParams(), assignment, features=features, head=head, fold_embeddings=fold_embeddings,
                             index_version="v", model_version="1", run_date="2026-11-22")
    return tmp


def synthetic_fold_towers(embeddings: np.ndarray, split: np.ndarray, folds: int = 3, seed: int = 5) -> FoldEmbeddings:
    """Each fold tower's view of the non-test anchors: the embedding, perturbed per tower; a
    few non-test anchors are outside the fold assignment (fold -1: scored by the main tower)."""
    rng = np.random.default_rng(seed)
    fit_rows = np.flatnonzero(split != "test")
    assignment = rng.integers(-1, folds, len(fit_rows))
    towers = [embeddings[fit_rows] + 0.05 * rng.normal(size=(len(fit_rows), embeddings.shape[1])) for _ in range(folds)]
    heads = [(rng.normal(size=(len(SEGMENTS), embeddings.shape[1])).astype(np.float32),
              np.zeros(len(SEGMENTS), np.float32)) for _ in range(folds)]
    return FoldEmbeddings(assignment, [faiss_backend.l2_normalise(t.astype(np.float32)) for t in towers],
                          heads)  # type: ignore[arg-type]


def test_selection_picks_linear_for_linear_and_knn_for_clusters_and_drops_noise(tmp_path: Path) -> None:
    features, embeddings, labels, split = synthetic_anchors()
    bundle = load_bundle(build(tmp_path / "b", labels, features, embeddings, split))
    assert bundle.selection is not None
    choice = {c.segment: c for c in bundle.selection.segments}
    # the blend averages the linear model with the others (a step function: boosting helps it)
    assert choice["linear"].scorer in {"logistic_regression", "gradient_boosting", "blend"}
    assert "logistic_regression" in bundle.selection.blend_members
    assert choice["linear"].candidates["logistic_regression"].oos_f1 > choice["linear"].candidates["tower_knn"].oos_f1
    assert choice["cluster"].oos_f1 > 0.95 and choice["cluster"].candidates["tower_knn"].oos_f1 > 0.95
    assert not choice["noise"].shipped and "prior" in choice["noise"].reason
    assert all(choice[s].shipped for s in ("linear", "cluster"))
    # decisions never include an unshipped segment
    scored = bundle.assign_scores(embeddings[:50], features[:50], np.arange(50))
    assert not scored.decisions[:, SEGMENTS.index("noise")].any()
    assert scored.decisions[:, SEGMENTS.index("linear")].any()


@pytest.mark.parametrize("fold_towers", [False, True], ids=["validation-split", "fold-towers"])
def test_test_split_labels_never_shape_thresholds_or_selection(tmp_path: Path, fold_towers: bool) -> None:
    """Poison every label of the test split: thresholds, choices and fitted scorers are unchanged."""
    features, embeddings, labels, split = synthetic_anchors(seed=1)
    poisoned = labels.copy()
    test = split == "test"
    poisoned[test] = np.random.default_rng(9).random((int(test.sum()), len(SEGMENTS))) < 0.5
    assert (poisoned[test] != labels[test]).any()
    by_fold = synthetic_fold_towers(embeddings, split) if fold_towers else None
    clean = build(tmp_path / "clean", labels, features, embeddings, split, by_fold)
    dirty = build(tmp_path / "dirty", poisoned, features, embeddings, split, by_fold)
    selection = load_bundle(clean).selection
    assert selection is not None
    expected = int((split != "test").sum() if fold_towers else (split == "validation").sum())
    assert {selection.segments[0].candidates[s].rows for s in ("tower_knn", "tower_head")} == {expected}
    assert json.loads((clean / "selection.json").read_text()) == json.loads((dirty / "selection.json").read_text())
    a, b = json.loads((clean / "assignment.json").read_text()), json.loads((dirty / "assignment.json").read_text())
    assert a["thresholds"] == b["thresholds"]
    with np.load(clean / "scorers" / "state.npz") as left, np.load(dirty / "scorers" / "state.npz") as right:
        assert set(left.files) == set(right.files)
        for name in left.files:
            np.testing.assert_array_equal(left[name], right[name])
    for model in (clean / "scorers" / "gradient_boosting").glob("*.txt"):
        assert model.read_text() == (dirty / "scorers" / "gradient_boosting" / model.name).read_text()


def test_shipping_switch_overrides_the_prior_rule(tmp_path: Path) -> None:
    features, embeddings, labels, split = synthetic_anchors()
    one = load_bundle(build(tmp_path / "one", labels, features, embeddings, split, ship_segments=["noise"],
                            scorers=["tower_knn", "logistic_regression"]))
    every = load_bundle(build(tmp_path / "all", labels, features, embeddings, split, ship_without_signal=True,
                              scorers=["tower_knn"]))
    assert one.selection is not None and every.selection is not None
    assert one.selection.shipped.all() and "shipped by configuration" in one.selection.segments[2].reason
    assert every.selection.shipped.all()


def test_ties_go_to_the_simpler_scorer_and_few_holders_are_not_measured() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((300, 2)) < 0.3
    truth[:, 1] = False
    truth[:3, 1] = True  # 3 holders: below min_positives
    perfect = truth.astype(np.float32)
    rows = np.arange(300)
    oos = {"gradient_boosting": OutOfSample(rows, perfect), "logistic_regression": OutOfSample(rows, perfect)}
    selection = select(oos, truth, ["a", "b"], min_positives=5)
    assert selection.segments[0].scorer == "logistic_regression"
    assert selection.segments[1].scorer is None and not selection.segments[1].shipped


def test_cross_validated_f1_does_not_grade_its_own_threshold() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random(400) < 0.3
    noise = rng.random(400).astype(np.float32)
    threshold, f1 = cross_validated_f1(noise, truth, folds=5)
    best_in_sample = max(2 * (truth & (noise >= t)).sum() / ((noise >= t).sum() + truth.sum())
                         for t in np.unique(noise))
    assert f1 < best_in_sample
    assert 0.0 <= threshold <= 1.0


def test_fold_towers_score_the_tower_on_every_non_test_anchor() -> None:
    """Each non-test anchor is scored in its own fold tower's space, against every other
    non-test anchor (never a test anchor, never itself); test anchors get no score."""
    from index_builder.scorers import AnchorData, ScorerParams
    from index_builder.tower_crossfit import out_of_sample

    features, embeddings, labels, split = synthetic_anchors(seed=2)
    data = AnchorData(faiss_backend.l2_normalise(embeddings), features, sp.csr_matrix(labels), split)
    by_fold = synthetic_fold_towers(embeddings, split)
    params = ScorerParams(k=15, aggregation="mean")
    knn = out_of_sample("tower_knn", data, params, by_fold)
    head = out_of_sample("tower_head", data, params, by_fold, head=None)
    assert knn is not None and head is None  # no main head for the anchors outside the assignment
    np.testing.assert_array_equal(knn.rows, np.flatnonzero(split != "test"))
    # the scores do not depend on test labels, and the tower's own label never votes
    poisoned = labels.copy()
    poisoned[split == "test"] = ~poisoned[split == "test"]
    again = out_of_sample("tower_knn", AnchorData(data.embeddings, features, sp.csr_matrix(poisoned), split), params,
                          by_fold)
    assert again is not None
    np.testing.assert_array_equal(knn.scores, again.scores)
    fit_rows = np.flatnonzero(split != "test")
    lonely = FoldEmbeddings(np.zeros(len(fit_rows), np.int64), [np.eye(len(fit_rows), dtype=np.float32)],
                            [None])  # orthogonal anchors: self would be the only non-zero neighbour
    mean = out_of_sample("tower_knn", data, ScorerParams(k=1, aggregation="mean"), lonely)
    assert mean is not None and mean.scores.shape == (len(fit_rows), len(SEGMENTS))
    assert not np.array_equal(mean.scores, labels[fit_rows].astype(np.float32))  # self would copy its own labels


def test_flagging_nearly_everyone_does_not_beat_the_prior() -> None:
    """A scorer that flags all but a few non-holders edges the prior's F1 with a near-zero
    paired error; the gate still needs the gain to exceed the prior's own error."""
    from index_builder.selection import beats_prior

    truth = np.zeros(400, dtype=bool)
    truth[:80] = True
    predicted = np.ones(400, dtype=bool)
    predicted[-6:] = False  # six non-holders left out: F1 0.339 vs prior 0.333
    gain, error = beats_prior(predicted, truth)
    assert 0 < gain < error
    signal = truth | (np.arange(400) % 10 == 0)  # a real scorer: every holder, few false positives
    gain, error = beats_prior(signal, truth)
    assert gain > error


def test_blend_scores_are_the_mean_of_members_scored_on_every_non_test_anchor() -> None:
    from index_builder.scorers import blend_out_of_sample

    rng = np.random.default_rng(4)
    fit_rows = np.arange(0, 200, 2)
    a, b = rng.random((100, 3)).astype(np.float32), rng.random((100, 3)).astype(np.float32)
    shuffled = rng.permutation(100)
    oos = {"logistic_regression": OutOfSample(fit_rows, a),
           "gradient_boosting": OutOfSample(fit_rows[shuffled], b[shuffled]),  # same rows, another order
           "tower_knn": OutOfSample(fit_rows[:30], a[:30])}  # validation rows only: not a member
    blended = blend_out_of_sample(oos, fit_rows)
    assert blended is not None
    members, scores = blended
    assert members == ["logistic_regression", "gradient_boosting"]
    np.testing.assert_array_equal(scores.rows, fit_rows)
    np.testing.assert_allclose(scores.scores, (a + b) / 2, rtol=1e-6)
    assert blend_out_of_sample({"tower_knn": oos["tower_knn"], "logistic_regression": oos["logistic_regression"]},
                               fit_rows) is None


def test_blend_is_chosen_where_it_beats_its_members_by_more_than_a_standard_error() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    truth = rng.random((n, 2)) < 0.3
    signal = truth.astype(np.float32)
    rows = np.arange(n)
    # two scorers with independent errors: their mean is clearly better than either alone
    noisy = {name: np.clip(signal + rng.normal(0, 0.6, (n, 2)), 0, 1).astype(np.float32)
             for name in ("logistic_regression", "gradient_boosting")}
    # segment 1: the blend is the logistic scorer itself (gbm identical too): no gain, no blend
    for scores in noisy.values():
        scores[:, 1] = noisy["logistic_regression"][:, 1]
    blend = (noisy["logistic_regression"] + noisy["gradient_boosting"]) / 2
    oos = {name: OutOfSample(rows, s) for name, s in noisy.items()} | {"blend": OutOfSample(rows, blend)}
    selection = select(oos, truth, ["mixed", "same"], blend_members=["logistic_regression", "gradient_boosting"])
    assert selection.segments[0].scorer == "blend"
    assert selection.segments[0].oos_f1 > max(selection.segments[0].candidates[n].oos_f1 for n in noisy) + 0.02
    # segment 1: the blend is no better than logistic regression there, and no worse: the scorer
    # that is best over all segments (the blend) keeps it -- ties go to the base-wide best
    assert pooled_best(["logistic_regression", "gradient_boosting", "blend"],
                       [(c.candidates, ["logistic_regression", "gradient_boosting", "blend"])
                        for c in selection.segments], 0.002) == "blend"
    assert selection.segments[1].scorer == "blend"
    assert selection.blend_members == ["logistic_regression", "gradient_boosting"]
    assert selection.scorers_in_use() == {"logistic_regression", "gradient_boosting"}


def test_each_segment_starts_from_the_scorer_best_over_all_segments() -> None:
    """A simpler scorer takes a segment from the base-wide best only by winning there by more
    than one standard error; where they are level, the base-wide best keeps it."""
    rng = np.random.default_rng(11)
    n, segments = 2000, 6
    truth = rng.random((n, segments)) < 0.3
    signal = truth.astype(np.float32)
    rows = np.arange(n)
    # gradient boosting is clearly better on segments 0-4; on segment 5 logistic regression is
    gbm = np.clip(signal + rng.normal(0, 0.45, (n, segments)), 0, 1).astype(np.float32)
    logistic = np.clip(signal + rng.normal(0, 0.9, (n, segments)), 0, 1).astype(np.float32)
    logistic[:, 5] = np.clip(signal[:, 5] + rng.normal(0, 0.2, n), 0, 1)
    oos = {"logistic_regression": OutOfSample(rows, logistic), "gradient_boosting": OutOfSample(rows, gbm)}
    selection = select(oos, truth, [f"s{j}" for j in range(segments)])
    assert [c.scorer for c in selection.segments[:5]] == ["gradient_boosting"] * 5
    assert selection.segments[5].scorer == "logistic_regression"
    # level on one segment: the base-wide best keeps it, even though logistic regression is simpler
    level = {"logistic_regression": OutOfSample(rows, np.column_stack([logistic[:, :5], gbm[:, 5]])),
             "gradient_boosting": OutOfSample(rows, gbm)}
    assert select(level, truth, [f"s{j}" for j in range(segments)]).segments[5].scorer == "gradient_boosting"


def test_blend_serving_is_the_mean_of_its_members_in_batch_and_one_by_one(tmp_path: Path) -> None:
    """The stored blend scores its columns as the mean of its members', whatever the batch size."""
    features, embeddings, labels, split = synthetic_anchors(seed=2)
    path = build(tmp_path / "b", labels, features, embeddings, split,
                 scorers=["logistic_regression", "tower_knn", "gradient_boosting", "blend"])
    bundle = load_bundle(path)
    assert bundle.selection is not None
    members = ["logistic_regression", "gradient_boosting"]
    assert bundle.selection.blend_members == members
    # make the blend the choice of two segments whatever the data said, to exercise serving
    for choice in bundle.selection.segments[:2]:
        choice.scorer, choice.shipped = "blend", True
    rows = np.arange(40)
    batch = bundle.assign_scores(embeddings[rows], features[rows], rows)
    alone = [bundle.method_scores(m, embeddings[rows], features[rows], np.arange(2), rows) for m in members]
    np.testing.assert_allclose(batch.scores[:, :2], (alone[0] + alone[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(bundle.method_scores("blend", embeddings[rows], features[rows], exclude_anchor_rows=rows)
                               [:, :2], batch.scores[:, :2], atol=1e-6)
    for i in rows[:8]:
        one = bundle.assign_scores(embeddings[i:i + 1], features[i:i + 1], rows[i:i + 1])
        np.testing.assert_allclose(one.scores, batch.scores[i:i + 1], atol=1e-5)
        np.testing.assert_array_equal(one.decisions, batch.decisions[i:i + 1])


def test_a_scorer_measured_on_fewer_anchors_competes_only_where_none_covers_them_all() -> None:
    """The tower on its validation split (a subset) cannot take a segment from a scorer measured
    on every non-test anchor, however good it looks on its few rows; alone, it is chosen."""
    rng = np.random.default_rng(8)
    truth = rng.random((600, 1)) < 0.3
    rows = np.arange(600)
    validation = np.sort(rng.choice(600, 90, replace=False))
    weak = np.clip(truth + rng.normal(0, 0.8, truth.shape), 0, 1).astype(np.float32)
    oos = {"logistic_regression": OutOfSample(rows, weak),
           "tower_head": OutOfSample(validation, truth[validation].astype(np.float32))}  # perfect on its rows
    selection = select(oos, truth, ["s"])
    assert selection.segments[0].candidates["tower_head"].oos_f1 == 1.0
    assert selection.segments[0].scorer == "logistic_regression"
    alone = select({"tower_head": oos["tower_head"]}, truth, ["s"])
    assert alone.segments[0].scorer == "tower_head"
