"""Feature services: the named, versioned input contracts of the model.

``lookalike_legit_v1`` is the model's WHOLE input contract: every column the encoder
sees is listed here and nothing else. It may contain legitimate-interest views only;
``lookalike.contract.load_contract`` (the privacy guard) refuses it otherwise, and
``lookalike governance review`` reports FAIL. Never edit a published service in place:
add ``lookalike_legit_v2`` and move the ``lookalike_role`` tag.
"""

from content_consumption import content_consumption
from customer_profile import profile
from devices import devices
from feast import FeatureService
from lookalike_repo_common import OWNER_DATA
from mobile_roaming import mobile_roaming
from tech_config import tech_config

lookalike_legit_v1 = FeatureService(
    name="lookalike_legit_v1",
    features=[content_consumption, devices, profile, mobile_roaming, tech_config],
    description="Two-tower encoder input: legitimate-interest features only (no navigation, no labels).",
    owner=OWNER_DATA,
    tags={"version": "1", "lookalike_role": "model_input"},
)
