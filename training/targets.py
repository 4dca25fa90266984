"""Training targets: Gaussian density map (DM-DetNet3D), binary map (DetNet3D) and the loss weight map (Eq. 2)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import maximum_filter

from training.simulate import render_spots


def density_target(
    shape: tuple[int, int, int],
    positions: np.ndarray,
    sigma_zyx: tuple[float, float, float] = (1.0, 1.5, 1.5),
) -> np.ndarray:
    """Density map in [0, 1]: voxel-wise max of point-sampled Gaussians, peak 1 at each sub-voxel centre."""
    out = render_spots(shape, positions, sigma_zyx, 1.0, combine="max", truncate=4.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def binary_target(shape: tuple[int, int, int], positions: np.ndarray) -> np.ndarray:
    """1 at the rounded voxel of each particle (clipped into the volume), 0 elsewhere; float32."""
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos):
        vox = np.floor(pos + 0.5).astype(np.int64)
        vox = np.clip(vox, 0, np.array(out.shape) - 1)
        out[vox[:, 0], vox[:, 1], vox[:, 2]] = 1.0
    return out


def weight_map(
    target: np.ndarray,
    threshold: float = 0.2,
    lam: float = 10.0,
    size: tuple[int, ...] | int = (3, 3, 3),
) -> np.ndarray:
    """Loss weights (paper Eq. 2): lam + 1 where the grey dilation of the target is >= threshold, else 1."""
    dilated = maximum_filter(np.asarray(target, dtype=np.float32), size=size, mode="nearest")
    return np.where(dilated >= threshold, np.float32(lam + 1.0), np.float32(1.0)).astype(np.float32)
