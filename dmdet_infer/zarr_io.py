"""Zarr and OME-Zarr (OME-NGFF 0.4 / 0.5) input, read lazily chunk by chunk (extra ``dmdet[zarr]``).

A ``.zarr`` folder holds either one array (axes from its number of dimensions, or ``--axes``) or an OME-Zarr
image group: ``multiscales[0]`` gives the axes (``t``, ``c``, ``z``, ``y``, ``x``), the arrays of the pyramid
(``level`` 0 is full resolution) and the voxel size (``scale`` transformations, in the axes' units).
:class:`LazyArray` presents the data as TZYX without reading it: an integer index gives another lazy view, any
slice reads just the chunks it needs.
"""

from __future__ import annotations

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


def _scale(transforms: list | None) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            return [float(v) for v in t["scale"]]
    return None


def _ome(group, path: Path, level: int) -> tuple[Any, str, tuple[float, float, float] | None]:
    """(array, axes in tifffile letters, voxel size in µm or None) of one pyramid level of an OME-Zarr image."""
    multiscales = _multiscales(dict(group.attrs))
    if not multiscales:
        names = sorted(group.array_keys()) if hasattr(group, "array_keys") else []
        hint = f"; arrays in it: {', '.join(names)} (give e.g. {path / names[0]})" if names else ""
        raise InputError(where(path, f"Zarr group without OME multiscales metadata{hint}"))
    ms = multiscales[0]
    datasets = ms.get("datasets", [])
    if not 0 <= level < len(datasets):
        raise InputError(where(path, f"--level {level} is out of range: the image has {len(datasets)} "
                                     f"resolution level(s) (0..{len(datasets) - 1})"))
    dataset = datasets[level]
    try:
        array = group[dataset["path"]]
    except KeyError:
        raise InputError(where(path, f"multiscales dataset {dataset['path']!r} is missing")) from None
    raw_axes = ms.get("axes") or ["tczyx"[5 - len(array.shape):][i] for i in range(len(array.shape))]
    names = [a["name"] if isinstance(a, dict) else str(a) for a in raw_axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in raw_axes]
    letters = []
    for name in names:
        letter = _OME_AXES.get(name.lower())
        if letter is None:
            raise InputError(where(path, f"OME axis {name!r} is not one of t, c, z, y, x; pass --axes"))
        letters.append(letter)
    scale = _scale(dataset.get("coordinateTransformations"))
    overall = _scale(ms.get("coordinateTransformations"))
    voxel = None
    if scale is not None and len(scale) == len(names) and all(a in letters for a in "ZYX"):
        if overall is not None and len(overall) == len(scale):
            scale = [s * o for s, o in zip(scale, overall)]
        sizes = []
        for a in "ZYX":
            i = letters.index(a)
            factor = _unit_factor(units[i]) if units[i] is not None else None
            sizes.append(None if factor is None else scale[i] * factor)
        voxel = None if None in sizes else _check_voxel_size(sizes)
    return array, "".join(letters), voxel


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
        file_axes = _check_axes(axes, len(shape), path, "--axes")
    elif len(file_axes) != len(shape):
        raise InputError(where(path, f"cannot tell the axes of a {len(shape)}D Zarr array (shape {shape}); pass "
                                     "--axes, e.g. --axes TZYX"))
    _check_dtype(np.dtype(array.dtype), path)
    # The same rules (and one-line errors) as TIFF input, worked out on a zero-size stand-in.
    probe = np.broadcast_to(np.zeros((), np.uint8), shape)
    normalise_axes(probe, file_axes, channel, path)
    data, has_time = tzyx_view(array, file_axes, channel)
    return Stack(data, file_axes, voxel, path, has_time)  # type: ignore[arg-type]
