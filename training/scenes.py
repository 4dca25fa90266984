"""Training stacks that look like microscopy: structured backgrounds, camera effects and hard negatives.

The default model's training data since 2026-11-30 (``data.generator: "mix"``, with :mod:`training.simulate`'s
challenge scenario one condition in four). Each stack draws, independently:

- **Spots**: anisotropic Gaussians, σxy in [0.9, 2.6] and σz in [0.6, 2.2] voxels for the stack, each spot's
  widths spread by a lognormal factor (sd 0.1), brightness spread lognormal (sd in [0, 0.5]), point-sampled or
  voxel-integrated PSF; centres uniform in [-0.5, n - 0.5] per axis, so spots are cut by the stack's faces;
  SNR log-uniform in [0.8, 12], or in [12, 300] for a chosen share of stacks (``bright``); count log-uniform up to
  crowded (about 3000 per 10×512×512; none in one stack in ten); with cells, most spots
  lie inside cells. Amplitudes follow the challenge's SNR definition at the stack's base background.
- **Background**: base level log-uniform in [2, 200] photons, times a linear gradient (up to ±40 % in YX, ±20 % in
  z); cells (ellipsoids with soft edges, raised autofluorescence); tissue-like texture (a smoothed random field
  at a random scale of 1.5-12 voxels); out-of-focus haze (a very smooth field).
- **Hard negatives**, which the target leaves at 0: blobs larger than a spot (σ at least 2.2× the spot's, from
  dim to several times a spot's peak) and single hot voxels.
- **Camera**: Poisson noise, gain (ADU per photon), offset, Gaussian read noise, rounding to integers, and in some
  stacks 12-bit saturation or 8-bit data scaled so that bright parts saturate and the background may be clipped
  at 0 (offset below zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from training.simulate import amplitude_from_snr, render_spots


@dataclass
class SceneParams:
    """One microscopy-like stack (voxel units; intensities in photons unless stated)."""

    shape: tuple[int, int, int] = (10, 128, 128)
    n_particles: int = 30
    snr: float = 4.0
    background: float = 10.0
    sigma_xy: float = 1.5
    sigma_z: float = 1.0
    sigma_spread: float = 0.1
    integrate_psf: bool = False
    brightness_sd: float = 0.2
    gradient_yx: float = 0.0
    gradient_z: float = 0.0
    gradient_angle: float = 0.0
    n_cells: int = 0
    cell_level: float = 0.0  # cell autofluorescence relative to the background
    in_cells: float = 0.8  # fraction of spots placed inside cells (when there are cells)
    texture: float = 0.0  # relative amplitude of the texture field
    texture_scale: float = 4.0
    haze: float = 0.0
    n_blobs: int = 0
    blob_brightness: float = 1.0  # blob peak relative to a spot's amplitude
    hot_pixels: int = 0
    gain: float = 1.0
    offset: float = 0.0
    read_noise: float = 0.0
    quantise: bool = True
    bits: int = 0  # 0: float/16-bit without saturation; 8 or 12: clipped to [0, 2**bits - 1]
    bit_scale: float = 1.0  # 8-bit: the 99.9th percentile maps to bit_scale * 255


SIGMA_Z_RANGE = (0.6, 2.2)
SIGMA_XY_RANGE = (0.9, 2.6)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


BRIGHT_SNR_RANGE = (12.0, 300.0)


def sample_scene(rng: np.random.Generator, shape: tuple[int, int, int] = (10, 128, 128),
                 snr: float | None = None, bright: float = 0.0, texture_min: float = 0.0) -> SceneParams:
    """Random scene parameters (ranges in the module docstring); a fraction ``bright`` of the scenes (when no
    ``snr`` is given) has very bright spots, SNR log-uniform in :data:`BRIGHT_SNR_RANGE`. ``texture_min`` > 0
    raises the texture's scale to at least that multiple of the stack's spot σxy, so that no texture bump the
    truth calls background is shaped like a spot (the same draws: a pool differs only in those scales)."""
    if snr is None and bright and rng.uniform() < bright:  # no extra draw when bright == 0: older pools unchanged
        snr = _log_uniform(rng, *BRIGHT_SNR_RANGE)
    voxels = float(np.prod(shape))
    per_ptc = voxels / (10 * 512 * 512)
    n = 0 if rng.uniform() < 0.1 else int(round(_log_uniform(rng, 30.0, 3000.0) * per_ptc))
    p = SceneParams(
        shape=tuple(int(s) for s in shape),
        n_particles=n,
        snr=float(snr if snr is not None else _log_uniform(rng, 0.8, 12.0)),
        background=_log_uniform(rng, 2.0, 200.0),
        sigma_xy=float(rng.uniform(*SIGMA_XY_RANGE)),
        sigma_z=float(rng.uniform(*SIGMA_Z_RANGE)),
        integrate_psf=bool(rng.uniform() < 0.5),
        brightness_sd=float(rng.uniform(0.0, 0.5)),
        gradient_yx=float(rng.uniform(0.0, 0.4)) if rng.uniform() < 0.7 else 0.0,
        gradient_z=float(rng.uniform(-0.2, 0.2)) if rng.uniform() < 0.3 else 0.0,
        gradient_angle=float(rng.uniform(0.0, 2 * np.pi)),
    )
    if rng.uniform() < 0.5:
        p.n_cells = int(rng.integers(1, 6))
        p.cell_level = float(rng.uniform(0.2, 2.0))
    if rng.uniform() < 0.5:
        p.texture = float(rng.uniform(0.1, 0.8))
        p.texture_scale = max(_log_uniform(rng, 1.5, 12.0), texture_min * p.sigma_xy)
    if rng.uniform() < 0.4:
        p.haze = float(rng.uniform(0.1, 1.0))
    if rng.uniform() < 0.5:
        p.n_blobs = int(rng.integers(1, 8))
        p.blob_brightness = _log_uniform(rng, 0.2, 5.0)
    if rng.uniform() < 0.3:
        p.hot_pixels = int(rng.integers(1, 20))
    if rng.uniform() < 0.6:
        p.gain = _log_uniform(rng, 0.3, 5.0)
        p.offset = float(rng.uniform(0.0, 500.0))
        p.read_noise = float(rng.uniform(0.0, 3.0))
    p.quantise = bool(rng.uniform() < 0.7)
    u = rng.uniform()
    if u < 0.15:
        p.bits, p.bit_scale = 8, float(rng.uniform(0.5, 1.5))
        p.offset = float(rng.uniform(-0.5, 0.5)) * p.background * p.gain  # may clip the background at 0
    elif u < 0.3:
        p.bits = 12
    return p


def _field(rng: np.random.Generator, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """Smooth random field with zero mean and unit sd at spatial ``scale`` (σ, voxels; z at half of it)."""
    f = gaussian_filter(rng.standard_normal(shape), (max(scale / 2, 0.5), scale, scale), mode="wrap")
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _cells(rng: np.random.Generator, p: SceneParams) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Cell mask in [0, 1] (soft edges) and each cell's (centre, radii)."""
    z, y, x = p.shape
    mask = np.zeros(p.shape)
    cells = []
    gz, gy, gx = np.ogrid[:z, :y, :x]
    for _ in range(p.n_cells):
        centre = rng.uniform(0, 1, 3) * (np.array(p.shape) - 1)
        radii = np.array([rng.uniform(0.3, 1.0) * max(z, 4), rng.uniform(12, 50), rng.uniform(12, 50)])
        d = ((gz - centre[0]) / radii[0]) ** 2 + ((gy - centre[1]) / radii[1]) ** 2 + ((gx - centre[2]) / radii[2]) ** 2
        mask = np.maximum(mask, (d <= 1.0).astype(np.float64))
        cells.append((centre, radii))
    return gaussian_filter(mask, (0.5, 2.0, 2.0)), cells


