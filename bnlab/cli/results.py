"""`bnlab plot`, `report`, `results` and `reproduce`: what is in a results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bnlab.cli.app import DataDirOpt, WorkersOpt, app, console, error, errors, note, reported
from bnlab.cli.render import json_cell, summary_table
from bnlab.lab.choices import FigureFormat


@app.command()
def plot(
    results_dir: Annotated[
        Path, typer.Argument(help="A results root (e.g. results/) or one experiment's folder (results/deep_bn).")
    ],
    format: Annotated[
        list[FigureFormat], typer.Option("--format", "-f", help="The figures' file format; repeatable.")
    ] = [FigureFormat.png],  # noqa: B006
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Figures folder (default: each experiment's figures/; for a root: OUT/NAME)."),
    ] = None,
) -> None:
    """Draw the figures of every experiment in a results root, or of one experiment.

    An experiment with nothing to draw is reported and the others are still drawn; the exit code
    is 1 unless every experiment was drawn.

    Examples:

      bnlab plot results/

      bnlab plot results/weight_scale --format png --format pdf
    """
    formats = tuple(f.value for f in format or [FigureFormat.png])
    with reported():
        from bnlab.errors import BnlabError
        from bnlab.figures import plot_experiment
        from bnlab.lab.results import experiment_folders

        folders = experiment_folders(results_dir)
        if folders == [results_dir]:  # one experiment: a line per file written, an error stops it
            for path in plot_experiment(results_dir, formats=formats, out_dir=out):
                console.print(f"wrote {path}", highlight=False, soft_wrap=True)
            return
        failed = 0
        for folder in folders:
            try:
                paths = plot_experiment(folder, formats=formats, out_dir=out / folder.name if out else None)
            except BnlabError as exc:  # this experiment only: the others are still drawn
                failed += 1
                error(str(exc))
                continue
            names = ", ".join(p.name for p in paths)
            console.print(f"{folder.name}: wrote {names} in {paths[0].parent}", highlight=False, soft_wrap=True)
    if failed:
        errors.print(f"{failed} of {len(folders)} experiments not drawn", highlight=False)
        raise typer.Exit(1)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A results root (e.g. results/) or one experiment's folder.")] = Path(
        "results"
    ),
) -> None:
    """Write PATH/report.html, one self-contained page of the experiments and claims' verdicts.

    For a results root every experiment in it, for an experiment folder that one; the claims'
    verdicts come first if there are any. Figures are embedded and nothing is fetched from a
    network, so the page opens offline and can be mailed.

    Examples:

      bnlab report results/

      bnlab report results/deep_bn
    """
    with reported():
        from bnlab.report import write_report

        file, problems = write_report(path)
    for problem in problems:  # the page shows them too, in their place
        error(problem)
    console.print(f"wrote {file}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command()
def results(
    path: Annotated[Path, typer.Argument(help="The results root, or one experiment's folder.")] = Path("results"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Summarise what is in results/: every experiment, or one experiment's run groups.

    Examples:

      bnlab results

      bnlab results results/deep_bn --json
    """
    with reported():
        from bnlab.errors import ResultsError

        if (path / "runs.csv").exists():
            if as_json:
                from bnlab.lab.results import runs_as_written

                rows = [{k: json_cell(v) for k, v in row.items()} for row in runs_as_written(path)]
                print(json.dumps(rows, indent=2))
            else:
                console.print(summary_table(path))
                _warn_provenance(path)
            return
        from bnlab.lab.results import list_experiments

        if not path.is_dir():
            raise ResultsError(f"{path}: no such results folder; run `bnlab run SPEC` first")
        table = list_experiments(path)
        if as_json:  # json, not pandas' to_json, which writes "results\\/deep_bn"
            from bnlab.lab.results import provenance_note

            rows = [{k: json_cell(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
            for row in rows:
                row["provenance_note"] = provenance_note(row["path"])
            print(json.dumps(rows, indent=2))
            return
        from rich.table import Table

        from bnlab.lab.formatting import format_number

        view = Table(title=f"experiments in {path}")
        for column in table.columns:  # paths and long names fold in a narrow terminal, nothing is cut
            view.add_column(str(column).replace("_", " "), overflow="fold", min_width=5)
        for record in table.itertuples(index=False):
            view.add_row(*[format_number(v) if isinstance(v, float) else str(v) for v in record])
        console.print(view if len(table) else f"no experiments in {path} yet: run `bnlab run SPEC`")
        for folder in table["path"]:
            _warn_provenance(Path(folder))


def _warn_provenance(path: Path) -> None:
    """One line when an experiment's runs were made with different code, numerics or machines, or
    without portable numerics."""
    from bnlab.lab.results import provenance_note

    note = provenance_note(path)
    if note:
        said, rest = note.split(": ", 1)
        errors.print(f"[yellow]{escape(str(path))}: {escape(said)}:[/] {escape(rest)}", soft_wrap=True)


@app.command()
def reproduce(
    path: Annotated[Path, typer.Argument(help="One experiment's results folder, e.g. results/deep_bn.")],
    runs: Annotated[
        int | None, typer.Option("--runs", "-k", min=1, help="Rerun a fixed sample of K runs (default: all).")
    ] = None,
    workers: WorkersOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rerun finished runs in a temporary folder and compare their files byte for byte.

    Each run trains again on the data set its config records. history.csv, epochs.csv and
    probes.csv of each rerun must equal the originals; the table says where each first differs,
    and what differs in provenance (BLAS kernel, versions, CPU). A run that cannot be rerun here
    (its data missing, its config unreadable) is said so, never called different. Exit 0 only
    when every run is rerun and identical. PATH is only read.

    Examples:

      bnlab reproduce results/deep_bn

      bnlab reproduce results/weight_scale --runs 5
    """
    with reported():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
        from rich.table import Table

        from bnlab.lab.reproduce import finished_runs, provenance_summary, sample
        from bnlab.lab.reproduce import reproduce as rerun
        from bnlab.lab.session import on_demand
        from bnlab.lab.worker_start import default_workers

        total = len(sample(finished_runs(path), runs))
        executor = on_demand(min(workers or default_workers(), total), data_dir, on_notice=note)
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"rerunning {path}", total=total)
            try:
                comparisons = rerun(path, executor, runs, on_compared=lambda _: bar.advance(task))
            finally:
                executor.close()
    table = Table(title=f"{path}: {total} run(s) rerun, files compared byte for byte")
    table.add_column("run")
    table.add_column("result")
    for comparison in comparisons:
        if comparison.problem:
            shown = f"[yellow]could not rerun:[/] {escape(comparison.problem)}"
        elif comparison.differs:
            shown = f"[red]differs:[/] {escape(comparison.difference)}"
        else:
            shown = "[green]identical[/]"
        table.add_row(comparison.run_id, shown)
    console.print(table)
    differing = [c for c in comparisons if c.differs]
    not_rerun = [c for c in comparisons if c.problem]
    identical = len(comparisons) - len(differing) - len(not_rerun)
    counts = f"{identical} identical, {len(differing)} different"
    console.print(counts + (f", {len(not_rerun)} could not rerun" if not_rerun else ""), highlight=False)
    if not_rerun:
        reasons = list(dict.fromkeys(c.problem for c in not_rerun))
        errors.print(
            f"could not rerun {len(not_rerun)} run(s), so nothing was compared for them: {'; '.join(reasons)}",
            highlight=False,
            soft_wrap=True,
        )
    if differing:
        lines = provenance_summary(comparisons)
        errors.print(
            "provenance differs: " + "; ".join(lines)
            if lines
            else "provenance is the same: the code or its inputs changed, not the machine",
            highlight=False,
            soft_wrap=True,
        )
    if differing or not_rerun:
        raise typer.Exit(1)
