"""Zarr and OME-Zarr (OME-NGFF 0.4 / 0.5) input, read lazily chunk by chunk (extra ``dmdet[zarr]``).

A ``.zarr`` folder holds either one array (axes from its number of dimensions, or ``--axes``) or an OME-Zarr
image group: ``multiscales[0]`` gives the axes (``t``, ``c``, ``z``, ``y``, ``x``), the arrays of the pyramid
(``level`` 0 is full resolution) and the voxel size (``scale`` transformations, in the axes' units).
:class:`LazyArray` presents the data as TZYX without reading it: an integer index gives another lazy view, any
slice reads just the chunks it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, where
from .io import Stack, _check_axes, _check_dtype, _check_voxel_size, _unit_factor, normalise_axes, read_stack
from .lazy import LazyArray, tzyx_view

__all__ = ["LazyArray", "is_zarr", "read_input", "read_zarr"]

_OME_AXES = {"t": "T", "time": "T", "c": "C", "channel": "C", "z": "Z", "y": "Y", "x": "X"}


def read_input(path: str | os.PathLike, channel: int | None = None, axes: str | None = None,
               level: int = 0) -> Stack:
    """A Zarr store with :func:`read_zarr`, anything else with :func:`dmdet_infer.io.read_stack`."""
    if is_zarr(path):
        return read_zarr(path, channel, axes, level)
    return read_stack(path, channel=channel, axes=axes)


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Zarr store (a ``*.zarr`` folder or one with Zarr metadata)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return p.suffix.lower() == ".zarr" or any((p / f).exists() for f in ("zarr.json", ".zarray", ".zgroup"))


class _Settled:
    """A zarr array whose failed reads leave nothing running: when one chunk of a read is damaged, zarr gives up on
    the others, which Python would then report at exit ("Task was destroyed but it is pending!", "Task exception
    was never retrieved", "coroutine ... was never awaited") after our one-line error. They are let finish here."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.array[key]
        except Exception:
            _settle()
            raise


def _settle(timeout: float = 10.0) -> None:
    """Wait for the reads still running on zarr's I/O loop and collect their errors."""
    try:
        from zarr.core import sync

        loop = sync.loop[0]
    except (ImportError, AttributeError, IndexError):  # another zarr: nothing to settle
        return
    if loop is None or loop.is_closed():
        return

    async def drain() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: not reported at exit

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 1)


def _open(path: Path):
    try:
        import zarr
    except ImportError:
        raise InputError(where(path, "reading Zarr needs the zarr package; install it with "
                                     "`pip install 'dmdet[zarr]'`")) from None
    try:
        return zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several kinds for a broken store
        raise InputError(where(path, f"not a readable Zarr store ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:160]})")) from None


def _multiscales(attrs: dict) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return attrs.get("multiscales")


def _scale(transforms: Any) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            return [float(v) for v in t["scale"]]
    return None


def _ome(group, path: Path, level: int) -> tuple[Any, str, tuple[float, float, float] | None]:
    """(array, axes in tifffile letters, voxel size in µm or None) of one pyramid level of an OME-Zarr image.

    Malformed multiscales metadata is refused in one line; a malformed scale only drops the voxel size (as TIFF
    metadata does)."""
    multiscales = _multiscales(dict(group.attrs))
    if not multiscales:
        names = sorted(group.array_keys()) if hasattr(group, "array_keys") else []
        hint = f"; arrays in it: {', '.join(names)} (give e.g. {path / names[0]})" if names else ""
        raise InputError(where(path, f"Zarr group without OME multiscales metadata{hint}"))
    try:
        array, raw_axes, ms, dataset = _level(group, multiscales, path, level)
        names = [a["name"] if isinstance(a, dict) else a for a in raw_axes]
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"axis names must be text, got {names!r}")
    except InputError:
        raise
    except Exception as exc:  # KeyError, TypeError, ValueError... from a hand-made or damaged .zattrs / zarr.json
        raise InputError(where(path, f"broken OME-Zarr metadata ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:160]}); fix it, or give the array itself "
                                     "(e.g. IMAGE.zarr/0) with axes=")) from None
    units = [a.get("unit") if isinstance(a, dict) else None for a in raw_axes]
    letters = []
    for name in names:
        letter = _OME_AXES.get(name.lower())
        if letter is None:
            raise InputError(where(path, f"OME axis {name!r} is not one of t, c, z, y, x; pass axes="))
        letters.append(letter)
    try:
        voxel = _voxel(dataset, ms, letters, units)
    except Exception:  # metadata is a bonus: never fail a read because of it (as for TIFF)
        voxel = None
    return array, "".join(letters), voxel


