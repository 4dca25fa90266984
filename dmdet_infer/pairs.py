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

from . import parallel

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


def _neighbours(own: np.ndarray, seeds: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """(N, K, 3): for each spot, the seeds (NaN-padded) that may own a voxel of its window: within
    ``2 * radius[1] + 1`` in y, and near enough to be closer than the spot to some window voxel."""
    n = own.shape[0]
    band = 2 * int(radius[1]) + 1
    reach = 2.0 * (float(np.sqrt((radius.astype(np.float64) ** 2).sum())) + 1.0)  # refined: within 0.5 voxel
    order = np.argsort(seeds[:, 1], kind="stable")
    lo = np.searchsorted(seeds[order, 1], own[:, 1] - band, "left")
    count = np.searchsorted(seeds[order, 1], own[:, 1] + band, "right") - lo
    spot = np.repeat(np.arange(n), count)
    seed = order[np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)]
    dist2 = ((seeds[seed] - own[spot]) ** 2).sum(axis=1)
    near = (dist2 < reach * reach) & (dist2 > 0.0)  # a seed on the spot itself is never strictly closer
    spot, seed = spot[near], seed[near]
    k = np.bincount(spot, minlength=n)
    out = np.full((n, max(int(k.max(initial=0)), 1), 3), np.nan)
    out[spot, np.arange(spot.size) - np.repeat(np.cumsum(k) - k, k)] = seeds[seed]
    return out


def _ordered_sum(a: np.ndarray) -> np.ndarray:
    """Sums over axis 0 added one row at a time, in order (numpy's ``sum`` may add pairwise)."""
    return np.cumsum(a, axis=0)[-1]


