"""Simulator of the Particle Tracking Challenge (PTC) "virus" scenario: 3D Gaussian spots + Poisson noise.

PTC virus scenario: 512x512x10 voxels (ZYX ``(10, 512, 512)``), about 100/500/1000 particles
(densities low/mid/high), SNR 1/2/4/7 with the challenge's definition ``SNR = (I_peak - I_bg) / sqrt(I_peak)``,
so ``sqrt(I_peak) = (SNR + sqrt(SNR^2 + 4 I_bg)) / 2`` and the spot amplitude above background is
``A = I_peak - I_bg``. The background (10) and the PSF widths (sigma_xy 1.5, sigma_z 1.0 voxels) are not published
in the challenge paper: they are assumptions, kept as parameters.

Spots are anisotropic Gaussians at uniform random sub-voxel positions (z in [0, Z-1], y, x in [0, size-1]),
point-sampled at voxel centres (peak value A exactly when the centre is on a voxel) or voxel-integrated (erf; scaled
so that a voxel-centred spot still has peak A, hence the same SNR). Each spot is rendered only in a local box
(+-4 sigma), all spots at once (vectorised splatting). Nuisances for out-of-distribution studies: brightness spread
(lognormal factor per particle, median 1), background gradient, autofluorescent blobs, then Poisson noise, camera
gain, offset and Gaussian read noise.

Training ranges of :func:`sample_params` (why):

- SNR log-uniform in [0.8, 10]: covers the four PTC levels with margin on both sides; log-uniform because the
  difficulty changes multiplicatively (and SNR 1 is where models differ most).
- density: one of the three PTC levels (about 100/500/1000 per 512x512x10, jittered by +-10%) or a continuous count
  in [50, 1200] per 512x512x10 (scaled to the requested shape), so the model sees isolated and crowded spots.
- sigma_xy U[1.0, 2.0], sigma_z U[0.7, 1.5] voxels: the PTC PSF widths are unknown (assumed 1.5 / 1.0), so the model
  must not overfit one PSF; the range brackets typical confocal virus-scale spots at PTC sampling.
- background log-uniform in [5, 50]: inputs are normalised (median/MAD) so the absolute level only matters through
  the Poisson statistics; varying it teaches scale invariance. The SNR definition fixes the amplitude for each
  background.
- brightness spread lognormal with sd 0.2 (log units): real particles are not equally bright.
- PSF point-sampled or voxel-integrated with equal probability (the challenge's renderer is unknown).
- ``nuisance=True`` adds mild background gradients, blobs, offset and read noise (off by default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

PTC_SHAPE: tuple[int, int, int] = (10, 512, 512)
PTC_SNRS: tuple[int, ...] = (1, 2, 4, 7)
PTC_DENSITIES: dict[str, int] = {"low": 100, "mid": 500, "high": 1000}
SIGMA_Z_RANGE = (0.7, 1.5)  # the training ranges of sample_params
SIGMA_XY_RANGE = (1.0, 2.0)


@dataclass
class SimParams:
    """Parameters of one simulated volume (voxel units; intensities in photons unless stated)."""

    shape: tuple[int, int, int] = PTC_SHAPE
    n_particles: int = 500
    snr: float = 4.0
    background: float = 10.0
    sigma_xy: float = 1.5
    sigma_z: float = 1.0
    integrate_psf: bool = False  # voxel-integrated (erf) PSF instead of point-sampled
    brightness_sd: float = 0.0  # sd of log(brightness factor) per particle (lognormal, median 1)
    bg_gradient: float = 0.0  # background varies linearly by +-bg_gradient (relative) across the field
    bg_gradient_angle: float = 0.0  # direction of the gradient in the YX plane (radians, 0 = along x)
    n_blobs: int = 0  # autofluorescent blobs (large dim Gaussians)
    blob_amplitude: float = 0.5  # blob peak relative to the background
    blob_sigma_xy: float = 8.0
    blob_sigma_z: float = 2.0
    gain: float = 1.0  # output units per photon
    offset: float = 0.0  # camera offset, added after noise
    read_noise: float = 0.0  # Gaussian read noise sd (output units)
    poisson: bool = True  # False: noiseless expected image (plus read noise if any)


def amplitude_from_snr(snr: float, background: float) -> float:
    """Spot amplitude above background for the PTC definition SNR = (I_peak - I_bg)/sqrt(I_peak)."""
    sqrt_peak = (snr + np.sqrt(snr * snr + 4.0 * background)) / 2.0
    return float(sqrt_peak**2 - background)


def _axis_profiles(
    centres: np.ndarray, size: int, sigma: float, integrate: bool, truncate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle 1D voxel indices (N, w) and Gaussian profile values (N, w), 0 outside the volume."""
    r = int(np.ceil(truncate * sigma))
    if 2 * r + 1 >= size:
        idx = np.broadcast_to(np.arange(size), (len(centres), size))
    else:
        start = np.floor(centres + 0.5).astype(np.int64) - r
        idx = start[:, None] + np.arange(2 * r + 1)
    d = idx - centres[:, None]
    if integrate:
        s = np.sqrt(2.0) * sigma
        g = 0.5 * (erf((d + 0.5) / s) - erf((d - 0.5) / s)) / erf(0.5 / s)
    else:
        g = np.exp(-0.5 * (d / sigma) ** 2)
    inside = (idx >= 0) & (idx < size)
    return np.clip(idx, 0, size - 1), np.where(inside, g, 0.0)


