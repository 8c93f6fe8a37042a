"""The fast loader and the direct online reader on Redis Cluster and on TLS (``rediss://``).

A real three-node ``redis-server`` cluster and a real TLS ``redis-server`` on loopback,
started here. On each: Feast's own writer fills the store, then the fast loader writes
the same rows again into an emptied store, and the two are compared byte for byte; the
direct reader (cluster-aware) must return exactly what Feast's reader returns.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from lookalike.contract import load_contract
from lookalike.feast_utils import open_store
from lookalike.local_redis import LocalRedis, LocalRedisCluster
from lookalike.materialize import MaterializeConfig, run
from lookalike.online import OnlineFeatureReader
from lookalike.redis_target import RedisTarget
from tests.fixtures.data import RUN_DATE
from tests.fixtures.feast import SYNTHETIC_CUSTOMERS, apply_repo

pytestmark = pytest.mark.integration
SERVICE = "lookalike_legit_v1"
IDS = [*range(1, SYNTHETIC_CUSTOMERS + 1), 10_000_000]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    nodes = LocalRedisCluster(tmp_path_factory.mktemp("redis_cluster"), size=3).start()
    yield nodes
    nodes.stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRedis, Path]]:
    workdir = tmp_path_factory.mktemp("redis_tls")
    cert, key = _self_signed(workdir)
    server = LocalRedis(workdir)
    # Plain port off, TLS on the server's port (redis-server takes the last --port given).
    server.extra_args = ["--port", "0", "--tls-port", str(server.port), "--tls-cert-file", str(cert),
                         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    yield server, cert
    server.stop()


def _all_hashes(clients: list[redis.Redis]) -> dict[bytes, dict[bytes, bytes]]:
    # Feast's entity hashes; the materialization progress mark is lookalike's own key.
    return {key: client.hgetall(key) for client in clients for key in client.scan_iter(count=1000)
            if not key.startswith(b"lookalike:")}


def _fast_equals_feast_and_reads_back(repos: tuple[Path, Path], clients: list[redis.Redis]) -> None:
    """``repos``: two registries on the same store (each starts its own first materialization)."""
    feast_repo, repo = repos
    assert run(MaterializeConfig(repo=feast_repo, end_date=RUN_DATE, engine="feast")).engine == "feast"
    written_by_feast = _all_hashes(clients)
    for client in clients:
        client.flushall()
    report = run(MaterializeConfig(repo=repo, end_date=RUN_DATE, engine="fast", chunk_rows=64))
    assert report.engine == "fast" and {v.view: v.rows for v in report.views}["profile"] == SYNTHETIC_CUSTOMERS
    written_fast = _all_hashes(clients)
    assert len(written_fast) == SYNTHETIC_CUSTOMERS
    assert written_fast == written_by_feast

    store = open_store(repo)
    contract = load_contract(store, SERVICE)
    direct, via_feast = OnlineFeatureReader(store, contract), OnlineFeatureReader(store, contract, engine="feast")
    assert direct.engine == "redis"
    frame, found = direct.read(IDS)
    expected, expected_found = via_feast.read(IDS)
    pd.testing.assert_frame_equal(frame, expected)
    np.testing.assert_array_equal(found, expected_found)
    assert found.tolist() == [True] * SYNTHETIC_CUSTOMERS + [False]
    pd.testing.assert_frame_equal(direct.read_status(IDS), via_feast.read_status(IDS))
    # /expand's request-time suppression check: a script per node-less store, a pipeline on a cluster
    np.testing.assert_array_equal(direct.suppressed(IDS), via_feast.read_status(IDS)["suppressed"].to_numpy(bool))
    single, _ = direct.read([7])
    pd.testing.assert_frame_equal(single, expected.iloc[[6]].reset_index(drop=True))


def _repos(tmp_path: Path, synthetic_repo_dir: Path, connection: str) -> tuple[Path, Path]:
    data_dir = synthetic_repo_dir.parent / "features"
    return (apply_repo(tmp_path / "feast", data_dir, online="redis", redis_connection=connection),
            apply_repo(tmp_path / "fast", data_dir, online="redis", redis_connection=connection))


def test_cluster_fast_load_and_direct_reads_equal_feast(cluster: LocalRedisCluster, synthetic_repo_dir: Path,
                                                        tmp_path: Path) -> None:
    repos = _repos(tmp_path, synthetic_repo_dir, cluster.url)
    assert "redis_type: redis_cluster" in (repos[1] / "feature_store.yaml").read_text()
    assert RedisTarget.from_store(open_store(repos[1])).kind == "redis_cluster"
    clients = [redis.Redis(host="127.0.0.1", port=node.port) for node in cluster.nodes]
    _fast_equals_feast_and_reads_back(repos, clients)
    # rows really are spread over the three primaries by key slot
    assert all(client.dbsize() > SYNTHETIC_CUSTOMERS / 6 for client in clients)


def test_tls_fast_load_and_direct_reads_equal_feast(tls_server: tuple[LocalRedis, Path], synthetic_repo_dir: Path,
                                                    tmp_path: Path) -> None:
    server, cert = tls_server
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
    repos = _repos(tmp_path, synthetic_repo_dir, url)
    assert "ssl=true" in (repos[1] / "feature_store.yaml").read_text()
    client = redis.Redis(host="127.0.0.1", port=server.port, ssl=True, ssl_ca_certs=str(cert))
    _fast_equals_feast_and_reads_back(repos, [client])
    with pytest.raises(redis.ConnectionError):  # the port speaks TLS only
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()
