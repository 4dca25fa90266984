"""Per-volume threshold from the model's noise calibration (``--threshold auto``).

The input is normalised by the background noise (median / MAD), so the density map's peaks on pure noise occur
at a rate per voxel that depends on the model, not on the image. Export measures that rate on simulated
background-only volumes (:func:`calibrate`, stored as ``dmdet.noise_peaks``). For a new volume with ``n`` voxels
and candidate scores ``s``, the expected false spots above a threshold ``t`` are ``FP(t) = rate(t) * n``, the
true spots are estimated conservatively as ``TP(t) = N(t) - FP(t) - guard * sqrt(FP(t))`` (``N(t)``: candidates
above ``t``; ``guard`` standard deviations of a Poisson count), the number of particles as ``P = max TP``, and
:func:`choose` returns the ``t`` that maximises the estimated F1 ``2 TP / (N + P)`` (the highest such ``t`` among
ties). When no spot stands out of the noise (``P < 1``) it returns the model's fixed threshold. A faint image
(SNR ~1) thus gets a low threshold and a bright one a high threshold that drops the noise peaks a single
compromise threshold lets through.

A calibration may also hold the noise peaks' photometric masses (``photons``, ``per_voxel_cut``;
:func:`dmdet_infer.pairs.shape_features`, measured for peaks scoring at least ``measure_level``). Then
:func:`choose_cut` searches a cut on both the score and the photometric mass (a peak is kept when its score is
above ``t`` and, if measured, its mass above ``a``) with the same estimated F1. In a bright image the noise
peaks, whose scores overlap those of real spots, are far fainter than the real spots: the mass cut drops them
without raising the score threshold over faint-scoring real spots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(91))  # 0.05 .. 0.95
GUARD_SD = 2.0
CALIBRATION_SHAPE = (10, 512, 512)
CALIBRATION_BACKGROUND = 10.0
CALIBRATION_VOLUMES = 2
PHOTON_GRID = tuple(round(float(a), 1) for a in np.geomspace(5.0, 500.0, 31))  # normalised units
MEASURE_LEVEL = 0.5


def calibrate(
    scores_of: Callable[[np.ndarray], Any],
    shape: tuple[int, int, int] = CALIBRATION_SHAPE,
    volumes: int = CALIBRATION_VOLUMES,
    background: float = CALIBRATION_BACKGROUND,
    seed: int = 0,
) -> dict[str, Any]:
    """Noise-peak rate per voxel above each threshold of :data:`GRID`.

    ``scores_of(volume)`` returns the scores of the spots found in ``volume`` at threshold ``GRID[0]`` (e.g.
    ``lambda v: Detector(model, threshold=0.05).detect(v).score``), or ``(scores, photons)`` with the
    photometric masses (NaN where not measured, see :meth:`dmdet_infer.detector.Detector.candidates`), which adds
    the rates of :func:`choose_cut`; it is called on ``volumes`` Poisson volumes of ``shape`` with mean
    ``background`` photons (no particles)."""
    rng = np.random.default_rng(seed)
    scores, photons = [], []
    for _ in range(int(volumes)):
        found = scores_of(rng.poisson(background, shape).astype(np.float32))
        s, p = found if isinstance(found, tuple) else (found, None)
        scores.append(np.asarray(s, np.float64).reshape(-1))
        photons.append(None if p is None else np.asarray(p, np.float64).reshape(-1))
    found = np.concatenate(scores) if scores else np.zeros(0)
    n_voxels = int(volumes) * int(np.prod(shape))
    rates = [float(np.count_nonzero(found > t)) / n_voxels for t in GRID]
    out = {"thresholds": list(GRID), "per_voxel": rates, "guard_sd": GUARD_SD, "shape": list(shape),
           "volumes": int(volumes), "background": float(background), "noise": "poisson"}
    if photons and all(p is not None for p in photons):
        mass = np.concatenate(photons)
        mass = np.where(np.isnan(mass), np.inf, mass)  # not measured: never cut
        out["measure_level"] = MEASURE_LEVEL
        out["photons"] = list(PHOTON_GRID)
        out["per_voxel_cut"] = [[float(np.count_nonzero((found > t) & (mass > a))) / n_voxels for a in PHOTON_GRID]
                                for t in GRID]
    return out


def check(calibration: dict[str, Any]) -> None:
    """Raise ValueError when a ``dmdet.noise_peaks`` entry is malformed."""
    t = calibration.get("thresholds")
    r = calibration.get("per_voxel")
    if not isinstance(t, list) or not isinstance(r, list) or len(t) != len(r) or not t:
        raise ValueError("dmdet.noise_peaks needs equal-length lists 'thresholds' and 'per_voxel'")
    if any(b <= a for a, b in zip(t, t[1:])) or not all(0.0 <= v < 1.0 for v in t):
        raise ValueError("dmdet.noise_peaks thresholds must increase within [0, 1)")
    if "per_voxel_cut" in calibration:
        a = calibration.get("photons")
        cut = calibration["per_voxel_cut"]
        level = calibration.get("measure_level")
        if (not isinstance(a, list) or not a or not isinstance(cut, list) or len(cut) != len(t)
                or any(not isinstance(row, list) or len(row) != len(a) for row in cut)
                or not isinstance(level, (int, float))):
            raise ValueError("dmdet.noise_peaks needs 'photons', 'measure_level' and a 'per_voxel_cut' row of "
                             "len(photons) rates per threshold")


def has_cut(calibration: dict[str, Any] | None) -> bool:
    """Whether ``calibration`` supports :func:`choose_cut` (score and photometric mass)."""
    return calibration is not None and "per_voxel_cut" in calibration


def floor(calibration: dict[str, Any]) -> float:
    """The lowest calibrated threshold: candidates are searched above it."""
    return float(calibration["thresholds"][0])


def _above(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Candidates strictly above each threshold of ``grid``."""
    s = np.sort(np.asarray(scores, np.float64))
    return s.size - np.searchsorted(s, grid, side="right")


