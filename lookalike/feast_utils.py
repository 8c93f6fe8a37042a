"""Opening, preparing and applying the Feast feature repo through Feast's own CLI and API.

``prepare_repo`` copies ``feature_repo/`` to a working directory with the chosen
online/offline store (the variants live in ``infra/``), ``feast_apply`` runs the real
``feast apply`` in a subprocess with the data directory in the environment, and
``open_store`` returns a ``feast.FeatureStore`` on an applied repo with clear errors.
``write_synthetic_feature_tables`` writes feature tables that match the applied views'
schemas (tests and benchmarks, when the Spark jobs' output is not what is being tested).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.errors import ConfigError, LookalikeError
from lookalike.settings import ENV_DATA_DIR, ENV_REDIS_URL

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = PROJECT_ROOT / "feature_repo"
INFRA_DIR = PROJECT_ROOT / "infra"
ONLINE_STORES = ("sqlite", "redis")
OFFLINE_STORES = ("file", "spark")


class FeastCommandError(LookalikeError):
    """A ``feast`` CLI command failed; the message carries its last output lines."""


def feast_executable() -> str:
    """The ``feast`` script of the running interpreter's environment (not whatever is on PATH)."""
    beside = Path(sys.executable).with_name("feast")
    if beside.exists():
        return str(beside)
    found = shutil.which("feast")
    if found is None:
        raise FeastCommandError("the `feast` command is not installed in this environment")
    return found


def _store_yaml_text(online: str, offline: str, redis_connection: str | None, source_yaml: Path) -> str:
    if online not in ONLINE_STORES:
        raise ConfigError(f"online store must be one of {ONLINE_STORES}, got {online!r}")
    if offline not in OFFLINE_STORES:
        raise ConfigError(f"offline store must be one of {OFFLINE_STORES}, got {offline!r}")
    if offline == "spark":
        text = (INFRA_DIR / "feature_store.spark.yaml").read_text()
        if online == "sqlite":
            text = text.replace(
                'online_store:\n  type: redis\n  connection_string: "${LOOKALIKE_REDIS_URL}"',
                "online_store:\n  type: sqlite\n  path: data/online_store.db",
            )
    elif online == "redis":
        text = (INFRA_DIR / "feature_store.redis.yaml").read_text()
    else:
        text = source_yaml.read_text()
    if online == "redis":
        text = _with_redis_connection(text, redis_connection or os.environ.get(ENV_REDIS_URL))
    return text


def _with_redis_connection(text: str, connection: str | None) -> str:
    """Write ``connection`` (Feast's format or a redis[s][+cluster|+sentinel]:// URL) into the
    yaml as Feast's ``connection_string`` / ``redis_type`` / ``sentinel_master``. Without one,
    or with Feast's format in the environment, ``${LOOKALIKE_REDIS_URL}`` stays for Feast to expand."""
    from lookalike.redis_target import RedisTarget, is_url

    placeholder = f'connection_string: "${{{ENV_REDIS_URL}}}"'
    if not connection or (connection == os.environ.get(ENV_REDIS_URL) and not is_url(connection)):
        return text
    if not is_url(connection):
        return text.replace("${" + ENV_REDIS_URL + "}", connection)
    rendered = RedisTarget.parse(connection).feast_config()
    lines = [f"connection_string: {json.dumps(rendered.pop('connection_string'))}"]
    lines += [f"{key}: {value}" for key, value in rendered.items()]
    return text.replace(placeholder, "\n  ".join(lines))


