"""SEF3D baseline: LoG response, detection of bright separated spots, grid tuning."""

from __future__ import annotations

import numpy as np
import pytest

from training.matching import score
from training.sef3d import log_response, sef3d_detect, sef3d_grid, tune_sef3d
from training.simulate import amplitude_from_snr, render_spots

SHAPE = (10, 64, 64)


def _separated_volume(seed: int, snr: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """Spots on a jittered 12-voxel grid (well separated) at the given PTC SNR, Poisson noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(8, 60, 12), np.arange(8, 60, 12), indexing="ij")
    n = yy.size
    pos = np.stack([rng.uniform(2, 7, n), yy.ravel() + rng.uniform(-2, 2, n), xx.ravel() + rng.uniform(-2, 2, n)], 1)
    expected = 10.0 + render_spots(SHAPE, pos, (1.0, 1.5, 1.5), amplitude_from_snr(snr, 10.0))
    return rng.poisson(expected).astype(np.float32), pos


def test_log_response_peaks_at_blob() -> None:
    vol = render_spots(SHAPE, np.array([[5.0, 30.0, 20.0]]), (1.0, 1.5, 1.5), 50.0).astype(np.float32)
    r = log_response(vol, (1.0, 1.5, 1.5))
    assert r.dtype == np.float32 and np.unravel_index(np.argmax(r), r.shape) == (5, 30, 20)
    assert r[5, 30, 20] > 0 and r.min() < 0
    assert abs(log_response(np.full(SHAPE, 7.0, np.float32), (1.0, 1.5, 1.5))).max() < 1e-3 * 7  # ~flat: ~0


def test_sef3d_finds_separated_spots_at_snr7() -> None:
    vol, pos = _separated_volume(0)
    det = sef3d_detect(vol, (1.0, 1.5, 1.5), k=4.0)
    s = score(det, pos)
    assert s["f1"] > 0.95
    assert np.allclose(det, np.round(det))  # paper-style: integer voxels
    refined = sef3d_detect(vol, (1.0, 1.5, 1.5), k=4.0, refine="parabolic")
    assert score(refined, pos)["rmse"] < s["rmse"]


def test_tune_sef3d_picks_a_good_setting() -> None:
    vols, truths = zip(*[_separated_volume(s, snr=4.0) for s in (1, 2)])
    best, f1 = tune_sef3d(vols, truths, sef3d_grid((1.5, 3.0), (1.0,)), ks=(0.0, 3.0, 6.0, 30.0))
    assert f1 > 0.95 and best["sigma_zyx"] == (1.0, 1.5, 1.5) and best["k"] in (3.0, 6.0)
    # The reported F1 is what detection with the chosen setting gives.
    direct = np.mean([score(sef3d_detect(v, best["sigma_zyx"], best["k"]), t)["f1"] for v, t in zip(vols, truths)])
    assert f1 == pytest.approx(direct)
    with pytest.raises(ValueError):
        tune_sef3d([], [], [(1.0, 1.5, 1.5)], [3.0])
