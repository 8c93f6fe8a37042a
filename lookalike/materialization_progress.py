"""How far each view has been materialized into ONE online store, kept in that store.

Feast records materialization intervals in the registry, which several online stores can
share (a repo applied with SQLite and served from Redis): a fresh Redis then looked "done"
and got 0 rows. The progress mark therefore lives inside the online store it describes, so
an empty, flushed or replaced store has no mark and gets the full load:

- Redis: hash ``lookalike:materialized:<project>`` (field = view, value = ISO end time);
- SQLite: table ``lookalike_materialized`` in the online store's database file.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from lookalike.errors import ConfigError

SQLITE_TABLE = "lookalike_materialized"


class MaterializationProgress:
    """``get(view)`` / ``set(view, end)`` against the online store of ``store``."""

    def __init__(self, store: Any) -> None:
        online = store.config.online_store
        self.kind = str(online.type)
        self.project = str(store.project)
        if self.kind == "redis":
            from lookalike.redis_target import RedisTarget

            # Any deployment the loader writes to (single node, TLS, sentinel, cluster).
            self._redis = RedisTarget.from_store(store).client()
            self._key = f"lookalike:materialized:{self.project}"
        elif self.kind == "sqlite":
            path = Path(online.path)
            if not path.is_absolute():
                path = Path(store.repo_path) / path
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sqlite_path = path
        else:
            raise ConfigError(f"materialization progress is not implemented for online store {self.kind!r}")

    def get(self, view: str) -> datetime | None:
        if self.kind == "redis":
            value = self._redis.hget(self._key, view)
            return datetime.fromisoformat(value.decode()) if value else None
        with sqlite3.connect(self._sqlite_path) as conn:
            self._ensure_table(conn)
            row = conn.execute(f"SELECT end_ts FROM {SQLITE_TABLE} WHERE project = ? AND view = ?",
                               (self.project, view)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def set(self, view: str, end: datetime) -> None:
        if self.kind == "redis":
            self._redis.hset(self._key, view, end.isoformat())
            return
        with sqlite3.connect(self._sqlite_path) as conn:
            self._ensure_table(conn)
            conn.execute(f"INSERT OR REPLACE INTO {SQLITE_TABLE} (project, view, end_ts) VALUES (?, ?, ?)",
                         (self.project, view, end.isoformat()))

    @staticmethod
    def _ensure_table(conn: sqlite3.Connection) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SQLITE_TABLE} "
                     "(project TEXT NOT NULL, view TEXT NOT NULL, end_ts TEXT NOT NULL, PRIMARY KEY (project, view))")
