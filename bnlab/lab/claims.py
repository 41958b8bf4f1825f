"""The claims lab: what the reference notes claim about normalization, tested with seeds.

A claims file (configs/claims/*.yaml) is one experiment and the claims it tests. Either the file is
an experiment spec itself (every section of configs/*.yaml) plus a `claims:` list, or it names one:

    experiment: ../deep_bn.yaml        # a spec file, relative to this file
    set: [seeds=8]                     # optional overrides, as `bnlab run --set`
    claims:
      - id: bn-deep-faster             # letters, digits, '-' and '_'; unique over every file
        statement: Batch norm makes a deep net train faster.
        source: 000/001, Batchnorm for deep networks      # the note's file and section
        metric: train_acc@3            # see METRICS below
        key: model.normalization       # the swept key that separates the two groups
        a: batchnorm                   # the two compared values of `key`
        b: null
        where: {}                      # fixed values of the experiment's other swept keys
        direction: greater             # the claimed sign of a - b: greater (> 0) or less (< 0)
        across:                        # optional: the conditions to test it in; the cells are their product
          model.hidden_dims: [[100, 100], [100, 100, 100, 100, 100]]    # a spec key and its values, or
          optimizer:                                                     # a name whose values set several
            - {solver.update_rule: adam, solver.optim_config: {learning_rate: 1.0e-3}}
            - {solver.update_rule: sgd_momentum, solver.optim_config: {learning_rate: 1.0e-2}}

Every claim compares two runs per seed, `key = a` against `key = b` with every other swept key
fixed by `where` (except keys zipped with `key`, which its value fixes); the same seed gives both
the same initial weights and minibatches. The per-seed differences a - b give a mean, a 95% t
interval (n - 1 degrees of freedom) and a two-sided p-value; the verdict is `supported` when the
whole interval lies on the claimed side of 0, `contradicted` when it lies on the other side,
`inconclusive` when it touches or contains 0.

Metrics, per run:
    best_val_acc, best_train_acc, final_train_loss   the runs.csv columns
    final_val_acc, final_train_acc                   the last accuracy check (epochs.csv)
    val_acc@K, train_acc@K                           the accuracy check at the end of epoch K
    train_loss@K                                     the mean training loss over epoch K's iterations
    probe:STAT, probe:STAT@L                         the mean of a recorded statistic (probes.csv)
                                                     over its iterations, over every layer or layer L
    probe:STAT@L/M                                   the ratio of the means at layers L and M (growth
                                                     with depth, e.g. probe:grad_norm@2/16)
A diverged run keeps what it recorded (its best accuracies so far); a pair whose metric is
missing (e.g. an epoch a diverged run never reached) is left out, and `n` counts the pairs used.

A cell is the claim's experiment with the cell's values set as `bnlab run --set` would, compared as
the claim says (a `where` key the cell sets is the cell's). Every claim has `cells` in claims.json
(one, with `where: {}`, without `across`), each with its own paired statistics, d_z, p_sequential
and, after Holm's adjustment over every cell of every claim in claims.json (the family),
p_adjusted and verdict_adjusted; `scope` says where the claim holds (bnlab.lab.stats has the
statistics). The top-level fields are the claim's own condition, as before cells existed.

Experiments run under <out>/claims/<experiment name>/ (a cell's under <experiment name>__<cell>/)
with bnlab.lab.runner, so finished runs are reused; a run whose config another condition of the
file already needs is trained once. The results are <out>/claims/claims.json. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bnlab.errors import ResultsError, SpecError
from bnlab.lab.executors import Executor
from bnlab.lab.formatting import file_safe
from bnlab.lab.results import ExperimentResults, claims_dir, finished_on_disk, read_claims, write_claims
from bnlab.lab.results import load_experiment as load_results
from bnlab.lab.runner import run_experiment
from bnlab.lab.spec import (
    MAX_NAME_LENGTH,
    Experiment,
    Run,
    YamlLoader,
    did_you_mean,
    experiment_from_text,
    load_experiment,
    parse_yaml,
    read_text,
    yaml_position,
)
from bnlab.lab.stats import (
    cohens_dz,
    holm,
    paired_t,
    planned_looks,
    seeds_for_power,
    sequential_p,
    verdict,
    verdict_adjusted,
)

MIN_SEEDS = 5
RUNS_COLUMNS = ("best_val_acc", "best_train_acc", "final_train_loss")
METRIC_PATTERN = re.compile(
    r"^(?:(?P<column>best_val_acc|best_train_acc|final_train_loss)"
    r"|final_(?P<final>val|train)_acc"
    r"|(?P<acc>val|train)_acc@(?P<acc_epoch>\d+)"
    r"|train_loss@(?P<loss_epoch>\d+)"
    r"|probe:(?P<stat>[a-z0-9_]+)(?:@(?P<layer>\d+)(?:/(?P<over>\d+))?)?)$"
)
METRIC_HELP = (
    "best_val_acc, best_train_acc, final_train_loss, final_val_acc, final_train_acc, val_acc@K, train_acc@K, "
    "train_loss@K, probe:STAT, probe:STAT@LAYER or probe:STAT@LAYER/LAYER"
)


# --- the schema ------------------------------------------------------------------------------


class ClaimSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=80)]
    statement: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1)]
    metric: Annotated[str, Field(pattern=METRIC_PATTERN.pattern)]
    key: str
    a: Any
    b: Any
    where: dict[str, Any] = Field(default_factory=dict)
    direction: Literal["greater", "less"]
    across: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One condition of a claim: `where` names it (condition -> value, as in the claim file) and
    `overrides` are the `--set` items that put the claim's experiment in it."""

    where: dict[str, Any]
    overrides: tuple[str, ...]

    @property
    def keys(self) -> set[str]:
        """The spec keys the cell sets."""
        return {item.partition("=")[0] for item in self.overrides}


