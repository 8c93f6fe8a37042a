"""Mobile usage and roaming (legitimate interest)."""

from entities import customer
from feast import FeatureView
from feast.types import Float64, Int64
from lookalike_repo_common import OWNER_DATA, WEEKLY_TTL, feature, feature_table_source

mobile_roaming_source = feature_table_source("mobile_roaming", "Weekly aggregates of mobile and roaming usage.")

mobile_roaming = FeatureView(
    name="mobile_roaming",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        feature("data_gb_7d", Float64, "numeric", "Mobile data used in the last 7 days (GB)."),
        feature("data_gb_30d", Float64, "numeric", "Mobile data used in the last 30 days (GB)."),
        feature("voice_min_30d", Float64, "numeric", "Voice minutes in the last 30 days."),
        feature("sms_30d", Int64, "numeric", "SMS sent in the last 30 days."),
        feature("intl_call_min_30d", Float64, "numeric", "International call minutes, last 30 days."),
        feature("share_5g_30d", Float64, "numeric", "Share of 30d data traffic on 5G (0-1)."),
        feature("roaming_days_90d", Int64, "numeric", "Days with roaming activity, last 90 days."),
        feature("roaming_data_gb_90d", Float64, "numeric", "Roaming data used in the last 90 days (GB)."),
        feature("roaming_countries_90d", Int64, "numeric", "Distinct roaming countries, last 90 days."),
    ],
    source=mobile_roaming_source,
    online=True,
    owner=OWNER_DATA,
    description="Mobile line usage and roaming, aggregated weekly (billing data, no content).",
    tags={"legal_basis": "legitimate_interest", "domain": "mobile", "pii": "no"},
)
