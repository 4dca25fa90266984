"""Input normalisation, exactly as the model was trained (``dmdet.normalisation``)."""

from __future__ import annotations

from typing import Any

import numpy as np

MAD_TO_SD = 1.4826
MAX_SAMPLES = 1 << 22


def sample(volume, max_samples: int | None = None) -> np.ndarray:
    """The whole volume when it has at most ``max_samples`` (default :data:`MAX_SAMPLES`) voxels, else a strided
    subvolume of at most that many: every k-th plane first (then rows, then columns), so a memmap or chunked file
    is read in a few contiguous pieces and memory stays bounded."""
    if max_samples is None:
        max_samples = MAX_SAMPLES
    if int(np.prod(volume.shape)) <= max_samples:
        return np.asarray(volume)
    steps = [1, 1, 1]
    for axis in range(3):
        rest = int(np.prod([-(-n // s) for n, s in zip(volume.shape, steps)]))
        if rest <= max_samples:
            break
        per_step = rest // (-(-volume.shape[axis] // steps[axis]))  # voxels in one index along this axis
        keep = max(1, max_samples // max(per_step, 1))
        steps[axis] = -(-volume.shape[axis] // keep)
    return np.asarray(volume[tuple(slice(None, None, s) for s in steps)])


def normalisation_stats(volume: np.ndarray, spec: dict[str, Any]) -> tuple[float, float]:
    """(offset, scale) such that ``(volume - offset) / scale`` is the network's input.

    ``scale`` is 0 for a constant volume (nothing to detect). Statistics come from the whole volume (a strided
    sample above 4 Mi voxels, see :func:`sample`), never from a tile, so tiled and whole-volume inference see the
    same input.
    """
    values = np.asarray(sample(volume), dtype=np.float64).reshape(-1)
    method = spec["method"]
    if method == "median_mad":
        offset = float(np.median(values))
        scale = MAD_TO_SD * float(np.median(np.abs(values - offset)))
        if scale == 0.0:  # mostly constant (e.g. clipped or noise-free): fall back to the standard deviation
            scale = float(values.std())
    elif method == "percentile":
        low, high = np.percentile(values, [spec.get("low", 1.0), spec.get("high", 99.8)])
        offset, scale = float(low), float(high - low)
        if scale == 0.0:
            scale = float(values.max() - low)
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    return offset, scale


def apply(block: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """``(block - offset) / scale`` as float32."""
    out = np.asarray(block, dtype=np.float32) - np.float32(offset)
    out *= np.float32(1.0 / scale)
    return out


def normalise(volume: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Normalise a whole volume (training and small inputs)."""
    offset, scale = normalisation_stats(volume, spec)
    if scale == 0.0:
        return np.zeros(volume.shape, np.float32)
    return apply(volume, offset, scale)
