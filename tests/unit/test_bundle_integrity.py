"""Bundle integrity at load: the service's fast check and the full rehash (lookalike.file_integrity)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from index_builder import faiss_backend
from index_builder.bundle import AssignmentSpec, load_bundle, write_bundle
from index_builder.population_embeddings import EMBEDDINGS_FILE, add_population
from lookalike import file_integrity
from lookalike.cli import main as cli_main
from lookalike.errors import ArtifactError

pytestmark = pytest.mark.unit
DIM = 8


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundle whose population embeddings count as a large file (sampled in fast mode)."""
    monkeypatch.setattr(file_integrity, "FULL_HASH_MAX_BYTES", 64 * 1024)
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(200, DIM)).astype(np.float32)
    built = faiss_backend.build_index(anchors, faiss_backend.IndexParams(type="flat"))
    spec = AssignmentSpec(k=3, aggregation="majority", segments=["a"], thresholds=[0.5])
    path = tmp_path / "b"
    write_bundle(path, built, np.arange(200), sp.csr_matrix(np.ones((200, 1))), spec,
                 index_version="v", model_version="1")
    n = 200_000  # 200k x 8 float32 = 6.4 MB: large, and more than the 64 sampled 64 KiB blocks
    add_population(path, np.arange(n) + 10_000, rng.normal(size=(n, DIM)).astype(np.float32), np.zeros(n, bool))
    return path


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))


def test_manifest_records_every_file_and_both_modes_accept_an_intact_bundle(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"index.faiss", "anchor_ids.npy", EMBEDDINGS_FILE}
    assert file_integrity.tree_hash(manifest["files"]) == manifest["content_hash"]
    assert load_bundle(bundle, verify="fast").index_version == "v"
    assert load_bundle(bundle, verify="full").index_version == "v"


def test_fast_check_refuses_truncated_replaced_missing_and_extra_files(bundle: Path) -> None:
    embeddings = bundle / EMBEDDINGS_FILE
    original = embeddings.read_bytes()
    embeddings.write_bytes(original[:-4096])  # an interrupted copy
    with pytest.raises(ArtifactError, match=rf"content hash mismatch: {EMBEDDINGS_FILE} has .*truncated"):
        load_bundle(bundle, verify="fast")
    embeddings.write_bytes(original)
    flip_byte(embeddings, 200)  # inside the first sampled block: the npy header's neighbourhood
    with pytest.raises(ArtifactError, match=f"content hash mismatch in {EMBEDDINGS_FILE}"):
        load_bundle(bundle, verify="fast")
    embeddings.write_bytes(original)
    np.save(bundle / "anchor_ids.npy", np.arange(200) + 1)  # small file, same size: hashed in full
    with pytest.raises(ArtifactError, match="content hash mismatch in anchor_ids.npy"):
        load_bundle(bundle, verify="fast")
    np.save(bundle / "anchor_ids.npy", np.arange(200))
    (bundle / "stray.npy").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unexpected \\['stray.npy'\\]"):
        load_bundle(bundle, verify="fast")
    (bundle / "stray.npy").unlink()
    (bundle / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="missing \\['index.faiss'\\]"):
        load_bundle(bundle, verify="fast")


def test_change_between_sampled_blocks_needs_the_full_check(bundle: Path) -> None:
    """What fast mode gives up, stated as a test: bit rot away from the sampled blocks."""
    embeddings = bundle / EMBEDDINGS_FILE
    offsets = file_integrity._sample_offsets(embeddings.stat().st_size)
    gap = next(a + file_integrity.SAMPLE_BLOCK_BYTES + 1 for a, b in zip(offsets, offsets[1:], strict=False)
               if b - a > file_integrity.SAMPLE_BLOCK_BYTES + 2)
    flip_byte(embeddings, gap)
    load_bundle(bundle, verify="fast")
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_bundle(bundle, verify="full")
    assert cli_main(["verify-bundle", str(bundle)]) == 1  # the CLI rehashes every byte
    assert cli_main(["verify-bundle", str(bundle), "--mode", "fast"]) == 0


def test_edited_records_and_old_manifests(bundle: Path) -> None:
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # records rewritten to match a swapped file, content hash left alone: refused
    forged = json.loads(json.dumps(manifest))
    forged["files"]["anchor_ids.npy"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(forged))
    with pytest.raises(ArtifactError, match="do not add up to its content hash"):
        load_bundle(bundle, verify="fast")
    # a bundle written before per-file records: fast falls back to the full rehash
    manifest.pop("files")
    manifest_path.write_text(json.dumps(manifest))
    flip_byte(bundle / EMBEDDINGS_FILE, (bundle / EMBEDDINGS_FILE).stat().st_size // 2 + 3)
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_bundle(bundle, verify="fast")
    with pytest.raises(ArtifactError, match="must be one of"):
        load_bundle(bundle, verify="sometimes")
