"""Each way around the privacy guard, on real Feast definition objects (no registry I/O).

The registry stand-in answers the same lookups ``feast.FeatureStore`` does; the applied
registry path is covered in tests/integration/test_governance.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from lookalike.contract import describe_service, load_contract, service_views
from lookalike.contract_fingerprint import ContractChangedError, record
from lookalike.errors import ConfigError, PrivacyViolationError
from lookalike.privacy_policy import POLICY_FILE, PrivacyPolicy, ViewFacts, load_policy, model_input_problems

pytestmark = pytest.mark.unit

REPO_POLICY = Path(__file__).resolve().parents[2] / "feature_repo" / POLICY_FILE
LI = {"legal_basis": "legitimate_interest", "domain": "devices", "pii": "no"}
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)


def source(table: str) -> FileSource:
    return FileSource(name=f"{table}_source", path=f"/data/features/{table}", timestamp_field="event_timestamp")


def view(name: str, table: str, fields: list[str], tags: dict[str, str] | None = None, **kwargs: Any) -> FeatureView:
    schema = [Field(name=f, dtype=Float64, tags={"encoding": "numeric"}) for f in fields]
    return FeatureView(name=name, entities=[customer], schema=schema, source=kwargs.pop("src", None) or source(table),
                       tags=dict(LI if tags is None else tags), **kwargs)


class Registry:
    """What ``load_contract`` asks of a ``feast.FeatureStore``, over in-memory objects."""

    def __init__(self, repo: Path, *objects: Any) -> None:
        self.repo_path = str(repo)
        self.views = {o.name: o for o in objects if isinstance(o, FeatureView)}
        self.odfvs = {o.name: o for o in objects if not isinstance(o, (FeatureView, FeatureService))}
        self.services = {o.name: o for o in objects if isinstance(o, FeatureService)}

    def get_feature_view(self, name: str) -> Any:
        return self.views[name]

    def get_on_demand_feature_view(self, name: str) -> Any:
        return self.odfvs[name]

    def get_stream_feature_view(self, name: str) -> Any:
        raise KeyError(name)

    def get_feature_service(self, name: str) -> Any:
        return self.services[name]

    def list_feature_services(self) -> list[Any]:
        return list(self.services.values())


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    (tmp_path / POLICY_FILE).write_text(REPO_POLICY.read_text())
    return tmp_path


devices = view("devices", "devices", ["n_devices", "max_screen_inches"])


def service(*views: Any, version: str = "1") -> FeatureService:
    return FeatureService(name="svc_v1", features=list(views), tags={"version": version,
                                                                    "lookalike_role": "model_input"})


def refused(registry: Registry, *expected: str) -> str:
    with pytest.raises(PrivacyViolationError) as info:
        load_contract(registry, "svc_v1")
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message
    return message


def test_clean_service_passes(repo: Path) -> None:
    contract = load_contract(Registry(repo, devices, service(devices)), "svc_v1")
    assert contract.columns == ["devices__n_devices", "devices__max_screen_inches"]


def test_lying_legal_basis_with_pii_and_navigation_domain_is_refused(repo: Path) -> None:
    # The probe: web_navigation re-tagged legitimate interest, its other tags honest.
    nav = view("web_navigation", "web_navigation", ["nav_sessions_30d"],
               {"legal_basis": "legitimate_interest", "domain": "navigation", "pii": "yes"})
    message = refused(Registry(repo, devices, nav, service(devices, nav)), "web_navigation", "pii=yes",
                      "sensitive domain=navigation", "reads denied source table(s) ['web_navigation']")
    assert "devices (" not in message


def test_fully_lying_tags_are_refused_by_the_deny_list(repo: Path) -> None:
    renamed = view("engagement", "web_navigation", ["nav_share_crypto_30d"],
                   {"legal_basis": "legitimate_interest", "domain": "content", "pii": "no"})
    refused(Registry(repo, devices, renamed, service(devices, renamed)), "engagement",
            "denied source table(s) ['web_navigation']", "denied source column(s) ['nav_share_crypto_30d']")


def test_denied_columns_under_another_table_and_renamed_by_field_mapping(repo: Path) -> None:
    mapped = FileSource(name="x", path="/data/other/browsing", timestamp_field="event_timestamp",
                        field_mapping={"nav_share_health_30d": "health_interest"})
    hidden = view("wellbeing", "", ["health_interest"], src=mapped)
    refused(Registry(repo, devices, hidden, service(devices, hidden)), "wellbeing",
            "denied source column(s) ['nav_share_health_30d']")


def test_on_demand_view_reading_a_sensitive_view_is_refused(repo: Path) -> None:
    nav = view("web_navigation", "web_navigation", ["nav_sessions_30d"],
               {"legal_basis": "consent", "domain": "navigation", "pii": "yes"})

    @on_demand_feature_view(sources=[nav], schema=[Field(name="browsing_level", dtype=Float64,
                                                         tags={"encoding": "numeric"})],
                            mode="pandas", tags={"legal_basis": "legitimate_interest", "domain": "derived",
                                                 "pii": "no"})
    def browsing(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"browsing_level": inputs["nav_sessions_30d"] * 2.0})

    refused(Registry(repo, devices, nav, browsing, service(devices, browsing)), "browsing",
            "via web_navigation: legal_basis=consent")


def test_derived_view_reading_a_sensitive_view_is_refused(repo: Path) -> None:
    nav = view("web_navigation", "web_navigation", ["nav_sessions_30d"],
               {"legal_basis": "consent", "domain": "navigation", "pii": "yes"})
    derived = FeatureView(name="nav_rollup", entities=[customer], source=[nav],
                          sink_source=source("nav_rollup"),
                          schema=[Field(name="rollup", dtype=Int64, tags={"encoding": "numeric"})], tags=dict(LI))
    facts = service_views(Registry(repo, nav, derived, service(derived)), service(derived))["nav_rollup"]
    assert [u.name for u in facts.upstream] == ["web_navigation"] and facts.tables == ()
    refused(Registry(repo, nav, derived, service(derived)), "nav_rollup", "via web_navigation")


def test_sensitive_domains_and_deny_list_are_configurable(tmp_path: Path) -> None:
    assert load_policy(tmp_path).sensitive_domains == {"navigation"}  # no file: the default
    (tmp_path / POLICY_FILE).write_text("sensitive_domains: [navigation, health]\ndenied_tables: [gps]\n")
    policy = load_policy(tmp_path)
    facts = ViewFacts("v", "feature_view", {**LI, "domain": "health"}, tables=("gps",))
    assert model_input_problems(facts, policy) == ["sensitive domain=health", "reads denied source table(s) ['gps']"]
    assert model_input_problems(facts, PrivacyPolicy()) == []
    (tmp_path / POLICY_FILE).write_text("denied_tabels: [gps]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_policy(tmp_path)


def test_change_without_version_bump_is_refused_and_named(repo: Path) -> None:
    published = service(devices)
    registry = Registry(repo, devices, published)
    record(repo, describe_service(published, service_views(registry, published)))
    load_contract(registry, "svc_v1")  # unchanged: passes

    extra = view("tech_config", "tech_config", ["bandwidth_mbps"], {**LI, "domain": "technical"})
    message = refused(Registry(repo, devices, extra, service(devices, extra)), "svc_v1 v1 changed without a version bump",
                      "view tech_config added")
    assert "tech_config (" not in message  # a clean view: refused for the change, not for privacy

    retyped = view("devices", "devices", ["n_devices", "max_screen_inches"], {**LI, "pii": "quasi"})
    refused(Registry(repo, retyped, service(retyped)), "view devices tags")
    moved = view("devices", "devices_v2", ["n_devices", "max_screen_inches"])
    refused(Registry(repo, moved, service(moved)), "view devices tables ['devices'] -> ['devices_v2']")

    # The same change published as v2 passes, and v1 cannot be re-recorded in place.
    bumped = service(devices, extra, version="2")
    bumped_registry = Registry(repo, devices, extra, bumped)
    record(repo, describe_service(bumped, service_views(bumped_registry, bumped)))
    assert load_contract(bumped_registry, "svc_v1").service_version == "2"
    changed_v1 = service(devices, extra)
    with pytest.raises(ContractChangedError, match="already published"):
        record(repo, describe_service(changed_v1, service_views(bumped_registry, changed_v1)))
    assert set(json.loads((repo / "contract_fingerprints.json").read_text())["svc_v1"]) == {"1", "2"}
