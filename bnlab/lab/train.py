"""Train one run of an experiment: a resolved config and the data in, its histories out.

This is what a worker executes. It knows the config layout of bnlab.lab.spec and the numerics, but
neither files nor how runs are scheduled.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bnlab.nn.nets import ConvNet, FullyConnectedNet
from bnlab.nn.norms import NOISE_DEFAULTS
from bnlab.nn.probes import Recorder
from bnlab.nn.residual import ResidualConvNet, ResidualMLP
from bnlab.nn.solver import Solver

NOISE_STREAM = 0x6E6F6973  # 'nois': a seed word that sets the noise generators apart from the run's own


@dataclass
class RunOutcome:
    """What a finished run reports. status: 'done', 'diverged' (a loss became nan or inf; the
    histories stop there) or 'failed' (an exception; `error` says which)."""

    run_id: str
    status: str
    losses: list[float] = field(default_factory=list)
    iterations_per_epoch: int = 1
    epochs: list[int] = field(default_factory=list)  # epochs completed at each accuracy check
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    started: float = 0.0
    wall_s: float = 0.0
    peak_rss_mb: float | None = None  # of the process that trained it, at the end of the run
    error: str | None = None
    probes: list[tuple[int, int, str, float]] = field(default_factory=list)  # (iteration, layer, statistic, value)

    @property
    def best_val_acc(self) -> float:
        return max(self.val_acc, default=math.nan)

    @property
    def best_train_acc(self) -> float:
        return max(self.train_acc, default=math.nan)

    @property
    def final_train_loss(self) -> float:
        """Mean of the last 100 iteration losses, as the notebooks' weight-scale figure."""
        tail = self.losses[-100:]
        return float(np.mean(tail)) if tail else math.nan


def train_run(
    run_id: str,
    config: dict,
    data: dict[str, np.ndarray],
    progress: Callable[[dict], None] | None = None,
) -> RunOutcome:
    """Train the run described by `config` (sections model and solver, and seed).

    One RandomState seeded with the run's seed draws the initial weights, then the minibatches and
    dropout masks: the same as a notebook cell that calls np.random.seed(seed), builds the net and
    trains it. Exceptions are reported in the outcome, not raised, so a sweep goes on.
    """
    started = time.time()
    clock = time.perf_counter()
    model_cfg, solver_cfg = dict(config["model"]), dict(config["solver"])
    noise = {key: model_cfg.pop(key, default) for key, default in NOISE_DEFAULTS.items()}
    recorder = Recorder(**config["record"]) if config.get("record") else None
    try:
        rng = np.random.RandomState(config["seed"])
        model = build_model(model_cfg, data["X_train"].shape[1:], rng)
        if model_cfg.get("normalization") == "noisy_batchnorm":
            # Each layer's noise comes from a generator of its own, seeded from the run's seed: the
            # weights and minibatches are drawn exactly as for plain batch norm.
            for layer, bn_param in enumerate(model.bn_params, start=1):
                bn_param.update(noise, noise_rng=np.random.RandomState([config["seed"], NOISE_STREAM, layer]))
        solver = Solver(
            model,
            data,
            rng=rng,
            callback=(lambda event: progress({"run_id": run_id, **event})) if progress else None,
            recorder=recorder,
            **solver_cfg,
        )
        # A run that diverges overflows on its way to nan: its status says so, numpy's warnings
        # would only clutter the terminal.
        with np.errstate(over="ignore", invalid="ignore"):
            solver.train()
    except Exception:  # noqa: BLE001 - a failing run must not stop the sweep
        return RunOutcome(
            run_id,
            "failed",
            started=started,
            wall_s=time.perf_counter() - clock,
            error=traceback.format_exc(),
        )
    return RunOutcome(
        run_id=run_id,
        status="diverged" if solver.diverged else "done",
        losses=[float(x) for x in solver.loss_history],
        iterations_per_epoch=max(data["X_train"].shape[0] // solver.batch_size, 1),
        epochs=list(solver.epoch_history),
        train_acc=list(solver.train_acc_history),
        val_acc=list(solver.val_acc_history),
        learning_rates=[float(x) for x in solver.lr_history],
        started=started,
        wall_s=time.perf_counter() - clock,
        peak_rss_mb=_peak_rss_mb(),
        probes=recorder.rows if recorder is not None else [],
    )


def build_model(model_cfg: dict, input_shape: tuple[int, ...], rng: np.random.RandomState):
    """The net a run's model section describes (architecture fc or conv), for inputs of one
    sample's shape, e.g. (3, 32, 32), its weights drawn from rng."""
    cfg = dict(model_cfg)
    architecture = cfg.pop("architecture", "fc")
    channels, kernel_size = cfg.pop("channels", None), cfg.pop("kernel_size", 3)
    residual, skipinit = cfg.pop("residual", None), cfg.pop("skipinit", False)
    cfg["dtype"] = np.dtype(cfg["dtype"]).type
    if residual is not None:
        # the spec holds dropout and the norm position at their defaults for residual nets
        for unused in ("dropout_keep_ratio", "norm_position"):
            cfg.pop(unused)
        if architecture == "conv":
            for fc_only in ("hidden_dims", "renorm_rmax", "renorm_dmax", "renorm_warmup"):
                cfg.pop(fc_only, None)
            return ResidualConvNet(channels, kernel_size, tuple(input_shape), 10, residual, skipinit, rng=rng, **cfg)
        return ResidualMLP(cfg.pop("hidden_dims"), int(np.prod(input_shape)), 10, residual, skipinit, rng=rng, **cfg)
    if architecture == "conv":
        # The spec holds these at their defaults for conv nets: no dropout, the norm before the
        # activation, no batch renorm.
        for fc_only in ("dropout_keep_ratio", "norm_position", "renorm_rmax", "renorm_dmax", "renorm_warmup"):
            cfg.pop(fc_only, None)
        cfg["hidden_dims"] = cfg.get("hidden_dims") or []
        return ConvNet(channels, kernel_size=kernel_size, input_dim=tuple(input_shape), num_classes=10, rng=rng, **cfg)
    return FullyConnectedNet(input_dim=int(np.prod(input_shape)), num_classes=10, rng=rng, **cfg)


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)  # bytes on macOS, KiB elsewhere
