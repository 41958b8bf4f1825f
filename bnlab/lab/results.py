"""The results format: the one module that writes and reads a results folder.

Layout of results/<experiment>/:
    spec.yaml            the resolved experiment spec
    runs.csv             one row per run: run_id, status, <swept keys by dotted path>, seed, metrics
    <run_id>/config.yaml the run's full config
    <run_id>/history.csv iteration, epoch, loss          (one row per training iteration)
    <run_id>/epochs.csv  epoch, train_acc, val_acc, learning_rate   (epoch 0 = after the first iteration)
    <run_id>/probes.csv  iteration, layer, statistic, value  (only when the spec records; see
                         bnlab.nn.probes for the statistics; layer 0 = the whole net)
    <run_id>/meta.json   status, metrics, start time, wall time, memory, provenance; written last,
                         so its presence marks the run finished
and the claims lab's <out>/claims/claims.json: one entry per evaluated claim.

Every file is written to a temporary name and renamed into place, and a run's folder is filled
under a temporary name and renamed as a whole, so a run is on disk complete or not at all.
Reading reports every inconsistency as a ResultsError naming the file and how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from bnlab.errors import ResultsError
from bnlab.lab import atomic
from bnlab.lab.formatting import format_cell, format_mean_std
from bnlab.spec.yaml_text import as_yaml_gives_back, safe_dump, safe_load

if TYPE_CHECKING:  # readers of results need not import the spec's pydantic models
    from bnlab.spec.experiment import Run

STATUSES = ("done", "diverged", "failed", "pending")
FINISHED = ("done", "diverged")
METRICS = ("best_val_acc", "best_train_acc", "final_train_loss", "wall_s")
HISTORY_COLUMNS = ("iteration", "epoch", "loss")
EPOCH_COLUMNS = ("epoch", "train_acc", "val_acc", "learning_rate")
# after them, when the run measured its accuracies in train mode too (solver.train_mode_accuracy)
TRAIN_MODE_COLUMNS = ("train_acc_train_mode", "val_acc_train_mode")
PROBE_COLUMNS = ("iteration", "layer", "statistic", "value")
TEXT_COLUMNS = ("statistic",)
RERUN = "rerun `bnlab run SPEC` for this experiment (it resumes and redoes unfinished runs)"
CLAIMS_DIR = "claims"  # <out>/claims/: the claims lab's experiments, claims.json and figures
CLAIMS_FILE = "claims.json"


# --- writing ----------------------------------------------------------------------------------------


def swept_cell(value: Any) -> str:
    """A swept value as written in runs.csv: None as 'none', lists as YAML flow."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return safe_dump(value, default_flow_style=True).strip()
    return str(value)


def runs_row(run: Run, status: str, metrics: dict) -> dict:
    """One runs.csv row (cells keyed by column) of `run` with `status` and its `metrics` (missing: empty)."""
    return {
        "run_id": run.run_id,
        "status": status,
        **{key: swept_cell(value) for key, value in run.swept.items()},
        "seed": run.seed,
        **{name: "" if metrics.get(name) is None else metrics[name] for name in METRICS},
    }


def write_spec(path: Path, resolved: dict) -> None:
    atomic.write_text(path / "spec.yaml", safe_dump(resolved, sort_keys=False))


def write_runs_csv(path: Path, swept_keys: Sequence[str], runs: Iterable[Run], rows: dict[str, dict]) -> None:
    """runs.csv with one row per run of `runs`, in their order, from rows[run_id]."""
    columns = ["run_id", "status", *swept_keys, "seed", *METRICS]
    atomic.write_text(path / "runs.csv", _csv(columns, [[rows[r.run_id][c] for c in columns] for r in runs]))


@dataclass
class RunRecord:
    """What a finished run leaves on disk besides its config: the tables and meta.json's fields."""

    status: str
    metrics: dict
    losses: Sequence[float]
    iterations_per_epoch: int
    epochs: Sequence[tuple]  # (epoch, train_acc, val_acc, learning_rate[, train_acc_train_mode, val_acc_train_mode])
    probes: Sequence[tuple] | None  # (iteration, layer, statistic, value); None when not recording
    meta: dict  # the rest of meta.json: started, wall_s, peak_rss_mb, error, provenance
    weights: bytes | None = None  # weights.npz's content (bnlab.lab.weights), None: none kept


