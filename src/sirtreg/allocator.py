"""Process-wide setting of the C allocator for large arrays (Linux with glibc).

glibc serves every allocation above 32 MiB (and, by its sliding threshold, many smaller ones) with a
fresh ``mmap`` and gives it back to the system when it is freed, so the next array of that size costs
one page fault per 4 KiB page. The CNN, the registration and the warps allocate and free arrays of tens
to hundreds of MiB many times over: the demo on 2 cores spent 86 s of its 200 s in the kernel. Serving
them from the heap and keeping freed memory for reuse brought that to 21 s and the demo to 147 s
(``benchmarks/cli.py``); the price is that memory freed during a command is kept by the process until it
ends (the demo's peak resident memory went from 3.9 to 4.2 GiB).

Only the command line calls :func:`reuse_freed_memory`: a program that imports sirtreg keeps its own
allocator settings, and the usual glibc variables (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ...)
in the environment take precedence over it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest an int holds: free memory at the heap's top is kept up to 2 GiB


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory for reuse; True when the allocator
    took the setting (glibc on Linux), False elsewhere or when the environment sets ``MALLOC_*`` itself."""
    if not sys.platform.startswith("linux") or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    log.debug("allocator: large arrays from the heap, freed memory kept: %s", taken)
    return taken
