"""3D local maxima of a density map, greedy min-distance suppression and sub-voxel refinement (numba).

Rules (the scipy reference in ``benchmarks/_reference_peaks.py`` implements the same ones):

- **Maximum.** A voxel is a candidate when its value is strictly greater than ``threshold`` (compared in float64)
  and not smaller than any of its 26 neighbours; neighbours outside the volume and NaN neighbours are ignored.
- **Plateaus.** 26-connected candidates always have equal values. A plateau (26-connected set of equal voxels) is
  one peak, at its first voxel in raster (z, y, x) order, when no voxel next to it is higher and at least one is
  lower. So a plateau of any shape gives exactly one peak; a shoulder (plateau touching a higher voxel) and a
  constant volume give none.
- **Order.** Peaks are sorted by score (the map value) descending, ties in raster order.
- **Suppression.** Greedy: a peak is dropped when an already kept peak has
  ``(dz/mdz)**2 + (dy/mdy)**2 + (dx/mdx)**2 < 1`` (integer voxel positions). ``md <= 1`` on an axis means
  that any offset along that axis keeps both peaks (nothing beyond the 26-neighbourhood).
- **Refinement** per axis from the samples at -1, 0, +1 (see ``REFINE_METHODS``). The offset is 0 when a
  neighbour on that axis lies outside the volume or the estimate is not finite (or its denominator <= 0), and
  is clipped to [-0.5, 0.5].

Kernels compile on first call (``cache=True``); ``warmup()`` compiles them all on a tiny array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = ["Candidates", "Peaks", "REFINE_METHODS", "find_candidates", "find_peaks", "suppress", "warmup"]

#: "gaussian": log-Gaussian 3-point, exact for a sampled Gaussian; "parabolic": the same formula on the values;
#: "centroid": intensity-weighted centroid (values clipped at 0) of the in-volume 3x3x3 window; "none";
#: "lsq": least-squares log-quadratic fit over the 3x3x3 window (log-Gaussian 3-point on the log values summed
#: over the perpendicular 3x3 planes): exact for axis-aligned Gaussians, about 2x less noise-sensitive for sigma >= 1.5.
REFINE_METHODS = ("gaussian", "parabolic", "centroid", "none", "lsq")
_REFINE_CODE = {name: i for i, name in enumerate(REFINE_METHODS)}


class Peaks(NamedTuple):
    """Detected peaks, best first (what :func:`find_peaks` returns).

    Attributes
    ----------
    coords : numpy.ndarray
        float64 (N, 3) zyx, refined.
    voxels : numpy.ndarray
        int64 (N, 3) zyx, integer maxima.
    scores : numpy.ndarray
        float32 (N,), map value at the voxel.
    """

    coords: np.ndarray  # float64 (N, 3) zyx, refined
    voxels: np.ndarray  # int64 (N, 3) zyx, integer maxima
    scores: np.ndarray  # float32 (N,), map value at the voxel


class Candidates(NamedTuple):
    """Unsuppressed maxima of one block of a larger map (raster order), for tiled detection.

    What :func:`find_candidates` returns.

    Attributes
    ----------
    coords : numpy.ndarray
        float64 (N, 3) zyx, refined, in block coordinates.
    voxels : numpy.ndarray
        int64 (N, 3) zyx, in block coordinates.
    scores : numpy.ndarray
        float32 (N,), map value at the voxel.
    unresolved : bool
        A plateau of the core reaches an open face: the block needs a larger margin.
    """

    coords: np.ndarray  # float64 (N, 3) zyx, refined, in block coordinates
    voxels: np.ndarray  # int64 (N, 3) zyx, in block coordinates
    scores: np.ndarray  # float32 (N,)
    unresolved: bool  # a plateau of the core reaches an open face: the block needs a larger margin


# ----------------------------------------------------------------------------------------------- kernels


@njit(cache=True, inline="always")
def _classify(d, z, y, x, v):  # pragma: no cover - compiled
    """0: not a candidate, 1: strict maximum, 2: plateau candidate (has an equal neighbour)."""
    nz, ny, nx = d.shape
    equal = False
    lower = False
    for zz in range(max(z - 1, 0), min(z + 2, nz)):
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                if zz == z and yy == y and xx == x:
                    continue
                n = d[zz, yy, xx]
                if n > v:
                    return 0
                if n == v:
                    equal = True
                elif n < v:
                    lower = True
    if equal:
        return 2
    if lower:
        return 1
    return 0


@njit(cache=True, inline="always")
def _row_max(row, x, v):  # pragma: no cover - compiled
    """Cheap pre-test: not lower than the two neighbours in the same row."""
    if x > 0 and row[x - 1] > v:
        return False
    return not (x + 1 < row.shape[0] and row[x + 1] > v)


@njit(cache=True)
def _candidates(d, thr, lin, flag):  # pragma: no cover - compiled
    """Write raster indices and classes (1 strict, 2 plateau) of the candidates in raster order; return count.

    Rows are scanned in blocks of 16 with a branch-free (vectorised) count, so blocks with nothing above the
    threshold cost one SIMD pass. Serial on purpose: on the shared 2-core machine a prange-over-rows version was
    no faster (workqueue layer) or 4x slower (omp layer) than this loop. ``lin``/``flag`` are preallocated by
    the caller (growing them inside the loop made it 5x slower).
    """
    nz, ny, nx = d.shape
    k = 0
    for z in range(nz):
        for y in range(ny):
            row = d[z, y]
            for x0 in range(0, nx, 16):
                x1 = min(x0 + 16, nx)
                above = 0
                for x in range(x0, x1):
                    above += row[x] > thr
                if above == 0:
                    continue
                for x in range(x0, x1):
                    v = row[x]
                    if v > thr and _row_max(row, x, v):
                        c = _classify(d, z, y, x, v)
                        if c != 0:
                            lin[k] = (z * ny + y) * nx + x
                            flag[k] = c
                            k += 1
    return k


@njit(cache=True)
def _resolve_plateaus(d, lin, flag):  # pragma: no cover - compiled
    """Keep mask: strict maxima, and the first voxel of every plateau that is a regional maximum."""
    nz, ny, nx = d.shape
    n = lin.shape[0]
    keep = flag == 1
    has_plateau = False
    for i in range(n):
        if flag[i] == 2:
            has_plateau = True
            break
    if not has_plateau:
        return keep
    flat = d.ravel()
    visited = np.zeros(flat.shape[0], dtype=np.uint8)
    stack = np.empty(16, dtype=np.int64)
    for i in range(n):
        if flag[i] != 2 or visited[lin[i]]:
            continue
        v = flat[lin[i]]
        good = True
        lower = False
        top = 0
        stack[0] = lin[i]
        top = 1
        visited[lin[i]] = 1
        while top > 0:
            top -= 1
            p = stack[top]
            z = p // (ny * nx)
            y = (p // nx) % ny
            x = p % nx
            for zz in range(max(z - 1, 0), min(z + 2, nz)):
                for yy in range(max(y - 1, 0), min(y + 2, ny)):
                    for xx in range(max(x - 1, 0), min(x + 2, nx)):
                        q = (zz * ny + yy) * nx + xx
                        w = flat[q]
                        if w > v:
                            good = False
                        elif w < v:
                            lower = True
                        elif w == v and visited[q] == 0:
                            visited[q] = 1
                            if top == stack.shape[0]:
                                bigger = np.empty(2 * top, dtype=np.int64)
                                for j in range(top):  # a loop, not a slice copy: compiles in a fraction
                                    bigger[j] = stack[j]
                                stack = bigger
                            stack[top] = q
                            top += 1
        # raster order: the first candidate met on a regional-maximum plateau is its first voxel
        keep[i] = good and lower
    return keep


def _plateau_keep(d: np.ndarray, lin: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """:func:`_resolve_plateaus`, compiled only for a map that has a plateau candidate (most have none)."""
    if not (flag == 2).any():
        return flag == 1
    return _resolve_plateaus(d, lin, flag)


@njit(cache=True)
def _suppress(vox, md, shape):  # pragma: no cover - compiled
    """Greedy anisotropic min-distance suppression over a bucket grid; ``vox`` sorted best first."""
    cell = np.empty(3, dtype=np.int64)
    ncell = np.empty(3, dtype=np.int64)
    for a in range(3):
        cell[a] = max(1, int(math.ceil(min(md[a], max(shape[a], 1)))))  # clip first: md may be 1e300 or inf
        ncell[a] = (shape[a] + cell[a] - 1) // cell[a]
    return _suppress_cells(vox, md, cell, ncell)


@njit(cache=True, inline="always")
def _three_point(vm, v0, vp, use_log):  # pragma: no cover - compiled
    if use_log:
        vm = vm if vm > 1e-12 else 1e-12
        v0 = v0 if v0 > 1e-12 else 1e-12
        vp = vp if vp > 1e-12 else 1e-12
        vm = math.log(vm)
        v0 = math.log(v0)
        vp = math.log(vp)
    den = 2.0 * v0 - vm - vp
    if not (den > 0.0) or not math.isfinite(den):
        return 0.0
    off = 0.5 * (vp - vm) / den
    if not math.isfinite(off):
        return 0.0
    return min(max(off, -0.5), 0.5)


@njit(cache=True)
def _refine(d, vox, method):  # pragma: no cover - compiled
    """Sub-voxel coordinates; method is the index in REFINE_METHODS."""
    shape = d.shape
    n = vox.shape[0]
    out = np.empty((n, 3), dtype=np.float64)
    step = np.zeros(3, dtype=np.int64)
    sums = np.zeros((3, 3), dtype=np.float64)  # centroid: weighted offsets in row 0; lsq: [axis, plane]
    for i in range(n):
        z = vox[i, 0]
        y = vox[i, 1]
        x = vox[i, 2]
        if method == 2 or method == 4:
            for r in range(3):
                for q in range(3):
                    sums[r, q] = 0.0
            s = 0.0
            for dz in range(-1, 2):
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        zz = z + dz
                        yy = y + dy
                        xx = x + dx
                        if zz < 0 or zz >= shape[0] or yy < 0 or yy >= shape[1] or xx < 0 or xx >= shape[2]:
                            continue
                        w = np.float64(d[zz, yy, xx])
                        if method == 2:
                            w = w if w > 0.0 else 0.0
                            s += w
                            sums[0, 0] += w * dz
                            sums[0, 1] += w * dy
                            sums[0, 2] += w * dx
                        else:
                            w = math.log(w if w > 1e-12 else 1e-12)
                            sums[0, dz + 1] += w
                            sums[1, dy + 1] += w
                            sums[2, dx + 1] += w
        for a in range(3):
            c = vox[i, a]
            off = 0.0
            if method != 3 and c - 1 >= 0 and c + 1 < shape[a]:
                if method == 2:
                    if s > 0.0 and math.isfinite(s):
                        off = sums[0, a] / s
                        off = min(max(off, -0.5), 0.5) if math.isfinite(off) else 0.0
                elif method == 4:
                    off = _three_point(sums[a, 0], sums[a, 1], sums[a, 2], False)
                else:
                    step[0] = step[1] = step[2] = 0
                    step[a] = 1
                    vm = np.float64(d[z - step[0], y - step[1], x - step[2]])
                    v0 = np.float64(d[z, y, x])
                    vp = np.float64(d[z + step[0], y + step[1], x + step[2]])
                    off = _three_point(vm, v0, vp, method == 0)
            out[i, a] = c + off
    return out


@njit(cache=True)
def _suppress_cells(vox, md, cell, ncell):  # pragma: no cover - compiled
    """Greedy min-distance suppression on a grid of given cells (each >= md on its axis), ``vox`` relative to the
    grid origin and sorted best first: a peak is dropped when a kept one lies within the ellipsoid ``md``."""
    n = vox.shape[0]
    keep = np.zeros(n, dtype=np.bool_)
    head = np.empty(ncell[0] * ncell[1] * ncell[2], dtype=np.int64)
    for g in range(head.shape[0]):
        head[g] = -1
    nxt = np.empty(n, dtype=np.int64)
    for g in range(n):
        nxt[g] = -1
    for i in range(n):
        cz = vox[i, 0] // cell[0]
        cy = vox[i, 1] // cell[1]
        cx = vox[i, 2] // cell[2]
        hit = False
        for gz in range(max(cz - 1, 0), min(cz + 2, ncell[0])):
            for gy in range(max(cy - 1, 0), min(cy + 2, ncell[1])):
                for gx in range(max(cx - 1, 0), min(cx + 2, ncell[2])):
                    j = head[(gz * ncell[1] + gy) * ncell[2] + gx]
                    while j >= 0:
                        a = (vox[j, 0] - vox[i, 0]) / md[0]
                        b = (vox[j, 1] - vox[i, 1]) / md[1]
                        c = (vox[j, 2] - vox[i, 2]) / md[2]
                        if a * a + b * b + c * c < 1.0:
                            hit = True
                            break
                        j = nxt[j]
                    if hit:
                        break
                if hit:
                    break
            if hit:
                break
        if not hit:
            keep[i] = True
            g = (cz * ncell[1] + cy) * ncell[2] + cx
            nxt[i] = head[g]
            head[g] = i
    return keep


@njit(cache=True)
def _plateau_open(d, seeds, open_lo, open_hi):  # pragma: no cover - compiled
    """Whether any plateau (26-connected equal values) through ``seeds`` (raster indices) touches an open face."""
    nz, ny, nx = d.shape
    flat = d.ravel()
    visited = np.zeros(flat.shape[0], dtype=np.uint8)
    stack = np.empty(16, dtype=np.int64)
    dims = (nz, ny, nx)
    for s in range(seeds.shape[0]):
        if visited[seeds[s]]:
            continue
        v = flat[seeds[s]]
        stack[0] = seeds[s]
        top = 1
        visited[seeds[s]] = 1
        while top > 0:
            top -= 1
            p = stack[top]
            z = p // (ny * nx)
            y = (p // nx) % ny
            x = p % nx
            c = (z, y, x)
            for a in range(3):
                if (open_lo[a] and c[a] == 0) or (open_hi[a] and c[a] == dims[a] - 1):
                    return True
            for zz in range(max(z - 1, 0), min(z + 2, nz)):
                for yy in range(max(y - 1, 0), min(y + 2, ny)):
                    for xx in range(max(x - 1, 0), min(x + 2, nx)):
                        q = (zz * ny + yy) * nx + xx
                        if flat[q] == v and visited[q] == 0:
                            visited[q] = 1
                            if top == stack.shape[0]:
                                bigger = np.empty(2 * top, dtype=np.int64)
                                for j in range(top):  # a loop, not a slice copy: compiles in a fraction
                                    bigger[j] = stack[j]
                                stack = bigger
                            stack[top] = q
                            top += 1
    return False


# ----------------------------------------------------------------------------------------------- public API


def _empty() -> Peaks:
    return Peaks(np.zeros((0, 3), np.float64), np.zeros((0, 3), np.int64), np.zeros(0, np.float32))


def _min_distance(min_distance: float | Sequence[float]) -> np.ndarray:
    md = np.asarray(min_distance, dtype=np.float64).reshape(-1)
    if md.size == 1:
        md = np.repeat(md, 3)
    if md.size != 3 or np.isnan(md).any() or (md < 0).any():
        raise ValueError(f"min_distance must be one or three numbers >= 0 (z, y, x), got {min_distance!r}")
    return np.maximum(md, 1.0)


def find_peaks(
    density: np.ndarray,
    threshold: float,
    min_distance: float | Sequence[float] = (1.0, 1.0, 1.0),
    refine: str = "gaussian",
) -> Peaks:
    """Local maxima of a ZYX density map above ``threshold``, best first, suppressed and refined.

    The maximum, plateau, order, suppression and border rules are described in the module docstring.

    Parameters
    ----------
    density : array_like
        The 3D (ZYX) map; converted to C-contiguous float32 if needed.
    threshold : float
        A voxel is a candidate when its value is strictly greater (compared in float64).
    min_distance : float or sequence of 3 floats, optional
        Greedy suppression distance in voxels (scalar or z, y, x), each >= 0; values <= 1 suppress nothing
        along that axis. Default 1 on every axis: no suppression.
    refine : str, optional
        Sub-voxel refinement, one of :data:`REFINE_METHODS`: "gaussian" (default), "parabolic", "centroid",
        "none" or "lsq".

    Returns
    -------
    Peaks
        ``coords`` (refined), ``voxels`` and ``scores`` of the peaks, best first (ties in raster order).

    Raises
    ------
    ValueError
        When ``density`` is not 3D, ``refine`` is unknown, ``threshold`` is NaN, or ``min_distance`` is not one
        or three numbers >= 0.

    See Also
    --------
    find_candidates, suppress : the same peaks block by block.

    Examples
    --------
    A sampled Gaussian (σ 1, 1.5, 1.5 voxels): the "gaussian" refinement finds its centre exactly.

    >>> import numpy as np
    >>> z, y, x = np.ogrid[:12, :24, :24]
    >>> density = np.exp(-(z - 5.3) ** 2 / 2 - ((y - 10.0) ** 2 + (x - 12.6) ** 2) / 4.5)
    >>> peaks = find_peaks(density, 0.5)
    >>> peaks.voxels.tolist(), peaks.coords.round(2).tolist(), round(float(peaks.scores[0]), 2)
    ([[5, 10, 13]], [[5.3, 10.0, 12.6]], 0.92)

    A weaker peak 5 voxels away in x is kept, unless ``min_distance`` says it is too close:

    >>> density += 0.6 * np.exp(-(z - 5) ** 2 / 2 - ((y - 10.0) ** 2 + (x - 18) ** 2) / 4.5)
    >>> find_peaks(density, 0.5).voxels.tolist()
    [[5, 10, 13], [5, 10, 18]]
    >>> find_peaks(density, 0.5, min_distance=(1, 8, 8)).voxels.tolist()
    [[5, 10, 13]]
    >>> len(find_peaks(density, 0.95).scores)
    0
    """
    arr = np.asarray(density)
    if arr.ndim != 3:
        raise ValueError(f"density map must be 3D (ZYX), got {arr.ndim}D with shape {arr.shape}")
    if refine not in _REFINE_CODE:
        raise ValueError(f"refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold is NaN")
    md = _min_distance(min_distance)
    if arr.size == 0:
        return _empty()
    d = np.ascontiguousarray(arr, dtype=np.float32)

    lin = np.empty(d.size, np.int64)  # untouched pages of np.empty cost nothing
    flag = np.empty(d.size, np.int8)
    k = _candidates(d, thr, lin, flag)
    lin, flag = lin[:k].copy(), flag[:k].copy()
    lin = lin[_plateau_keep(d, lin, flag)]
    if lin.size == 0:
        return _empty()

    scores = d.ravel()[lin]
    order = np.argsort(-scores, kind="stable")  # lin is in raster order, so ties stay in raster order
    lin, scores = lin[order], scores[order]
    vox = np.stack(np.unravel_index(lin, d.shape), axis=1).astype(np.int64, copy=False)
    if (md > 1.0).any():
        keep = _suppress(vox, md, np.asarray(d.shape, np.int64))
        vox, scores = vox[keep], scores[keep]
    coords = _refine(d, np.ascontiguousarray(vox), _REFINE_CODE[refine])
    return Peaks(coords, vox, scores)


def find_candidates(
    density: np.ndarray,
    threshold: float,
    refine: str = "gaussian",
    core: Sequence[slice] | None = None,
    open_faces: Sequence[tuple[bool, bool]] = ((False, False),) * 3,
) -> Candidates:
    """Maxima of one block of a larger map whose voxel lies in ``core``, refined, not suppressed.

    Maxima, plateaus and refinement follow the :func:`find_peaks` rules exactly as on the whole map, provided no
    plateau of the core reaches an open face: ``unresolved`` says when one does (retry with a larger margin).
    Merge the blocks' candidates with :func:`suppress` to get ``find_peaks`` of the whole map.

    Parameters
    ----------
    density : array_like
        The block: ``core`` plus a margin of at least one voxel on every ``open_faces`` side. 3D (ZYX);
        converted to C-contiguous float32 if needed.
    threshold : float
        A voxel is a candidate when its value is strictly greater (compared in float64).
    refine : str, optional
        Sub-voxel refinement, one of :data:`REFINE_METHODS` (default "gaussian").
    core : sequence of 3 slices or None, optional
        The block's own part, in block coordinates; default all of it.
    open_faces : sequence of 3 (bool, bool), optional
        (low, high) per axis: the map goes on beyond that face. Default: none (the block is the whole map).

    Returns
    -------
    Candidates
        ``coords``, ``voxels`` (block coordinates) and ``scores`` of the core's maxima in raster order, and
        ``unresolved``.

    Raises
    ------
    ValueError
        When ``density`` is not 3D, ``refine`` is unknown or ``threshold`` is NaN.

    Examples
    --------
    A map of two spots, cut into two blocks along x with a margin of one voxel on their shared face; the
    candidates of both, merged by :func:`suppress`, are :func:`find_peaks` of the whole map:

    >>> import numpy as np
    >>> z, y, x = np.ogrid[:8, :16, :32]
    >>> density = (np.exp(-(z - 4) ** 2 / 2 - ((y - 8) ** 2 + (x - 9.2) ** 2) / 4.5)
    ...            + 0.9 * np.exp(-(z - 3) ** 2 / 2 - ((y - 7) ** 2 + (x - 22) ** 2) / 4.5))
    >>> closed = (False, False)
    >>> left = find_candidates(density[:, :, :17], 0.5, core=(slice(None), slice(None), slice(0, 16)),
    ...                        open_faces=(closed, closed, (False, True)))
    >>> right = find_candidates(density[:, :, 15:], 0.5, core=(slice(None), slice(None), slice(1, None)),
    ...                         open_faces=(closed, closed, (True, False)))
    >>> left.voxels.tolist(), right.voxels.tolist(), left.unresolved or right.unresolved
    ([[4, 8, 9]], [[3, 7, 7]], False)
    >>> voxels = np.concatenate([left.voxels, right.voxels + (0, 0, 15)])  # volume coordinates
    >>> coords = np.concatenate([left.coords, right.coords + (0, 0, 15)])
    >>> keep = suppress(voxels, np.concatenate([left.scores, right.scores]), 3)
    >>> coords[keep].round(2).tolist()
    [[4.0, 8.0, 9.2], [3.0, 7.0, 22.0]]
    >>> np.allclose(coords[keep], find_peaks(density, 0.5, 3).coords)
    True
    """
    arr = np.asarray(density)
    if arr.ndim != 3:
        raise ValueError(f"density map must be 3D (ZYX), got {arr.ndim}D with shape {arr.shape}")
    if refine not in _REFINE_CODE:
        raise ValueError(f"refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold is NaN")
    empty = Candidates(np.zeros((0, 3), np.float64), np.zeros((0, 3), np.int64), np.zeros(0, np.float32), False)
    if arr.size == 0:
        return empty
    d = np.ascontiguousarray(arr, dtype=np.float32)
    core = tuple(slice(0, n) for n in d.shape) if core is None else tuple(core)
    lo = np.array([c.indices(n)[0] for c, n in zip(core, d.shape)], np.int64)
    hi = np.array([c.indices(n)[1] for c, n in zip(core, d.shape)], np.int64)

    lin = np.empty(d.size, np.int64)
    flag = np.empty(d.size, np.int8)
    k = _candidates(d, thr, lin, flag)
    lin, flag = lin[:k].copy(), flag[:k].copy()
    vox = np.stack(np.unravel_index(lin, d.shape), axis=1).astype(np.int64, copy=False)
    in_core = ((vox >= lo) & (vox < hi)).all(axis=1)
    unresolved = False
    seeds = lin[in_core & (flag == 2)]
    if seeds.size and any(o for pair in open_faces for o in pair):
        open_lo = np.array([bool(p[0]) for p in open_faces])
        open_hi = np.array([bool(p[1]) for p in open_faces])
        unresolved = bool(_plateau_open(d, seeds, open_lo, open_hi))
    keep = _plateau_keep(d, lin, flag) & in_core
    vox = np.ascontiguousarray(vox[keep])
    if vox.shape[0] == 0:
        return empty._replace(unresolved=unresolved)
    scores = d.ravel()[lin[keep]]
    coords = _refine(d, vox, _REFINE_CODE[refine])
    return Candidates(coords, vox, scores, unresolved)


def suppress(voxels: np.ndarray, scores: np.ndarray, min_distance: float | Sequence[float]) -> np.ndarray:
    """Indices of the candidates that survive greedy min-distance suppression, best first.

    Same order (score descending, ties in raster order of ``voxels``) and rule as :func:`find_peaks`; memory is
    proportional to the number of candidates, not to the extent of the volume.

    Parameters
    ----------
    voxels : array_like
        (N, 3) integer zyx positions of the candidates.
    scores : array_like
        (N,) their scores (compared as float32).
    min_distance : float or sequence of 3 floats
        Suppression distance in voxels (scalar or z, y, x), each >= 0; values <= 1 suppress nothing along that
        axis.

    Returns
    -------
    numpy.ndarray
        Indices into ``voxels`` of the kept candidates, best first.

    Raises
    ------
    ValueError
        When ``voxels`` and ``scores`` differ in length, or ``min_distance`` is not one or three numbers >= 0.

    Examples
    --------
    The best candidate (index 1) drops the one 2 voxels away; the one 7 voxels further is kept:

    >>> import numpy as np
    >>> suppress(np.array([[0, 0, 0], [0, 0, 2], [0, 0, 9]]), np.array([0.5, 0.9, 0.7]), 3).tolist()
    [1, 2]
    """
    vox = np.asarray(voxels, np.int64).reshape(-1, 3)
    s = np.asarray(scores, np.float32).reshape(-1)
    if vox.shape[0] != s.shape[0]:
        raise ValueError(f"{vox.shape[0]} voxels but {s.shape[0]} scores")
    md = _min_distance(min_distance)
    order = np.lexsort((vox[:, 2], vox[:, 1], vox[:, 0], -s))
    if order.size == 0 or not (md > 1.0).any():
        return order
    v = vox[order]
    v = np.ascontiguousarray(v - v.min(axis=0))
    extent = v.max(axis=0) + 1
    cell = np.maximum(np.ceil(np.minimum(md, extent)).astype(np.int64), 1)  # one cell spans the extent at most
    budget = max(4 * v.shape[0], 4096)
    while int(np.prod(-(-extent // cell))) > budget:
        a = int(np.argmax(-(-extent // cell)))
        cell[a] *= 2
    keep = _suppress_cells(v, md, cell, -(-extent // cell))
    return order[keep]


def warmup() -> None:
    """Compile (or load from the cache) every kernel on a tiny array.

    The kernels otherwise compile on their first call; after this, the first real call is fast.

    Examples
    --------
    >>> warmup()
    >>> find_peaks(np.eye(3, dtype=np.float32)[None], 0.5).voxels.tolist()  # a plateau: one peak, its first voxel
    [[0, 0, 0]]
    """
    d = np.zeros((3, 4, 5), np.float32)
    d[1, 1, 1] = 1.0
    d[1, 2, 3] = d[1, 2, 4] = 0.5  # plateau path
    for name in REFINE_METHODS:
        find_peaks(d, 0.1, (1.0, 2.0, 2.0), name)
        c = find_candidates(d, 0.1, name, open_faces=((True, True),) * 3)
        suppress(c.voxels, c.scores, (1.0, 2.0, 2.0))
