"""Arrays read on index: :class:`LazyArray` (a TZYX view of a chunked source) and :class:`FileArray` (the
uncompressed image data of a file, read with ``pread``).

A memory map of an input file is not used: when the file is truncated or rewritten while a run reads it, a
memory-mapped read dies with SIGBUS (no message, exit -7). :class:`FileArray` reads with plain file reads instead,
so a short read or a changed file becomes a one-line :class:`~dmdet_infer.errors.InputError`, and only the voxels
asked for are in memory.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import weakref
from typing import Any

import numpy as np

from .errors import InputError, where

__all__ = ["FileArray", "LazyArray", "tzyx_view"]


class LazyArray:
    """A read-on-index view of a chunked array with some axes fixed (dropped) and the rest reordered."""

    def __init__(self, source: Any, fixed: dict[int, int], order: list[int | None], name: object | None = None):
        self.source = source  # anything numpy-like that reads a tuple of integers and slices (zarr, FileArray)
        self.name = name  # the file or store, for errors
        self.fixed = dict(fixed)  # source axis -> index
        self.order = list(order)  # view axis -> source axis, or None for a new axis of length 1
        self.dtype = np.dtype(source.dtype)
        self.shape = tuple(1 if a is None else int(source.shape[a]) for a in self.order)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any):
        """Integers only: a lazy view without those axes. With slices: the selected voxels as numpy."""
        key = key if isinstance(key, tuple) else (key,)
        if not all(isinstance(k, (int, np.integer, slice)) for k in key) or len(key) > self.ndim:
            raise IndexError(f"LazyArray takes up to {self.ndim} integers and slices, got {key!r}")
        only_ints = not any(isinstance(k, slice) for k in key)
        key = key + (slice(None),) * (self.ndim - len(key))
        if only_ints:
            return self._view(key)
        if any(isinstance(k, (int, np.integer)) for k in key):  # integers first, then slices
            sub = self._view(tuple(k if isinstance(k, (int, np.integer)) else slice(None) for k in key))
            return sub[tuple(k for k in key if isinstance(k, slice))]
        src: list[Any] = [slice(None)] * len(self.source.shape)
        for axis, index in self.fixed.items():
            src[axis] = index
        new_axes = []
        for i, (a, k) in enumerate(zip(self.order, key)):
            if a is None:
                new_axes.append(i)
            else:
                src[a] = k
        data = self._read(tuple(src))
        kept = [a for a in self.order if a is not None]
        by_source = sorted(kept)
        data = data.transpose([by_source.index(a) for a in kept])
        for i in new_axes:
            data = np.expand_dims(data, i)
        return data

    def _view(self, key: tuple) -> LazyArray:
        fixed = dict(self.fixed)
        order = []
        for a, k in zip(self.order, key):
            if isinstance(k, slice):
                order.append(a)
                continue
            n = 1 if a is None else int(self.source.shape[a])
            k = int(k)
            if not -n <= k < n:
                raise IndexError(f"index {k} out of range for an axis of length {n}")
            if a is not None:
                fixed[a] = k % n
        return LazyArray(self.source, fixed, order, self.name)

    def _read(self, key: tuple) -> np.ndarray:
        try:
            return np.asarray(self.source[key])
        except (InputError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a codec or store error: a damaged chunk, not a bug of ours
            raise InputError(where(self.name, f"cannot read its data, the store is corrupt or incomplete "
                                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); copy "
                                              "or write it again")) from None

    def __array__(self, dtype=None, copy=None):
        data = self[(slice(None),) * self.ndim]
        return data if dtype is None else data.astype(dtype)


def tzyx_view(source: Any, axes: str, channel: int | None, name: object | None = None) -> tuple[LazyArray, bool]:
    """``(LazyArray of source as TZYX, has_time)`` for axes already checked by :func:`dmdet_infer.io.normalise_axes`
    (C and S take ``channel``, other axes of size 1 are dropped, a single generic axis stands for Z)."""
    fixed: dict[int, int] = {}
    kept: dict[str, int] = {}
    for i, (ax, n) in enumerate(zip(axes, source.shape)):
        if ax in "CS":
            fixed[i] = 0 if channel is None or n == 1 else channel
        elif ax in "TZYX":
            kept[ax] = i
        elif n == 1:
            fixed[i] = 0
        else:
            kept["Z"] = i
    order: list[int | None] = [kept.get("T")] + [kept[a] for a in "ZYX"]
    return LazyArray(source, fixed, order, name), "T" in kept


class FileArray:
    """The C-ordered image data at ``offset`` of an open file, read with ``pread`` on each index.

    Any slice reads whole rows of the last axis (one read per plane of the other axes) and returns a native-order
    numpy array. The file's size and modification time are checked after every read: a file that was truncated or
    rewritten since it was opened raises :class:`InputError` instead of being misread.
    """

    def __init__(self, handle: io.BufferedReader | io.FileIO, path: str | os.PathLike[str], offset: int,
                 shape: tuple[int, ...], dtype: np.dtype):
        self.handle = handle
        self.path = path
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.file_dtype = np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._lock = threading.Lock()
        weakref.finalize(self, handle.close)  # closed with the last view of the stack, without a ResourceWarning
        st = os.fstat(handle.fileno())
        self.signature = (st.st_size, st.st_mtime_ns)
        if self.offset + self.nbytes > st.st_size:
            raise InputError(where(path, f"incomplete file: the image data ends at byte {self.offset + self.nbytes} "
                                         f"but the file has {st.st_size} bytes (truncated copy?); copy or export "
                                         "it again"))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"FileArray({self.path}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["handle"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.handle = open(self.path, "rb")  # noqa: SIM115  (kept open while the array is used)
        weakref.finalize(self, self.handle.close)
        st = os.fstat(self.handle.fileno())
        if (st.st_size, st.st_mtime_ns) != self.signature:
            self._changed()

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > self.ndim or not all(isinstance(k, (int, np.integer, slice)) for k in key):
            raise IndexError(f"FileArray takes up to {self.ndim} integers and slices, got {key!r}")
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        for k, n in zip(key, self.shape):
            if isinstance(k, slice):
                ranges.append(range(*k.indices(n)))
            else:
                if not -n <= int(k) < n:
                    raise IndexError(f"index {int(k)} out of range for an axis of length {n}")
                ranges.append(range(int(k) % n, int(k) % n + 1))
        out = np.empty([len(r) for r in ranges], self.dtype)
        if out.size:
            self._fill(out, ranges)
        drop = tuple(0 if isinstance(k, (int, np.integer)) else slice(None) for k in key)
        return out[drop]

    def _fill(self, out: np.ndarray, ranges: list[range]) -> None:
        item = self.dtype.itemsize
        if self.ndim == 1:
            ranges = [range(1), *ranges]  # one row
        width = self.shape[-1]
        strides = [int(np.prod(self.shape[i + 1:])) * item for i in range(self.ndim)]
        rows, cols = ranges[-2], ranges[-1]
        lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1])  # a negative step reads the same band
        direct = (rows.step == 1 and cols == range(width) and self.file_dtype.isnative)
        band = np.empty(0 if direct else (hi - lo + 1) * width * item, np.uint8)
        pick_rows, pick_cols = _as_index(rows, lo), _as_index(cols, 0)
        view = out.reshape((-1, len(rows), len(cols)))
        for k, plane in enumerate(itertools.product(*ranges[:-2])):
            start = self.offset + sum(i * s for i, s in zip(plane, strides)) + lo * width * item
            if direct:  # whole rows in order: straight into the output
                self._read(view[k].reshape(-1).view(np.uint8), start)
                continue
            self._read(band, start)
            values = band.view(self.file_dtype).reshape(hi - lo + 1, width)
            view[k] = values[pick_rows, :][:, pick_cols]

    def _read(self, buffer: np.ndarray, start: int) -> None:
        fd = self.handle.fileno()
        view = buffer.data  # a memoryview of the (1D, contiguous) bytes
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [view[done:]], start + done)
            else:  # no pread (Windows): one reader at a time
                with self._lock:
                    self.handle.seek(start + done)
                    n = self.handle.readinto(view[done:])
            if not n:
                break
            done += n
        st = os.fstat(fd)
        if done < len(view) or (st.st_size, st.st_mtime_ns) != self.signature:
            self._changed()

    def _changed(self) -> None:
        raise InputError(where(self.path, "the file was truncated or rewritten while it was being read; run again "
                                          "once nothing else writes to it"))


def _as_index(r: range, origin: int) -> slice | np.ndarray:
    """``r`` shifted by ``origin``, as a slice where numpy can take one (a view), else as indices."""
    if r.step > 0:
        return slice(r.start - origin, r.stop - origin, r.step)
    return np.asarray(r) - origin