def cells(claim: ClaimSpec) -> list[Cell]:
    """The product of the claim's `across` values, in file order (the first key varies slowest);
    one cell with no overrides for a claim without `across`. A value that is a mapping sets each
    of its keys (e.g. an optimizer with its learning rate): `optimizer: [{solver.update_rule: adam,
    solver.optim_config: {learning_rate: 1.0e-3}}, ...]`."""
    axes = [[(key, value) for value in values] for key, values in claim.across.items()]
    result = []
    for combo in itertools.product(*axes):
        overrides: list[str] = []
        for key, value in combo:
            items = value.items() if isinstance(value, dict) else [(key, value)]
            overrides += [f"{k}={json.dumps(v)}" for k, v in items]
        result.append(Cell(dict(combo), tuple(overrides)))
    return result


def cell_label(where: dict[str, Any]) -> str:
    """A short name of a cell: 'update_rule=adam, hidden_dims=5x100' ('' for the claim's own
    condition). A mapping value is named by its first value."""
    parts = []
    for key, value in where.items():
        if isinstance(value, dict):
            value = next(iter(value.values()), "")
        if isinstance(value, list) and len(value) > 1 and all(v == value[0] for v in value):
            value = f"{len(value)}x{value[0]}"
        parts.append(f"{key.rsplit('.', 1)[-1]}={'null' if value is None else value}")
    return ", ".join(parts)


class ClaimsFileSpec(BaseModel):
    """The claims-file keys besides the experiment's own sections."""

    model_config = ConfigDict(extra="allow", strict=True)

    experiment: str | None = None
    set: list[str] = Field(default_factory=list)
    claims: Annotated[list[ClaimSpec], Field(min_length=1)]


@dataclass
class ClaimGroup:
    """One claims file: its claims, and its experiment, or the reason it cannot run (`problem`)."""

    source: str
    claims: list[ClaimSpec]
    experiment: Experiment | None = None
    problem: str | None = None
    # the experiment with more `--set` items (a cell's, a seed list): the file's own set comes first
    make: Callable[[list[str]], Experiment] | None = None


# --- loading ---------------------------------------------------------------------------------


