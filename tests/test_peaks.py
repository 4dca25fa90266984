"""find_peaks: maxima, plateaus, borders, threshold, suppression, refinement accuracy, scipy reference parity."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import gaussian_spots

from dmdet_infer.peaks import REFINE_METHODS, Peaks, find_peaks, warmup

_REF = Path(__file__).resolve().parents[1] / "benchmarks" / "_reference_peaks.py"


def _reference():
    spec = importlib.util.spec_from_file_location("_reference_peaks", _REF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spots(rng, sigma, noise=0.0, spacing=(8, 10, 10), grid=(2, 16, 16)):
    """Well-separated sampled Gaussians (peak 1, max-combined) at random sub-voxel centres; (map, centres)."""
    shape = tuple(s * g for s, g in zip(spacing, grid))
    axes = [np.arange(g) * s + s / 2 for s, g in zip(spacing, grid)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    centres = centres + rng.uniform(-0.5, 0.5, centres.shape)
    d = gaussian_spots(shape, centres, tuple(sigma), combine="max").astype(np.float32)  # training's density_target
    if noise:
        d += (noise * rng.standard_normal(shape)).astype(np.float32)
    return d, centres


def _rmse(peaks: Peaks, centres: np.ndarray) -> np.ndarray:
    assert len(peaks.coords) == len(centres)
    j = np.argmin(((peaks.coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert len(np.unique(j)) == len(centres)
    return np.sqrt(((peaks.coords - centres[j]) ** 2).mean(axis=0))


def test_warmup_compiles_the_numba_kernels():
    from dmdet_infer import peaks

    warmup()
    assert set(peaks._JITTED) == {"_resolve_plateaus", "_plateau_open", "_suppress_cells"}
    assert all(kernel.signatures for kernel in peaks._JITTED.values())


def test_a_default_detection_compiles_nothing(tmp_path):
    """Maxima, refinement and photometry are numpy: a fresh install's first run imports no numba at all (the
    example has no plateau and no min-distance suppression)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import sys, tifffile; from dmdet_infer import Detector; "
            f"s = Detector().detect(tifffile.imread({str(root / 'examples' / 'virus_snr4.tif')!r})); "
            "print(len(s), 'numba' in sys.modules)")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         check=True).stdout.split()
    assert int(out[0]) > 50 and out[1] == "False"
    assert not any(tmp_path.iterdir())  # nothing compiled into numba's cache


def test_single_peak():
    d = np.zeros((5, 6, 7), np.float32)
    d[2, 3, 4] = 1.0
    d[2, 3, 5] = 0.5
    p = find_peaks(d, 0.1)
    assert p.voxels.tolist() == [[2, 3, 4]]
    assert p.scores.dtype == np.float32 and p.scores.tolist() == [1.0]
    assert p.coords.dtype == np.float64 and p.voxels.dtype == np.int64
    # log-Gaussian offset toward the brighter x neighbour, neighbours at 0 are floored at 1e-12
    assert p.coords[0, :2].tolist() == [2.0, 3.0] and 4.0 < p.coords[0, 2] <= 4.5


@pytest.mark.parametrize("refine", REFINE_METHODS)
def test_two_voxel_plateau_gives_one_peak_in_the_middle(refine):
    d = np.zeros((3, 3, 6), np.float32)
    d[1, 1, 2] = d[1, 1, 3] = 1.0
    d[1, 1, 1] = d[1, 1, 4] = 0.5
    p = find_peaks(d, 0.1, refine=refine)
    assert p.voxels.tolist() == [[1, 1, 2]]  # first plateau voxel in raster order
    if refine in ("gaussian", "parabolic", "lsq"):
        assert p.coords[0].tolist() == [1.0, 1.0, 2.5]


