"""Fault suite, feature job on a URI root: SIGKILL after Spark wrote some tables of a new run.

The killed run cannot clean up, so its generation directory stays behind, but
``current.json`` still names the last good tables, byte for byte, and readers (Feast's
sources) resolve to them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from lookalike.artifacts import sha256_tree
from lookalike.uri_outputs import resolve, verify_manifest
from tests.fault.test_weekly_kill import kill_when
from tests.fixtures.data import LABEL_DATE, RUN_DATE

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def test_sigkill_mid_write_keeps_the_pointer_on_the_last_good_tables(tmp_path: Path, spark: Any) -> None:
    from lookalike.datagen import DatagenConfig
    from lookalike.datagen import run as datagen
    from spark_jobs.runner import FeaturesConfig
    from spark_jobs.runner import run as build_features

    raw = datagen(DatagenConfig(customers=300, seed=5, out_dir=tmp_path / "raw"))
    root_dir = tmp_path / "features"
    root = f"file://{root_dir}"
    build_features(FeaturesConfig(raw_dir=raw, out_dir=root, start_date=LABEL_DATE, end_date=RUN_DATE,
                                  shuffle_partitions=2), spark=spark)
    good = resolve(root)
    good_dir = root_dir / good.rsplit("/", 1)[1]
    pointer, tables = (root_dir / "current.json").read_text(), sha256_tree(good_dir)

    def second_run_wrote_a_table() -> bool:
        return any((g / "content_consumption" / "_SUCCESS").exists()
                   for g in root_dir.glob("features.*") if g != good_dir)

    argv = [sys.executable, "-m", "lookalike", "features", "--raw-dir", str(raw), "--out-dir", root,
            "--start-date", LABEL_DATE, "--end-date", RUN_DATE, "shuffle_partitions=2"]
    kill_when(argv, second_run_wrote_a_table, tmp_path / "kill.log", timeout_s=600)

    assert (root_dir / "current.json").read_text() == pointer
    assert sha256_tree(good_dir) == tables and verify_manifest(resolve(root), "feature_tables")
    orphans = [g for g in root_dir.glob("features.*") if g != good_dir]
    assert len(orphans) == 1 and not (orphans[0] / "manifest.json").exists()  # never pointed at
