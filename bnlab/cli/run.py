"""`bnlab plan` and `bnlab run`: a spec's runs listed, or trained with progress bars."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated

import typer

from bnlab.cli.app import (
    DataDirOpt,
    ExecutorOpt,
    SchedulerOpt,
    SetOpt,
    SpecsArg,
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
from bnlab.cli.render import plan_table, progress_columns, summary_table
from bnlab.lab import worker_start
from bnlab.lab.choices import DASK_WAIT_S, ExecutorKind


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
    with reported():
        from bnlab.lab.session import load_experiments

        for experiment in _noted(load_experiments(specs, set_)):
            console.print(plan_table(experiment))


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
    cluster = cluster_options(executor, scheduler, wait_for_workers, allow_unportable_workers)
    with reported():
        if executor == ExecutorKind.local and not dry_run:
            worker_start.start(workers)  # it loads while this process imports and reads the specs
        from bnlab.lab.session import check_out, load_experiments, open_session

        gc.freeze()  # the ~1,000 modules just imported: the collector need not scan them, nor at exit (0.2 s)

        experiments = _noted(load_experiments(specs, set_))
        if dry_run:
            for experiment in experiments:
                console.print(plan_table(experiment))
            return
        check_out(out)
        with open_session(
            experiments, data_dir, workers, executor, scheduler, download=download, on_notice=note, **cluster
        ) as lab:
            for experiment in experiments:
                _run_one(experiment, out, lab, force)


def _run_one(experiment, out: Path, lab, force: bool) -> None:
    """lab.run with a progress bar per run under way and one for the sweep; Ctrl-C says how to resume."""
    from rich.progress import Progress

    from bnlab.lab.results import finished_on_disk

    progress = Progress(*progress_columns(), console=console, transient=False)
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
    console.print(summary_table(report.path))
    failed = [o for o in report.outcomes if o.status == "failed"]
    if failed:
        errors.print(f"[red]{len(failed)} run(s) failed[/]; their errors are in meta.json; rerun to retry them")
        raise typer.Exit(1)
