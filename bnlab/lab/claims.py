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

Every claim compares two runs per seed, `key = a` against `key = b` with every other swept key
fixed by `where`; the same seed gives both the same initial weights and minibatches. The per-seed
differences a - b give a mean, a 95% t interval (n - 1 degrees of freedom) and a two-sided
p-value; the verdict is `supported` when the whole interval lies on the claimed side of 0,
`contradicted` when it lies on the other side, `inconclusive` when it touches or contains 0.

Metrics, per run:
    best_val_acc, best_train_acc, final_train_loss   the runs.csv columns
    final_val_acc, final_train_acc                   the last accuracy check (epochs.csv)
    val_acc@K, train_acc@K                           the accuracy check at the end of epoch K
    train_loss@K                                     the mean training loss over epoch K's iterations
    probe:STAT, probe:STAT@L                         the mean of a recorded statistic (probes.csv)
                                                     over its iterations, over every layer or layer L
A diverged run keeps what it recorded (its best accuracies so far); a pair whose metric is
missing (e.g. an epoch a diverged run never reached) is left out, and `n` counts the pairs used.

Experiments run under <out>/claims/<experiment name>/ with bnlab.lab.runner, so finished runs are
reused; the results are <out>/claims/claims.json. Nothing here prints.
"""

from __future__ import annotations

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
from scipy import stats

from bnlab.errors import ResultsError, SpecError
from bnlab.lab.executors import Executor
from bnlab.lab.results import ExperimentResults, claims_dir, finished_on_disk, read_claims, write_claims
from bnlab.lab.results import load_experiment as load_results
from bnlab.lab.runner import run_experiment
from bnlab.lab.spec import (
    Experiment,
    YamlLoader,
    did_you_mean,
    experiment_from_text,
    load_experiment,
    parse_yaml,
    read_text,
    yaml_position,
)

MIN_SEEDS = 5
CONFIDENCE = 0.95
RUNS_COLUMNS = ("best_val_acc", "best_train_acc", "final_train_loss")
METRIC_PATTERN = re.compile(
    r"^(?:(?P<column>best_val_acc|best_train_acc|final_train_loss)"
    r"|final_(?P<final>val|train)_acc"
    r"|(?P<acc>val|train)_acc@(?P<acc_epoch>\d+)"
    r"|train_loss@(?P<loss_epoch>\d+)"
    r"|probe:(?P<stat>[a-z0-9_]+)(?:@(?P<layer>\d+))?)$"
)
METRIC_HELP = (
    "best_val_acc, best_train_acc, final_train_loss, final_val_acc, final_train_acc, val_acc@K, train_acc@K, "
    "train_loss@K, probe:STAT or probe:STAT@LAYER"
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
    try:
        group.experiment = _experiment(path, text, raw, spec)
        for i, claim in enumerate(spec.claims):
            _check_claim(claim, group.experiment, f"{source}{yaml_position(text, ('claims', i))}")
    except SpecError as exc:
        group.problem = str(exc)
    return group


def _experiment(path: Path, text: str, raw: dict, spec: ClaimsFileSpec) -> Experiment:
    if spec.experiment is not None:
        extra = sorted(set(raw) - {"experiment", "set", "claims"})
        if extra:
            raise SpecError(f"{path}: {extra[0]}: a file naming its experiment holds only experiment, set and claims")
        return load_experiment(path.parent / spec.experiment, spec.set)
    # The file is the spec: hide the claims and set lines (blank lines keep every line number
    # right for the spec's own messages) and validate the rest as any spec.
    lines = text.splitlines()
    for node_key in ("claims", "set"):
        span = _top_level_span(text, node_key)
        if span:
            lines[span[0] : span[1]] = [""] * (span[1] - span[0])
    return experiment_from_text("\n".join(lines) + "\n", str(path), spec.set)


def _top_level_span(text: str, key: str) -> tuple[int, int] | None:
    """The lines [start, stop) of a top-level key and its value in a block-style YAML mapping."""
    node = yaml.compose(text, Loader=YamlLoader)
    for k, v in node.value:
        if k.value == key:
            stop = v.end_mark.line + (1 if v.end_mark.column > 0 else 0)
            return k.start_mark.line, stop
    return None


def _check_claim(claim: ClaimSpec, experiment: Experiment, where: str) -> None:
    """The claim's key, values and conditions pick exactly one `a` run and one `b` run per seed."""
    swept = experiment.swept_keys
    if claim.key not in swept:
        raise SpecError(f"{where}: claim {claim.id}: key {claim.key!r} is not swept by the experiment; swept: {swept}")
    for k in claim.where:
        if k not in swept or k == claim.key:
            raise SpecError(f"{where}: claim {claim.id}: where.{k} must be another swept key of the experiment {swept}")
    missing = [k for k in swept if k != claim.key and k not in claim.where and len(_values(experiment, k)) > 1]
    if missing:
        values = _values(experiment, missing[0])
        raise SpecError(f"{where}: claim {claim.id}: fix {missing[0]} in where (its values: {values})")
    seeds = len(experiment.spec.seed_list())
    if seeds < MIN_SEEDS:
        raise SpecError(f"{where}: claim {claim.id}: needs at least {MIN_SEEDS} seeds; the experiment has {seeds}")
    for side in ("a", "b"):
        runs = _select(claim, experiment, getattr(claim, side))
        if not runs:
            raise SpecError(
                f"{where}: claim {claim.id}: no run has {claim.key}={getattr(claim, side)!r} with {claim.where}; "
                f"values of {claim.key}: {_values(experiment, claim.key)}"
            )
    probe = METRIC_PATTERN.match(claim.metric)["stat"]
    if probe and not getattr(experiment.spec, "record", None):
        raise SpecError(f"{where}: claim {claim.id}: metric {claim.metric} needs a `record:` section in the experiment")


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


