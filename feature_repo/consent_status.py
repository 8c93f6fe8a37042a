"""Consent (opt-in) status per customer: decides who is an anchor and who is served labels."""

from entities import customer
from feast import FeatureView, Field
from feast.types import Bool, UnixTimestamp
from lookalike_repo_common import OWNER_PRIVACY, WEEKLY_TTL, feature_table_source

consent_status_source = feature_table_source(
    "consent_status", "Weekly snapshot of each customer's consent to sensitive-data use."
)

consent_status = FeatureView(
    name="consent_status",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        Field(name="opt_in", dtype=Bool, description="Consent to sensitive-data use is valid at the snapshot.",
              tags={"encoding": "boolean"}),
        Field(name="consent_valid_from", dtype=UnixTimestamp,
              description="Start of the consent record in force at the snapshot.", tags={"encoding": "timestamp"}),
    ],
    source=consent_status_source,
    online=True,
    owner=OWNER_PRIVACY,
    description="Consent register (the record of consent itself); gates anchors and label serving.",
    tags={"legal_basis": "consent", "domain": "consent", "pii": "no", "lookalike_role": "consent"},
)
