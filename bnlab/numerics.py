"""Portable numerics: the same BLAS kernels on every x86-64 machine, and a record of what was used.

OpenBLAS picks its kernels by CPU when it loads, and kernels for different CPUs round differently
(an AVX-512 machine's SkylakeX kernels, Haswell's and Sandybridge's give three different histories
for one seed). `pin()` runs from bnlab/__init__.py, before anything imports numpy, and sets
OPENBLAS_CORETYPE to Haswell: kernels every x86-64 CPU with AVX2 runs (AMD's Zen target uses them
too), whatever the machine would pick and whatever the variable said. Spawned workers inherit it.
`BNLAB_BLAS=native` leaves the variable alone (the machine's choice, or the user's OPENBLAS_CORETYPE).

numpy's own SIMD loops (float32 exp, log, tanh) are dispatched by CPU too. Measured on an AVX-512
machine: disabling numpy's AVX-512 groups changes no byte (the AVX2 and AVX-512 loops agree), while
disabling AVX2 changes float32 exp, log and tanh. So nothing of numpy is pinned: results are portable
between x86-64 CPUs with AVX2. A CPU without AVX2 cannot run the Haswell kernels at all, and on arm64
OpenBLAS has no Haswell: there bnlab pins nothing and records `portable: false`.

If numpy was imported before bnlab (a notebook), OpenBLAS has already chosen: `provenance()` reads
the kernel actually in use from threadpoolctl, records it, and warns once when it is not portable.

This module imports no numpy at import time, so `bnlab --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import warnings

PORTABLE_KERNEL = "Haswell"
# Kernel names threadpoolctl reports whose arithmetic is Haswell's (OpenBLAS's Zen target reuses the
# Haswell kernels; measured identical, see /work/shared/design/portable-numerics.md).
PORTABLE_KERNELS = ("Haswell", "Zen")
MODES = ("portable", "native")

# platform: portable numerics cannot exist on this machine (recorded, not warned about at every run)
_pin: dict = {"mode": "portable", "pinned": False, "why_not": None, "platform": False}


def pin() -> None:
    """Choose OpenBLAS's Haswell kernels for this process and its children, unless BNLAB_BLAS=native.

    Must run before numpy's first import (OpenBLAS reads OPENBLAS_CORETYPE once, when it loads).
    Records why it could not pin, for provenance(); never raises, never prints.
    """
    mode = os.environ.get("BNLAB_BLAS", "portable").strip().lower() or "portable"
    _pin["mode"] = mode if mode in MODES else "portable"
    _pin["bad_value"] = None if mode in MODES else os.environ.get("BNLAB_BLAS")
    if _pin["mode"] == "native":
        _pin["why_not"] = "BNLAB_BLAS=native"
        return
    if "numpy" in sys.modules:
        _pin["why_not"] = "numpy was imported before bnlab, so its BLAS had already chosen its kernels"
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        _pin.update(why_not=f"OpenBLAS has no Haswell kernels on {platform.machine()}", platform=True)
        return
    if not _has_avx2():
        _pin.update(why_not="this CPU lacks AVX2, which the Haswell kernels need", platform=True)
        return
    os.environ["OPENBLAS_CORETYPE"] = PORTABLE_KERNEL
    _pin["pinned"] = True


def check_setting() -> None:
    """SpecError when BNLAB_BLAS holds neither 'portable' nor 'native' (the CLI's commands call it)."""
    if _pin.get("bad_value") is not None:
        from bnlab.errors import SpecError

        raise SpecError(
            f"BNLAB_BLAS={_pin['bad_value']!r}: choose portable (the default: the same numbers on every "
            f"x86-64 machine) or native (this machine's own BLAS kernels), or unset it"
        )


def _cpuinfo(field: str) -> str | None:
    """The value of `field` ('flags', 'model name') for the first CPU in /proc/cpuinfo, or None
    where there is no such file (not Linux) or field."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _has_avx2() -> bool:
    """False only when /proc/cpuinfo says so (Linux); elsewhere an x86-64 CPU is assumed to have it
    (every one made since 2015 does)."""
    flags = _cpuinfo("flags")
    return flags is None or "avx2" in flags.split()


def cpu_model() -> str:
    """The CPU's marketing name ('AMD EPYC', 'Apple M2'), or the architecture when unknown."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


@functools.cache
def provenance() -> dict:
    """What this process's numbers depend on, for a run's meta.json: numpy, its BLAS (name, version,
    the kernel in use), numpy's SIMD targets in use, the CPU, and whether numerics are portable.

    Warns once (UserWarning) when portable numerics were asked for and are not in effect although
    this machine could have them (numpy imported first, another BLAS).
    """
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = next((lib for lib in threadpool_info() if lib.get("user_api") == "blas"), {})
    kernel = blas.get("architecture")
    portable = _pin["mode"] == "portable" and kernel in PORTABLE_KERNELS
    record = {
        "mode": _pin["mode"],
        "portable": portable,
        "blas": {"name": blas.get("internal_api"), "version": blas.get("version"), "kernel": kernel},
        "numpy": np.__version__,
        "numpy_simd": _numpy_simd(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
    }
    if _pin["mode"] == "portable" and not portable:
        why = _pin["why_not"] or f"the BLAS in use is {blas.get('internal_api') or 'unknown'}, kernel {kernel}"
        record["why_not_portable"] = why
        if not _pin["platform"]:
            _warn_not_portable(why)
    if _pin.get("bad_value") is not None:
        warnings.warn(
            f"bnlab: BNLAB_BLAS={_pin['bad_value']!r} is neither 'portable' nor 'native'; using portable",
            stacklevel=2,
        )
    return record


def _warn_not_portable(why: str) -> None:
    warnings.warn(
        f"bnlab: numerics are not portable ({why}); results may differ in the last bits from "
        f"another machine's. Import bnlab before numpy, or set OPENBLAS_CORETYPE={PORTABLE_KERNEL}.",
        stacklevel=3,
    )


def _numpy_simd() -> list[str]:
    """numpy's dispatched SIMD targets this CPU enables (numpy >= 1.20 reports them)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        except ImportError:
            return []
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


# The keys of a run's provenance that can change its numbers, as shown when runs differ.
DIFFERENCE_KEYS = {
    "bnlab": ("versions", "bnlab"),
    "commit": ("git_commit",),
    "numpy": ("versions", "numpy"),
    "BLAS": ("numerics", "blas", "name"),
    "BLAS version": ("numerics", "blas", "version"),
    "kernel": ("numerics", "blas", "kernel"),
    "portable": ("numerics", "portable"),
    "CPU": ("numerics", "cpu"),
}


def provenance_differences(metas: list[dict]) -> dict[str, dict[str, int]]:
    """Across runs' meta.json contents: each provenance field that takes more than one value, with
    how many runs have each value ({'kernel': {'Haswell': 10, 'SkylakeX': 2}}). Runs made before
    provenance was recorded count as 'unrecorded'."""
    differing = {}
    for label, path in DIFFERENCE_KEYS.items():
        counts: dict[str, int] = {}
        for meta in metas:
            value = meta
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            shown = "unrecorded" if value is None else str(value)
            counts[shown] = counts.get(shown, 0) + 1
        if len(counts) > 1:
            differing[label] = counts
    return differing


def describe_differences(differing: dict[str, dict[str, int]]) -> str:
    """'kernel: Haswell (10 runs), SkylakeX (2 runs); numpy: ...', for the CLI and the report."""
    return "; ".join(
        f"{label}: " + ", ".join(f"{value} ({n} run{'s' if n != 1 else ''})" for value, n in counts.items())
        for label, counts in differing.items()
    )


def numerics_summary(metas: list[dict]) -> str:
    """'portable: openblas 0.3.31 Haswell kernels, AMD EPYC' for the runs' meta.json contents, one
    entry per distinct setting; 'unrecorded' for runs made before bnlab recorded it."""
    seen = []
    for meta in metas:
        record = meta.get("numerics")
        if not isinstance(record, dict):
            text = "unrecorded"
        else:
            blas = record.get("blas") or {}
            mode = "portable" if record.get("portable") else f"not portable ({record.get('mode')})"
            text = f"{mode}: {blas.get('name')} {blas.get('version')} {blas.get('kernel')} kernels, {record.get('cpu')}"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "unknown"
