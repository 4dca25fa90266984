"""How many voxels one tile may hold: from free RAM (or free GPU memory on CUDA) and the network's width.

The network's working memory grows with the voxels of a tile, at roughly ``BYTES_PER_VOXEL_PER_CHANNEL`` bytes per
first-level channel (measured with ONNX Runtime 1.32 on CPU without its memory arena, as dmdet_infer.model runs it:
903 MiB for a 40x484x484 tile of the width-8 network, 101 bytes per voxel, the same for the edge tiles' shapes;
with the arena it was 196 bytes per voxel and grew to 2073 MiB over four tile shapes), plus the raw block, its
normalised copy and the density map. A tile gets a quarter of the memory
available when the detector starts, and at most ``MAX_TILE_BYTES`` unless the caller allows more.
"""

from __future__ import annotations

import ctypes
import os

#: Working bytes per voxel per first-level channel of the network (w8: 101 B/voxel measured; rounded up).
BYTES_PER_VOXEL_PER_CHANNEL = 14
#: Raw block (up to 4 bytes), normalised float32 copy and float32 density map.
BYTES_PER_VOXEL_IO = 12
#: Default cap on one tile's working memory (keeps the whole process under ~3 GB on any machine).
MAX_TILE_BYTES = 2 << 30
#: Fraction of the available memory one tile may use.
FRACTION = 0.25
#: Never plan tiles smaller than this (voxels), however little memory is free.
MIN_TILE_VOXELS = 1 << 20


def proc_bytes(path: str, key: str) -> int | None:
    """A ``key: N kB`` field of a Linux /proc file (e.g. ``/proc/meminfo``, ``MemAvailable``) in bytes, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_ram() -> int | None:
    """Bytes of RAM available to new allocations (``MemAvailable``; None where unknown)."""
    found = proc_bytes("/proc/meminfo", "MemAvailable")
    if found is not None:
        return found
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def free_gpu_memory() -> int | None:
    """Free bytes on the current CUDA device through the CUDA runtime (None when it cannot be queried)."""
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
            return int(free.value)
        return None
    return None


def bytes_per_voxel(width: object) -> int:
    """Estimated peak working bytes per tile voxel for a network of first-level ``width`` (16 when unknown, and
    when the model's free-form config says something that is no width: text, zero, negative, absurdly large)."""
    if isinstance(width, (int, float)) and not isinstance(width, bool) and 1 <= width <= 4096:
        channels = int(width)
    else:
        channels = 16
    return BYTES_PER_VOXEL_PER_CHANNEL * channels + BYTES_PER_VOXEL_IO


def tile_voxels(width: object, on_cuda: bool = False, max_bytes: float | None = None) -> int:
    """Voxel budget of one tile (halo included): ``FRACTION`` of the free memory, capped at ``max_bytes``
    (default :data:`MAX_TILE_BYTES`), never below :data:`MIN_TILE_VOXELS`."""
    free = free_gpu_memory() if on_cuda else available_ram()
    cap = MAX_TILE_BYTES if max_bytes is None else int(max_bytes)
    budget = cap if free is None else min(cap, int(FRACTION * free))
    return max(MIN_TILE_VOXELS, budget // bytes_per_voxel(width))