def prepare_repo(
    src: str | Path = DEFAULT_REPO,
    dst: str | Path = "feature_repo_work",
    *,
    online: str = "sqlite",
    offline: str = "file",
    redis_connection: str | None = None,
) -> Path:
    """Copy the feature repo definitions to ``dst`` with the chosen store configuration.

    ``redis_connection`` (Feast format ``host:port[,db=N]``) is written into the copy; when
    omitted the copy keeps ``${LOOKALIKE_REDIS_URL}``, expanded by Feast at load time.
    Registry and online-store files (``data/``) are not copied: apply the copy afresh.
    """
    src, dst = Path(src), Path(dst)
    if not (src / "feature_store.yaml").is_file():
        raise ConfigError(f"{src} is not a Feast repo (no feature_store.yaml)")
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        # Definitions, the privacy policy and the recorded contract fingerprints travel with the repo.
        if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".json") or path.name == ".feastignore":
            shutil.copy2(path, dst / path.name)
    (dst / "feature_store.yaml").write_text(
        _store_yaml_text(online, offline, redis_connection, src / "feature_store.yaml")
    )
    (dst / "data").mkdir(exist_ok=True)
    return dst


def feast_env(data_dir: str | Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a ``feast`` subprocess: the data directory the FileSources resolve to."""
    env = dict(os.environ)
    if data_dir is not None:
        # A URI root (s3a://, file://) is passed as written; the repo follows its current.json.
        env[ENV_DATA_DIR] = data_dir if isinstance(data_dir, str) and "://" in data_dir else str(Path(data_dir).resolve())
    env.update(extra or {})
    return env


def run_feast(
    repo: str | Path,
    args: Sequence[str],
    *,
    data_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600,
) -> str:
    """Run ``feast -c <repo> <args>`` and return its output; raise ``FeastCommandError`` on failure."""
    repo = Path(repo).resolve()
    command = [feast_executable(), "-c", str(repo), *args]
    log.info("running %s", " ".join(command[1:]))
    try:
        result = subprocess.run(
            command, cwd=repo, env=feast_env(data_dir, env), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise FeastCommandError(f"`feast {' '.join(args)}` timed out after {timeout_s:.0f}s") from exc
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise FeastCommandError(f"`feast {' '.join(args)}` failed in {repo} (exit {result.returncode}):\n{tail}")
    return output


def feast_apply(repo: str | Path, *, data_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """``feast apply``: register the repo's definitions (FileSource paths resolve now)."""
    return run_feast(repo, ["apply"], data_dir=data_dir, env=env)


def open_store(repo: str | Path) -> Any:
    """A ``feast.FeatureStore`` on an applied repo, or a clear error saying what is missing."""
    from feast import FeatureStore

    repo = Path(repo)
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"{repo} is not a Feast repo (no feature_store.yaml)")
    try:
        store = FeatureStore(repo_path=str(repo))
    except Exception as exc:  # noqa: BLE001 - Feast raises many config error types
        raise ConfigError(f"cannot open the Feast repo at {repo}: {exc}") from exc
    if not store.list_feature_services():
        raise ConfigError(f"the registry of {repo} has no feature services: run `feast -c {repo} apply` first")
    return store


def open_store_with_online(repo: str | Path, online: str, redis_connection: str | None = None) -> Any:
    """``open_store`` with another online store than the repo's yaml names (same registry).

    Writes ``<repo>/data/feature_store.<online>.yaml`` from the ``infra/`` variant and opens
    the store on it: this is how serving and ``lookalike materialize --online redis`` reach
    Redis from a repo applied with the default SQLite configuration.
    """
    from feast import FeatureStore

    repo = Path(repo).resolve()
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"{repo} is not a Feast repo (no feature_store.yaml)")
    if online == "redis" and not (redis_connection or os.environ.get(ENV_REDIS_URL)):
        raise ConfigError(f"online store redis needs a connection: pass host:port or set ${ENV_REDIS_URL}")
    text = _store_yaml_text(online, "file", redis_connection, repo / "feature_store.yaml")
    variant = repo / "data" / f"feature_store.{online}.yaml"
    variant.parent.mkdir(parents=True, exist_ok=True)
    variant.write_text(text)
    try:
        store = FeatureStore(repo_path=str(repo), fs_yaml_file=variant)
    except Exception as exc:  # noqa: BLE001 - Feast raises many config error types
        raise ConfigError(f"cannot open the Feast repo at {repo} with online={online}: {exc}") from exc
    if not store.list_feature_services():
        raise ConfigError(f"the registry of {repo} has no feature services: run `feast -c {repo} apply` first")
    return store


