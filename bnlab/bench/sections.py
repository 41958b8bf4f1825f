"""Benchmarks behind `bnlab bench`: the notebooks' weight-scale sweep end to end, one training
step, the batch-norm kernels, the convolutional net against PyTorch, start-up time and peak
memory, the cost of recording, and the memory of a sweep on full-size data (bnlab.bench.memory).

Every number is the median of repeated measurements, with the interquartile range (IQR) of those
measurements as its spread. In-process code runs on one BLAS thread with subnormals flushed, as
in a sweep worker, so its numbers are per core and comparable to the sweep's. Nothing here prints:
run_benchmarks returns rows and the CLI renders them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bnlab import layers
from bnlab.bench.conv import CONV_BATCHES, TORCH_HINT, bench_conv, conv_solver
from bnlab.bench.measure import (
    PACKAGE_ROOT,
    BenchRow,
    calls_per_sample,
    median_iqr,
    paired_rows,
    row,
    seconds_per_call,
    single_core,
    subprocess_env,
    timed_subprocess,
)
from bnlab.bench.memory import bench_memory
from bnlab.data import cifar10 as datasets
from bnlab.data.datasets import DATASETS
from bnlab.errors import BnlabError
from bnlab.lab.choices import BenchSection
from bnlab.nn import fused, norms, optim
from bnlab.nn.nets import FullyConnectedNet
from bnlab.nn.probes import DEFAULT_EVERY, Recorder
from bnlab.nn.solver import Solver
from bnlab.spec.yaml_text import safe_load

SECTIONS = tuple(s.value for s in BenchSection)
DEFAULT_SPEC = PACKAGE_ROOT / "configs" / "weight_scale.yaml"


def run_benchmarks(
    sections: set[str] | None = None,
    repeats: int = 3,
    quick: bool = False,
    spec: str | Path | None = None,
    data_dir: str | Path | None = None,
    on_section: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Run the chosen `sections` (default all of SECTIONS) and return their rows, in that order.

    repeats: runs of the sweep per worker count. quick: tiny sizes and few iterations (for tests).
    spec: the sweep's spec file (default configs/weight_scale.yaml of this checkout); data_dir as
    for `bnlab run`. on_section(name) is called as each section starts.
    """
    chosen = set(SECTIONS) if sections is None else set(sections)
    unknown = chosen - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    benchmarks = {
        "sweep": lambda: bench_sweep(Path(spec) if spec is not None else DEFAULT_SPEC, repeats, data_dir),
        "step": lambda: bench_step(quick),
        "batchnorm": lambda: bench_batchnorm(quick),
        "conv": lambda: bench_conv(quick),
        "startup": lambda: bench_startup(2 if quick else 10),
        "record": lambda: bench_record(quick, repeats),
        "blas": lambda: bench_blas(Path(spec) if spec is not None else DEFAULT_SPEC, repeats, quick, data_dir),
        "memory": lambda: bench_memory(quick, data_dir),
    }
    rows: list[BenchRow] = []
    for name in SECTIONS:
        if name in chosen:
            if on_section is not None:
                on_section(name)
            rows += benchmarks[name]()
    return rows


# --- 1. the weight-scale sweep end to end ----------------------------------------------------


