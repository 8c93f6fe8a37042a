"""Contract and demographic profile (legitimate interest; contains personal data).

The module is not called ``profile.py`` because Feast imports repo files as top-level
modules and the standard library already has a ``profile`` module.
"""

from entities import customer
from feast import FeatureView
from feast.types import Bool, Int64, String
from lookalike_repo_common import OWNER_DATA, PROFILE_TTL, feature, feature_table_source

profile_source = feature_table_source("profile", "Weekly snapshot of the customer's contract and profile.")

profile = FeatureView(
    name="profile",
    entities=[customer],
    ttl=PROFILE_TTL,
    schema=[
        feature("age", Int64, "numeric", "Age in years at the snapshot date."),
        feature("gender", String, "categorical", "Declared gender: F, M or X."),
        feature("tenure_months", Int64, "numeric", "Months since signup."),
        feature("plan", String, "categorical", "TV plan: basic, standard, premium, sports, family."),
        feature("contract_type", String, "categorical", "prepaid, monthly, annual or bundle."),
        feature("region_code", String, "high_cardinality", "Billing region code (~3,000 values, e.g. R0421)."),
        feature("n_lines", Int64, "numeric", "Number of mobile lines on the account."),
        feature("is_family_plan", Bool, "boolean", "The plan is a family plan."),
        feature("payment_method", String, "categorical", "card, direct_debit or transfer."),
    ],
    source=profile_source,
    online=True,
    owner=OWNER_DATA,
    description="Contract and demographic attributes needed to serve the contract (legitimate interest).",
    tags={"legal_basis": "legitimate_interest", "domain": "profile", "pii": "quasi"},
)
