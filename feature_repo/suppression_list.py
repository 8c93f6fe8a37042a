"""Objections to profiling: suppressed customers get no lookalike segments (legal obligation)."""

from entities import customer
from feast import FeatureView, Field
from feast.types import Bool, UnixTimestamp
from lookalike_repo_common import OWNER_PRIVACY, WEEKLY_TTL, feature_table_source

suppression_list_source = feature_table_source(
    "suppression_list", "Weekly snapshot of customers who objected to profiling."
)

suppression_list = FeatureView(
    name="suppression_list",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        Field(name="suppressed", dtype=Bool, description="The customer objected to profiling.",
              tags={"encoding": "boolean"}),
        Field(name="objected_at", dtype=UnixTimestamp, description="When the objection was received.",
              tags={"encoding": "timestamp"}),
    ],
    source=suppression_list_source,
    online=True,
    owner=OWNER_PRIVACY,
    description="Right-to-object register; processed under legal obligation (a legitimate-interest duty).",
    tags={"legal_basis": "legitimate_interest", "domain": "suppression", "pii": "no",
          "lookalike_role": "suppression"},
)
