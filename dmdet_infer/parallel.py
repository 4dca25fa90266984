"""Threads for the numpy work around the network: numpy's medians, sorts and large array arithmetic release the
GIL, so independent parts of one volume (rows of normalisation blocks, groups of spots) run side by side."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

#: Most threads used when the caller does not say (the work splits into a few large parts).
MAX_WORKERS = 4


def workers(threads: int | None = None) -> int:
    """``threads`` when given (> 0), else the cores this process may use, at most :data:`MAX_WORKERS`."""
    if threads:
        return int(threads)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def each(fn: Callable[[T], object], items: Iterable[T], threads: int | None = None) -> None:
    """``fn(item)`` for every item, in up to :func:`workers` threads (here when one); re-raises the first error.
    ``fn`` writes its results where they belong, so the outcome does not depend on the number of threads."""
    items = list(items)
    n = min(workers(threads), len(items))
    if n <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="dmdet-numpy") as pool:
        for _ in pool.map(fn, items):
            pass
