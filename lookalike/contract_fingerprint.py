"""Recorded fingerprints of published feature-service versions.

A published service version is a promise: a model trained on ``lookalike_legit_v1`` v1 and
a bundle built for it assume the same views, fields, dtypes, tags and sources. Editing the
service in place (a view added, a dtype or a tag changed, a source swapped) without bumping
``version`` breaks that promise silently. ``<repo>/contract_fingerprints.json`` records, per
service and version, a description of the contract and its SHA-256;
:func:`check_against_record` refuses a service whose recorded version no longer matches and
names what changed. Publish a new version with ``lookalike governance record``.

A service version with no record is reported (governance review) but not refused: a repo of
someone else's data has no record until its owners publish one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from lookalike.errors import PrivacyViolationError

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "contract_fingerprints.json"


class ContractChangedError(PrivacyViolationError):
    """A published feature-service version changed without a version bump."""


def fingerprint(description: dict[str, Any]) -> str:
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_records(repo: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(repo) / FINGERPRINT_FILE
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractChangedError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(records, dict):
        raise ContractChangedError(f"{path}: expected an object of services")
    return records


def recorded(repo: str | Path, service: str, version: str) -> dict[str, Any] | None:
    entry = read_records(repo).get(service, {}).get(str(version))
    return dict(entry) if isinstance(entry, dict) else None


def record(repo: str | Path, description: dict[str, Any], *, replace: bool = False) -> str:
    """Record ``description`` (from :func:`lookalike.contract.describe_service`) as published."""
    from lookalike.artifacts import write_json

    service, version = str(description["service"]), str(description["version"])
    records = read_records(repo)
    existing = records.get(service, {}).get(version)
    digest = fingerprint(description)
    if existing and existing.get("fingerprint") != digest and not replace:
        changes = describe_changes(existing.get("contract", {}), description)
        raise ContractChangedError(
            f"{service} v{version} is already published with another contract ({'; '.join(changes[:8])}); "
            "bump the service's version tag instead of re-recording it"
        )
    records.setdefault(service, {})[version] = {"fingerprint": digest, "contract": description}
    write_json(Path(repo) / FINGERPRINT_FILE, records)
    return digest


def check_against_record(repo: str | Path | None, description: dict[str, Any]) -> str:
    """``"recorded"`` / ``"unrecorded"``; raises :class:`ContractChangedError` naming the changes."""
    if repo is None:
        return "unrecorded"
    service, version = str(description["service"]), str(description["version"])
    entry = recorded(repo, service, version)
    if entry is None:
        log.warning("feature service %s v%s has no recorded fingerprint in %s (not published yet)",
                    service, version, Path(repo) / FINGERPRINT_FILE)
        return "unrecorded"
    if entry.get("fingerprint") == fingerprint(description):
        return "recorded"
    changes = describe_changes(entry.get("contract", {}), description) or ["the recorded description differs"]
    shown = changes[:8] + ([f"... {len(changes) - 8} more"] if len(changes) > 8 else [])
    raise ContractChangedError(
        f"feature service {service} v{version} changed without a version bump: {'; '.join(shown)}. "
        f"Publish the change as a new version (tag version) and record it (`lookalike governance record`)"
    )


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two service descriptions."""
    changes = []
    if old.get("tags") != new.get("tags"):
        changes.append(f"service tags {old.get('tags')} -> {new.get('tags')}")
    old_views, new_views = old.get("views", {}), new.get("views", {})
    changes += [f"view {v} added" for v in sorted(set(new_views) - set(old_views))]
    changes += [f"view {v} removed" for v in sorted(set(old_views) - set(new_views))]
    for name in sorted(set(old_views) & set(new_views)):
        before, after = old_views[name], new_views[name]
        for key in ("kind", "tags", "tables", "upstream"):
            if before.get(key) != after.get(key):
                changes.append(f"view {name} {key} {before.get(key)} -> {after.get(key)}")
        old_fields, new_fields = before.get("fields", {}), after.get("fields", {})
        changes += [f"field {name}:{f} added" for f in sorted(set(new_fields) - set(old_fields))]
        changes += [f"field {name}:{f} removed" for f in sorted(set(old_fields) - set(new_fields))]
        for f in sorted(set(old_fields) & set(new_fields)):
            for key in ("dtype", "tags"):
                if old_fields[f].get(key) != new_fields[f].get(key):
                    changes.append(f"field {name}:{f} {key} {old_fields[f].get(key)} -> {new_fields[f].get(key)}")
    return changes