def load_claims(folder: str | Path) -> list[ClaimGroup]:
    """Every claims file in folder (sorted by name). A file whose claims cannot be read raises
    SpecError; one whose experiment is invalid (e.g. a key of a feature this bnlab lacks) comes
    back with `problem` set, so the others still run."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpecError(f"{folder}: no claims folder here; pass --dir with the folder of claim files (configs/claims)")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise SpecError(f"{folder}: holds no claim files (*.yaml); see configs/claims/ for examples")
    groups = [load_claim_file(file) for file in files]
    seen: dict[str, str] = {}
    for group in groups:
        for claim in group.claims:
            if claim.id in seen:
                raise SpecError(f"{group.source}: claim id {claim.id!r} is also used in {seen[claim.id]}; rename one")
            seen[claim.id] = group.source
    names: dict[str, str] = {}
    for group in groups:
        if group.experiment is not None:
            other = names.setdefault(group.experiment.name, group.source)
            if other != group.source:
                raise SpecError(
                    f"{group.source}: experiment name {group.experiment.name!r} is also used by {other}; "
                    f"their results would share a folder: rename one"
                )
    return groups


def load_claim_file(path: str | Path) -> ClaimGroup:
    path = Path(path)
    source = str(path)
    text = read_text(path, "claims file")
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict) or "claims" not in raw:
        raise SpecError(
            f"{source}: a claims file is a mapping with a `claims:` list (and an experiment); see configs/claims/"
        )
    try:
        spec = ClaimsFileSpec.model_validate(raw)
    except ValidationError as exc:
        # a misspelt key also makes the real one missing: name the misspelling
        err = next((e for e in exc.errors() if e["type"] == "extra_forbidden"), exc.errors()[0])
        loc = tuple(err["loc"])
        where = f"{source}{yaml_position(text, loc)}"
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), ClaimSpec.model_fields)
            valid = ", ".join(ClaimSpec.model_fields)
            raise SpecError(f"{where}: {key}: unknown key{hint}; valid keys: {valid}") from None
        if err["type"] == "missing":
            raise SpecError(f"{where}: {key}: required key is missing") from None
        if loc[-1:] == ("metric",):
            raise SpecError(f"{where}: {key}: unknown metric {err['input']!r}; choose {METRIC_HELP}") from None
        if loc[-1:] == ("direction",):
            raise SpecError(f"{where}: {key}: direction is greater or less (the claimed sign of a - b)") from None
        raise SpecError(f"{where}: {key}: {err['msg']} (got {err['input']!r})") from None
    ids = [c.id for c in spec.claims]
    if len(set(ids)) != len(ids):
        raise SpecError(f"{source}: a claim id appears twice: {sorted(i for i in ids if ids.count(i) > 1)[0]!r}")
    group = ClaimGroup(source, spec.claims)
    group.make = lambda extra: _experiment(path, text, raw, spec, extra)
    try:
        group.experiment = group.make([])
        for i, claim in enumerate(spec.claims):
            where = f"{source}{yaml_position(text, ('claims', i))}"
            _check_claim(claim, group.experiment, where)
            for cell in cells(claim) if claim.across else []:
                _check_cell(claim, cell, group, where)
    except SpecError as exc:
        group.problem = str(exc)
    return group


def experiments(group: ClaimGroup, ids: set[str] | None = None) -> list[Experiment]:
    """The experiment of a runnable group and of every cell of its claims (those in ids if given):
    what their data must fit."""
    chosen = [c for c in group.claims if ids is None or c.id in ids]
    return [
        group.experiment,
        *(group.make(list(cell.overrides)) for c in chosen for cell in cells(c) if cell.overrides),
    ]


def _experiment(path: Path, text: str, raw: dict, spec: ClaimsFileSpec, extra: list[str]) -> Experiment:
    overrides = [*spec.set, *extra]
    if spec.experiment is not None:
        others = sorted(set(raw) - {"experiment", "set", "claims"})
        if others:
            raise SpecError(f"{path}: {others[0]}: a file naming its experiment holds only experiment, set and claims")
        return load_experiment(path.parent / spec.experiment, overrides)
    # The file is the spec: hide the claims and set lines (blank lines keep every line number
    # right for the spec's own messages) and validate the rest as any spec.
    lines = text.splitlines()
    for node_key in ("claims", "set"):
        span = _top_level_span(text, node_key)
        if span:
            lines[span[0] : span[1]] = [""] * (span[1] - span[0])
    return experiment_from_text("\n".join(lines) + "\n", str(path), overrides)


def _top_level_span(text: str, key: str) -> tuple[int, int] | None:
    """The lines [start, stop) of a top-level key and its value in a block-style YAML mapping."""
    node = yaml.compose(text, Loader=YamlLoader)
    for k, v in node.value:
        if k.value == key:
            stop = v.end_mark.line + (1 if v.end_mark.column > 0 else 0)
            return k.start_mark.line, stop
    return None


def _check_cell(claim: ClaimSpec, cell: Cell, group: ClaimGroup, where: str) -> None:
    """A cell's overrides make a valid experiment in which the claim still picks its two runs."""
    if claim.key in cell.keys:
        raise SpecError(f"{where}: claim {claim.id}: across cannot vary the compared key {claim.key}")
    try:
        experiment = group.make(list(cell.overrides))
    except SpecError as exc:
        raise SpecError(f"{where}: claim {claim.id}: across cell {cell_label(cell.where)}: {exc}") from None
    _check_claim(claim, experiment, f"{where}: across cell {cell_label(cell.where)}", _cell_where(claim, cell))