def write_run(path: Path, run: Run, record: RunRecord) -> None:
    """Fill a temporary folder, then rename it to the run's id: complete or absent."""
    staging = atomic.staging_dir(path, prefix=f".{run.run_id}.")
    ipe = record.iterations_per_epoch
    (staging / "config.yaml").write_text(safe_dump(plain(run.config), sort_keys=False))
    history = [[i + 1, i // ipe + 1, loss] for i, loss in enumerate(record.losses)]
    (staging / "history.csv").write_text(_csv(list(HISTORY_COLUMNS), history))
    epoch_columns = (
        [*EPOCH_COLUMNS, *TRAIN_MODE_COLUMNS] if record.epochs and len(record.epochs[0]) > 4 else EPOCH_COLUMNS
    )
    (staging / "epochs.csv").write_text(_csv(list(epoch_columns), [list(row) for row in record.epochs]))
    if record.weights is not None:
        (staging / "weights.npz").write_bytes(record.weights)
    if record.probes is not None:
        (staging / "probes.csv").write_text(_csv(list(PROBE_COLUMNS), [list(row) for row in record.probes]))
    meta = {
        "run_id": run.run_id,
        "status": record.status,
        "seed": run.seed,
        "swept": run.swept,
        "metrics": record.metrics,
        **record.meta,
    }
    # meta.json last: its presence marks the run finished, even for tools that ignore the rename
    (staging / "meta.json").write_text(json.dumps(_json_safe(meta), indent=2) + "\n")
    target = path / run.run_id
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)


def remove_leftovers(path: Path) -> None:
    """Staging folders and temporary files of a process that was killed (call it holding the lock)."""
    for entry in path.glob(".*"):
        if entry.name == ".lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def plain(config: dict) -> dict:
    """The config as YAML gives it back (tuples as lists, and so on), for comparison with disk."""
    return as_yaml_gives_back(config)


def _csv(columns: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def _json_safe(value):
    """nan and inf are not JSON: write them as null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# --- finished or not, resuming ------------------------------------------------------------------------


def read_meta(run_dir: Path) -> dict:
    """A run's meta.json, or {} when it is missing or unreadable (the run is then not finished)."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def saved_run(run_dir: Path) -> tuple[dict, Any] | None:
    """(meta, config on disk) of a run folder that has both readable, else None (redo the run)."""
    if not (run_dir / "meta.json").exists():
        return None
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
        on_disk = safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return (meta, on_disk) if isinstance(meta, dict) else None


def plan_rows(runs: Iterable[Run], path: Path, force: bool) -> dict[str, dict]:
    """runs.csv rows: finished runs on disk with the same config are kept, the rest pending; a
    finished run made with another config is a ResultsError (unless force, which redoes all)."""
    rows = {}
    for run in runs:
        rows[run.run_id] = runs_row(run, "pending", {})
        saved = None if force else saved_run(path / run.run_id)
        if saved is None:
            continue
        meta, on_disk = saved
        if on_disk != plain(run.config):
            raise ResultsError(
                f"{path / run.run_id}: this run was made with a different config "
                f"({_first_difference(on_disk, run.config)}); to keep both, name the new experiment "
                f"(--set name={path.name}-2) or write it to another --out folder; --force redoes the run here"
            )
        if meta.get("status") in FINISHED:
            rows[run.run_id] = runs_row(run, meta["status"], meta.get("metrics", {}))
    return rows


def finished_on_disk(runs: Iterable[Run], path: str | Path) -> dict[str, dict]:
    """runs.csv rows of the runs finished in the folder `path` with their current config: what a
    rerun keeps."""
    rows = {}
    for run in runs:
        saved = saved_run(Path(path) / run.run_id)
        if saved and saved[0].get("status") in FINISHED and saved[1] == plain(run.config):
            rows[run.run_id] = runs_row(run, saved[0]["status"], saved[0].get("metrics", {}))
    return rows


def _first_difference(old, new, prefix: str = "") -> str:
    new = plain(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} on disk, {new!r} now"


# --- claims.json --------------------------------------------------------------------------------------


def claims_dir(out_root: str | Path) -> Path:
    return Path(out_root) / CLAIMS_DIR


def write_claims(claims_root: Path, entries: list[dict], order: list[str]) -> None:
    """Merge `entries` into claims_root/claims.json by id (the latest evaluation wins), keep the
    claims that still exist, in the order of the claim files; written atomically."""
    file = claims_root / CLAIMS_FILE
    merged: dict[str, dict] = {}
    if file.exists():
        try:
            merged = {e["id"]: e for e in json.loads(file.read_text())}
        except (ValueError, TypeError, KeyError):
            merged = {}  # unreadable: rebuilt from what was evaluated now
    merged.update({e["id"]: e for e in entries})
    ordered = [merged[i] for i in order if i in merged]
    atomic.write_text(file, json.dumps(ordered, indent=2) + "\n")


def read_claims(claims_root: str | Path) -> list[dict]:
    """The entries of claims_root/claims.json; ResultsError when it is missing or not a list of
    claims each with an id."""
    file = Path(claims_root) / CLAIMS_FILE
    if not file.is_file():
        raise ResultsError(f"{file}: missing; run `bnlab claims` first.")
    try:
        claims = json.loads(file.read_text())
        if not isinstance(claims, list) or not all(isinstance(c, dict) and "id" in c for c in claims):
            raise ValueError("expected a list of claims, each with an id")
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file}: not readable claims ({err}); rerun the claims lab to rewrite it.") from None
    return claims


# --- reading --------------------------------------------------------------------------------------------


@dataclass
class ExperimentResults:
    """Everything `bnlab run` recorded for one experiment.

    runs: one row per run (runs.csv): run_id, status, one column per swept key (numbers where all
        values are numbers, else strings such as "none"), seed, best_val_acc, best_train_acc,
        final_train_loss, wall_s (NaN where empty, e.g. for pending runs).
    history: one row per training iteration of every done/diverged run: run_id, iteration, epoch, loss.
    epochs: one row per accuracy check of every done/diverged run: run_id, epoch, train_acc, val_acc,
        learning_rate.
    probes: what the nets' recorders saw, one row per (run, iteration, layer, statistic): run_id,
        iteration, layer, statistic, value; empty when the spec records nothing.
    swept_keys: the runs.csv columns between status and seed, in order.
    """

    path: Path
    spec: dict
    runs: pd.DataFrame
    history: pd.DataFrame
    epochs: pd.DataFrame
    swept_keys: list[str]
    probes: pd.DataFrame

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.path.name)

    @property
    def pending(self) -> list[str]:
        """run_ids not run yet (or interrupted): they have no metrics and are not plotted."""
        return self.runs.loc[self.runs["status"] == "pending", "run_id"].tolist()


