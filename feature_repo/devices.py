"""Devices registered to the customer's account (legitimate interest)."""

from entities import customer
from feast import FeatureView
from feast.types import Bool, Float64, Int64, String
from lookalike_repo_common import OWNER_DATA, WEEKLY_TTL, feature, feature_table_source

devices_source = feature_table_source("devices", "Weekly summary of the customer's registered devices.")

devices = FeatureView(
    name="devices",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[
        feature("n_devices", Int64, "numeric", "Number of registered devices."),
        feature("has_smart_tv", Bool, "boolean", "At least one smart TV is registered."),
        feature("has_stb", Bool, "boolean", "At least one set-top box is registered."),
        feature("has_mobile", Bool, "boolean", "At least one mobile phone is registered."),
        feature("has_tablet", Bool, "boolean", "At least one tablet is registered."),
        feature("has_console", Bool, "boolean", "At least one games console is registered."),
        feature("primary_device_type", String, "categorical", "Device type with the most viewing minutes."),
        feature("primary_os", String, "categorical", "Operating system of the primary device."),
        feature("max_screen_inches", Float64, "numeric", "Largest screen size among devices (inches)."),
        feature("newest_hw_generation", Int64, "numeric", "Most recent hardware generation among devices."),
        feature("mean_device_age_years", Float64, "numeric", "Mean years since device registration."),
    ],
    source=devices_source,
    online=True,
    owner=OWNER_DATA,
    description="Device inventory of the account. Technical data, no sensitive data.",
    tags={"legal_basis": "legitimate_interest", "domain": "devices", "pii": "no"},
)
