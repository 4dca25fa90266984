"""Test-data generators for benchmarks/generalisation.py, written independently of training/simulate.py.

Nothing here imports or copies dmdet's training simulator: every generator below is its own model of a
microscope, so the benchmark measures how dmdet does on data its training never saw. Each stack is a function of
(condition, split, index, seed) alone (``numpy.random.SeedSequence([seed, crc32(condition), split, index])``),
so validation and test stacks never share noise and any one stack can be regenerated on its own.

Conventions: volumes are ZYX; ground truth is float64 (N, 3) zyx in voxel units, 0-based, voxel centres at
integer coordinates (a spot at (z, y, x) = (2, 10, 10) peaks on voxel [2, 10, 10]); every position lies inside the
stack, i.e. within [-0.5, n - 0.5] on each axis.

Generators:

- ``ptc_indep``: the Particle Tracking Challenge virus scenario, from its published definition only: sparse
  point-like particles, Gaussian PSF whose width varies from particle to particle (sigma_xy 1.3-1.7 px, sigma_z
  0.9-1.2 slices, point-sampled at voxel centres), background 10 photons, peak SNR = (I_peak - I_bg) /
  sqrt(I_peak), an uneven illumination field (smooth random field, +-30 % across the field, multiplying
  background and particles), Poisson shot noise, camera offset 100 and Gaussian read noise (sd 1-2), uint16.
- ``simfish``: the third-party PyPI simulator sim-fish (``simfish.simulate_image``; spots rendered on a finer grid
  and averaged down, Poisson noise). Its ground truth is shifted by ``-(f - 1) / (2 f)`` per axis (f = the
  sub-pixel factor) because sim-fish reports a fine-grid index divided by f, while the centre of a coarse voxel
  i lies on fine index ``i f + (f - 1) / 2``; tests/test_generalisation.py checks the convention on a rendered spot.
- ``tissue``: smFISH in tissue: spots (sigma_xy 1.9 px, sigma_z 1.7 slices) only inside a few cells (smooth
  ellipsoids of raised autofluorescence), log-normal textured autofluorescence (smoothed noise at three scales),
  a few bright large lipofuscin blobs (sigma_xy 4-8 px, 100-250 photons), out-of-focus haze (the clean signal
  blurred by (4, 16, 16) voxels), Poisson noise, offset 100, read noise sd 1.5, uint16.
- ``yeast8bit``: yeast mitochondrial nucleoids: small cells (about 4 um across at 0.067 um pixels and 0.35 um
  z steps), 8-20 nucleoids per cell near the cell cortex, sigma_xy 2-3 px, sigma_z about 1 slice, gain 3 ADU per
  photon, read noise, then offset and the outside-cell background level subtracted, clipped to 0..255 and
  stored as uint8 (so the background is mostly clipped to 0).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

SPLITS = {"validation": 0, "test": 1}


@dataclass(frozen=True)
class Condition:
    """One benchmark condition: a generator with fixed parameters and the spot size a user would know."""

    generator: str
    name: str
    params: dict
    sigma_zyx: tuple[float, float, float]  # nominal spot sigma in voxels (bigfish_auto's spot_radius, peer grids)
    description: str
    quick: dict = field(default_factory=dict)  # parameter overrides for --quick (tiny stacks)


# ------------------------------------------------------------------------------------------------ helpers


def stack_rng(seed: int, condition: str, split: str, index: int) -> np.random.Generator:
    """The random generator of one stack: independent across seeds, conditions, splits and indices."""
    key = zlib.crc32(condition.encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), key, SPLITS[split], int(index)]))


def add_gaussians(vol: np.ndarray, zyx: np.ndarray, amp: np.ndarray, sigma_zyx: np.ndarray,
                  radius: float = 4.0) -> None:
    """Add point-sampled 3D Gaussians ``amp * exp(-d^2 / 2 sigma^2)`` (per-axis sigma) to ``vol`` in place."""
    zyx, amp = np.asarray(zyx, float).reshape(-1, 3), np.asarray(amp, float).ravel()
    sig = np.broadcast_to(np.asarray(sigma_zyx, float), zyx.shape)
    for c, a, s in zip(zyx, amp, sig):
        profiles, slices = [], []
        for axis in range(3):
            lo = max(int(np.floor(c[axis] - radius * s[axis])), 0)
            hi = min(int(np.ceil(c[axis] + radius * s[axis])) + 1, vol.shape[axis])
            if hi <= lo:
                break
            t = np.arange(lo, hi) - c[axis]
            profiles.append(np.exp(-0.5 * (t / s[axis]) ** 2))
            slices.append(slice(lo, hi))
        else:
            vol[tuple(slices)] += a * profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None]


def sample_points(rng: np.random.Generator, n: int, propose: Callable[[np.random.Generator, int], np.ndarray],
                  min_dist: float, metric_zyx=(1.0, 1.0, 1.0), max_tries: int = 50) -> np.ndarray:
    """Up to ``n`` points from ``propose(rng, k) -> (k, 3)`` at least ``min_dist`` apart (distance after scaling
    each axis by ``metric_zyx``), by rejection."""
    metric = np.asarray(metric_zyx, float)
    kept: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(kept) >= n:
            break
        for p in propose(rng, 4 * (n - len(kept)) + 4):
            if kept and np.min(np.sum(((np.asarray(kept) - p) * metric) ** 2, axis=1)) < min_dist**2:
                continue
            kept.append(p)
            if len(kept) >= n:
                break
    return np.asarray(kept, float).reshape(-1, 3)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Smoothed white noise scaled to zero mean and unit standard deviation (float32)."""
    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    f -= f.mean()
    return f / max(float(f.std()), 1e-12)


