"""Loading and validating a training snapshot (docs/contracts.md section 4)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lookalike.artifacts import verify_manifest
from lookalike.contract import COLUMN_SEPARATOR, JOIN_KEY, FeatureContract, load_contract
from lookalike.errors import ArtifactError, DataValidationError
from lookalike.uri_outputs import child, exists, is_uri, parquet_dataset, resolve
from lookalike.uri_outputs import verify_manifest as verify_uri_manifest

log = logging.getLogger(__name__)

SNAPSHOT_KIND = "training_snapshot"
DATA_FILE = "data.parquet"
SEGMENTS_COLUMN = "segments"
REQUIRED_MANIFEST_FIELDS = ("feature_service", "feature_service_version", "contract", "segment_vocabulary")


@dataclass
class Snapshot:
    path: Path | str  # a local directory or the URI it was read from
    frame: pd.DataFrame
    manifest: dict[str, Any]
    contract: FeatureContract
    vocabulary: list[str]

    @property
    def customer_ids(self) -> np.ndarray:
        return self.frame[JOIN_KEY].to_numpy(dtype=np.int64)

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash", ""))

    def label_matrix(self) -> np.ndarray:
        return segments_to_matrix(self.frame[SEGMENTS_COLUMN], self.vocabulary)


def segments_to_matrix(segments: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Binary (n, len(vocabulary)) float32 matrix; raises on ids outside the vocabulary."""
    position = {s: i for i, s in enumerate(vocabulary)}
    matrix = np.zeros((len(segments), len(vocabulary)), dtype=np.float32)
    unknown: set[str] = set()
    for row, held in enumerate(segments):
        if held is None or (isinstance(held, float) and np.isnan(held)):
            continue
        for segment in held:
            col = position.get(str(segment))
            if col is None:
                unknown.add(str(segment))
            else:
                matrix[row, col] = 1.0
    if unknown:
        raise DataValidationError(
            f"label column {SEGMENTS_COLUMN!r} holds segment id(s) not in the snapshot's "
            f"segment_vocabulary: {sorted(unknown)[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return matrix


def load_snapshot(path: str | Path, min_customers: int = 100) -> Snapshot:
    """Read ``data.parquet`` + ``manifest.json`` and validate them against each other.

    ``path`` is a snapshot directory or a URI (``file://``, ``s3a://``, ``gs://``, ``hdfs://``):
    a generation written by ``lookalike snapshot --out <uri>``, or its date directory, whose
    ``current.json`` is followed. The manifest hash is recomputed from the stored files
    (streamed) and the rows are read in record batches through the URI's filesystem.
    """
    location: str | Path = resolve(path) if is_uri(path) else Path(path)
    try:
        if is_uri(location):
            if not exists(location):
                raise DataValidationError(f"snapshot not found: {location}")
            manifest = verify_uri_manifest(str(location), SNAPSHOT_KIND)
        else:
            if not Path(location).is_dir():
                raise DataValidationError(f"snapshot directory not found: {location}")
            manifest = verify_manifest(location, SNAPSHOT_KIND)
    except ArtifactError as exc:
        raise DataValidationError(f"invalid training snapshot: {exc}") from exc
    missing_fields = [f for f in REQUIRED_MANIFEST_FIELDS if f not in manifest]
    if missing_fields:
        raise DataValidationError(f"{path}/manifest.json lacks field(s) {missing_fields}")
    try:
        contract = FeatureContract.from_dict(manifest["contract"])
    except (KeyError, TypeError) as exc:
        raise DataValidationError(f"{path}/manifest.json: malformed contract: {exc}") from exc
    if contract.service_name != manifest["feature_service"] or (
        contract.service_version != str(manifest["feature_service_version"])
    ):
        raise DataValidationError(
            f"snapshot manifest names feature service {manifest['feature_service']!r} v"
            f"{manifest['feature_service_version']} but its contract is {contract.service_name!r} "
            f"v{contract.service_version}"
        )
    if not contract.features:
        raise DataValidationError(f"snapshot contract of {contract.service_name!r} lists no features")
    vocabulary = [str(s) for s in manifest["segment_vocabulary"]]
    if not vocabulary:
        raise DataValidationError("snapshot segment_vocabulary is empty")
    data_file = child(location, DATA_FILE) if is_uri(location) else Path(location) / DATA_FILE
    if not exists(data_file):
        raise DataValidationError(f"snapshot data file missing: {data_file}")
    frame = read_snapshot_frame(data_file)
    validate_frame(frame, contract, min_customers)
    snapshot = Snapshot(location, frame.reset_index(drop=True), manifest, contract, vocabulary)
    snapshot.label_matrix()  # validates segment ids against the vocabulary
    return snapshot


def read_snapshot_frame(data: str | Path, batch_rows: int = 65_536) -> pd.DataFrame:
    """The snapshot's rows, read in streamed record batches (one file, or Spark's part files).

    Each batch becomes pandas and its Arrow buffers are released before the next is read, so
    the Arrow copy of the whole snapshot never sits next to the pandas frame; peak memory is
    the kept frame plus one batch (plus the final concatenation). Spark's marker files
    (``_SUCCESS``, ``.crc``) are ignored.
    """
    dataset = parquet_dataset(data, exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    pieces = [batch.to_pandas() for batch in dataset.to_batches(batch_size=batch_rows)]
    if not pieces:
        return dataset.schema.empty_table().to_pandas()
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)


def validate_frame(frame: pd.DataFrame, contract: FeatureContract, min_customers: int) -> None:
    required = [JOIN_KEY, SEGMENTS_COLUMN, *contract.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"snapshot data does not match feature service {contract.service_name!r} "
            f"v{contract.service_version}: missing column(s) {missing}"
        )
    # Feature-like columns the contract does not know mean the snapshot came from another service.
    known = set(required)
    extra = [c for c in frame.columns if c not in known and COLUMN_SEPARATOR in c]
    ignored = [c for c in frame.columns if c not in known and COLUMN_SEPARATOR not in c]
    if ignored:
        log.debug("snapshot columns not used for training: %s", ignored)
    if extra:
        raise DataValidationError(
            f"snapshot data has column(s) not in feature service {contract.service_name!r} "
            f"v{contract.service_version}: {extra}"
        )
    if len(frame) < min_customers:
        raise DataValidationError(
            f"snapshot has {len(frame)} customer(s); training needs at least {min_customers} "
            "(min_customers)"
        )
    if frame[JOIN_KEY].isna().any():
        raise DataValidationError(f"snapshot has null {JOIN_KEY} values")
    duplicated = frame[JOIN_KEY].duplicated()
    if duplicated.any():
        examples = frame.loc[duplicated, JOIN_KEY].head(5).tolist()
        raise DataValidationError(f"snapshot has duplicate {JOIN_KEY} values, e.g. {examples}")
    all_null = [c for c in contract.columns if frame[c].isna().all()]
    if all_null:
        raise DataValidationError(
            f"snapshot column(s) entirely null (broken upstream join or feature job?): {all_null}"
        )


def guard_against_repo(repo: str | Path, contract: FeatureContract) -> FeatureContract:
    """Re-run the privacy guard on the live registry and require it to match the snapshot.

    Raises ``PrivacyViolationError`` when the snapshot's feature service now includes a
    non-legitimate-interest view, and ``DataValidationError`` when the registry's contract
    differs from the one the snapshot was built with.
    """
    from feast import FeatureStore

    repo = Path(repo)
    if not (repo / "feature_store.yaml").is_file():
        raise DataValidationError(f"{repo} is not a Feast repo (no feature_store.yaml)")
    store = FeatureStore(repo_path=str(repo))
    live = load_contract(store, contract.service_name)
    differences = describe_contract_difference(contract, live)
    if differences:
        raise DataValidationError(
            f"snapshot contract does not match feature service {contract.service_name!r} in {repo}: "
            + "; ".join(differences)
        )
    return live


def describe_contract_difference(snapshot: FeatureContract, live: FeatureContract) -> list[str]:
    problems = []
    if snapshot.service_version != live.service_version:
        problems.append(f"version {snapshot.service_version} in snapshot vs {live.service_version} in registry")
    snap = {f.column: f for f in snapshot.features}
    reg = {f.column: f for f in live.features}
    if missing := sorted(set(reg) - set(snap)):
        problems.append(f"column(s) missing from snapshot {missing}")
    if extra := sorted(set(snap) - set(reg)):
        problems.append(f"column(s) not in the registry {extra}")
    for column in sorted(set(snap) & set(reg)):
        a, b = snap[column], reg[column]
        if (a.dtype, a.encoding) != (b.dtype, b.encoding):
            problems.append(f"{column}: {a.dtype}/{a.encoding} in snapshot vs {b.dtype}/{b.encoding} in registry")
    return problems