def load_experiment(path: str | Path) -> ExperimentResults:
    """Reads results/<experiment>/ completely; raises ResultsError on anything inconsistent."""
    path = Path(path)
    _check_folder(path)
    spec = _read_spec(path / "spec.yaml")
    runs, swept_keys = _read_runs(path / "runs.csv")
    histories, epochs, probes = [], [], []
    recording = spec.get("record") is not None
    for run_id, status in zip(runs["run_id"], runs["status"], strict=True):
        if status not in ("done", "diverged"):
            continue  # failed and pending runs have nothing (complete) to read
        run_dir = path / run_id
        history = _read_run_table(run_dir / "history.csv", HISTORY_COLUMNS, ("iteration", "epoch"), status)
        if status == "done" and history.empty:
            raise ResultsError(f"{run_dir / 'history.csv'}: has no iterations but the run is done; {RERUN}.")
        epoch_table = _read_run_table(run_dir / "epochs.csv", EPOCH_COLUMNS, ("epoch",), status, TRAIN_MODE_COLUMNS)
        if epoch_table.empty:
            raise ResultsError(f"{run_dir / 'epochs.csv'}: has no rows (the first iteration is checked); {RERUN}.")
        histories.append(history.assign(run_id=run_id))
        epochs.append(epoch_table.assign(run_id=run_id))
        if recording:
            probe_table = _read_run_table(run_dir / "probes.csv", PROBE_COLUMNS, ("iteration", "layer"), status)
            probes.append(probe_table.assign(run_id=run_id))
    return ExperimentResults(
        path=path,
        spec=spec,
        runs=runs,
        history=_concat(histories, HISTORY_COLUMNS),
        epochs=_concat(epochs, (*EPOCH_COLUMNS, *(c for c in TRAIN_MODE_COLUMNS if any(c in t for t in epochs)))),
        swept_keys=swept_keys,
        probes=_concat(probes, PROBE_COLUMNS),
    )


