"""Read stacks (TIFF, OME-TIFF, ImageJ hyperstacks) into TZYX and write outputs atomically.

Reading is lazy: an uncompressed, contiguous file comes back as a :class:`~dmdet_infer.lazy.LazyArray` that reads
the voxels it is sliced for with plain file reads (tifffile does the parsing; no memory map, whose reads die with
SIGBUS when the file shrinks); anything else is read into memory. Values are not checked here: call
:func:`check_finite` once the pipeline is about to use them.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import mmap
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import tifffile

from .errors import InputError, where
from .lazy import FileArray, tzyx_view

# tifffile logs warnings about corrupt files; without this, Python's last-resort handler would print them
# next to our one-line error. Applications that configure logging still receive them.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

__all__ = [
    "SUPPORTED_DTYPES",
    "Stack",
    "atomic_write",
    "check_finite",
    "input_paths",
    "normalise_axes",
    "read_stack",
    "write_spots_csv",
]

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "uint32", "float32", "float64")
TIFF_SUFFIXES = (".tif", ".tiff")
# tifffile's codes for axes that are neither T, Z, Y, X nor a channel: generic ones may stand for Z.
_GENERIC_AXES = "QI"
_AXIS_NAMES = dict(tifffile.TIFF.AXES_NAMES)
_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "micrometers": 1.0, "micrometres": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3, "nanometres": 1e-3,
    "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4, "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "m": 1e6,
}
_CSV_COORD_COLUMNS = frozenset({"z", "y", "x", "z_um", "y_um", "x_um"})


@dataclass(repr=False)
class Stack:
    """A stack normalised to TZYX, as :func:`read_stack` and :meth:`from_array` give it.

    Parameters
    ----------
    data : numpy.ndarray or LazyArray
        The voxels as TZYX: 4 dimensions, T is 1 for a single volume. A stack read from an uncompressed,
        contiguous file holds a :class:`~dmdet_infer.lazy.LazyArray` that reads the voxels it is sliced for.
    axes : str
        The axes of the source (file or array), in tifffile's codes (e.g. ``"ZYX"``, ``"TZCYX"``).
    voxel_size_um : tuple of 3 floats or None, optional
        Voxel size (z, y, x) in µm, when known.
    path : pathlib.Path or None, optional
        The file read, None for an array.
    has_time : bool, optional
        Whether the source has a T axis (its spots then carry a frame index).

    See Also
    --------
    dmdet_infer.Detector.detect_stack : the spots of every frame.

    Examples
    --------
    >>> import numpy as np
    >>> stack = Stack.from_array(np.zeros((10, 64, 64), np.uint16), voxel_size_um=(0.3, 0.1, 0.1))
    >>> stack  # doctest: +NORMALIZE_WHITESPACE
    Stack(shape=(1, 10, 64, 64), dtype=uint16, axes='ZYX', voxel_size_um=(0.3, 0.1, 0.1), path=None,
          has_time=False, lazy=False)
    >>> stack.n_frames
    1
    """

    data: np.ndarray
    axes: str
    voxel_size_um: tuple[float, float, float] | None = None
    path: Path | None = None
    has_time: bool = False

    @property
    def n_frames(self) -> int:
        """Number of time points (1 for a single volume).

        Examples
        --------
        >>> import numpy as np
        >>> Stack.from_array(np.zeros((3, 10, 64, 64), np.uint16)).n_frames
        3
        """
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        return (f"Stack(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, axes={self.axes!r}, "
                f"voxel_size_um={self.voxel_size_um}, path={self.path}, has_time={self.has_time}, "
                f"lazy={not isinstance(self.data, np.ndarray)})")

    @classmethod
    def from_array(cls, array: Any, axes: str | None = None,
                   voxel_size_um: Sequence[float] | None = None, channel: int | None = None) -> Stack:
        """Wrap an array for the Python API.

        Parameters
        ----------
        array : array_like
            The voxels; a numpy array (a memmap included) is used as is, anything else through
            ``numpy.asarray``. Its dtype must be one of :data:`SUPPORTED_DTYPES`.
        axes : str or None, optional
            One tifffile axis code per dimension (e.g. ``"TZCYX"``); None: 3D is ZYX, 4D is TZYX, anything else
            needs ``axes``.
        voxel_size_um : sequence of 3 floats or None, optional
            Voxel size (z, y, x) in µm: positive and at most :data:`MAX_VOXEL_UM`.
        channel : int or None, optional
            The channel to keep when ``axes`` has a C (or S) axis of more than one.

        Returns
        -------
        Stack
            A view of the array as TZYX; no voxel is copied.

        Raises
        ------
        InputError
            For a 2D array, more than 4 dimensions without ``axes``, axes that do not fit the array, an
            unsupported dtype, a bad voxel size, or a missing or out-of-range channel.

        Examples
        --------
        >>> import numpy as np
        >>> stack = Stack.from_array(np.zeros((2, 10, 3, 64, 64), np.uint16), axes="TZCYX", channel=1)
        >>> stack.data.shape, stack.has_time
        ((2, 10, 64, 64), True)
        >>> Stack.from_array(np.zeros((64, 64), np.uint16))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dmdet_infer.errors.InputError: array: 2D image (shape (64, 64)); dmdet is a 3D detector and needs a ...
        """
        data = array if isinstance(array, np.ndarray) else np.asarray(array)
        if axes is None:
            if data.ndim == 3:
                axes = "ZYX"
            elif data.ndim == 4:
                axes = "TZYX"
            elif data.ndim == 2:
                raise InputError(f"array: 2D image (shape {data.shape}); dmdet is a 3D detector and needs a "
                                 "ZYX or TZYX array")
            else:
                raise InputError(f"array: {data.ndim}D array (shape {data.shape}); pass axes= (e.g. "
                                 "axes='TZCYX') to say what each dimension is")
        axes = _check_axes(axes, data.ndim, None)
        _check_dtype(data.dtype, None)
        tzyx, has_time = normalise_axes(data, axes, channel=channel, path=None)
        return cls(tzyx, axes, _check_voxel_size(voxel_size_um, "voxel_size_um"), None, has_time)


def normalise_axes(data: np.ndarray, axes: str, channel: int | None = None,
                   path: object | None = None) -> tuple[np.ndarray, bool]:
    """Return ``(view of data as TZYX, has_time)`` for an array labelled with tifffile axis codes.

    C (and S, samples) are reduced with ``channel``; axes of size 1 are squeezed; a single generic axis
    (Q, I) of size > 1 stands for Z when there is no Z. Indexing and transposing keep a memmap lazy.
    """
    axes = axes.upper()
    shape = data.shape
    if 0 in shape:
        raise InputError(where(path, f"empty image (shape {shape}, axes {axes}): no voxels to detect in"))
    _select_channel_axes(axes, shape, channel, path)
    index: list[Any] = []
    kept: list[str] = []
    generic: list[str] = []
    for ax, n in zip(axes, shape):
        if ax in "CS":
            index.append(_channel_index(n, channel))
        elif ax in "TZYX":
            index.append(slice(None))
            kept.append(ax)
        elif n == 1:
            index.append(0)
        else:
            index.append(slice(None))
            kept.append(ax)
            generic.append(ax)
    if generic:
        if "Z" in kept or len(generic) > 1 or generic[0] not in _GENERIC_AXES:
            ax = generic[0]
            raise InputError(where(path, f"cannot interpret axis {ax} ({_AXIS_NAMES.get(ax, 'unknown')}, "
                                         f"size {shape[axes.index(ax)]}) of axes {axes}; pass axes= to say "
                                         f"which axis is T, Z, C, Y, X (e.g. axes='{_example_axes(len(axes))}')"))
        kept[kept.index(generic[0])] = "Z"
    if "Y" not in kept or "X" not in kept:
        raise InputError(where(path, f"the axes {axes} have no Y and X; pass axes= (e.g. axes='ZYX')"))
    if "Z" not in kept:
        hint = " (if T is really Z, pass axes= with Z in its place)" if "T" in kept else ""
        raise InputError(where(path, f"2D image (axes {axes}, shape {shape}); dmdet is a 3D detector and "
                                     f"needs a Z axis (ZYX or TZYX){hint}"))
    view = data[tuple(index)]
    view = view.transpose([kept.index(a) for a in "TZYX" if a in kept])
    has_time = "T" in kept
    if not has_time:
        view = view[np.newaxis]
    return view, has_time


def _example_axes(ndim: int) -> str:
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim, "APHELV"[: max(ndim - 5, 0)] + "TZCYX")


def _select_channel_axes(axes: str, shape: tuple[int, ...], channel: int | None, path: object | None) -> None:
    """Check that ``channel`` picks exactly one plane of C/S, with a one-line error otherwise."""
    sizes = {ax: n for ax, n in zip(axes, shape) if ax in "CS"}
    many = {ax: n for ax, n in sizes.items() if n > 1}
    if len(many) > 1:
        raise InputError(where(path, f"has both channels (C, {many['C']}) and samples (S, {many['S']}) in "
                                     f"axes {axes}; convert it to a single-channel stack first"))
    if channel is not None and channel < 0:
        raise InputError(where(path, f"channel={channel} is negative; channels count from 0"))
    if not many:
        if channel not in (None, 0):
            raise InputError(where(path, f"channel={channel} is out of range: the file has 1 channel "
                                         f"(axes {axes}); use channel=0 or leave it out"))
        return
    ax, n = next(iter(many.items()))
    what = "channels" if ax == "C" else "samples (e.g. RGB)"
    if channel is None:
        z_hint = (f", or axes= with Z in place of {ax} if that axis is really Z"
                  if "Z" not in axes else "")
        raise InputError(where(path, f"has {n} {what} (axes {axes}); pass channel=K with K in 0..{n - 1} "
                                     f"to pick one{z_hint}"))
    if channel >= n:
        raise InputError(where(path, f"channel={channel} is out of range: the file has {n} {what} "
                                     f"(axes {axes}); use 0..{n - 1}"))


def _channel_index(n: int, channel: int | None) -> int:
    return 0 if n == 1 or channel is None else channel


def _check_axes(axes: str, ndim: int, path: object | None) -> str:
    axes = str(axes).strip().upper()
    if not re.fullmatch(r"[A-Z]+", axes) or len(set(axes)) != len(axes):
        raise InputError(where(path, f"axes={axes!r} must be distinct letters such as TZCYX"))
    if len(axes) != ndim:
        raise InputError(where(path, f"axes={axes!r} has {len(axes)} letters but the image has "
                                     f"{ndim} dimensions; give one letter per dimension"))
    return axes


def _check_dtype(dtype: np.dtype, path: object | None) -> None:
    if np.dtype(dtype).name not in SUPPORTED_DTYPES:
        raise InputError(where(path, f"unsupported pixel type {np.dtype(dtype).name}; convert the stack to "
                                     f"one of {', '.join(SUPPORTED_DTYPES)}"))


#: Largest voxel size accepted, in µm (a metre): beyond it the µm columns of a large stack would overflow.
MAX_VOXEL_UM = 1e6


def _check_voxel_size(voxel: Sequence[float] | None, origin: str = "voxel size") -> tuple[float, float, float] | None:
    if voxel is None:
        return None
    try:
        vals = tuple(float(v) for v in voxel)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(np.isfinite(v) and 0 < v <= MAX_VOXEL_UM for v in vals):
        shown = ",".join(f"{v:g}" for v in vals) if len(vals) == 3 else repr(voxel)
        raise InputError(f"{origin} {shown} must be three positive numbers (z, y, x) in µm, at most "
                         f"{MAX_VOXEL_UM:g}")
    return vals


def release_pages(array: object) -> None:
    """Drop the pages of a memory-mapped input from this process's resident set (they stay in the page cache).

    Reading a memmapped file tile by tile maps every page it touches; without this, a 3 GB input would show up as
    3 GB of resident memory by its end. Does nothing for arrays that are not views of a memmap.
    """
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed or not supported: keeping the pages is harmless
            pass


def read_stack(path: str | os.PathLike[str], channel: int | None = None, axes: str | None = None) -> Stack:
    """Read a TIFF / OME-TIFF / ImageJ stack as TZYX.

    Uncompressed contiguous data is read lazily (a :class:`LazyArray` over a :class:`FileArray`, read with plain
    file reads when sliced), anything else into memory. The voxel size comes from the OME or ImageJ metadata
    (None when incomplete or unknown). Values are not checked (see :func:`check_finite`).

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF file; its first series is read.
    channel : int or None, optional
        The channel to keep, counted from 0; needed when the file has more than one channel (C or S axis).
    axes : str or None, optional
        One tifffile axis code per dimension of the series (e.g. ``"TZCYX"``), overriding the file's own.

    Returns
    -------
    Stack
        The stack as TZYX, with its axes, voxel size (z, y, x in µm, or None), path and whether it has a time
        axis. A lazy stack keeps the file open.

    Raises
    ------
    InputError
        When the file is missing, a folder, truncated, corrupt, not a TIFF, compressed without the decoders
        installed (``pip install imagecodecs``), too large to decompress in memory, of an unsupported dtype, 2D,
        empty, or when its axes or the ``channel`` do not fit it.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tifffile
    >>> data = np.arange(2 * 10 * 8 * 8, dtype=np.uint16).reshape(2, 10, 8, 8)  # TZYX
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     name = os.path.join(folder, "stack.tif")
    ...     tifffile.imwrite(name, data, imagej=True, resolution=(10.0, 10.0),  # 10 pixels per µm
    ...                      metadata={"axes": "TZYX", "spacing": 0.3, "unit": "um"})
    ...     stack = read_stack(name)
    ...     first = np.asarray(stack.data[0])  # read while the file is there (this stack is lazy)
    >>> stack.axes, stack.n_frames, stack.has_time, np.array_equal(first, data[0])
    ('TZYX', 2, True, True)
    >>> np.allclose(stack.voxel_size_um, (0.3, 0.1, 0.1))
    True
    >>> read_stack("no-such-file.tif")
    Traceback (most recent call last):
    ...
    dmdet_infer.errors.InputError: no-such-file.tif: file not found; check the path
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError(where(name, "file not found; check the path"))
    if path.is_dir():
        raise InputError(where(name, "is a folder, not a stack file; give a .tif file"))
    problems = _Problems()
    log = logging.getLogger("tifffile")
    log.addHandler(problems)
    handle = None
    lazy = False
    try:
        handle = open(path, "rb")  # noqa: SIM115  (kept open by a lazy stack; tifffile parses this very file)
        with tifffile.TiffFile(handle) as tif:
            series_list = tif.series  # tifffile reports a series with missing planes here, then zero-fills them
            if problems.truncated:
                raise InputError(where(name, f"truncated or incomplete file: {len(tif.pages)} page(s) readable, "
                                             f"then {problems.truncated}; copy or export it again"))
            if problems.missing:
                raise InputError(where(name, f"incomplete file: {problems.missing.rstrip('. ')}; the metadata "
                                             "promises planes that are not stored (truncated copy?)"))
            if not series_list:
                raise InputError(where(name, "TIFF file contains no image; check that it is not corrupt"))
            series = series_list[0]
            file_axes = series.axes
            shape = tuple(series.shape)
            dtype = np.dtype(series.dtype)
            if axes is not None:
                file_axes = _check_axes(axes, len(shape), name)
            else:
                file_axes = file_axes.upper()
            _check_dtype(dtype, name)
            if 0 in shape:
                raise InputError(where(name, f"empty image (shape {shape}, axes {file_axes}): "
                                             "no voxels to detect in"))
            # Validate axes and channel before reading any data: errors must be cheap.
            normalise_axes(np.broadcast_to(np.zeros((), dtype), shape), file_axes, channel, name)
            voxel = _voxel_size(tif)
            if series.dataoffset is not None:
                source = FileArray(handle, name, series.dataoffset, shape, np.dtype(tif.byteorder + dtype.char))
                lazy = True
            else:
                _check_segments(series, os.fstat(handle.fileno()).st_size, name)
                data = series.asarray()
    except InputError:
        raise
    except tifffile.TiffFileError as exc:
        raise InputError(where(name, f"not a readable TIFF file ({_one_line(exc)}); "
                                     "check the file type or re-export it as TIFF")) from None
    except MemoryError:
        raise InputError(where(name, "not enough memory to read this compressed stack; "
                                     "save it uncompressed so that it can be read lazily")) from None
    except OSError as exc:
        raise InputError(where(name, f"cannot read the file ({exc.strerror or _one_line(exc)})")) from None
    except Exception as exc:  # tifffile raises many kinds on corrupt files
        if "imagecodecs" in str(exc):  # compressed (LZW, zstd, JPEG...): a missing decoder, not a bad file
            raise InputError(where(name, f"this TIFF is compressed ({_one_line(exc)}); install the decoders with "
                                         "`pip install imagecodecs` (or `pip install dmdet[codecs]`)")) from None
        raise InputError(where(name, f"corrupt or unsupported TIFF file ({type(exc).__name__}: "
                                     f"{_one_line(exc)}); re-export it as TIFF")) from None
    finally:
        log.removeHandler(problems)
        if handle is not None and not lazy:
            handle.close()
    if lazy:
        view, lazy_time = tzyx_view(source, file_axes, channel, name)
        return Stack(view, file_axes, voxel, path, lazy_time)  # type: ignore[arg-type]  # a LazyArray as data
    data = np.asanyarray(data).reshape(shape)
    tzyx, has_time = normalise_axes(data, file_axes, channel, name)
    return Stack(tzyx, file_axes, voxel, path, has_time)


