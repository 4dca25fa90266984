"""Independent numpy/scipy implementation of ``dmdet_infer.peaks.find_peaks`` (same rules), for tests and timing.

Vectorised: ``scipy.ndimage`` maximum/minimum filters and ``label`` for maxima and plateaus, a KD-tree for the
min-distance neighbours (greedy pass in Python over the candidates), numpy gathers for the refinement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_FOOT = np.ones((3, 3, 3), bool)
_RING = _FOOT.copy()
_RING[1, 1, 1] = False


def maxima(d: np.ndarray, threshold: float) -> np.ndarray:
    """Raster-ordered (N, 3) int64 voxels of the peaks (regional maxima > threshold, one per plateau)."""
    mx = ndimage.maximum_filter(d, footprint=_RING, mode="constant", cval=-np.inf)
    cand = (d >= mx) & (d > np.float64(threshold))
    if not cand.any():
        return np.zeros((0, 3), np.int64)
    # a candidate next to an equal non-candidate sits on a plateau that touches a higher voxel
    other = np.where(cand, -np.inf, d)
    bad = cand & (ndimage.maximum_filter(other, footprint=_RING, mode="constant", cval=-np.inf) >= d)
    lower = cand & (ndimage.minimum_filter(d, footprint=_RING, mode="constant", cval=np.inf) < d)
    labels, n = ndimage.label(cand, structure=_FOOT)
    idx = np.flatnonzero(cand)  # raster order
    lab = labels.ravel()[idx]
    bad_lab = np.bincount(lab, weights=bad.ravel()[idx], minlength=n + 1) > 0
    low_lab = np.bincount(lab, weights=lower.ravel()[idx], minlength=n + 1) > 0
    _, first = np.unique(lab, return_index=True)
    first = np.sort(first)
    ok = ~bad_lab[lab[first]] & low_lab[lab[first]]
    return np.stack(np.unravel_index(idx[first[ok]], d.shape), axis=1).astype(np.int64)


def suppress(vox: np.ndarray, md: np.ndarray) -> np.ndarray:
    """Greedy keep mask for ``vox`` sorted best first; md already clamped to >= 1."""
    n = len(vox)
    if n == 0 or not (md > 1).any():
        return np.ones(n, bool)
    tree = cKDTree(vox / md)
    pairs = tree.query_pairs(r=1.0 + 1e-9, output_type="ndarray")
    dv = (vox[pairs[:, 0]] - vox[pairs[:, 1]]).astype(np.float64)
    close = (dv[:, 0] / md[0]) ** 2 + (dv[:, 1] / md[1]) ** 2 + (dv[:, 2] / md[2]) ** 2 < 1.0
    pairs = pairs[close]
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    start = np.searchsorted(both[:, 0], np.arange(n + 1))
    keep = np.ones(n, bool)
    dead = np.zeros(n, bool)
    for i in range(n):
        if dead[i]:
            keep[i] = False
            continue
        dead[both[start[i] : start[i + 1], 1]] = True
    return keep


def _axis_offset(d: np.ndarray, vox: np.ndarray, axis: int, use_log: bool) -> np.ndarray:
    c = vox[:, axis]
    inside = (c - 1 >= 0) & (c + 1 < d.shape[axis])
    lo, hi = vox.copy(), vox.copy()
    lo[:, axis] = np.clip(c - 1, 0, d.shape[axis] - 1)
    hi[:, axis] = np.clip(c + 1, 0, d.shape[axis] - 1)
    vm = d[tuple(lo.T)].astype(np.float64)
    v0 = d[tuple(vox.T)].astype(np.float64)
    vp = d[tuple(hi.T)].astype(np.float64)
    if use_log:
        vm, v0, vp = (np.log(np.where(v > 1e-12, v, 1e-12)) for v in (vm, v0, vp))
    with np.errstate(all="ignore"):
        den = 2.0 * v0 - vm - vp
        off = 0.5 * (vp - vm) / den
    ok = inside & (den > 0) & np.isfinite(den) & np.isfinite(off)
    return np.where(ok, np.clip(off, -0.5, 0.5), 0.0)


def _centroid_offsets(d: np.ndarray, vox: np.ndarray) -> np.ndarray:
    n = len(vox)
    s = np.zeros(n)
    sums = np.zeros((n, 3))
    shape = np.asarray(d.shape)
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                step = np.array([dz, dy, dx])
                p = vox + step
                inside = ((p >= 0) & (p < shape)).all(axis=1)
                p = np.clip(p, 0, shape - 1)
                w = d[tuple(p.T)].astype(np.float64)
                w = np.where(inside & (w > 0), w, 0.0)
                s += w
                sums += w[:, None] * step
    with np.errstate(all="ignore"):
        off = sums / s[:, None]
    ok = (s > 0)[:, None] & np.isfinite(s)[:, None] & np.isfinite(off)
    inside_axis = (vox - 1 >= 0) & (vox + 1 < shape)
    return np.where(ok & inside_axis, np.clip(off, -0.5, 0.5), 0.0)


def find_peaks_reference(density: np.ndarray, threshold: float, min_distance=(1.0, 1.0, 1.0), refine="gaussian"):
    """Same contract as ``find_peaks``; returns (coords, voxels, scores)."""
    d = np.ascontiguousarray(density, dtype=np.float32)
    md = np.maximum(np.broadcast_to(np.asarray(min_distance, np.float64), (3,)), 1.0)
    vox = maxima(d, threshold)
    scores = d[tuple(vox.T)]
    order = np.argsort(-scores, kind="stable")
    vox, scores = vox[order], scores[order]
    keep = suppress(vox, md)
    vox, scores = vox[keep], scores[keep]
    if refine == "centroid":
        off = _centroid_offsets(d, vox)
    elif refine == "lsq":
        off = _lsq_offsets(d, vox)
    elif refine == "none":
        off = np.zeros(vox.shape)
    else:
        off = np.stack([_axis_offset(d, vox, a, refine == "gaussian") for a in range(3)], axis=1)
    return vox + off, vox, scores


def _lsq_offsets(d: np.ndarray, vox: np.ndarray) -> np.ndarray:
    n = len(vox)
    planes = np.zeros((n, 3, 3))
    shape = np.asarray(d.shape)
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                step = np.array([dz, dy, dx])
                p = vox + step
                inside = ((p >= 0) & (p < shape)).all(axis=1)
                p = np.clip(p, 0, shape - 1)
                w = d[tuple(p.T)].astype(np.float64)
                w = np.where(inside, np.log(np.where(w > 1e-12, w, 1e-12)), 0.0)
                for a in range(3):
                    planes[:, a, step[a] + 1] += w
    vm, v0, vp = planes[..., 0], planes[..., 1], planes[..., 2]
    with np.errstate(all="ignore"):
        den = 2.0 * v0 - vm - vp
        off = 0.5 * (vp - vm) / den
    inside_axis = (vox - 1 >= 0) & (vox + 1 < shape)
    ok = inside_axis & (den > 0) & np.isfinite(den) & np.isfinite(off)
    return np.where(ok, np.clip(off, -0.5, 0.5), 0.0)
