import numpy as np
import pytest

from dmdet_infer.normalise import apply, normalisation_stats, normalise

MAD = {"method": "median_mad"}


def test_median_mad_maps_gaussian_background_to_unit_normal():
    rng = np.random.default_rng(1)
    volume = rng.normal(100.0, 5.0, (8, 64, 64)).astype(np.float32)
    volume[0, :4, :4] = 1e4  # a few bright spots barely move robust statistics
    offset, scale = normalisation_stats(volume, MAD)
    assert offset == pytest.approx(100.0, abs=0.2)
    assert scale == pytest.approx(5.0, rel=0.03)
    out = normalise(volume, MAD)
    assert out.dtype == np.float32
    assert np.median(out) == pytest.approx(0.0, abs=0.05)


def test_constant_volume_has_zero_scale():
    assert normalisation_stats(np.full((3, 4, 5), 7, np.uint16), MAD)[1] == 0.0
    assert not normalise(np.full((3, 4, 5), 7, np.uint16), MAD).any()


def test_mad_zero_falls_back_to_standard_deviation():
    volume = np.zeros((4, 16, 16), np.uint8)
    volume[1, 5, 5] = 200
    offset, scale = normalisation_stats(volume, MAD)
    assert offset == 0.0
    assert scale == pytest.approx(volume.std())


def test_percentile_method_and_apply():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    offset, scale = normalisation_stats(volume, {"method": "percentile", "low": 0.0, "high": 100.0})
    assert (offset, scale) == (0.0, 999.0)
    np.testing.assert_allclose(apply(volume, offset, scale).max(), 1.0)


def test_large_volumes_use_a_deterministic_sample():
    volume = np.random.default_rng(0).normal(0, 1, (5_000_000,)).astype(np.float32).reshape(50, 100, 1000)
    assert normalisation_stats(volume, MAD) == normalisation_stats(volume, MAD)
    assert normalisation_stats(volume, MAD)[1] == pytest.approx(1.0, rel=0.01)
