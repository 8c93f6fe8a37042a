"""Artifact roots as URIs: local paths, ``file://``, ``s3a://`` / ``s3://``, ``gs://``,
``hdfs://``, ``memory://`` -- anything fsspec opens (Hadoop's ``s3a``/``s3n`` mean ``s3``).

Object stores have no atomic directory rename, so publishing never renames. A finished
local artifact directory is uploaded under a fresh name that is never reused
(``<root>/<name>.<publish id>/``); only then is ``<root>/current.json`` -- one small
object, written in a single PUT -- replaced to point at it. Readers go through the
pointer (:func:`resolve_current`), so they see the previous artifact or the new one,
never a half-uploaded one, and a failed publish leaves the previous pointer in place.
:func:`publish_all` uploads several artifacts first and moves all their pointers last,
which is how ``lookalike weekly publish_uri=...`` keeps its all-or-nothing promise.

Needs the filesystem's fsspec package (``s3fs`` for S3, ``gcsfs`` for GCS, pyarrow's HDFS
driver for HDFS); tested against an S3 server (moto) and fsspec's memory filesystem.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.errors import ArtifactError, ConfigError

POINTER = "current.json"
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}


def normalise(uri: str | Path) -> str:
    """``s3a://b/k`` -> ``s3://b/k``; local paths stay paths; trailing slashes dropped."""
    text = str(uri).rstrip("/")
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in SCHEME_ALIASES:
        return f"{SCHEME_ALIASES[scheme.lower()]}://{rest}"
    return text


def filesystem(uri: str | Path) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a URI or local path."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(normalise(uri))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"cannot open {uri}: {exc} (install the fsspec package for its scheme, e.g. s3fs)") from exc


def join(root: str, *parts: str) -> str:
    return "/".join([normalise(root), *parts])


@dataclass
class Publication:
    """One local artifact directory to publish under ``root`` as ``name``."""

    local_dir: Path
    root: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    published: str = ""  # the URI it was uploaded to (set by publish_all)


def upload(item: Publication) -> None:
    """Copy ``item.local_dir`` to a fresh, never-reused name under its root (no pointer move)."""
    local = Path(item.local_dir)
    if not local.is_dir():
        raise ArtifactError(f"nothing to publish: {local} is not a directory")
    fs, root = filesystem(item.root)
    target = f"{root}/{item.name}.{uuid.uuid4().hex[:12]}"
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        relative = path.relative_to(local)
        parent = relative.parent.as_posix()
        fs.makedirs(target if parent == "." else f"{target}/{parent}", exist_ok=True)
        fs.put_file(str(path), f"{target}/{relative.as_posix()}")
    item.published = f"{item.root.rstrip('/')}/{target.rsplit('/', 1)[1]}"


def write_pointer(root: str, name: str, path: str, **fields: Any) -> None:
    from lookalike.artifacts import utc_now

    fs, base = filesystem(root)
    payload = {"name": name, "path": path, "updated_at": utc_now(), **fields}
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols:
        # A local pipe_file truncates then writes; a reader could catch half a pointer.
        from lookalike.artifacts import atomic_write_text

        atomic_write_text(f"{base}/{POINTER}", text)
        return
    # One object, one PUT: readers get the old pointer or the new one.
    fs.pipe_file(f"{base}/{POINTER}", text.encode())


def read_pointer(root: str) -> dict[str, Any]:
    fs, base = filesystem(root)
    try:
        return dict(json.loads(fs.cat_file(f"{base}/{POINTER}")))
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {POINTER} under {root}: nothing published yet") from exc


def resolve_current(root: str) -> str:
    """URI of the artifact ``<root>/current.json`` points at."""
    pointer = read_pointer(root)
    return join(root, str(pointer["path"]))


def publish_all(items: list[Publication]) -> list[Publication]:
    """Upload every artifact, then move every pointer; an upload failure moves none."""
    for item in items:
        upload(item)
    return move_pointers(items)


def move_pointers(items: list[Publication]) -> list[Publication]:
    """Point each uploaded artifact's root at it (after every upload succeeded)."""
    for item in items:
        if not item.published:
            raise ArtifactError(f"{item.name} under {item.root} was not uploaded; no pointer moved")
    for item in items:
        write_pointer(item.root, item.name, item.published.rsplit("/", 1)[1], **item.fields)
    return items


def publish(local_dir: str | Path, root: str, name: str, **fields: Any) -> str:
    """Publish one artifact directory; returns the URI it now lives at."""
    return publish_all([Publication(Path(local_dir), root, name, dict(fields))])[0].published


def fetch(uri: str, local_dir: str | Path) -> Path:
    """Download a published artifact directory (e.g. ``resolve_current(root)``) to ``local_dir``."""
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise ArtifactError(f"{uri} is not a published artifact directory")
    local = Path(local_dir)
    local.mkdir(parents=True, exist_ok=True)
    fs.get(f"{path}/", str(local) + "/", recursive=True)
    return local
