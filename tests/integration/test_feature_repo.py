"""The feature repo applies with the real Feast CLI, carries its governance metadata, and
matches the tables the Spark jobs write."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.types as pat
import pytest

from lookalike.contract import ENCODINGS, load_contract
from lookalike.feast_utils import DEFAULT_REPO, open_store, prepare_repo

pytestmark = pytest.mark.integration

LEGIT_VIEWS = {"content_consumption", "devices", "profile", "mobile_roaming", "tech_config"}


def test_every_view_carries_governance_metadata(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == LEGIT_VIEWS | {"web_navigation", "segment_labels", "consent_status", "suppression_list"}
    for view in views.values():
        assert view.owner and view.description, view.name
        assert view.tags["legal_basis"] in ("legitimate_interest", "consent"), view.name
        assert view.tags["pii"] in ("yes", "quasi", "no") and view.tags["domain"], view.name
        assert all(f.description for f in view.features), view.name
    for name in LEGIT_VIEWS:
        assert views[name].tags["legal_basis"] == "legitimate_interest"
        assert all(f.tags["encoding"] in ENCODINGS for f in views[name].features), name
    assert views["web_navigation"].tags["legal_basis"] == "consent" and not views["web_navigation"].online
    assert not views["segment_labels"].online
    assert {views[n].tags.get("lookalike_role") for n in ("segment_labels", "consent_status", "suppression_list")} == {
        "labels", "consent", "suppression"}
    region = next(f for f in views["profile"].features if f.name == "region_code")
    assert region.tags["encoding"] == "high_cardinality"


def test_model_service_is_the_legitimate_interest_contract(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    service = store.get_feature_service("lookalike_legit_v1")
    assert service.tags == {"version": "1", "lookalike_role": "model_input"}
    contract = load_contract(store, "lookalike_legit_v1")
    assert set(contract.views) == LEGIT_VIEWS
    assert len(contract.columns) == 91
    assert "profile__region_code" in contract.columns
    assert not any(c.startswith("web_navigation") for c in contract.columns)


def test_sources_resolve_to_the_data_dir_at_apply_time(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    data_dir = (synthetic_repo_dir.parent / "features").resolve()
    for view in store.list_feature_views():
        assert Path(view.batch_source.path) == data_dir / view.name


def test_store_variants_are_one_config_change(tmp_path: Path) -> None:
    redis_repo = prepare_repo(DEFAULT_REPO, tmp_path / "redis", online="redis", redis_connection="10.0.0.1:6390")
    text = (redis_repo / "feature_store.yaml").read_text()
    assert "type: redis" in text and 'connection_string: "10.0.0.1:6390"' in text
    env_repo = prepare_repo(DEFAULT_REPO, tmp_path / "env", online="redis")
    assert "${LOOKALIKE_REDIS_URL}" in (env_repo / "feature_store.yaml").read_text()
    spark_repo = prepare_repo(DEFAULT_REPO, tmp_path / "spark", offline="spark")
    spark_text = (spark_repo / "feature_store.yaml").read_text()
    assert "type: spark" in spark_text and "type: sqlite" in spark_text
    assert sorted(p.name for p in redis_repo.glob("*.py")) == sorted(p.name for p in DEFAULT_REPO.glob("*.py"))


def test_declared_fields_match_the_spark_tables(feature_store) -> None:  # type: ignore[no-untyped-def]
    """Every declared field exists in the Spark output with a type Feast can convert."""
    compatible = {
        "Float64": pat.is_floating, "Int64": pat.is_integer, "Bool": pat.is_boolean,
        "String": lambda t: pat.is_string(t) or pat.is_large_string(t),
        "UnixTimestamp": pat.is_timestamp, "Array(String)": pat.is_list,
    }
    problems = []
    for view in feature_store.list_feature_views():
        schema = ds.dataset(view.batch_source.path, format="parquet").schema
        for column in ("customer_id", "event_timestamp", "created_timestamp"):
            if column not in schema.names:
                problems.append(f"{view.name}: no {column}")
        for field in view.features:
            if field.name not in schema.names:
                problems.append(f"{view.name}.{field.name}: missing in the Spark table")
            elif not compatible[str(field.dtype)](schema.field(field.name).type):
                problems.append(f"{view.name}.{field.name}: {schema.field(field.name).type} vs {field.dtype}")
        extra = set(schema.names) - {f.name for f in view.features} - {"customer_id", "event_timestamp",
                                                                          "created_timestamp"}
        if extra:
            problems.append(f"{view.name}: undeclared columns {sorted(extra)}")
    assert not problems, "\n".join(problems)
