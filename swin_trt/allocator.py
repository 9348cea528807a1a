"""Keep freed memory in the process (glibc), so that CPU training does not page-fault every step.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves a block above its mmap
threshold (128 KiB at start, raised dynamically up to 32 MiB) with a fresh ``mmap`` and unmaps it
on ``free``; the next step's tensor of the same size is faulted in again page by page, and the
kernel zeroes every page. A training step allocates its activations, their gradients and, in
QAT, several temporaries per quantizer (``x / s``, ``|x|``, the mask, the gradient) of that size:
on the 2-core AVX2 EPYC the eager fake-quant forward of a 9.6 M-element activation took 85 ms
with glibc's defaults and 35 ms with freed blocks kept (``benchmarks/qat_step.py`` measures the
whole step). Raising the mmap threshold and the trim threshold makes glibc keep freed blocks in
its heap for reuse: what a caching allocator would do, without replacing the allocator (an
``LD_PRELOAD`` of jemalloc or tcmalloc must happen before Python starts). It changes no value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
M_MMAP_THRESHOLD = -3
KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from the heap and go back to it


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; False where the C library is not glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BELOW))
