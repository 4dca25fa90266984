"""Input normalisation, exactly as the model was trained (``dmdet.normalisation``)."""

from __future__ import annotations

from typing import Any

import numpy as np

MAD_TO_SD = 1.4826
MAX_SAMPLES = 1 << 22


def _sample(volume: np.ndarray, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """A deterministic, evenly strided float64 sample of at most ``max_samples`` voxels."""
    flat = volume.reshape(-1)
    step = max(1, -(-flat.size // max_samples))
    return np.asarray(flat[::step], dtype=np.float64)


def normalisation_stats(volume: np.ndarray, spec: dict[str, Any]) -> tuple[float, float]:
    """(offset, scale) such that ``(volume - offset) / scale`` is the network's input.

    ``scale`` is 0 for a constant volume (nothing to detect). Statistics come from the whole volume (a strided
    sample above 4 Mi voxels), never from a tile, so tiled and whole-volume inference see the same input.
    """
    sample = _sample(volume)
    method = spec["method"]
    if method == "median_mad":
        offset = float(np.median(sample))
        scale = MAD_TO_SD * float(np.median(np.abs(sample - offset)))
        if scale == 0.0:  # mostly constant (e.g. clipped or noise-free): fall back to the standard deviation
            scale = float(sample.std())
    elif method == "percentile":
        low, high = np.percentile(sample, [spec.get("low", 1.0), spec.get("high", 99.8)])
        offset, scale = float(low), float(high - low)
        if scale == 0.0:
            scale = float(sample.max() - low)
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