def _cell_where(claim: ClaimSpec, cell: Cell) -> dict[str, Any]:
    """The claim's `where` in a cell: the keys the cell sets are fixed by its `--set` already."""
    return {k: v for k, v in claim.where.items() if k not in cell.keys}


def _check_claim(claim: ClaimSpec, experiment: Experiment, where: str, conditions: dict | None = None) -> None:
    """The claim's key, values and conditions pick exactly one `a` run and one `b` run per seed."""
    conditions = claim.where if conditions is None else conditions
    swept = experiment.swept_keys
    if claim.key not in swept:
        raise SpecError(f"{where}: claim {claim.id}: key {claim.key!r} is not swept by the experiment; swept: {swept}")
    for k in conditions:
        if k not in swept or k == claim.key:
            raise SpecError(f"{where}: claim {claim.id}: where.{k} must be another swept key of the experiment {swept}")
    missing = [
        k
        for k in swept
        if k != claim.key
        and k not in conditions
        and len(_values(experiment, k)) > 1
        and not _follows(experiment, claim.key, k)
    ]
    if missing:
        values = _values(experiment, missing[0])
        raise SpecError(f"{where}: claim {claim.id}: fix {missing[0]} in where (its values: {values})")
    seeds = len(experiment.spec.seed_list())
    if seeds < MIN_SEEDS:
        raise SpecError(f"{where}: claim {claim.id}: needs at least {MIN_SEEDS} seeds; the experiment has {seeds}")
    for side in ("a", "b"):
        runs = _select(claim, experiment, getattr(claim, side), conditions)
        if not runs:
            raise SpecError(
                f"{where}: claim {claim.id}: no run has {claim.key}={getattr(claim, side)!r} with {conditions}; "
                f"values of {claim.key}: {_values(experiment, claim.key)}"
            )
    probe = METRIC_PATTERN.match(claim.metric)["stat"]
    if probe and not getattr(experiment.spec, "record", None):
        raise SpecError(f"{where}: claim {claim.id}: metric {claim.metric} needs a `record:` section in the experiment")


def _follows(experiment: Experiment, key: str, other: str) -> bool:
    """Whether `other` is a function of `key` over the runs (a zip: model.normalization null with
    model.skipinit true against batchnorm with false), so fixing the key fixes it."""
    seen: dict[str, str] = {}
    for run in experiment.runs:
        value, follower = repr(run.swept[key]), repr(run.swept[other])
        if seen.setdefault(value, follower) != follower:
            return False
    return True


def _values(experiment: Experiment, key: str) -> list:
    values: list = []
    for run in experiment.runs:
        if not any(_same(run.swept[key], v) for v in values):
            values.append(run.swept[key])
    return values


def _same(x: Any, y: Any) -> bool:
    """Equal as spec values: 1 and 1.0 are the same weight scale."""
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        return math.isclose(x, y, rel_tol=1e-9)
    return x == y


def needed_runs(claim: ClaimSpec, experiment: Experiment) -> set[str]:
    """The run ids this claim compares: its `a` and `b` runs of every seed."""
    return set(_select(claim, experiment, claim.a).values()) | set(_select(claim, experiment, claim.b).values())


def _select(claim: ClaimSpec, experiment: Experiment, value: Any, where: dict | None = None) -> dict[int, str]:
    """seed -> run_id of the runs with key = value and the `where` conditions (the claim's own)."""
    conditions = {**(claim.where if where is None else where), claim.key: value}
    return {
        run.seed: run.run_id for run in experiment.runs if all(_same(run.swept[k], v) for k, v in conditions.items())
    }


# --- metrics ---------------------------------------------------------------------------------


