"""3D local maxima of a density map, greedy min-distance suppression and sub-voxel refinement.

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

Maxima and refinement are vectorised numpy, so a fresh install or container pays no compilation for them. The
sequential parts, plateau flood fills and greedy suppression, are numba kernels compiled (``cache=True``) on the
first map that needs them: a plateau candidate, or a ``min_distance`` above 1. numba is imported only then, and
``warmup()`` compiles them all on a tiny array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Candidates", "Peaks", "REFINE_METHODS", "find_candidates", "find_peaks", "suppress", "warmup"]

#: "gaussian": log-Gaussian 3-point, exact for a sampled Gaussian; "parabolic": the same formula on the values;
#: "centroid": intensity-weighted centroid (values clipped at 0) of the in-volume 3x3x3 window; "none";
#: "lsq": least-squares log-quadratic fit over the 3x3x3 window (log-Gaussian 3-point on the log values summed
#: over the perpendicular 3x3 planes): exact for axis-aligned Gaussians, about 2x less noise-sensitive for sigma >= 1.5.
REFINE_METHODS = ("gaussian", "parabolic", "centroid", "none", "lsq")


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
    seeds : numpy.ndarray or None
        float64 (M, 3): the refined maxima of the whole block (core or not) above ``seed_level``, when asked.
    """

    coords: np.ndarray  # float64 (N, 3) zyx, refined, in block coordinates
    voxels: np.ndarray  # int64 (N, 3) zyx, in block coordinates
    scores: np.ndarray  # float32 (N,)
    unresolved: bool  # a plateau of the core reaches an open face: the block needs a larger margin
    seeds: np.ndarray | None = None  # float64 (M, 3): the whole block's maxima above seed_level


# ----------------------------------------------------------------------------------------------- maxima (numpy)

