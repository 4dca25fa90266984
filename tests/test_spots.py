"""The result object: indexing, records, DataFrame, features and meta (issue 17)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from dmdet_infer import spots as spots_module
from dmdet_infer.spots import FEATURES, Spots


def table(n: int = 5, frame: bool = False) -> Spots:
    r = np.arange(n, dtype=np.float64)
    return Spots(r, r + 10, r + 20, np.linspace(0.1, 0.9, n).astype(np.float32), (r * 100).astype(np.float32),
                 np.arange(n, dtype=np.int64) % 2 if frame else None, (0.3, 0.1, 0.1), {"threshold": 0.42},
                 {"mass": r * 2.0, "spread": np.ones(n), "split": r == 3})


def test_indexing_by_mask_slice_and_integers_keeps_every_column_and_the_meta():
    s = table(frame=True)
    bright = s[s.score > 0.5]
    assert len(bright) == 2 and bright.meta["threshold"] == 0.42
    np.testing.assert_array_equal(bright.x, [23.0, 24.0])
    np.testing.assert_array_equal(bright.frame, [1, 0])
    np.testing.assert_array_equal(bright.features["mass"], [6.0, 8.0])
    assert len(s[1:3]) == 2 and s[1:3].z.tolist() == [1.0, 2.0]
    assert s[-1].z.tolist() == [4.0] and s[np.int64(0)].y.tolist() == [10.0]
    assert s[[4, 0]].x.tolist() == [24.0, 20.0] and len(s[[]]) == 0
    with pytest.raises(IndexError, match="boolean index"):
        s[np.ones(3, bool)]
    with pytest.raises(TypeError, match="spots.score"):
        s["score"]
    with pytest.raises(IndexError, match="float"):
        s[np.array([0.5])]


def test_records_and_dataframe_hold_the_csv_columns_in_order():
    s = table()
    cols = list(s.columns())
    assert cols == ["z", "y", "x", "score", "intensity", "z_um", "y_um", "x_um", *FEATURES]
    rec = s.to_records()
    assert rec.dtype.names == tuple(cols) and rec.shape == (5,)
    np.testing.assert_allclose(rec["y_um"], s.y * 0.1)
    assert rec["split"].tolist() == [False, False, False, True, False]
    pd = pytest.importorskip("pandas")
    df = s.to_dataframe()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == cols and len(df) == 5
    assert df.attrs["meta"]["threshold"] == 0.42


def test_concat_and_empty_keep_the_feature_columns():
    both = Spots.concat([table(2).with_frame(0), table(3).with_frame(1)])
    assert len(both) == 5 and both.features["mass"].shape == (5,) and both.frame.tolist() == [0, 0, 1, 1, 1]
    empty = Spots.empty()
    assert list(empty.columns()) == ["z", "y", "x", "score", "intensity", *FEATURES]  # same header as with spots


def test_the_docstring_examples_run():
    assert doctest.testmod(spots_module).failed == 0


@pytest.fixture(scope="module")
def detected():
    """The issue's acceptance snippet's stack, with isolated spots and one merged pair, and its spots."""
    from dmdet_infer import Detector

    rng = np.random.default_rng(3)
    shape = (10, 128, 128)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    vol = np.full(shape, 10.0)
    centres = [(5.0, 12.0 + 20 * (i % 6), 12.0 + 20 * (i // 6)) for i in range(24)]  # splitting needs 20 spots
    centres += [(5.0, 112.0, 40.0), (5.0, 112.0, 43.0)]  # a pair 3 voxels apart: one blob for the network
    for cz, cy, cx in centres:
        vol += 60.0 * np.exp(-((z - cz) ** 2 / 2.0 + ((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.5**2)))
    v = rng.poisson(vol).astype(np.float32)
    return Detector().detect(v)


def test_detect_returns_features_split_halves_and_the_threshold_used(detected):
    """The issue's acceptance snippet (without pandas, a test extra the wheel does not need: see the next test)."""
    spots = detected
    assert spots[spots.score > 0.5].score.min() > 0.5
    assert 0.05 <= spots.meta["threshold"] < 1.0
    assert list(spots.columns())[-3:] == list(FEATURES)
    assert np.all(spots.features["mass"][np.isfinite(spots.features["mass"])] > 0)
    near = np.hypot(spots.y - 112.0, spots.x - 41.5) < 3.0
    assert near.sum() == 2 and spots.features["split"][near].all() and spots.features["split"].sum() == 2


def test_detected_spots_as_a_dataframe(detected):
    pytest.importorskip("pandas")
    df = detected.to_dataframe()
    assert df.attrs["meta"]["threshold"] == detected.meta["threshold"]
    assert list(df.columns)[-3:] == list(FEATURES) and len(df) == len(detected)


def test_bad_arguments_are_value_errors():
    from dmdet_infer import Detector
    from dmdet_infer.errors import InputError

    with pytest.raises(ValueError, match="threshold"):
        Detector(threshold=5)
    assert issubclass(InputError, ValueError)
