"""Split spots that are two particles merged into one peak of the density map.

Two particles closer than about twice the target sigma give the network one elongated blob with one maximum.
For each spot, :func:`shape_features` measures, within a window of :data:`RADIUS` voxels and only on the voxels
nearer to this spot than to any other peak (a Voronoi mask), the density-weighted covariance in target-sigma
units, the density mass, and the photometric mass of the normalised image by aperture photometry: the sum over
the voxels within :data:`APERTURE` target sigmas of the spot, less the median of the window's other voxels (the
local background, so that a smooth background or a blob under the spot does not count). A blob of two particles
``d`` apart along ``u`` has the covariance of one blob plus ``(d/2)^2 u u^T`` and up to twice the photons.

:func:`split` compares each spot with the volume's typical spot (medians over its spots, most of which are single
particles): a spot is split when its largest principal variance ``l1`` exceeds the median by :data:`L1_MADS`
robust standard deviations, its density mass by :data:`MASS_MADS`, and its photometric mass is at least
:data:`PHOTON_RATIO` times the median. It is replaced by two spots at ``mean ± sqrt(l1 - median l1) u`` (sigma
units). Nothing is split in a volume with fewer than :data:`MIN_SPOTS` spots (no reliable typical spot). The
thresholds were chosen on validation stacks of the Table 1 benchmark (BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

RADIUS = (2, 4, 4)  # window half-size (z, y, x) in voxels
MASS_FLOOR = 0.1  # density below this carries no weight in the covariance
APERTURE = 2.0  # photometric mass: own voxels within this many target sigmas; background: the others' median
MIN_BACKGROUND_VOXELS = 10
L1_MADS = 3.0
MASS_MADS = 2.0
PHOTON_RATIO = 1.3
MIN_SPOTS = 20
N_FEATURES = 9  # mean z, y, x; l1; u z, y, x; density mass; photometric mass
L1, DENSITY_MASS, PHOTONS = 3, 7, 8  # their columns
MAD_TO_SD = 1.4826


@njit(cache=True)
def _owned(seeds, order, lo, hi, i, z, y, x):  # pragma: no cover - compiled
    """Whether voxel (z, y, x) is at least as near to seed i as to every seed order[lo:hi]."""
    d0 = (z - seeds[i, 0]) ** 2 + (y - seeds[i, 1]) ** 2 + (x - seeds[i, 2]) ** 2
    for k in range(lo, hi):
        j = order[k]
        if j != i and (z - seeds[j, 0]) ** 2 + (y - seeds[j, 1]) ** 2 + (x - seeds[j, 2]) ** 2 < d0:
            return False
    return True


@njit(cache=True)
def _first_above(a, v, strict):  # pragma: no cover - compiled
    """np.searchsorted(a, v, side="right" if strict else "left") by bisection (numba's costs a second to compile)."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] > v or (not strict and a[mid] == v):
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _median(buf, n):  # pragma: no cover - compiled
    """np.median(buf[:n]) (n >= 1) by quickselect in place: numba's own median costs seconds to compile."""
    k = (n - 1) // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    low = buf[k]
    if n % 2:
        return low
    high = buf[k + 1]
    for q in range(k + 2, n):  # everything after k is >= buf[k]: the next order statistic is their minimum
        if buf[q] < high:
            high = buf[q]
    return (low + high) / 2.0


@njit(cache=True)
def _moments(d, im, vox, seeds, order, seed_y, sigma, radius, floor, aperture, min_bg, out):  # pragma: no cover
    """Per spot i (seed i): density-weighted sums over its own window voxels, and its aperture photometry (the
    voxels within ``aperture`` sigmas of the spot, less the median of the other own voxels)."""
    nz, ny, nx = d.shape
    reach = 2 * radius[1] + 1  # a seed farther than this in y owns no voxel of the window
    buf = np.empty((2 * radius[0] + 1) * (2 * radius[1] + 1) * (2 * radius[2] + 1), np.float64)
    for i in range(vox.shape[0]):
        lo = _first_above(seed_y, seeds[i, 1] - reach, False)
        hi = _first_above(seed_y, seeds[i, 1] + reach, True)
        z0, z1 = max(vox[i, 0] - radius[0], 0), min(vox[i, 0] + radius[0] + 1, nz)
        y0, y1 = max(vox[i, 1] - radius[1], 0), min(vox[i, 1] + radius[1] + 1, ny)
        x0, x1 = max(vox[i, 2] - radius[2], 0), min(vox[i, 2] + radius[2] + 1, nx)
        sw = 0.0
        m = np.zeros(3)
        c = np.zeros(6)
        nb = 0
        n_ap = 0
        sum_ap = 0.0
        for z in range(z0, z1):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if not _owned(seeds, order, lo, hi, i, z, y, x):
                        continue
                    v = d[z, y, x]
                    r2 = ((z - seeds[i, 0]) / sigma[0]) ** 2 + ((y - seeds[i, 1]) / sigma[1]) ** 2 \
                        + ((x - seeds[i, 2]) / sigma[2]) ** 2
                    if r2 > aperture * aperture:
                        buf[nb] = im[z, y, x]
                        nb += 1
                    else:
                        sum_ap += im[z, y, x]
                        n_ap += 1
                    w = v - floor
                    if w <= 0.0:
                        continue
                    a, b, e = z / sigma[0], y / sigma[1], x / sigma[2]
                    sw += w
                    m[0] += w * a
                    m[1] += w * b
                    m[2] += w * e
                    c[0] += w * a * a
                    c[1] += w * b * b
                    c[2] += w * e * e
                    c[3] += w * a * b
                    c[4] += w * a * e
                    c[5] += w * b * e
        bg = _median(buf, nb) if nb >= min_bg else 0.0
        phot = sum_ap - n_ap * bg
        out[i, 9] = sw
        out[i, 10] = phot
        if sw <= 0.0:
            out[i, 0], out[i, 1], out[i, 2] = seeds[i, 0], seeds[i, 1], seeds[i, 2]
            continue
        for a in range(3):
            m[a] /= sw
        out[i, 0], out[i, 1], out[i, 2] = m[0] * sigma[0], m[1] * sigma[1], m[2] * sigma[2]
        out[i, 3] = c[0] / sw - m[0] * m[0]
        out[i, 4] = c[1] / sw - m[1] * m[1]
        out[i, 5] = c[2] / sw - m[2] * m[2]
        out[i, 6] = c[3] / sw - m[0] * m[1]
        out[i, 7] = c[4] / sw - m[0] * m[2]
        out[i, 8] = c[5] / sw - m[1] * m[2]


def shape_features(
    density: np.ndarray,
    normalised: np.ndarray,
    voxels: np.ndarray,
    coords: np.ndarray,
    seeds: np.ndarray,
    sigma_zyx: tuple[float, float, float],
) -> np.ndarray:
    """Features (N, :data:`N_FEATURES`) of the spots at ``voxels`` / ``coords`` (block coordinates) of one block.

    ``density`` and ``normalised`` (the network input) cover the block, which should reach at least
    ``2 * RADIUS + 1`` voxels beyond every spot where the volume goes on; ``seeds`` are the coordinates of the
    block's other peaks that bound each spot's window (the spots themselves may be among them). Columns: the spot's mean
    position (z, y, x), ``l1`` and its unit vector ``u`` (largest principal variance, target-sigma units), the
    density mass and the photometric mass (normalised units)."""
    vox = np.ascontiguousarray(voxels, np.int64).reshape(-1, 3)
    n = vox.shape[0]
    feats = np.zeros((n, N_FEATURES), np.float64)
    if n == 0:
        return feats
    own_coords = np.asarray(coords, np.float64).reshape(-1, 3)
    all_seeds = np.ascontiguousarray(np.concatenate([own_coords, np.asarray(seeds, np.float64).reshape(-1, 3)]))
    order = np.argsort(all_seeds[:, 1], kind="stable")
    out = np.zeros((n, 11), np.float64)
    _moments(np.ascontiguousarray(density, np.float32), np.ascontiguousarray(normalised, np.float32), vox,
             all_seeds, order, np.ascontiguousarray(all_seeds[order, 1]), np.asarray(sigma_zyx, np.float64),
             np.asarray(RADIUS, np.int64), MASS_FLOOR, APERTURE, MIN_BACKGROUND_VOXELS, out)
    cov = np.empty((n, 3, 3))
    cov[:, 0, 0], cov[:, 1, 1], cov[:, 2, 2] = out[:, 3], out[:, 4], out[:, 5]
    cov[:, 0, 1] = cov[:, 1, 0] = out[:, 6]
    cov[:, 0, 2] = cov[:, 2, 0] = out[:, 7]
    cov[:, 1, 2] = cov[:, 2, 1] = out[:, 8]
    values, vectors = np.linalg.eigh(cov)
    feats[:, 0:3] = out[:, 0:3]
    feats[:, 3] = values[:, 2]
    feats[:, 4:7] = vectors[:, :, 2]
    feats[:, 7] = out[:, 9]
    feats[:, 8] = out[:, 10]
    return feats


def _median_sd(values: np.ndarray) -> tuple[float, float]:
    med = float(np.median(values))
    return med, MAD_TO_SD * float(np.median(np.abs(values - med)))


def split(
    coords: np.ndarray, features: np.ndarray, sigma_zyx: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(source, coords)``: the spots after splitting merged pairs (module docstring); ``source[k]`` is the
    input row that output row ``k`` comes from (a split spot gives two consecutive rows). Rows of ``features``
    with NaN (not measured) are never split and do not count towards the medians."""
    coords = np.asarray(coords, np.float64).reshape(-1, 3)
    n = coords.shape[0]
    source = np.arange(n)
    f = np.asarray(features, np.float64).reshape(n, N_FEATURES)
    measured = np.isfinite(f).all(axis=1)
    if np.count_nonzero(measured) < MIN_SPOTS:
        return source, coords
    l1, mass, phot = f[:, L1], f[:, DENSITY_MASS], f[:, PHOTONS]
    l1_med, l1_sd = _median_sd(l1[measured])
    mass_med, mass_sd = _median_sd(mass[measured])
    phot_med = float(np.median(phot[measured]))
    with np.errstate(invalid="ignore"):
        chosen = measured & (l1 > l1_med + L1_MADS * l1_sd) & (mass > mass_med + MASS_MADS * mass_sd)
        chosen &= (phot_med > 0) & (phot >= PHOTON_RATIO * phot_med)
    if not chosen.any():
        return source, coords
    spread = np.sqrt(np.clip(np.nan_to_num(l1 - l1_med), 0.0, None))
    half = spread[:, None] * f[:, 4:7] * np.asarray(sigma_zyx, np.float64)
    rows = np.repeat(source, np.where(chosen, 2, 1))
    out = coords[rows].copy()
    first = np.flatnonzero(chosen[rows] & (np.r_[True, rows[1:] != rows[:-1]]))
    out[first] = f[rows[first], 0:3] + half[rows[first]]
    out[first + 1] = f[rows[first], 0:3] - half[rows[first]]
    return rows, out
