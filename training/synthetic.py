"""A synthetic training snapshot in the contract format, for unit tests and the benchmark.

Customers belong to latent personas that drive both their features and their segments,
so a model can learn something. This is a shortcut around datagen + Spark + Feast for
fast tests and large benchmarks; integration tests use the real snapshot fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lookalike.artifacts import atomic_dir, write_manifest
from lookalike.contract import FeatureContract, FeatureSpec

SYNTHETIC_SERVICE = "lookalike_legit_v1"


def synthetic_contract(service_name: str = SYNTHETIC_SERVICE, version: str = "1") -> FeatureContract:
    specs = [
        FeatureSpec("content_consumption", "minutes_30d", "Float32", "numeric"),
        FeatureSpec("content_consumption", "sessions_30d", "Int64", "numeric"),
        FeatureSpec("content_consumption", "share_genre_sports_30d", "Float32", "numeric"),
        FeatureSpec("content_consumption", "share_genre_kids_30d", "Float32", "numeric"),
        FeatureSpec("content_consumption", "share_daypart_late_30d", "Float32", "numeric"),
        FeatureSpec("devices", "n_devices", "Int64", "numeric"),
        FeatureSpec("devices", "has_console", "Bool", "boolean"),
        FeatureSpec("devices", "primary_device_type", "String", "categorical"),
        FeatureSpec("profile", "age", "Int64", "numeric"),
        FeatureSpec("profile", "plan", "String", "categorical"),
        FeatureSpec("profile", "region_code", "String", "high_cardinality"),
        FeatureSpec("profile", "is_family_plan", "Bool", "boolean"),
        FeatureSpec("mobile_roaming", "roaming_days_90d", "Float32", "numeric"),
        FeatureSpec("tech_config", "uhd_enabled", "Bool", "boolean"),
    ]
    return FeatureContract(service_name=service_name, service_version=version, features=tuple(specs))


def synthetic_frame(n: int, seed: int = 0, n_segments: int = 20, personas: int = 8) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    persona = rng.integers(0, personas, n)
    intensity = rng.gamma(2.0, 1.0, n)
    centers = rng.normal(0, 1, (personas, 6))
    c = centers[persona] + rng.normal(0, 0.6, (n, 6))
    plans = np.array(["basic", "standard", "premium", "sports", "family"])
    devices = np.array(["smart_tv", "stb", "mobile", "tablet", "console", "pc"])
    regions = np.array([f"R{i:04d}" for i in range(400)])
    region_pref = rng.integers(0, 400, (personas, 5))
    region_idx = np.where(rng.random(n) < 0.6, region_pref[persona, rng.integers(0, 5, n)], rng.integers(0, 400, n))
    frame = pd.DataFrame({
        "customer_id": np.arange(1, n + 1, dtype=np.int64) * 7 + 1000,
        "event_timestamp": pd.Timestamp("2026-11-22", tz="UTC"),
        "content_consumption__minutes_30d": (np.exp(c[:, 0]) * 300 * intensity).astype(np.float32),
        "content_consumption__sessions_30d": rng.poisson(np.exp(c[:, 0]) * 10).astype(np.int64),
        "content_consumption__share_genre_sports_30d": (1 / (1 + np.exp(-2 * c[:, 1]))).astype(np.float32),
        "content_consumption__share_genre_kids_30d": (1 / (1 + np.exp(-2 * c[:, 2]))).astype(np.float32),
        "content_consumption__share_daypart_late_30d": (1 / (1 + np.exp(-2 * c[:, 3]))).astype(np.float32),
        "devices__n_devices": rng.poisson(1 + np.abs(c[:, 4])).astype(np.int64),
        "devices__has_console": c[:, 5] > 0.5,
        "devices__primary_device_type": devices[(persona + rng.integers(0, 2, n)) % len(devices)],
        "profile__age": np.clip(40 + 12 * c[:, 4] + rng.normal(0, 5, n), 18, 90).astype(np.int64),
        "profile__plan": plans[(persona + (rng.random(n) < 0.3)) % len(plans)],
        "profile__region_code": regions[region_idx],
        "profile__is_family_plan": c[:, 2] > 0.3,
        "mobile_roaming__roaming_days_90d": np.maximum(0, 3 * c[:, 3] + rng.normal(0, 1, n)).astype(np.float32),
        "tech_config__uhd_enabled": rng.random(n) < 0.3 + 0.1 * (persona % 3),
    })
    # Customers without rows in a view inside the TTL: nulls, as the snapshot keeps them.
    no_tech = rng.random(n) < 0.05
    frame["tech_config__uhd_enabled"] = frame["tech_config__uhd_enabled"].astype(object).where(~no_tech, None)
    no_mobile = rng.random(n) < 0.1
    frame.loc[no_mobile, "mobile_roaming__roaming_days_90d"] = np.nan
    vocabulary = [f"S{i:02d}" for i in range(n_segments)]
    affinity = rng.dirichlet(np.full(n_segments, 0.3), personas)
    segments: list[list[str]] = []
    for i in range(n):
        if rng.random() < 0.02:
            segments.append([])
            continue
        k = int(rng.integers(1, 5))
        chosen = rng.choice(n_segments, size=k, replace=False, p=affinity[persona[i]])
        segments.append(sorted(vocabulary[j] for j in chosen))
    frame["segments"] = segments
    return frame, vocabulary


def write_snapshot(
    directory: str | Path, frame: pd.DataFrame, contract: FeatureContract, vocabulary: list[str],
    label_date: str = "2026-11-22",
) -> Path:
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        frame.to_parquet(tmp / "data.parquet", index=False)
        write_manifest(
            tmp, "training_snapshot",
            feature_service=contract.service_name,
            feature_service_version=contract.service_version,
            contract=contract.to_dict(),
            label_date=label_date,
            feature_repo="synthetic",
            row_count=len(frame),
            rows_missing_features={},
            segment_vocabulary=list(vocabulary),
        )
    return directory


def make_synthetic_snapshot(directory: str | Path, n: int = 2000, seed: int = 0) -> Path:
    frame, vocabulary = synthetic_frame(n, seed)
    return write_snapshot(directory, frame, synthetic_contract(), vocabulary)
