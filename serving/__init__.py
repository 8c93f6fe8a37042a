"""Online serving: BentoML service for segment assignment and seed expansion (issue #6)."""