@pytest.mark.parametrize(
    "cells",
    [
        [(2, 1, 1), (2, 1, 2), (2, 1, 3), (2, 2, 3), (2, 3, 3)],  # L shape
        [(1, 1, 1), (2, 2, 2), (1, 1, 3)],  # V shape: two voxels with no earlier equal neighbour
        [(3, 3, 1), (2, 2, 2), (1, 1, 3), (2, 3, 3), (3, 4, 4)],  # zig-zag over z
    ],
)
def test_connected_plateaus_of_any_shape_give_one_peak(cells):
    d = np.full((5, 6, 6), 0.2, np.float32)
    for c in cells:
        d[c] = 0.9
    p = find_peaks(d, 0.5)
    assert p.voxels.tolist() == [list(min(cells))]


def test_shoulder_plateau_and_constant_map_give_no_peak():
    d = np.zeros((1, 1, 5), np.float32)
    d[0, 0, 1:4] = [0.5, 0.5, 0.8]  # plateau touching a higher voxel: only the 0.8 is a peak
    assert find_peaks(d, 0.1).voxels.tolist() == [[0, 0, 3]]
    for value in (0.0, 0.7):
        assert len(find_peaks(np.full((4, 5, 6), value, np.float32), 0.5).scores) == 0
        assert len(find_peaks(np.full((4, 5, 6), value, np.float32), -1.0).scores) == 0


@pytest.mark.parametrize("corner", [(0, 0, 0), (3, 4, 5), (0, 4, 0), (3, 0, 5)])
def test_border_and_corner_maxima(corner):
    d = np.zeros((4, 5, 6), np.float32)
    d[corner] = 1.0
    p = find_peaks(d, 0.5)
    assert p.voxels.tolist() == [list(corner)]
    assert p.coords.tolist() == [[float(c) for c in corner]]  # no neighbour outside: offset 0


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 4), (1, 5, 1), (2, 1, 1), (1, 2, 3), (0, 3, 3)])
def test_tiny_and_degenerate_shapes(shape):
    rng = np.random.default_rng(0)
    d = rng.random(shape).astype(np.float32)
    for refine in REFINE_METHODS:
        p = find_peaks(d, 0.0, 2.0, refine)
        assert np.isfinite(p.coords).all()
        if d.size > 1:
            assert len(p.scores) >= 1 and p.scores[0] == d.max()
        else:
            assert len(p.scores) == 0  # a single voxel has no lower neighbour


def test_threshold_is_strict_and_compared_in_float64():
    d = np.zeros((3, 3, 3), np.float32)
    d[1, 1, 1] = 0.5
    assert len(find_peaks(d, 0.5).scores) == 0
    assert len(find_peaks(d, 0.4999).scores) == 1
    d[1, 1, 1] = np.float32(0.1)  # 0.10000000149 > 0.1 as real numbers
    assert len(find_peaks(d, 0.1).scores) == 1


def test_scores_sorted_descending_ties_in_raster_order():
    d = np.zeros((1, 9, 9), np.float32)
    d[0, 6, 6] = d[0, 2, 2] = 0.7
    d[0, 4, 4] = 0.9
    p = find_peaks(d, 0.1)
    assert p.voxels.tolist() == [[0, 4, 4], [0, 2, 2], [0, 6, 6]]


def test_min_distance_anisotropic_suppression_keeps_the_higher_peak():
    d = np.zeros((9, 20, 20), np.float32)
    d[4, 5, 5] = 0.6
    d[4, 5, 8] = 0.9  # 3 voxels apart in x
    d[6, 15, 15] = 0.8
    d[4, 15, 15] = 0.7  # 2 voxels apart in z
    assert len(find_peaks(d, 0.1).scores) == 4
    p = find_peaks(d, 0.1, (1.0, 4.0, 4.0))  # x suppression only: 3/4 < 1, z 2 apart with mdz<=1 is kept
    assert p.voxels.tolist() == [[4, 5, 8], [6, 15, 15], [4, 15, 15]]
    p = find_peaks(d, 0.1, (3.0, 2.0, 2.0))
    assert p.voxels.tolist() == [[4, 5, 8], [6, 15, 15], [4, 5, 5]]
    p = find_peaks(d, 0.1, 3.0)  # scalar: both pairs are exactly 3 / 2 apart -> only z pair suppressed
    assert p.voxels.tolist() == [[4, 5, 8], [6, 15, 15], [4, 5, 5]]
    assert len(find_peaks(d, 0.1, 30.0).scores) == 1


