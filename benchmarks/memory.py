"""Peak resident memory of the calling process, for benchmark workers started with ``spawn``."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_memory_mb() -> float:
    """Peak resident set size (MB) of this process's own address space.

    ``VmHWM`` from ``/proc/self/status`` where it exists (Linux): unlike
    ``getrusage``'s ``ru_maxrss``, it is not inherited from the parent across
    fork and exec, so a worker does not report the memory of the process that
    started it. Elsewhere, ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
