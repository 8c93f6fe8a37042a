"""Content consumption: how much, when and what a customer watches (legitimate interest)."""

from entities import customer
from feast import FeatureView
from feast.types import Float64, Int64
from lookalike_repo_common import (
    CHANNELS,
    DAYPARTS,
    GENRES,
    OWNER_DATA,
    WEEKLY_TTL,
    WINDOWS,
    feature,
    feature_table_source,
)

content_consumption_source = feature_table_source(
    "content_consumption", "Weekly aggregates of viewing sessions over 7/30/90-day windows."
)


def _window_fields(window: str) -> list:
    fields = [
        feature(f"minutes_{window}", Float64, "numeric", f"Minutes watched in the {window} before the snapshot."),
        feature(f"sessions_{window}", Int64, "numeric", f"Viewing sessions started in the {window} window."),
        feature(f"active_days_{window}", Int64, "numeric", f"Distinct days with viewing in the {window} window."),
        feature(f"avg_session_min_{window}", Float64, "numeric", f"Mean session length (minutes), {window} window."),
    ]
    fields += [
        feature(f"share_genre_{genre}_{window}", Float64, "numeric",
                f"Share of {window} minutes spent on genre '{genre}' (0-1).")
        for genre in GENRES
    ]
    fields += [
        feature(f"share_daypart_{part}_{window}", Float64, "numeric",
                f"Share of {window} minutes watched in daypart '{part}' (0-1).")
        for part in DAYPARTS
    ]
    return fields


content_consumption = FeatureView(
    name="content_consumption",
    entities=[customer],
    ttl=WEEKLY_TTL,
    schema=[f for window in WINDOWS for f in _window_fields(window)]
    + [
        feature(f"share_channel_{channel}_30d", Float64, "numeric",
                f"Share of 30d minutes watched on channel '{channel}' (0-1).")
        for channel in CHANNELS
    ],
    source=content_consumption_source,
    online=True,
    owner=OWNER_DATA,
    description="Viewing behaviour on the TV/streaming service, aggregated weekly. No sensitive data.",
    tags={"legal_basis": "legitimate_interest", "domain": "content", "pii": "no"},
)
