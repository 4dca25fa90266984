"""Cramér-Rao lower bound of 3D spot localisation (method.md §4.3), computed numerically.

Model: mu_k = A * g_k + b at voxel centres k, g a point-sampled (or voxel-integrated) anisotropic Gaussian,
Poisson noise. Fisher information over (z, y, x, A, b), inverted, position variances averaged over sub-voxel offsets
(a regular grid of offsets in [-0.5, 0.5)^3). The 3D bound is sqrt(var_z + var_y + var_x): the floor of an unbiased
estimator's 3D RMSE (voxel units, z in slices).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from training.simulate import amplitude_from_snr


def _profile(d: np.ndarray, sigma: float, integrate: bool) -> tuple[np.ndarray, np.ndarray]:
    """1D profile g(d) (peak 1 at d=0) and its derivative with respect to the spot centre."""
    if integrate:
        s = np.sqrt(2.0) * sigma
        norm = erf(0.5 / s)
        g = 0.5 * (erf((d + 0.5) / s) - erf((d - 0.5) / s)) / norm
        pdf_hi = np.exp(-0.5 * ((d + 0.5) / sigma) ** 2)
        pdf_lo = np.exp(-0.5 * ((d - 0.5) / sigma) ** 2)
        dg = -(pdf_hi - pdf_lo) / (np.sqrt(2 * np.pi) * sigma * norm)  # d/dcentre = -d/dd
        return g, dg
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return g, g * d / sigma**2


def fisher_sd(
    amplitude: float,
    background: float,
    sigma_zyx: tuple[float, float, float],
    offset_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0),
    integrate: bool = False,
) -> np.ndarray:
    """CRLB standard deviations (z, y, x) for one spot at a given sub-voxel offset; A and b unknown."""
    axes = []
    for sig, off in zip(sigma_zyx, offset_zyx):
        r = int(np.ceil(6 * sig)) + 1
        d = np.arange(-r, r + 1) - off
        axes.append(_profile(d, sig, integrate))
    (gz, dz), (gy, dy), (gx, dx) = axes
    g = gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    jac = np.stack(
        [
            amplitude * dz[:, None, None] * gy[None, :, None] * gx[None, None, :],
            amplitude * gz[:, None, None] * dy[None, :, None] * gx[None, None, :],
            amplitude * gz[:, None, None] * gy[None, :, None] * dx[None, None, :],
            g,
            np.ones_like(g),
        ]
    ).reshape(5, -1)
    mu = (amplitude * g + background).ravel()
    fim = (jac / mu) @ jac.T
    cov = np.linalg.inv(fim)
    return np.sqrt(np.diag(cov)[:3])


def crlb_3d(
    snr: float,
    background: float = 10.0,
    sigma_xy: float = 1.5,
    sigma_z: float = 1.0,
    integrate: bool = False,
    n_offsets: int = 4,
) -> dict:
    """CRLB for a PTC spot of the given SNR (PTC definition), averaged over n_offsets^3 sub-voxel offsets.

    Returns dict(amplitude, photons (of the point-sampled Gaussian), sd_xy, sd_z, rmse_3d) in voxel units
    (sd = sqrt of the mean variance over offsets). With ``integrate=True`` the peak (not the photon count) is kept.
    """
    amp = amplitude_from_snr(snr, background)
    grid = (np.arange(n_offsets) + 0.5) / n_offsets - 0.5
    var = np.zeros(3)
    for oz in grid:
        for oy in grid:
            for ox in grid:
                var += fisher_sd(amp, background, (sigma_z, sigma_xy, sigma_xy), (oz, oy, ox), integrate) ** 2
    var /= n_offsets**3
    return {
        "amplitude": amp,
        "photons": amp * (2 * np.pi) ** 1.5 * sigma_xy**2 * sigma_z,
        "sd_xy": float(np.sqrt((var[1] + var[2]) / 2)),
        "sd_z": float(np.sqrt(var[0])),
        "rmse_3d": float(np.sqrt(var.sum())),
    }