def camera(rng: np.random.Generator, photons: np.ndarray, offset: float, read_sd: float, gain: float = 1.0):
    """Poisson shot noise on ``photons`` (expected photons per voxel), ``gain`` ADU per photon, offset and Gaussian
    read noise; float64 ADU (not yet rounded or clipped)."""
    counts = rng.poisson(np.clip(photons, 0, None)).astype(np.float64)
    return gain * counts + offset + rng.normal(0.0, read_sd, photons.shape)


def to_uint16(adu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def ellipsoid_radius(shape, centre, axes, theta: float) -> np.ndarray:
    """Normalised ellipsoid radius at every voxel (1 on the surface); the ellipsoid is rotated by ``theta`` in yx."""
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    dz = (z - centre[0])[:, None, None] / axes[0]
    dy, dx = (y - centre[1])[None, :, None], (x - centre[2])[None, None, :]
    u = (np.cos(theta) * dy + np.sin(theta) * dx) / axes[1]
    v = (-np.sin(theta) * dy + np.cos(theta) * dx) / axes[2]
    return np.sqrt(dz**2 + u**2 + v**2)


def in_ellipsoid_sampler(shape, centre, axes, theta: float, r_lo: float, r_hi: float):
    """Proposals uniform in the shell r_lo <= r < r_hi of a (yx-rotated) ellipsoid, clipped to the stack."""
    centre, axes = np.asarray(centre, float), np.asarray(axes, float)
    hi = np.asarray(shape, float) - 1.0

    def propose(rng: np.random.Generator, k: int) -> np.ndarray:
        d = rng.standard_normal((k, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r = (r_lo**3 + rng.random(k) * (r_hi**3 - r_lo**3)) ** (1 / 3)  # uniform in volume
        d *= r[:, None]
        u, v = d[:, 1] * axes[1], d[:, 2] * axes[2]
        dy = np.cos(theta) * u - np.sin(theta) * v
        dx = np.sin(theta) * u + np.cos(theta) * v
        p = np.stack([centre[0] + d[:, 0] * axes[0], centre[1] + dy, centre[2] + dx], axis=1)
        return p[np.all((p >= 0) & (p <= hi), axis=1)]

    return propose


# ------------------------------------------------------------------------------------------------ generators


def ptc_indep(rng: np.random.Generator, snr: float, shape=(10, 256, 256), n: int = 25, background: float = 10.0,
              sigma_xy=(1.3, 1.7), sigma_z=(0.9, 1.2), illumination: float = 0.3, offset: float = 100.0,
              read_sd=(1.0, 2.0), min_dist: float = 3.0):
    """PTC-virus-like stack: uint16 volume and (N, 3) zyx truth."""
    shape = tuple(int(s) for s in shape)
    hi = np.asarray(shape, float) - 1.0
    zyx = sample_points(rng, n, lambda r, k: r.random((k, 3)) * hi, min_dist)
    m = len(zyx)
    sqrt_peak = (snr + np.sqrt(snr**2 + 4 * background)) / 2
    amp = np.full(m, sqrt_peak**2 - background)
    sig = np.stack([rng.uniform(*sigma_z, m), rng.uniform(*sigma_xy, m), rng.uniform(*sigma_xy, m)], axis=1)
    photons = np.full(shape, background, np.float64)
    add_gaussians(photons, zyx, amp, sig)
    f = smooth_field(rng, shape[1:], max(shape[1:]) / 4)
    f /= max(float(np.abs(f).max()), 1e-12)  # -1..1: illumination 1 +- `illumination` across the field
    photons *= (1.0 + illumination * f)[None]
    return to_uint16(camera(rng, photons, offset, rng.uniform(*read_sd))), zyx


def simfish_stack(rng: np.random.Generator, shape=(10, 256, 256), n_spots: int = 40, voxel_nm=(300, 100, 100),
                  sigma_nm=(300, 150, 150), amplitude: float = 45.0, noise_level: float = 100.0,
                  factors=(2, 3, 3)):
    """sim-fish 3D spots (``simfish.simulate_image``, uint16) and its ground truth in this module's convention.

    sim-fish draws from numpy's global random state: it is seeded from ``rng`` and restored afterwards."""
    import simfish

    n = int(rng.poisson(n_spots))  # sim-fish's own random_n_spots fails under numpy 2 (poisson(size=1) -> int())
    state = np.random.get_state()
    np.random.seed(int(rng.integers(2**32 - 1)))
    try:
        image, truth = simfish.simulate_image(
            ndim=3, n_spots=max(n, 1), random_n_spots=False, image_shape=tuple(int(s) for s in shape),
            image_dtype=np.uint16, subpixel_factors=tuple(int(f) for f in factors),
            voxel_size=tuple(float(v) for v in voxel_nm), sigma=tuple(float(s) for s in sigma_nm), random_sigma=0.1,
            amplitude=float(amplitude), random_amplitude=0.2, noise_level=float(noise_level), random_noise=0.05)
    finally:
        np.random.set_state(state)
    f = np.asarray(factors, float)
    zyx = np.asarray(truth, float).reshape(-1, 6)[:, :3] - (f - 1) / (2 * f)
    return image, zyx


def tissue(rng: np.random.Generator, spot_amp: float = 25.0, shape=(20, 256, 256), n_cells: int = 4,
           spots_per_cell: float = 25.0, sigma_zyx=(1.7, 1.9, 1.9), background: float = 15.0,
           cell_af: float = 12.0, n_blobs=(3, 6), blob_amp=(100.0, 250.0), haze: float = 0.5,
           offset: float = 100.0, read_sd: float = 1.5, cell_axes_yx=(35.0, 60.0), cell_axes_z=(5.0, 8.0)):
    """smFISH-in-tissue-like stack: uint16 volume and (N, 3) zyx truth (spots inside cells only)."""
    shape = tuple(int(s) for s in shape)
    Z, Y, X = shape
    # textured autofluorescence: log-normal field from smoothed noise at three scales
    tex = (0.35 * smooth_field(rng, shape, (0.7, 2.0, 2.0)) + 0.5 * smooth_field(rng, shape, (2.0, 6.0, 6.0))
           + 0.6 * smooth_field(rng, shape, (5.0, 18.0, 18.0)))
    tex = np.exp(0.3 * tex)
    tex /= tex.mean()
    cells = np.zeros(shape, np.float32)
    truth, blobs = [], []
    for _ in range(n_cells):
        a_yx = rng.uniform(*cell_axes_yx, 2) * min(1.0, Y / 256, X / 256) ** 0.5
        axes = (rng.uniform(*cell_axes_z) * min(1.0, Z / 20), a_yx[0], a_yx[1])
        centre = (rng.uniform(0.3, 0.7) * (Z - 1), rng.uniform(0.15, 0.85) * (Y - 1), rng.uniform(0.15, 0.85) * (X - 1))
        theta = rng.uniform(0, np.pi)
        r = ellipsoid_radius(shape, centre, axes, theta)
        cells = np.maximum(cells, 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / 0.05, -50, 50))))
        propose = in_ellipsoid_sampler(shape, centre, axes, theta, 0.0, 0.92)
        truth.append(propose(rng, rng.poisson(spots_per_cell)))
        blobs.append(propose(rng, 2))
    # spots: at least 3 voxels apart (sigma-scaled), amplitude log-normal around spot_amp
    pool = np.concatenate(truth) if truth else np.zeros((0, 3))
    zyx = sample_points(rng, len(pool), lambda r, k: pool[r.permutation(len(pool))[:k]], 3.0)
    zyx = np.unique(zyx, axis=0)
    m = len(zyx)
    signal = np.zeros(shape, np.float64)
    sig = np.asarray(sigma_zyx, float) * rng.uniform(0.93, 1.07, (m, 1))
    add_gaussians(signal, zyx, spot_amp * np.exp(rng.normal(-0.045, 0.3, m)), sig)
    # lipofuscin: a few bright large blobs, mostly in cells
    nb = int(rng.integers(n_blobs[0], n_blobs[1] + 1))
    cand = np.concatenate(blobs + [rng.random((nb, 3)) * (np.asarray(shape) - 1)])
    where = cand[rng.permutation(len(cand))[:nb]]
    bsig = np.stack([rng.uniform(2.0, 3.5, nb), rng.uniform(4.0, 8.0, nb), rng.uniform(4.0, 8.0, nb)], axis=1)
    add_gaussians(signal, where, rng.uniform(*blob_amp, nb), bsig)
    clean = (background + cell_af * cells) * tex + signal
    photons = clean + haze * gaussian_filter(clean, (4.0, 16.0, 16.0), mode="nearest")
    return to_uint16(camera(rng, photons, offset, read_sd)), zyx


