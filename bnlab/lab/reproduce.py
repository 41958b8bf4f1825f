"""Rerun finished runs of an experiment elsewhere and compare their files byte for byte.

Each run is retrained from the config.yaml in its folder (seed and data set included) into a temporary folder,
written by the results format's own writer, and its history.csv, epochs.csv and probes.csv compared with the
originals. The results folder is only read.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bnlab import numerics
from bnlab.data import datasets
from bnlab.errors import BnlabError, ResultsError
from bnlab.lab import results, weights
from bnlab.lab.results import FINISHED
from bnlab.lab.runner import run_record, source_provenance
from bnlab.lab.session import OnDemand
from bnlab.spec.experiment import Run
from bnlab.spec.yaml_text import safe_load

COMPARED = ("history.csv", "epochs.csv", "probes.csv")


@dataclass
class Comparison:
    """One rerun against its original. `difference` is None when every compared file is identical,
    else where the first one differs ('history.csv iteration 37: loss 2.30112 vs 2.30113 (Δ 1e-05)').
    `provenance` holds the provenance fields that differ: label -> (original's value, rerun's)."""

    run_id: str
    difference: str | None
    provenance: dict[str, tuple[str, str]]
    problem: str | None = None  # why the run could not be rerun (its data missing, say): then nothing was compared

    @property
    def identical(self) -> bool:
        return self.difference is None and self.problem is None

    @property
    def differs(self) -> bool:
        """It was rerun and its files differ: never said of a run that could not be rerun."""
        return self.difference is not None


def finished_runs(path: Path) -> list[str]:
    """The ids of the finished (done or diverged) runs in an experiment folder, sorted."""
    if not (path / "runs.csv").is_file():
        raise ResultsError(f"{path}: not an experiment's results folder (no runs.csv); name one, e.g. results/smoke")
    ids = []
    for meta_file in sorted(path.glob("*/meta.json")):
        try:
            status = json.loads(meta_file.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status in FINISHED:
            ids.append(meta_file.parent.name)
    if not ids:
        raise ResultsError(f"{path}: no finished runs to reproduce; run `bnlab run` first")
    return ids


def sample(run_ids: list[str], k: int | None) -> list[str]:
    """k runs spread evenly over the sorted ids (the first included): the same runs every time."""
    if k is None or k >= len(run_ids):
        return list(run_ids)
    return [run_ids[i * len(run_ids) // k] for i in range(k)]


def reproduce(
    path: str | Path,
    executor: OnDemand,
    runs: int | None = None,
    on_compared: Callable[[Comparison], None] | None = None,
) -> list[Comparison]:
    """Retrain the finished runs of `path` (all, or a sample of `runs`), each on the data its config
    records, and compare them. A run whose config cannot be read, whose data cannot be found or
    whose rerun fails is a Comparison with a `problem`, not a difference."""
    path = Path(path)
    comparisons = []

    def done(comparison: Comparison) -> None:
        comparisons.append(comparison)
        if on_compared:
            on_compared(comparison)

    chosen = []
    for run_id in sample(finished_runs(path), runs):
        try:
            chosen.append(_load_run(path, run_id))
        except BnlabError as error:
            done(Comparison(run_id, None, {}, problem=str(error)))
    ready = []
    for request, group in _by_data(chosen).items():
        try:
            executor.prepare(group)
            ready += group
        except BnlabError as error:  # this data set is missing or unreadable here: its runs only
            for run in group:
                done(Comparison(run.run_id, None, {}, problem=f"its {request.dataset} data: {error}"))
    versions = source_provenance()  # the rerun's bnlab version and commit: this process's
    with tempfile.TemporaryDirectory(prefix="bnlab-reproduce-") as scratch:
        for outcome in executor.execute(ready):
            run = next(r for r in ready if r.run_id == outcome.run_id)
            if outcome.status == "failed":
                reason = (outcome.error or "unknown error").strip().splitlines()[-1]
                done(Comparison(run.run_id, None, {}, problem=f"the rerun failed: {reason}"))
            else:
                results.write_run(Path(scratch), run, run_record(run, outcome, versions))
                done(compare(path / run.run_id, Path(scratch) / run.run_id))
    return sorted(comparisons, key=lambda c: c.run_id)


def _by_data(runs: list[Run]) -> dict[datasets.Request, list[Run]]:
    """The runs grouped by the data they train on (their recorded data request)."""
    groups: dict[datasets.Request, list[Run]] = {}
    for run in runs:
        groups.setdefault(datasets.Request.of_run(run.config), []).append(run)
    return groups


def _load_run(path: Path, run_id: str) -> Run:
    try:
        config = safe_load((path / run_id / "config.yaml").read_text())
        meta = json.loads((path / run_id / "meta.json").read_text())
        datasets.Request.of_run(config)  # the data section is whole
    except (OSError, ValueError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise ResultsError(f"cannot read its config.yaml or meta.json ({type(exc).__name__}: {exc})") from None
    return Run(run_id, meta.get("seed", config.get("seed")), meta.get("swept", {}), config)


def compare(original: Path, rerun: Path) -> Comparison:
    """The first difference between two run folders' compared files, and their provenance's."""
    difference = None
    for name in COMPARED:
        a, b = original / name, rerun / name
        if not a.exists() and not b.exists():
            continue
        if not a.exists() or not b.exists():
            difference = f"{name} {'missing from the original' if not a.exists() else 'not written by the rerun'}"
            break
        if a.read_bytes() != b.read_bytes():
            difference = first_difference(name, a.read_text(), b.read_text())
            break
    if difference is None and (original / weights.FILE).exists():
        difference = weights.differing_weights(original, rerun)
    differing = numerics.provenance_differences([_meta(original), _meta(rerun)])
    # two runs: each differing field has two values, the original's first
    return Comparison(original.name, difference, {label: tuple(counts) for label, counts in differing.items()})


def _meta(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def first_difference(name: str, original: str, rerun: str) -> str:
    """Where two CSV texts first differ: the row's first column (iteration or epoch), the column,
    both values and their difference. Rows of one file missing from the other are said so."""
    rows_a, rows_b = _rows(original), _rows(rerun)
    header = rows_a[0] if rows_a else []
    for row_a, row_b in zip(rows_a, rows_b, strict=False):  # a shorter file is reported below
        if row_a == row_b:
            continue
        at = f"{header[0]} {row_a[0]}" if header and row_a else "header"
        for column, x, y in zip(header or range(len(row_a)), row_a, row_b, strict=False):
            if x != y:
                return f"{name} {at}: {column} {x} vs {y}{_delta(x, y)}"
        return f"{name} {at}: rows of different lengths"
    shorter, longer = ("original", rows_b) if len(rows_a) < len(rows_b) else ("rerun", rows_a)
    return f"{name}: the {shorter} ends after {min(len(rows_a), len(rows_b)) - 1} rows of {len(longer) - 1}"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _delta(x: str, y: str) -> str:
    try:
        diff = float(y) - float(x)
    except ValueError:
        return ""
    scale = max(abs(float(x)), abs(float(y)))
    relative = f", relative {abs(diff) / scale:.1e}" if scale else ""
    return f" (Δ {diff:+.2e}{relative})"


def provenance_summary(comparisons: list[Comparison]) -> list[str]:
    """'kernel: SkylakeX then, Haswell now' for each provenance field that differs in a run that
    differs: what may explain the differences."""
    lines = []
    for comparison in comparisons:
        if not comparison.differs:
            continue
        for label, (then, now) in comparison.provenance.items():
            line = f"{label}: {then} then, {now} now"
            if line not in lines:
                lines.append(line)
    return lines
