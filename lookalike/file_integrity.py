"""Per-file integrity records for artifact directories: full and fast verification.

A manifest's ``content_hash`` covers every file, but recomputing it means reading every
byte: 768 MB for a 1M-anchor index bundle with 2M population embeddings, seconds of a
service's start-up. :func:`file_records` therefore also keeps, per file, its size, its
SHA-256 and a *sample digest* (SHA-256 of the size and of 64 KiB blocks at fixed offsets:
both ends and evenly in between), all computed in the single pass that writes the manifest.

:func:`verify_records` then checks a directory in one of two modes:

- ``full``: every file's SHA-256 (reads everything). Catches any change, bit rot included.
- ``fast``: the exact file list, every file's size, the full SHA-256 of every file up to
  ``FULL_HASH_MAX_BYTES`` (manifests' companions, ids, labels, JSON) and the sample digest
  of larger ones (index, embeddings). Catches truncated or incomplete copies, a replaced or
  rewritten file, a missing or extra file and any change to a small file, reading ~8 MB
  whatever the bundle size. It does not catch a change confined to bytes between the
  sampled blocks of a large file (silent bit rot): that is what ``full`` is for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from lookalike.errors import ArtifactError

VerifyMode = Literal["full", "fast", "none"]
VERIFY_MODES: tuple[str, ...] = ("full", "fast", "none")
FULL_HASH_MAX_BYTES = 16 * 1024 * 1024
SAMPLE_BLOCK_BYTES = 64 * 1024
SAMPLE_BLOCKS = 64
_READ_CHUNK = 1 << 20


def artifact_files(root: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Every file under ``root`` but the excluded names, in the manifest's (sorted) order."""
    skip = set(exclude)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _sample_offsets(size: int) -> list[int]:
    if size <= SAMPLE_BLOCK_BYTES * SAMPLE_BLOCKS:
        return list(range(0, size, SAMPLE_BLOCK_BYTES))
    last = size - SAMPLE_BLOCK_BYTES
    return [round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)]


def sample_digest(path: str | Path) -> str:
    """SHA-256 of the file size and of 64 KiB blocks at fixed offsets (~4 MB read at most)."""
    size = Path(path).stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in _sample_offsets(size):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def file_records(root: str | Path, exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes", "sha256", "sample_sha256"}}`` for every file under ``root``."""
    root = Path(root)
    records = {}
    for path in artifact_files(root, exclude):
        records[str(path.relative_to(root))] = {
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "sample_sha256": sample_digest(path),
        }
    return records


def tree_hash(records: dict[str, dict[str, Any]]) -> str:
    """The manifest's ``content_hash`` from per-file records (same value as hashing the tree)."""
    digest = hashlib.sha256()
    for name in sorted(records, key=Path):  # the order of sorted paths, as the tree hash walks them
        digest.update(name.encode())
        digest.update(str(records[name]["sha256"]).encode())
    return digest.hexdigest()


def verify_records(root: str | Path, records: dict[str, dict[str, Any]], mode: str,
                   exclude: Iterable[str] = ()) -> None:
    """Raise :class:`ArtifactError` naming the first file that does not match its record."""
    if mode not in VERIFY_MODES:
        raise ArtifactError(f"bundle verification must be one of {VERIFY_MODES}, got {mode!r}")
    if mode == "none":
        return
    root = Path(root)
    present = {str(p.relative_to(root)): p for p in artifact_files(root, exclude)}
    missing = sorted(set(records) - set(present))
    extra = sorted(set(present) - set(records))
    if missing or extra:
        raise ArtifactError(f"{root}: content hash mismatch: files missing {missing[:5]}, unexpected {extra[:5]}; "
                            "the artifact was modified or is incomplete")
    for name, record in records.items():
        path = present[name]
        size = path.stat().st_size
        if size != int(record["bytes"]):
            raise ArtifactError(f"{root}: content hash mismatch: {name} has {size} bytes, the manifest "
                                f"{record['bytes']} (truncated or replaced)")
        if mode == "full" or size <= FULL_HASH_MAX_BYTES:
            matches = sha256_file(path) == record["sha256"]
        else:
            matches = sample_digest(path) == record["sample_sha256"]
        if not matches:
            raise ArtifactError(f"{root}: content hash mismatch in {name}; the artifact was modified "
                                f"({mode} verification)")
