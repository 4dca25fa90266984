"""Tiles with halo, padding to the network's stride, and stitching of each tile's core.

Tiles are planned on the volume padded (at the far end, with zeros after normalisation) to a multiple of the
stride; tile origins and sizes are multiples of the stride, so pooling grids line up with whole-volume inference,
and each tile carries at least ``halo`` voxels of real context around its core. For a local network (the exported
models use frozen normalisation statistics) the stitched map then equals the whole-volume map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Shape3 = tuple[int, int, int]
Region = tuple[slice, slice, slice]

#: Largest number of voxels sent to the network at once when no tile is given (keeps CPU memory below ~2 GB
#: for a width-16 network; a 10x512x512 stack goes through whole).
DEFAULT_MAX_VOXELS = 12 * 512 * 512


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Tile:
    """One block: ``read`` (with halo, in padded-volume coordinates) and ``core`` (kept, in volume coordinates)."""

    read: Region
    core: Region


def auto_tile(shape: Shape3, halo: Shape3, stride: Shape3, max_voxels: int = DEFAULT_MAX_VOXELS) -> Shape3:
    """The largest core (z whole where possible, then square y/x) whose tile with halo fits ``max_voxels``."""
    padded = [_round_up(s, st) for s, st in zip(shape, stride)]
    if int(np.prod(padded)) <= max_voxels:
        return tuple(padded)
    tz = padded[0] if padded[0] <= 64 else _round_up(32, stride[0])
    zin = min(padded[0], tz + 2 * halo[0])
    side = int(np.sqrt(max_voxels / max(zin, 1))) - 2 * max(halo[1], halo[2])
    side = max(side, 4 * max(stride[1], stride[2]), 16)
    return (tz, _round_up(min(side, padded[1]), stride[1]), _round_up(min(side, padded[2]), stride[2]))


def plan(shape: Shape3, tile: Shape3, halo: Shape3, stride: Shape3) -> list[Tile]:
    """Tiles covering ``shape`` with cores of at most ``tile`` voxels (rounded up to the stride)."""
    padded = [_round_up(s, st) for s, st in zip(shape, stride)]
    axes = []
    for size, pad_size, t, st in zip(shape, padded, tile, stride):
        t = max(_round_up(min(int(t), pad_size), st), st)
        axes.append([slice(start, min(start + t, size)) for start in range(0, size, t)])
    cores = [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]
    return [Tile(read=read_window(core, shape, halo, stride), core=core) for core in cores]


def predict(
    volume: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    prepare: Callable[[np.ndarray], np.ndarray],
    tile: Shape3,
    halo: Shape3,
    stride: Shape3,
) -> np.ndarray:
    """Density map of ``volume`` (Z,Y,X, raw) stitched from tiles.

    ``prepare`` turns a raw block into network input (normalisation with whole-volume statistics);
    ``run`` is the network on one padded block.
    """
    out = np.empty(volume.shape, np.float32)
    for t in plan(volume.shape, tile, halo, stride):
        out[t.core] = predict_region(volume, run, prepare, t.core, halo, stride)[0]
    return out


def grow(core: Region, margin: Shape3, shape: Shape3) -> Region:
    """``core`` extended by ``margin`` voxels on each side, clipped to the volume."""
    return tuple(slice(max(0, c.start - m), min(n, c.stop + m)) for c, m, n in zip(core, margin, shape))


def read_window(region: Region, shape: Shape3, halo: Shape3, stride: Shape3) -> Region:
    """Stride-aligned block (padded-volume coordinates) holding ``region`` plus ``halo`` of context."""
    out = []
    for r, n, h, st in zip(region, shape, halo, stride):
        lo = max(0, (r.start - h) // st * st)
        hi = min(_round_up(n, st), _round_up(r.stop + h, st))
        out.append(slice(lo, hi))
    return tuple(out)


def predict_region(
    volume,
    run: Callable[[np.ndarray], np.ndarray],
    prepare: Callable[[np.ndarray], np.ndarray],
    region: Region,
    halo: Shape3,
    stride: Shape3,
) -> tuple[np.ndarray, np.ndarray]:
    """Density map of one ``region`` of ``volume`` (equal to the same part of the whole-volume map), and the
    raw voxels of the region. ``volume`` may be any array that numpy can read slices of (memmap, zarr, dask)."""
    read = read_window(region, volume.shape, halo, stride)
    inside = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(read, volume.shape))
    block = np.asarray(volume[inside])
    pad = tuple((0, s.stop - i.stop) for s, i in zip(read, inside))
    x = prepare(block)
    if any(p[1] for p in pad):
        x = np.pad(x, pad)
    local = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, read))
    return run(x)[local], block[local]