def _positions(rng: np.random.Generator, p: SceneParams, cells: list) -> np.ndarray:
    """Spot centres in [-0.5, n - 0.5] per axis; with cells, a fraction ``in_cells`` inside them."""
    hi = np.array(p.shape, np.float64) - 0.5
    pos = rng.uniform(0.0, 1.0, (p.n_particles, 3)) * (hi + 0.5) - 0.5
    if cells:
        inside = rng.uniform(size=p.n_particles) < p.in_cells
        for i in np.flatnonzero(inside):
            centre, radii = cells[int(rng.integers(len(cells)))]
            v = rng.standard_normal(3)
            v *= rng.uniform() ** (1 / 3) / np.linalg.norm(v)
            pos[i] = np.clip(centre + v * radii, -0.5, hi)
    return pos


def simulate_scene(p: SceneParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One stack: (volume float32 ZYX in camera units, spot positions float64 (N, 3) zyx)."""
    z, y, x = p.shape
    yy = np.linspace(-1.0, 1.0, y)[:, None]
    xx = np.linspace(-1.0, 1.0, x)[None, :]
    zz = np.linspace(-1.0, 1.0, z)[:, None, None]
    illum = 1.0 + p.gradient_yx * (np.cos(p.gradient_angle) * xx + np.sin(p.gradient_angle) * yy)[None]
    illum = np.clip(illum * (1.0 + p.gradient_z * zz), 0.2, None)
    bg = np.full(p.shape, p.background)
    mask, cells = _cells(rng, p) if p.n_cells else (None, [])
    if mask is not None:
        bg = bg * (1.0 + p.cell_level * mask)
    if p.texture:
        bg = bg * np.exp(p.texture * _field(rng, p.shape, p.texture_scale) - 0.5 * p.texture**2)
    if p.haze:
        bg = bg + p.haze * p.background * np.clip(1.0 + 0.5 * _field(rng, p.shape, 25.0), 0.0, None)
    amp0 = amplitude_from_snr(p.snr, p.background)
    if p.n_blobs:
        centres = rng.uniform(0, 1, (p.n_blobs, 3)) * (np.array(p.shape) - 1)
        for c in centres:
            s_xy = max(3.0, p.sigma_xy * rng.uniform(2.2, 8.0))
            s_z = max(p.sigma_z * rng.uniform(1.5, 4.0), 1.0)
            a = p.blob_brightness * amp0 * rng.uniform(0.5, 1.5)
            bg += render_spots(p.shape, c[None], (s_z, s_xy, s_xy), a, truncate=3.0)
    pos = _positions(rng, p, cells)
    n = len(pos)
    spots = np.zeros(p.shape)
    if n:
        amp = amp0 * rng.lognormal(0.0, p.brightness_sd, n) if p.brightness_sd else np.full(n, amp0)
        widths = rng.lognormal(0.0, p.sigma_spread, (n, 2)) * [p.sigma_z, p.sigma_xy]
        # render in a few width groups (render_spots takes one sigma per call)
        groups = np.clip(np.round(np.log(widths / [p.sigma_z, p.sigma_xy]) / 0.1).astype(int), -2, 2)
        key = groups[:, 0] * 5 + groups[:, 1]
        for k in np.unique(key):
            sel = key == k
            sz, sxy = widths[sel].mean(axis=0)
            spots += render_spots(p.shape, pos[sel], (sz, sxy, sxy), amp[sel], integrate=p.integrate_psf)
    expected = (bg + spots) * illum
    photons = rng.poisson(expected).astype(np.float64)
    if p.hot_pixels:
        flat = rng.integers(0, photons.size, p.hot_pixels)
        photons.flat[flat] += rng.uniform(3.0, 30.0, p.hot_pixels) * np.sqrt(p.background) + amp0 * rng.uniform(
            0.0, 2.0, p.hot_pixels)
    vol = photons * p.gain + p.offset
    if p.read_noise:
        vol += rng.normal(0.0, p.read_noise, vol.shape)
    if p.bits == 8:
        top = float(np.percentile(vol, 99.9))
        vol = vol * (p.bit_scale * 255.0 / max(top, 1e-6))
        vol = np.clip(np.round(vol), 0, 255)
    elif p.bits == 12:
        vol = np.clip(np.round(vol), 0, 4095)
    elif p.quantise:
        vol = np.round(vol)
    return vol.astype(np.float32), pos
