"""Giving freed memory back to the operating system between the stages of a long job.

glibc's malloc raises its mmap threshold (up to 32 MiB) after the first large free, so the many
3-10 MB tensors of a calibration pass (gradient accumulators, second moments, activations) and
llama.cpp's quantization buffers come from the heap, and freeing them leaves free pages inside it
that still count as resident. `malloc_trim(0)` returns those pages. Measured on the main job
(bench/build_memory.py, SmolLM2-135M, raspberry-pi-5): 2461 MiB resident after the plan stage before,
1133 MiB with this and the calibration statistics (~0.33 GB) dropped, so validate no longer sets the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl has no malloc_trim
    except OSError:
        return None


def release() -> bool:
    """Collect garbage (reference cycles can hold tensors) and return the heap's free pages to the OS.
    True when malloc_trim ran and released something (glibc only; elsewhere only gc runs)."""
    gc.collect()
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
