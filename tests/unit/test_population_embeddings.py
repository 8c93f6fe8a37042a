"""Population embeddings in the bundle (weekly job -> /expand), and /expand over them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.bundle import AssignmentSpec, load_bundle, write_bundle
from index_builder.population_embeddings import add_population, load_population
from lookalike.errors import ArtifactError, DataValidationError
from serving.config import ServingConfig
from serving.core import LookalikeRuntime, SeedRejectedError

pytestmark = pytest.mark.unit
DIM = 16


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    group = rng.integers(0, 8, n)
    return (centres[group] + 0.2 * rng.normal(size=(n, DIM))).astype(np.float32), group


def bundle_with_population(tmp_path, n_anchors: int = 300, n_customers: int = 3000):  # type: ignore[no-untyped-def]
    anchors, _ = clustered(n_anchors, 1)
    customers, group = clustered(n_customers, 2)
    built = faiss_backend.build_index(anchors, faiss_backend.IndexParams(type="flat"))
    spec = AssignmentSpec(k=5, aggregation="weighted", segments=["a", "b"], thresholds=[0.5, 0.5])
    labels = sp.csr_matrix((np.random.default_rng(3).random((n_anchors, 2)) < 0.3).astype(np.uint8))
    anchor_ids = np.arange(n_anchors, dtype=np.int64) + 1_000_000
    write_bundle(tmp_path / "b", built, anchor_ids, labels, spec, index_version="v", model_version="1",
                 model_name="m", feature_service="svc", feature_service_version="1")
    customer_ids = np.arange(n_customers, dtype=np.int64)[::-1] + 1  # unsorted on purpose
    ids = np.concatenate([anchor_ids, customer_ids])
    vectors = np.concatenate([anchors, customers])
    opt_in = np.concatenate([np.ones(n_anchors, bool), np.zeros(n_customers, bool)])
    manifest = add_population(tmp_path / "b", ids, vectors, opt_in)
    return tmp_path / "b", manifest, customer_ids, group


def test_population_round_trip_is_memory_mapped_sorted_and_hashed(tmp_path) -> None:
    path, manifest, customer_ids, _ = bundle_with_population(tmp_path)
    assert manifest["population"]["customers"] == 3300 and manifest["population"]["opt_in"] == 300
    bundle = load_bundle(path)  # content hash re-stamped over the population files
    assert bundle.manifest["population"] == manifest["population"]
    population = load_population(path)
    assert population is not None and isinstance(population.embeddings, np.memmap)
    assert np.all(np.diff(population.ids) > 0)
    assert np.allclose(np.linalg.norm(population.embeddings, axis=1), 1.0, atol=1e-5)
    assert population.rows_of([1, 999_999_999]).tolist()[1] == -1
    assert population.ids[population.rows_of([1])[0]] == 1 and not population.opt_in[population.rows_of([1])[0]]
    # statistics recorded at write time = one pass over the embeddings (what start-up skips)
    from serving.core import population_from_arrays

    assert population.sums is not None
    recorded = population_from_arrays(population.ids, population.embeddings, population.opt_in, "b", population.sums)
    computed = population_from_arrays(population.ids, population.embeddings, population.opt_in, "b")
    assert np.allclose(recorded.mean, computed.mean) and np.allclose(recorded.centroid, computed.centroid)
    assert recorded.variance == pytest.approx(computed.variance) and recorded.mean_similarity == pytest.approx(
        computed.mean_similarity)
    with pytest.raises(DataValidationError, match="duplicate"):
        add_population(path, np.array([1, 1]), np.ones((2, DIM), np.float32), np.zeros(2, bool))
    (path / "population_opt_in.npy").unlink()
    with pytest.raises(ArtifactError, match="incomplete population"):
        load_population(path)


class FakeReader:
    """The online store's answer at request time: who is suppressed now."""

    def __init__(self, suppressed: set[int]) -> None:
        self.now_suppressed = suppressed
        self.calls: list[int] = []

    def suppressed(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(len(ids))
        return np.isin(np.asarray(ids), list(self.now_suppressed))


def runtime_over(path, reader: FakeReader) -> LookalikeRuntime:  # type: ignore[no-untyped-def]
    bundle = load_bundle(path)
    config = ServingConfig()
    config.expand.min_distinctiveness = 1.5
    metadata = {"model_name": "m", "model_version": "1", "index_version": "v", "feature_service": "svc",
                "feature_service_version": "1"}
    encoder = SimpleNamespace(embed=lambda columns: pytest.fail("/expand must not embed anyone"))
    return LookalikeRuntime(config=config, encoder=encoder, model_info=None, bundle=bundle, store=None,
                            reader=reader, contract=None, metadata=metadata)


def test_expand_ranks_the_bundle_population_and_rechecks_suppression_at_request_time(tmp_path) -> None:
    path, _, customer_ids, group = bundle_with_population(tmp_path)
    seed = customer_ids[group == 3][:40]
    reader = FakeReader(set())
    runtime = runtime_over(path, reader)
    before = runtime.expand(seed_ids=seed.tolist(), target_size=200)
    assert runtime.population().source == "index bundle"
    assert len(before.customers) == 200 and before.seed.matched == 40
    returned = [c.customer_id for c in before.customers]
    assert not set(returned) & set(seed.tolist()) and min(returned) >= 1 and max(returned) <= 3000
    scores = [c.score for c in before.customers]
    assert scores == sorted(scores, reverse=True)
    # customers who objected since the weekly run: gone from the answer, refilled from the ranking
    objectors = set(returned[:30])
    reader.now_suppressed = objectors
    after = runtime.expand(seed_ids=seed.tolist(), target_size=200)
    again = [c.customer_id for c in after.customers]
    assert len(again) == 200 and not set(again) & objectors
    assert again[:170] == returned[30:200]
    reader.now_suppressed = {int(seed[0])}  # a seed member who objected: dropped from the seed
    assert runtime.expand(seed_ids=seed.tolist(), target_size=10).seed.suppressed == 1
    unknown = runtime.expand(seed_ids=[*seed.tolist(), 555_555_555], target_size=10)
    assert unknown.seed.unknown == 1
    with pytest.raises(SeedRejectedError, match="seed too small"):
        runtime.expand(seed_ids=[555_555_555], target_size=10)


def test_expand_http_body_is_the_documented_expand_response(tmp_path) -> None:
    """The pre-serialised /expand body parses as ExpandResponse, row for row (the OpenAPI schema)."""
    import json

    from serving.models import ExpandResponse
    from serving.responses import expand_json

    path, _, customer_ids, group = bundle_with_population(tmp_path)
    runtime = runtime_over(path, FakeReader(set()))
    result = runtime.expand(seed_ids=customer_ids[group == 3][:40].tolist(), target_size=500)
    body = expand_json(runtime.versions, result.seed, result.population, result.population_size,
                       result.customer_ids, result.scores)
    parsed = ExpandResponse.model_validate_json(body)
    assert [c.model_dump() for c in parsed.customers] == [c.model_dump() for c in result.customers]
    assert parsed.seed == result.seed and parsed.versions == runtime.versions and len(parsed.customers) == 500
    first = json.loads(body)["customers"][0]
    assert first == {"customer_id": int(result.customer_ids[0]), "score": round(float(result.scores[0]), 6)}
    empty = expand_json(runtime.versions, result.seed, "all", 0, np.zeros(0, np.int64), np.zeros(0))
    assert ExpandResponse.model_validate_json(empty).customers == []


def test_population_streamed_from_shards_equals_the_in_memory_one(tmp_path) -> None:
    """The Spark engine's path: anchors in memory, customers from id-ordered Parquet shards
    streamed into the memory map; same files and manifest population as one in-memory write."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from index_builder.population_embeddings import add_anchors_and_customers
    from index_builder.spark_engine import shard_customer_ids, shard_embeddings
    from lookalike.artifacts import sha256_file

    path, manifest, customer_ids, _ = bundle_with_population(tmp_path)
    anchor_vectors, _ = clustered(300, 1)  # the raw (unnormalised) vectors bundle_with_population wrote
    customer_vectors, _ = clustered(3000, 2)
    anchor_ids = np.arange(300, dtype=np.int64) + 1_000_000
    ascending = np.argsort(customer_ids)  # Spark's shards are sorted by id
    customer_ids, customer_vectors = customer_ids[ascending], customer_vectors[ascending]
    shards = tmp_path / "shards"
    shards.mkdir()
    for part, rows in enumerate(np.array_split(np.arange(len(customer_ids)), 4)):  # what Spark's writer lays out
        embedding = pa.array(list(customer_vectors[rows]), type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"customer_id": customer_ids[rows], "embedding": embedding}),
                       shards / f"part-{part:05d}-x-c000.zstd.parquet")
    assert np.array_equal(shard_customer_ids(shards), customer_ids)

    streamed = tmp_path / "streamed"
    shutil.copytree(path, streamed)
    for name in ("population_ids.npy", "population_embeddings.npy", "population_opt_in.npy"):
        (streamed / name).unlink()
    restamped = add_anchors_and_customers(streamed, anchor_ids, anchor_vectors, shard_customer_ids(shards),
                                          shard_embeddings(shards, batch_rows=500))
    for name in ("population_ids.npy", "population_embeddings.npy", "population_opt_in.npy"):
        assert sha256_file(streamed / name) == sha256_file(path / name)
    assert restamped["population"] == manifest["population"]
    assert load_bundle(streamed).manifest["content_hash"] == manifest["content_hash"]
    assert not list(streamed.glob(".*.tmp"))
    # a shard that lost rows is refused, never written as zeros
    (shards / "part-00003-x-c000.zstd.parquet").unlink()
    with pytest.raises(DataValidationError, match="have no embedding"):
        add_anchors_and_customers(streamed, anchor_ids, anchor_vectors, customer_ids, shard_embeddings(shards))
