"""Run an experiment's sweep and keep its results on disk, resumably.

    results/<experiment>/
        spec.yaml       the resolved spec
        runs.csv        one row per run: run_id, status, swept values, seed, metrics, wall_s
        <run_id>/       config.yaml, history.csv, epochs.csv, meta.json, and probes.csv when
                        the spec records (iteration, layer, statistic, value; see bnlab.nn.probes)

Every file is written to a temporary name and renamed into place, and a run's folder is filled
under a temporary name and renamed as a whole, so a run is on disk complete or not at all. A
rerun keeps the finished runs whose config is unchanged and redoes the rest. A lock on the folder
stops a second `bnlab run` from writing into it; the operating system drops the lock with the
process, however it ends.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from filelock import FileLock, Timeout

import bnlab
from bnlab import numerics
from bnlab.errors import ResultsError
from bnlab.lab import atomic
from bnlab.lab.executors import Executor
from bnlab.lab.spec import Experiment, Run
from bnlab.lab.train import RunOutcome

FINISHED = ("done", "diverged")
METRICS = ("best_val_acc", "best_train_acc", "final_train_loss", "wall_s")
PROBE_COLUMNS = ("iteration", "layer", "statistic", "value")


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
) -> SweepReport:
    """Train every run of `experiment` that is not already finished under out_root/<name>.

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
        _remove_leftovers(path)
        rows = _plan(experiment, path, force)
        todo = [run for run in experiment.runs if rows[run.run_id]["status"] == "pending"]
        report = SweepReport(path, len(experiment.runs), kept=[r for r in rows if rows[r]["status"] != "pending"])
        atomic.write_text(path / "spec.yaml", yaml.safe_dump(experiment.resolved(), sort_keys=False))
        _write_runs_csv(path, experiment, rows)
        if on_start:
            on_start(len(experiment.runs), len(todo))
        provenance = _provenance()
        by_id = {run.run_id: run for run in todo}
        try:
            for outcome in executor.execute(todo, progress):
                run = by_id[outcome.run_id]
                _write_run(path, run, outcome, provenance)
                rows[run.run_id] = _row(run, outcome.status, _metrics(outcome))
                _write_runs_csv(path, experiment, rows)
                report.outcomes.append(outcome)
                if on_outcome:
                    on_outcome(outcome)
        except KeyboardInterrupt:
            # A Ctrl-C between a run's folder and its runs.csv row would leave the row pending:
            # the folders are the truth.
            _write_runs_csv(path, experiment, {**rows, **finished_on_disk(experiment, path)})
            raise
        return report
    finally:
        lock.release()


def _remove_leftovers(path: Path) -> None:
    """Staging folders and temporary files of a process that was killed (we hold the lock)."""
    for entry in path.glob(".*"):
        if entry.name == ".lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _plan(experiment: Experiment, path: Path, force: bool) -> dict[str, dict]:
    """runs.csv rows: finished runs on disk with the same config are kept, the rest pending."""
    rows = {}
    for run in experiment.runs:
        rows[run.run_id] = _row(run, "pending", {})
        run_dir = path / run.run_id
        if force or not (run_dir / "meta.json").exists():
            continue
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
            on_disk = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue  # unreadable: redo it
        if on_disk != _plain(run.config):
            raise ResultsError(
                f"{run_dir}: this run was made with a different config ({_first_difference(on_disk, run.config)}); "
                f"rerun with --force to redo it, or write to another --out folder"
            )
        if meta.get("status") in FINISHED:
            rows[run.run_id] = _row(run, meta["status"], meta.get("metrics", {}))
    return rows


def finished_on_disk(experiment: Experiment, path: str | Path) -> dict[str, dict]:
    """runs.csv rows of the runs finished in the folder `path` with their current config: what a
    rerun keeps."""
    rows = {}
    for run in experiment.runs:
        run_dir = Path(path) / run.run_id
        try:
            meta = json.loads((run_dir / "meta.json").read_text())
            on_disk = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if meta.get("status") in FINISHED and on_disk == _plain(run.config):
            rows[run.run_id] = _row(run, meta["status"], meta.get("metrics", {}))
    return rows


def _first_difference(old, new, prefix: str = "") -> str:
    new = _plain(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} on disk, {new!r} now"


def _row(run: Run, status: str, metrics: dict) -> dict:
    return {
        "run_id": run.run_id,
        "status": status,
        **{key: _cell(value) for key, value in run.swept.items()},
        "seed": run.seed,
        **{name: "" if metrics.get(name) is None else metrics[name] for name in METRICS},
    }


def _metrics(outcome: RunOutcome) -> dict:
    return {
        "best_val_acc": outcome.best_val_acc,
        "best_train_acc": outcome.best_train_acc,
        "final_train_loss": outcome.final_train_loss,
        "wall_s": round(outcome.wall_s, 3),
    }


def _cell(value) -> str:
    """A swept value as written in runs.csv: None as 'none', lists as YAML flow."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def _write_runs_csv(path: Path, experiment: Experiment, rows: dict[str, dict]) -> None:
    columns = ["run_id", "status", *experiment.swept_keys, "seed", *METRICS]
    atomic.write_text(path / "runs.csv", _csv(columns, [[rows[r.run_id][c] for c in columns] for r in experiment.runs]))


def _write_run(path: Path, run: Run, outcome: RunOutcome, provenance: dict) -> None:
    """Fill a temporary folder, then rename it to the run's id: complete or absent."""
    staging = atomic.staging_dir(path, prefix=f".{run.run_id}.")
    ipe = outcome.iterations_per_epoch
    (staging / "config.yaml").write_text(yaml.safe_dump(_plain(run.config), sort_keys=False))
    (staging / "history.csv").write_text(
        _csv(
            ["iteration", "epoch", "loss"],
            [[i + 1, i // ipe + 1, loss] for i, loss in enumerate(outcome.losses)],
        )
    )
    (staging / "epochs.csv").write_text(
        _csv(
            ["epoch", "train_acc", "val_acc", "learning_rate"],
            [
                list(row)
                for row in zip(
                    outcome.epochs, outcome.train_acc, outcome.val_acc, outcome.learning_rates, strict=True
                )
            ],
        )
    )
    if run.config.get("record"):
        (staging / "probes.csv").write_text(_csv(list(PROBE_COLUMNS), [list(row) for row in outcome.probes]))
    meta = {
        "run_id": run.run_id,
        "status": outcome.status,
        "seed": run.seed,
        "swept": run.swept,
        "metrics": _metrics(outcome),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(outcome.started)) if outcome.started else None,
        "wall_s": round(outcome.wall_s, 3),
        "peak_rss_mb": outcome.peak_rss_mb,
        "error": outcome.error,
        **provenance,
        # the trainer's numerics; a run that failed before training has the coordinator's
        "numerics": outcome.numerics or numerics.provenance(),
    }
    # meta.json last: its presence marks the run finished, even for tools that ignore the rename
    (staging / "meta.json").write_text(json.dumps(_json_safe(meta), indent=2) + "\n")
    target = path / run.run_id
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)


def _csv(columns: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _plain(config: dict) -> dict:
    """The config as YAML gives it back (tuples as lists, and so on), for comparison with disk."""
    return yaml.safe_load(yaml.safe_dump(config))


def _json_safe(value):
    """nan and inf are not JSON: write them as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _provenance() -> dict:
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