def list_experiments(root: str | Path = "results") -> pd.DataFrame:
    """One row per experiment folder (a folder with a runs.csv) under root, sorted by name.

    Columns: name, runs, done, diverged, failed, pending (run counts), best_val_acc (max over the
    runs that have one, NaN if none), path (str). Only runs.csv is read, so this stays fast.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no results folder here; run `bnlab run SPEC` first or pass the right root.")
    rows = []
    for folder in sorted(p for p in root.iterdir() if (p / "runs.csv").is_file()):
        runs, _ = _read_runs(folder / "runs.csv")
        counts = runs["status"].value_counts()
        rows.append(
            {
                "name": folder.name,
                "runs": len(runs),
                **{status: int(counts.get(status, 0)) for status in STATUSES},
                "best_val_acc": runs["best_val_acc"].max(),  # NaN-skipping; NaN when all empty
                "path": str(folder),  # text, so the table converts to JSON as it is
            }
        )
    columns = ["name", "runs", *STATUSES, "best_val_acc", "path"]
    return pd.DataFrame(rows, columns=columns)


def experiment_folders(path: str | Path) -> list[Path]:
    """[path] when path is one experiment's folder (it holds a runs.csv or a spec.yaml), else the
    experiment folders of the results root `path`, sorted by name; ResultsError when it is neither."""
    path = Path(path)
    _require_folder(path, "a results root (results/) or an experiment's folder")

    def is_experiment(folder: Path) -> bool:
        return (folder / "runs.csv").is_file() or (folder / "spec.yaml").is_file()

    if is_experiment(path):
        return [path]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and is_experiment(p))
    if not folders:
        raise ResultsError(
            f"{path}: no experiments here (no folder in it holds a runs.csv); run `bnlab run SPEC` first, "
            "or pass a results root (results/) or an experiment's folder (results/<name>)."
        )
    return folders


def runs_as_written(path: str | Path) -> list[dict[str, str]]:
    """The rows of an experiment's runs.csv, each cell exactly as written (for JSON output)."""
    with open(Path(path) / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def group_summary(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """The run groups of an experiment as text, from its runs.csv alone: (header, rows). A row is
    the group's swept values (long numbers shortened by format_cell), its runs by status ("3 done,
    1 failed"), then the mean +- std over its seeds of best_val_acc, best_train_acc and
    final_train_loss (format_mean_std; "—" when no run has one)."""
    file = Path(path) / "runs.csv"
    runs, swept = _read_runs(file)
    text = pd.read_csv(file, dtype=str, keep_default_na=False)  # swept values exactly as written
    header = [key.rsplit(".", 1)[-1] for key in swept]
    header += ["runs", "best val acc", "best train acc", "final train loss"]
    rows = []
    keys = [tuple(text.loc[i, k].strip() for k in swept) for i in range(len(runs))]
    for values in dict.fromkeys(keys):  # groups in the order of their first run
        group = runs[[k == values for k in keys]]
        statuses = group["status"].value_counts(sort=False)
        row = [*map(format_cell, values), ", ".join(f"{n} {status}" for status, n in statuses.items())]
        row += [format_mean_std(group[m].tolist()) for m in ("best_val_acc", "best_train_acc", "final_train_loss")]
        rows.append(row)
    return header, rows


def _require_folder(path: Path, what: str) -> None:
    if not path.exists():
        raise ResultsError(f"{path}: no such results folder; run `bnlab run SPEC` first or check the path.")
    if not path.is_dir():
        raise ResultsError(f"{path}: not a folder; pass {what}.")


def _check_folder(path: Path) -> None:
    _require_folder(path, "the experiment's results folder, e.g. results/<name>")
    for required in ("spec.yaml", "runs.csv"):
        if not (path / required).is_file():
            raise ResultsError(f"{path / required}: missing, so no results here: run `bnlab run SPEC` first.")


def _read_spec(file: Path) -> dict:
    try:
        spec = safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = f" at line {err.problem_mark.line + 1}" if getattr(err, "problem_mark", None) else ""
        raise ResultsError(f"{file}: not valid YAML{where}; restore it or {RERUN}.") from None
    if not isinstance(spec, dict):
        raise ResultsError(f"{file}: expected a YAML mapping (name, model, solver, ...); restore it or {RERUN}.")
    return spec


def _read_runs(file: Path) -> tuple[pd.DataFrame, list[str]]:
    """Parses and checks runs.csv; returns (runs, swept_keys). Cells are read as text first so
    every bad cell can be reported with its line and column."""
    try:
        text = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file}: not a readable CSV table ({err}); restore it or {RERUN}.") from None
    columns = list(text.columns)
    required = ["run_id", "status", "seed", *METRICS]
    missing = [c for c in required if c not in columns]
    if missing:
        raise ResultsError(
            f"{file}: missing column(s) {', '.join(missing)}; expected run_id, status, <swept keys>, seed, "
            f"{', '.join(METRICS)}. Restore the file or {RERUN}."
        )
    if columns.index("status") > columns.index("seed"):
        raise ResultsError(f"{file}: column status must come before seed (swept keys sit between them).")
    swept_keys = columns[columns.index("status") + 1 : columns.index("seed")]

    def bad(line: int, column: str, value: str, expected: str) -> ResultsError:
        return ResultsError(
            f"{file}: line {line}, column {column} is {value!r}; expected {expected}. Fix that cell or {RERUN}."
        )

    runs = pd.DataFrame({"run_id": text["run_id"].str.strip(), "status": text["status"].str.strip()})
    seen: set[str] = set()
    for row, (run_id, status) in enumerate(zip(runs["run_id"], runs["status"], strict=True)):
        line = row + 2  # 1-based, after the header line
        if not run_id:
            raise bad(line, "run_id", run_id, "a run id (the run's folder name)")
        if run_id in seen:
            raise bad(line, "run_id", run_id, "each run_id once (it is a duplicate)")
        seen.add(run_id)
        if status not in STATUSES:
            raise bad(line, "status", status, f"one of {', '.join(STATUSES)}")
    for key in swept_keys:
        runs[key] = _swept_column(text[key])
    seeds = []
    for row, cell in enumerate(text["seed"]):
        try:
            seeds.append(int(cell))
        except ValueError:
            raise bad(row + 2, "seed", cell, "an integer") from None
    runs["seed"] = seeds
    for metric in METRICS:
        values = []
        for row, cell in enumerate(text[metric]):
            try:
                values.append(float(cell) if cell.strip() else math.nan)
            except ValueError:
                raise bad(row + 2, metric, cell, "a number (or an empty cell for a run without it)") from None
        runs[metric] = values
    return runs, swept_keys


def _swept_column(cells: pd.Series) -> pd.Series:
    """Numbers when every non-empty cell is one (empty cells become NaN), else the text itself."""
    cells = cells.str.strip()
    try:
        # via numpy objects: plain int64/float64 columns rather than nullable pandas dtypes
        return pd.Series(pd.to_numeric(cells.mask(cells == "").to_numpy(dtype=object)), index=cells.index)
    except ValueError:
        return cells  # e.g. model.normalization: "none", "batchnorm"


def _read_run_table(
    file: Path, columns: tuple[str, ...], integer_columns: tuple[str, ...], status: str, optional: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Reads a run's history.csv, epochs.csv or probes.csv, checking that `columns` (and those of
    `optional` that it has) hold numbers (integers in `integer_columns`; nan/inf are numbers: a
    diverged run's last loss is one), except the TEXT_COLUMNS, which hold names."""
    if not file.is_file():
        raise ResultsError(f"{file}: missing, but runs.csv lists this run as {status}; {RERUN}.")
    try:
        table = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ResultsError(f"{file}: not a readable CSV table ({err}); {RERUN}.") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ResultsError(f"{file}: missing column(s) {', '.join(missing)} (expected {', '.join(columns)}); {RERUN}.")
    columns = (*columns, *(c for c in optional if c in table.columns))
    for column in columns:
        if column in TEXT_COLUMNS:
            table[column] = table[column].astype(str)
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        not_numbers = numbers.isna() & table[column].notna()
        if column in integer_columns:
            not_numbers |= numbers.isna() | (numbers != numbers.round())
        if not_numbers.any():
            row = int(not_numbers.to_numpy().argmax())
            expected = "an integer" if column in integer_columns else "a number"
            value = table[column].iloc[row]
            raise ResultsError(f"{file}: line {row + 2}, column {column} is {value!r}; expected {expected}; {RERUN}.")
        table[column] = numbers.astype("int64") if column in integer_columns else numbers.astype("float64")
    return table[list(columns)]


def _concat(tables: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    order = ["run_id", *columns]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="str" if c in ("run_id", *TEXT_COLUMNS) else "float64") for c in order})
    return pd.concat([t.reindex(columns=order) for t in tables], ignore_index=True)


def provenance_note(path: str | Path) -> str | None:
    """None when every finished run of the experiment at `path` has the same provenance (bnlab,
    commit, numpy, BLAS and its kernel, portability, CPU) and computed with portable numerics, else
    what differs, with run counts, or how many runs are not portable and why."""
    from bnlab.numerics import describe_differences, provenance_differences

    metas = [m for m in (read_meta(meta_file.parent) for meta_file in sorted(Path(path).glob("*/meta.json"))) if m]
    differing = provenance_differences(metas)
    if differing:
        return "runs differ in provenance: " + describe_differences(differing)
    unportable = [m["numerics"] for m in metas if isinstance(m.get("numerics"), dict) and not m["numerics"]["portable"]]
    if not unportable:
        return None
    record = unportable[0]  # every run's provenance is the same here
    why = record.get("why_not_portable") or ("BNLAB_BLAS=native" if record.get("mode") == "native" else "unknown")
    kernel = (record.get("blas") or {}).get("kernel")
    return (
        f"not portable: all {len(unportable)} runs computed with {kernel} kernels ({why}); "
        f"another machine may give other bytes"
    )
