"""Shared test fixtures.

Stage fixtures live in ``tests/fixtures/<stage>.py`` (registered below) and build on each
other: raw data -> feature tables -> applied Feast repo -> snapshot -> model -> index.
They are session-scoped and small (2,000 customers) so the whole chain runs once per
test session on the real components: Spark local[2], the Feast CLI, MLflow on SQLite.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lookalike.local_redis import LocalRedis

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.feast",
    "tests.fixtures.model",
    "tests.fixtures.index",
    "tests.fixtures.object_store",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# Spark's Python workers run pandas/torch UDFs (weekly --engine spark): the venv's interpreter.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


class RedisServer(LocalRedis):
    """The session's real ``redis-server``; tests stop and restart it on the same port."""


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_asgi_app() -> Any:
    """The BentoML service as one ASGI app per session: BentoML registers its Prometheus
    metrics per app, so a second app in the same process fails ("Duplicated timeseries").
    Test modules enter it with ``TestClient`` under their own environment; each entry starts
    a fresh service instance."""
    from serving.service import LookalikeService

    return LookalikeService.to_asgi()


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    from spark_jobs.session import get_spark

    session = get_spark("local[2]")
    yield session
    session.stop()