def test_empty_result_shapes_and_dtypes():
    p = find_peaks(np.zeros((4, 4, 4), np.float32), 0.5)
    assert isinstance(p, Peaks)
    assert p.coords.shape == (0, 3) and p.coords.dtype == np.float64
    assert p.voxels.shape == (0, 3) and p.voxels.dtype == np.int64
    assert p.scores.shape == (0,) and p.scores.dtype == np.float32


def test_input_conversion_and_errors():
    rng = np.random.default_rng(3)
    d = rng.random((6, 20, 30))
    ref = find_peaks(d.astype(np.float32), 0.5)
    for other in (d, np.asfortranarray(d), d.astype(">f4")):
        p = find_peaks(other, 0.5)
        assert np.array_equal(p.voxels, ref.voxels) and np.array_equal(p.coords, ref.coords)
    half = d.astype(np.float16)
    assert np.array_equal(find_peaks(half, 0.5).coords, find_peaks(half.astype(np.float32), 0.5).coords)
    buf = np.zeros((6, 20, 60), np.float32)
    buf[:, :, ::2] = d
    strided = find_peaks(buf[:, :, ::2], 0.5)
    assert np.array_equal(strided.voxels, ref.voxels) and np.array_equal(strided.coords, ref.coords)
    with pytest.raises(ValueError, match="3D"):
        find_peaks(np.zeros((4, 4)), 0.5)
    with pytest.raises(ValueError, match="refine"):
        find_peaks(d, 0.5, refine="spline")
    with pytest.raises(ValueError, match="min_distance"):
        find_peaks(d, 0.5, (1.0, 2.0))
    with pytest.raises(ValueError, match="min_distance"):
        find_peaks(d, 0.5, -1.0)


def test_odd_input_gives_finite_coordinates():
    rng = np.random.default_rng(4)
    d = rng.normal(0.0, 1.0, (5, 12, 12)).astype(np.float32)
    d[rng.random(d.shape) < 0.1] = np.nan
    d[rng.random(d.shape) < 0.02] = np.inf
    d[rng.random(d.shape) < 0.02] = -np.inf
    d[rng.random(d.shape) < 0.1] = 0.0
    d[2, 5, 5], d[2, 5, 4], d[2, 5, 6] = 5.0, -3.0, 1e-30
    for refine in REFINE_METHODS:
        p = find_peaks(d, -0.5, (1.5, 2.0, 2.0), refine)
        assert len(p.scores) > 0 and not np.isnan(p.coords).any()
        assert np.all(np.abs(p.coords - p.voxels) <= 0.5)
        assert not np.isnan(p.scores).any()


@pytest.mark.parametrize("sigma", [(1.0, 1.0, 1.0), (1.0, 1.5, 1.5), (1.5, 2.0, 2.0), (0.8, 1.2, 1.2)])
def test_gaussian_refinement_is_exact_on_noise_free_spots(sigma):
    d, centres = _spots(np.random.default_rng(11), sigma)
    for refine in ("gaussian", "lsq"):
        assert (_rmse(find_peaks(d, 0.5, (3.0, 4.0, 4.0), refine), centres) <= 0.02).all()
    assert (_rmse(find_peaks(d, 0.5, (3.0, 4.0, 4.0), "none"), centres) > 0.2).all()


@pytest.mark.parametrize("sigma", [(1.0, 1.0, 1.0), (1.0, 1.5, 1.5), (0.8, 1.2, 1.2)])
def test_gaussian_refinement_with_3_percent_noise(sigma):
    d, centres = _spots(np.random.default_rng(12), sigma, noise=0.03)
    assert (_rmse(find_peaks(d, 0.5, (3.0, 4.0, 4.0), "gaussian"), centres) <= 0.1).all()