def bench_sweep(spec: Path, repeats: int = 3, data_dir: str | Path | None = None) -> list[BenchRow]:
    """`bnlab run spec --set seeds=[0] --force` with 1 and 2 workers, `repeats` times each.

    Rows: wall time per worker count (process start and data loading included), the speedup of 2
    workers (median of the paired ratios 1 worker / 2 workers), and the peak memory of the
    processes that trained (peak_rss_mb of the runs' meta.json, the largest of each sweep).
    """
    names = [f"{spec.name}, 1 worker", f"{spec.name}, 2 workers"]
    batches = datasets.locate_cifar10(data_dir)
    missing = None
    if not spec.is_file():
        missing = f"spec {spec} not found (pass spec=...)"
    elif batches is None:
        where = datasets.find_data_dir(data_dir)
        missing = f"CIFAR-10 not found under {where}: set BNLAB_DATA_DIR or run `bnlab data --download`"
    if missing:
        return [BenchRow("sweep", name, None, None, 0, note=missing) for name in names]

    seconds: dict[int, list[float]] = {1: [], 2: []}
    peak_mb: dict[int, list[float]] = {1: [], 2: []}
    torch_seconds: list[float] = []
    with_torch = importlib.util.find_spec("torch") is not None
    num_runs, work, floor = 0, None, []
    for _ in range(repeats):
        for workers in (1, 2):  # interleaved, so both worker counts share the machine's drifts
            with tempfile.TemporaryDirectory(prefix="bnlab-bench-") as out:
                command = [
                    sys.executable, "-m", "bnlab.cli", "run", str(spec), "--set", "seeds=[0]",
                    "--out", out, "--workers", str(workers), "--data-dir", str(batches), "--force",
                ]  # fmt: skip
                seconds[workers].append(timed_subprocess(command))
                metas = [json.loads(path.read_text()) for path in Path(out).glob("*/*/meta.json")]
                work = work or first_layer_work(sorted(Path(out).glob("*/*/meta.json")))
            num_runs = len(metas)
            peaks = [m["peak_rss_mb"] for m in metas if m.get("peak_rss_mb") is not None]
            if peaks:
                peak_mb[workers].append(max(peaks))
        if with_torch:  # the same runs in PyTorch, 2 workers, in the same round
            peer = [
                sys.executable,
                "-m",
                "bnlab.bench.torch_peer",
                str(spec),
                "--workers",
                "2",
                "--data-dir",
                str(batches),
            ]
            torch_seconds.append(timed_subprocess(peer))
        if work:  # in the same round, so that it shares the machine's drifts
            floor.append(first_layer_floor(work))

    note = f"{num_runs} runs, process start and data loading included"
    speedups = [one / two for one, two in zip(seconds[1], seconds[2], strict=True)]
    rows = [
        row("sweep", names[0], seconds[1], note=note),
        row("sweep", names[1], seconds[2], note=note),
        row("sweep", "speedup of 2 workers over 1", speedups, unit="x", note="median of paired ratios"),
    ]
    if floor:
        floor_note = "numpy on one core: every run's first-layer products, halved; no process, no other layer"
        rows.append(row("sweep", "first-layer products alone, 2 workers (the floor)", floor, note=floor_note))
    if with_torch:
        peer_note = "bnlab.bench.torch_peer: the same runs, data and checks"
        rows.append(row("sweep", "PyTorch (same runs), 2 workers", torch_seconds, note=peer_note))
        ratios = [theirs / ours for theirs, ours in zip(torch_seconds, seconds[2], strict=True)]
        rows.append(row("sweep", "PyTorch / bnlab time, 2 workers", ratios, unit="x", note="median of paired ratios"))
        if floor:
            ceiling = [theirs / ours for theirs, ours in zip(torch_seconds, floor, strict=True)]
            ceiling_note = "median of paired ratios: bnlab's if nothing but those products took time"
            rows.append(row("sweep", "PyTorch / the floor, 2 workers", ceiling, unit="x", note=ceiling_note))
    else:
        rows.append(BenchRow("sweep", "PyTorch (same runs), 2 workers", None, None, 0, note=TORCH_HINT))
    memory_names = {1: "peak RSS, 1 worker (the bnlab process)", 2: "peak RSS of a worker, 2 workers"}
    for workers, name in memory_names.items():
        if peak_mb[workers]:
            rows.append(row("memory", name, peak_mb[workers], unit="MB", note="peak_rss_mb in meta.json"))
        else:
            rows.append(BenchRow("memory", name, None, None, 0, "MB", note="not recorded on this platform"))
    return rows


def first_layer_floor(work: dict[tuple[int, ...], int]) -> float:
    """Seconds that the first layer's matrix products of a sweep's runs (first_layer_work) take
    on one core, divided by 2 workers: each step's input batch times W1 and its transpose times
    the gradient (dW1), and each accuracy check's images times W1, numpy on one BLAS thread. A
    bound no schedule of the rest of the work can beat with these BLAS kernels."""
    rng = np.random.RandomState(0)
    total = 0.0
    with single_core():
        for (input_dim, width, batch, steps, checks, train_rows, val_rows), runs in work.items():
            X = rng.randn(max(train_rows, val_rows, batch), input_dim).astype(np.float32)
            W, dout = rng.randn(input_dim, width).astype(np.float32), rng.randn(batch, width).astype(np.float32)
            x = X[:batch]
            step = seconds_per_call(lambda: (x @ W, x.T @ dout), 20)  # noqa: B023 - called at once
            check = seconds_per_call(lambda: (X[:train_rows] @ W, X[:val_rows] @ W), 3)  # noqa: B023
            total += runs * (steps * step + checks * check)
    return total / 2


