"""`bnlab bench --section conv`: the convolutional net's training step against PyTorch's, at three
batch sizes, and each compiled layer (bnlab.nn.fused) against the numpy layers it replaces.

Training images per second of ConvNet(channels=[32, 64, 128], hidden_dims=[],
normalization='batchnorm', weight_scale='he') on random (N, 3, 32, 32) float32 batches, one
thread: a Solver step (forward, backward, Adam). When torch is importable, the same architecture
in PyTorch (Conv2d-BatchNorm2d-ReLU-MaxPool2d x 3, Linear 2048 -> 10, Adam, one thread) is timed
in the same rounds, alternating, and the ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import numpy as np

from bnlab.bench.measure import BenchRow, paired_rows, row, seconds_per_call, single_core
from bnlab.nn import conv, fused
from bnlab.nn.nets import ConvNet
from bnlab.nn.solver import Solver

CONV_CHANNELS = [32, 64, 128]
CONV_BATCHES = (8, 64, 256)
TORCH_HINT = (
    "PyTorch not installed: pip install 'bnlab[bench]' --extra-index-url https://download.pytorch.org/whl/cpu"
    " (the CPU build) to compare"
)
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def bench_conv(quick: bool = False) -> list[BenchRow]:
    """Per batch size: images per second of bnlab and of PyTorch, and their paired ratio; then
    the compiled layers against numpy's, and the peak memory of a batch-64 step."""
    rows: list[BenchRow] = []
    for batch in (2,) if quick else CONV_BATCHES:
        rows += _step_rows(batch, quick)
    rows += _layer_rows(quick)
    peak_mb = _peak_traced_mb(conv_solver(2 if quick else CONV_BATCHES[1])._step)
    rows.append(BenchRow("conv", "peak memory of a training step", peak_mb, 0.0, 1, "MB", note="numpy, tracemalloc"))
    return rows


def _step_rows(batch: int, quick: bool) -> list[BenchRow]:
    rounds, warmup = (3, 1) if quick else (15, 3)
    steps = 1 if quick else max(1, 256 // batch)  # about the same images per measurement
    solver = conv_solver(batch)
    contenders: dict[str, Callable[[], object]] = {f"bnlab ConvNet, batch {batch}": solver._step}
    torch_step = _torch_conv_step(batch)
    if torch_step is not None:
        contenders[f"PyTorch (same net), batch {batch}"] = torch_step
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with single_core(), _torch_threads(1):
        for step in contenders.values():
            for _ in range(warmup):
                step()
        for _ in range(rounds):  # alternating, so both see the same machine load
            for name, step in contenders.items():
                samples[name].append(batch / seconds_per_call(step, steps))
    note = f"batch {batch}, float32, 1 thread"
    rows = [row("conv", name, s, unit="img/s", note=note) for name, s in samples.items()]
    if torch_step is None:
        return [*rows, BenchRow("conv", f"PyTorch (same net), batch {batch}", None, None, 0, "img/s", note=TORCH_HINT)]
    ours, theirs = samples.values()
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return [*rows, row("conv", f"bnlab / PyTorch, batch {batch}", ratios, unit="x", note="median of paired ratios")]


def _layer_rows(quick: bool) -> list[BenchRow]:
    """The second block of the batch-64 net (32 -> 64 channels on 16x16 maps), float32: each
    compiled layer beside the numpy layers it replaces, alternating, and the paired speedup."""
    rng = np.random.RandomState(0)
    n = 2 if quick else CONV_BATCHES[1]
    x = np.ascontiguousarray(rng.randn(n, 16, 16, 32).astype(np.float32)).transpose(0, 3, 1, 2)
    w, b = (rng.randn(64, 32, 3, 3) * 0.06).astype(np.float32), np.zeros(64, np.float32)
    gamma, beta, param = np.ones(64, np.float32), np.zeros(64, np.float32), {"stride": 1, "pad": 1}
    h, conv_cache = conv.conv_forward_fast(x, w, b, param)
    dh = np.ascontiguousarray(rng.randn(n, 16, 16, 64).astype(np.float32)).transpose(0, 3, 1, 2)  # as a net's
    pooled_grad = rng.randn(n, 64, 8, 8).astype(np.float32)

    def numpy_norm_pool():
        out, bn_cache = conv.spatial_batchnorm_forward(h, gamma, beta, {"mode": "train"})
        return conv.max_pool_forward_fast(out, POOL), bn_cache

    (_, pool_cache), bn_cache = numpy_norm_pool()
    _, fused_cache = fused.batchnorm_maxpool_forward(h, gamma, beta, {"mode": "train"})
    _, max_pool_cache = fused.max_pool_forward(h, POOL)
    pairs = {
        "conv forward": (
            lambda: conv.conv_forward_fast(x, w, b, param),
            lambda: fused.conv_forward(x, w, b, param),
        ),
        "conv backward": (lambda: conv.conv_backward_fast(dh, conv_cache), lambda: fused.conv_backward(dh, conv_cache)),
        "batch norm + max pool forward": (
            numpy_norm_pool,
            lambda: fused.batchnorm_maxpool_forward(h, gamma, beta, {"mode": "train"}),
        ),
        "batch norm + max pool backward": (
            lambda: conv.spatial_batchnorm_backward(conv.max_pool_backward_fast(pooled_grad, pool_cache), bn_cache),
            lambda: fused.batchnorm_maxpool_backward(pooled_grad, fused_cache),
        ),
        "max pool forward (other norms)": (
            lambda: conv.max_pool_forward_fast(h, POOL),
            lambda: fused.max_pool_forward(h, POOL),
        ),
        "max pool backward (other norms)": (
            lambda: conv.max_pool_backward_fast(pooled_grad, pool_cache),
            lambda: fused.max_pool_backward(pooled_grad, max_pool_cache),
        ),
    }
    rounds, calls = (3, 1) if quick else (15, 5)
    return paired_rows("conv", pairs, f"block 2 of batch {n}: 32 -> 64 channels, 16x16, float32", rounds, calls)


def conv_solver(batch: int) -> Solver:
    """A Solver of the benchmark net on eight random batches of `batch` images."""
    rng = np.random.RandomState(0)
    X = rng.randn(8 * batch, 3, 32, 32).astype(np.float32)
    y = rng.randint(10, size=len(X))
    model = ConvNet(CONV_CHANNELS, hidden_dims=[], normalization="batchnorm", weight_scale="he", rng=rng)
    data = {"X_train": X, "y_train": y, "X_val": X, "y_val": y}
    return Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=batch, rng=rng)


def _peak_traced_mb(fn: Callable[[], object]) -> float:
    """Peak of the memory allocated while fn runs, above what was allocated before (numpy
    reports its array buffers to tracemalloc)."""
    import tracemalloc

    fn()  # the kernels compiled or loaded before, not counted
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        tracemalloc.stop()


def _torch_conv_step(batch: int) -> Callable[[], object] | None:
    """One PyTorch training step of the benchmark architecture on a fixed random batch, or None
    without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    nn = torch.nn
    blocks: list = []
    c = 3
    for f in CONV_CHANNELS:
        blocks += [nn.Conv2d(c, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU(), nn.MaxPool2d(2)]
        c = f
    net = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c * 4 * 4, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    X, y = torch.randn(batch, 3, 32, 32), torch.randint(10, (batch,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()

    return step


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's own intra-op thread count (threadpoolctl does not reach it), when torch is loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
