"""A claim evaluated: the metrics of runs (METRICS in bnlab.claims.files), the paired differences
per seed, the verdict of each condition and cell, Holm's adjustment over the family and where
the claim holds (bnlab.claims.stats has the statistics)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from bnlab.claims.files import (
    METRIC_HELP,
    METRIC_PATTERN,
    Cell,
    ClaimSpec,
    cell_label,
    cell_where,
    reference_runs,
    select_runs,
)
from bnlab.claims.stats import (
    cohens_dz,
    holm,
    paired_t,
    seeds_for_power,
    sequential_p,
    verdict,
    verdict_adjusted,
)
from bnlab.errors import SpecError
from bnlab.lab.results import ExperimentResults
from bnlab.spec.experiment import (
    Experiment,
    Run,
)

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
    if m["gap"]:  # the last check's accuracy in train mode (batch statistics) minus in eval mode
        column = f"{m['gap']}_acc_train_mode"
        if column not in results.epochs:
            raise SpecError(f"{results.path}: metric {metric} needs solver.train_mode_accuracy: true in the experiment")
        last = results.epochs.groupby("run_id")[[column, f"{m['gap']}_acc"]].last()
        return (last[column] - last[f"{m['gap']}_acc"]).reindex(runs.index)
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
    if m["first"] or m["last"]:
        first = int(m["first"]) if m["first"] else 0
        last = (int(m["last"]) if m["last"] else math.inf) if m["colon"] else first
        rows = rows[rows["iteration"].between(first, last)]
    if m["over"] is not None:
        mean = rows.groupby(["run_id", "layer"])["value"].mean()
        at = {layer: mean.xs(int(m[part]), level="layer") for part, layer in (("layer", "L"), ("over", "M"))}
        return (at["L"] / at["M"]).reindex(runs.index)
    if m["layer"] is not None:
        rows = rows[rows["layer"] == int(m["layer"])]
    return rows.groupby("run_id")["value"].mean().reindex(runs.index)


def _pairs(claim: ClaimSpec, experiment: Experiment, metric_of: Callable[[Run], float], where: dict, seeds: list[int]):
    """[{seed, a, b}] of the given seeds where both runs have the metric (metric_of(run), NaN if not;
    with a reference, the distance to the reference run's)."""
    if claim.reference is not None:
        by_id = {run.run_id: run for run in experiment.runs}
        reference = {seed: by_id[run_id] for seed, run_id in reference_runs(claim, experiment, where).items()}
        own_metric = metric_of

        def metric_of(run: Run) -> float:
            return abs(own_metric(run) - own_metric(reference[run.seed])) if run.seed in reference else math.nan

    a_runs, b_runs = (
        {r.seed: r for r in experiment.runs if r.run_id in ids} for ids in sides(claim, experiment, where)
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


def sides(claim: ClaimSpec, experiment: Experiment, where: dict) -> tuple[set[str], set[str]]:
    """The run ids of the a runs and of the b runs under `where`."""
    a, b = (set(select_runs(claim, experiment, v, where).values()) for v in (claim.a, claim.b))
    return a, b


def needed(claim: ClaimSpec, experiment: Experiment, where: dict) -> set[str]:
    """The run ids the claim compares under `where`: both sides' and the reference runs."""
    return set().union(*sides(claim, experiment, where), reference_runs(claim, experiment, where).values())


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
        **({"reference": claim.reference} if claim.reference is not None else {}),
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
    pairs = _pairs(claim, experiment, metric_of, cell_where(claim, cell), seeds)
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
