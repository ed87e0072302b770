"""How the C allocator hands memory to tensors on CPU.

A training step on a CPU allocates and frees activations of tens to hundreds of MB many times over
(MiniLM at batch 32 + 32 negatives: ~100 MB per feed-forward activation). glibc's malloc serves
every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it to the
kernel on ``free``, so each step page-faults its whole working set in again, and the kernel zeroes
every page. :func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks from its heap
and not to trim the heap, so freed activations are reused by the next step without page faults:
on a 2-core CPU (AVX2 kind, fp32) a SciFact retriever epoch ran 3.30 -> 4.00 pairs/s
(``benchmarks/peer_speed``). The same can be had from the environment
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) or by preloading jemalloc/tcmalloc, as
PyTorch's CPU tuning guide suggests; this does it without either. The cost: memory freed after the
peak stays with the process until it exits (peak RSS is what it was).

``RAGTUNE_KEEP_FREED_MEMORY=0`` turns it off. Elsewhere than glibc it does nothing.

Shape-keyed caches are the other way memory grows: oneDNN, and ideep (the layer between PyTorch and
oneDNN), keep a compiled primitive, with its buffers, for every input shape they meet, up to 1024 of
each. Training batches padded to their longest example change shape nearly every step, so a bf16
run grew by ~25 MB per new batch width and never gave it back (the joint COVID-QA round: 4.0 GB over
48 questions, 6.7 GB over 500). :func:`bound_primitive_caches` caps both caches
(``LRU_CACHE_CAPACITY``, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) unless the environment already sets
them; ``benchmarks/primitive_cache`` measures the growth and the speed with and without the caps.

Between phases that allocate differently (the joint loop's stages: SFT, passage scoring, retriever
steps, generation), :func:`release_freed_memory` hands what the last phase freed back to the kernel
(``malloc_trim``), so the next phase does not stack its own working set on top of the last one's
leftovers: peak RSS is then the largest phase's, not their sum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim  # glibc only: not musl, macOS, Windows
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def release_freed_memory() -> bool:
    """Return the heap's free pages to the kernel (glibc ``malloc_trim(0)``); whether it ran."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


PRIMITIVE_CACHE_CAPACITY = {"LRU_CACHE_CAPACITY": "8", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128"}


@functools.cache
def bound_primitive_caches() -> dict[str, str]:
    """Cap ideep's and oneDNN's per-shape primitive caches (:data:`PRIMITIVE_CACHE_CAPACITY`, each
    variable the environment does not already set) and return the capacities in force. Both
    libraries read their variable when they first create a primitive, so this must run before the
    process's first oneDNN operation (the trainers and the CLI call it at start-up)."""
    for var, value in PRIMITIVE_CACHE_CAPACITY.items():
        os.environ.setdefault(var, value)
    return {var: os.environ[var] for var in PRIMITIVE_CACHE_CAPACITY}


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of unmapping it (once per process); returns
    whether the settings took effect."""
    if os.environ.get("RAGTUNE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc malloc: large blocks from the heap, no trimming: %s", ok)
    return ok


__all__ = ["bound_primitive_caches", "keep_freed_memory", "release_freed_memory"]
