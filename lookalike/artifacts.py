"""Atomic artifact writing, content hashes and manifests.

Every stage writes its output into a temporary sibling directory and renames it into
place only after everything (including ``manifest.json``) is written. A failed run
therefore never leaves a partial artifact and never clobbers the last good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lookalike.errors import ArtifactError
from lookalike.file_integrity import VERIFY_MODES, file_records, tree_hash, verify_records

MANIFEST_NAME = "manifest.json"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _as_if_created_normally(path: Path, directory: bool) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; give the final output the permissions a plain
    ``mkdir``/``open`` would (0777/0666 minus the umask), so the group can read the outputs."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temp directory that becomes ``final`` only if the block succeeds.

    With ``replace=True`` an existing ``final`` is swapped out after the new one is
    complete (old moved aside, new renamed in, old removed), so readers see either the
    old or the new directory, never a mix.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    _as_if_created_normally(tmp, directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and not replace:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"{final} already exists")
    replace_dir(tmp, final)


def replace_dir(staged: str | Path, final: str | Path) -> None:
    """Rename the complete directory ``staged`` onto ``final``.

    An existing ``final`` is moved aside first and removed only after the new one is in
    place, so readers see the old or the new directory, never a mix or nothing for long.
    """
    staged, final = Path(staged), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, trash)
        os.rename(staged, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staged, final)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``final``; rename over ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    _as_if_created_normally(Path(tmp_name), directory=False)
    try:
        with open(tmp_name, mode) as handle:
            yield handle
        os.replace(tmp_name, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: str | Path) -> str:
    """Hash of every file's relative path and content under ``root`` (manifest excluded)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def write_manifest(directory: str | Path, kind: str, *, record_files: bool = False,
                   **fields: Any) -> dict[str, Any]:
    """Write ``manifest.json`` with a content hash of everything else in ``directory``.

    ``record_files`` also stores each file's size, hash and sample digest (``files``), from
    the same single read, so large artifacts can be verified cheaply at load
    (:mod:`lookalike.file_integrity`).
    """
    directory = Path(directory)
    if record_files:
        records = file_records(directory, exclude=[MANIFEST_NAME])
        fields = {**fields, "files": records}
        content_hash = tree_hash(records)
    else:
        content_hash = sha256_tree(directory)
    manifest = {
        "kind": kind,
        "created_at": utc_now(),
        "content_hash": content_hash,
        **fields,
    }
    write_json(directory / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and sanity-check a manifest; ``kind`` guards against passing the wrong artifact."""
    directory = Path(directory)
    manifest = read_json(directory / MANIFEST_NAME)
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(
            f"{directory} is a {manifest.get('kind')!r} artifact, expected {kind!r}"
        )
    return dict(manifest)


def verify_manifest(directory: str | Path, kind: str | None = None, mode: str = "full") -> dict[str, Any]:
    """Like ``read_manifest`` but also verify the content: ``full`` rehashes every byte,
    ``fast`` checks sizes and sampled digests of large files (needs per-file records; a
    manifest without them is verified in full), ``none`` checks nothing."""
    if mode not in VERIFY_MODES:
        raise ArtifactError(f"verification mode must be one of {VERIFY_MODES}, got {mode!r}")
    manifest = read_manifest(directory, kind)
    records = manifest.get("files")
    if mode == "fast" and isinstance(records, dict):
        if tree_hash(records) != manifest.get("content_hash"):
            raise ArtifactError(f"{directory}: content hash mismatch: the manifest's file records do not "
                                "add up to its content hash; the manifest was edited")
        verify_records(directory, records, mode, exclude=[MANIFEST_NAME])
        return manifest
    if mode == "none":
        return manifest
    actual = sha256_tree(directory)
    if manifest.get("content_hash") != actual:
        raise ArtifactError(
            f"{directory}: content hash mismatch (manifest {manifest.get('content_hash')}, "
            f"actual {actual}); the artifact was modified or is incomplete"
        )
    return manifest
