import numpy as np
import pytest

from dmdet_infer import normalise as normalisation
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


LOCAL = {"method": "local_median_mad", "block": [8, 32, 32]}


def _gradient_poisson(shape, low, high, seed=0):
    """Poisson noise whose mean rises linearly from ``low`` to ``high`` along x."""
    mean = np.broadcast_to(np.linspace(low, high, shape[2]), shape)
    return np.random.default_rng(seed).poisson(mean).astype(np.float32), mean


def test_local_normalisation_follows_an_illumination_gradient():
    volume, mean = _gradient_poisson((10, 128, 256), 50.0, 400.0)
    out = normalise(volume, LOCAL)
    # each side of the field is centred and has unit noise, although the noise differs by a factor of ~2.8
    for part in (out[..., 16:80], out[..., -80:-16]):  # away from the outer block centres
        assert abs(float(np.median(part))) < 0.15
        assert 1.4826 * float(np.median(np.abs(part - np.median(part)))) == pytest.approx(1.0, abs=0.12)
    # whole-volume statistics cannot: the gradient inflates the MAD, so a spot on the dim side shrinks by ~4x
    flat = normalise(volume, MAD)
    noise = np.diff(flat[..., 16:80], axis=1).std() / np.sqrt(2)  # pixel noise in normalised units
    assert noise < 0.3


def test_local_normalisation_of_a_tile_equals_the_whole_volume():
    from dmdet_infer.normalise import stats

    volume, _ = _gradient_poisson((13, 70, 101), 5.0, 40.0, seed=3)
    s = stats(volume, LOCAL)
    whole = s.apply(volume)
    region = (slice(3, 12), slice(17, 61), slice(40, 99))
    np.testing.assert_array_equal(s.apply(volume[region], region), whole[region])


def test_local_normalisation_handles_clipped_8bit_background_and_large_offsets():
    from dmdet_infer.normalise import stats

    volume = np.zeros((8, 64, 64), np.uint8)
    volume[:, 32:, :] = np.random.default_rng(0).poisson(20, (8, 32, 64))  # a cell; elsewhere clipped to 0
    s = stats(volume, LOCAL)
    assert not s.constant and np.all(s.scale > 0)  # zero-MAD blocks borrow the typical noise
    big = volume.astype(np.uint32) + np.uint32(100_000_000)  # float32 cannot hold these exactly
    np.testing.assert_allclose(normalise(big, LOCAL), normalise(volume, LOCAL), atol=1e-5)
    assert stats(np.full((4, 40, 40), 9, np.uint16), LOCAL).constant


def test_bad_normalisation_specs_are_refused():
    from dmdet_infer.normalise import check_spec

    for bad in ({"method": "zscore"}, {"method": "local_median_mad", "block": [8, 32]},
                {"method": "local_median_mad", "block": [8, 0, 32]}, {"method": "local_median_mad", "block": "8"}):
        with pytest.raises(ValueError):
            check_spec(bad)


@pytest.mark.parametrize("method", ["local_median_mad", "median_mad"])
def test_a_huge_dynamic_range_is_clipped_without_warnings(method):
    """Issue 16 item 11: noise of 1e-25 under a voxel of 1e5 overflowed float32 (inf, numpy warnings)."""
    import warnings

    volume = np.random.default_rng(0).normal(0.0, 1e-25, (8, 32, 32))
    volume[3, 5, 5] = 1e5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (volume, volume.astype(np.float32)):
            out = normalise(data, {"method": method})
            assert np.isfinite(out).all() and out.max() == normalisation.MAX_NORMALISED
            assert np.median(np.abs(out)) < 5  # the noise still looks like noise


def test_a_clipped_background_takes_the_noise_of_the_measured_blocks():
    rng = np.random.default_rng(3)
    cells = rng.poisson(20.0, (8, 64, 128)).astype(np.float64) * 3.0 - 30.0  # 8-bit-like, about 13 grey levels sd
    volume = np.clip(cells, 0, 255).astype(np.uint8)
    outside = volume[:, :, 64:]
    outside[:] = np.clip(rng.poisson(2.0, outside.shape) * 3.0 - 6.0, 0, 255)  # about 68 % clipped at 0
    volume[4, 32, 80] = 30  # a stray bright voxel in the clipped background
    stats = normalisation.local_stats(volume)
    inside = stats.scale[:, :, :2]
    assert inside.min() > 8.0  # the measured blocks keep their own noise
    np.testing.assert_allclose(stats.scale[:, :, 2:], np.median(stats.scale[:, :, :2]))
    out = stats.apply(volume)
    assert out[4, 32, 80] < 3.0  # 6.5 with the clipped blocks' own MAD (thousands of units in 8-bit yeast stacks)
    assert not normalisation.clipped_blocks(rng.normal(100, 5, (8, 64, 64)), (8, 32, 32), (8, 64, 64), (1, 2, 2)).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
def test_local_statistics_do_not_depend_on_threads_or_on_taking_integer_medians_as_integers(dtype):
    """The block medians of 8/16-bit integers are taken on the integers, in threads; both give the numbers of
    float medians taken one row of blocks at a time. Normalising planes in threads changes nothing either."""
    rng = np.random.default_rng(4)
    volume = (rng.poisson(30, (11, 70, 90)) + np.arange(90) // 9).astype(dtype)
    ref = normalisation._per_block(volume, (8, 32, 32), volume.shape, lambda v, r: v, np.float64, threads=1)
    np.testing.assert_array_equal(
        normalisation._per_block(volume, (8, 32, 32), volume.shape, lambda v, r: v, volume.dtype, threads=3), ref)
    before = volume.copy()
    one, three = (normalisation.local_stats(volume, (8, 32, 32), threads=t) for t in (1, 3))
    np.testing.assert_array_equal(one.offset, ref)
    np.testing.assert_array_equal(one.offset, three.offset)
    np.testing.assert_array_equal(one.scale, three.scale)
    tile = (slice(2, 11), slice(5, 70), slice(3, 50))
    np.testing.assert_array_equal(one.apply(volume[tile], tile), three.apply(volume[tile], tile))
    np.testing.assert_array_equal(one.apply(volume), three.apply(volume))
    thin = normalisation.local_stats(volume, (1, 1, 8))  # blocks one row thick: views of the volume
    np.testing.assert_array_equal(volume, before)  # the medians are taken in place, but never in the caller's array
    np.testing.assert_array_equal(thin.offset[3, 5], np.median(before[3, 5].astype(np.float64)[:88].reshape(11, 8),
                                                               axis=1).tolist() + [np.median(before[3, 5, 88:])])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 8192, 2049])
def test_row_medians_are_numpys(dtype, n):
    rng = np.random.default_rng(n)
    rows = (rng.poisson(20, (5, n)) - (10 if np.dtype(dtype).kind != "u" else 0)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        rows = rows + rng.random((5, n)).astype(dtype)
        rows[1, n // 3] = np.nan  # a NaN anywhere makes the median NaN, as numpy's
    expected = np.median(rows, axis=1).astype(np.float64)
    np.testing.assert_array_equal(normalisation._row_medians(rows.copy()), expected)
