"""Shared helpers for the repo's definition files (imported by them; defines no Feast objects).

Feature tables are weekly snapshots written by the Spark jobs (docs/contracts.md section 2):
one Parquet dataset per table with ``customer_id``, ``event_timestamp`` (snapshot date,
00:00 UTC) and ``created_timestamp``. Their location is resolved when ``feast apply``
imports this file: ``$LOOKALIKE_DATA_DIR/<table>`` or, by default, ``../data/features/<table>``
relative to this repo. ``$LOOKALIKE_DATA_DIR`` may be a URI (``file://``, ``s3a://``, ...); a
``current.json`` pointer under it is followed to the feature job's last complete output.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import yaml
from feast import Field, FileSource
from feast.data_source import DataSource
from feast.types import FeastType

# Same name as lookalike.settings.ENV_DATA_DIR; the repo does not import the lookalike
# package so that it can be applied from any environment that has Feast.
ENV_DATA_DIR = "LOOKALIKE_DATA_DIR"
REPO_DIR = Path(__file__).resolve().parent
# Same as lookalike.storage.POINTER / SCHEME_ALIASES.
POINTER = "current.json"
HADOOP_SCHEMES = {"s3a": "s3", "s3n": "s3"}

# A weekly snapshot is at most 7 days old at any date; one extra day absorbs a late job.
WEEKLY_TTL = timedelta(days=8)
# Profile attributes change rarely, so a missed weekly run must not blank them.
PROFILE_TTL = timedelta(days=35)

OWNER_DATA = "data-platform@lookalike.example"
OWNER_PRIVACY = "privacy-office@lookalike.example"

# Vocabularies of the per-category share features. They must match the columns the
# Spark jobs write (lookalike/datagen.py vocabularies, spark_jobs/transforms.py schemas); a mismatch is caught by tests/integration/test_feature_repo.py.
WINDOWS = ("7d", "30d", "90d")
GENRES = ("sports", "kids", "movies", "series", "news", "documentary", "music", "reality")
DAYPARTS = ("morning", "afternoon", "prime", "late")
CHANNELS = ("linear", "vod", "catchup", "sports_app", "kids_app", "partner_ott")
NAV_CATEGORIES = (
    "automotive", "mortgage", "fashion", "health", "pets", "diy_home",
    "luxury", "crypto", "wedding", "jobs", "general_news", "social",
)


def data_dir() -> str:
    """Where the feature tables are: a directory or URI root, through its ``current.json`` when it has one.

    A feature job writing to a URI (``lookalike features --out-dir s3a://...``) moves that
    pointer last, so the sources registered here never name a half-written output.
    """
    configured = os.environ.get(ENV_DATA_DIR)
    if configured and "://" in configured:
        root = configured.rstrip("/")
    else:
        root = str(Path(configured).resolve() if configured else (REPO_DIR / ".." / "data" / "features").resolve())
    target = _pointer_target(root)
    return f"{root}/{target}" if target else root


def _pointer_target(root: str) -> str | None:
    """``path`` of ``<root>/current.json`` (lookalike/storage.py's pointer), None without one."""
    if "://" not in root:
        pointer = Path(root) / POINTER
        return str(json.loads(pointer.read_text())["path"]) if pointer.is_file() else None
    from fsspec.core import url_to_fs

    scheme, rest = root.split("://", 1)
    fs, path = url_to_fs(f"{HADOOP_SCHEMES.get(scheme, scheme)}://{rest}")
    if not fs.exists(f"{path}/{POINTER}"):
        return None
    return str(json.loads(fs.cat_file(f"{path}/{POINTER}"))["path"])


def _file_source_path(location: str) -> str:
    """Feast's file offline store reads plain paths and fsspec URIs (``s3://``, not Hadoop's ``s3a://``)."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return location
    if scheme == "file":
        return rest
    return f"{HADOOP_SCHEMES.get(scheme, scheme)}://{rest}"


def offline_store_type() -> str:
    """``offline_store.type`` of this repo's feature_store.yaml (the one switch between stores)."""
    with open(REPO_DIR / "feature_store.yaml") as handle:
        config = yaml.safe_load(os.path.expandvars(handle.read())) or {}
    offline = config.get("offline_store") or {}
    return str(offline.get("type", "file") if isinstance(offline, dict) else offline)


def feature_table_source(table: str, description: str) -> DataSource:
    """The weekly Parquet dataset ``<data_dir>/<table>`` written by the Spark feature jobs.

    Feast's Spark offline store only reads ``SparkSource``s, so the source class follows the
    offline store configured in feature_store.yaml; the data and its schema are the same.
    """
    if offline_store_type() == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(
            name=f"{table}_source",
            path=f"{data_dir()}/{table}",
            file_format="parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
            description=description,
            owner=OWNER_DATA,
        )
    return FileSource(
        name=f"{table}_source",
        path=_file_source_path(f"{data_dir()}/{table}"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=description,
        owner=OWNER_DATA,
    )


def feature(name: str, dtype: FeastType, encoding: str, description: str) -> Field:
    """A field with its model encoding (numeric | categorical | boolean | high_cardinality)."""
    return Field(name=name, dtype=dtype, description=description, tags={"encoding": encoding})
