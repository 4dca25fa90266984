"""Spot scale: --spot-size parsing, resampling, the stack's own estimate, and positions mapped back."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import gaussian_spots, match_spots

from dmdet_infer import Detector
from dmdet_infer.errors import InputError
from dmdet_infer.normalise import normalise
from dmdet_infer.scale import (
    FWHM_PER_SIGMA,
    estimate,
    factors_for,
    parse_spot_size,
    resample,
    resampled_shape,
    to_input,
)

LOCAL = {"method": "local_median_mad", "block": [8, 32, 32]}


def test_parse_spot_size_in_voxels_microns_and_fwhm():
    assert parse_spot_size("1.7,1.9", None) == (1.7, 1.9, 1.9)
    assert parse_spot_size("0.6,0.2um", (0.3, 0.1, 0.1)) == pytest.approx((2.0, 2.0, 2.0))
    z, y, _ = parse_spot_size(f"fwhm={FWHM_PER_SIGMA},{2 * FWHM_PER_SIGMA}", None)
    assert (z, y) == pytest.approx((1.0, 2.0))
    for bad in ("1.7", "a,b", "0,1", "1,2,3"):
        with pytest.raises(ValueError):
            parse_spot_size(bad, None)
    with pytest.raises(ValueError, match="voxel size"):
        parse_spot_size("0.5,0.2um", None)


def test_factors_only_outside_the_model_range():
    valid = [(0.6, 2.2), (0.9, 2.6), (0.9, 2.6)]
    assert factors_for((1.0, 1.5, 1.5), (1.1, 1.5, 1.5), valid) is None
    assert factors_for((1.0, 4.5, 4.5), (1.0, 1.5, 1.5), valid) == pytest.approx((1.0, 1 / 3, 1 / 3))


def test_resample_is_linear_and_positions_map_back():
    z, y, x = np.meshgrid(np.arange(5.0), np.arange(9.0), np.arange(12.0), indexing="ij")
    ramp = (2 * z + 3 * y - x).astype(np.float32)
    f = (1.0, 2.0, 0.5)
    out = resample(ramp, f)
    assert out.shape == resampled_shape(ramp.shape, f) == (5, 17, 6)
    j = np.argwhere(np.ones(out.shape, bool)).astype(float)
    u = to_input(j, f)  # each output voxel's position in the input
    inside = u[:, 2] >= 1  # the down-sampling box average is exact for a ramp away from the first column
    expected = 2 * u[:, 0] + 3 * u[:, 1] - u[:, 2]
    np.testing.assert_allclose(out.reshape(-1)[inside], expected[inside], atol=1e-4)


@pytest.mark.parametrize("sigma", [(1.0, 1.5), (1.7, 1.9), (2.5, 3.5)])
def test_estimate_finds_the_spot_size_of_a_noisy_stack(sigma):
    rng = np.random.default_rng(1)
    shape = (16, 160, 160)
    pos = rng.uniform(0, 1, (60, 3)) * (np.array(shape) - 1)
    volume = rng.poisson(10 + gaussian_spots(shape, pos, (sigma[0], sigma[1], sigma[1]), 80.0)).astype(np.float32)
    found, n = estimate(normalise(volume, LOCAL))
    assert n >= 8
    assert found[0] == pytest.approx(sigma[0], rel=0.2) and found[1] == pytest.approx(sigma[1], rel=0.2)


def test_pure_noise_gives_no_estimate():
    volume = np.random.default_rng(2).poisson(10, (10, 128, 128)).astype(np.float32)
    assert estimate(normalise(volume, LOCAL))[0] is None


def test_same_particles_at_three_samplings_give_the_same_physical_positions():
    """Rendered at xy pixels of 1, 1/2 and 1/3 (spot sigma 1.5, 3 and 4.5 pixels), given as the spot size: the
    two finer samplings are resampled to the model's spot size and their positions mapped back."""
    rng = np.random.default_rng(3)
    extent = np.array([10.0, 60.0, 60.0])  # µm, with the coarse sampling's voxels of 1 µm
    grid = np.stack(np.meshgrid([3.0, 6.0], np.arange(8.0, 52.0, 11.0), np.arange(8.0, 52.0, 14.0),
                                indexing="ij"), -1).reshape(-1, 3)
    phys = grid + rng.uniform(-1.5, 1.5, grid.shape) * [0.3, 1, 1]  # well apart: no pair to merge
    sigma_um = (1.0, 1.5, 1.5)
    results = []
    for pixel in (1.0, 0.5, 1.0 / 3.0):
        voxel = np.array([1.0, pixel, pixel])
        shape = tuple(int(round((e - 1) / v)) + 1 for e, v in zip(extent, voxel))
        amplitude = 120.0  # SNR ~7, inside the training range
        volume = rng.poisson(10 + gaussian_spots(shape, phys / voxel, tuple(np.array(sigma_um) / voxel), amplitude))
        det = Detector(device="cpu", spot_size=tuple(np.array(sigma_um) / voxel))
        spots = det.detect(volume.astype(np.float32))
        assert (spots.meta["scale"]["factors"] is None) == (pixel == 1.0)
        results.append(spots.zyx * voxel)
    for found in results:
        p, t, _ = match_spots(found, phys, 2.0)
        assert len(p) >= len(phys) - 1 and len(found) <= len(phys) + 1  # (nearly) every particle, once
    ref = results[0]
    for found in results[1:]:
        p, t, _ = match_spots(found, ref, 2.0)
        d = found[p] - ref[t]
        # no systematic shift: the mean offset on every axis is within 0.2 of the coarse sampling's voxel (1 µm);
        # single particles differ by their localisation noise (about 0.3 voxel RMS at this SNR)
        assert np.all(np.abs(d.mean(axis=0)) < 0.2), d.mean(axis=0)
        assert np.median(np.linalg.norm(d, axis=1)) < 0.4


def test_bad_spot_size_for_the_detector():
    with pytest.raises(InputError):
        Detector(device="cpu", spot_size=(1.0, -1.0, 1.0))


def test_width_fit_is_the_least_squares_fit_over_the_grid():
    """The closed-form fit of every σ of the grid chooses what a least-squares solve of each gives."""
    from dmdet_infer.scale import SIGMA_GRID, _fit_width

    def solved(profile):
        g = np.arange(len(profile)) - len(profile) // 2
        best, best_cost = None, np.inf
        for sigma in SIGMA_GRID:
            design = np.stack([np.exp(-0.5 * (g / sigma) ** 2), np.ones(len(g))], axis=1)
            coef, *_ = np.linalg.lstsq(design, profile, rcond=None)
            cost = float(np.sum((design @ coef - profile) ** 2))
            if coef[0] > 0 and cost < best_cost:
                best, best_cost = sigma, cost
        return None if best is None else float(np.sqrt(max(best**2 - 1.0 / 12.0, 0.04)))

    rng = np.random.default_rng(5)
    for _ in range(300):
        g = np.arange(-int(rng.integers(2, 11)), 0)
        g = np.r_[g, 0, -g[::-1]]
        profile = (rng.uniform(-1, 5) * np.exp(-0.5 * (g / rng.uniform(0.3, 9)) ** 2) + rng.uniform(-2, 2)
                   + rng.normal(0, rng.uniform(0, 1), g.size))
        assert _fit_width(profile) == solved(profile)
    assert _fit_width(np.zeros(9)) is None and _fit_width(np.full(9, 3.3)) is None  # nothing to fit
