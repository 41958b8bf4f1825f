"""The `bnlab` application, its shared options, and the one way problems and notes are shown."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bnlab.lab.choices import ExecutorKind

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
    # Before any command loads numpy: a bad BNLAB_BLAS is a usage error, and a forced BLAS kernel this
    # CPU cannot run would kill it silently.
    from bnlab.numerics import check_setting

    with reported():
        check_setting()


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


def error(message: str) -> None:
    """The one way a problem is shown: a red `error:` line on stderr."""
    # escaped: messages quote the user's text, and "[start, stop, count]" is not rich markup
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def reported():
    """Turn a BnlabError into one red line on stderr and its exit code: no traceback for a person."""
    from bnlab.errors import BnlabError

    try:
        yield
    except BnlabError as exc:
        error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def usage_error(message: str) -> typer.Exit:
    error(message)
    return typer.Exit(2)


def note(message: str) -> None:
    """A line for the user that is not an error (e.g. damaged prepared data was rebuilt)."""
    errors.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


def cluster_options(executor: ExecutorKind, scheduler: str | None, wait: float, allow_unportable: bool) -> dict:
    """The Dask executor's options of `bnlab run` and `bnlab claims`; a usage error without a scheduler."""
    if executor is not ExecutorKind.dask:
        return {}
    if not scheduler:
        raise usage_error("--executor dask needs --scheduler tcp://HOST:8786 (the address `dask scheduler` prints)")
    return {"wait_for_workers": wait, "allow_unportable": allow_unportable}


def download(data_dir: Path | None, name: str) -> Path:
    """Data set `name` fetched into the user cache, with a progress bar (asked for only when a run trains)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from bnlab.data import datasets

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
