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
    probe:...[I], probe:...[I:J]                     the same at recorded iteration I only, or over
                                                     iterations I to J (both included; [I:] from I on)
With `reference: {KEY: VALUE, ...}` (swept keys), each run's metric is its distance to another
run's: |metric - the metric of the run of the same seed (and cell) with those values, the others
as `where` says|; `direction: less` then claims that the a runs end closer to that run than the b runs.
A diverged run keeps what it recorded (its best accuracies so far); a pair whose metric is
missing (e.g. an epoch a diverged run never reached) is left out, and `n` counts the pairs used.

A cell is the claim's experiment with the cell's values set as `bnlab run --set` would, compared as
the claim says (a `where` key the cell sets is the cell's). Every claim has `cells` in claims.json
(one, with `where: {}`, without `across`), each with its own paired statistics, d_z, p_sequential
and, after Holm's adjustment over every cell of every claim in claims.json (the family),
p_adjusted and verdict_adjusted; `scope` says where the claim holds (bnlab.claims.stats has the
statistics). The top-level fields are the claim's own condition, as before cells existed.

Experiments run under <out>/claims/<experiment name>/ (a cell's under <experiment name>__<cell>/)
with bnlab.lab.runner, so finished runs are reused; a run whose config another condition of the
file already needs is trained once. The results are <out>/claims/claims.json. Nothing here prints.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bnlab.errors import SpecError
from bnlab.lab.formatting import did_you_mean, format_short
from bnlab.spec.experiment import Experiment, experiment_from_text, load_experiment
from bnlab.spec.yaml_text import YamlLoader, parse_yaml, read_text, yaml_position

MIN_SEEDS = 5
METRIC_PATTERN = re.compile(
    r"^(?:(?P<column>best_val_acc|best_train_acc|final_train_loss)"
    r"|final_(?P<final>val|train)_acc"
    r"|(?P<gap>val|train)_acc_mode_gap"
    r"|(?P<acc>val|train)_acc@(?P<acc_epoch>\d+)"
    r"|train_loss@(?P<loss_epoch>\d+)"
    r"|probe:(?P<stat>[a-z0-9_]+)(?:@(?P<layer>\d+)(?:/(?P<over>\d+))?)?"
    r"(?:\[(?P<first>\d*)(?P<colon>:?)(?P<last>\d*)\])?)$"
)
METRIC_HELP = (
    "best_val_acc, best_train_acc, final_train_loss, final_val_acc, final_train_acc, val_acc@K, train_acc@K, "
    "val_acc_mode_gap, train_acc_mode_gap (final train-mode minus eval-mode accuracy), "
    "train_loss@K, probe:STAT, probe:STAT@LAYER or probe:STAT@LAYER/LAYER, each optionally at iteration "
    "[I] or over iterations [I:J] (from I, to J, both included; either may be left out)"
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
    reference: dict[str, Any] | None = None


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
        parts.append(f"{key.rsplit('.', 1)[-1]}={format_short(value)}")
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
    _check_claim(claim, experiment, f"{where}: across cell {cell_label(cell.where)}", cell_where(claim, cell))


def cell_where(claim: ClaimSpec, cell: Cell) -> dict[str, Any]:
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
        runs = select_runs(claim, experiment, getattr(claim, side), conditions)
        if not runs:
            raise SpecError(
                f"{where}: claim {claim.id}: no run has {claim.key}={getattr(claim, side)!r} with {conditions}; "
                f"values of {claim.key}: {_values(experiment, claim.key)}"
            )
    if claim.reference is not None:
        unswept = [k for k in claim.reference if k not in swept]
        if unswept:
            raise SpecError(f"{where}: claim {claim.id}: reference.{unswept[0]} is not swept by the experiment {swept}")
        picked = _runs_with(experiment, {**conditions, **claim.reference})
        if len(picked) != seeds:
            raise SpecError(
                f"{where}: claim {claim.id}: reference {claim.reference} with {conditions} picks {len(picked)} runs "
                f"for {seeds} seeds; it must pick one per seed"
            )
    probe = METRIC_PATTERN.match(claim.metric)["stat"]
    if probe and not getattr(experiment.spec, "record", None):
        raise SpecError(f"{where}: claim {claim.id}: metric {claim.metric} needs a `record:` section in the experiment")


def reference_runs(claim: ClaimSpec, experiment: Experiment, where: dict | None = None) -> dict[int, str]:
    """seed -> run_id of the runs the claim measures distances to (its `reference`; {} without one)."""
    if claim.reference is None:
        return {}
    conditions = {**(claim.where if where is None else where), **claim.reference}
    return {run.seed: run.run_id for run in _runs_with(experiment, conditions)}


def _runs_with(experiment: Experiment, conditions: dict) -> list:
    """The experiment's runs whose swept keys have the conditions' values."""
    return [run for run in experiment.runs if all(_same(run.swept[k], v) for k, v in conditions.items())]


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


def select_runs(claim: ClaimSpec, experiment: Experiment, value: Any, where: dict | None = None) -> dict[int, str]:
    """seed -> run_id of the runs with key = value and the `where` conditions (the claim's own)."""
    conditions = {**(claim.where if where is None else where), claim.key: value}
    return {run.seed: run.run_id for run in _runs_with(experiment, conditions)}
