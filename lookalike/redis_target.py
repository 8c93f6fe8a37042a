"""Where the Redis online store lives, and a redis-py client for it.

One parser for every way a Redis deployment is named in this project:

- Feast's own format, as in ``feature_store.yaml``: ``host:port[,host:port...][,db=N]
  [,password=...][,ssl=true]`` plus the store's ``redis_type`` (``redis``,
  ``redis_cluster``, ``redis_sentinel``) and ``sentinel_master``;
- URLs: ``redis://[user:password@]host:port[/db]``, ``rediss://`` (TLS),
  ``redis+cluster://h1:p1,h2:p2`` / ``rediss+cluster://`` (Redis Cluster) and
  ``redis+sentinel://h1:p1,h2:p2/<master>[/db]`` / ``rediss+sentinel://``. Query parameters
  (``?ssl_ca_certs=/path/ca.pem&socket_timeout=5``) become redis-py connection options.

:meth:`RedisTarget.feast_config` renders a URL back into Feast's format, so the same
deployment reaches Feast's reader, the fast loader (:mod:`lookalike.redis_loader`) and the
direct online reader (:mod:`lookalike.online`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from lookalike.errors import ConfigError

KINDS = ("redis", "redis_cluster", "redis_sentinel")
_SCHEMES = {
    "redis": ("redis", False), "rediss": ("redis", True),
    "redis+cluster": ("redis_cluster", False), "rediss+cluster": ("redis_cluster", True),
    "redis+sentinel": ("redis_sentinel", False), "rediss+sentinel": ("redis_sentinel", True),
}
_DEFAULT_PORT = 6379


def _value(text: str) -> Any:
    # Feast json-decodes connection-string values (ssl=true -> True, db=0 -> 0); so do we.
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _node(text: str, source: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), str(_DEFAULT_PORT)
    if not host or not port.isdigit():
        raise ConfigError(f"Redis address {text!r} in {source!r} must be host:port")
    return host.strip("[]"), int(port)


def is_url(text: str) -> bool:
    return "://" in text


@dataclass(frozen=True)
class RedisTarget:
    """A Redis deployment: single node, cluster or sentinel-managed master."""

    kind: str
    nodes: tuple[tuple[str, int], ...]
    params: dict[str, Any] = field(default_factory=dict)
    sentinel_master: str = "mymaster"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"redis_type must be one of {KINDS}, got {self.kind!r}")
        if not self.nodes:
            raise ConfigError("a Redis connection needs at least one host:port")
        if self.kind == "redis" and len(self.nodes) != 1:
            raise ConfigError(f"{len(self.nodes)} Redis addresses given for a single node; "
                              "use redis+cluster:// or redis_type: redis_cluster for a cluster")

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, text: str, redis_type: str = "redis", sentinel_master: str = "mymaster") -> RedisTarget:
        """A URL (any scheme above) or Feast's ``host:port[,...][,key=value]`` string."""
        text = str(text).strip()
        if not text:
            raise ConfigError("empty Redis connection string")
        if is_url(text):
            return cls._parse_url(text)
        parts = [p.strip() for p in text.split(",") if p.strip()]
        nodes = tuple(_node(p, text) for p in parts if "=" not in p)
        params = {k.strip(): _value(v.strip()) for k, v in (p.split("=", 1) for p in parts if "=" in p)}
        return cls(str(getattr(redis_type, "value", redis_type)), nodes, params, sentinel_master)

    @classmethod
    def _parse_url(cls, text: str) -> RedisTarget:
        scheme, rest = text.split("://", 1)
        if scheme.lower() not in _SCHEMES:
            raise ConfigError(f"unsupported Redis URL scheme {scheme!r}; use one of {sorted(_SCHEMES)}")
        kind, tls = _SCHEMES[scheme.lower()]
        # urlsplit cannot hold several hosts: take the netloc apart ourselves.
        split = urlsplit("redis://" + rest)
        netloc = rest.split("/", 1)[0].split("?", 1)[0]
        credentials, _, hosts = netloc.rpartition("@")
        params: dict[str, Any] = {k: _value(v) for k, v in parse_qsl(split.query)}
        if credentials:
            user, sep, password = credentials.partition(":")
            if sep:
                params["password"] = unquote(password)
                if user:
                    params["username"] = unquote(user)
            else:
                params["password"] = unquote(user)
        if tls:
            params["ssl"] = True
        path = [p for p in split.path.split("/") if p]
        master = "mymaster"
        if kind == "redis_sentinel":
            if not path:
                raise ConfigError(f"sentinel URL {text!r} needs the master name: redis+sentinel://host:port/<master>")
            master, path = path[0], path[1:]
        if path:
            if len(path) > 1 or not path[0].isdigit():
                raise ConfigError(f"Redis URL {text!r}: the path must be a database number")
            params["db"] = int(path[0])
        nodes = tuple(_node(h, text) for h in hosts.split(",") if h.strip())
        return cls(kind, nodes, params, master)

    @classmethod
    def from_store(cls, store: Any) -> RedisTarget:
        """The Redis online store of a ``feast.FeatureStore``."""
        online = store.config.online_store
        if getattr(online, "type", None) != "redis":
            raise ConfigError(f"the online store is {getattr(online, 'type', '?')}, not Redis")
        return cls.parse(online.connection_string, getattr(online, "redis_type", "redis"),
                         getattr(online, "sentinel_master", "mymaster"))

    # ------------------------------------------------------------------ rendering
    def feast_config(self) -> dict[str, str]:
        """``connection_string`` / ``redis_type`` / ``sentinel_master`` for ``feature_store.yaml``."""
        def text(value: Any) -> str:
            return json.dumps(value) if isinstance(value, bool) else str(value)

        parts = [f"{host}:{port}" for host, port in self.nodes]
        parts += [f"{k}={text(v)}" for k, v in self.params.items()]
        if any("," in p for p in parts):
            raise ConfigError("Redis connection values may not contain ',' (Feast's separator)")
        config = {"connection_string": ",".join(parts), "redis_type": self.kind}
        if self.kind == "redis_sentinel":
            config["sentinel_master"] = self.sentinel_master
        return config

    @property
    def tls(self) -> bool:
        return bool(self.params.get("ssl", False))

    def describe(self) -> str:
        """For logs and errors: kind and addresses, never the password."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{self.kind}{' (TLS)' if self.tls else ''} at {hosts}"

    # ------------------------------------------------------------------ clients
    def client(self, **options: Any) -> Any:
        """A redis-py client (``Redis``, ``RedisCluster``, or a sentinel's master client),
        configured as Feast configures its own; ``options`` add connection settings."""
        import redis
        from redis.cluster import ClusterNode, RedisCluster
        from redis.sentinel import Sentinel

        params = {**self.params, **options}
        try:
            if self.kind == "redis_cluster":
                params.pop("db", None)  # cluster nodes have database 0 only
                return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.nodes], **params)
            if self.kind == "redis_sentinel":
                sentinel_options = {k: v for k, v in params.items() if k.startswith("socket_")}
                sentinel = Sentinel(list(self.nodes), sentinel_kwargs=sentinel_options, **params)
                return sentinel.master_for(self.sentinel_master)
            host, port = self.nodes[0]
            return redis.Redis(host=host, port=port, **params)
        except TypeError as exc:
            raise ConfigError(f"unsupported Redis connection option for {self.describe()}: {exc}") from exc
