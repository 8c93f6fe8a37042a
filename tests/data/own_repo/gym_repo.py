"""Gym & sports-retail operator: every Feast object of the repo in one file.

Contract pieces the lookalike pipeline relies on:
- entity ``customer`` with join key ``customer_id`` (INT64);
- one feature service tagged ``lookalike_role=model_input`` whose views are all tagged
  ``legal_basis=legitimate_interest`` and whose fields all carry an ``encoding`` tag;
- views tagged ``lookalike_role`` = ``consent`` (fields ``opt_in``, ``consent_valid_from``),
  ``labels`` (one list<string> field) and, optionally, ``suppression`` (field ``suppressed``).
Sources are Parquet datasets under ``$LOOKALIKE_DATA_DIR/<view>`` (weekly snapshots with
``customer_id``, ``event_timestamp``, ``created_timestamp``).
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float64, Int64, String, UnixTimestamp

DATA = Path(os.environ.get("LOOKALIKE_DATA_DIR", Path(__file__).parent / "data" / "features")).resolve()
TTL = timedelta(days=8)
LI = {"legal_basis": "legitimate_interest", "domain": "gym", "pii": "no"}


def source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=str(DATA / name), timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp")


def num(name: str) -> Field:
    return Field(name=name, dtype=Float64, tags={"encoding": "numeric"})


customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="A gym member.")

gym_visits = FeatureView(
    name="gym_visits", entities=[customer], ttl=TTL, source=source("gym_visits"), online=True, tags=LI,
    schema=[num("visits_30d"), num("avg_visit_min_30d"), num("share_classes_30d"), num("share_weights_30d"),
            num("share_pool_30d"), num("share_early_morning_30d")],
)

member_profile = FeatureView(
    name="member_profile", entities=[customer], ttl=timedelta(days=35), source=source("member_profile"),
    online=True, tags=LI,
    schema=[Field(name="age", dtype=Int64, tags={"encoding": "numeric"}),
            Field(name="membership_tier", dtype=String, tags={"encoding": "categorical"}),
            Field(name="home_club", dtype=String, tags={"encoding": "high_cardinality"}),
            Field(name="has_family_plan", dtype=Bool, tags={"encoding": "boolean"})],
)

shop_purchases = FeatureView(
    name="shop_purchases", entities=[customer], ttl=TTL, source=source("shop_purchases"), online=True, tags=LI,
    schema=[num("spend_90d"), num("orders_90d"), num("share_supplements_90d"), num("share_apparel_90d")],
)

member_consent = FeatureView(
    name="member_consent", entities=[customer], ttl=TTL, source=source("member_consent"), online=True,
    tags={"legal_basis": "consent", "domain": "consent", "pii": "no", "lookalike_role": "consent"},
    schema=[Field(name="opt_in", dtype=Bool, tags={"encoding": "boolean"}),
            Field(name="consent_valid_from", dtype=UnixTimestamp, tags={"encoding": "timestamp"})],
)

member_interests = FeatureView(
    name="member_interests", entities=[customer], ttl=TTL, source=source("member_interests"), online=False,
    tags={"legal_basis": "consent", "domain": "segments", "pii": "yes", "lookalike_role": "labels"},
    schema=[Field(name="interests", dtype=Array(String), tags={"encoding": "multi_label"})],
)

objections = FeatureView(
    name="objections", entities=[customer], ttl=TTL, source=source("objections"), online=True,
    tags={"legal_basis": "legitimate_interest", "domain": "suppression", "pii": "no",
          "lookalike_role": "suppression"},
    schema=[Field(name="suppressed", dtype=Bool, tags={"encoding": "boolean"}),
            Field(name="objected_at", dtype=UnixTimestamp, tags={"encoding": "timestamp"})],
)

gym_lookalike_v1 = FeatureService(
    name="gym_lookalike_v1", features=[gym_visits, member_profile, shop_purchases],
    tags={"version": "1", "lookalike_role": "model_input"},
    description="Legitimate-interest inputs of the gym lookalike encoder.",
)
