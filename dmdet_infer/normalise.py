"""Input normalisation, exactly as the model was trained (``dmdet.normalisation``).

Methods:

- ``local_median_mad`` (models since 2026-11-30): ``(x - b) / s`` where the background ``b`` and the noise ``s``
  are local. The volume is cut into blocks of ``block`` voxels (z, y, x) on a grid anchored at the volume's
  origin; each block gets its median and 1.4826 x its median absolute deviation, and both are interpolated
  (trilinearly, between block centres, constant beyond the outer centres) to every voxel. A spot then looks the
  same to the network under an illumination gradient, on a cell, or beside bright blobs elsewhere in the stack.
  Each voxel's statistics depend only on the blocks around it, so a tile normalised with :meth:`Stats.apply`
  equals the same part of the whole normalised volume. Blocks whose MAD is 0, or with more than half their voxels
  at the volume's lowest or highest value (clipped or saturated background, 8-bit data: the MAD breaks down),
  take the median noise of the other blocks.
- ``median_mad``: one median and MAD for the whole volume (the paper's models up to 2026-11-26).
- ``percentile``: the ``low`` and ``high`` percentiles of the whole volume map to 0 and 1.

Statistics are computed in float64 for 32- and 64-bit inputs, so a large offset (e.g. uint32 + 1e8) does not
eat the signal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import parallel

MAD_TO_SD = 1.4826
MAX_SAMPLES = 1 << 22
METHODS = ("local_median_mad", "median_mad", "percentile")
DEFAULT_BLOCK = (8, 32, 32)


def sample(volume, max_samples: int | None = None) -> np.ndarray:
    """The whole volume when it has at most ``max_samples`` (default :data:`MAX_SAMPLES`) voxels, else a strided
    subvolume of at most that many: every k-th plane first (then rows, then columns), so a memmap or chunked file
    is read in a few contiguous pieces and memory stays bounded."""
    if max_samples is None:
        max_samples = MAX_SAMPLES
    if int(np.prod(volume.shape)) <= max_samples:
        return np.asarray(volume)
    steps = [1, 1, 1]
    for axis in range(3):
        rest = int(np.prod([-(-n // s) for n, s in zip(volume.shape, steps)]))
        if rest <= max_samples:
            break
        per_step = rest // (-(-volume.shape[axis] // steps[axis]))  # voxels in one index along this axis
        keep = max(1, max_samples // max(per_step, 1))
        steps[axis] = -(-volume.shape[axis] // keep)
    return np.asarray(volume[tuple(slice(None, None, s) for s in steps)])


def _zyx(sizes: Iterable[int]) -> tuple[int, int, int]:
    """Three sizes (z, y, x) as a tuple of three."""
    z, y, x = sizes
    return z, y, x


def work_dtype(dtype: np.dtype) -> type:
    """float64 for inputs whose values float32 cannot hold exactly (32/64-bit integers and floats), else float32."""
    dtype = np.dtype(dtype)
    return np.float64 if dtype.itemsize >= 4 and dtype != np.float32 else np.float32


class Normaliser(Protocol):
    """What the tiled pipeline needs of a volume's normalisation: :class:`Stats`, or statistics standing in for
    them (the detector's negated decoy stack)."""

    @property
    def constant(self) -> bool: ...

    def apply(self, block: np.ndarray, region: tuple[slice, slice, slice] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class Stats:
    """Normalisation statistics of one volume: background ``offset`` and noise ``scale`` on a coarse grid of
    blocks of ``block`` voxels (one block for the whole-volume methods). ``constant``: nothing to detect."""

    offset: np.ndarray
    scale: np.ndarray
    block: tuple[int, int, int]
    shape: tuple[int, int, int]
    #: threads that :meth:`apply` normalises planes in (:func:`dmdet_infer.parallel.workers`; same numbers)
    threads: int | None = field(default=None, compare=False)

    @property
    def constant(self) -> bool:
        return not bool(np.any(self.scale > 0))

    def _region(self, region):
        return tuple(slice(0, n) for n in self.shape) if region is None else region

    def apply(self, block: np.ndarray, region: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """``(block - b) / s`` as float32 for the voxels of ``region`` (default: the whole volume)."""
        block = np.asarray(block)
        dtype = work_dtype(block.dtype)
        with np.errstate(over="ignore", under="ignore"):  # a huge dynamic range is clipped, not warned about
            if self.offset.size == 1:  # whole-volume statistics
                out = np.asarray(block, dtype) - dtype(self.offset.flat[0])
                scale = float(self.scale.flat[0])
                if np.isfinite(dtype(1.0 / scale)):
                    out *= dtype(1.0 / scale)
                else:  # a noise level so small that its inverse overflows
                    out /= dtype(scale)
                return _clipped(out).astype(np.float32, copy=False)
            region = self._region(region)
            out = np.empty(block.shape, np.float32)
            grids = _grids(self.offset, self.scale, region, self.shape, self.block, dtype)

            def normalised(k: int) -> None:
                b, s = _plane(grids, k, dtype)
                target = out[k]  # float32 work: computed in place there (no temporary plane)
                plane = np.subtract(block[k], b, out=target if dtype is np.float32 else None, dtype=dtype)
                plane /= s
                _clipped(plane)
                if plane is not target:
                    target[...] = plane

            parallel.each(normalised, range(block.shape[0]), self.threads)
        return out


#: Normalised values are clipped to ±this many noise levels: beyond any real spot (a saturated 16-bit spot on a
#: noise of 1 is 6.5e4) and finite in float32 through the network whatever the input's dynamic range (a float
#: stack with a noise of 1e-25 and a hot voxel of 1e5 overflowed to inf). A single voxel at 1e6 gives no spot with
#: the shipped model; at 1e8 it gave 25 false ones.
MAX_NORMALISED = 1e6


def _clipped(values: np.ndarray) -> np.ndarray:
    """``values`` (owned by the caller) clipped in place to ±:data:`MAX_NORMALISED`."""
    return np.clip(values, -MAX_NORMALISED, MAX_NORMALISED, out=values)


def _centres(n: int, b: int) -> np.ndarray:
    starts = np.arange(0, n, b)
    return starts + (np.minimum(b, n - starts) - 1) / 2.0


def _weights(r: slice, n: int, b: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower block index and weight of the upper one for each position of ``r`` (linear between centres)."""
    if nb == 1:
        return np.zeros(r.stop - r.start, np.int64), np.zeros(r.stop - r.start)
    f = np.interp(np.arange(r.start, r.stop), _centres(n, b), np.arange(nb, dtype=np.float64))
    i0 = np.minimum(np.floor(f).astype(np.int64), nb - 2)
    return i0, f - i0


def interpolate_along(coarse: np.ndarray, axis: int, i0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Linear interpolation along ``axis``: ``coarse[i0] + (coarse[i0 + 1] - coarse[i0]) * w`` (a single sample
    is repeated)."""
    if coarse.shape[axis] == 1:
        return np.repeat(coarse, len(i0), axis=axis)
    view = [1] * coarse.ndim
    view[axis] = -1
    out = np.take(coarse, i0 + 1, axis=axis)  # hi, then (hi - lo) * w + lo in place: two arrays, not five
    lo = np.take(coarse, i0, axis=axis)
    out -= lo
    out *= w.reshape(view)
    out += lo
    return out


def _grids(offset: np.ndarray, scale: np.ndarray, region, shape, block, dtype):
    """The block grids interpolated in y and x to ``region`` (each block row's planes, in ``dtype``), and the
    lower block row and weight of each z-plane: what :func:`_plane` needs."""
    both = np.stack([offset, scale])
    for axis in (2, 1):
        weights = _weights(region[axis], shape[axis], block[axis], both.shape[axis + 1])
        both = interpolate_along(both, axis + 1, *weights)
    both = both.astype(dtype)
    return both, *_weights(region[0], shape[0], block[0], both.shape[1])


def _plane(grids, k: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(background, noise) of the ``k``-th z-plane of the region of ``grids`` (:func:`_grids`), in ``dtype``."""
    both, i0, w = grids
    i, wk = i0[k], w[k]
    if wk == 0.0:
        return both[0, i], both[1, i]
    mid = both[:, i + 1] - both[:, i]  # lo + (hi - lo) * w, in one array of our own
    mid *= dtype(wk)
    mid += both[:, i]
    return mid[0], mid[1]


def _planes(offset: np.ndarray, scale: np.ndarray, region, shape, block, dtype):
    """(background, noise) of each z-plane of ``region`` in ``dtype``: the block grids interpolated trilinearly
    (constant beyond the outer centres), in y and x once per block row and in z plane by plane."""
    grids = _grids(offset, scale, region, shape, block, dtype)
    for k in range(len(grids[1])):
        yield _plane(grids, k, dtype)


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """``numpy.median(rows, axis=1)`` (float64), partitioning ``rows`` (our own array) in place: one
    partition at the middle and the maximum of the lower half, where numpy's median partitions at two or three
    places (NaN: NaN, as numpy's)."""
    n = rows.shape[1]
    h = n // 2
    rows.partition(h, axis=1)
    hi = rows[:, h]
    if n % 2:
        out = hi.astype(np.float64)
    elif rows.dtype.kind == "f":  # numpy's mean of the two middle values, in their precision
        out = ((rows[:, :h].max(axis=1) + hi) / rows.dtype.type(2)).astype(np.float64)
    else:
        out = (rows[:, :h].max(axis=1).astype(np.float64) + hi) / 2.0
    if rows.dtype.kind == "f":
        out[np.isnan(rows[:, h:].max(axis=1))] = np.nan  # NaN sorts last
    return out


def _medians(slab: np.ndarray, bx: int) -> np.ndarray:
    """The median of each x-block of a slab (one row of blocks). ``slab`` is left as it is (it may be the
    caller's volume): the blocks are gathered into arrays of our own, partitioned in place."""
    dz, dy, x = slab.shape
    nfull = x // bx
    out = np.empty(-(-x // bx), np.float64)
    parts = []
    if nfull:
        parts.append((slice(0, nfull),
                      slab[:, :, :nfull * bx].reshape(dz, dy, nfull, bx).transpose(2, 0, 1, 3).reshape(nfull, -1)))
    if nfull * bx < x:
        parts.append((slice(nfull, nfull + 1), slab[:, :, nfull * bx:].reshape(1, -1)))
    for where, rows in parts:
        out[where] = _row_medians(rows.copy() if np.may_share_memory(rows, slab) else rows)
    return out


def _per_block(volume, block, shape, fn, dtype, threads: int | None = None) -> np.ndarray:
    """Medians of ``fn(voxels, region)`` in every block, read one row of blocks at a time (rows in ``threads``
    threads, :func:`dmdet_infer.parallel.workers`: numpy's median releases the GIL; the same numbers in any
    number of threads)."""
    bz, by, bx = block
    nb = tuple(-(-n // b) for n, b in zip(shape, block))
    out = np.empty(nb, np.float64)

    def row(index: tuple[int, int]) -> None:
        iz, iy = index
        z0, y0 = iz * bz, iy * by
        region = (slice(z0, min(z0 + bz, shape[0])), slice(y0, min(y0 + by, shape[1])), slice(0, shape[2]))
        out[iz, iy] = _medians(fn(np.asarray(volume[region], dtype), region), bx)

    parallel.each(row, [(iz, iy) for iz in range(nb[0]) for iy in range(nb[1])], threads)
    return out


def local_stats(volume, block: tuple[int, int, int] = DEFAULT_BLOCK, threads: int | None = None) -> Stats:
    """Local normalisation statistics (``local_median_mad``): block medians, then each block's noise.

    The background of each block is its median; its noise is 1.4826 x the median absolute deviation from the
    interpolated background (so a gradient within a block does not count as noise). Zero-noise blocks, and
    blocks with more than half their voxels at the volume's lowest or highest value (:func:`clipped_blocks`),
    take the median noise of the others (all zero: a constant volume). The volume is read one row of blocks at
    a time.

    Parameters
    ----------
    volume : array_like
        The ZYX volume: any 3D array numpy can slice (a memmap, a lazy array).
    block : tuple of 3 ints, optional
        Block size in voxels (z, y, x), on a grid anchored at the volume's origin; each is clipped to the
        volume's size. Default :data:`DEFAULT_BLOCK`.
    threads : int or None, optional
        Threads that take the medians (:func:`dmdet_infer.parallel.workers`); the statistics do not depend on
        it.

    Returns
    -------
    Stats
        ``offset`` (background) and ``scale`` (noise) per block; :meth:`Stats.apply` interpolates them to every
        voxel. ``constant`` when no block has noise.

    See Also
    --------
    stats : the statistics for a model's ``dmdet.normalisation`` entry.

    Examples
    --------
    A background of 100 with a noise of 3, in blocks of 8 x 32 x 32 voxels:

    >>> import numpy as np
    >>> volume = 100 + np.random.default_rng(0).normal(0, 3, (16, 64, 64))
    >>> s = local_stats(volume, (8, 32, 32))
    >>> s.offset.shape, np.allclose(s.offset, 100, atol=0.5), np.allclose(s.scale, 3, rtol=0.1), s.constant
    ((2, 2, 2), True, True, False)

    A tile normalised alone equals the same part of the whole normalised volume:

    >>> tile = (slice(0, 16), slice(10, 30), slice(20, 40))
    >>> np.array_equal(s.apply(volume[tile], tile), s.apply(volume)[tile])
    True
    """
    shape = _zyx(int(n) for n in volume.shape)
    block = _zyx(int(max(1, min(b, n))) for b, n in zip(block, shape))
    dtype = work_dtype(volume.dtype)
    # Medians of 8- and 16-bit integers are the same taken on the integers (half the bytes to partition): the
    # mean of the two middle values is exact in float32 as in float64.
    exact = volume.dtype.kind in "ui" and volume.dtype.itemsize <= 2
    offset = _per_block(volume, block, shape, lambda v, r: v, volume.dtype if exact else dtype, threads)
    unit = np.ones_like(offset)

    def deviation(v: np.ndarray, r) -> np.ndarray:
        out = np.empty_like(v)  # v may be a view of the caller's array
        for k, (b, _) in enumerate(_planes(offset, unit, r, shape, block, dtype)):
            np.abs(v[k] - b, out=out[k])
        return out

    scale = MAD_TO_SD * _per_block(volume, block, shape, deviation, dtype, threads)
    measured = (scale > 0) & ~clipped_blocks(volume, block, shape, offset.shape, threads)
    if not measured.any():  # every block clipped: their own deviations are all there is
        measured = scale > 0
    scale = np.where(measured, scale, float(np.median(scale[measured])) if measured.any() else 0.0)
    return Stats(offset, scale, block, shape, threads)


def clipped_blocks(volume, block: tuple[int, int, int], shape: tuple[int, int, int],
                   grid: tuple[int, ...], threads: int | None = None) -> np.ndarray:
    """Blocks (a ``grid`` of them) with more than half their voxels at the volume's lowest or highest value: a
    background clipped at 0 (8-bit data) or saturated. The median absolute deviation breaks down at one half, so
    theirs measures the interpolated background's offset, not the noise (it came out 0.0004-1.1 grey levels
    where the noise is about 2.5), and a stray photon there would be thousands of noise units."""
    values = sample(volume)
    lo, hi = values.min(), values.max()
    at_ends = np.count_nonzero((values == lo) | (values == hi)) / max(values.size, 1)
    if lo == hi or at_ends * int(np.prod(grid)) < 0.25:  # too few such voxels to fill half of any block
        return np.zeros(grid, bool)
    dtype = work_dtype(volume.dtype)
    ends = _per_block(volume, block, shape, lambda v, r: ((v <= lo) | (v >= hi)).astype(dtype), dtype, threads)
    return ends > 0.5


def global_stats(volume, spec: dict[str, Any]) -> Stats:
    """One (offset, scale) for the whole volume (``median_mad`` or ``percentile``)."""
    values = np.asarray(sample(volume), dtype=np.float64).reshape(-1)
    method = spec["method"]
    if method == "median_mad":
        offset = float(np.median(values))
        scale = MAD_TO_SD * float(np.median(np.abs(values - offset)))
        if scale == 0.0:  # mostly constant (e.g. clipped or noise-free): fall back to the standard deviation
            scale = float(values.std())
    elif method == "percentile":
        low, high = np.percentile(values, [spec.get("low", 1.0), spec.get("high", 99.8)])
        offset, scale = float(low), float(high - low)
        if scale == 0.0:
            scale = float(values.max() - low)
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    shape = tuple(int(n) for n in volume.shape)
    return Stats(np.full((1, 1, 1), offset), np.full((1, 1, 1), scale), shape, shape)  # type: ignore[arg-type]


def correlation(normalised: np.ndarray, lag: int = 2) -> float:
    """Spatial correlation of a normalised stack's background at ``lag`` voxels in y and x (0 for white noise).

    Values are clipped to [-3, 3] so that bright spots weigh little; sparse spots, even faint ones at the
    challenge's highest density, add a few hundredths, tissue texture, cells or clipped backgrounds tenths."""
    x = np.clip(np.asarray(normalised, np.float32), -3.0, 3.0)
    x = x - x.mean()
    var = float(np.mean(x * x))
    if var <= 0 or min(x.shape[1:]) <= lag:
        return 0.0
    ry = float(np.mean(x[:, lag:, :] * x[:, :-lag, :]))
    rx = float(np.mean(x[:, :, lag:] * x[:, :, :-lag]))
    return 0.5 * (rx + ry) / var


def check_spec(spec: Any) -> None:
    """Raise ValueError when a ``dmdet.normalisation`` entry is malformed."""
    method = spec.get("method") if isinstance(spec, dict) else None
    if method not in METHODS:
        raise ValueError(f"dmdet.normalisation.method must be one of {METHODS}, got {method!r}")
    if method == "local_median_mad":
        block = spec.get("block", DEFAULT_BLOCK)
        if (not isinstance(block, (list, tuple)) or len(block) != 3
                or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block)):
            raise ValueError(f"dmdet.normalisation.block must be three positive integers (z, y, x), got {block!r}")
    if method == "percentile":
        low, high = spec.get("low", 1.0), spec.get("high", 99.8)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) \
                or not 0.0 <= low < high <= 100.0:
            raise ValueError(f"dmdet.normalisation low and high must be percentiles with 0 <= low < high <= 100, got "
                             f"{low!r} and {high!r}")


def stats(volume, spec: dict[str, Any], threads: int | None = None) -> Stats:
    """The normalisation statistics of a whole volume for the model's ``spec`` (``dmdet.normalisation``).

    Parameters
    ----------
    volume : array_like
        The ZYX volume (any 3D array numpy can slice).
    spec : dict
        ``{"method": "local_median_mad", "block": [z, y, x]}`` (block default :data:`DEFAULT_BLOCK`; see
        :func:`local_stats`), ``{"method": "median_mad"}`` (one median and MAD for the whole volume; the standard
        deviation when the MAD is 0) or ``{"method": "percentile", "low": 1.0, "high": 99.8}`` (the ``low`` and
        ``high`` percentiles map to 0 and 1). Whole-volume methods look at a strided sample of at most
        :data:`MAX_SAMPLES` voxels.
    threads : int or None, optional
        Threads for the local statistics (:func:`dmdet_infer.parallel.workers`).

    Returns
    -------
    Stats
        The volume's ``offset`` and ``scale``; ``Stats.apply(block, region)`` normalises any part of it.

    Raises
    ------
    ValueError
        For an unknown method.

    Examples
    --------
    >>> import numpy as np
    >>> volume = 100 + np.random.default_rng(0).normal(0, 3, (16, 64, 64))
    >>> s = stats(volume, {"method": "median_mad"})
    >>> s.offset.size, round(float(s.offset[0, 0, 0])), round(float(s.scale[0, 0, 0]))
    (1, 100, 3)
    >>> s = stats(volume, {"method": "local_median_mad", "block": [8, 32, 32]})
    >>> s.block, s.offset.shape
    ((8, 32, 32), (2, 2, 2))
    """
    if spec["method"] == "local_median_mad":
        return local_stats(volume, tuple(spec.get("block", DEFAULT_BLOCK)), threads)
    return global_stats(volume, spec)


def normalisation_stats(volume: np.ndarray, spec: dict[str, Any]) -> tuple[float, float]:
    """(offset, scale) of a whole-volume method, such that ``(volume - offset) / scale`` is the network's input."""
    s = global_stats(volume, spec)
    return float(s.offset.flat[0]), float(s.scale.flat[0])


def apply(block: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """``(block - offset) / scale`` as float32."""
    out = np.asarray(block, dtype=np.float32) - np.float32(offset)
    out *= np.float32(1.0 / scale)
    return out


def normalise(volume: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Normalise a whole volume (training and small inputs), as the model was trained.

    Parameters
    ----------
    volume : numpy.ndarray
        The ZYX volume.
    spec : dict
        The model's ``dmdet.normalisation`` entry (see :func:`stats`).

    Returns
    -------
    numpy.ndarray
        ``(volume - background) / noise`` as float32, the same shape as ``volume``, clipped to
        ±:data:`MAX_NORMALISED`; zeros for a constant volume.

    Examples
    --------
    >>> import numpy as np
    >>> volume = 100 + np.random.default_rng(0).normal(0, 3, (16, 64, 64))
    >>> n = normalise(volume, {"method": "local_median_mad", "block": [8, 32, 32]})
    >>> n.dtype, n.shape, abs(float(np.median(n))) < 0.05, round(float(n.std()), 1)
    (dtype('float32'), (16, 64, 64), True, 1.0)
    >>> float(np.abs(normalise(np.full((4, 8, 8), 7.0), {"method": "median_mad"})).max())
    0.0
    """
    s = stats(volume, spec)
    if s.constant:
        return np.zeros(volume.shape, np.float32)
    return s.apply(volume)
