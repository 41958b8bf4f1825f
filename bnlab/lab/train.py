"""Train one run of an experiment: a resolved config and the data in, its histories out.

This is what a worker executes. It knows the config layout of bnlab.spec.experiment and the numerics, but
neither the file system nor how runs are scheduled.
"""

from __future__ import annotations

import io
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bnlab.data.datasets import DATASETS, DEFAULT_DATASET
from bnlab.nn.architectures import ARCHITECTURES
from bnlab.nn.probes import Recorder
from bnlab.nn.residual import RESIDUAL_ARCHITECTURES
from bnlab.nn.solver import Solver
from bnlab.nn.statistics import recompute_bn_statistics


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
    train_acc_train_mode: list[float] = field(default_factory=list)  # with solver.train_mode_accuracy
    val_acc_train_mode: list[float] = field(default_factory=list)
    started: float = 0.0
    wall_s: float = 0.0
    peak_rss_mb: float | None = None  # of the process that trained it, at the end of the run
    error: str | None = None
    probes: list[tuple[int, int, str, float]] = field(default_factory=list)  # (iteration, layer, statistic, value)
    numerics: dict | None = None  # bnlab.numerics.provenance() of the process that trained it
    weights: bytes | None = None  # weights.npz's content, the trained net's state() (solver.save_weights)
    weights_file: str | None = None  # where a worker process left them instead (bnlab.lab.executors)

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
    init_state: dict[str, np.ndarray] | None = None,
) -> RunOutcome:
    """Train the run described by `config` (sections model and solver, and seed).

    One RandomState seeded with the run's seed draws the initial weights, then the minibatches and
    dropout masks: the same as a notebook cell that calls np.random.seed(seed), builds the net and
    trains it. init_state (model.init_from's weights) then replaces the initial weights (but the
    output layer's, with model.new_head) and running statistics, and model.recompute_statistics
    sets the latter to the training set's. Exceptions are reported in the outcome, not raised, so a
    sweep goes on.
    """
    started = time.time()
    clock = time.perf_counter()
    solver_cfg = dict(config["solver"])
    save_weights = solver_cfg.pop("save_weights", True)
    recorder = Recorder(**config["record"]) if config.get("record") else None
    try:
        rng = np.random.RandomState(config["seed"])
        model = run_net(config, rng, data["X_train"].shape[1:])
        if init_state is not None:
            model.load_state(init_state, new_head=config["model"].get("new_head", False))
        if config["model"].get("recompute_statistics"):
            recompute_bn_statistics(model, data["X_train"])
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
        iterations_per_epoch=solver.iterations_per_epoch,
        epochs=list(solver.epoch_history),
        train_acc=list(solver.train_acc_history),
        val_acc=list(solver.val_acc_history),
        learning_rates=[float(x) for x in solver.lr_history],
        train_acc_train_mode=list(solver.train_acc_train_mode_history),
        val_acc_train_mode=list(solver.val_acc_train_mode_history),
        started=started,
        wall_s=time.perf_counter() - clock,
        peak_rss_mb=_peak_rss_mb(),
        probes=recorder.rows if recorder is not None else [],
        weights=weights_npz(model.state()) if save_weights else None,
    )


def weights_npz(state: dict[str, np.ndarray]) -> bytes:
    """weights.npz's content for a net's state() (bnlab.lab.weights reads it back), encoded where the
    net trained: a coordinating process only moves the bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    return buffer.getvalue()


def run_net(config: dict, rng: np.random.RandomState, input_shape: tuple[int, ...] | None = None):
    """The net of a run's config for its data set's classes and images (of input_shape when given:
    the data it trains on), its weights drawn from rng; a normalization that draws noise draws it
    from generators seeded with the run's seed."""
    dataset = DATASETS[config.get("data", {}).get("dataset", DEFAULT_DATASET)]
    model = {**config["model"], "noise_seed": config["seed"]}
    return build_model(model, input_shape or dataset.image_shape, rng, len(dataset.classes))


def build_model(model_cfg: dict, input_shape: tuple[int, ...], rng: np.random.RandomState, num_classes: int = 10):
    """The net a run's model section describes (bnlab.nn.architectures.ARCHITECTURES, or with `residual`
    bnlab.nn.residual.RESIDUAL_ARCHITECTURES), for inputs of one sample's shape, e.g. (3, 32, 32),
    and num_classes outputs, its weights drawn from rng."""
    table = ARCHITECTURES if model_cfg.get("residual") is None else RESIDUAL_ARCHITECTURES
    architecture = table[model_cfg.get("architecture", "fc")]
    return architecture.build({**model_cfg, "dtype": np.dtype(model_cfg["dtype"]).type}, input_shape, rng, num_classes)


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)  # bytes on macOS, KiB elsewhere