def first_layer_work(meta_files: list[Path]) -> dict[tuple[int, ...], int] | None:
    """How many runs (of the folders whose meta.json is given) have each first-layer workload
    (input features, first width, batch, steps, accuracy checks, checked training images, checked
    validation images), from their config.yaml, history.csv and epochs.csv; None if any is not a
    fully connected net."""
    work: dict[tuple[int, ...], int] = {}
    for meta in meta_files:
        config = safe_load((meta.parent / "config.yaml").read_text())
        model, solver, data = config["model"], config["solver"], config["data"]
        if model["architecture"] != "fc" or not model["hidden_dims"]:
            return None
        steps = len((meta.parent / "history.csv").read_text().splitlines()) - 1
        checks = len((meta.parent / "epochs.csv").read_text().splitlines()) - 1
        train_rows = min(data["num_train"], solver.get("num_train_samples") or data["num_train"])
        val_rows = min(data["num_val"], solver.get("num_val_samples") or data["num_val"])
        input_dim = DATASETS[data["dataset"]].input_dim
        shape = (input_dim, model["hidden_dims"][0], solver["batch_size"], steps, checks, train_rows, val_rows)
        work[shape] = work.get(shape, 0) + 1
    return work


# --- 2. one training iteration -----------------------------------------------------------------


def bench_step(quick: bool = False) -> list[BenchRow]:
    """Solver._step (a batch of 50: forward, backward, Adam) of the 6-layer and the 8-layer
    batch-norm nets in float32 and float64, on random data of CIFAR-10's shape (N, 3, 32, 32)."""
    num_train, iterations, warmup = (100, 5, 1) if quick else (1000, 200, 20)
    rows = []
    with single_core():
        for hidden_dims in ([100] * 5, [50] * 7):
            for dtype in (np.float32, np.float64):
                solver = _random_solver(hidden_dims, dtype, num_train)
                for _ in range(warmup):
                    solver._step()
                samples = [seconds_per_call(solver._step, 1) for _ in range(iterations)]
                name = f"{len(hidden_dims) + 1} layers, hidden {hidden_dims[0]}x{len(hidden_dims)}, {dtype.__name__}"
                rows.append(row("step", name, samples, note="Solver._step: batch 50, batchnorm, adam"))
    return rows + _step_layer_rows(quick)


def _step_layer_rows(quick: bool) -> list[BenchRow]:
    """The compiled parts of the 8-layer net's step beside the numpy passes they replace, float32:
    a hidden layer's batch norm + ReLU (batch 50, width 50; and in test mode on an accuracy check's
    1,000 samples) and Adam on the flat buffer."""
    rng = np.random.RandomState(0)
    h, dout = rng.randn(50, 50).astype(np.float32), rng.randn(50, 50).astype(np.float32)
    gamma, beta = np.ones(50, np.float32), np.zeros(50, np.float32)
    checked = rng.randn(1000, 50).astype(np.float32)
    running = {"mode": "test", "running_mean": rng.randn(50).astype(np.float32), "running_var": np.ones(50, np.float32)}
    solver = _random_solver([50] * 7, np.float32, 100)
    # the Solver's flat buffers start on 64-byte boundaries (fused.aligned_zeros)
    flat, flat_grads = (fused.aligned_zeros(solver._flat.size, np.float32) for _ in range(2))
    flat[...], flat_grads[...] = solver._flat, rng.randn(solver._flat.size)

    def numpy_norm_relu():
        out, bn_cache = norms.batchnorm_forward(h, gamma, beta, {"mode": "train"})
        return layers.relu_forward(out), bn_cache

    (_, relu_cache), bn_cache = numpy_norm_relu()
    _, fused_cache = fused.batchnorm_relu_forward(h, gamma, beta, {"mode": "train"})
    numpy_state, compiled_state = {}, {}
    pairs = {
        "batch norm + ReLU forward": (
            numpy_norm_relu,
            lambda: fused.batchnorm_relu_forward(h, gamma, beta, {"mode": "train"}),
        ),
        "batch norm + ReLU backward": (
            lambda: norms.batchnorm_backward_alt(layers.relu_backward(dout, relu_cache), bn_cache),
            lambda: fused.batchnorm_relu_backward(dout, fused_cache),
        ),
        "batch norm + ReLU, test mode, 1,000 x 50": (
            lambda: layers.relu_forward(norms.batchnorm_forward(checked, gamma, beta, running)[0]),
            lambda: fused.batchnorm_relu_forward(checked, gamma, beta, running),
        ),
        f"Adam, {flat.size:,} parameters": (
            lambda: optim.adam(flat, flat_grads, numpy_state),
            lambda: fused.adam(flat, flat_grads, compiled_state),  # in place: the Solver's use
        ),
    }
    rounds, calls = (3, 1) if quick else (15, 50)
    return paired_rows("step", pairs, "the 8-layer net's: batch 50 (a check: 1,000), width 50, float32", rounds, calls)