def metric_values(results: ExperimentResults, metric: str) -> pd.Series:
    """The metric of every finished run, indexed by run_id (NaN where a run lacks it)."""
    m = METRIC_PATTERN.match(metric)
    if m is None:
        raise SpecError(f"unknown metric {metric!r}; choose {METRIC_HELP}")
    runs = results.runs.set_index("run_id")
    if m["column"]:
        return runs[m["column"]].astype(float)
    if m["final"]:
        return results.epochs.groupby("run_id")[f"{m['final']}_acc"].last().reindex(runs.index)
    if m["acc"]:
        rows = results.epochs[results.epochs["epoch"] == int(m["acc_epoch"])]
        return rows.groupby("run_id")[f"{m['acc']}_acc"].last().reindex(runs.index)
    if m["loss_epoch"]:
        rows = results.history[results.history["epoch"] == int(m["loss_epoch"])]
        return rows.groupby("run_id")["loss"].mean().reindex(runs.index)
    probes = getattr(results, "probes", None)
    if probes is None or probes.empty:
        raise SpecError(f"{results.path}: metric {metric} needs probes.csv; the experiment records no statistics")
    rows = probes[probes["statistic"] == m["stat"]]
    if m["over"] is not None:
        mean = rows.groupby(["run_id", "layer"])["value"].mean()
        at = {layer: mean.xs(int(m[part]), level="layer") for part, layer in (("layer", "L"), ("over", "M"))}
        return (at["L"] / at["M"]).reindex(runs.index)
    if m["layer"] is not None:
        rows = rows[rows["layer"] == int(m["layer"])]
    return rows.groupby("run_id")["value"].mean().reindex(runs.index)


def _pairs(claim: ClaimSpec, experiment: Experiment, metric_of: Callable[[Run], float], where: dict, seeds: list[int]):
    """[{seed, a, b}] of the given seeds where both runs have the metric (metric_of(run), NaN if not)."""
    a_runs, b_runs = (
        {r.seed: r for r in experiment.runs if r.run_id in ids} for ids in _sides(claim, experiment, where)
    )
    pairs = []
    for seed in sorted(set(a_runs) & set(b_runs) & set(seeds)):
        va, vb = metric_of(a_runs[seed]), metric_of(b_runs[seed])
        if np.isfinite(va) and np.isfinite(vb):
            pairs.append({"seed": seed, "a": float(va), "b": float(vb)})
    if len(pairs) < 2:
        raise SpecError(
            f"claim {claim.id}: only {len(pairs)} seed(s) have {claim.metric} for both groups "
            f"(where {cell_label(where) or 'as the claim says'}) in {experiment.name}; "
            f"check the runs there (diverged or failed?)"
        )
    return pairs


def _sides(claim: ClaimSpec, experiment: Experiment, where: dict) -> tuple[set[str], set[str]]:
    """The run ids of the a runs and of the b runs under `where`."""
    a, b = (set(_select(claim, experiment, v, where).values()) for v in (claim.a, claim.b))
    return a, b


def _paired_fields(claim: ClaimSpec, pairs: list[dict]) -> dict:
    t = paired_t([p["a"] for p in pairs], [p["b"] for p in pairs])
    return {
        "pairs": pairs,
        "mean_diff": t.mean_diff,
        "ci_low": t.ci_low,
        "ci_high": t.ci_high,
        "p_value": t.p_value,
        "verdict": verdict(t.ci_low, t.ci_high, claim.direction),
        "n": t.n,
    }


def evaluate(
    claim: ClaimSpec, experiment: Experiment, results: ExperimentResults, seeds: list[int] | None = None
) -> dict:
    """The claims.json entry of one claim in its own condition (its top-level fields), from its
    experiment's results: the pairs of `seeds` (default: the experiment's)."""
    seeds = experiment.spec.seed_list() if seeds is None else seeds
    return {
        "id": claim.id,
        "statement": claim.statement,
        "source": claim.source,
        "experiment": str(results.path),
        "metric": claim.metric,
        "key": claim.key,
        "a": claim.a,
        "b": claim.b,
        "where": claim.where,
        "direction": claim.direction,
        **_paired_fields(claim, _pairs(claim, experiment, _lookup(results, claim.metric), claim.where, seeds)),
    }


def _lookup(results: ExperimentResults, metric: str) -> Callable[[Run], float]:
    values = metric_values(results, metric)
    return lambda run: values.get(run.run_id, math.nan)