def _level(group, multiscales: Any, path: Path, level: int) -> tuple[Any, list, dict, dict]:
    """(array, axes entries, multiscales[0], dataset) of ``level``; TypeError/KeyError when malformed."""
    if not isinstance(multiscales, list) or not isinstance(multiscales[0], dict):
        raise TypeError(f"multiscales must be a list of objects, got {type(multiscales).__name__}")
    ms = multiscales[0]
    datasets = ms.get("datasets", [])
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise TypeError(f"multiscales datasets must be a list of objects, got {datasets!r:.60}")
    if not 0 <= level < len(datasets):
        raise InputError(where(path, f"level={level} is out of range: the image has {len(datasets)} "
                                     f"resolution level(s) (0..{len(datasets) - 1})"))
    dataset = datasets[level]
    key = dataset.get("path")
    if not isinstance(key, str):
        raise TypeError(f"dataset {level} needs a path (text), got {key!r}")
    try:
        array = group[key]
    except KeyError:
        raise InputError(where(path, f"multiscales dataset {key!r} is missing")) from None
    if not hasattr(array, "shape"):
        raise TypeError(f"dataset path {key!r} is a group, not an array")
    ndim = len(array.shape)
    raw_axes = ms.get("axes") or (list("tczyx"[5 - ndim:]) if ndim <= 5 else [])
    if not isinstance(raw_axes, list):
        raise TypeError(f"multiscales axes must be a list, got {raw_axes!r:.60}")
    return array, raw_axes, ms, dataset


def _voxel(dataset: dict, ms: dict, letters: list[str], units: list) -> tuple[float, float, float] | None:
    scale = _scale(dataset.get("coordinateTransformations"))
    overall = _scale(ms.get("coordinateTransformations"))
    if scale is None or len(scale) != len(letters) or not all(a in letters for a in "ZYX"):
        return None
    if overall is not None and len(overall) == len(scale):
        scale = [s * o for s, o in zip(scale, overall)]
    sizes = []
    for a in "ZYX":
        i = letters.index(a)
        factor = _unit_factor(units[i]) if units[i] is not None else None
        if factor is None:
            return None
        sizes.append(scale[i] * factor)
    return _check_voxel_size(sizes)


def read_zarr(path: str | os.PathLike, channel: int | None = None, axes: str | None = None,
              level: int = 0) -> Stack:
    """A Zarr array or OME-Zarr image as a lazy TZYX :class:`Stack` (``data`` is a :class:`LazyArray`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(where(path, "file not found; check the path"))
    node = _open(path)
    voxel = None
    if hasattr(node, "shape"):
        array = node
        file_axes = {3: "ZYX", 4: "TZYX", 5: "TCZYX"}.get(len(array.shape), "")
    else:
        array, file_axes, voxel = _ome(node, path, level)
    shape = tuple(int(n) for n in array.shape)
    if axes is not None:
        file_axes = _check_axes(axes, len(shape), path)
    elif len(file_axes) != len(shape):
        raise InputError(where(path, f"cannot tell the axes of a {len(shape)}D Zarr array (shape {shape}); pass "
                                     "axes=, e.g. axes='TZYX'"))
    _check_dtype(np.dtype(array.dtype), path)
    # The same rules (and one-line errors) as TIFF input, worked out on a zero-size stand-in.
    probe = np.broadcast_to(np.zeros((), np.uint8), shape)
    normalise_axes(probe, file_axes, channel, path)
    data, has_time = tzyx_view(_Settled(array), file_axes, channel, path)
    return Stack(data, file_axes, voxel, path, has_time)  # type: ignore[arg-type]