def _random_solver(hidden_dims: list[int], dtype: type, num_train: int) -> Solver:
    rng = np.random.RandomState(0)
    X = rng.randn(num_train, 3, 32, 32).astype(dtype)
    y = rng.randint(10, size=num_train)
    model = FullyConnectedNet(hidden_dims, normalization="batchnorm", weight_scale=2e-2, dtype=dtype, rng=rng)
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    return Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=50, rng=rng)


# --- 3. the batch-norm kernels -----------------------------------------------------------------


def bench_batchnorm(quick: bool = False) -> list[BenchRow]:
    """batchnorm_forward (train), batchnorm_backward and batchnorm_backward_alt at the notebooks'
    (100, 500) and at (4096, 1024), float64 and float32, each also as a multiple of np.copy of the
    same array (passes over memory); and the speedup of the closed-form backward over the graph one."""
    shapes = [(16, 32)] if quick else [(100, 500), (4096, 1024)]
    rounds = 3 if quick else 15
    rows = []
    with single_core():
        for shape in shapes:
            for dtype in (np.float64, np.float32):
                rows += _batchnorm_rows(shape, dtype, rounds)
    return rows


def _batchnorm_rows(shape: tuple[int, int], dtype: type, rounds: int) -> list[BenchRow]:
    rng = np.random.RandomState(0)
    n, d = shape
    x = (5 * rng.randn(n, d) + 12).astype(dtype)  # the notebooks' shifted, scaled input
    gamma, beta, dout = rng.randn(d).astype(dtype), rng.randn(d).astype(dtype), rng.randn(n, d).astype(dtype)
    bn_param = {"mode": "train"}
    _, cache = layers.batchnorm_forward(x, gamma, beta, bn_param)
    kernels = {
        "np.copy": lambda: np.copy(x),
        "batchnorm_forward (train)": lambda: layers.batchnorm_forward(x, gamma, beta, bn_param),
        "batchnorm_backward": lambda: layers.batchnorm_backward(dout, cache),
        "batchnorm_backward_alt": lambda: layers.batchnorm_backward_alt(dout, cache),
    }
    calls = {name: calls_per_sample(fn) for name, fn in kernels.items()}
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(rounds):  # round-robin, so every kernel sees the same machine load
        for name, fn in kernels.items():
            samples[name].append(seconds_per_call(fn, calls[name]))

    size = f"{n}x{d} {np.dtype(dtype).name}"
    copy_s = median_iqr(samples["np.copy"])[0]
    gb_per_s = 2 * x.nbytes / copy_s / 1e9
    rows = [row("batchnorm", f"np.copy {size}", samples["np.copy"], note=f"reference: {gb_per_s:.1f} GB/s read+write")]
    for name in list(kernels)[1:]:
        ratio = median_iqr(samples[name])[0] / copy_s
        rows.append(row("batchnorm", f"{name} {size}", samples[name], ratio=ratio, ratio_of="x np.copy"))
    speedups = [g / a for g, a in zip(samples["batchnorm_backward"], samples["batchnorm_backward_alt"], strict=True)]
    rows.append(
        row("batchnorm", f"speedup of backward_alt over backward {size}", speedups, unit="x", note="paired per round")
    )
    return rows


# --- 5. start-up time --------------------------------------------------------------------------


def bench_startup(repeats: int = 10) -> list[BenchRow]:
    """Wall time of `bnlab --help` as a new process, next to the bare interpreter's start-up."""
    commands = {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "bnlab --help": [sys.executable, "-m", "bnlab.cli", "--help"],
    }
    for command in commands.values():  # warm the file cache: measure start-up, not the disk
        timed_subprocess(command)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            samples[name].append(timed_subprocess(command))
    return [row("startup", name, samples[name], note="new process") for name in commands]


# --- 5. the cost of recording ------------------------------------------------------------------