#: The 26 neighbours, cheapest rejections first: the row, then the plane, then the slices above and below.
_NEIGHBOURS = sorted(((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dz or dy or dx),
                     key=lambda o: (abs(o[0]), abs(o[1]), abs(o[2])))
#: The 3x3x3 window in raster order (the order the window refinements accumulate in).
_WINDOW = np.array([(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.int64)


def _above(d: np.ndarray, thr: float) -> np.ndarray:
    """``d > thr`` compared in float64, done in float32: against the largest float32 not above ``thr``."""
    t = np.float32(thr)
    if float(t) > thr:
        t = np.nextafter(t, np.float32(-np.inf))
    return d > t


def _candidates(d: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Raster indices (int64) and classes (int8) of the candidates, in raster order: the voxels above ``thr``
    that no neighbour exceeds, 1 (strict maximum) when none equals them and one is lower, 2 (plateau candidate)
    when one equals them.

    Whole-array comparisons with the row neighbours first, then each of the 26 neighbours gathered for the
    voxels still standing (a NaN border stands for the outside: it compares false both ways)."""
    nz, ny, nx = d.shape
    mask = _above(d, thr)
    if nx > 1:
        mask[:, :, 1:] &= ~(d[:, :, :-1] > d[:, :, 1:])
        mask[:, :, :-1] &= ~(d[:, :, 1:] > d[:, :, :-1])
    lin = np.flatnonzero(mask)
    if lin.size == 0:
        return lin.astype(np.int64), np.zeros(0, np.int8)
    padded = np.pad(d, 1, constant_values=np.nan).ravel()
    py, px = ny + 2, nx + 2
    z, rest = np.divmod(lin, ny * nx)
    y, x = np.divmod(rest, nx)
    at = ((z + 1) * py + (y + 1)) * px + (x + 1)
    v = padded[at]
    equal = np.zeros(lin.size, bool)
    lower = np.zeros(lin.size, bool)
    for dz, dy, dx in _NEIGHBOURS:
        n = padded[at + (dz * py + dy) * px + dx]
        keep = ~(n > v)
        if not keep.all():
            at, v, lin, n, equal, lower = at[keep], v[keep], lin[keep], n[keep], equal[keep], lower[keep]
        equal |= n == v
        lower |= n < v
    flag = np.where(equal, 2, np.where(lower, 1, 0)).astype(np.int8)
    ok = flag > 0
    return lin[ok].astype(np.int64, copy=False), flag[ok]


def _at_least_tiny(v: np.ndarray) -> np.ndarray:
    """``v`` where above 1e-12, else 1e-12 (NaN too): what may be logged."""
    return np.where(v > 1e-12, v, 1e-12)


def _three_point(vm: np.ndarray, v0: np.ndarray, vp: np.ndarray, use_log: bool) -> np.ndarray:
    """Offsets of the vertex of the parabola through (-1, vm), (0, v0), (1, vp) (of the logs with ``use_log``),
    clipped to [-0.5, 0.5]; 0 where the denominator is not positive or anything is not finite."""
    if use_log:
        vm, v0, vp = (np.log(_at_least_tiny(t)) for t in (vm, v0, vp))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        den = 2.0 * v0 - vm - vp
        off = 0.5 * (vp - vm) / den
    good = (den > 0.0) & np.isfinite(den) & np.isfinite(off)
    return np.where(good, np.clip(off, -0.5, 0.5), 0.0)


def _accumulate(d: np.ndarray, q: np.ndarray, o: np.ndarray, shape: np.ndarray, method: str, weight: np.ndarray,
                sums: np.ndarray) -> None:
    """Add the window neighbour at offset ``o`` (voxels ``q``) to the sums of :func:`_refine`."""
    inside = ((q >= 0) & (q < shape)).all(axis=1)
    q = np.clip(q, 0, shape - 1)
    w = d[q[:, 0], q[:, 1], q[:, 2]].astype(np.float64)
    if method == "centroid":
        w = np.where(inside & (w > 0.0), w, 0.0)
        weight += w
        for a in range(3):
            sums[0, a] += w * o[a]
    else:
        w = np.where(inside, np.log(_at_least_tiny(w)), 0.0)
        for a in range(3):
            sums[a, o[a] + 1] += w


def _refine(d: np.ndarray, vox: np.ndarray, method: str) -> np.ndarray:
    """Sub-voxel coordinates (float64 (N, 3)) of the maxima ``vox`` by ``method`` (:data:`REFINE_METHODS`)."""
    vox = np.asarray(vox, np.int64).reshape(-1, 3)
    out = vox.astype(np.float64)
    if method == "none" or vox.shape[0] == 0:
        return out
    shape = np.array(d.shape, np.int64)
    interior = (vox >= 1) & (vox + 1 < shape)  # per axis: both neighbours inside
    if method in ("gaussian", "parabolic"):
        v0 = d[vox[:, 0], vox[:, 1], vox[:, 2]].astype(np.float64)
        for a in range(3):
            inside = interior[:, a]
            if not inside.any():
                continue
            step = np.zeros(3, np.int64)
            step[a] = 1
            lo, hi = vox[inside] - step, vox[inside] + step
            vm = d[lo[:, 0], lo[:, 1], lo[:, 2]].astype(np.float64)
            vp = d[hi[:, 0], hi[:, 1], hi[:, 2]].astype(np.float64)
            out[inside, a] += _three_point(vm, v0[inside], vp, method == "gaussian")
        return out
    weight = np.zeros(vox.shape[0])
    sums = np.zeros((3, 3, vox.shape[0]))  # centroid: weighted offsets in row 0; lsq: [axis, plane]
    for o in _WINDOW:  # accumulated in raster order, one neighbour at a time
        with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN maps: not finite, offset 0
            _accumulate(d, vox + o, o, shape, method, weight, sums)
    for a in range(3):
        if method == "centroid":
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                off = sums[0, a] / weight
            good = interior[:, a] & (weight > 0.0) & np.isfinite(weight) & np.isfinite(off)
            out[:, a] += np.where(good, np.clip(off, -0.5, 0.5), 0.0)
        else:
            out[:, a] += np.where(interior[:, a], _three_point(sums[a, 0], sums[a, 1], sums[a, 2], False), 0.0)
    return out


# ----------------------------------------------------------------------------------------------- kernels (numba)

_JITTED: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    """The numba-compiled kernel ``name`` of this module: numba is imported, and the kernel compiled or loaded
    from numba's cache, on first need."""
    kernel = _JITTED.get(name)
    if kernel is None:
        from numba import njit

        kernel = _JITTED[name] = njit(cache=True)(globals()[name])
    return kernel


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
    """Keep mask of the candidates: :func:`_resolve_plateaus`, compiled only for a map that has a plateau
    candidate (most have none)."""
    if not (flag == 2).any():
        return flag == 1
    return _kernel("_resolve_plateaus")(d, lin, flag)


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
    if refine not in REFINE_METHODS:
        raise ValueError(f"refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold is NaN")
    md = _min_distance(min_distance)
    if arr.size == 0:
        return _empty()
    d = np.ascontiguousarray(arr, dtype=np.float32)

    lin, flag = _candidates(d, thr)
    lin = lin[_plateau_keep(d, lin, flag)]
    if lin.size == 0:
        return _empty()
    vox = np.stack(np.unravel_index(lin, d.shape), axis=1).astype(np.int64, copy=False)
    keep = suppress(vox, d.ravel()[lin], tuple(md))  # best first, ties in raster order
    vox = np.ascontiguousarray(vox[keep])
    scores = d.ravel()[lin[keep]]
    coords = _refine(d, vox, refine)
    return Peaks(coords, vox, scores)


def find_candidates(
    density: np.ndarray,
    threshold: float,
    refine: str = "gaussian",
    core: Sequence[slice] | None = None,
    open_faces: Sequence[tuple[bool, bool]] = ((False, False),) * 3,
    seed_level: float | None = None,
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
    seed_level : float or None, optional
        Also give the refined maxima of the whole block above this (``seeds``): what a second call with this
        threshold and no core would give, found in the same pass over the map.

    Returns
    -------
    Candidates
        ``coords``, ``voxels`` (block coordinates) and ``scores`` of the core's maxima in raster order,
        ``unresolved``, and ``seeds`` when ``seed_level`` is given.

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
    if refine not in REFINE_METHODS:
        raise ValueError(f"refine must be one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold is NaN")
    none = np.zeros((0, 3), np.float64)
    empty = Candidates(none, np.zeros((0, 3), np.int64), np.zeros(0, np.float32), False,
                       None if seed_level is None else none)
    if arr.size == 0:
        return empty
    d = np.ascontiguousarray(arr, dtype=np.float32)
    core = tuple(slice(0, n) for n in d.shape) if core is None else tuple(core)
    lo = np.array([c.indices(n)[0] for c, n in zip(core, d.shape)], np.int64)
    hi = np.array([c.indices(n)[1] for c, n in zip(core, d.shape)], np.int64)

    # Whether a voxel is a maximum, and which voxel of a plateau is kept, do not depend on the threshold (a
    # plateau is all above one or not at all): one pass at the lower level serves both levels.
    lowest = thr if seed_level is None else min(thr, float(seed_level))
    lin, flag = _candidates(d, lowest)
    values = d.ravel()[lin]
    above = _above(values, thr) if lowest < thr else np.ones(lin.size, bool)
    vox = np.stack(np.unravel_index(lin, d.shape), axis=1).astype(np.int64, copy=False)
    in_core = ((vox >= lo) & (vox < hi)).all(axis=1)
    unresolved = False
    plateaus = lin[in_core & above & (flag == 2)]
    if plateaus.size and any(o for pair in open_faces for o in pair):
        open_lo = np.array([bool(p[0]) for p in open_faces])
        open_hi = np.array([bool(p[1]) for p in open_faces])
        unresolved = bool(_kernel("_plateau_open")(d, plateaus, open_lo, open_hi))
    maxima = _plateau_keep(d, lin, flag)
    keep = maxima & in_core & above
    seeded = None if seed_level is None else maxima & _above(values, float(seed_level))
    wanted = keep if seeded is None else keep | seeded
    if not wanted.any():
        return empty._replace(unresolved=unresolved)
    coords = _refine(d, np.ascontiguousarray(vox[wanted]), refine)  # per voxel: the union, then each part
    seeds = None if seeded is None else coords[seeded[wanted]]
    return Candidates(coords[keep[wanted]], np.ascontiguousarray(vox[keep]), values[keep], unresolved, seeds)


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
    keep = _kernel("_suppress_cells")(v, md, cell, -(-extent // cell))
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
