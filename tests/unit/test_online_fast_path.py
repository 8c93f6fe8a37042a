"""The direct Redis online reader returns exactly what Feast's ``get_online_features`` returns.

Unit tier: cells serialized by Feast's own proto conversion decode to the same column the
Feast path builds (``to_dict`` then the reader's cast). Integration tier: the same repo
materialized into a real ``redis-server`` by Feast's own writer reads back identically
through both engines, for every customer plus unknown ones, and fails cleanly when Redis
stops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from lookalike.contract import FeatureContract, FeatureSpec, cast_to_contract, load_contract
from lookalike.errors import ConfigError
from lookalike.feast_utils import open_store
from lookalike.online import (
    OnlineFeatureReader,
    OnlineStoreUnavailable,
    _decode_column,
    _decode_fields,
    _python_values,
)
from tests.fixtures.data import RUN_DATE
from tests.fixtures.feast import SYNTHETIC_CUSTOMERS, apply_repo

SERVICE = "lookalike_legit_v1"
UNKNOWN = [10_000_000, -3]

CELL_CASES = [
    ("Float64", ValueType.DOUBLE, [1.5, None, 0.0, -2.25, float("nan"), 1e300, -0.0]),
    ("Float32", ValueType.FLOAT, [1.5, None, -0.125, 3.4e38]),
    ("Int64", ValueType.INT64, [0, 1, -1, 127, 128, 300, 2**62, -(2**63), 2**63 - 1, None]),
    ("Int32", ValueType.INT32, [0, -1, 2**31 - 1, -(2**31), None]),
    ("Bool", ValueType.BOOL, [True, None, False]),
    ("String", ValueType.STRING, ["R0421", None, "", "é" * 70, "x" * 200, "ü"]),
    ("Float64", ValueType.DOUBLE, [None, None]),
    ("Bool", ValueType.BOOL, [None]),
]


def _cells(values: list[object], value_type: ValueType) -> list[bytes | None]:
    protos = python_values_to_proto_values(np.array(values, dtype=object), value_type)
    cells: list[bytes | None] = [p.SerializeToString() for p in protos]
    cells.append(None)  # a field the hash never had: HMGET answers nil
    return cells


def _feast_column(cells: list[bytes | None], dtype: str) -> pd.Series:
    """What the Feast path builds: ``to_dict`` values, then the reader's cast."""
    contract = FeatureContract("s", "1", (FeatureSpec("v", "f", dtype, "numeric"),))
    return cast_to_contract(pd.DataFrame({"v__f": _python_values(cells)}), contract, errors="coerce")["v__f"]


@pytest.mark.unit
@pytest.mark.parametrize(("dtype", "value_type", "values"), CELL_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CELL_CASES)])
def test_decoded_cells_equal_feast_conversion(dtype: str, value_type: ValueType, values: list[object]) -> None:
    cells = _cells(values, value_type)
    decoded = pd.Series(_decode_column(cells, dtype), name="v__f")
    pd.testing.assert_series_equal(decoded, _feast_column(cells, dtype))


@pytest.mark.unit
def test_unexpected_encoding_falls_back_to_feast_conversion() -> None:
    # An int64 value under a Float64 field (a writer that did not cast) must still decode as Feast does.
    cells = [*_cells([2.5], ValueType.DOUBLE)[:1], *_cells([7], ValueType.INT64)[:1], None]
    decoded = pd.Series(_decode_column(cells, "Float64"), name="v__f")
    pd.testing.assert_series_equal(decoded, _feast_column(cells, "Float64"))
    assert decoded.tolist()[:2] == [2.5, 7.0]


@pytest.mark.unit
def test_fields_decoded_by_type_equal_fields_decoded_one_by_one() -> None:
    specs = [FeatureSpec("v", name, dtype, "numeric") for name, dtype in
             [("a", "Float64"), ("b", "Bool"), ("c", "String"), ("d", "Float64"), ("e", "Int64"), ("f", "Bool")]]
    by_field = [
        _cells([1.0, None, 3.0], ValueType.DOUBLE),
        _cells([True, False, None], ValueType.BOOL),
        _cells(["x", None, "y"], ValueType.STRING),
        # An int64 cell among doubles: this type's block falls back to field-by-field decoding.
        [*_cells([0.5], ValueType.DOUBLE)[:1], *_cells([9], ValueType.INT64)[:1], None, None],
        _cells([5, None, -1], ValueType.INT64),
        [None, None, None, None],
    ]
    replies = [list(row) for row in zip(*by_field, strict=True)]
    columns, found = _decode_fields(replies, specs)
    for column, cells, spec in zip(columns, by_field, specs, strict=True):
        pd.testing.assert_series_equal(pd.Series(column), pd.Series(_decode_column(cells, spec.dtype)))
    assert found.tolist() == [True, True, True, False]


