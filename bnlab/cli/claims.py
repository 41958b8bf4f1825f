"""`bnlab claims`: the claims run, evaluated and shown as tables."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bnlab.cli.app import (
    DataDirOpt,
    ExecutorOpt,
    SchedulerOpt,
    UnportableOpt,
    WaitOpt,
    WorkersOpt,
    app,
    cluster_options,
    console,
    download,
    errors,
    note,
    reported,
)
from bnlab.cli.render import progress_columns
from bnlab.lab import worker_start
from bnlab.lab.choices import DASK_WAIT_S, ExecutorKind

IdsArg = Annotated[list[str] | None, typer.Argument(help="Claim ids (default: every claim).", show_default=False)]
ListOpt = Annotated[
    bool, typer.Option("--list", help="List the claims (id, statement, results so far) without training anything.")
]
UntilDecidedOpt = Annotated[
    bool, typer.Option("--until-decided", help="Add seeds in rounds to the cells still inconclusive (see --max-seeds).")
]
MaxSeedsOpt = Annotated[
    int, typer.Option("--max-seeds", min=2, help="With --until-decided: the most seeds a cell gets.")
]


@app.command()
def claims(
    ids: IdsArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims' results as JSON.")] = False,
    list_only: ListOpt = False,
    workers: WorkersOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Results root; claims go to OUT/claims/.")] = Path("results"),
    claims_dir: Annotated[Path, typer.Option("--dir", help="The folder of claim files.")] = Path("configs/claims"),
    data_dir: DataDirOpt = None,
    until_decided: UntilDecidedOpt = False,
    max_seeds: MaxSeedsOpt = 24,
    executor: ExecutorOpt = ExecutorKind.local,
    scheduler: SchedulerOpt = None,
    wait_for_workers: WaitOpt = DASK_WAIT_S,
    allow_unportable_workers: UnportableOpt = False,
) -> None:
    """Test the reference notes' claims over paired seeds, each with a verdict.

    Runs each claim's experiment (resumably: finished runs are reused; for named claims only the
    runs they compare), then compares its two groups seed by seed. --list shows the claims and
    what has results, in seconds.

    Prints one table (claim, source, verdict, mean difference a - b with its 95% t interval, seeds)
    and writes OUT/claims/claims.json and a figure per claim in OUT/claims/figures/. A claim file
    whose experiment this bnlab cannot run is reported and skipped (exit 1); the others still run.

    Examples:

      bnlab claims --list

      bnlab claims --workers 2

      bnlab claims bn-deep-faster bn-small-batch

      bnlab claims --json > claims.json

      bnlab claims --until-decided --max-seeds 24

      bnlab claims --executor dask --scheduler tcp://10.0.0.5:8786
    """
    cluster = cluster_options(executor, scheduler, wait_for_workers, allow_unportable_workers)
    with reported():
        from bnlab.claims import load_claims

        groups = load_claims(claims_dir)
        known = _check_ids(groups, ids, claims_dir)
        if list_only:
            _print_list(groups, out, ids, as_json)
            return
        chosen = set(ids) if ids else set(known)
        asked = [g for g in groups if any(c.id in chosen for c in g.claims)]
        skipped = _say_skipped(asked)
        if executor == ExecutorKind.local:
            worker_start.start(workers)  # it loads while this process reads what the claims train
        from bnlab.claims import experiments
        from bnlab.lab.session import check_out, open_session

        gc.freeze()  # as in `bnlab run`: the modules just imported stay out of the collector's scans

        every = [e for g in asked if not g.problem for e in experiments(g, chosen)]  # the cells' data too
        check_out(out)
        with open_session(
            every, data_dir, workers, executor, scheduler, download=download, on_notice=note, **cluster
        ) as lab:
            # every group, so that claims.json keeps the other files' claims in their order
            # named claims train only the runs they compare; without names, every run of their files
            entries = _run_claims(groups, out, lab, set(ids) if ids else None, until_decided, max_seeds)
        from bnlab.figures import plot_claims
        from bnlab.lab.results import claims_dir as results_dir

        plot_claims(results_dir(out), [e["id"] for e in entries])
    if as_json:
        print(json.dumps(entries, indent=2))
    else:
        console.print(_claims_table(entries, results_dir(out)))
    if skipped:
        raise typer.Exit(1)


def _say_skipped(groups: list) -> list:
    """The groups whose claims cannot run here, each said in one line."""
    skipped = [g for g in groups if g.problem]
    for group in skipped:
        errors.print(
            f"[yellow]skipped {len(group.claims)} claim(s) of {escape(group.source)}:[/] {escape(group.problem)}",
            highlight=False,
            soft_wrap=True,
        )
    return skipped


def _check_ids(groups: list, ids: list[str] | None, claims_dir: Path) -> list[str]:
    """Every claim id of the files; a SpecError naming the first of `ids` that is none of them."""
    from bnlab.errors import SpecError
    from bnlab.lab.formatting import did_you_mean

    known = [c.id for g in groups for c in g.claims]
    unknown = [i for i in ids or [] if i not in known]
    if unknown:
        raise SpecError(
            f"no claim {unknown[0]!r}{did_you_mean(unknown[0], known)} in {claims_dir}; "
            f"`bnlab claims --list` lists them all"
        )
    return known


def _print_list(groups: list, out: Path, ids: list[str] | None, as_json: bool) -> None:
    """`bnlab claims --list`: the claims (those of `ids`, else all) and their results so far."""
    from bnlab.claims import list_claims

    listed = [c for c in list_claims(groups, out) if not ids or c["id"] in ids]
    if as_json:
        print(json.dumps(listed, indent=2))
    else:
        console.print(_claims_list_table(listed, out))


def _run_claims(groups, out: Path, lab, chosen: set[str] | None, until_decided: bool, max_seeds: int) -> list[dict]:
    """lab.claims with one progress bar over every run to train; Ctrl-C says how to resume."""
    from rich.progress import Progress

    progress = Progress(*progress_columns(note=False), console=errors, transient=True)
    task = progress.add_task("claims", total=0)

    def on_experiment(experiment, total: int, to_train: int) -> None:
        progress.update(task, description=f"claims: {experiment.name} ({lab.where})", completed=0, total=to_train)

    try:
        with progress:
            return lab.claims(
                groups,
                out,
                chosen,
                on_experiment=on_experiment,
                on_outcome=lambda _: progress.advance(task),
                until_decided=until_decided,
                max_seeds=max_seeds,
            )
    except KeyboardInterrupt:
        errors.print(
            f"[yellow]interrupted:[/] the finished runs are saved in {out / 'claims'}; "
            "run the same command again to resume",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None


def _claims_list_table(listed: list[dict], out: Path):
    """`bnlab claims --list`: id (and its number of cells), statement (wraps), the adjusted verdict
    in claims.json, and how many of the runs the claim compares in all its conditions are
    finished; readable in 80 columns."""
    from rich.table import Table

    colors = {"supported": "green", "contradicted": "red", "inconclusive": "yellow"}
    colors.update(everywhere="green", somewhere="yellow", nowhere="red")
    table = Table(title=f"claims ({len(listed)}); results under {out / 'claims'}")
    table.add_column("claim", no_wrap=True)
    table.add_column("statement", overflow="fold", ratio=1)
    table.add_column("verdict", no_wrap=True)
    table.add_column("runs done", justify="right", no_wrap=True)
    for c in listed:
        if c["problem"]:
            verdict, runs = "[yellow]cannot run[/]", "—"  # `bnlab claims` says why
        else:
            verdict = f"[{colors.get(c['verdict'], 'default')}]{c['verdict']}[/]" if c["verdict"] else "—"
            runs = f"{c['runs_finished']}/{c['runs_needed']}"
        cells = f"\n[dim]{c['cells']} cells[/]" if c["cells"] > 1 else ""
        table.add_row(c["id"] + cells, escape(c["statement"]), verdict, runs)
    return table


def _claims_table(entries: list[dict], where: Path):
    """One row per claim, led by the verdict after Holm's adjustment over the family (a claim with
    `across` cells: where it holds), then the effect in its own condition with its 95% interval, the
    adjusted p, the seeds, and the cells' verdicts counted (or, for an inconclusive claim, the
    seeds 80% power would need). Below it, for each claim with cells, where it holds in words. Fits
    an 80-column terminal; the statements and every cell are in claims.json and the figures."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from bnlab.claims.stats import holm_sentence

    colors = {"supported": "green", "contradicted": "red", "inconclusive": "yellow"}
    colors.update(everywhere="green", somewhere="yellow", nowhere="red")
    cells = sum(len(e.get("cells", [])) for e in entries)
    table = Table(
        title=f"claims: {where / 'claims.json'}, figures in {where / 'figures'}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
    )
    table.add_column("claim (metric)", overflow="fold", min_width=14, ratio=1)
    table.add_column("verdict\n(Holm)", width=17)
    table.add_column("effect a - b\n[95% CI]", width=16)
    table.add_column("p adj.", justify="right", width=6)
    table.add_column("n", justify="right", width=2)  # seeds
    table.add_column("cells", width=14)
    scopes = []
    for e in entries:
        claim_cells = e.get("cells", [])
        if len(claim_cells) == 1:
            cell = claim_cells[0]
            shown, p, n, note = cell["verdict_adjusted"], f"{cell['p_adjusted']:.1g}", str(cell["n"]), power_note(cell)
        else:
            shown, p, n, note = e["scope"]["holds"], "", str(e["n"]), _cell_counts(e["scope"], len(claim_cells))
            scopes.append(Text.assemble((e["id"], "bold"), ": ", e["scope"]["text"]))
        table.add_row(
            f"{e['id']}\n[dim]{e['metric']}[/]",
            f"[{colors[shown]}]{shown}[/]\n[dim]raw: {e['verdict']}[/]",
            f"{_effect(e['mean_diff'])}\n[{_effect(e['ci_low'])}, {_effect(e['ci_high'])}]",
            p,
            n,
            note,
        )
    return Group(
        table,
        Text(holm_sentence(cells), style="dim"),
        *([Text("\nWhere the claims with cells hold:")] + scopes if scopes else []),
    )


def _effect(value: float) -> str:
    """A signed difference in at most 7 characters: 3 decimals below 10, fewer above."""
    digits = 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
    return f"{value:+.{digits}f}" if abs(value) < 1e5 else f"{value:+.1e}"


def _cell_counts(scope: dict, total: int) -> str:
    """'2/4 supported' with, on further lines, the cells contradicted and inconclusive."""
    lines = [f"{len(scope['supported'])}/{total} supported"]
    lines += [f"[dim]{len(scope[v])} {v}[/]" for v in ("contradicted", "inconclusive") if scope[v]]
    return "\n".join(lines)


def power_note(cell: dict) -> str:
    """For an inconclusive cell: the seeds 80% power would need at its observed effect."""
    needed = cell.get("seeds_for_power")
    return f"80% power: ~{needed} seeds" if cell["verdict_adjusted"] == "inconclusive" and needed else ""
