"""Keep freed memory inside the process (glibc malloc), so that large tensors are not page-faulted in
again every time they are allocated.

glibc serves large requests (above a threshold that grows to at most 32 MiB) by ``mmap`` and gives
them back to the kernel when freed, and trims the top of its heap when enough of it is free. A
network's activations are large and allocated anew on every call, so each forward pass makes the
kernel map and zero those pages again, and on CPU that system time can outweigh the convolutions
themselves (docs/results-log.md has the measured runs). With ``mmap`` off and trimming off, freed
blocks are reused from the heap, at the cost of a higher peak (the heap keeps its high-water mark
until the process ends). Arithmetic is unchanged: the same kernels run on
the same values, only where the buffers come from differs (tests/test_allocator.py).

Applied by the ``bench`` command line and its worker processes, never on ``import bench`` (a
program that embeds ``bench.Denoiser`` keeps its own allocator settings). ``BENCH_MALLOC=system``
leaves glibc's defaults alone.
"""
from __future__ import annotations

import ctypes
import os
import sys

from bench.core.errors import BenchError

ENV = "BENCH_MALLOC"  # "keep" (the default) | "system"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
TRIM_AT = 2**31 - 1  # mallopt takes an int; a free heap top this large is trimmed, smaller ones kept


def keep_freed_memory(environ=os.environ) -> bool:
    """Switch glibc to reusing freed memory (no ``mmap`` for large blocks, no trimming); returns
    whether it did. False where the C library is not glibc, off Linux, or with ``BENCH_MALLOC=system``."""
    setting = environ.get(ENV, "keep").lower()
    if setting not in ("keep", "system"):
        raise BenchError(f"{ENV}={setting!r}: expected keep or system")
    if setting == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_AT))
