"""Independent array jobs on threads: NumPy, SciPy's interpolation, SimpleITK and zlib release the GIL
while they work on large arrays, so a few threads use the cores that one Python thread leaves idle."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
MAX_WORKERS = 8


def workers() -> int:
    """Threads for such jobs: the cores this process may use, at most :data:`MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def in_parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """The results of ``jobs``, run on :func:`workers` threads (in order on this thread when one is
    enough); the first error is raised once every started job has finished."""
    if len(jobs) < 2 or workers() == 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(min(workers(), len(jobs))) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]