def _select(claim: ClaimSpec, experiment: Experiment, value: Any) -> dict[int, str]:
    """seed -> run_id of the runs with key = value and the `where` conditions."""
    conditions = {**claim.where, claim.key: value}
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
    if m["layer"] is not None:
        rows = rows[rows["layer"] == int(m["layer"])]
    return rows.groupby("run_id")["value"].mean().reindex(runs.index)


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedT:
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_t(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> PairedT:
    """Paired t statistics of the differences a - b: mean, two-sided `confidence` interval with
    n - 1 degrees of freedom, two-sided p-value of mean = 0. Identical differences (sd 0) give a
    zero-width interval and p 0 (or 1 when they are all 0)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    if n < 2:
        raise ValueError(f"a paired t interval needs at least 2 pairs, got {n}")
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return PairedT(n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return PairedT(n, mean, mean - half, mean + half, p)


def verdict(ci_low: float, ci_high: float, direction: str) -> str:
    """supported: the whole interval on the claimed side of 0; contradicted: on the other side;
    inconclusive: it touches or contains 0."""
    above, below = ci_low > 0, ci_high < 0
    if (above and direction == "greater") or (below and direction == "less"):
        return "supported"
    if above or below:
        return "contradicted"
    return "inconclusive"


def evaluate(claim: ClaimSpec, experiment: Experiment, results: ExperimentResults) -> dict:
    """The claims.json entry of one claim, from its experiment's results."""
    values = metric_values(results, claim.metric)
    a_runs, b_runs = _select(claim, experiment, claim.a), _select(claim, experiment, claim.b)
    pairs = []
    for seed in sorted(set(a_runs) & set(b_runs)):
        va, vb = values.get(a_runs[seed], math.nan), values.get(b_runs[seed], math.nan)
        if np.isfinite(va) and np.isfinite(vb):
            pairs.append({"seed": seed, "a": float(va), "b": float(vb)})
    if len(pairs) < 2:
        raise SpecError(
            f"claim {claim.id}: only {len(pairs)} seed(s) have {claim.metric} for both groups in {results.path}; "
            f"check the runs there (diverged or failed?)"
        )
    t = paired_t([p["a"] for p in pairs], [p["b"] for p in pairs])
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
        "pairs": pairs,
        "mean_diff": t.mean_diff,
        "ci_low": t.ci_low,
        "ci_high": t.ci_high,
        "p_value": t.p_value,
        "verdict": verdict(t.ci_low, t.ci_high, claim.direction),
        "n": t.n,
    }


# --- running ---------------------------------------------------------------------------------


def run_claims(
    groups: list[ClaimGroup],
    out_root: str | Path,
    executor: Executor,
    ids: set[str] | None = None,
    on_experiment: Callable[[Experiment, int, int], None] | None = None,
    on_outcome: Callable | None = None,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run the experiment of every runnable group holding a selected claim (all when ids is None;
    with ids, only the runs the selected claims compare), evaluate the selected claims and merge
    them into <out>/claims/claims.json. Returns the entries of the claims evaluated now, in file
    order. on_experiment(experiment, total, to_train) is called once each experiment's plan is known."""
    root = claims_dir(out_root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for group in groups:
        chosen = [c for c in group.claims if ids is None or c.id in ids]
        if not chosen or group.experiment is None:
            continue
        experiment = group.experiment
        start = (lambda total, todo, e=experiment: on_experiment(e, total, todo)) if on_experiment else None
        only = None if ids is None else set().union(*(needed_runs(c, experiment) for c in chosen))
        run_experiment(experiment, root, executor, on_start=start, on_outcome=on_outcome, progress=progress, only=only)
        results = load_results(root / experiment.name)
        entries += [evaluate(claim, experiment, results) for claim in chosen]
    write_claims(root, entries, [c.id for g in groups for c in g.claims])
    return entries


def list_claims(groups: list[ClaimGroup], out_root: str | Path) -> list[dict]:
    """What `bnlab claims --list` shows, without training: per claim its id, statement, source,
    file, experiment, `problem` (why its file cannot run, or None), `verdict` (from claims.json,
    or None), and `runs_finished` of the `runs_needed` its comparison uses."""
    try:
        verdicts = {e["id"]: e.get("verdict") for e in read_claims(claims_dir(out_root))}
    except ResultsError:
        verdicts = {}  # none yet, or unreadable: `bnlab claims` writes it
    rows = []
    for group in groups:
        experiment = group.experiment if not group.problem else None
        finished = set()
        if experiment:
            finished = set(finished_on_disk(experiment.runs, claims_dir(out_root) / experiment.name))
        for claim in group.claims:
            needed = needed_runs(claim, experiment) if experiment else set()
            rows.append(
                {
                    "id": claim.id,
                    "statement": claim.statement,
                    "source": claim.source,
                    "file": group.source,
                    "experiment": experiment.name if experiment else None,
                    "problem": group.problem,
                    "verdict": verdicts.get(claim.id),
                    "runs_needed": len(needed),
                    "runs_finished": len(needed & finished),
                }
            )
    return rows