def _check_segments(series: Any, size: int, name: str) -> None:
    """Refuse a series whose stored strips or tiles end beyond the end of the file (a truncated copy), which
    tifffile would read short or zero-filled."""
    end = 0
    for page in series.pages:
        if page is None:
            continue
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            end = max(end, int(offset) + int(count))
    if end > size:
        raise InputError(where(name, f"incomplete file: the image data ends at byte {end} but the file has {size} "
                                     "bytes (truncated copy?); copy or export it again"))


class _Problems(logging.Handler):
    """Catches tifffile's reports of a damaged file that it would otherwise read silently: a series missing
    planes that it then zero-fills (e.g. OME SizeZ beyond the stored pages), and a page list that runs past the end
    of the file (a truncated multi-page file, which would be read as its first pages, e.g. a "2D image")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.missing = ""
        self.truncated = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        low = text.lower()
        if "missing" in low and "zero" in low and not self.missing:
            self.missing = text[:200]
        elif ("invalid page offset" in low or "invalid offset to page" in low) and not self.truncated:
            self.truncated = "the next page lies beyond the end of the file"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _unit_factor(unit: object) -> float | None:
    """µm per ``unit``, or None if the unit is unknown (e.g. 'pixel')."""
    if unit is None:
        return None
    u = str(unit).strip().lower().replace("\\u00b5", "µ").replace("μ", "µ")
    return _UNIT_TO_UM.get(u)


def _voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) in µm from ImageJ or OME metadata, None when incomplete or unknown."""
    try:
        if tif.is_ome and tif.ome_metadata:
            return _ome_voxel_size(tif.ome_metadata)
        if tif.is_imagej and tif.imagej_metadata:
            return _imagej_voxel_size(tif.imagej_metadata, tif.pages[0])
    except Exception:  # metadata is a bonus: never fail a read because of it
        return None
    return None


