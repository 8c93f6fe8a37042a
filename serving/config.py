"""Configuration of the online service: a YAML file and/or environment variables.

Resolution order (later wins): dataclass defaults, the YAML file named by
``LOOKALIKE_SERVING_CONFIG``, then the individual environment variables in
:data:`ENV_FIELDS`. ``bentoml serve`` has no CLI for our settings, so the environment is
the natural interface; tests build a ``ServingConfig`` directly.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import field, replace
from pathlib import Path
from typing import Any, Literal

from lookalike.config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    load_config,
    stage_config,
)
from lookalike.errors import ConfigError
from lookalike.redaction import redact
from lookalike.settings import (
    CHAMPION_ALIAS,
    DEFAULT_TRACKING_URI,
    ENV_DATA_DIR,
    ENV_REDIS_URL,
    ENV_TRACKING_URI,
    REGISTERED_MODEL_NAME,
)

log = logging.getLogger(__name__)

ENV_CONFIG_FILE = "LOOKALIKE_SERVING_CONFIG"
ENV_API_TOKEN = "LOOKALIKE_API_TOKEN"
ENV_PREFIX = "LOOKALIKE_"
# Read elsewhere (the online reader's engine, the feature repo's data directory).
OTHER_KNOWN_ENV = frozenset({ENV_CONFIG_FILE, "LOOKALIKE_ONLINE_READER", ENV_DATA_DIR})

# environment variable -> ServingConfig field (top level only: nested sections via the file)
ENV_FIELDS: dict[str, str] = {
    "LOOKALIKE_FEATURE_REPO": "feature_repo",
    ENV_TRACKING_URI: "tracking_uri",
    "LOOKALIKE_MODEL_NAME": "model_name",
    "LOOKALIKE_MODEL_ALIAS": "model_alias",
    "LOOKALIKE_INDEX_DIR": "index_dir",
    "LOOKALIKE_INDEX_ROOT": "index_root",
    ENV_API_TOKEN: "api_token",
    "LOOKALIKE_MAX_IDS_PER_REQUEST": "max_ids_per_request",
    "LOOKALIKE_K": "k",
    "LOOKALIKE_ONLINE_STORE": "online_store",
    ENV_REDIS_URL: "redis_connection",
    "LOOKALIKE_MAX_BODY_BYTES": "max_body_bytes",
    "LOOKALIKE_INSECURE_LOCAL_ADMIN": "allow_insecure_admin",
    "LOOKALIKE_VERIFY_BUNDLE": "verify_bundle",
    "LOOKALIKE_INTRA_OP_THREADS": "intra_op_threads",
}
_INT_FIELDS = ("max_ids_per_request", "k", "max_body_bytes", "intra_op_threads")
_BOOL_FIELDS = ("allow_insecure_admin",)


@stage_config
class ExpandConfig:
    """The guard rails of seed expansion (``POST /expand``)."""

    # A seed with fewer customers found in the online store is refused (422): its centroid is noise.
    min_seed_matched: PositiveInt = 5
    # How many times farther the seed centroid lies from the population centroid than the
    # centroid of a random seed of the same size would (squared distance ratio; random ~ 1).
    # A fixed cut on 1 - cosine would pass any small random seed and fail any large one.
    min_distinctiveness: PositiveFloat = 3.0
    max_target_size: PositiveInt = 100_000
    # More seed ids than this are refused (422) before any work: a seed is an audience
    # sample, and every member costs a store read.
    max_seed_ids: PositiveInt = 10_000
    # Wall-clock budget of one /expand; past it the request stops and answers 503.
    time_budget_s: PositiveFloat = 10.0
    # Seed members read from the store per round trip (the budget is checked between them).
    seed_read_chunk: PositiveInt = 1_000
    # Neighbours fetched per seed member before merging; bounds the work per request.
    neighbours_per_seed: PositiveInt = 200
    default_target_size: PositiveInt = 1_000
    # Population embeddings are built once per runtime in chunks of this many customers:
    # at load (so a reload swaps in a runtime that is complete) or on the first /expand.
    population_chunk_size: PositiveInt = 5_000
    build_population_at_load: bool = True


@stage_config
class ServingConfig:
    feature_repo: Path = Path("feature_repo")
    # None: the online store of the repo's feature_store.yaml. "redis" serves a repo applied
    # with SQLite from Redis (lookalike.feast_utils.open_store_with_online), same registry.
    online_store: Literal["sqlite", "redis"] | None = None
    # Feast format host:port[,db=N]; only with online_store=redis.
    redis_connection: str | None = None
    tracking_uri: str = DEFAULT_TRACKING_URI
    model_name: str = REGISTERED_MODEL_NAME
    model_alias: str = CHAMPION_ALIAS
    # An explicit bundle directory; when unset, the newest bundle under ``index_root`` whose
    # manifest names the loaded model version is used.
    index_dir: Path | None = None
    index_root: Path = Path("artifacts/index")
    # How the bundle is checked against its manifest at load (lookalike.file_integrity):
    # "fast" = file list, sizes, small files' hashes, large files' sample digests (~8 MB read
    # whatever the size); "full" rehashes every byte (768 MB at 1M anchors + 2M population),
    # as batch jobs and `lookalike verify-bundle` always do.
    verify_bundle: Literal["fast", "full"] = "fast"
    # Bearer token; unset means no authentication (local development only).
    api_token: str | None = None
    # Without a token, /admin/reload (tens of seconds of CPU) is refused unless this is set:
    # an explicit "this is my laptop" switch ($LOOKALIKE_INSECURE_LOCAL_ADMIN=1).
    allow_insecure_admin: bool = False
    max_ids_per_request: PositiveInt = 1_000
    # Request bodies larger than this get 413 before they are read or parsed.
    max_body_bytes: PositiveInt = 1 << 20
    # /readyz answers from a probe at most this old: at most one store round trip per period.
    readiness_cache_s: NonNegativeFloat = 1.0
    # Neighbours per customer; unset means the bundle's assignment.json k (the batch value).
    k: PositiveInt | None = None
    # Micro-batching of concurrent /assign requests into one store read + one search.
    batch_max_ids: PositiveInt = 2_000
    # 0: no deliberate wait. Requests that arrive while a batch runs still queue up and are
    # merged into the next one, so load batches itself; a lone request is not held back
    # (2 ms out of a 10 ms p99 budget before).
    batch_max_wait_ms: NonNegativeFloat = 0.0
    # Threads of the model forward and the FAISS search (process-wide, set at start-up).
    # A request's work is small: with 2 torch threads on a busy 2-core box a 200-row forward
    # cost 30x the CPU of 1 thread (OpenMP spin-waits; p99 91 vs 25 ms, bench/README.md).
    # 0: leave the libraries' defaults.
    intra_op_threads: NonNegativeInt = 1
    expand: ExpandConfig = field(default_factory=ExpandConfig)

    def __post_init__(self) -> None:
        if self.api_token is not None and not self.api_token.strip():
            self.api_token = None
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.expand.max_seed_ids < 1 or self.expand.time_budget_s <= 0:
            raise ConfigError("expand.max_seed_ids must be >= 1 and expand.time_budget_s > 0")

    def describe(self) -> dict[str, object]:
        """Settings safe to log or return: the token is reported as set/unset only, and
        credentials inside URIs or connection strings are masked."""
        return {
            "feature_repo": str(self.feature_repo),
            "online_store": self.online_store or "repo default",
            "redis_connection": redact(self.redis_connection),
            "tracking_uri": redact(self.tracking_uri),
            "model_name": self.model_name,
            "model_alias": self.model_alias,
            "index_dir": str(self.index_dir) if self.index_dir else None,
            "index_root": str(self.index_root),
            "verify_bundle": self.verify_bundle,
            "intra_op_threads": self.intra_op_threads,
            "auth": "bearer" if self.api_token else "none",
            "admin": "token" if self.api_token else ("insecure-local" if self.allow_insecure_admin else "disabled"),
            "max_ids_per_request": self.max_ids_per_request,
            "max_body_bytes": self.max_body_bytes,
            "max_seed_ids": self.expand.max_seed_ids,
            "expand_time_budget_s": self.expand.time_budget_s,
            "k": self.k,
        }


def load_serving_config(environ: Mapping[str, str] | None = None) -> ServingConfig:
    """Build the config from ``LOOKALIKE_SERVING_CONFIG`` (optional) and the environment."""
    environ = os.environ if environ is None else environ
    warn_unknown_env(environ)
    overrides = []
    for var, name in ENV_FIELDS.items():
        value = environ.get(var)
        if value is not None and value != "":
            overrides.append((name, value))
    config = load_config(ServingConfig, environ.get(ENV_CONFIG_FILE) or None)
    parsed: dict[str, Any] = {name: _parse_env(name, value) for name, value in overrides}
    return replace(config, **parsed)


def warn_unknown_env(environ: Mapping[str, str]) -> list[str]:
    """Warn about ``LOOKALIKE_*`` variables nothing reads (a typo silently keeps a default)."""
    known = set(ENV_FIELDS) | OTHER_KNOWN_ENV
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        log.warning("unknown environment variable %s is ignored%s", name,
                    f" (did you mean {close[0]}?)" if close else "")
    return unknown


def _parse_env(name: str, value: str) -> object:
    if name in ("feature_repo", "index_root", "index_dir"):
        return Path(value)
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError as exc:
            # The value is not echoed: a misplaced secret must not reach the logs.
            raise ConfigError(f"{name}: expected an integer") from exc
    if name in _BOOL_FIELDS:
        lowered = value.strip().lower()
        if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(f"{name}: expected true/false or 1/0")
        return lowered in ("1", "true", "yes", "on")
    return value