def evaluate_cell(
    claim: ClaimSpec,
    cell: Cell,
    experiment: Experiment,
    metric_of: Callable[[Run], float],
    seeds: list[int],
    looks: list[int],
    planned: int,
) -> dict:
    """One cell of a claim (before the family's adjustment): the paired t statistics of its pairs,
    d_z, and p_sequential, the p-value of the last of its `looks` (seed counts) Bonferroni-split
    over the `planned` looks of its design (1 for a fixed number of seeds: p_sequential = p_value).
    `experiment` is the claim's experiment in the cell, metric_of(run) the metric of one of its runs."""
    pairs = _pairs(claim, experiment, metric_of, _cell_where(claim, cell), seeds)
    fields = _paired_fields(claim, pairs)
    return {
        "where": cell.where,
        **fields,
        "looks": looks,
        "planned_looks": planned,
        "p_sequential": sequential_p(fields["p_value"], planned),
        "effect_size": cohens_dz([p["a"] for p in pairs], [p["b"] for p in pairs]),
    }


def adjust_family(entries: list[dict]) -> None:
    """Holm's adjustment of p_sequential over every cell of every entry (the family), in place:
    each cell gets p_adjusted, verdict_adjusted and, when inconclusive, seeds_for_power (the seeds
    80% power would need at its observed d_z); each entry gets its scope."""
    entries = [e for e in entries if "cells" in e]  # claims.json written before cells existed: left as they are
    family = [cell for entry in entries for cell in entry["cells"]]
    for cell, p in zip(family, holm([c["p_sequential"] for c in family]), strict=True):
        cell["p_adjusted"] = p
    for entry in entries:
        for cell in entry["cells"]:
            cell["verdict_adjusted"] = verdict_adjusted(cell["p_adjusted"], cell["mean_diff"], entry["direction"])
            inconclusive = cell["verdict_adjusted"] == "inconclusive"
            cell["seeds_for_power"] = seeds_for_power(cell["effect_size"]) if inconclusive else None
        entry["scope"] = scope(entry["cells"])


def scope(cells_: list[dict]) -> dict:
    """Where a claim holds, from its cells' adjusted verdicts: `holds` is everywhere (supported in
    every cell), somewhere (in some) or nowhere (in none); `supported`, `contradicted` and
    `inconclusive` list the cells' labels; `text` says it in words."""
    by = {
        v: [cell_label(c["where"]) or "its condition" for c in cells_ if c["verdict_adjusted"] == v]
        for v in ("supported", "contradicted", "inconclusive")
    }
    total = len(cells_)
    if len(by["supported"]) == total:
        holds, text = "everywhere", "supported in every cell" if total > 1 else "supported"
    elif by["supported"]:
        holds, text = "somewhere", f"supported in {len(by['supported'])} of {total} cells: {'; '.join(by['supported'])}"
    else:
        holds, text = "nowhere", "supported in no cell" if total > 1 else "not supported"
    if by["contradicted"] and total > 1:
        text += f"; contradicted in {'; '.join(by['contradicted'])}"
    elif by["contradicted"]:
        text += " (contradicted)"
    return {"holds": holds, **by, "text": text}


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
                a, b = _sides(claim, experiment, claim.where if cell is None else _cell_where(claim, cell))
                for run in experiment.runs:
                    key = (group.source, _config_key(run))
                    if run.run_id in a | b and run.seed in seeds and key not in home:
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
            experiment, root, executor, on_start=start, on_outcome=on_outcome, progress=progress, only=folder["need"]
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
    return yaml.safe_dump(resolved, sort_keys=True)


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
                        conditions[claim.id].append((folders[name], _cell_where(claim, cell)))
            for experiment in folders.values():
                by_id = {run.run_id: run for run in experiment.runs}
                done = finished_on_disk(experiment.runs, root / experiment.name)
                finished |= {_config_key(by_id[run_id]) for run_id in done}
        for claim in group.claims:
            needed = set()
            for experiment, where in conditions.get(claim.id, []):
                compared = set().union(*_sides(claim, experiment, where))
                needed |= {_config_key(run) for run in experiment.runs if run.run_id in compared}
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
                    "runs_needed": len(needed),
                    "runs_finished": len(needed & finished),
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