def _estimate(above: np.ndarray, rate: np.ndarray, n_voxels: int, guard: float) -> np.ndarray:
    """Conservative true-spot counts: candidates above a cut less the expected noise peaks and ``guard`` sd."""
    fp = rate * float(n_voxels)
    return np.clip(above - fp - guard * np.sqrt(fp), 0.0, None)


def choose(scores: np.ndarray, n_voxels: int, calibration: dict[str, Any], fallback: float) -> float:
    """The threshold for one volume (see the module docstring); ``scores`` are its candidates' scores."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    rate = np.asarray(calibration["per_voxel"], np.float64)
    above = _above(scores, grid)
    tp = _estimate(above, rate, n_voxels, float(calibration.get("guard_sd", GUARD_SD)))
    particles = float(tp.max()) if tp.size else 0.0
    if particles < 1.0:
        return float(fallback)
    f1 = 2.0 * tp / np.maximum(above + particles, 1.0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    return float(grid[best])


def choose_cut(
    scores: np.ndarray, photons: np.ndarray, n_voxels: int, calibration: dict[str, Any], fallback: float
) -> tuple[float, float]:
    """``(t, a)`` for one volume: keep candidates scoring above ``t`` whose photometric mass (NaN: not measured)
    is above ``a`` (``-inf``: no mass cut). Same estimate as :func:`choose`, over both cuts; ties go to the
    highest ``t``, then the lowest ``a``. Falls back to ``(fallback, -inf)`` where :func:`choose` does."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    levels = np.r_[-np.inf, np.asarray(calibration["photons"], np.float64)]
    rate = np.c_[np.asarray(calibration["per_voxel"], np.float64), np.asarray(calibration["per_voxel_cut"])]
    s = np.asarray(scores, np.float64).reshape(-1)
    m = np.asarray(photons, np.float64).reshape(-1)
    m = np.where(np.isnan(m), np.inf, m)
    above = np.stack([_above(s[m > a], grid) for a in levels], axis=1)
    tp = _estimate(above, rate, n_voxels, float(calibration.get("guard_sd", GUARD_SD)))
    if not tp.size or tp[:, 0].max() < 1.0:  # no spot stands out by its score: as choose (the many cells of the
        return float(fallback), -np.inf      # 2D search would otherwise find one in pure noise now and then)
    particles = float(tp.max())
    f1 = 2.0 * tp / np.maximum(above + particles, 1.0)
    best = np.argwhere(f1 >= f1.max() - 1e-12)
    i, j = best[np.lexsort((best[:, 1], -best[:, 0]))[0]]
    return float(grid[i]), float(levels[j])