def _imagej_voxel_size(meta: dict[str, Any], page: Any) -> tuple[float, float, float] | None:
    factor = _unit_factor(meta.get("unit"))
    if factor is None:
        return None
    sizes = []
    for tag in ("YResolution", "XResolution"):
        value = page.tags.get(tag)
        if value is None:
            return None
        num, den = value.value
        if not num or not den:
            return None
        sizes.append(den / num * factor)
    z = float(meta.get("spacing", 1.0)) * factor  # ImageJ omits spacing when it is 1 unit
    return _check_voxel_size((z, sizes[0], sizes[1]))


def _ome_voxel_size(xml: str) -> tuple[float, float, float] | None:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        factor = _unit_factor(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        if value is None or factor is None:
            return None
        sizes.append(float(value) * factor)
    return _check_voxel_size(sizes)


#: Largest magnitude of a float voxel that dmdet computes with: float32 holds up to 3.4e38, and the normalisation
#: (medians, differences) needs headroom below that. Real stacks are far below it.
MAX_ABS_VALUE = 1e30


def check_finite(array: np.ndarray, path: object | None = None, max_elems: int = 1 << 24) -> None:
    """Raise InputError if ``array`` holds NaN or Inf, or values beyond ±:data:`MAX_ABS_VALUE` (e.g. float64
    values beyond float32's range); reads at most ``max_elems`` voxels at a time."""
    if array.dtype.kind not in "fc":
        return
    count = huge = 0
    first: tuple[int, ...] | None = None
    largest = 0.0
    for origin, block in _blocks(array, max_elems, ()):
        bad = ~np.isfinite(block)
        n = int(np.count_nonzero(bad))
        if n and first is None:
            local = np.unravel_index(int(np.flatnonzero(bad)[0]), block.shape)
            first = tuple(int(o + i) for o, i in zip(origin, local))
        count += n
        if not n:
            magnitude = np.abs(block)
            big = int(np.count_nonzero(magnitude > MAX_ABS_VALUE))
            if big:
                huge += big
                largest = max(largest, float(magnitude.max()))
    labels = "tzyx" if array.ndim == 4 else "zyx" if array.ndim == 3 else ""
    at = f" ({', '.join(labels)})" if labels else ""
    if count:
        raise InputError(where(path, f"{count} non-finite voxel(s) (NaN or Inf), first at index {first}{at}; "
                                     "replace them (e.g. with the background value) before detection"))
    if huge:
        what = f"{array.dtype.name} values beyond float32 range" if largest > float(np.finfo(np.float32).max) else \
            f"values beyond ±{MAX_ABS_VALUE:.0e}"
        raise InputError(where(path, f"{huge} voxel(s) hold {what} (largest magnitude {largest:.3g}); dmdet "
                                     "computes in float32 and cannot use them: rescale the stack (e.g. divide it by "
                                     f"{10 ** np.ceil(np.log10(largest / 1e6)):.0e})"))


def _blocks(a: np.ndarray, max_elems: int, origin: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Yield ``(origin, block)`` covering ``a`` in raster order; blocks keep ``a``'s dimensions."""
    full = origin + (0,) * a.ndim
    if a.ndim == 0 or a.size <= max_elems:
        yield full, np.asarray(a)
        return
    row = a.size // a.shape[0]
    if row <= max_elems or a.ndim == 1:
        step = max(1, max_elems // max(row, 1))
        for i in range(0, a.shape[0], step):
            yield origin + (i,) + (0,) * (a.ndim - 1), np.asarray(a[i:i + step])
        return
    for i in range(a.shape[0]):
        for sub_origin, block in _blocks(a[i], max_elems, origin + (i,)):
            yield sub_origin, block[np.newaxis]


_UMASK: int | None = None


def _file_mode() -> int:
    """Permissions a newly created file would get (mkstemp makes 0600 files)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on success fsync and ``os.replace`` it onto ``path``.

    On any failure the temp file is removed and ``path`` is left as it was. ``mode`` is "w" or "wb".
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(where(path, f"cannot write: folder {parent} does not exist; create it first"))
    if path.is_dir():
        raise InputError(where(path, "cannot write: this is a folder; give a file name"))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=parent)  # long names fit
    except OSError as exc:
        raise InputError(where(path, f"cannot write: {exc.strerror or exc}")) from None
    try:
        with (os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding=encoding, newline=newline)) \
                as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(where(path, f"cannot write: {exc.strerror or exc}")) from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _csv_formatter(name: str, column: np.ndarray) -> str:
    if name in _CSV_COORD_COLUMNS:
        return "{:.4f}"
    if name == "frame" or column.dtype.kind in "iub":
        return "{:d}"
    return "{:.6g}"


def write_spots_csv(path: str | os.PathLike[str], columns: dict[str, np.ndarray]) -> None:
    """Write one row per spot with a header from ``columns``' keys (in order), atomically.

    z/y/x and *_um columns get 4 decimals, ``frame`` and integer columns are integers, others
    (score, intensity) 6 significant digits.
    """
    if not columns:
        raise ValueError("write_spots_csv needs at least one column")
    arrays = {}
    for name, values in columns.items():
        if not name or any(c in name for c in ',"\n\r'):
            raise ValueError(f"bad CSV column name {name!r}")
        col = np.asarray(values)
        if col.ndim != 1:
            raise ValueError(f"column {name!r} must be 1D, got shape {col.shape}")
        if name == "frame" and col.dtype.kind == "f":
            col = col.astype(np.int64)
        arrays[name] = col
    lengths = {len(c) for c in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in arrays.items()} }")
    row = ",".join(_csv_formatter(k, v) for k, v in arrays.items()) + "\n"
    lists = [c.astype(np.int64 if c.dtype.kind in "iub" else np.float64).tolist() for c in arrays.values()]
    with atomic_write(path, "w", newline="") as handle:
        handle.write(",".join(arrays) + "\n")
        rows = zip(*lists)
        while True:
            chunk = [row.format(*r) for _, r in zip(range(65536), rows)]
            if not chunk:
                break
            handle.write("".join(chunk))


def input_paths(specs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, globs and folders (their *.tif/*.tiff, sorted) in order, without duplicates."""
    if not specs:
        raise InputError("no input files given; pass stack files, folders or glob patterns")
    found: list[Path] = []
    for spec in specs:
        text = os.path.expanduser(os.fspath(spec))
        path = Path(text)
        if path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise InputError(f"{text}: no files match this pattern; check the pattern and quote it")
        else:
            raise InputError(where(text, "file not found; check the path"))
        for match in matches:
            if match.is_dir():
                tiffs = sorted(p for p in match.iterdir()
                               if p.is_file() and p.name.lower().endswith(TIFF_SUFFIXES))
                if not tiffs:
                    raise InputError(where(match, "folder has no .tif/.tiff files"))
                found.extend(tiffs)
            elif not match.is_file():  # a FIFO would block the read forever; a device is no stack either
                raise InputError(where(match, "not a regular file (a FIFO, device or socket); give a stack file"))
            else:
                found.append(match)
    seen: set[str] = set()
    unique = []
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def read_points(path: str | os.PathLike[str]) -> np.ndarray:
    """Positions (N, 3) zyx in voxels from a CSV with a header naming ``z``, ``y`` and ``x`` (other columns are
    ignored; with a ``frame`` column only frame 0 is kept). A dmdet-infer output CSV qualifies."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise InputError(where(path, "file not found; check the path")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(where(path, f"cannot read points ({_one_line(exc)})")) from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    missing = [c for c in ("z", "y", "x") if c not in header]
    if missing:
        raise InputError(where(path, f"CSV needs a header with columns z,y,x; missing {','.join(missing)}"))
    cols = [header.index(c) for c in ("z", "y", "x")]
    frame = header.index("frame") if "frame" in header else None
    try:
        points = [[float(row[c]) for c in cols] for row in rows[1:]
                  if row and (frame is None or float(row[frame]) == 0)]
    except (ValueError, IndexError):
        raise InputError(where(path, "CSV has a row that is not numbers in z,y,x")) from None
    return np.asarray(points, np.float64).reshape(-1, 3)
