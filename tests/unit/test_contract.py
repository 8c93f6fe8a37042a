"""The privacy guard's rule and the contract's serialisation, without Feast."""

from __future__ import annotations

import pytest

from lookalike.contract import FeatureContract, FeatureSpec, check_views_are_legitimate_interest
from lookalike.errors import PrivacyViolationError

pytestmark = pytest.mark.unit


def test_legitimate_interest_views_pass() -> None:
    check_views_are_legitimate_interest(
        "svc", [("profile", {"legal_basis": "legitimate_interest"}), ("devices", {"legal_basis": "legitimate_interest"})]
    )


@pytest.mark.parametrize("tags", [{"legal_basis": "consent"}, {}, {"legal_basis": "Legitimate_Interest"}])
def test_any_other_basis_is_refused_and_named(tags: dict[str, str]) -> None:
    with pytest.raises(PrivacyViolationError) as info:
        check_views_are_legitimate_interest(
            "svc", [("profile", {"legal_basis": "legitimate_interest"}), ("web_navigation", tags)]
        )
    message = str(info.value)
    assert "web_navigation" in message and "profile" not in message
    assert "svc" in message


def test_contract_round_trips_through_dict() -> None:
    contract = FeatureContract(
        "lookalike_legit_v1", "1",
        (FeatureSpec("profile", "age", "Int64", "numeric", "Age"), FeatureSpec("profile", "region_code", "String",
                                                                            "high_cardinality")),
    )
    again = FeatureContract.from_dict(contract.to_dict())
    assert again == contract
    assert again.columns == ["profile__age", "profile__region_code"]
    assert again.feature_refs == ["profile:age", "profile:region_code"]
    assert again.views == ["profile"]


def test_repo_env_var_name_matches_settings() -> None:
    from pathlib import Path

    from lookalike.settings import ENV_DATA_DIR

    common = Path(__file__).resolve().parents[2] / "feature_repo" / "lookalike_repo_common.py"
    assert f'ENV_DATA_DIR = "{ENV_DATA_DIR}"' in common.read_text()