def render_spots(
    shape: tuple[int, int, int],
    positions: np.ndarray,
    sigma_zyx: tuple[float, float, float],
    amplitudes: np.ndarray | float = 1.0,
    combine: str = "sum",
    integrate: bool = False,
    truncate: float = 4.0,
) -> np.ndarray:
    """Render Gaussian spots (peak = amplitude at a voxel-centred spot) in local boxes; float64 ZYX.

    ``combine="sum"`` adds overlapping spots (fluorescence), ``"max"`` takes the voxel-wise maximum (targets).
    """
    if combine not in ("sum", "max"):
        raise ValueError(f"combine must be 'sum' or 'max', not {combine!r}")
    shape = tuple(int(s) for s in shape)
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        return out.reshape(shape)
    amp = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), (len(pos),))
    (iz, gz), (iy, gy), (ix, gx) = (
        _axis_profiles(pos[:, a], shape[a], float(sigma_zyx[a]), integrate, truncate) for a in range(3)
    )
    # Chunk so that the (n, wz, wy, wx) temporaries stay small (a few MB).
    per = iz.shape[1] * iy.shape[1] * ix.shape[1]
    step = max(1, 2_000_000 // per)
    for s in range(0, len(pos), step):
        sl = slice(s, s + step)
        vals = (amp[sl, None, None, None] * gz[sl, :, None, None]) * (gy[sl, None, :, None] * gx[sl, None, None, :])
        flat = (iz[sl, :, None, None] * shape[1] + iy[sl, None, :, None]) * shape[2] + ix[sl, None, None, :]
        if combine == "sum":
            out += np.bincount(flat.ravel(), weights=vals.ravel(), minlength=out.size)
        else:
            np.maximum.at(out, flat.ravel(), vals.ravel())
    return out.reshape(shape)


def _background(params: SimParams, rng: np.random.Generator) -> np.ndarray:
    """Expected background: constant, optional linear gradient (YX) and autofluorescent blobs."""
    z, y, x = params.shape
    bg = np.full(params.shape, params.background, dtype=np.float64)
    if params.bg_gradient:
        yy = (np.arange(y) / max(y - 1, 1)) * 2.0 - 1.0
        xx = (np.arange(x) / max(x - 1, 1)) * 2.0 - 1.0
        u = np.cos(params.bg_gradient_angle) * xx[None, :] + np.sin(params.bg_gradient_angle) * yy[:, None]
        bg *= np.clip(1.0 + params.bg_gradient * u, 0.0, None)[None]
    if params.n_blobs > 0:
        centres = rng.uniform(0.0, 1.0, size=(params.n_blobs, 3)) * (np.array(params.shape) - 1)
        amp = params.blob_amplitude * params.background * rng.uniform(0.5, 1.5, size=params.n_blobs)
        sig = (params.blob_sigma_z, params.blob_sigma_xy, params.blob_sigma_xy)
        bg += render_spots(params.shape, centres, sig, amp, truncate=3.0)
    return bg


def simulate(params: SimParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one volume; returns (volume float32 ZYX, positions float64 (N, 3) zyx)."""
    z, y, x = params.shape
    n = int(params.n_particles)
    pos = rng.uniform(0.0, 1.0, size=(n, 3)) * np.array([z - 1, y - 1, x - 1], dtype=np.float64)
    amp = np.full(n, amplitude_from_snr(params.snr, params.background))
    if params.brightness_sd > 0:
        amp *= rng.lognormal(0.0, params.brightness_sd, size=n)
    sig = (params.sigma_z, params.sigma_xy, params.sigma_xy)
    expected = _background(params, rng) + render_spots(params.shape, pos, sig, amp, integrate=params.integrate_psf)
    photons = rng.poisson(expected).astype(np.float32) if params.poisson else expected.astype(np.float32)
    vol = photons * np.float32(params.gain) + np.float32(params.offset)
    if params.read_noise > 0:
        vol += rng.normal(0.0, params.read_noise, size=vol.shape).astype(np.float32)
    return vol.astype(np.float32, copy=False), pos


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_params(
    rng: np.random.Generator,
    snr: float | None = None,
    density: str | float | tuple[float, float] | None = None,
    shape: tuple[int, int, int] = PTC_SHAPE,
    nuisance: bool = False,
) -> SimParams:
    """Random parameters for training a default model (ranges and reasons in the module docstring).

    ``density``: a PTC level name ("low"/"mid"/"high"), a particle count per 512x512x10 volume, a (low, high) range
    of counts drawn uniformly (e.g. crowded training), or None (random: a jittered PTC level or a continuous count in
    [50, 1200], equally likely). Counts scale with ``shape``.
    """
    if snr is None:
        snr = _log_uniform(rng, 0.8, 10.0)
    if density is None:
        if rng.uniform() < 0.5:
            count = PTC_DENSITIES[str(rng.choice(list(PTC_DENSITIES)))] * rng.uniform(0.9, 1.1)
        else:
            count = rng.uniform(50.0, 1200.0)
    elif isinstance(density, (tuple, list)):
        lo, hi = (float(v) for v in density)
        count = rng.uniform(lo, hi)
    elif isinstance(density, str):
        if density not in PTC_DENSITIES:
            raise ValueError(f"density must be one of {list(PTC_DENSITIES)} or a count, not {density!r}")
        count = PTC_DENSITIES[density]
    else:
        count = float(density)
    scale = float(np.prod(shape)) / float(np.prod(PTC_SHAPE))
    p = SimParams(
        shape=tuple(int(s) for s in shape),
        n_particles=int(round(count * scale)),
        snr=float(snr),
        background=_log_uniform(rng, 5.0, 50.0),
        sigma_xy=float(rng.uniform(*SIGMA_XY_RANGE)),
        sigma_z=float(rng.uniform(*SIGMA_Z_RANGE)),
        integrate_psf=bool(rng.uniform() < 0.5),
        brightness_sd=0.2,
    )
    if nuisance:
        p.bg_gradient = float(rng.uniform(0.0, 0.3))
        p.bg_gradient_angle = float(rng.uniform(0.0, 2 * np.pi))
        p.n_blobs = int(rng.integers(0, 6))
        p.blob_amplitude = float(rng.uniform(0.1, 0.5))
        p.offset = float(rng.uniform(0.0, 100.0))
        p.read_noise = float(rng.uniform(0.0, 1.0))
    return p


def benchmark_item(
    seed: int,
    index: int,
    n_per_cell: int,
    snrs: tuple[float, ...] = PTC_SNRS,
    densities: dict[str, int] | None = None,
    entropy: tuple[int, ...] | None = None,
    **overrides: object,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Item ``index`` of a benchmark set; depends only on (seed, index, cell layout, overrides).

    Cells are ordered SNR-major then density; index = (snr_i * n_densities + density_i) * n_per_cell + k.
    Density counts are per 512x512x10 and scale with the volume of ``shape``.
    The rng is ``default_rng(SeedSequence(entropy))`` with ``entropy`` ``(seed, index)`` unless given, so
    different seeds give disjoint splits.
    """
    densities = dict(PTC_DENSITIES if densities is None else densities)
    names = list(densities)
    cell, k = divmod(int(index), int(n_per_cell))
    si, di = divmod(cell, len(names))
    if si >= len(snrs):
        raise IndexError(f"index {index} out of range for {len(snrs) * len(names) * n_per_cell} items")
    params = dataclasses.replace(SimParams(snr=float(snrs[si])), **overrides)  # type: ignore[arg-type]
    scale = float(np.prod(params.shape)) / float(np.prod(PTC_SHAPE))
    params.n_particles = int(round(densities[names[di]] * scale))
    words = (seed, index) if entropy is None else entropy
    rng = np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))
    vol, pos = simulate(params, rng)
    meta = {
        "seed": int(seed),
        "index": int(index),
        "snr": params.snr,
        "density": names[di],
        "replicate": k,
        "params": dataclasses.asdict(params),
    }
    return vol, pos, meta


def iter_benchmark_set(
    n_per_cell: int,
    seed: int,
    snrs: tuple[float, ...] = PTC_SNRS,
    densities: dict[str, int] | None = None,
    **overrides: object,
) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Lazily yield every item of :func:`make_benchmark_set` (memory: one volume at a time)."""
    n_cells = len(snrs) * len(PTC_DENSITIES if densities is None else densities)
    for index in range(n_cells * int(n_per_cell)):
        yield benchmark_item(seed, index, n_per_cell, snrs, densities, **overrides)


def make_benchmark_set(
    n_per_cell: int,
    seed: int,
    snrs: tuple[float, ...] = PTC_SNRS,
    densities: dict[str, int] | None = None,
    **overrides: object,
) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Deterministic PTC-like evaluation set: n_per_cell volumes per (SNR, density) cell, as (vol, pos, meta).

    ``overrides`` replace :class:`SimParams` fields (e.g. ``shape=(10, 128, 128)``, ``integrate_psf=True``).
    """
    return list(iter_benchmark_set(n_per_cell, seed, snrs, densities, **overrides))
