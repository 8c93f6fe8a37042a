"""The gym's privileged view: in-app reading, which members share only with explicit consent.

Tagged ``lookalike_role: privileged``: never a model input and never online; its single
permitted use is training the teacher tower for opt-in members (training/distill.py). Delete
this file and the repo is a plain lookalike repo again (tests/e2e/test_own_data.py runs both).
"""

from feast import FeatureView
from gym_repo import TTL, customer, num, source

app_reading = FeatureView(
    name="app_reading", entities=[customer], ttl=TTL, source=source("app_reading"), online=False,
    tags={"legal_basis": "consent", "domain": "app_content", "pii": "yes", "lookalike_role": "privileged"},
    schema=[num("articles_read_30d"), num("share_nutrition_articles_30d")],
    description="Articles read in the member app (opt-in members only).",
)
