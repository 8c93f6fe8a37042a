"""The BentoML service in-process (Starlette TestClient on ``LookalikeService.to_asgi()``).

Real chain: the session's trained model in MLflow, its index bundle and the materialized
Feast repo; only the HTTP transport is in-process. The subprocess/Redis tests live in
``tests/e2e/test_serving_http.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

EXAMPLE_REQUEST = Path(__file__).resolve().parents[2] / "serving" / "example_request.json"
TOKEN = "test-token-not-secret"
UNKNOWN_ID = 987_654_321_012


def serving_env(trained_model: Any, index_bundle_dir: Path, feature_repo: Path, token: str = TOKEN) -> dict[str, str]:
    """Environment variables that point the service at the session's artifacts."""
    tracking_uri = getattr(trained_model, "tracking_uri", None) or trained_model["tracking_uri"]
    model_name = getattr(trained_model, "model_name", None) or getattr(trained_model, "name", None)
    env = {
        "LOOKALIKE_FEATURE_REPO": str(feature_repo),
        "MLFLOW_TRACKING_URI": str(tracking_uri),
        "LOOKALIKE_MODEL_ALIAS": "champion",
        "LOOKALIKE_INDEX_DIR": str(index_bundle_dir),
        "LOOKALIKE_API_TOKEN": token,
    }
    if model_name:
        env["LOOKALIKE_MODEL_NAME"] = str(model_name)
    return env


@dataclass
class Population:
    """Customer ids of each kind, picked from the store and bundle the service really uses."""

    non_opt_in: list[int]
    opt_in_anchor: int
    suppressed: int
    # Segments by number of opt-in holders, largest first. A large segment is not necessarily
    # a distinctive audience for the model, so /expand may refuse some as too generic.
    segments: list[str]


def pick_population(runtime: Any) -> Population:
    from serving.core import known_customer_ids

    ids = known_customer_ids(runtime.store, runtime.reader, runtime.contract).tolist()
    status = runtime.reader.read_status(ids)
    opt_in = np.asarray(status["opt_in"], dtype=object).astype(bool)
    suppressed = np.asarray(status["suppressed"], dtype=object).astype(bool)
    anchors = set(runtime.anchor_ids.tolist())
    non_opt_in = [c for c, o, s in zip(ids, opt_in, suppressed, strict=True) if not o and not s]
    anchor = next(c for c, o, s in zip(ids, opt_in, suppressed, strict=True) if o and not s and c in anchors)
    blocked = next(c for c, s in zip(ids, suppressed, strict=True) if s)
    counts = np.asarray(runtime.anchor_segments.sum(axis=0)).ravel()
    segments = [runtime.segments[j] for j in np.argsort(-counts, kind="stable") if counts[j] >= 10]
    return Population(non_opt_in[:50], anchor, blocked, segments)