def _moments(d: np.ndarray, im: np.ndarray, vox: np.ndarray, own: np.ndarray, seeds: np.ndarray,
             sigma: np.ndarray, radius: np.ndarray, floor: float, aperture: float, min_bg: int,
             chunk: int = 1 << 18, threads: int | None = None) -> np.ndarray:
    """(N, 11) per spot: density-weighted mean (z, y, x) and covariance (zz, yy, xx, zy, zx, yx) in sigma units,
    density mass over its own window voxels, and aperture photometry (the own voxels within ``aperture`` sigmas
    of the spot, less the median of its other own voxels; 0 background under ``min_bg`` of them).

    Arrays are (window voxel, spot): sums run over the window in raster order, one voxel at a time. Groups of at
    most ``chunk`` window voxels' worth of spots run in ``threads`` threads (:mod:`dmdet_infer.parallel`); each
    spot's numbers do not depend on its group."""
    n = vox.shape[0]
    out = np.zeros((n, 11))
    rz, ry, rx = (int(r) for r in radius)
    offsets = np.stack([o.ravel() for o in np.mgrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]], axis=1)  # (W, 3)
    window = offsets.shape[0]
    near = _neighbours(own, seeds, radius)
    shape = np.array(d.shape, np.int64)
    step = max(1, min(chunk // window, -(-n // parallel.workers(threads))))

    def group(s: int) -> None:
        e = min(n, s + step)
        o = own[s:e]
        q = vox[s:e][None, :, :] + offsets[:, None, :]  # (W, m, 3)
        valid = ((q >= 0) & (q < shape)).all(axis=2)
        qc = np.clip(q, 0, shape - 1)
        flat = (qc[..., 0] * shape[1] + qc[..., 1]) * shape[2] + qc[..., 2]
        f = q.astype(np.float64)
        d0 = (f[..., 0] - o[:, 0]) ** 2 + (f[..., 1] - o[:, 1]) ** 2 + (f[..., 2] - o[:, 2]) ** 2
        owned = valid
        g = near[s:e]
        has = np.isfinite(g[:, :, 0]).sum(axis=1)  # each spot's neighbours come first
        for k in range(g.shape[1]):
            cols = np.flatnonzero(has > k)
            if cols.size == 0:
                break
            fk, gk = f[:, cols], g[cols, k]
            dk = (fk[..., 0] - gk[:, 0]) ** 2 + (fk[..., 1] - gk[:, 1]) ** 2 + (fk[..., 2] - gk[:, 2]) ** 2
            owned[:, cols] &= ~(dk < d0[:, cols])
        v = np.take(d, flat).astype(np.float64)
        p = np.take(im, flat).astype(np.float64)
        r2 = (((f[..., 0] - o[:, 0]) / sigma[0]) ** 2 + ((f[..., 1] - o[:, 1]) / sigma[1]) ** 2
              + ((f[..., 2] - o[:, 2]) / sigma[2]) ** 2)
        outside = r2 > aperture * aperture
        background = owned & outside
        inner = owned & ~outside
        n_bg = background.sum(axis=0)
        ranked = np.sort(np.where(background, p, np.inf).T, axis=1)  # the background values first, ascending
        cols = np.arange(e - s)
        k = np.maximum((n_bg - 1) // 2, 0)
        low, high = ranked[cols, k], ranked[cols, np.minimum(k + 1, window - 1)]
        median = np.where(n_bg % 2 == 1, low, (low + high) / 2.0)
        background_level = np.where(n_bg >= min_bg, median, 0.0)
        out[s:e, 10] = _ordered_sum(np.where(inner, p, 0.0)) - inner.sum(axis=0) * background_level
        w = v - floor
        w = np.where(owned & (w > 0.0), w, 0.0)
        a, b, c = f[..., 0] / sigma[0], f[..., 1] / sigma[1], f[..., 2] / sigma[2]
        sw = _ordered_sum(w)
        wa, wb, wc = w * a, w * b, w * c
        with np.errstate(invalid="ignore", divide="ignore"):
            m = (_ordered_sum(wa) / sw, _ordered_sum(wb) / sw, _ordered_sum(wc) / sw)
            cov = (_ordered_sum(wa * a) / sw - m[0] * m[0], _ordered_sum(wb * b) / sw - m[1] * m[1],
                   _ordered_sum(wc * c) / sw - m[2] * m[2], _ordered_sum(wa * b) / sw - m[0] * m[1],
                   _ordered_sum(wa * c) / sw - m[0] * m[2], _ordered_sum(wb * c) / sw - m[1] * m[2])
        weighted = sw > 0.0
        out[s:e, 9] = sw
        for t in range(3):
            out[s:e, t] = np.where(weighted, m[t] * sigma[t], o[:, t])
        for t in range(6):
            out[s:e, 3 + t] = np.where(weighted, cov[t], 0.0)

    parallel.each(group, range(0, n, step), threads)
    return out


def shape_features(
    density: np.ndarray,
    normalised: np.ndarray,
    voxels: np.ndarray,
    coords: np.ndarray,
    seeds: np.ndarray,
    sigma_zyx: tuple[float, float, float],
    threads: int | None = None,
) -> np.ndarray:
    """Features (N, :data:`N_FEATURES`) of the spots at ``voxels`` / ``coords`` (block coordinates) of one block.

    ``density`` and ``normalised`` (the network input) cover the block, which should reach at least
    ``2 * RADIUS + 1`` voxels beyond every spot where the volume goes on; ``seeds`` are the coordinates of the
    block's other peaks that bound each spot's window (the spots themselves may be among them). Columns: the spot's mean
    position (z, y, x), ``l1`` and its unit vector ``u`` (largest principal variance, target-sigma units), the
    density mass and the photometric mass (normalised units). ``threads``: :func:`dmdet_infer.parallel.workers`
    (the features do not depend on it)."""
    vox = np.ascontiguousarray(voxels, np.int64).reshape(-1, 3)
    n = vox.shape[0]
    feats = np.zeros((n, N_FEATURES), np.float64)
    if n == 0:
        return feats
    own_coords = np.asarray(coords, np.float64).reshape(-1, 3)
    all_seeds = np.ascontiguousarray(np.concatenate([own_coords, np.asarray(seeds, np.float64).reshape(-1, 3)]))
    out = _moments(np.asarray(density, np.float32), np.asarray(normalised, np.float32), vox, own_coords,
                   all_seeds, np.asarray(sigma_zyx, np.float64), np.asarray(RADIUS, np.int64), MASS_FLOOR, APERTURE,
                   MIN_BACKGROUND_VOXELS, threads=threads)
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
