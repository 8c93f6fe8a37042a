"""Where MLflow runs and their artifacts live, for every stage that logs.

- The tracking URI comes from ``MLFLOW_TRACKING_URI`` when set (MLflow's own convention),
  else the checkout's ``sqlite:///mlflow.db``.
- With a SQLite store, artifacts go beside the database (``<db dir>/mlartifacts``): the two
  travel together. With a tracking server, the server decides: ``mlflow server
  --serve-artifacts`` records ``mlflow-artifacts:/`` URIs, relative to the server.
- MLflow stores an experiment's artifact root as an absolute path when the experiment is
  created. A SQLite store copied from another checkout still points there, and new runs
  would write into the other checkout. :func:`ensure_experiment` refuses that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lookalike.errors import ConfigError
from lookalike.settings import DEFAULT_TRACKING_URI, ENV_TRACKING_URI

SQLITE_PREFIX = "sqlite:///"


def default_tracking_uri() -> str:
    return os.environ.get(ENV_TRACKING_URI) or DEFAULT_TRACKING_URI


def sqlite_directory(tracking_uri: str) -> Path | None:
    """The directory holding a SQLite tracking database; None for any other store."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    return Path(tracking_uri[len(SQLITE_PREFIX):]).resolve().parent


def default_artifact_location(tracking_uri: str) -> str | None:
    """Keep artifacts beside a SQLite tracking DB (``<db dir>/mlartifacts``), not in the cwd."""
    directory = sqlite_directory(tracking_uri)
    return (directory / "mlartifacts").as_uri() if directory is not None else None


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def ensure_experiment(client: Any, name: str, tracking_uri: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created with ``artifact_location`` (default: beside a
    SQLite DB). Refuses a SQLite store whose experiment keeps its artifacts in another
    directory tree than the database's (a store copied from another checkout)."""
    existing = client.get_experiment_by_name(name)
    if existing is None:
        location = artifact_location or default_artifact_location(tracking_uri)
        return str(client.create_experiment(name, artifact_location=location))
    directory = sqlite_directory(tracking_uri)
    stored = _local_path(str(existing.artifact_location or ""))
    configured = _local_path(artifact_location) if artifact_location else None
    allowed = [root for root in (directory, configured.resolve() if configured else None) if root is not None]
    if directory is not None and stored is not None and not any(
        stored.resolve().is_relative_to(root) for root in allowed
    ):
        raise ConfigError(
            f"MLflow experiment {name!r} in {tracking_uri} keeps its artifacts in {stored}, outside "
            f"{directory}: this store was copied from another checkout, and new runs would write into "
            "it; use this checkout's own store (move the copied mlflow.db away) or a tracking server"
        )
    return str(existing.experiment_id)
