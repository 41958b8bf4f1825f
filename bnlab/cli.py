"""The `bnlab` command line. Heavy modules (numpy, pandas, matplotlib) are imported inside the
commands that use them, so `bnlab --help` answers at once."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bnlab.lab.choices import DASK_WAIT_S, BenchSection, ExecutorKind, FigureFormat

app = typer.Typer(
    help="A laboratory for normalization layers: train sweeps from YAML specs, plot them, check the math.\n\n"
    "Example: bnlab run configs/deep_bn.yaml && bnlab plot results/deep_bn",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
errors = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from bnlab import __version__

        console.print(f"bnlab {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print bnlab's version and exit.")
    ] = False,
) -> None:
    # Before any command loads numpy: a forced BLAS kernel this CPU cannot run would kill it silently.
    from bnlab.errors import BnlabError
    from bnlab.numerics import check_setting

    try:
        check_setting()
    except BnlabError as exc:
        _error(str(exc))
        raise typer.Exit(exc.exit_code) from None


SpecsArg = Annotated[list[Path], typer.Argument(help="Experiment spec files (YAML).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a spec field: KEY=VALUE, e.g. --set solver.num_epochs=2. Repeatable."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-j", min=1, help="Parallel worker processes (default: all cores).")
]
ExecutorOpt = Annotated[
    ExecutorKind, typer.Option("--executor", help="local (worker processes here) or dask (a Dask cluster).")
]
SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="The Dask scheduler's address, e.g. tcp://HOST:8786.")
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait-for-workers",
        min=0,
        help="With --executor dask: seconds to wait for a first worker before giving up (exit 1).",
    ),
]
UnportableOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unportable-workers",
        help=(
            "With --executor dask: accept workers bnlab cannot make compute with portable numerics "
            "(e.g. started with --no-nanny); their runs record it and `bnlab results` flags the folder."
        ),
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=(
            "Folder holding the data sets (cifar-10-batches-py/, mnist/, fashion-mnist/; "
            "default: $BNLAB_DATA_DIR, else the user cache)."
        ),
    ),
]


def _error(message: str) -> None:
    """The one way a problem is shown: a red `error:` line on stderr."""
    # escaped: messages quote the user's text, and "[start, stop, count]" is not rich markup
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _reported():
    """Turn a BnlabError into one red line on stderr and its exit code: no traceback for a person."""
    from bnlab.errors import BnlabError
    from bnlab.numerics import check_setting

    try:
        check_setting()  # a bad BNLAB_BLAS is a usage error, before any work
        yield
    except BnlabError as exc:
        _error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def _usage_error(message: str) -> typer.Exit:
    _error(message)
    return typer.Exit(2)


def _plan_table(experiment):
    from rich.table import Table

    from bnlab.lab.formatting import format_value

    # run ids fold onto more lines rather than being cut (an 80-column terminal); values are shown
    # as in the run ids (6 significant digits), headers as in the summary table (the last key part)
    table = Table(title=f"{experiment.name}: {len(experiment.runs)} runs ({experiment.source})")
    table.add_column("run_id", style="cyan", overflow="fold", ratio=1)
    for key in experiment.swept_keys:
        table.add_column(key.rsplit(".", 1)[-1], overflow="fold")
    table.add_column("seed", justify="right", no_wrap=True)
    for run in experiment.runs:
        table.add_row(run.run_id, *[format_value(run.swept[k]) for k in experiment.swept_keys], str(run.seed))
    return table


def _noted(experiments: list) -> list:
    """The experiments, after a note for each whose figures of recorded statistics are skipped."""
    for e in experiments:
        if e.skipped_plots:
            errors.print(
                f"note: {e.name} records nothing (record: null), so its {', '.join(e.skipped_plots)} "
                f"figure(s) will not be drawn: they show recorded statistics",
                highlight=False,
                soft_wrap=True,
            )
    return experiments


@app.command()
def plan(specs: SpecsArg, set_: SetOpt = None) -> None:
    """List the runs a spec expands to, without training.

    Example: bnlab plan configs/weight_scale.yaml --set seeds=[0]
    """
    with _reported():
        from bnlab.lab.session import load_experiments

        for experiment in _noted(load_experiments(specs, set_)):
            console.print(_plan_table(experiment))


@app.command()
def run(
    specs: SpecsArg,
    out: Annotated[Path, typer.Option("--out", help="Results root; each experiment gets a folder in it.")] = Path(
        "results"
    ),
    set_: SetOpt = None,
    workers: WorkersOpt = None,
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every run, even finished ones.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the runs (as `bnlab plan`).")] = False,
    executor: ExecutorOpt = ExecutorKind.local,
    scheduler: SchedulerOpt = None,
    wait_for_workers: WaitOpt = DASK_WAIT_S,
    allow_unportable_workers: UnportableOpt = False,
) -> None:
    """Train every run of each spec and write results/EXPERIMENT/.

    Finished runs are kept: rerunning the same command resumes an interrupted sweep.

    Examples:

      bnlab run configs/deep_bn.yaml

      bnlab run configs/weight_scale.yaml --workers 2 --set seeds=[0]

      bnlab run configs/weight_scale.yaml --executor dask --scheduler tcp://10.0.0.5:8786
    """
    cluster = _cluster_options(executor, scheduler, wait_for_workers, allow_unportable_workers)
    with _reported():
        from bnlab.lab.session import check_out, load_experiments, open_session

        experiments = _noted(load_experiments(specs, set_))
        if dry_run:
            for experiment in experiments:
                console.print(_plan_table(experiment))
            return
        check_out(out)
        with open_session(
            experiments, data_dir, workers, executor, scheduler, download=_download, on_notice=_note, **cluster
        ) as lab:
            for experiment in experiments:
                _run_one(experiment, out, lab, force)


def _cluster_options(executor: ExecutorKind, scheduler: str | None, wait: float, allow_unportable: bool) -> dict:
    """The Dask executor's options of `bnlab run` and `bnlab claims`; a usage error without a scheduler."""
    if executor is not ExecutorKind.dask:
        return {}
    if not scheduler:
        raise _usage_error("--executor dask needs --scheduler tcp://HOST:8786 (the address `dask scheduler` prints)")
    return {"wait_for_workers": wait, "allow_unportable": allow_unportable}


