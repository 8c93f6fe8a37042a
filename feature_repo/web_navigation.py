"""Web navigation (SENSITIVE: consent only, opt-in customers only).

Never a model input, never materialized online. Tagged ``lookalike_role: privileged``: its
single permitted use is training the teacher tower (training/distill.py), read only through
``lookalike.privileged`` and only for customers with valid consent at the label date.
"""

from entities import customer
from feast import FeatureView
from feast.types import Float64, Int64
from lookalike_repo_common import NAV_CATEGORIES, OWNER_PRIVACY, WEEKLY_TTL, feature, feature_table_source

web_navigation_source = feature_table_source(
    "web_navigation", "Weekly aggregates of web navigation events (opt-in customers only)."
)

web_navigation = FeatureView(
    name="web_navigation",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[feature("nav_sessions_30d", Int64, "numeric", "Web navigation sessions, last 30 days.")]
    + [
        feature(f"nav_share_{category}_30d", Float64, "numeric",
                f"Share of 30d navigation time in category '{category}' (0-1).")
        for category in NAV_CATEGORIES
    ],
    source=web_navigation_source,
    online=False,
    owner=OWNER_PRIVACY,
    description="Browsing behaviour. Sensitive: usable only with explicit consent (opt-in).",
    tags={"legal_basis": "consent", "domain": "navigation", "pii": "yes", "lookalike_role": "privileged"},
)
