"""How bnlab bench measures: a row per measured quantity (median and interquartile range of its
samples), timing on one core as a sweep worker computes, and commands timed in a fresh process."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bnlab.errors import BnlabError
from bnlab.lab.process_setup import flush_subnormals, keep_large_arrays_on_heap

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds bnlab/ and, in a checkout, configs/


@dataclass(frozen=True)
class BenchRow:
    """One measured quantity.

    median, iqr: in `unit` ('s', 'MB', or 'x' for a speedup); median is None when the benchmark
        could not run, and `note` says why.
    repeats: how many measurements the median is taken over.
    ratio: the median as a multiple of a reference named by `ratio_of` (e.g. 'x np.copy').
    """

    group: str
    name: str
    median: float | None
    iqr: float | None
    repeats: int
    unit: str = "s"
    ratio: float | None = None
    ratio_of: str = ""
    note: str = ""


def rows_to_json(rows: Sequence[BenchRow]) -> str:
    """The rows as a JSON array of objects with BenchRow's fields."""
    return json.dumps([asdict(row) for row in rows], indent=2)


def saved_json(rows: Sequence[BenchRow]) -> str:
    """What `bnlab bench --save` writes: {"machine": what the numbers depend on (CPU, cores, BLAS,
    numpy, numba, PyTorch when installed), "rows": the rows}."""
    from importlib.metadata import PackageNotFoundError, version

    from bnlab import numerics

    machine = {**numerics.provenance(), "cores": os.cpu_count()}
    for package in ("numba", "torch"):
        try:
            machine[package] = version(package)
        except PackageNotFoundError:
            machine[package] = None
    return json.dumps({"machine": machine, "rows": [asdict(row) for row in rows]}, indent=2)


# --- measuring -------------------------------------------------------------------------------


def median_iqr(samples: Sequence[float]) -> tuple[float, float]:
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return float(median), float(q3 - q1)


def row(group: str, name: str, samples: Sequence[float], unit: str = "s", **fields) -> BenchRow:
    median, iqr = median_iqr(samples)
    return BenchRow(group, name, median, iqr, len(samples), unit, **fields)


@contextlib.contextmanager
def single_core() -> Iterator[None]:
    """As a sweep worker computes (one BLAS thread, subnormals flushed, large arrays on the heap:
    bnlab.lab.process_setup), without the garbage collector's pauses in the middle of a
    measurement (as timeit does)."""
    keep_large_arrays_on_heap()  # for the whole process, as in a worker
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with threadpool_limits(limits=1), flush_subnormals():
            yield
    finally:
        if gc_was_enabled:
            gc.enable()


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_per_sample(fn: Callable[[], object], min_s: float = 5e-3) -> int:
    """Enough calls that one sample lasts min_s, far above the clock's resolution (doubling, as timeit)."""
    calls = 1
    while seconds_per_call(fn, calls) * calls < min_s:
        calls *= 2
    return calls


def paired_rows(
    group: str, pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]], note: str, rounds: int, calls: int
) -> list[BenchRow]:
    """Each pair's numpy layer and the compiled one that replaces it, alternating for `rounds`
    rounds of `calls` calls (one core): their times in ms and the paired speedup."""
    rows = []
    with single_core():
        for name, (numpy_version, compiled) in pairs.items():
            times: dict[str, list[float]] = {"numpy": [], "compiled": []}
            for _ in range(rounds):
                times["numpy"].append(seconds_per_call(numpy_version, calls) * 1e3)
                times["compiled"].append(seconds_per_call(compiled, calls) * 1e3)
            rows.append(row(group, f"{name}, numpy", times["numpy"], unit="ms", note=note))
            rows.append(row(group, f"{name}, compiled", times["compiled"], unit="ms", note=note))
            speedups = [a / c for a, c in zip(times["numpy"], times["compiled"], strict=True)]
            rows.append(row(group, f"{name}: numpy / compiled time", speedups, unit="x", note="paired per round"))
    return rows


def subprocess_env() -> dict[str, str]:
    """This environment, with this checkout first on the path: the subprocess runs the same bnlab."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def timed_subprocess(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of `command`, process start-up included; BnlabError if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env or subprocess_env()
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BnlabError(f"benchmark command failed with exit code {done.returncode}: {' '.join(command)}\n{tail}")
    return elapsed
