"""PySpark feature jobs: raw tables -> weekly feature snapshot tables (docs/contracts.md §2)."""
