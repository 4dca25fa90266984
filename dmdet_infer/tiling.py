"""Tiles with halo, padding to the network's stride, and stitching of each tile's core.

Tiles are planned on the volume padded (at the far end, with zeros after normalisation) to a multiple of the
stride; tile origins and sizes are multiples of the stride, so pooling grids line up with whole-volume inference,
and each tile carries at least ``halo`` voxels of real context around its core. For a local network (the exported
models use frozen normalisation statistics) the stitched map then equals the whole-volume map.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Shape3 = tuple[int, int, int]
Region = tuple[slice, slice, slice]


def _region(slices: Iterable[slice]) -> Region:
    """Three slices (z, y, x) as a :data:`Region`."""
    z, y, x = slices
    return z, y, x


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Tile:
    """One block: ``read`` (with halo, in padded-volume coordinates) and ``core`` (kept, in volume coordinates)."""

    read: Region
    core: Region


@functools.lru_cache(maxsize=64)
def auto_tile(shape: Shape3, halo: Shape3, stride: Shape3, max_voxels: int) -> Shape3:
    """The core size whose tiles (halo included) hold at most ``max_voxels`` and read the fewest voxels in all.

    A volume that fits goes through whole. Otherwise every split of z into equal cores is tried, each with the
    largest square y/x core that fits, and the plan reading the fewest voxels (halos re-read) wins.
    """
    padded = [_round_up(s, st) for s, st in zip(shape, stride)]
    if int(np.prod(padded)) <= max_voxels:
        return tuple(padded)  # type: ignore[return-value]
    best: tuple[float, Shape3] | None = None
    min_side = max(4 * max(stride[1], stride[2]), 16)
    for nz in range(1, -(-padded[0] // stride[0]) + 1):
        tz = _round_up(-(-padded[0] // nz), stride[0])
        if best is not None and tz < min(padded[0], 2 * halo[0]) / 4:
            break  # thinner z cores only add halo
        ez = _max_extent(shape[0], tz, halo[0], stride[0])
        side = _round_up(min_side, stride[1])
        while True:  # grow the y/x side while the tile fits
            nxt = side + stride[1]
            if nxt > max(padded[1], padded[2]) or ez * _max_extent(shape[1], nxt, halo[1], stride[1]) * \
                    _max_extent(shape[2], nxt, halo[2], stride[2]) > max_voxels:
                break
            side = nxt
        tile = (tz, _balanced(padded[1], side, stride[1]), _balanced(padded[2], side, stride[2]))
        cost = float(np.prod([_total_read(n, t, h, st) for n, t, h, st in zip(shape, tile, halo, stride)]))
        if best is None or cost < best[0]:
            best = (cost, tile)
    return best[1]  # type: ignore[index]


def _balanced(size: int, t: int, st: int) -> int:
    """Core size no larger than ``t`` that splits ``size`` into equal parts (no thin last core)."""
    n = -(-size // max(t, 1))
    return min(_round_up(-(-size // n), st), size)


def _axis_cores(size: int, t: int) -> list[slice]:
    return [slice(start, min(start + t, size)) for start in range(0, size, t)]


def _extent(core: slice, size: int, h: int, st: int) -> slice:
    """Read window of one core along one axis (see :func:`read_window`)."""
    return slice(max(0, (core.start - h) // st * st), min(_round_up(size, st), _round_up(core.stop + h, st)))


def _max_extent(size: int, t: int, h: int, st: int) -> int:
    return max(e.stop - e.start for e in (_extent(c, size, h, st) for c in _axis_cores(size, t)))


def _total_read(size: int, t: int, h: int, st: int) -> int:
    """Voxels read along one axis by all cores of size ``t`` (plans are Cartesian products of the axes)."""
    return sum(e.stop - e.start for e in (_extent(c, size, h, st) for c in _axis_cores(size, t)))


def work(shape: Sequence[int], tile: Sequence[int], halo: Sequence[int], stride: Sequence[int]) -> int:
    """Voxels the network processes to cover ``shape`` with cores of at most ``tile`` (as :func:`plan` cuts them):
    every tile's read window, halos and padding included. Cheap: no tile list is made."""
    padded = [_round_up(s, st) for s, st in zip(shape, stride)]
    cores = [max(_round_up(min(int(t), p), st), st) for t, p, st in zip(tile, padded, stride)]
    return int(np.prod([_total_read(n, t, h, st) for n, t, h, st in zip(shape, cores, halo, stride)], dtype=float))


def plan(shape: Sequence[int], tile: Sequence[int], halo: Sequence[int], stride: Sequence[int]) -> list[Tile]:
    """Tiles covering ``shape`` with cores of at most ``tile`` voxels (rounded up to the stride)."""
    padded = [_round_up(s, st) for s, st in zip(shape, stride)]
    axes = []
    for size, pad_size, t, st in zip(shape, padded, tile, stride):
        axes.append(_axis_cores(size, max(_round_up(min(int(t), pad_size), st), st)))
    cores = [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]
    return [Tile(read=read_window(core, shape, halo, stride), core=core) for core in cores]


def predict(
    volume: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    prepare: Callable[[np.ndarray, Region], np.ndarray],
    tile: Sequence[int],
    halo: Sequence[int],
    stride: Sequence[int],
) -> np.ndarray:
    """Density map of ``volume`` (Z,Y,X, raw) stitched from tiles.

    ``prepare(block, region)`` turns the raw voxels of ``region`` into network input (normalisation with the
    whole volume's statistics, see :class:`dmdet_infer.normalise.Stats`);
    ``run`` is the network on one padded block.
    """
    out = np.empty(volume.shape, np.float32)
    for t in plan(volume.shape, tile, halo, stride):
        out[t.core] = predict_region(volume, run, prepare, t.core, halo, stride)[0]
    return out


def grow(core: Region, margin: Sequence[int], shape: Sequence[int]) -> Region:
    """``core`` extended by ``margin`` voxels on each side, clipped to the volume."""
    return _region(slice(max(0, c.start - m), min(n, c.stop + m)) for c, m, n in zip(core, margin, shape))


def read_window(region: Region, shape: Sequence[int], halo: Sequence[int], stride: Sequence[int]) -> Region:
    """Stride-aligned block (padded-volume coordinates) holding ``region`` plus ``halo`` of context."""
    return _region(_extent(r, n, h, st) for r, n, h, st in zip(region, shape, halo, stride))


def predict_region(
    volume,
    run: Callable[[np.ndarray], np.ndarray],
    prepare: Callable[[np.ndarray, Region], np.ndarray],
    region: Region,
    halo: Sequence[int],
    stride: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Density map of one ``region`` of ``volume`` (equal to the same part of the whole-volume map), the raw
    voxels of the region, and the network's input there (``prepare`` of them) when it is all of the network's
    input (no halo around the region: a volume that is one tile), else None: keeping the input of a halo's block
    alive beside its map would raise a tile's peak memory, so the caller normalises the region again.
    ``volume`` may be any array that numpy can read slices of (memmap, zarr, dask)."""
    read = read_window(region, volume.shape, halo, stride)
    inside = _region(slice(s.start, min(s.stop, n)) for s, n in zip(read, volume.shape))
    block = np.asarray(volume[inside])
    pad = tuple((0, s.stop - i.stop) for s, i in zip(read, inside))
    x = prepare(block, inside)
    if any(p[1] for p in pad):
        x = np.pad(x, pad)
    local = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, read))
    density, normalised = run(x)[local], x[local]
    return density, block[local], (normalised if normalised.size == x.size else None)

