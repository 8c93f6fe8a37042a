"""Registry-driven preprocessing: each encoding, unknown buckets, JSON round-trip parity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lookalike.contract import FeatureContract, FeatureSpec
from lookalike.errors import DataValidationError
from training.config import PreprocessingConfig
from training.preprocessing import Preprocessor

pytestmark = pytest.mark.unit


def contract() -> FeatureContract:
    return FeatureContract("svc", "1", (
        FeatureSpec("v", "minutes", "Float32", "numeric"),
        FeatureSpec("v", "plan", "String", "categorical"),
        FeatureSpec("v", "has_tv", "Bool", "boolean"),
        FeatureSpec("p", "region_code", "String", "high_cardinality"),
    ))


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "v__minutes": [10.0, 20.0, np.nan, 30.0, 40.0, 1000.0],
        "v__plan": ["basic", "premium", "basic", None, "sports", "basic"],
        "v__has_tv": pd.array([True, False, None, True, True, False], dtype="boolean"),
        "p__region_code": ["R1", "R1", "R1", "R2", "R2", "R3"],
    })


def fitted(min_count: int = 2, clip: float = 5.0) -> Preprocessor:
    return Preprocessor.fit(frame(), contract(), PreprocessingConfig(min_category_count=min_count, clip_z=clip,
                                                                     feature_matrix_top_values=1))


def test_numeric_median_fill_zscore_and_missing_indicator() -> None:
    pre = fitted(clip=100)
    dense = pre.transform(frame()).dense
    names = pre.dense_names
    z = dense[:, names.index("v__minutes")]
    indicator = dense[:, names.index("v__minutes__is_missing")]
    assert indicator.tolist() == [0, 0, 1, 0, 0, 0]
    # Median of observed (30) fills the null; the filled column is then z-scored.
    filled = np.array([10, 20, 30, 30, 40, 1000.0])
    np.testing.assert_allclose(z, (filled - filled.mean()) / filled.std(), rtol=1e-5)


def test_numeric_clipping_bounds_outliers() -> None:
    dense = fitted(clip=1.5).transform(frame()).dense
    assert dense[:, 0].max() <= 1.5 + 1e-6


def test_categorical_one_hot_with_unknown_bucket() -> None:
    pre = fitted()
    names = pre.dense_names
    assert [n for n in names if n.startswith("v__plan=")] == [
        "v__plan=basic", "v__plan=premium", "v__plan=sports", "v__plan=__unknown__"]
    new = frame().assign(v__plan=["family", "basic", None, "premium", "sports", "basic"])
    block = pre.transform(new).dense[:, [names.index(n) for n in names if n.startswith("v__plan=")]]
    assert block.sum(axis=1).tolist() == [1] * 6
    assert block[0].tolist() == [0, 0, 0, 1]  # unseen category
    assert block[2].tolist() == [0, 0, 0, 1]  # null
    assert block[1].tolist() == [1, 0, 0, 0]


def test_boolean_pass_through_nulls_to_zero_with_indicator() -> None:
    pre = fitted()
    dense = pre.transform(frame()).dense
    names = pre.dense_names
    assert dense[:, names.index("v__has_tv")].tolist() == [1, 0, 0, 1, 1, 0]
    assert dense[:, names.index("v__has_tv__is_missing")].tolist() == [0, 0, 1, 0, 0, 0]


def test_high_cardinality_index_maps_rare_and_unseen_to_oov() -> None:
    pre = fitted(min_count=2)
    assert pre.cardinalities == [3]  # OOV + R1 + R2 (R3 seen once: rare)
    new = frame().assign(p__region_code=["R1", "R2", "R3", "R999", None, "R2"])
    assert pre.transform(new).categorical_index[:, 0].tolist() == [1, 2, 0, 0, 0, 2]


def test_feature_matrix_one_hot_of_frequent_values_plus_other() -> None:
    pre = fitted()
    matrix = pre.feature_matrix(frame())
    assert matrix.dtype == np.float32
    assert matrix.shape == (6, pre.dense_dim + 2)  # top-1 region + other
    assert matrix[:, -2].tolist() == [1, 1, 1, 0, 0, 0]  # R1 is the most frequent
    assert matrix[:, -1].tolist() == [0, 0, 0, 1, 1, 1]


def test_state_json_round_trip_gives_identical_transform() -> None:
    pre = fitted()
    reloaded = Preprocessor.from_state(json.loads(json.dumps(pre.state)))
    before, after = pre.transform(frame()), reloaded.transform(frame())
    np.testing.assert_array_equal(before.dense, after.dense)
    np.testing.assert_array_equal(before.categorical_index, after.categorical_index)
    np.testing.assert_array_equal(pre.feature_matrix(frame()), reloaded.feature_matrix(frame()))


def test_missing_column_and_non_numeric_values_are_clear_errors() -> None:
    pre = fitted()
    with pytest.raises(DataValidationError, match="v__plan"):
        pre.transform(frame().drop(columns=["v__plan"]))
    with pytest.raises(DataValidationError, match="v__minutes"):
        pre.transform(frame().assign(v__minutes=["a", "b", "c", "d", "e", "f"]))


def test_all_null_numeric_column_in_training_is_refused() -> None:
    with pytest.raises(DataValidationError, match="entirely null"):
        Preprocessor.fit(frame().assign(v__minutes=np.nan), contract(), PreprocessingConfig())


@pytest.mark.parametrize("repeat", [1, 20])  # 6 rows: the small-batch dict path; 120 rows: pandas
def test_column_mapping_input_matches_the_dataframe_path(repeat: int) -> None:
    """Serving hands over {column: array} without a DataFrame; the model input is identical."""
    pre = fitted(min_count=1)
    data = pd.concat([frame()] * repeat, ignore_index=True)
    data.loc[1, "v__plan"] = "unseen-plan"
    data.loc[2, "p__region_code"] = None
    columns = {
        "v__minutes": data["v__minutes"].to_numpy(dtype=np.float64),
        "v__plan": data["v__plan"].to_numpy(dtype=object),
        "v__has_tv": data["v__has_tv"].array,
        "p__region_code": data["p__region_code"].to_numpy(dtype=object),
    }
    expected = pre.transform(data)
    got = pre.transform(columns)
    np.testing.assert_array_equal(got.dense, expected.dense)
    np.testing.assert_array_equal(got.categorical_index, expected.categorical_index)
    with pytest.raises(DataValidationError, match="missing contract column"):
        pre.transform({k: v for k, v in columns.items() if k != "v__plan"})
