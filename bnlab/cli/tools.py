"""`bnlab gradcheck`, `data` and `bench`: the math checked, the data sets, the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bnlab.cli.app import DataDirOpt, app, console, error, errors, reported, usage_error
from bnlab.lab.choices import BenchSection


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
        raise usage_error(f"--only {only!r}: no check's name contains it; `bnlab gradcheck` lists them all")
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
    from bnlab.data import prepared

    if clear:
        folders, freed = prepared.clear_prepared()
        console.print(f"deleted {folders} prepared data set(s), {freed:,} bytes, from {prepared.prepared_root()}")
        return
    with reported():
        from bnlab.data import datasets

        if download and datasets.locate(dataset, data_dir) is None:
            download(data_dir, dataset)
        info = datasets.describe(dataset, data_dir)
    info["prepared"] = {"root": str(prepared.prepared_root()), "sets": prepared.list_prepared()}
    if as_json:
        print(json.dumps(info, indent=2))
    elif info["problem"]:
        error(info["problem"])
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
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            help="Also write the rows and the machine they were measured on as JSON to this file "
            "(make bench: results/bench.json, which the speed page is generated from).",
        ),
    ] = None,
) -> None:
    """Time bnlab: medians of repeated runs, with their spread.

    Sections: the weight-scale sweep (1 and 2 workers, its first-layer products alone, and
    PyTorch when installed), one training step, the batch-norm
    kernels, the convolutional net (beside PyTorch when installed), start-up, the overhead
    of recording, the price of portable numerics (blas: portable against native kernels), and
    the peak memory of a sweep on full-size data with 1, 2 and 4 workers (memory).

    Examples:

      bnlab bench --section step --section batchnorm

      bnlab bench --section conv

      bnlab bench --section conv --section sweep --save results/bench.json
    """
    from bnlab.bench import rows_to_json, run_benchmarks, saved_json

    if save is not None and not save.parent.is_dir():  # before minutes of measuring, not after
        error(f"--save {save}: no folder {save.parent}; create it or save elsewhere")
        raise typer.Exit(2)
    with reported():
        rows = run_benchmarks(
            {s.value for s in section} if section else None,
            repeats=repeats,
            data_dir=data_dir,
            on_section=lambda name: errors.print(f"benchmarking {name}…"),
        )
    if save is not None:
        from bnlab.lab.atomic import write_text

        write_text(save, saved_json(rows))
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
