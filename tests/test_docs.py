"""The README and the documentation site say what the code does: the README is short, its links
resolve, its quick start prints what it shows; every command and spec key the pages name exists;
the notebook runs top to bottom."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SMOKE, needs_shared_data

from bnlab.cli.app import app
from bnlab.spec.schema import RecordSpec
from bnlab.spec.sweep import field_paths

README = ROOT / "README.md"
DOCS = ROOT / "docs"
GENERATED = DOCS / "reference"  # written by tools/docs.py from the code
PAGES = [README, *(p for p in sorted(DOCS.rglob("*.md")) if GENERATED not in p.parents)]
COMMANDS = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:25])
    assert "$ make run" in first_screen and "$ make test" in first_screen


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # not inside code blocks
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http://", "https://", "#"))]


def test_every_relative_link_of_the_readme_resolves():
    links = relative_links(README)
    assert len(links) >= 10  # the figure, the docs pages, the notebook
    missing = [t for t in links if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []


def named_commands(text: str) -> set[str]:
    # in code spans (`bnlab run configs/...`) and console lines ($ bnlab plot results/)
    return {
        *re.findall(r"`bnlab ([a-z][a-z-]*)", text),
        *re.findall(r"^\$ (?:\.venv/bin/)?bnlab ([a-z][a-z-]*)", text, re.M),
    }


def test_every_command_the_pages_name_exists_and_the_readme_names_the_main_ones():
    named = {page.name: named_commands(page.read_text()) for page in PAGES}
    assert {"run", "plot", "results"} <= named["README.md"]
    unknown = {page: sorted(commands - COMMANDS) for page, commands in named.items() if commands - COMMANDS}
    assert unknown == {}


SECTIONS = ("data", "model", "solver", "record")


def test_every_spec_key_the_pages_name_exists():
    known = set(field_paths()) | {f"record.{name}" for name in RecordSpec.model_fields}
    pattern = re.compile(rf"`(?:--set )?((?:{'|'.join(SECTIONS)})\.[a-z_]+(?:\.[a-z_]+)*)")
    unknown = {}
    for page in PAGES:
        keys = {key for key in pattern.findall(page.read_text())}
        if keys - known:
            unknown[page.name] = sorted(keys - known)
    assert unknown == {}
    assert pattern.findall("`model.weight_scale` and `--set solver.optim_config.learning_rate`") == [
        "model.weight_scale",
        "solver.optim_config.learning_rate",
    ]


def table_rows(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("│")]


@pytest.mark.slow
@needs_shared_data
def test_the_readme_quick_start_prints_what_it_shows(tmp_path):
    """`bnlab run configs/smoke.yaml` in a fresh folder prints the README's table, row for row."""
    readme = README.read_text()
    shown = table_rows(readme[readme.index("$ bnlab run configs/smoke.yaml") : readme.index("$ bnlab plot")])
    assert len(shown) == 2  # none and batchnorm
    done = subprocess.run(
        [sys.executable, "-m", "bnlab", "run", str(SMOKE)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert table_rows(done.stdout) == shown
    plotted = subprocess.run(
        [sys.executable, "-m", "bnlab", "plot", "results/smoke"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "wrote results/smoke/figures/history.png" in plotted.stdout


@pytest.mark.slow
@needs_shared_data
def test_the_notebook_runs_top_to_bottom(tmp_path):
    """docs/notebooks/quickstart.ipynb, committed without outputs, executed as a reader would."""
    import nbclient
    import nbformat

    path = DOCS / "notebooks" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
    client.execute(cwd=str(path.parent))
    outputs = {cell.source: cell.outputs for cell in notebook.cells if cell.cell_type == "code"}
    trained = next(out for source, out in outputs.items() if "histories[normalization" in source)
    assert "'none'" in trained[-1]["data"]["text/plain"] and "'batchnorm'" in trained[-1]["data"]["text/plain"]
    runs = next(out for source, out in outputs.items() if source.startswith("from bnlab.results import"))
    table = runs[-1]["data"]["text/plain"]
    assert all(f"normalization={n}__seed={s}" in table for n in ("none", "batchnorm") for s in (0, 1))