@pytest.fixture(scope="module")
def inprocess_client(trained_model: Any, index_bundle_dir: Path, materialized_repo_dir: Path,
                     service_asgi_app: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    env = serving_env(trained_model, index_bundle_dir, materialized_repo_dir)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with TestClient(service_asgi_app) as client:
            client.headers["Authorization"] = f"Bearer {TOKEN}"
            yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def population(inprocess_client: Any) -> Population:
    from _bentoml_sdk.service import get_current_service

    return pick_population(get_current_service().runtime)


@pytest.mark.integration
def test_probes_and_metadata(inprocess_client: Any) -> None:
    assert inprocess_client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert inprocess_client.get("/readyz", headers={"Authorization": ""}).status_code == 200
    meta = inprocess_client.get("/metadata").json()
    for key in ("model_version", "index_version", "feature_service", "feature_service_version",
                "index_created_at", "loaded_at"):
        assert meta[key], key
    assert TOKEN not in json.dumps(meta)


@pytest.mark.integration
def test_auth_required_and_token_never_echoed(inprocess_client: Any) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = inprocess_client.post("/assign", json={"customer_ids": [1]}, headers=headers)
        assert response.status_code == 401
        assert "wrong" not in response.text and TOKEN not in response.text
    assert inprocess_client.get("/metadata", headers={"Authorization": ""}).status_code == 401
    assert inprocess_client.post("/admin/reload", headers={"Authorization": ""}).status_code == 401


@pytest.mark.integration
def test_assign_lookalike_optin_unknown_suppressed(inprocess_client: Any, population: Population) -> None:
    lookalike_id = population.non_opt_in[0]
    ids = [lookalike_id, population.opt_in_anchor, UNKNOWN_ID, population.suppressed, lookalike_id]
    response = inprocess_client.post("/assign", json={"customer_ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert [r["customer_id"] for r in results] == ids
    lookalike, opt_in, unknown, suppressed, repeated = results
    assert lookalike["status"] == "ok" and lookalike["source"] == "lookalike"
    assert lookalike["evidence"]["neighbours"] > 0
    assert -1.0 <= lookalike["evidence"]["mean_similarity"] <= 1.0
    assert all(0.0 <= s["score"] <= 1.0 for s in lookalike["segments"])
    assert repeated == lookalike
    assert opt_in["source"] == "opt_in" and opt_in["segments"]
    assert unknown["status"] == "unknown_customer" and not unknown["segments"]
    assert suppressed["status"] == "suppressed" and not suppressed["segments"]
    # Evidence is aggregate only: no neighbour ids anywhere in the answer.
    assert set(lookalike["evidence"]) == {"neighbours", "mean_similarity"}
    assert body["versions"]["model_version"]


@pytest.mark.integration
def test_assign_matches_batch_scoring(inprocess_client: Any, population: Population) -> None:
    """/assign answers exactly what batch assignment computes for the same customers: each
    segment scored by the scorer the bundle selected for it, same thresholds, same exclusions."""
    from _bentoml_sdk.service import get_current_service

    from index_builder.assign import score_in_chunks

    runtime = get_current_service().runtime
    selection = runtime.bundle.selection
    assert selection is not None
    # the parity covers more than the tower kNN: several scorers are in use
    assert len(selection.columns_by_scorer()) >= 2, selection.chosen
    ids = population.non_opt_in[:40]
    frame, found = runtime.reader.read(ids)
    assert np.asarray(found).all()
    embeddings = runtime.encoder.embed(frame)
    features = runtime.encoder.feature_matrix(frame)
    expected, members = score_in_chunks(runtime.bundle, embeddings, features, 16384,
                                        runtime.bundle.anchor_rows(ids))
    assert not members[:, ~selection.shipped].any()
    results = inprocess_client.post("/assign", json={"customer_ids": ids}).json()["results"]
    assert sum(len(r["segments"]) for r in results) > 0
    for i, result in enumerate(results):
        got = {s["segment"]: s["score"] for s in result["segments"]}
        want = {runtime.segments[j]: float(expected[i, j]) for j in np.flatnonzero(members[i])}
        assert got.keys() == want.keys()
        for segment, score in want.items():
            assert got[segment] == pytest.approx(score, abs=1e-5)
        assert all(s["name"] for s in result["segments"])  # catalog display names
    # segments the blend scores: online answers are the mean of its members' scores
    blend = selection.columns_by_scorer().get("blend")
    if blend is not None:
        rows = runtime.bundle.anchor_rows(ids)
        alone = [runtime.bundle.method_scores(m, embeddings, features, blend, rows) for m in selection.blend_members]
        np.testing.assert_allclose(expected[:, blend], np.mean(alone, axis=0), atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("kwargs, status", [
    ({"content": b"{oops", "headers": {"Content-Type": "application/json"}}, 400),
    ({"json": {"customer_ids": "12"}}, 400),
    ({"json": {"customer_ids": ["12"]}}, 400),
    ({"json": {"customer_ids": []}}, 400),
    ({"json": {"customer_ids": list(range(1001))}}, 422),
])
def test_assign_bad_input(inprocess_client: Any, kwargs: dict[str, Any], status: int) -> None:
    response = inprocess_client.post("/assign", **kwargs)
    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.integration
def test_expand_by_segment_and_by_ids(inprocess_client: Any, population: Population) -> None:
    example = json.loads(EXAMPLE_REQUEST.read_text())
    refused = []
    for segment in population.segments[:5]:
        request = {**example["expand"], "seed_segment": segment, "target_size": 25}
        response = inprocess_client.post("/expand", json=request)
        if response.status_code != 422:
            break
        refused.append(response.json()["error"])
    assert all("too generic" in message for message in refused), refused
    assert response.status_code == 200, (response.text, refused)
    body = response.json()
    customers = body["customers"]
    assert len(customers) == 25
    scores = [c["score"] for c in customers]
    assert scores == sorted(scores, reverse=True)
    assert body["seed"]["matched"] >= 5 and body["seed"]["distinctiveness"] >= 3.0
    assert body["seed"]["mean_intra_seed_similarity"] > body["seed"]["population_mean_similarity"]
    # non_opt_in population: no anchor (opt-in) customer and never a suppressed one
    from _bentoml_sdk.service import get_current_service

    runtime = get_current_service().runtime
    returned = [c["customer_id"] for c in customers]
    assert not set(returned) & set(runtime.anchor_ids.tolist())
    assert population.suppressed not in returned

    # The dial: a similarity floor returns only customers at least that similar.
    floor = scores[len(scores) // 2]
    by_floor = inprocess_client.post("/expand", json={**request, "target_size": None, "min_similarity": floor})
    assert by_floor.status_code == 200, by_floor.text
    assert all(c["score"] >= floor - 1e-6 for c in by_floor.json()["customers"])

    # The same audience given as ids, over everyone: the seed itself is never returned.
    seed = runtime.seed_ids_for_segment(segment)
    by_ids = inprocess_client.post("/expand", json={"seed_customer_ids": seed, "target_size": 10,
                                                     "population": "all"})
    assert by_ids.status_code == 200, by_ids.text
    assert by_ids.json()["seed"]["matched"] == body["seed"]["matched"]
    assert not set(seed) & {c["customer_id"] for c in by_ids.json()["customers"]}


@pytest.mark.integration
def test_expand_rejects_small_unknown_and_generic_seeds(inprocess_client: Any, population: Population) -> None:
    small = inprocess_client.post("/expand", json={"seed_customer_ids": [UNKNOWN_ID, population.non_opt_in[0]]})
    assert small.status_code == 422 and "seed too small" in small.json()["error"]
    # Half the population as seed: its centroid is (almost) the population's.
    from _bentoml_sdk.service import get_current_service

    runtime = get_current_service().runtime
    all_ids = runtime.population().ids.tolist()
    generic = inprocess_client.post("/expand", json={"seed_customer_ids": all_ids[:1000]})
    assert generic.status_code == 422 and "too generic" in generic.json()["error"]
    unknown_segment = inprocess_client.post("/expand", json={"seed_segment": "NOPE"})
    assert unknown_segment.status_code == 422
    both = inprocess_client.post("/expand", json={"seed_segment": "x", "target_size": 3, "min_similarity": 0.1})
    assert both.status_code == 400


@pytest.mark.integration
def test_reload_swaps_runtime(inprocess_client: Any) -> None:
    from _bentoml_sdk.service import get_current_service

    before = get_current_service().runtime
    response = inprocess_client.post("/admin/reload")
    assert response.status_code == 200, response.text
    after = get_current_service().runtime
    assert after is not before
    assert response.json()["current"]["model_version"] == before.versions.model_version
