"""Marketing segments held by opt-in customers: the training labels (consent only)."""

from entities import customer
from feast import FeatureView, Field
from feast.types import Array, String
from lookalike_repo_common import OWNER_PRIVACY, WEEKLY_TTL, feature_table_source

segment_labels_source = feature_table_source(
    "segment_labels", "Weekly snapshot of the segment ids each opt-in customer holds."
)

segment_labels = FeatureView(
    name="segment_labels",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        Field(
            name="segments",
            dtype=Array(String),
            description="Segment ids (see segment_catalog) held at the snapshot date.",
            tags={"encoding": "multi_label"},
        )
    ],
    source=segment_labels_source,
    online=False,
    owner=OWNER_PRIVACY,
    description="Segment memberships derived partly from navigation; labels only, never model input.",
    tags={"legal_basis": "consent", "domain": "segments", "pii": "yes", "lookalike_role": "labels"},
)
