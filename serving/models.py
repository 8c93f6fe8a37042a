"""Request and response models of the HTTP API (pydantic; they are also the OpenAPI schema).

Responses never carry opt-in neighbours' ids or any feature value: a lookalike assignment
is explained only by how many neighbours voted and how similar they were on average.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

DOCUMENTED_MAX_IDS = 1_000
DOCUMENTED_MAX_SEED_IDS = 10_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Bounded in the schema: an id outside int64 is a 400 for its own request, never an
# overflow deep in the store reader (which, batched, failed other clients' requests too).
CustomerId = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX, description="Customer id (int64).")]

CustomerIds = Annotated[
    list[CustomerId],
    Field(
        min_length=1,
        description=f"Customer ids (int64). At most {DOCUMENTED_MAX_IDS:,} per request by default "
        "(server setting max_ids_per_request).",
    ),
]

Status = Literal["ok", "unknown_customer", "suppressed"]
Source = Literal["opt_in", "lookalike"]
Population = Literal["non_opt_in", "all"]


class SegmentScore(BaseModel):
    segment: str
    name: str | None = None
    score: float


class Evidence(BaseModel):
    """Why a lookalike segment was given, without revealing who the neighbours are."""

    neighbours: int
    mean_similarity: float


class CustomerAssignment(BaseModel):
    customer_id: int
    status: Status
    source: Source | None = None
    segments: list[SegmentScore] = Field(default_factory=list)
    evidence: Evidence | None = None


class Versions(BaseModel):
    model_name: str
    model_version: str
    index_version: str
    feature_service: str
    feature_service_version: str


class AssignResponse(BaseModel):
    versions: Versions
    results: list[CustomerAssignment]


class AssignRequest(BaseModel):
    # Validation errors are logged by BentoML: never copy request values into them.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    customer_ids: CustomerIds


class ExpandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    seed_customer_ids: list[CustomerId] | None = Field(
        default=None, description="The seed audience as customer ids (int64; at most "
        f"{DOCUMENTED_MAX_SEED_IDS:,} by default, server setting expand.max_seed_ids); or give seed_segment."
    )
    seed_segment: str | None = Field(
        default=None, description="Use the opt-in holders of this segment id as the seed."
    )
    target_size: StrictInt | None = Field(
        default=None, ge=1, description="How many lookalikes to return (reach); or min_similarity."
    )
    min_similarity: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Return everyone at least this similar (precision)."
    )
    population: Population = "non_opt_in"
    exclude_seed: StrictBool = True

    @model_validator(mode="after")
    def _one_seed_one_dial(self) -> ExpandRequest:
        if (self.seed_customer_ids is None) == (self.seed_segment is None):
            raise ValueError("give exactly one of seed_customer_ids or seed_segment")
        if self.seed_customer_ids is not None and not self.seed_customer_ids:
            raise ValueError("seed_customer_ids is empty")
        if self.target_size is not None and self.min_similarity is not None:
            raise ValueError("give target_size or min_similarity, not both")
        return self


class SeedDiagnostics(BaseModel):
    requested: int
    matched: int
    unknown: int
    suppressed: int
    # Squared distance of the seed centroid from the population centroid, relative to what a
    # random seed of the same size gives (~1): the seed is only as distinctive as it is unlike chance.
    distinctiveness: float
    # 1 - cosine(seed centroid, population centroid): raw, shrinks as the seed grows.
    centroid_distance: float
    mean_intra_seed_similarity: float
    population_mean_similarity: float


class Lookalike(BaseModel):
    customer_id: int
    score: float


class ExpandResponse(BaseModel):
    versions: Versions
    seed: SeedDiagnostics
    population: Population
    population_size: int
    customers: list[Lookalike]


class ErrorBody(BaseModel):
    error: str