def applied_repo_path(store: Any) -> Path:
    return Path(store.repo_path).resolve()


# --------------------------------------------------------------------------------------
# Synthetic feature tables shaped by the registry (tests, benchmarks)
# --------------------------------------------------------------------------------------

def _synthetic_column(field: Any, n: int, rng: np.random.Generator, null_fraction: float) -> pa.Array:
    dtype = str(field.dtype)
    encoding = (field.tags or {}).get("encoding", "")
    if dtype == "Bool":
        values: pa.Array = pa.array(rng.random(n) < 0.4)
    elif dtype == "String":
        cardinality = 3000 if encoding == "high_cardinality" else 5
        codes = rng.integers(0, cardinality, n)
        prefix = "R" if encoding == "high_cardinality" else f"{field.name[:3]}_"
        values = pa.array(np.char.add(prefix, np.char.zfill(codes.astype(str), 4)))
    elif dtype in ("Float64", "Float32"):
        values = pa.array(np.round(rng.gamma(2.0, 10.0, n), 3))
    elif dtype in ("Int64", "Int32"):
        values = pa.array(rng.integers(0, 100, n), type=pa.int64())
    elif dtype == "UnixTimestamp":
        base = np.datetime64("2026-01-01T00:00:00", "us")
        values = pa.array(base + rng.integers(0, 300, n).astype("timedelta64[D]"), type=pa.timestamp("us", "UTC"))
    elif dtype == "Array(String)":
        pool = np.array([f"S{i:02d}" for i in range(60)])
        values = pa.array([sorted(set(pool[rng.integers(0, 60, rng.integers(1, 7))])) for _ in range(n)])
    else:
        raise ConfigError(f"no synthetic generator for dtype {dtype} ({field.name})")
    if null_fraction > 0 and dtype != "Array(String)":
        mask = pa.array(rng.random(n) < null_fraction)
        values = pa.compute.if_else(mask, pa.scalar(None, values.type), values)
    return values


def write_synthetic_feature_tables(
    views: Iterable[Any],
    customer_ids: np.ndarray,
    snapshot_dates: Sequence[str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    null_fraction: float = 0.0,
    rows_per_file: int = 250_000,
) -> Path:
    """Write ``<out_dir>/<view>/part-*.parquet`` for each view: one row per customer per snapshot.

    Schemas follow the views' fields (Feast dtypes), timestamps are microsecond UTC like
    the Spark jobs' output, so Feast reads them exactly as it reads the real tables.
    """
    import pyarrow.compute  # noqa: F401 - registers pa.compute for _synthetic_column

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    ids = np.asarray(customer_ids, dtype=np.int64)
    for view in views:
        table_dir = out_dir / view.name
        table_dir.mkdir(parents=True, exist_ok=True)
        for date_index, date in enumerate(snapshot_dates):
            snapshot = datetime.fromisoformat(date).replace(tzinfo=timezone.utc)
            for start in range(0, len(ids), rows_per_file):
                chunk = ids[start : start + rows_per_file]
                n = len(chunk)
                columns = {"customer_id": pa.array(chunk, type=pa.int64())}
                for field in view.features:
                    columns[field.name] = _synthetic_column(field, n, rng, null_fraction)
                stamp = pa.array(np.full(n, np.datetime64(snapshot.replace(tzinfo=None), "us")),
                                 type=pa.timestamp("us", "UTC"))
                columns["event_timestamp"] = stamp
                columns["created_timestamp"] = stamp
                pq.write_table(pa.table(columns), table_dir / f"part-{date_index:03d}-{start // rows_per_file:05d}.parquet")
    return out_dir


def load_repo_views(repo: str | Path) -> list[Any]:
    """Feature view objects defined in a repo directory, without applying it (Feast's parser)."""
    from feast.repo_operations import parse_repo

    repo = Path(repo).resolve()
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    return list(parse_repo(repo).feature_views)
