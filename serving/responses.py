"""``/expand`` responses written straight to JSON bytes from the ranking's arrays.

An ``/expand`` answer holds up to ``expand.max_target_size`` (100,000) customers. Building
one pydantic object per customer and letting the framework serialise them cost ~0.6 s
(bench/README.md, "Speed at scale"), more than the ranking itself. The documented shape is
unchanged -- :class:`serving.models.ExpandResponse`, which stays the OpenAPI schema and
which a test validates these bytes against -- only the list is formatted in one pass
(~40 ms for 100,000 rows).
"""

from __future__ import annotations

import json

import numpy as np
from starlette.responses import Response

from serving.models import SeedDiagnostics, Versions

_ROW = '{"customer_id":%d,"score":%r},'


def lookalikes_json(customer_ids: np.ndarray, scores: np.ndarray) -> str:
    """``[{"customer_id": ..., "score": ...}, ...]`` for int64 ids and float64 scores."""
    values: list[object] = [None] * (2 * len(customer_ids))
    values[::2] = np.asarray(customer_ids, dtype=np.int64).tolist()
    values[1::2] = np.asarray(scores, dtype=np.float64).tolist()
    return "[" + (_ROW * len(customer_ids) % tuple(values))[:-1] + "]"


def expand_json(versions: Versions, seed: SeedDiagnostics, population: str, population_size: int,
                customer_ids: np.ndarray, scores: np.ndarray) -> bytes:
    """The body of an ``ExpandResponse``, field for field."""
    head = json.dumps({"versions": versions.model_dump(), "seed": seed.model_dump(), "population": population,
                       "population_size": population_size}, separators=(",", ":"))
    return (head[:-1] + ',"customers":' + lookalikes_json(customer_ids, scores) + "}").encode()


def expand_response(versions: Versions, seed: SeedDiagnostics, population: str, population_size: int,
                    customer_ids: np.ndarray, scores: np.ndarray) -> Response:
    return Response(expand_json(versions, seed, population, population_size, customer_ids, scores),
                    media_type="application/json")