@pytest.mark.integration
def test_engine_auto_keeps_feast_for_sqlite(synthetic_repo_dir: Path) -> None:
    store = open_store(synthetic_repo_dir)
    contract = load_contract(store, SERVICE)
    assert OnlineFeatureReader(store, contract).engine == "feast"
    with pytest.raises(ConfigError, match="not Redis"):
        OnlineFeatureReader(store, contract, engine="redis")


@pytest.fixture(scope="module")
def redis_repo(synthetic_repo_dir: Path, redis_server, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    from lookalike.materialize import MaterializeConfig, run

    repo = apply_repo(tmp_path_factory.mktemp("fast_path") / "repo", synthetic_repo_dir.parent / "features",
                      online="redis", redis_connection=f"{redis_server.connection_string},db=5")
    # Feast's own writer, so parity does not rest on the fast loader.
    assert run(MaterializeConfig(repo=repo, end_date=RUN_DATE, engine="feast")).engine == "feast"
    return repo


@pytest.mark.integration
def test_redis_engine_returns_exactly_what_feast_returns(redis_repo: Path) -> None:
    store = open_store(redis_repo)
    contract = load_contract(store, SERVICE)
    fast = OnlineFeatureReader(store, contract)
    feast = OnlineFeatureReader(store, contract, engine="feast")
    assert fast.engine == "redis" and feast.engine == "feast"

    ids = [*range(1, SYNTHETIC_CUSTOMERS + 1), *UNKNOWN, 2]  # every customer, unknowns, a duplicate
    frame, found = fast.read(ids)
    expected_frame, expected_found = feast.read(ids)
    pd.testing.assert_frame_equal(frame, expected_frame)
    np.testing.assert_array_equal(found, expected_found)
    assert found.tolist() == [True] * SYNTHETIC_CUSTOMERS + [False, False, True]
    # Nulls inside known customers' rows are compared too, not only whole unknown rows.
    assert frame.iloc[:SYNTHETIC_CUSTOMERS].isna().any().any()

    single, single_found = fast.read([7])
    pd.testing.assert_frame_equal(single, expected_frame.iloc[[6]].reset_index(drop=True))
    assert single_found.tolist() == [True]

    status = fast.read_status(ids)
    pd.testing.assert_frame_equal(status, feast.read_status(ids))
    assert status["opt_in"].any() and not status["opt_in"].all()
    both_frame, both_found, both_status = fast.read_with_status(ids)
    pd.testing.assert_frame_equal(both_frame, expected_frame)
    np.testing.assert_array_equal(both_found, expected_found)
    pd.testing.assert_frame_equal(both_status, status)
    # the DataFrame-free hot path (serving) carries the same values, on both engines
    for reader in (fast, feast):
        columns, col_found, col_status = reader.read_columns_with_status(ids)
        pd.testing.assert_frame_equal(pd.DataFrame({"customer_id": np.asarray(ids, dtype=np.int64), **columns}),
                                      expected_frame)
        np.testing.assert_array_equal(col_found, expected_found)
        for name in ("opt_in", "suppressed"):
            np.testing.assert_array_equal(col_status[name], status[name].to_numpy(dtype=bool))

    # /expand's request-time suppression check (one server-side script call per 20k ids)
    expected_suppressed = status["suppressed"].to_numpy(dtype=bool)
    assert expected_suppressed.any()
    np.testing.assert_array_equal(fast.suppressed(ids), expected_suppressed)
    np.testing.assert_array_equal(feast.suppressed(ids), expected_suppressed)

    empty, empty_found = fast.read([])
    pd.testing.assert_frame_equal(empty, feast.read([])[0])
    assert len(empty_found) == 0


@pytest.mark.integration
def test_redis_engine_reads_only_contract_and_status_fields(redis_repo: Path) -> None:
    from feast.infra.online_stores.helpers import _mmh3

    store = open_store(redis_repo)
    contract = load_contract(store, SERVICE)
    engine = OnlineFeatureReader(store, contract)._redis
    assert engine is not None
    navigation = store.get_feature_view("web_navigation")
    forbidden = {bytes(_mmh3(f"web_navigation:{f.name}")) for f in navigation.features}
    assert len(engine.fields) == len(contract.features) + 2 and not forbidden & set(engine.fields)


@pytest.mark.integration
def test_redis_engine_down_then_recovers(redis_repo: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    store = open_store(redis_repo)
    reader = OnlineFeatureReader(store, load_contract(store, SERVICE))
    assert reader.read([1])[1].tolist() == [True]
    redis_server.stop()
    try:
        with pytest.raises(OnlineStoreUnavailable):
            reader.read([1, 2])
        with pytest.raises(OnlineStoreUnavailable):
            reader.read_with_status([1])
    finally:
        redis_server.start()
    # redis-server keeps nothing across the restart (no persistence): known ids are now unknown,
    # and the same reader answers again without being rebuilt.
    frame, found = reader.read([1])
    assert found.tolist() == [False]
