"""Technical configuration of the home installation (legitimate interest)."""

from entities import customer
from feast import FeatureView
from feast.types import Bool, Float64, String
from lookalike_repo_common import OWNER_DATA, WEEKLY_TTL, feature, feature_table_source

tech_config_source = feature_table_source("tech_config", "Weekly snapshot of the home installation.")

tech_config = FeatureView(
    name="tech_config",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        feature("connection_type", String, "categorical", "fiber, dsl, cable or 4g."),
        feature("bandwidth_mbps", Float64, "numeric", "Contracted bandwidth (Mbit/s)."),
        feature("router_model", String, "categorical", "Router model installed."),
        feature("stb_firmware", String, "categorical", "Set-top box firmware version."),
        feature("uhd_enabled", Bool, "boolean", "UHD/4K enabled on the set-top box."),
        feature("wifi_extender", Bool, "boolean", "A Wi-Fi extender is installed."),
        feature("parental_control", Bool, "boolean", "Parental control is switched on."),
        feature("multiroom", Bool, "boolean", "Multiroom service is active."),
    ],
    source=tech_config_source,
    online=True,
    owner=OWNER_DATA,
    description="Network and set-top box configuration (technical data).",
    tags={"legal_basis": "legitimate_interest", "domain": "technical", "pii": "no"},
)
