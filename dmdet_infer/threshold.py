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


def calibrate(
    scores_of: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int, int] = CALIBRATION_SHAPE,
    volumes: int = CALIBRATION_VOLUMES,
    background: float = CALIBRATION_BACKGROUND,
    seed: int = 0,
) -> dict[str, Any]:
    """Noise-peak rate per voxel above each threshold of :data:`GRID`.

    ``scores_of(volume)`` returns the scores of the spots found in ``volume`` at threshold ``GRID[0]`` (e.g.
    ``lambda v: Detector(model, threshold=0.05).detect(v).score``); it is called on ``volumes`` Poisson volumes
    of ``shape`` with mean ``background`` photons (no particles)."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(int(volumes)):
        scores.append(np.asarray(scores_of(rng.poisson(background, shape).astype(np.float32)), np.float64))
    found = np.concatenate(scores) if scores else np.zeros(0)
    n_voxels = int(volumes) * int(np.prod(shape))
    rates = [float(np.count_nonzero(found > t)) / n_voxels for t in GRID]
    return {"thresholds": list(GRID), "per_voxel": rates, "guard_sd": GUARD_SD, "shape": list(shape),
            "volumes": int(volumes), "background": float(background), "noise": "poisson"}


def check(calibration: dict[str, Any]) -> None:
    """Raise ValueError when a ``dmdet.noise_peaks`` entry is malformed."""
    t = calibration.get("thresholds")
    r = calibration.get("per_voxel")
    if not isinstance(t, list) or not isinstance(r, list) or len(t) != len(r) or not t:
        raise ValueError("dmdet.noise_peaks needs equal-length lists 'thresholds' and 'per_voxel'")
    if any(b <= a for a, b in zip(t, t[1:])) or not all(0.0 <= v < 1.0 for v in t):
        raise ValueError("dmdet.noise_peaks thresholds must increase within [0, 1)")


def floor(calibration: dict[str, Any]) -> float:
    """The lowest calibrated threshold: candidates are searched above it."""
    return float(calibration["thresholds"][0])


def choose(scores: np.ndarray, n_voxels: int, calibration: dict[str, Any], fallback: float) -> float:
    """The threshold for one volume (see the module docstring); ``scores`` are its candidates' scores."""
    grid = np.asarray(calibration["thresholds"], np.float64)
    rate = np.asarray(calibration["per_voxel"], np.float64)
    guard = float(calibration.get("guard_sd", GUARD_SD))
    s = np.sort(np.asarray(scores, np.float64))
    above = s.size - np.searchsorted(s, grid, side="right")  # candidates strictly above each threshold
    fp = rate * float(n_voxels)
    tp = np.clip(above - fp - guard * np.sqrt(fp), 0.0, None)
    particles = float(tp.max()) if tp.size else 0.0
    if particles < 1.0:
        return float(fallback)
    f1 = 2.0 * tp / np.maximum(above + particles, 1.0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    return float(grid[best])
