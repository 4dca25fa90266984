"""Simulator of the PTC virus scenario, SNR definition and the CRLB table."""

from __future__ import annotations

import numpy as np
import pytest

from training.crlb import crlb_3d
from training.simulate import (
    PTC_DENSITIES,
    PTC_SNRS,
    SimParams,
    amplitude_from_snr,
    benchmark_item,
    make_benchmark_set,
    render_spots,
    sample_params,
    simulate,
)

SMALL = (10, 64, 64)


@pytest.mark.parametrize("snr", PTC_SNRS)
@pytest.mark.parametrize("integrate", [False, True])
def test_noiseless_peak_matches_snr_definition(snr: float, integrate: bool) -> None:
    bg = 10.0
    amp = amplitude_from_snr(snr, bg)
    img = bg + render_spots(SMALL, np.array([[4.0, 30.0, 20.0]]), (1.0, 1.5, 1.5), amp, integrate=integrate)
    peak = img.max()
    assert img[4, 30, 20] == peak
    assert (peak - bg) / np.sqrt(peak) == pytest.approx(snr, rel=1e-9)
    assert np.min(img) == pytest.approx(bg)


def test_simulate_noiseless_spot_shape_and_positions() -> None:
    p = SimParams(shape=SMALL, n_particles=1, snr=4.0, poisson=False)
    vol, pos = simulate(p, np.random.default_rng(3))
    assert vol.dtype == np.float32 and vol.shape == SMALL and pos.shape == (1, 3)
    amp = amplitude_from_snr(4.0, 10.0)
    zz, yy, xx = np.indices(SMALL)
    z, y, x = pos[0]
    expected = 10.0 + amp * np.exp(-((zz - z) ** 2) / 2 - ((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    near = (np.abs(zz - z) <= 4) & (np.abs(yy - y) <= 6) & (np.abs(xx - x) <= 6)
    np.testing.assert_allclose(vol[near], expected[near], rtol=1e-5)


@pytest.mark.parametrize("n", [0, 7, 300])
def test_counts_and_positions_inside(n: int) -> None:
    vol, pos = simulate(SimParams(shape=SMALL, n_particles=n), np.random.default_rng(n))
    assert pos.shape == (n, 3) and pos.dtype == np.float64
    assert np.all(pos >= 0) and np.all(pos <= np.array(SMALL) - 1)
    if n:
        assert pos[:, 0].max() > 5 and pos[:, 1].max() > 40  # spread over the whole volume


def test_poisson_background_statistics() -> None:
    vol, _ = simulate(SimParams(shape=(10, 128, 128), n_particles=0, background=10.0), np.random.default_rng(0))
    assert vol.mean() == pytest.approx(10.0, rel=0.01)
    assert vol.var() == pytest.approx(vol.mean(), rel=0.03)
    assert np.all(vol == np.round(vol))  # photon counts


def test_camera_gain_offset_read_noise() -> None:
    p = SimParams(shape=(10, 128, 128), n_particles=0, background=20.0, gain=2.0, offset=100.0, read_noise=3.0)
    vol, _ = simulate(p, np.random.default_rng(1))
    assert vol.mean() == pytest.approx(2 * 20 + 100, rel=0.005)
    assert vol.var() == pytest.approx(4 * 20 + 9, rel=0.04)


def test_background_gradient_and_blobs() -> None:
    p = SimParams(shape=SMALL, n_particles=0, bg_gradient=0.5, poisson=False)
    vol, _ = simulate(p, np.random.default_rng(0))
    np.testing.assert_allclose(vol[:, :, 0], 5.0, rtol=1e-5)
    np.testing.assert_allclose(vol[:, :, -1], 15.0, rtol=1e-5)
    p = SimParams(shape=SMALL, n_particles=0, n_blobs=3, blob_amplitude=1.0, poisson=False)
    vol, _ = simulate(p, np.random.default_rng(0))
    assert vol.min() >= 10.0 - 1e-5 and vol.max() > 14.0


def test_brightness_spread_lognormal() -> None:
    p = SimParams(shape=(10, 256, 256), n_particles=200, brightness_sd=0.2, snr=7.0, poisson=False)
    vol, pos = simulate(p, np.random.default_rng(2))
    # Peak of an isolated spot, corrected for its sub-voxel offset, gives its amplitude.
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    iso = pos[d[:, 1] > 10]
    v = np.floor(iso + 0.5).astype(int)
    off = iso - v
    att = np.exp(-(off[:, 0] ** 2) / 2 - (off[:, 1] ** 2 + off[:, 2] ** 2) / (2 * 1.5**2))
    amp = (vol[v[:, 0], v[:, 1], v[:, 2]] - 10.0) / att
    logf = np.log(amp / amplitude_from_snr(7.0, 10.0))
    assert len(iso) > 50
    assert abs(np.median(logf)) < 0.1 and 0.12 < logf.std() < 0.28


def test_render_sum_vs_max_and_edges() -> None:
    pos = np.array([[2.0, 10.0, 10.0], [2.0, 11.0, 10.0]])
    s = render_spots((5, 20, 20), pos, (1.0, 1.5, 1.5), 1.0, combine="sum")
    m = render_spots((5, 20, 20), pos, (1.0, 1.5, 1.5), 1.0, combine="max")
    assert m.max() == pytest.approx(1.0) and s.max() == pytest.approx(1.0 + np.exp(-1 / 4.5))
    # A spot on the corner renders the same values as the corresponding crop of a larger volume.
    big = render_spots((12, 40, 40), np.array([[5.3, 10.2, 9.7]]), (1.0, 1.5, 1.5), 3.0, truncate=10)
    small = render_spots((7, 30, 30), np.array([[0.3, 0.2, -0.3]]), (1.0, 1.5, 1.5), 3.0, truncate=10)
    np.testing.assert_allclose(small, big[5:12, 10:40, 10:40], atol=1e-12)


def test_sample_params_ranges() -> None:
    rng = np.random.default_rng(0)
    ps = [sample_params(rng) for _ in range(300)]
    snr = np.array([p.snr for p in ps])
    assert snr.min() >= 0.8 and snr.max() <= 10 and snr.min() < 1.0 and snr.max() > 7
    assert all(1.0 <= p.sigma_xy <= 2.0 and 0.7 <= p.sigma_z <= 1.5 for p in ps)
    assert all(5.0 <= p.background <= 50.0 and p.brightness_sd == 0.2 for p in ps)
    assert all(45 <= p.n_particles <= 1200 for p in ps)
    assert {p.integrate_psf for p in ps} == {False, True}
    p = sample_params(rng, snr=2.0, density="high")
    assert p.snr == 2.0 and p.n_particles == 1000 and p.shape == (10, 512, 512)
    p = sample_params(rng, density="mid", shape=(10, 128, 128))
    assert p.n_particles == round(500 / 16)
    assert sample_params(rng, density=250).n_particles == 250
    crowded = [sample_params(rng, density=(50, 3000)).n_particles for _ in range(200)]
    assert 50 <= min(crowded) < 500 and 2500 < max(crowded) <= 3000  # a uniform range of counts
    with pytest.raises(ValueError):
        sample_params(rng, density="dense")
    q = sample_params(rng, nuisance=True, shape=SMALL)
    simulate(q, rng)  # all nuisance fields render


def test_benchmark_set_deterministic_and_disjoint() -> None:
    a = make_benchmark_set(1, seed=5, shape=SMALL)
    assert len(a) == len(PTC_SNRS) * len(PTC_DENSITIES)
    assert [(m["snr"], m["density"]) for _, _, m in a[:3]] == [(1, "low"), (1, "mid"), (1, "high")]
    assert [len(p) for _, p, _ in a[:3]] == [round(n / 64) for n in (100, 500, 1000)]
    vol, pos, meta = benchmark_item(5, 7, 1, shape=SMALL)
    np.testing.assert_array_equal(vol, a[7][0])
    np.testing.assert_array_equal(pos, a[7][1])
    assert meta["snr"] == PTC_SNRS[7 // 3]
    b = make_benchmark_set(1, seed=6, shape=SMALL)
    assert not np.array_equal(a[0][1], b[0][1])


def test_crlb_reproduces_table() -> None:
    table = {1: 0.851, 2: 0.390, 4: 0.169, 7: 0.083}
    for snr, bound in table.items():
        r = crlb_3d(snr)
        assert r["rmse_3d"] == pytest.approx(bound, rel=0.03)
    r = crlb_3d(1)
    assert r["sd_xy"] == pytest.approx(0.544, rel=0.03) and r["sd_z"] == pytest.approx(0.363, rel=0.03)
    assert r["photons"] == pytest.approx(131, rel=0.01)


def test_the_tests_renderer_is_the_simulators() -> None:
    """tests/onnx_models.py renders spots without training/ (so the inference tests run against the wheel): the same
    numbers as render_spots, summed and (density targets) max-combined, spots at the edges, wider than the volume
    and more than one chunk included; and the same amplitude for an SNR."""
    from onnx_models import amplitude_from_snr as tests_amplitude
    from onnx_models import gaussian_spots

    from training.targets import density_target

    rng = np.random.default_rng(3)
    for shape, n, sigma, amp in [((8, 56, 56), 5, (1.0, 1.5, 1.5), 60.0), ((3, 20, 30), 7, (2.0, 1.0, 4.0), 5.0),
                                 ((10, 128, 128), 9000, (1.0, 1.5, 1.5), rng.uniform(1, 9, 9000))]:
        pos = rng.uniform(-1.5, np.array(shape) + 0.5, (n, 3))
        np.testing.assert_array_equal(gaussian_spots(shape, pos, sigma, amp), render_spots(shape, pos, sigma, amp))
        np.testing.assert_array_equal(gaussian_spots(shape, pos, sigma, amp, combine="max"),
                                      render_spots(shape, pos, sigma, amp, combine="max"))
        np.testing.assert_array_equal(gaussian_spots(shape, pos, sigma, combine="max").astype(np.float32),
                                      density_target(shape, pos, sigma))
    for snr, background in [(1.0, 10.0), (7.0, 10.0), (4.0, 3.0), (20.0, 100.0)]:
        assert tests_amplitude(snr, background) == amplitude_from_snr(snr, background)
