"""The same tiled pipeline on a dask.distributed cluster (extra ``dmdet[dask]``).

Each frame of each input is cut into the detector's tiles; one task per tile computes the tile's density (core
plus margin) and returns its peak candidates; the client merges each frame's candidates with the global
min-distance suppression, so the spots equal single-process :meth:`Detector.detect` (no duplicates on seams).
Workers open the inputs themselves (TIFF and Zarr read lazily: shared storage, nothing large travels) and keep one
:class:`Detector` (one ONNX Runtime session) per process and :class:`~dmdet_infer.config.DetectorConfig`, reused by
every task: the config is what travels. In-memory arrays are scattered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import pairs
from .config import DetectorConfig
from .detector import Detector, TileCandidates, check_volume
from .errors import DmdetError, InputError
from .io import Stack
from .normalise import Stats
from .spots import Spots

__all__ = ["DetectorConfig", "DetectorSpec", "connect", "detect_many"]

_CACHE: dict[Any, Any] = {}  # per worker process: DetectorConfig -> Detector, source -> Stack


@dataclass(frozen=True)
class DetectorSpec(DetectorConfig):
    """:class:`~dmdet_infer.config.DetectorConfig` on the CPU by default (the name and default of before the
    config; its fields in the same order): what a worker needs to build the same :class:`Detector`."""

    device: str = field(default="cpu", metadata=DetectorConfig.__dataclass_fields__["device"].metadata)


@dataclass(frozen=True)
class _Source:
    path: str
    channel: int | None = None
    axes: str | None = None
    level: int = 0


def _detector(spec: DetectorConfig) -> Detector:
    det = _CACHE.get(spec)
    if det is None:
        det = _CACHE[spec] = spec.build()
    return det


def _stack(source: _Source | np.ndarray) -> Stack:
    if isinstance(source, np.ndarray):
        return Stack.from_array(source)
    stack = _CACHE.get(source)
    if stack is None:
        from .zarr_io import read_input

        stack = _CACHE[source] = read_input(source.path, source.channel, source.axes, source.level)
    return stack


def _frame_stats(spec: DetectorConfig, source: _Source | np.ndarray, frame: int) -> Stats:
    """Task: check one frame (rank, type, NaN/Inf) and return its normalisation statistics."""
    stack = _stack(source)
    volume = stack.data[frame]
    name: str | os.PathLike[str] | None = stack.path
    if name is not None and stack.has_time and stack.n_frames > 1:
        name = f"{name} (frame {frame})"
    check_volume(volume, name)
    return _detector(spec).stats(volume)


def _tile(spec: DetectorConfig, source: _Source | np.ndarray, frame: int, core: tuple,
          stats: Stats) -> TileCandidates:
    """Task: peak candidates of one tile's core."""
    det = _detector(spec)
    if stats.constant:
        e = np.zeros((0, 3))
        return TileCandidates(e, e.astype(np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                              np.zeros((0, pairs.N_FEATURES)))
    return det.tile_candidates(_stack(source).data[frame], core, stats)


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, threads: int = 1) -> Iterator[Any]:
    """A ``dask.distributed.Client``: to ``scheduler`` (address) when given, else a local cluster of
    ``workers`` processes with ``threads`` threads each; closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("scheduler= and workers= need dask.distributed; install it with "
                         "`pip install 'dmdet[dask]'`") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or an address dask cannot parse
            raise InputError(f"scheduler={scheduler!r}: cannot connect ({' '.join(str(exc).split())[:160]})") \
                from None
        with client:
            yield client
        return
    n = int(workers or os.cpu_count() or 1)
    if n < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    with LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_quiet_ctrl_c)
        yield client


def stop_runs(quiet: bool = False) -> None:
    """Abort the network calls in progress in this process (a worker's, through ``Client.run``); ``quiet``: and
    silence its logging, as the cluster is about to be closed."""
    from .model import cancel_runs

    if quiet:
        logging.disable(logging.CRITICAL)
    cancel_runs(0.0)


def _quiet_ctrl_c() -> None:
    """On a worker of a local cluster (run in its event loop, the main thread): Ctrl-C, which a terminal sends to
    the worker processes too, aborts the worker's network calls and silences it (:func:`stop_runs`) instead of
    raising KeyboardInterrupt in its event loop (a traceback and dask's logs); the client closes the cluster."""
    with contextlib.suppress(ValueError):  # not the main thread: leave Ctrl-C as it is
        signal.signal(signal.SIGINT, lambda signum, frame: stop_runs(quiet=True))


def detect_many(
    client: Any,
    inputs: Sequence[str | os.PathLike | np.ndarray],
    spec: DetectorConfig = DetectorSpec(),
    *,
    channel: int | None = None,
    axes: str | None = None,
    level: int = 0,
    voxel_size_um: tuple[float, float, float] | None = None,
) -> list[Spots | DmdetError]:
    """Spots of every input (stack files, Zarr stores or ZYX/TZYX arrays), one table per input, tiles and
    frames spread over the cluster. ``spec``: the detection options (a :class:`~dmdet_infer.config.DetectorConfig`,
    sent to the workers as it is; default: the defaults on the CPU); its ``model`` must be a path the workers see.
    An input that fails gives a :class:`DmdetError` in its place (an
    :class:`InputError` for a user error, exit code 1 otherwise) and the others go on."""
    local = spec.build()  # the client's copy: tile plan and merging (nothing heavy runs here)
    plans: list[InputError | tuple[Stack, list[tuple[Any, list[Any]]]]] = []
    for item in inputs:
        try:
            if isinstance(item, np.ndarray):
                stack = Stack.from_array(item)
                source: Any = client.scatter(item, broadcast=False)
            else:
                source = _Source(str(item), channel, axes, level)
                stack = _stack(source)
                _CACHE.pop(source, None)  # the client only needed the shape
        except InputError as exc:
            plans.append(exc)
            continue
        frames = []
        for t in range(stack.n_frames):
            stats = client.submit(_frame_stats, spec, source, t, pure=False)
            tiles = [client.submit(_tile, spec, source, t, core, stats, pure=False)
                     for core in local.cores(stack.data.shape[1:])]
            frames.append((stats, tiles))
        plans.append((stack, frames))
    results: list[Spots | DmdetError] = []
    for plan in plans:
        if isinstance(plan, InputError):
            results.append(plan)
            continue
        stack, frames = plan
        size = voxel_size_um or stack.voxel_size_um
        try:
            n_voxels = int(np.prod(stack.data.shape[1:]))
            parts = [local.merge(client.gather(tiles), size, n_voxels) for _, tiles in frames]
        except DmdetError as exc:
            results.append(exc)
            continue
        except Exception as exc:  # a worker crashed or a bug: report it for this input, keep the others
            results.append(DmdetError(f"{stack.path or 'array'}: internal error {type(exc).__name__}: {exc}"))
            continue
        if stack.has_time:
            parts = [p.with_frame(t) for t, p in enumerate(parts)]
        results.append(Spots.concat(parts) if len(parts) > 1 else parts[0])
    return results
