"""The one entity of the lookalike system: a customer (billing account holder)."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A customer of the operator; customer_id is the int64 key used in every table.",
    owner="data-platform@lookalike.example",
    tags={"pii": "no"},
)
