"""Index builder: FAISS anchor index, segment assignment, evaluation and the weekly batch.

Shared API (used by the weekly job and by serving):

- :func:`index_builder.bundle.load_bundle` -> :class:`index_builder.bundle.IndexBundle`
- :func:`index_builder.assign.score_neighbours` and :func:`index_builder.assign.decide`
"""