def test_lsq_refinement_with_3_percent_noise_on_broad_spots():
    # 3-point log-Gaussian gives ~0.13 per axis at sigma 2 with this noise; the 3x3x3 fit stays under 0.1
    d, centres = _spots(np.random.default_rng(13), (2.0, 2.0, 2.0), noise=0.03)
    assert (_rmse(find_peaks(d, 0.5, (3.0, 4.0, 4.0), "lsq"), centres) <= 0.1).all()


@pytest.mark.parametrize("quantised", [False, True])
def test_identical_to_scipy_reference(quantised):
    ndimage = pytest.importorskip("scipy.ndimage", reason="the wheel run has neither scipy nor benchmarks/")

    ref = _reference()
    rng = np.random.default_rng(21)
    d = ndimage.gaussian_filter(rng.random((7, 40, 50)), (0.8, 1.2, 1.2)).astype(np.float32)
    if quantised:  # many plateaus of all shapes
        d = (np.round(d * 60) / 60).astype(np.float32)
    thr = float(np.quantile(d, 0.4))
    for md in ((1.0, 1.0, 1.0), (1.5, 3.0, 3.0), (2.5, 1.0, 4.0)):
        for refine in REFINE_METHODS:
            p = find_peaks(d, thr, md, refine)
            coords, voxels, scores = ref.find_peaks_reference(d, thr, md, refine)
            assert len(p.scores) > 5
            assert np.array_equal(p.voxels, voxels) and np.array_equal(p.scores, scores)
            np.testing.assert_allclose(p.coords, coords, rtol=0, atol=1e-12)


@pytest.mark.parametrize("md", [1e300, np.inf, 1e19])
def test_a_huge_min_distance_keeps_only_the_best_peak_without_warnings(md):
    """Found by tests/test_fuzz.py: a model with min_distance_zyx [1e300, 1, 1] made the suppression grid's cell
    size overflow int64 ('invalid value encountered in cast')."""
    import warnings

    from dmdet_infer.peaks import suppress

    d = np.zeros((6, 20, 20), np.float32)
    for z, y, x, v in [(1, 3, 3, 0.9), (4, 15, 15, 0.8), (2, 10, 17, 0.7)]:
        d[z, y, x] = v
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = find_peaks(d, 0.5, min_distance=(md, 1, 1))
        assert p.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])  # z alone: no two peaks share y and x
        p = find_peaks(d, 0.5, min_distance=md)
        assert p.scores.tolist() == pytest.approx([0.9])
        vox = np.array([[1, 3, 3], [4, 15, 15], [2, 10, 17]])
        assert suppress(vox, np.array([0.9, 0.8, 0.7]), md).tolist() == [0]
        assert suppress(vox, np.array([0.9, 0.8, 0.7]), (md, 1, 1)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed_level", [0.3, 0.6, 0.9])
def test_seed_level_gives_what_a_second_search_of_the_whole_block_gives(seed_level):
    """One pass at two levels (the detector's candidates and the windows' seeds) equals two searches, plateaus,
    a core and open faces included."""
    from dmdet_infer.peaks import find_candidates

    rng = np.random.default_rng(3)
    d, _ = _spots(rng, (1.0, 1.5, 1.5), noise=0.05, grid=(2, 6, 6))
    d = np.round(d * 20) / 20  # quantised: many plateaus
    core = (slice(1, 14), slice(2, 50), slice(0, 40))
    faces = ((True, True), (True, False), (False, True))
    for refine in REFINE_METHODS:
        both = find_candidates(d, 0.5, refine, core, faces, seed_level=seed_level)
        one = find_candidates(d, 0.5, refine, core, faces)
        seeds = find_candidates(d, seed_level, refine).coords
        assert one.seeds is None
        for a, b in zip(both[:4], one[:4]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(both.seeds, seeds)
        assert len(seeds) > 0
