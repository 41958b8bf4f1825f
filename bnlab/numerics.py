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

# The arithmetic of bnlab.nn.kernels' compiled loops: raise it when any loop's order of operations
# changes. Runs record it with numba's version; the kernel cache is keyed by both and by bnlab's.
KERNELS_VERSION = 1

PORTABLE_KERNEL = "Haswell"
# Kernel names threadpoolctl reports whose arithmetic is Haswell's (OpenBLAS's Zen target reuses the
# Haswell kernels: smoke's histories measured byte-identical under both).
PORTABLE_KERNELS = ("Haswell", "Zen")
MODES = ("portable", "native")

# The CPU flags (as /proc/cpuinfo names them) that each OpenBLAS kernel set executes: a set forced
# with OPENBLAS_CORETYPE on a CPU without them dies of an illegal instruction, without a word.
KERNEL_NEEDS: dict[str, tuple[str, ...]] = {
    "Prescott": (),  # SSE3: every x86-64 CPU
    "Nehalem": ("sse4_2",),
    "Sandybridge": ("avx",),
    "Haswell": ("avx2",),
    "Zen": ("avx2",),
    "SkylakeX": ("avx512f",),
    "Cooperlake": ("avx512f", "avx512_bf16"),
    "SapphireRapids": ("avx512f", "avx512_bf16", "amx_bf16"),
}
# In a list of kernel sets to test, what runs in place of one this CPU cannot execute: the next
# one down that it may (an AVX2-only CPU tests Zen where an AVX-512 one tests SkylakeX).
STAND_IN = {"SapphireRapids": "Cooperlake", "Cooperlake": "SkylakeX", "SkylakeX": "Zen", "Zen": "Sandybridge",
            "Haswell": "Sandybridge", "Sandybridge": "Nehalem", "Nehalem": "Prescott"}  # fmt: skip

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
        _pin["bad_kernel"] = unrunnable_kernel_message(os.environ.get("OPENBLAS_CORETYPE"), cpu_flags())
        return
    if "numpy" in sys.modules:
        _pin["why_not"] = "numpy was imported before bnlab, so its BLAS had already chosen its kernels"
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        _pin.update(why_not=f"OpenBLAS has no Haswell kernels on {platform.machine()}", platform=True)
        return
    if missing_flags(PORTABLE_KERNEL, cpu_flags()):
        _pin.update(why_not="this CPU lacks AVX2, which the Haswell kernels need", platform=True)
        return
    os.environ["OPENBLAS_CORETYPE"] = PORTABLE_KERNEL
    _pin["pinned"] = True


def check_setting() -> None:
    """SpecError when BNLAB_BLAS holds neither 'portable' nor 'native', or names with native an
    OPENBLAS_CORETYPE this CPU cannot execute (the CLI calls it before anything loads numpy)."""
    from bnlab.errors import SpecError

    if _pin.get("bad_value") is not None:
        raise SpecError(
            f"BNLAB_BLAS={_pin['bad_value']!r}: choose portable (the default: the same numbers on every "
            f"x86-64 machine) or native (this machine's own BLAS kernels), or unset it"
        )
    if _pin.get("bad_kernel"):
        raise SpecError(_pin["bad_kernel"])


def cpu_flags() -> set[str] | None:
    """The instruction-set flags of this CPU from /proc/cpuinfo ('avx2', 'avx512f', ...), or None
    where they cannot be read (not Linux)."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


def _kernel_name(kernel: str) -> str | None:
    """The KERNEL_NEEDS spelling of an OpenBLAS kernel name, whatever its case; None if unknown."""
    return next((k for k in KERNEL_NEEDS if k.lower() == kernel.strip().lower()), None)


def missing_flags(kernel: str, flags: set[str] | None) -> list[str]:
    """The CPU flags `kernel` needs that `flags` lacks: empty when it can run, when the kernel is
    not one bnlab knows, or when the flags are unknown (then nothing can be said)."""
    known = _kernel_name(kernel)
    if known is None or flags is None:
        return []
    return [flag for flag in KERNEL_NEEDS[known] if flag not in flags]


def unrunnable_kernel_message(kernel: str | None, flags: set[str] | None) -> str | None:
    """One line saying that OPENBLAS_CORETYPE=kernel cannot run on a CPU with `flags`, and the fix;
    None when it can (or nothing is forced)."""
    missing = missing_flags(kernel or "", flags)
    if not missing:
        return None
    return (
        f"OPENBLAS_CORETYPE={kernel.strip()}: this CPU lacks {', '.join(missing)}, which OpenBLAS's {kernel.strip()} "
        f"kernels execute, so numpy would die of an illegal instruction; choose a kernel set this CPU runs "
        f"({', '.join(runnable_kernels(flags))}), or unset OPENBLAS_CORETYPE or BNLAB_BLAS"
    )


def runnable_kernels(flags: set[str] | None) -> list[str]:
    """Every kernel set of KERNEL_NEEDS a CPU with `flags` can execute."""
    return [kernel for kernel in KERNEL_NEEDS if not missing_flags(kernel, flags)]


def choose_kernels(wanted: list[str], flags: set[str] | None) -> tuple[list[str], list[str]]:
    """The kernel sets to test of `wanted`, each this CPU cannot run replaced by its STAND_IN (the
    next one down it can run and that is not already chosen), and a line for each one left out."""
    chosen: list[str] = []
    notes = []
    asked = {_kernel_name(k) or k for k in wanted if not missing_flags(k, flags)}  # these keep their place
    for kernel in wanted:
        name = _kernel_name(kernel) or kernel
        if not missing_flags(name, flags):
            chosen += [name] if name not in chosen else []
            continue
        stand_in = STAND_IN.get(name)
        while stand_in is not None and (missing_flags(stand_in, flags) or stand_in in chosen or stand_in in asked):
            stand_in = STAND_IN.get(stand_in)
        why = f"left out {name}: this CPU lacks {', '.join(missing_flags(name, flags))}"
        if stand_in is None:
            notes.append(f"{why}, and no kernel set below it is left to stand in")
        else:
            chosen.append(stand_in)
            notes.append(f"{why}; {stand_in} runs in its place")
    return chosen, notes


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

    # numpy's own BLAS: scipy (which numba and the claims lab load) brings another OpenBLAS
    libraries = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    blas = next((lib for lib in libraries if "numpy" in lib.get("filepath", "")), libraries[0] if libraries else {})
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
        "kernels": _kernels(),
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


def kernel_cache_dir() -> str:
    """Where numba keeps bnlab's compiled kernels: the user's cache folder, one folder per bnlab,
    numba and kernels version (numba keys its files by CPU and source within it)."""
    from importlib.metadata import PackageNotFoundError, version

    import platformdirs

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "unknown"

    name = f"bnlab-{installed('bnlab')}-numba-{installed('numba')}-kernels-{KERNELS_VERSION}"
    return os.path.join(platformdirs.user_cache_dir("bnlab"), "kernels", name)


def _kernels() -> dict:
    """The compiled kernels' version, numba's, and the CPU numba compiles for."""
    numba = sys.modules.get("numba")
    return {
        "version": KERNELS_VERSION,
        "numba": getattr(numba, "__version__", None),
        "cpu_name": os.environ.get("NUMBA_CPU_NAME", "host"),
    }


# The keys of a run's provenance that can change its numbers, as shown when runs differ.
DIFFERENCE_KEYS = {
    "kernels": ("numerics", "kernels", "version"),
    "numba": ("numerics", "kernels", "numba"),
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
