"""Tables and progress columns more than one command shows."""

from __future__ import annotations

import math
from pathlib import Path


def plan_table(experiment):
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


def progress_columns(note: bool = True) -> list:
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


def summary_table(path: Path):
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


def json_cell(value):
    """A runs.csv cell (text) or table value for JSON: numbers as numbers, a swept list as a list,
    an empty cell (no metric yet) and NaN or infinity (no JSON number) as null, other text as text."""
    if not isinstance(value, str):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if value == "":
        return None
    if value.startswith("["):  # a swept list, written in YAML flow style: [100, 100]
        from bnlab.spec.yaml_text import parse_yaml

        return parse_yaml(value, "runs.csv")
    try:
        number = float(value)
    except ValueError:
        return value  # run ids, statuses, "none", "batchnorm"
    if not math.isfinite(number):
        return None
    return int(value) if value.strip().lstrip("+-").isdigit() else number
