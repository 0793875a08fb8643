"""Independent array jobs on threads: NumPy, SciPy's interpolation, SimpleITK and zlib release the GIL
while they work on large arrays, so a few threads use the cores that one Python thread leaves idle."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
MAX_WORKERS = 8
#: how long a pool left by an interrupt waits for its running jobs (s)
INTERRUPTED_WAIT_S = 10.0


def workers() -> int:
    """Threads for such jobs: the cores this process may use, at most :data:`MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def in_parallel(jobs: Sequence[Callable[[], T]]) -> list[T]:
    """The results of ``jobs``, run on :func:`workers` threads (in order on this thread when one is
    enough); the first error is raised once every started job has finished."""
    if len(jobs) < 2 or workers() == 1:
        return [job() for job in jobs]
    with worker_pool(min(workers(), len(jobs))) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]


class _TrackedPool(ThreadPoolExecutor):
    """A thread pool that keeps the futures of its jobs."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


@contextmanager
def worker_pool(count: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``count`` threads, left as ``with ThreadPoolExecutor(count)`` is (every job finished), but for
    an interrupt (KeyboardInterrupt): then the jobs not started are cancelled and the running ones get
    :data:`INTERRUPTED_WAIT_S` to finish. A Ctrl-C that lands in the middle of an import can leave CPython's
    import lock held (3.11), and a worker that imports afterwards waits for ever: the command line then ends
    the process without waiting for such threads (:func:`sirtreg.cli.app.console_main`)."""
    pool = _TrackedPool(count)
    try:
        yield pool
    except KeyboardInterrupt:
        for future in pool.futures:
            future.cancel()
        concurrent.futures.wait(pool.futures, timeout=INTERRUPTED_WAIT_S)
        pool.shutdown(wait=False)
        raise
    except BaseException:
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
