"""Claims run: the runs every condition needs, trained once per claims file in the folder of the
first condition that needs them (bnlab.lab.runner), evaluated, and with --until-decided given more
seeds in rounds; what `bnlab claims --list` shows."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bnlab.claims.evaluate import adjust_family, evaluate, evaluate_cell, metric_values, needed
from bnlab.claims.files import Cell, ClaimGroup, cell_where, cells
from bnlab.claims.stats import (
    planned_looks,
)
from bnlab.errors import ResultsError
from bnlab.lab.executors import Executor
from bnlab.lab.formatting import file_safe
from bnlab.lab.results import claims_dir, finished_on_disk, read_claims, write_claims
from bnlab.lab.results import load_experiment as load_results
from bnlab.lab.runner import run_experiment
from bnlab.spec.experiment import Experiment, Run
from bnlab.spec.schema import MAX_NAME_LENGTH
from bnlab.spec.yaml_text import safe_dump

# --- running ---------------------------------------------------------------------------------


DEFAULT_MAX_SEEDS = 24


def run_claims(
    groups: list[ClaimGroup],
    out_root: str | Path,
    executor: Executor,
    ids: set[str] | None = None,
    on_experiment: Callable[[Experiment, int, int], None] | None = None,
    on_outcome: Callable | None = None,
    progress: Callable[[dict], None] | None = None,
    until_decided: bool = False,
    max_seeds: int = DEFAULT_MAX_SEEDS,
) -> list[dict]:
    """Run what the selected claims (all when ids is None) of the runnable groups need, evaluate
    them in their own condition and in every cell, adjust the family and merge them into
    <out>/claims/claims.json. Returns the entries evaluated now, in file order.

    A cell keeps the seeds it was last evaluated with (its `looks` in claims.json), so a rerun
    trains nothing. With until_decided, the cells still inconclusive after the adjustment get
    more seeds in rounds (the cell's first seed count each round, up to max_seeds), and every
    cell's p-value is Bonferroni-split over the looks that plan allows.

    Conditions with equal configs (a cell equal to the claim's own condition, the same cell of two
    claims of a file) share one experiment folder: <out>/claims/<experiment name>[__<cell>]/.
    on_experiment(experiment, total, to_train) is called once each folder's plan is known."""
    root = claims_dir(out_root)
    root.mkdir(parents=True, exist_ok=True)
    file = root / "claims.json"
    previous = {e["id"]: e for e in _read(file)}
    chosen = [(g, c) for g in groups if g.experiment is not None for c in g.claims if ids is None or c.id in ids]
    plan: dict[tuple[str, str], tuple[list[int], int]] = {}
    for group, claim in chosen:
        first = len(group.experiment.spec.seed_list())
        before = {_key(c["where"]): c for c in previous.get(claim.id, {}).get("cells", [])}
        for cell in cells(claim):
            old = before.get(_key(cell.where), {})
            looks = old.get("looks") if old.get("looks", [None])[0] == first else None
            planned = old.get("planned_looks", 1) if looks else 1
            if until_decided:
                planned = max(planned, len(planned_looks(first, first, max_seeds)))
            plan[claim.id, _key(cell.where)] = (looks or [first], planned)
    while True:
        entries = _round(chosen, plan, root, executor, on_experiment, on_outcome, progress)
        merged = {**previous, **{e["id"]: e for e in entries}}
        family = [merged[i] for g in groups for c in g.claims if (i := c.id) in merged]
        adjust_family(family)
        if not until_decided or not _grow(entries, plan, max_seeds):
            break
    write_claims(root, family, [c.id for g in groups for c in g.claims])
    return entries


def _grow(entries: list[dict], plan: dict, max_seeds: int) -> bool:
    """Give every inconclusive cell its next look; False when none has one left."""
    grew = False
    for entry in entries:
        for cell in entry["cells"]:
            looks, planned = plan[entry["id"], _key(cell["where"])]
            later = [n for n in planned_looks(looks[0], looks[0], max_seeds) if n > looks[-1]]
            if cell["verdict_adjusted"] == "inconclusive" and later:
                plan[entry["id"], _key(cell["where"])] = ([*looks, later[0]], planned)
                grew = True
    return grew


def _round(chosen, plan, root: Path, executor, on_experiment, on_outcome, progress) -> list[dict]:
    """Train what every condition needs, then evaluate. A run is trained once per claims file
    (the same config in another condition or claim of the file reuses it), in the folder of the
    first condition that needs it: the claims' own conditions first, so their folders hold their
    runs as before; folders whose whole spec is equal are one."""
    folders: dict[str, dict] = {}  # identity of the spec -> what its folder must hold
    home: dict[tuple[str, str], tuple[str, str]] = {}  # (claims file, run config) -> (folder, run id)
    conditions = []  # (claim, cell or None for the claim's own condition, seeds, experiment, group)
    for own in (True, False):
        for group, claim in chosen:
            base = group.experiment.spec.seed_list()
            todo = [(None, len(base))] if own else [(c, plan[claim.id, _key(c.where)][0][-1]) for c in cells(claim)]
            for cell, n in todo:
                seeds = _seed_list(base, n)
                overrides = [*(cell.overrides if cell else ()), *([f"seeds={json.dumps(seeds)}"] * (n != len(base)))]
                experiment = group.make(overrides)
                identity = _identity(experiment)
                folder = folders.setdefault(identity, {"group": group, "cell": cell, "seeds": seeds, "need": set()})
                if len(seeds) > len(folder["seeds"]):
                    folder["seeds"] = seeds
                compared = needed(claim, experiment, claim.where if cell is None else cell_where(claim, cell))
                for run in experiment.runs:
                    key = (group.source, _config_key(run))
                    if run.run_id in compared and run.seed in seeds and key not in home:
                        home[key] = (identity, run.run_id)
                        folder["need"].add(run.run_id)
                conditions.append((claim, cell, seeds, experiment, group))
    for folder in folders.values():
        if not folder["need"]:
            continue  # every run of it lives in another folder
        group, cell = folder["group"], folder["cell"]
        base = group.experiment
        overrides = list(cell.overrides) if cell else []
        if folder["seeds"] != base.spec.seed_list():
            overrides.append(f"seeds={json.dumps(folder['seeds'])}")
        if cell is not None and cell.overrides:
            overrides.append(f"name={_cell_name(base.name, cell)}")
        # the whole sweep stays in the folder's runs.csv (runs no claim needs: pending, or kept as they were)
        experiment = group.make(overrides)
        start = (lambda total, todo, e=experiment: on_experiment(e, total, todo)) if on_experiment else None
        run_experiment(
            experiment,
            root,
            executor,
            on_start=start,
            on_outcome=on_outcome,
            progress=progress,
            only=folder["need"],
            keep_weights=False,
        )
        folder["results"] = load_results(root / experiment.name)
    values: dict[tuple[str, str], pd.Series] = {}

    def metric_of(group: ClaimGroup, metric: str) -> Callable[[Run], float]:
        def value(run: Run) -> float:
            identity, run_id = home[group.source, _config_key(run)]
            if (identity, metric) not in values:
                values[identity, metric] = metric_values(folders[identity]["results"], metric)
            return values[identity, metric].get(run_id, math.nan)

        return value

    entries: dict[str, dict] = {}
    for claim, cell, seeds, experiment, _ in conditions:
        if cell is None:
            entry = evaluate(claim, experiment, folders[_identity(experiment)]["results"], seeds)
            entries[claim.id] = {**entry, "cells": []}
    for claim, cell, seeds, experiment, group in conditions:
        if cell is not None:
            looks, planned = plan[claim.id, _key(cell.where)]
            entries[claim.id]["cells"].append(
                evaluate_cell(claim, cell, experiment, metric_of(group, claim.metric), seeds, looks, planned)
            )
    return [entries[claim.id] for _, claim in chosen]


def _key(where: dict) -> str:
    return json.dumps(where, sort_keys=True)


def _seed_list(base: list[int], n: int) -> list[int]:
    """The first n seeds: the spec's, then the next integers after its largest."""
    return (base + list(range(max(base) + 1, max(base) + 1 + n - len(base))))[:n]


def _identity(experiment: Experiment) -> str:
    """What makes two experiments' runs the same: everything in the resolved spec but its name,
    description and seeds (a run's id carries its seed)."""
    resolved = {k: v for k, v in experiment.resolved().items() if k not in ("name", "description", "seeds")}
    return safe_dump(resolved, sort_keys=True)


def _cell_name(base: str, cell: Cell) -> str:
    """<experiment>__<key>-<value>__...: a valid experiment name, short enough for a folder."""
    parts = []
    for key, value in cell.where.items():
        if isinstance(value, dict):  # a mapping is named by its first value
            value = next(iter(value.values()), "")
        parts.append(re.sub(r"[^A-Za-z0-9_.-]", "-", f"{key.rsplit('.', 1)[-1]}-{file_safe(value)}"))
    label = "__".join(parts)
    name = f"{base}__{label}"
    if len(name) > MAX_NAME_LENGTH:
        name = f"{base[:60]}__{hashlib.sha1(label.encode()).hexdigest()[:12]}"
    return name


def _read(file: Path) -> list[dict]:
    try:
        entries = json.loads(file.read_text()) if file.exists() else []
        return [e for e in entries if isinstance(e, dict) and "id" in e]
    except (ValueError, TypeError):
        return []  # unreadable: rebuilt from what is evaluated now


def list_claims(groups: list[ClaimGroup], out_root: str | Path) -> list[dict]:
    """What `bnlab claims --list` shows, without training: per claim its id, statement, source,
    file, experiment, `problem` (why its file cannot run, or None), `verdict` (Holm-adjusted, from
    claims.json: its one cell's verdict, or for a claim with `across` where it holds; None before
    a run), `cells` (its conditions) and `runs_finished` of the `runs_needed` its comparisons use
    in every condition, at the file's seeds (a run that conditions share counts once)."""
    root = claims_dir(out_root)
    try:
        saved = {e["id"]: e for e in read_claims(root)}
    except ResultsError:
        saved = {}  # none yet, or unreadable: `bnlab claims` writes it
    rows = []
    for group in groups:
        finished: set[str] = set()  # configs finished in any folder of the file, as _round shares them
        conditions: dict[str, list[tuple[Experiment, dict]]] = {}
        if not group.problem:
            folders = {group.experiment.name: group.experiment}
            for claim in group.claims:
                conditions[claim.id] = [(group.experiment, claim.where)]
                for cell in cells(claim):
                    if cell.overrides:
                        name = _cell_name(group.experiment.name, cell)
                        if name not in folders:
                            folders[name] = group.make([*cell.overrides, f"name={name}"])
                        conditions[claim.id].append((folders[name], cell_where(claim, cell)))
            for experiment in folders.values():
                by_id = {run.run_id: run for run in experiment.runs}
                done = finished_on_disk(experiment.runs, root / experiment.name)
                finished |= {_config_key(by_id[run_id]) for run_id in done}
        for claim in group.claims:
            wanted = set()
            for experiment, where in conditions.get(claim.id, []):
                compared = needed(claim, experiment, where)
                wanted |= {_config_key(run) for run in experiment.runs if run.run_id in compared}
            rows.append(
                {
                    "id": claim.id,
                    "statement": claim.statement,
                    "source": claim.source,
                    "file": group.source,
                    "experiment": group.experiment.name if not group.problem else None,
                    "problem": group.problem,
                    "verdict": _listed_verdict(saved.get(claim.id)),
                    "cells": len(cells(claim)),
                    "runs_needed": len(wanted),
                    "runs_finished": len(wanted & finished),
                }
            )
    return rows


def _listed_verdict(entry: dict | None) -> str | None:
    """A claims.json entry's adjusted verdict: its one cell's, or where a claim with cells holds."""
    if entry is None:
        return None
    claim_cells = entry.get("cells") or []
    if len(claim_cells) == 1:
        return claim_cells[0].get("verdict_adjusted")
    return (entry.get("scope") or {}).get("holds")


def _config_key(run: Run) -> str:
    """What makes two runs the same run, whatever folder or condition they belong to."""
    return json.dumps(run.config, sort_keys=True)
