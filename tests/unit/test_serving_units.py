"""Unit tests of the serving pieces that need no model, store or server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from lookalike.artifacts import write_manifest
from lookalike.contract import FeatureContract, FeatureSpec
from lookalike.errors import ArtifactError, ConfigError
from serving.batching import MicroBatcher
from serving.config import ServingConfig, load_serving_config
from serving.core import (
    VersionMismatchError,
    _mean_pairwise_cosine,
    check_consistency,
    resolve_bundle_dir,
    seed_distinctiveness,
)
from serving.models import AssignRequest, ExpandRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "serving" / "example_request.json"


@pytest.mark.unit
def test_config_from_env_overrides_file(tmp_path: Path) -> None:
    config_file = tmp_path / "serving.yaml"
    config_file.write_text("model_alias: candidate\nmax_ids_per_request: 50\nexpand:\n  min_seed_matched: 3\n")
    config = load_serving_config({
        "LOOKALIKE_SERVING_CONFIG": str(config_file),
        "LOOKALIKE_MAX_IDS_PER_REQUEST": "20",
        "LOOKALIKE_API_TOKEN": "s3cret",
        "LOOKALIKE_INDEX_DIR": str(tmp_path),
    })
    assert config.model_alias == "candidate"
    assert config.max_ids_per_request == 20
    assert config.expand.min_seed_matched == 3
    assert config.index_dir == tmp_path
    assert config.describe()["auth"] == "bearer"
    assert "s3cret" not in json.dumps(config.describe())
    assert (config.verify_bundle, config.intra_op_threads) == ("fast", 1)  # the service's defaults
    strict = load_serving_config({"LOOKALIKE_VERIFY_BUNDLE": "full", "LOOKALIKE_INTRA_OP_THREADS": "0"})
    assert (strict.verify_bundle, strict.intra_op_threads) == ("full", 0)
    with pytest.raises(ConfigError, match="verify_bundle"):
        load_serving_config({"LOOKALIKE_VERIFY_BUNDLE": "sometimes"})


@pytest.mark.unit
def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_ids_per_request"):
        load_serving_config({"LOOKALIKE_MAX_IDS_PER_REQUEST": "many"})
    with pytest.raises(ConfigError, match="ServingConfig.k: Input should be greater than or equal to 1"):
        ServingConfig(k=0)
    with pytest.raises(ConfigError, match="online_store"):
        load_serving_config({"LOOKALIKE_ONLINE_STORE": "memcached"})


@pytest.mark.unit
def test_example_request_validates_against_the_models() -> None:
    example = json.loads(EXAMPLE.read_text())
    assert AssignRequest(**example["assign"]).customer_ids
    ExpandRequest(**example["expand"])
    ExpandRequest(**example["expand_by_ids"])


@pytest.mark.unit
@pytest.mark.parametrize("payload, message", [
    ({"seed_segment": "S01", "seed_customer_ids": [1]}, "exactly one"),
    ({}, "exactly one"),
    ({"seed_segment": "S01", "target_size": 3, "min_similarity": 0.5}, "not both"),
    ({"seed_segment": "S01", "population": "everyone"}, "population"),
    ({"seed_customer_ids": ["1"]}, "integer"),
])
def test_expand_request_rejects_bad_input_without_echoing_it(payload: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExpandRequest(**payload)
    assert message in str(info.value)
    assert "input_value" not in str(info.value)


@pytest.mark.unit
def test_assign_request_is_strict() -> None:
    for bad in ({"customer_ids": []}, {"customer_ids": ["7"]}, {"customer_ids": [1.5]}, {"ids": [1]}):
        with pytest.raises(ValidationError):
            AssignRequest(**bad)


@pytest.mark.unit
def test_mean_pairwise_cosine_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    centroid, mean = _mean_pairwise_cosine(emb)
    sims = emb @ emb.T
    expected = (sims.sum() - np.trace(sims)) / (50 * 49)
    assert mean == pytest.approx(expected, abs=1e-5)
    assert np.linalg.norm(centroid) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.unit
def test_seed_distinctiveness_is_about_one_for_random_seeds_of_any_size() -> None:
    rng = np.random.default_rng(3)
    population = rng.normal(size=(5_000, 16))
    population[:300] += 0.5  # one real audience, shifted in every direction
    population /= np.linalg.norm(population, axis=1, keepdims=True)
    mean = population.mean(axis=0)
    variance = float((population**2).sum(axis=1).mean() - mean @ mean)
    for size in (10, 100, 2_000):
        ratios = [seed_distinctiveness(population[rng.choice(5_000, size, replace=False)], mean, variance, 5_000)
                  for _ in range(20)]
        assert 0.6 < float(np.mean(ratios)) < 1.5, (size, ratios)
    assert seed_distinctiveness(population[:300], mean, variance, 5_000) > 20
    assert seed_distinctiveness(population, mean, variance, 5_000) == 0.0  # the population itself


@pytest.mark.unit
def test_micro_batcher_merges_concurrent_requests_and_keeps_order() -> None:
    calls: list[list[int]] = []

    def process(ids: list[int]) -> tuple[str, list[int]]:
        calls.append(ids)
        return "v1", [i * 10 for i in ids]

    async def main() -> list[tuple[str, list[int]]]:
        batcher: MicroBatcher[str, int] = MicroBatcher(process, max_batch_ids=100, max_wait_ms=20)
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(5)))

    results = asyncio.run(main())
    assert results == [("v1", [i * 10, (i + 100) * 10]) for i in range(5)]
    assert len(calls) < 5  # at least two requests shared a batch


@pytest.mark.unit
def test_micro_batcher_hands_errors_to_every_caller() -> None:
    def process(ids: list[int]) -> tuple[str, list[int]]:
        raise RuntimeError("store down")

    async def main() -> list[object]:
        batcher: MicroBatcher[str, int] = MicroBatcher(process, max_wait_ms=5)
        return await asyncio.gather(*(batcher.submit([i]) for i in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def _bundle(root: Path, name: str, model_version: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "index.faiss").write_bytes(b"x")
    write_manifest(path, "index_bundle", model_name="lookalike-two-tower", model_version=model_version,
                   index_version=name, feature_service="svc", feature_service_version="1", dim=4)
    return path


@pytest.mark.unit
def test_resolve_bundle_picks_the_bundle_of_the_model_version(tmp_path: Path) -> None:
    _bundle(tmp_path, "2026-01-01", "1")
    wanted = _bundle(tmp_path, "2026-01-08", "2")
    _bundle(tmp_path, "2026-01-15", "3")
    assert resolve_bundle_dir(ServingConfig(index_root=tmp_path), "2") == wanted
    with pytest.raises(ArtifactError, match="version 9"):
        resolve_bundle_dir(ServingConfig(index_root=tmp_path), "9")


def _contract(version: str, columns: tuple[str, ...] = ("a", "b")) -> FeatureContract:
    return FeatureContract("svc", version, tuple(FeatureSpec("v", c, "Float64", "numeric") for c in columns))


@pytest.mark.unit
def test_consistency_check_names_every_disagreement(tmp_path: Path) -> None:
    config = ServingConfig()
    encoder = SimpleNamespace(contract=_contract("1"), embedding_dim=4)
    info = SimpleNamespace(version="2")
    manifest = {"model_name": config.model_name, "model_version": "2", "feature_service": "svc",
                "feature_service_version": "1", "dim": 4}
    check_consistency(config, encoder, info, tmp_path, manifest, _contract("1"))  # all agree

    with pytest.raises(VersionMismatchError) as info_err:
        check_consistency(config, encoder, SimpleNamespace(version="3"), tmp_path,
                          {**manifest, "dim": 8}, _contract("2"))
    message = str(info_err.value)
    assert "model version 2" in message and "version 3" in message
    assert "v2" in message and "dim 8" in message
    with pytest.raises(VersionMismatchError, match="without a version bump"):
        check_consistency(config, encoder, info, tmp_path, manifest, _contract("1", ("a", "c")))