def yeast8bit(rng: np.random.Generator, spot_photons: float = 25.0, shape=(16, 192, 192), n_cells: int = 5,
              nucleoids=(8, 20), sigma_xy=(2.0, 3.0), sigma_z=(0.85, 1.15), pixel_um: float = 0.067,
              z_um: float = 0.35, cell_um=(3.5, 4.5), background: float = 2.0, cytoplasm: float = 6.0,
              gain: float = 3.0, offset: float = 100.0, read_sd: float = 3.0):
    """Yeast-nucleoid-like 8-bit stack: uint8 volume (offset and background level subtracted, clipped to 0..255)
    and (N, 3) zyx truth."""
    shape = tuple(int(s) for s in shape)
    Z, Y, X = shape
    zscale = z_um / pixel_um  # one slice in pixel units
    cells = np.zeros(shape, np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    truth = []
    for _ in range(n_cells):
        d_um = rng.uniform(*cell_um)
        a = 0.5 * d_um / pixel_um * rng.uniform(0.9, 1.1, 2)  # yx semi-axes, px
        az = min(0.5 * d_um * 0.9 / z_um, 0.45 * (Z - 1))
        for _try in range(30):  # cells may touch but not overlap much
            c = np.array([rng.uniform(0.45, 0.55) * (Z - 1), rng.uniform(a.max(), Y - 1 - a.max()) if Y > 2 * a.max()
                          else (Y - 1) / 2, rng.uniform(a.max(), X - 1 - a.max()) if X > 2 * a.max() else (X - 1) / 2])
            if all(np.hypot(*(c[1:] - pc[1:])) > 0.9 * (a.max() + pr) for pc, pr in placed):
                break
        else:
            continue
        placed.append((c, float(a.max())))
        theta = rng.uniform(0, np.pi)
        r = ellipsoid_radius(shape, c, (az, a[0], a[1]), theta)
        cells = np.maximum(cells, 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / 0.06, -50, 50))))
        propose = in_ellipsoid_sampler(shape, c, (az, a[0], a[1]), theta, 0.6, 0.9)
        k = int(rng.integers(nucleoids[0], nucleoids[1] + 1))
        truth.append(sample_points(rng, k, propose, 7.0, (zscale, 1.0, 1.0)))
    zyx = np.concatenate(truth) if truth else np.zeros((0, 3))
    if len(zyx):  # nucleoids of neighbouring cells must be apart too
        zyx = sample_points(rng, len(zyx), lambda r, k: zyx[r.permutation(len(zyx))[:k]], 7.0, (zscale, 1.0, 1.0))
    m = len(zyx)
    tex = np.exp(0.25 * smooth_field(rng, shape, (1.0, 5.0, 5.0)))
    photons = background + cytoplasm * cells * tex / tex.mean()
    sig = np.stack([rng.uniform(*sigma_z, m), rng.uniform(*sigma_xy, m), rng.uniform(*sigma_xy, m)], axis=1)
    add_gaussians(photons, zyx, spot_photons * np.exp(rng.normal(-0.1, 0.45, m)), sig)
    adu = camera(rng, photons, offset, read_sd, gain) - (offset + gain * background)
    return np.clip(np.rint(adu), 0, 255).astype(np.uint8), zyx


