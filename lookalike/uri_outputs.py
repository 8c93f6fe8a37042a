"""Outputs written straight to a URI root and swapped in by a pointer, never by a rename.

Object stores (``s3a://``, ``gs://``) have no atomic directory rename, and ``hdfs://`` is
reached through a client that may not offer one. So a run writes its whole output under a
fresh, never-reused name, ``<root>/<name>.<run id>/`` (data and ``manifest.json``), and only
then replaces ``<root>/current.json`` (one small object, one PUT; ``lookalike.storage``) to
point at it. Readers resolve the pointer (:func:`resolve`): they see the previous output or
the new one, never a half-written one, and a run that fails before the pointer moves leaves
the previous output current.

Plain local paths keep the local default (a temp directory renamed into place,
``lookalike.artifacts.atomic_dir``); everything with a scheme, ``file://`` included, goes
through the pointer. Superseded generations are left in place (a reader may still be
streaming one); prune them with the store's lifecycle rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lookalike.artifacts import MANIFEST_NAME, utc_now
from lookalike.errors import ArtifactError
from lookalike.storage import POINTER, filesystem, read_pointer, write_pointer

log = logging.getLogger(__name__)


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` (the pointer layout); plain paths are local outputs."""
    return isinstance(location, str) and "://" in location


def child(location: str | Path, *parts: str) -> str:
    """``location/part/...`` keeping the URI's scheme as given (Spark needs ``s3a``, not ``s3``)."""
    return "/".join([str(location).rstrip("/"), *parts])


def exists(location: str | Path) -> bool:
    fs, path = filesystem(location)
    return bool(fs.exists(path))


def resolve(location: str | Path) -> str:
    """What a reader opens: the target of ``<location>/current.json`` when there is one, else ``location``."""
    fs, path = filesystem(location)
    if not fs.exists(f"{path}/{POINTER}"):
        return str(location)
    return child(location, str(read_pointer(str(location))["path"]))


@dataclass
class Generation:
    """One run's output directory under a pointer root; ``fields`` go into the pointer."""

    root: str
    name: str
    uri: str
    fields: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def pointer_swap(root: str, name: str) -> Iterator[Generation]:
    """Yield a fresh output directory under ``root``; point ``root/current.json`` at it on success.

    On any failure the partial directory is removed (best effort: a leftover is never
    pointed at) and the pointer is not touched.
    """
    generation = Generation(root, name, child(root, f"{name}.{uuid.uuid4().hex[:12]}"))
    try:
        yield generation
    except BaseException:
        with contextlib.suppress(Exception):
            fs, path = filesystem(generation.uri)
            if fs.exists(path):
                fs.rm(path, recursive=True)
        raise
    fs, path = filesystem(generation.uri)
    if not fs.exists(f"{path}/{MANIFEST_NAME}"):
        raise ArtifactError(f"{generation.uri} has no {MANIFEST_NAME}; the pointer under {root} was not moved")
    write_pointer(root, name, generation.uri.rsplit("/", 1)[1], **generation.fields)
    log.info("%s/%s now points at %s", root, POINTER, generation.uri)


def sha256_tree(location: str | Path, chunk: int = 1 << 20) -> str:
    """``lookalike.artifacts.sha256_tree`` of a directory on any filesystem (same digest for the same files).

    Files are streamed in chunks, so a population-sized dataset is hashed in constant memory.
    """
    fs, root = filesystem(location)
    files = [f for f in fs.find(root) if PurePosixPath(f).name != MANIFEST_NAME]
    relative = sorted(PurePosixPath(f).relative_to(PurePosixPath(root)) for f in files)
    digest = hashlib.sha256()
    for rel in relative:
        digest.update(str(rel).encode())
        file_digest = hashlib.sha256()
        with fs.open(f"{root}/{rel}", "rb") as handle:
            while block := handle.read(chunk):
                file_digest.update(block)
        digest.update(file_digest.hexdigest().encode())
    return digest.hexdigest()


def write_manifest(location: str, kind: str, **fields: Any) -> dict[str, Any]:
    """``lookalike.artifacts.write_manifest`` for a directory on any filesystem."""
    manifest = {"kind": kind, "created_at": utc_now(), "content_hash": sha256_tree(location), **fields}
    fs, path = filesystem(location)
    fs.pipe_file(f"{path}/{MANIFEST_NAME}",
                 (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())
    return manifest


def read_manifest(location: str, kind: str | None = None) -> dict[str, Any]:
    fs, path = filesystem(location)
    try:
        manifest = json.loads(fs.cat_file(f"{path}/{MANIFEST_NAME}"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"missing file: {location}/{MANIFEST_NAME}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{location}/{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(f"{location} is a {manifest.get('kind')!r} artifact, expected {kind!r}")
    return dict(manifest)


def verify_manifest(location: str, kind: str | None = None) -> dict[str, Any]:
    """``read_manifest`` plus the content hash recomputed from the files where they lie."""
    manifest = read_manifest(location, kind)
    actual = sha256_tree(location)
    if manifest.get("content_hash") != actual:
        raise ArtifactError(f"{location}: content hash mismatch (manifest {manifest.get('content_hash')}, "
                            f"actual {actual}); the artifact was modified or is incomplete")
    return manifest


def parquet_dataset(location: str | Path, **options: Any) -> Any:
    """``pyarrow.dataset`` over a Parquet file or directory on any filesystem (read lazily, in batches)."""
    import pyarrow.dataset as ds

    if not is_uri(location):
        return ds.dataset(location, format="parquet", **options)
    fs, path = filesystem(location)
    return ds.dataset(path, filesystem=fs, format="parquet", **options)


__all__ = ["Generation", "child", "exists", "is_uri", "parquet_dataset", "pointer_swap", "read_manifest",
           "resolve", "sha256_tree", "verify_manifest", "write_manifest"]
