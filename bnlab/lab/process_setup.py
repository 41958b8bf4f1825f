"""How a training process is set up for speed, without changing any number that matters.

Subnormal floats are flushed to zero, as torch.set_flush_denormal(True) does. Deep nets with tiny
initial weights (the weight-scale sweep's 1e-4 without normalization) produce gradients near
1e-20 whose squares in Adam fall below float32's smallest normal number (1.2e-38). x86 CPUs
compute with such subnormal numbers through a slow microcode path, which made these runs three
times slower than the others. With the CPU's FTZ and DAZ flags set, subnormals become 0: values
10^30 times smaller than anything that can change a float32 weight. Supported on x86-64 Linux
(glibc's fenv); elsewhere nothing changes.

Large temporary arrays are served from the heap, and kept there once freed. With
MALLOC_TRIM_THRESHOLD_ in the environment (Dask sets it for its workers, and in the environment of
the process that starts a cluster), glibc stops adapting its mmap threshold: every array over 128
KiB of a training step (a 50 x 3072 minibatch is 600 KiB) is then mapped, page-faulted and
unmapped anew, and runs take twice as long. glibc's own threshold stops at 32 MiB, while an
accuracy check of 1,000 images through a conv net allocates arrays of hundreds of MB (the residual
conv net's im2col columns: 590 MB): mapped anew for every check, their page faults were half of
such a run's time. Setting the thresholds explicitly keeps them on the heap (glibc only); the
price is a process that keeps its peak memory instead of returning it between checks.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator

_FTZ_DAZ = 0x8040  # MXCSR bit 15 flushes subnormal results to zero, bit 6 reads subnormal inputs as zero


class _Fenv(ctypes.Structure):
    """glibc's fenv_t on x86-64: the x87 environment (28 bytes), then the SSE control register."""

    _fields_ = [("x87", ctypes.c_ubyte * 28), ("mxcsr", ctypes.c_uint32)]


def _libm() -> ctypes.CDLL | None:
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None
    name = ctypes.util.find_library("m")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


@contextlib.contextmanager
def flush_subnormals() -> Iterator[bool]:
    """Set FTZ and DAZ for the calling thread (where numpy and single-threaded BLAS compute) and
    restore the previous state on exit. Yields whether the flags could be set."""
    libm = _libm()
    saved = _Fenv()
    if libm is None or libm.fegetenv(ctypes.byref(saved)) != 0:
        yield False
        return
    flushed = _Fenv.from_buffer_copy(saved)
    flushed.mxcsr |= _FTZ_DAZ
    libm.fesetenv(ctypes.byref(flushed))
    try:
        yield True
    finally:
        libm.fesetenv(ctypes.byref(saved))


def keep_large_arrays_on_heap() -> bool:
    """Serve allocations up to 1 GiB from the heap and keep up to 1 GiB of freed memory for reuse,
    in this whole process. Returns whether it could (glibc's mallopt)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def release_free_memory() -> bool:
    """Give the free memory of the heap back to the operating system (glibc's malloc_trim), e.g.
    after preparing a data set: otherwise a process may keep the peak of its heap for its whole
    life, beside the workers it starts. Returns whether it could."""
    malloc_trim = _libc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def _libc_function(name: str):
    """The C library's function `name` (glibc's mallopt, malloc_trim), or None where it has none."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
