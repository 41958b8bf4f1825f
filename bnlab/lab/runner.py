"""Run an experiment's sweep and keep its results on disk, resumably.

The folder's format (spec.yaml, runs.csv, one folder per run) is bnlab.lab.results'. A rerun keeps
the finished runs whose config is unchanged and redoes the rest. A lock on the folder stops a
second `bnlab run` from writing into it; the operating system drops the lock with the process,
however it ends.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

import bnlab
from bnlab import numerics
from bnlab.errors import ResultsError
from bnlab.lab import results
from bnlab.lab.executors import Executor
from bnlab.lab.train import RunOutcome
from bnlab.spec.experiment import Experiment, Run


@dataclass
class SweepReport:
    """What a sweep did: the outcome of every run it trained, and the ids of the runs it kept."""

    path: Path
    total: int
    kept: list[str] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)


def run_experiment(
    experiment: Experiment,
    out_root: str | Path,
    executor: Executor,
    force: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    progress: Callable[[dict], None] | None = None,
    only: set[str] | None = None,
    keep_weights: bool = True,
) -> SweepReport:
    """Train every run of `experiment` that is not already finished under out_root/<name>; with
    `only`, just those of the run ids in it (the others stay as they are: kept, or pending). Each
    run keeps its weights.npz unless keep_weights is False (the claims lab needs only metrics).

    on_start(total, to_train) is called once the plan is known, on_outcome after each run is on
    disk, progress with the per-epoch events of runs under way. Ctrl-C (KeyboardInterrupt)
    propagates after the runs finished so far are recorded.
    """
    path = Path(out_root) / experiment.name
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ResultsError(
            f"{path}: another `bnlab run` is writing this experiment; wait for it to finish, "
            f"or give this one another --out folder"
        ) from None
    try:
        results.remove_leftovers(path)
        rows = results.plan_rows(experiment.runs, path, force)
        todo = [
            run
            for run in experiment.runs
            if rows[run.run_id]["status"] == "pending" and (only is None or run.run_id in only)
        ]
        report = SweepReport(path, len(experiment.runs), kept=[r for r in rows if rows[r]["status"] != "pending"])
        results.write_spec(path, experiment.resolved())
        results.write_runs_csv(path, experiment.swept_keys, experiment.runs, rows)
        if on_start:
            on_start(len(experiment.runs), len(todo))
        provenance = source_provenance()
        by_id = {run.run_id: run for run in todo}
        try:
            for outcome in executor.execute(todo, progress):
                run = by_id[outcome.run_id]
                results.write_run(path, run, run_record(run, outcome, provenance, keep_weights))
                rows[run.run_id] = results.runs_row(run, outcome.status, _metrics(outcome))
                results.write_runs_csv(path, experiment.swept_keys, experiment.runs, rows)
                report.outcomes.append(outcome)
                if on_outcome:
                    on_outcome(outcome)
        except KeyboardInterrupt:
            # A Ctrl-C between a run's folder and its runs.csv row would leave the row pending:
            # the folders are the truth.
            finished = results.finished_on_disk(experiment.runs, path)
            results.write_runs_csv(path, experiment.swept_keys, experiment.runs, {**rows, **finished})
            raise
        return report
    finally:
        lock.release()


def _metrics(outcome: RunOutcome) -> dict:
    return {
        "best_val_acc": outcome.best_val_acc,
        "best_train_acc": outcome.best_train_acc,
        "final_train_loss": outcome.final_train_loss,
        "wall_s": round(outcome.wall_s, 3),
    }


def run_record(run: Run, outcome: RunOutcome, provenance: dict, keep_weights: bool = True) -> results.RunRecord:
    train_mode = (outcome.train_acc_train_mode, outcome.val_acc_train_mode) if outcome.train_acc_train_mode else ()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(outcome.started)) if outcome.started else None
    return results.RunRecord(
        status=outcome.status,
        metrics=_metrics(outcome),
        losses=outcome.losses,
        iterations_per_epoch=outcome.iterations_per_epoch,
        epochs=list(
            zip(outcome.epochs, outcome.train_acc, outcome.val_acc, outcome.learning_rates, *train_mode, strict=True)
        ),
        probes=outcome.probes if run.config.get("record") else None,
        meta={
            "started": started,
            "wall_s": round(outcome.wall_s, 3),
            "peak_rss_mb": outcome.peak_rss_mb,
            "error": outcome.error,
            **provenance,
            # the trainer's numerics; a run that failed before training has the coordinator's
            "numerics": outcome.numerics or numerics.provenance(),
        },
        weights=outcome.weights if keep_weights else None,
    )


def source_provenance() -> dict:
    """Versions and the git commit of the bnlab source, for meta.json."""
    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(bnlab.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "versions": {
            "bnlab": bnlab.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "git_commit": commit,
    }