def bench_record(quick: bool = False, repeats: int = 3, every: int = DEFAULT_EVERY) -> list[BenchRow]:
    """Solver.train() of the deep_bn net (six layers, batch norm, Adam, batch 50) on random data of
    CIFAR-10's shape, without recording and with every statistic recorded every `every` iterations,
    side by side and interleaved; the overhead is the median of the paired ratios."""
    num_train, epochs = (100, 2) if quick else (1000, 10)
    rounds = max(repeats, 2 if quick else 5)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    with single_core():
        for _ in range(rounds):
            for mode in ("off", "on"):
                solver = _random_solver([100] * 5, np.float32, num_train)
                solver.num_epochs = epochs
                solver.recorder = Recorder(every=every) if mode == "on" else None
                start = time.perf_counter()
                solver.train()
                seconds[mode].append(time.perf_counter() - start)
    iterations = epochs * (num_train // 50)
    note = f"Solver.train(): {iterations} iterations, 6 layers, batchnorm, adam"
    ratios = [on / off for on, off in zip(seconds["on"], seconds["off"], strict=True)]
    return [
        row("record", "training, recording off", seconds["off"], note=note),
        row("record", f"training, every statistic every {every} iterations", seconds["on"], note=note),
        row("record", "overhead of recording", ratios, unit="x", note="median of paired ratios on / off"),
    ]


# --- 7. the price of portable numerics -------------------------------------------------------------

BLAS_MODES = ("portable", "native")


def _blas_env(mode: str) -> dict[str, str]:
    """A child environment with portable numerics (the default) or the machine's own kernels:
    OPENBLAS_CORETYPE removed, so native really is the machine's choice."""
    env = subprocess_env()
    env.pop("OPENBLAS_CORETYPE", None)
    env["BNLAB_BLAS"] = mode
    return env


def conv_rate(steps: int = 8, warmup: int = 3, batch: int = CONV_BATCHES[1]) -> dict:
    """Training images per second of the conv bench's net (one thread), and the BLAS kernel in use:
    what `bench_blas` measures in a fresh process per numerics mode."""
    from bnlab.numerics import provenance

    solver = conv_solver(batch)
    with single_core():
        for _ in range(warmup):
            solver._step()
        rate = batch / seconds_per_call(solver._step, steps)
    return {"rate": rate, "kernel": provenance()["blas"]["kernel"]}


def bench_blas(spec: Path, repeats: int = 3, quick: bool = False, data_dir: str | Path | None = None) -> list[BenchRow]:
    """Portable numerics (Haswell kernels) against the machine's own, in fresh processes, interleaved
    (portable, native, portable, ...) so both share the machine's drifts: the weight-scale sweep
    (`bnlab run SPEC --set seeds=[0]`, one worker) and the conv bench's training step (quick: a
    tiny batch). The price is the median of the paired ratios portable / native time."""
    conv_code = f"import json, bnlab.bench.sections as b; print(json.dumps(b.conv_rate({'1, 1, 8' if quick else ''})))"
    batches = datasets.locate_cifar10(data_dir)
    seconds: dict[str, list[float]] = {m: [] for m in BLAS_MODES}
    rates: dict[str, list[float]] = {m: [] for m in BLAS_MODES}
    kernels: dict[str, str] = {}
    for _ in range(repeats):
        for mode in BLAS_MODES:
            if batches is not None and spec.is_file():
                with tempfile.TemporaryDirectory(prefix="bnlab-bench-") as out:
                    command = [
                        sys.executable, "-m", "bnlab.cli", "run", str(spec), "--set", "seeds=[0]",
                        "--out", out, "--workers", "1", "--data-dir", str(batches),
                    ]  # fmt: skip
                    seconds[mode].append(timed_subprocess(command, _blas_env(mode)))
            done = subprocess.run(
                [sys.executable, "-c", conv_code], capture_output=True, text=True, env=_blas_env(mode)
            )
            if done.returncode != 0:
                raise BnlabError(f"the conv bench failed under BNLAB_BLAS={mode}: {done.stderr.strip()[-500:]}")
            result = json.loads(done.stdout)
            rates[mode].append(result["rate"])
            kernels[mode] = result["kernel"]
    label = {m: f"{m} ({kernels.get(m)} kernels)" for m in BLAS_MODES}
    rows = []
    if seconds["portable"]:
        note = f"{spec.name} --set seeds=[0], 1 worker, new process"
        rows += [row("blas", f"sweep, {label[m]}", seconds[m], note=note) for m in BLAS_MODES]
        ratios = [p / n for p, n in zip(seconds["portable"], seconds["native"], strict=True)]
        rows.append(row("blas", "sweep: portable / native time", ratios, unit="x", note="median of paired ratios"))
    else:
        rows.append(BenchRow("blas", "sweep", None, None, 0, note=f"no CIFAR-10 or no spec {spec}"))
    rows += [
        row("blas", f"conv step, {label[m]}", rates[m], unit="img/s", note="batch 64, 1 thread") for m in BLAS_MODES
    ]
    ratios = [n / p for p, n in zip(rates["portable"], rates["native"], strict=True)]
    rows.append(row("blas", "conv: portable / native time", ratios, unit="x", note="median of paired ratios"))
    return rows