GENERATORS: dict[str, Callable] = {"ptc_indep": ptc_indep, "simfish": simfish_stack, "tissue": tissue,
                                   "yeast8bit": yeast8bit}


def _ptc(snr: float) -> Condition:
    return Condition("ptc_indep", f"ptc_snr{snr:g}", {"snr": snr}, (1.05, 1.5, 1.5),
                     f"PTC virus scenario (own simulator), SNR {snr:g}, 10x256x256, ~25 particles, uneven illumination",
                     {"shape": (8, 64, 64), "n": 6})


CONDITIONS: dict[str, Condition] = {c.name: c for c in [
    *(_ptc(s) for s in (1.0, 2.0, 4.0, 7.0)),
    Condition("simfish", "simfish_a", {"voxel_nm": (300, 100, 100), "sigma_nm": (300, 150, 150), "amplitude": 45.0},
              (1.0, 1.5, 1.5), "sim-fish, voxel 300x100x100 nm, sigma 300/150 nm (1.0/1.5 voxels), amplitude 45 "
              "over background 100 (peak SNR ~3.7), ~40 spots in 10x256x256", {"shape": (8, 64, 64), "n_spots": 6}),
    Condition("simfish", "simfish_b", {"voxel_nm": (200, 80, 80), "sigma_nm": (300, 150, 150), "amplitude": 25.0},
              (1.5, 1.875, 1.875), "sim-fish, voxel 200x80x80 nm, sigma 300/150 nm (1.5/1.9 voxels), amplitude 25 "
              "over background 100 (peak SNR ~2.2), ~40 spots in 10x256x256", {"shape": (8, 64, 64), "n_spots": 6}),
    Condition("tissue", "tissue_moderate", {"spot_amp": 25.0}, (1.7, 1.9, 1.9),
              "smFISH in tissue (own simulator), spot amplitude 25 photons over ~27 in cells, 20x256x256, ~100 spots "
              "in 4 cells, lipofuscin, haze", {"shape": (12, 64, 64), "n_cells": 1, "spots_per_cell": 8}),
    Condition("tissue", "tissue_faint", {"spot_amp": 12.0}, (1.7, 1.9, 1.9),
              "smFISH in tissue (own simulator), spot amplitude 12 photons over ~27 in cells, 20x256x256, ~100 spots "
              "in 4 cells, lipofuscin, haze", {"shape": (12, 64, 64), "n_cells": 1, "spots_per_cell": 8}),
    Condition("yeast8bit", "yeast8bit", {}, (1.0, 2.5, 2.5),
              "yeast nucleoids, 8-bit, 0.067 um pixels, 0.35 um z steps, 16x192x192, 5 cells x 8-20 nucleoids, "
              "background clipped to 0", {"shape": (12, 72, 72), "n_cells": 1}),
]}


def make_stack(condition: Condition | str, split: str, index: int, seed: int = 2024,
               quick: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(volume, truth zyx float64 (N, 3)) of stack ``index`` of a condition's ``split`` ("validation" or "test")."""
    cond = CONDITIONS[condition] if isinstance(condition, str) else condition
    params = {**cond.params, **(cond.quick if quick else {})}
    vol, zyx = GENERATORS[cond.generator](stack_rng(seed, cond.name, split, index), **params)
    return vol, np.asarray(zyx, np.float64).reshape(-1, 3)
