"""SEF3D baseline (spot-enhancing filter, Sage et al. 2005, in 3D): negative LoG, mean + k*std threshold, maxima.

The response is the anisotropic scale-normalised negative Laplacian of Gaussian
``-(s_z^2 d_zz + s_y^2 d_yy + s_x^2 d_xx) (G_s * I)`` (per-axis second derivatives of scipy's Gaussian filter, i.e.
``scipy.ndimage.gaussian_laplace`` with each term scaled by its sigma^2). Detections are the 3D local maxima
(26-neighbourhood, ``dmdet_infer.peaks.find_peaks``) above ``mean + k * std`` of the response. The paper-style
baseline keeps integer voxels (``refine="none"``); ``"parabolic"`` adds a 3-point sub-voxel step on the response.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from dmdet_infer.peaks import find_peaks
from training.matching import score


def log_response(volume: np.ndarray, sigma_zyx: Sequence[float]) -> np.ndarray:
    """Scale-normalised negative LoG response (float32), positive on bright blobs of size ~sigma."""
    vol = np.asarray(volume, dtype=np.float32)
    sig = tuple(float(s) for s in sigma_zyx)
    out = np.zeros(vol.shape, dtype=np.float32)
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 2
        out -= sig[axis] ** 2 * gaussian_filter(vol, sig, order=order, mode="reflect")
    return out


def _detect_from_response(resp: np.ndarray, k: float, refine: str, min_distance: float | Sequence[float]):
    thr = float(resp.mean()) + k * float(resp.std())
    return find_peaks(resp, thr, min_distance=min_distance, refine=refine)


def sef3d_detect(
    volume: np.ndarray,
    sigma_zyx: Sequence[float] = (1.0, 1.5, 1.5),
    k: float = 3.0,
    refine: str = "none",
    min_distance: float | Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Detect spots; returns positions float64 (N, 3) zyx (integer voxels with ``refine="none"``)."""
    return _detect_from_response(log_response(volume, sigma_zyx), k, refine, min_distance).coords


def tune_sef3d(
    volumes: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    sigmas: Sequence[Sequence[float]],
    ks: Sequence[float],
    gate: float = 5.0,
    refine: str = "none",
    min_distance: float | Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[dict, float]:
    """Grid search of (sigma_zyx, k) by mean per-image F1 on validation data.

    Returns ({"sigma_zyx": tuple, "k": float}, best mean F1). Ties keep the first grid point (sigmas, then ks).
    Peaks are found once per (volume, sigma) at the lowest threshold and filtered by score for higher k:
    greedy suppression only depends on higher-scored peaks, so this equals detecting at each k separately.
    """
    if len(volumes) != len(truths) or not volumes:
        raise ValueError("need the same, non-zero number of volumes and truths")
    ks = [float(k) for k in ks]
    best: tuple[dict, float] = ({}, -1.0)
    for sig in sigmas:
        f1 = np.zeros(len(ks))
        for vol, true in zip(volumes, truths):
            resp = log_response(vol, sig)
            mean, std = float(resp.mean()), float(resp.std())
            peaks = _detect_from_response(resp, min(ks), refine, min_distance)
            for i, k in enumerate(ks):
                keep = peaks.scores.astype(np.float64) > mean + k * std
                f1[i] += score(peaks.coords[keep], true, gate)["f1"]
        f1 /= len(volumes)
        for k, f in zip(ks, f1):
            if f > best[1]:
                best = ({"sigma_zyx": tuple(float(s) for s in sig), "k": k}, float(f))
    return best


def sef3d_grid(
    sigma_xy: Sequence[float] = (1.0, 1.5, 2.0), sigma_z: Sequence[float] = (0.7, 1.0, 1.5)
) -> list[tuple[float, float, float]]:
    """Convenience grid of (sigma_z, sigma_xy, sigma_xy) triples for :func:`tune_sef3d`."""
    return [(z, xy, xy) for z, xy in itertools.product(sigma_z, sigma_xy)]
