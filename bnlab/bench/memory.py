"""`bnlab bench --section memory`: the memory of a sweep on a full-size data set.

A 49,000-image sweep of the deep_bn net (four runs, one epoch) runs as `bnlab run` with 1, 2 and
4 workers while its whole process tree is sampled: the PSS (proportional set size) of every
process, from /proc/PID/smaps_rollup, summed. PSS divides a page shared by n processes by n, so
the prepared data set that every worker maps counts once in the total, as it takes memory once;
RSS would count it in every worker. Without a full CIFAR-10 (50,000 training images), the bench
writes one in the official format (random pixels; five batches of 10,000 and a test batch of
10,000) in a temporary folder. Data is prepared in a temporary folder too: the first preparation
is measured, and the user's cache is left alone.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bnlab.bench.measure import BenchRow, median_iqr, subprocess_env
from bnlab.data import cifar10 as datasets
from bnlab.data import prepared
from bnlab.errors import BnlabError

FULL_TRAIN, FULL_TEST, PER_BATCH = 50_000, 10_000, 10_000
MB = 1e6  # bytes: the bars are in decimal units
BAR_TWO_WORKERS_MB = 1600
BAR_PER_WORKER_MB = 200
BAR_READY_S = 1.0
SAMPLE_S = 0.05

SPEC = """\
name: memory
data: {{num_train: {num_train}, num_val: {num_val}, num_test: {num_test}}}
model: {{hidden_dims: {hidden_dims}, weight_scale: 2.0e-2}}
solver: {{update_rule: adam, optim_config: {{learning_rate: 1.0e-3}}, batch_size: 50, num_epochs: 1}}
seeds: [0, 1]
sweep:
  model.normalization: [null, batchnorm]
"""

READY = """\
import sys, time
from bnlab.data.datasets import load_cifar10
start = time.perf_counter()
load_cifar10(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
print(time.perf_counter() - start)
"""


def bench_memory(quick: bool = False, data_dir: str | Path | None = None) -> list[BenchRow]:
    """Peak PSS of `bnlab run` (the deep_bn-like sweep above) with 1, 2 and 4 workers, the cost of
    the first preparation, and the time a new process takes to have its data ready afterwards.
    quick: tiny data and 1 and 2 workers (for tests)."""
    if not Path("/proc/self/smaps_rollup").exists():
        return [BenchRow("memory", "peak PSS", None, None, 0, "MB", note="needs Linux's /proc/PID/smaps_rollup")]
    worker_counts = (1, 2) if quick else (1, 2, 4)
    splits = (400, 100, 100) if quick else (49_000, 1_000, 1_000)
    with tempfile.TemporaryDirectory(prefix="bnlab-bench-memory-") as tmp:
        tmp = Path(tmp)
        batches, where = _full_size_data(tmp, data_dir, quick)
        env = {**subprocess_env(), prepared.ENV_VAR: str(tmp / "prepared")}
        spec = tmp / "memory.yaml"
        spec.write_text(SPEC.format(**dict(zip(("num_train", "num_val", "num_test"), splits, strict=True)),
                                    hidden_dims=[8] if quick else [100] * 5))  # fmt: skip
        python = [sys.executable, "-c"]
        args = [str(batches), *map(str, splits)]
        prepare_peak, prepare_s = _peak_pss([*python, READY, *args], env)
        ready = [float(_run([*python, READY, *args], env)) for _ in range(3 if quick else 7)]
        peaks, walls = {}, {}
        for workers in worker_counts:
            command = [sys.executable, "-m", "bnlab.cli", "run", str(spec), "--out", str(tmp / f"out{workers}"),
                       "--workers", str(workers), "--data-dir", str(batches)]  # fmt: skip
            peaks[workers], walls[workers] = _peak_pss(command, env)
    sweep = f"4 runs of 1 epoch on {splits[0]:,} images, {where}"
    rows = [
        BenchRow("memory", "first preparation", prepare_s, 0.0, 1, "s", note=f"{splits[0]:,} training images"),
        BenchRow("memory", "peak PSS of the first preparation", prepare_peak / MB, 0.0, 1, "MB"),
        _ready_row(ready),
    ]
    for workers in worker_counts:
        note = f"whole process tree; {sweep}; {walls[workers]:.0f} s"
        if workers == 2:
            note += _bar(peaks[2] / MB, BAR_TWO_WORKERS_MB, "MB")
        rows.append(BenchRow("memory", f"peak PSS, {workers} worker(s)", peaks[workers] / MB, 0.0, 1, "MB", note=note))
    for fewer, more in zip(worker_counts[:-1], worker_counts[1:], strict=True):
        extra = (peaks[more] - peaks[fewer]) / (more - fewer) / MB
        name = f"PSS per extra worker, {fewer} to {more}"
        rows.append(BenchRow("memory", name, extra, 0.0, 1, "MB", note=_bar(extra, BAR_PER_WORKER_MB, "MB")[2:]))
    return rows


def _ready_row(samples: list[float]) -> BenchRow:
    median, iqr = median_iqr(samples)
    note = "load_cifar10 in a new process, data prepared" + _bar(median, BAR_READY_S, "s")
    return BenchRow("memory", "a worker's data ready", median, iqr, len(samples), "s", note=note)


def _bar(value: float, bar: float, unit: str) -> str:
    return f"; bar <= {bar:g} {unit}: {'met' if value <= bar else 'NOT met'}"


def _full_size_data(tmp: Path, data_dir: str | Path | None, quick: bool) -> tuple[Path, str]:
    """A batches folder with the official sizes: the user's when it is full size, else random pixels in tmp."""
    found = datasets.locate_cifar10(data_dir)
    if found is not None and not quick:
        info = datasets.describe_cifar10(data_dir)
        if (info["num_train"] or 0) >= FULL_TRAIN and (info["num_test"] or 0) >= FULL_TEST:
            return found, f"CIFAR-10 in {found}"
    per_batch, test = (200, 100) if quick else (PER_BATCH, FULL_TEST)
    batches = tmp / "cifar-10-batches-py"
    batches.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        images, labels = rng.integers(0, 256, (n, 3072), np.uint8), rng.integers(0, 10, n).tolist()
        batch = {"batch_label": name, "labels": labels, "data": images}
        with open(batches / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the official files' protocol
    return batches, "random pixels in the official format"


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr[-2000:]
        raise BnlabError(f"benchmark command failed ({done.returncode}): {' '.join(command[:4])}…\n{tail}")
    return done.stdout


def _peak_pss(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run command; returns (peak PSS of its process tree in bytes, wall seconds), sampled every SAMPLE_S."""
    peak = 0
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        while process.poll() is None:
            peak = max(peak, sum(_pss(pid) for pid in _tree(process.pid)))
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise BnlabError(f"benchmark command failed ({process.returncode}): {' '.join(command[:6])}…\n{tail}")
    return peak, wall


def _tree(pid: int) -> Iterator[int]:
    """pid and all its descendants (children of every thread, as /proc lists them)."""
    todo = [pid]
    while todo:
        pid = todo.pop()
        yield pid
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                todo += [int(child) for child in children.read_text().split()]
            except OSError:  # the thread or process ended meanwhile
                pass


def _pss(pid: int) -> int:
    """The PSS of one process in bytes (0 if it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
