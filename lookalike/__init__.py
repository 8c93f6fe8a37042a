"""Shared core of the lookalike segmentation system.

Stages (``spark_jobs``, ``training``, ``index_builder``, ``serving``) meet only through
artifacts with a manifest; this package holds what they share: configuration loading,
atomic artifact writing, manifests, the Feast feature contract and the privacy guard.
"""

__version__ = "0.1.0"