def _note(message: str) -> None:
    """A line for the user that is not an error (e.g. damaged prepared data was rebuilt)."""
    errors.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _download(data_dir: Path | None, name: str = "cifar10") -> Path:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from bnlab.lab import datasets

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=errors,
    ) as bar:
        task = bar.add_task(f"downloading {name}", total=None)
        return datasets.ensure(
            name,
            data_dir,
            allow_download=True,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _progress_columns(note: bool = True) -> list:
    """Progress columns that stay readable in 80 columns: the description (a run id) folds onto
    more lines, the bar is short, counts, notes and times never break."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.table import Column

    columns = [
        TextColumn("{task.description}", table_column=Column(overflow="fold", ratio=1)),
        BarColumn(bar_width=20, table_column=Column(no_wrap=True)),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
    ]
    if note:
        columns.append(TextColumn("{task.fields[note]}", table_column=Column(no_wrap=True)))
    return [*columns, TimeElapsedColumn(table_column=Column(no_wrap=True))]


def _run_one(experiment, out: Path, lab, force: bool) -> None:
    """lab.run with a progress bar per run under way and one for the sweep; Ctrl-C says how to resume."""
    from rich.progress import Progress

    from bnlab.lab.results import finished_on_disk

    progress = Progress(*_progress_columns(), console=console, transient=False)
    overall = progress.add_task(f"[bold]{experiment.name}", total=len(experiment.runs), note="")
    active: dict[str, int] = {}

    def on_start(total: int, to_train: int) -> None:
        # shown only now that the folder is locked and planned: an error before leaves no bar
        if to_train == 0:
            console.print(
                f"{experiment.name}: all {total} runs are already finished in {out / experiment.name}; "
                "nothing to train (--force redoes them)",
                soft_wrap=True,
            )
            return
        progress.update(overall, completed=total - to_train, note=lab.where)
        progress.start()

    def on_progress(event: dict) -> None:
        run_id = event["run_id"]
        if run_id not in active:
            active[run_id] = progress.add_task(f"  {run_id}", total=event["num_epochs"], note="")
        note = f"val acc {event['val_acc']:.3f}"
        progress.update(active[run_id], completed=event["epoch"], note=note)

    def on_outcome(outcome) -> None:
        if outcome.run_id in active:
            progress.remove_task(active.pop(outcome.run_id))
        progress.advance(overall)
        if outcome.status != "done":
            progress.console.print(
                f"[yellow]{outcome.run_id}: {outcome.status}[/]"
                + (f" ({outcome.error.strip().splitlines()[-1]})" if outcome.error else "")
            )

    try:
        report = lab.run(experiment, out, force, on_start=on_start, on_outcome=on_outcome, progress=on_progress)
    except KeyboardInterrupt:
        progress.stop()
        # counted on disk: the progress bar advances only after a run is saved
        done = len(finished_on_disk(experiment.runs, out / experiment.name))
        again = "the same command without --force" if force else "the same command"
        errors.print(
            f"[yellow]interrupted:[/] {done} of {len(experiment.runs)} runs of {experiment.name} are finished "
            f"and saved in {out / experiment.name}; run {again} again to resume",
            soft_wrap=True,  # paths and the advice stay whole, whatever the terminal's width
        )
        raise typer.Exit(130) from None
    finally:
        if progress.live.is_started:  # a bar never shown (the data missing) leaves no blank line
            progress.stop()  # leaves the terminal clean whatever happened
    console.print(_summary_table(report.path))
    failed = [o for o in report.outcomes if o.status == "failed"]
    if failed:
        errors.print(f"[red]{len(failed)} run(s) failed[/]; their errors are in meta.json; rerun to retry them")
        raise typer.Exit(1)


def _summary_table(path: Path):
    """Mean ± std over seeds of every run group, from runs.csv."""
    from rich.table import Table

    from bnlab.lab.results import group_summary

    header, rows = group_summary(path)
    table = Table(title=f"{path}  (mean ± std over seeds)")
    # in a narrow terminal values fold and a mean and its std take two lines: nothing is cut to "…"
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i >= len(header) - 4 else "left", overflow="fold", min_width=5)
    for row in rows:
        table.add_row(*row)
    return table


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
    with _reported():
        from bnlab.errors import BnlabError
        from bnlab.lab.results import experiment_folders
        from bnlab.plots import plot_experiment

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
                _error(str(exc))
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
    with _reported():
        from bnlab.report import write_report

        file, problems = write_report(path)
    for problem in problems:  # the page shows them too, in their place
        _error(problem)
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
    with _reported():
        from bnlab.errors import ResultsError

        if (path / "runs.csv").exists():
            if as_json:
                from bnlab.lab.results import runs_as_written

                rows = [{k: _json_cell(v) for k, v in row.items()} for row in runs_as_written(path)]
                print(json.dumps(rows, indent=2))
            else:
                console.print(_summary_table(path))
                _warn_provenance(path)
            return
        from bnlab.lab.results import list_experiments

        if not path.is_dir():
            raise ResultsError(f"{path}: no such results folder; run `bnlab run SPEC` first")
        table = list_experiments(path)
        if as_json:  # json, not pandas' to_json, which writes "results\\/deep_bn"
            from bnlab.lab.results import provenance_note

            rows = [{k: _json_cell(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
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
    with _reported():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
        from rich.table import Table

        from bnlab.lab.executors import default_workers
        from bnlab.lab.reproduce import finished_runs, provenance_summary, sample
        from bnlab.lab.reproduce import reproduce as rerun
        from bnlab.lab.session import on_demand

        total = len(sample(finished_runs(path), runs))
        executor = on_demand(min(workers or default_workers(), total), data_dir, on_notice=_note)
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


def _json_cell(value):
    """A runs.csv cell (text) or table value for JSON: numbers as numbers, a swept list as a list,
    an empty cell (no metric yet) and NaN or infinity (no JSON number) as null, other text as text."""
    if not isinstance(value, str):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if value == "":
        return None
    if value.startswith("["):  # a swept list, written in YAML flow style: [100, 100]
        from bnlab.lab.spec import parse_yaml

        return parse_yaml(value, "runs.csv")
    try:
        number = float(value)
    except ValueError:
        return value  # run ids, statuses, "none", "batchnorm"
    if not math.isfinite(number):
        return None
    return int(value) if value.strip().lstrip("+-").isdigit() else number


@app.command()
def claims(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Claim ids (default: every claim).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims' results as JSON.")] = False,
    list_only: Annotated[
        bool,
        typer.Option("--list", help="List the claims (id, statement, results so far) without training anything."),
    ] = False,
    workers: WorkersOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Results root; claims go to OUT/claims/.")] = Path("results"),
    claims_dir: Annotated[Path, typer.Option("--dir", help="The folder of claim files.")] = Path("configs/claims"),
    data_dir: DataDirOpt = None,
    until_decided: Annotated[
        bool,
        typer.Option("--until-decided", help="Add seeds in rounds to the cells still inconclusive (see --max-seeds)."),
    ] = False,
    max_seeds: Annotated[
        int, typer.Option("--max-seeds", min=2, help="With --until-decided: the most seeds a cell gets.")
    ] = 24,
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
    cluster = _cluster_options(executor, scheduler, wait_for_workers, allow_unportable_workers)
    with _reported():
        from bnlab.errors import SpecError
        from bnlab.lab.claims import load_claims

        groups = load_claims(claims_dir)
        known = [c.id for g in groups for c in g.claims]
        unknown = [i for i in ids or [] if i not in known]
        if unknown:
            from bnlab.lab.spec import did_you_mean

            raise SpecError(
                f"no claim {unknown[0]!r}{did_you_mean(unknown[0], known)} in {claims_dir}; "
                f"`bnlab claims --list` lists them all"
            )
        if list_only:
            from bnlab.lab.claims import list_claims

            listed = [c for c in list_claims(groups, out) if not ids or c["id"] in ids]
            if as_json:
                print(json.dumps(listed, indent=2))
            else:
                console.print(_claims_list_table(listed, out))
            return
        chosen = set(ids) if ids else set(known)
        asked = [g for g in groups if any(c.id in chosen for c in g.claims)]
        skipped = [g for g in asked if g.problem]
        for group in skipped:
            errors.print(
                f"[yellow]skipped {len(group.claims)} claim(s) of {escape(group.source)}:[/] {escape(group.problem)}",
                highlight=False,
                soft_wrap=True,
            )
        from bnlab.lab.claims import experiments
        from bnlab.lab.session import check_out, open_session

        every = [e for g in asked if not g.problem for e in experiments(g, chosen)]  # the cells' data too
        check_out(out)
        with open_session(
            every, data_dir, workers, executor, scheduler, download=_download, on_notice=_note, **cluster
        ) as lab:
            # every group, so that claims.json keeps the other files' claims in their order
            # named claims train only the runs they compare; without names, every run of their files
            entries = _run_claims(groups, out, lab, set(ids) if ids else None, until_decided, max_seeds)
        from bnlab.lab.results import claims_dir as results_dir
        from bnlab.plots import plot_claims

        plot_claims(results_dir(out), [e["id"] for e in entries])
    if as_json:
        print(json.dumps(entries, indent=2))
    else:
        console.print(_claims_table(entries, results_dir(out)))
    if skipped:
        raise typer.Exit(1)


def _run_claims(groups, out: Path, lab, chosen: set[str] | None, until_decided: bool, max_seeds: int) -> list[dict]:
    """lab.claims with one progress bar over every run to train; Ctrl-C says how to resume."""
    from rich.progress import Progress

    progress = Progress(*_progress_columns(note=False), console=errors, transient=True)
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

    from bnlab.lab.stats import holm_sentence

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
            shown, p, n, note = cell["verdict_adjusted"], f"{cell['p_adjusted']:.1g}", str(cell["n"]), _power_note(cell)
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


def _power_note(cell: dict) -> str:
    """For an inconclusive cell: the seeds 80% power would need at its observed effect."""
    needed = cell.get("seeds_for_power")
    return f"80% power: ~{needed} seeds" if cell["verdict_adjusted"] == "inconclusive" and needed else ""


@app.command()
def gradcheck(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    only: Annotated[
        str | None,
        typer.Option("--only", help="Only the checks whose name contains this text, e.g. layernorm or convnet."),
    ] = None,
) -> None:
    """Check every backward pass against numerical gradients (float64); exit 1 on any failure.

    Examples:

      bnlab gradcheck

      bnlab gradcheck --only groupnorm --json
    """
    from bnlab.nn.gradcheck_suite import checks_named, run_gradchecks

    checks = run_gradchecks() if only is None else checks_named(only)
    if not checks:
        raise _usage_error(f"--only {only!r}: no check's name contains it; `bnlab gradcheck` lists them all")
    failed = [c for c in checks if not c.passed]
    if as_json:
        print(
            json.dumps(
                [{"name": c.name, "error": c.error, "threshold": c.threshold, "passed": c.passed} for c in checks],
                indent=2,
            )
        )
    else:
        from rich.table import Table

        table = Table(title="numerical gradient checks (relative error, float64)")
        table.add_column("check")
        table.add_column("error", justify="right")
        table.add_column("threshold", justify="right")
        table.add_column("", justify="center")
        for c in checks:
            table.add_row(
                c.name,
                f"{c.error:.2e}",
                f"{c.threshold:.0e}",
                "[green]pass[/]" if c.passed else "[red]FAIL[/]",
            )
        console.print(table)
        console.print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def data(
    data_dir: DataDirOpt = None,
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="The data set: cifar10, mnist or fashion_mnist.")
    ] = "cifar10",
    download: Annotated[bool, typer.Option("--download", help="Download the data set if it is not there.")] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Delete the prepared (preprocessed) copies in the cache; they are remade.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show where bnlab looks for a data set (CIFAR-10 unless --dataset names another), what it
    found and what it has prepared; download it with --download, delete the prepared copies of
    every data set with --clear.

    Examples:

      bnlab data

      bnlab data --dataset mnist --download
    """
    from bnlab.lab import prepared

    if clear:
        folders, freed = prepared.clear_prepared()
        console.print(f"deleted {folders} prepared data set(s), {freed:,} bytes, from {prepared.prepared_root()}")
        return
    with _reported():
        from bnlab.lab import datasets

        if download and datasets.locate(dataset, data_dir) is None:
            _download(data_dir, dataset)
        info = datasets.describe(dataset, data_dir)
    info["prepared"] = {"root": str(prepared.prepared_root()), "sets": prepared.list_prepared()}
    if as_json:
        print(json.dumps(info, indent=2))
    elif info["problem"]:
        _error(info["problem"])
    else:
        from rich.table import Table

        console.print(f"{dataset} found in {info['found']}", highlight=False, soft_wrap=True)
        console.print(f"(the folder comes from {info['source']})", highlight=False, soft_wrap=True)
        table = Table()
        for column in ("file", "images", "bytes"):
            table.add_column(column, justify="left" if column == "file" else "right")
        for file in info.get("batches") or info["files"]:
            table.add_row(file["file"], f"{file['images']:,}", f"{file['bytes']:,}")
        console.print(table)
        console.print(f"{info['num_train']:,} training images (train and validation splits), {info['num_test']:,} test")
    if not as_json:
        _print_prepared(info["prepared"])
    if info["problem"]:
        raise typer.Exit(1)


def _print_prepared(found: dict) -> None:
    """The prepared data sets of `bnlab data`: one row each, and where they are."""
    import numpy as np
    from rich.table import Table

    if not found["sets"]:
        console.print(f"nothing prepared in {found['root']}", highlight=False, soft_wrap=True)
        return
    table = Table(title=f"prepared in {found['root']} (bnlab data --clear deletes them)")
    for column in ("data set", "train", "val", "test", "dtype", "bytes"):
        table.add_column(column, justify="left" if column in ("data set", "dtype") else "right")
    table.add_column("folder", overflow="fold")  # whole, on two lines if need be: it is to be found
    for entry in found["sets"]:
        rows = [entry["arrays"].get(name, ("?",))[0] for name in ("X_train", "X_val", "X_test")]
        dtype = str(np.dtype(entry["options"]["dtype"])) if "dtype" in entry["options"] else "?"
        name = entry["dataset"] or "(damaged: remade when used)"
        table.add_row(
            name,
            *[f"{n:,}" if isinstance(n, int) else n for n in rows],
            dtype,
            f"{entry['bytes']:,}",
            Path(entry["path"]).name,
        )
    console.print(table)


@app.command()
def bench(
    section: Annotated[
        list[BenchSection] | None,
        typer.Option(
            "--section",
            "-s",
            help="The sections to run; repeatable (default: all).",
        ),
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Repeats of each whole-sweep timing.")] = 3,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Time bnlab: medians of repeated runs, with their spread.

    Sections: the weight-scale sweep (1 and 2 workers), one training step, the batch-norm
    kernels, the convolutional net (beside PyTorch when installed), start-up, the overhead
    of recording, the price of portable numerics (blas: portable against native kernels), and
    the peak memory of a sweep on full-size data with 1, 2 and 4 workers (memory).

    Examples:

      bnlab bench --section step --section batchnorm

      bnlab bench --section conv
    """
    from bnlab.bench import rows_to_json, run_benchmarks

    with _reported():
        rows = run_benchmarks(
            {s.value for s in section} if section else None,
            repeats=repeats,
            data_dir=data_dir,
            on_section=lambda name: errors.print(f"benchmarking {name}…"),
        )
    if as_json:
        print(rows_to_json(rows))
        return
    console.print(_bench_table(rows))
    for note in _bench_notes(rows):
        console.print(escape(note), highlight=False, soft_wrap=True)


def _bench_table(rows):
    """The benchmarks' table, readable in 80 columns: a header row per group, each benchmark's
    note under its name (both wrap, numbers never break). Text is escaped: it is not rich markup."""
    from rich.table import Table

    def amount(value: float | None, unit: str) -> str:
        if value is None:
            return "—"
        if unit == "s":
            return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
        if unit == "MB" and value >= 1000:
            return f"{value:,.0f} MB"  # not 1.05e+03
        return f"{value:.3g} {unit}"

    table = Table(title="bnlab bench (medians; spread = interquartile range)")
    table.add_column("benchmark", overflow="fold", min_width=20)
    for column in ("median", "spread", "n"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("ratio", no_wrap=True)
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            table.add_row(f"[bold]{escape(group)}[/]")
        ratio = f"{row.ratio:.3g} {row.ratio_of}" if row.ratio is not None else ""
        # a benchmark that could not run says why below the table, where a command stays whole
        note = f"\n[dim]{escape(row.note)}[/]" if row.note and row.median is not None else ""
        table.add_row(
            f"{escape(row.name)}{note}",
            amount(row.median, row.unit),
            amount(row.iqr, row.unit),
            str(row.repeats),
            escape(ratio),
        )
    return table


def _bench_notes(rows) -> list[str]:
    """Why each benchmark that could not run did not (e.g. how to install PyTorch)."""
    return [f"{row.name}: {row.note}" for row in rows if row.median is None and row.note]


if __name__ == "__main__":  # python -m bnlab.cli, as the tests run it
    app()
