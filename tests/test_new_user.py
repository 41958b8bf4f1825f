"""What a new user hit (issue 17), each through the CLI as they ran it: --version, the bench's
install hint, plot on a folder it cannot write, results --json, claims --list and single claims,
--set record=null on every shipped config, an 80-column terminal, the report's claim ids."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import HAS_SHARED_DATA, NO_SHARED_DATA, ROOT, SHARED_DATA, SMOKE, bnlab

from bnlab import __version__
from bnlab.bench import conv as bench_conv
from bnlab.bench import sections as bench_module
from bnlab.spec.figure_kinds import FIGURE_KINDS

pytestmark = pytest.mark.usefixtures("shared_data")  # without the data every test here skips, saying so


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_one_error(result, code: int, *phrases: str) -> None:
    """Exit `code`, one `error:` line naming `phrases` on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.count("error:") == 1, result.stderr
    for phrase in phrases:
        assert phrase in flat(result.stderr), (phrase, result.stderr)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory) -> Path:
    """configs/smoke.yaml trained once (4 runs, about a second) into a results root."""
    if not HAS_SHARED_DATA:  # made before the function-scoped shared_data fixture could skip
        pytest.skip(NO_SHARED_DATA)
    out = tmp_path_factory.mktemp("smoke") / "results"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
        result = bnlab("run", SMOKE, "--workers", 1, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def smoke_copy(smoke_results, tmp_path) -> Path:
    """A private copy of the smoke results root, to change at will."""
    return Path(shutil.copytree(smoke_results, tmp_path / "results"))


# --- bnlab --version ---------------------------------------------------------------------------


def test_version():
    result = bnlab("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"bnlab {__version__}"


# --- bench: the install hint is text, not markup -----------------------------------------------


def test_bench_without_torch_prints_the_install_command_whole(monkeypatch):
    # a real conv section (its quick size) on a machine without PyTorch
    real_conv = bench_module.bench_conv
    monkeypatch.setattr(bench_conv, "_torch_conv_step", lambda batch: None)
    monkeypatch.setattr(bench_module, "bench_conv", lambda quick=False: real_conv(quick=True))
    monkeypatch.setenv("COLUMNS", "80")
    result = bnlab("bench", "--section", "conv")
    assert result.exit_code == 0, result.output
    command = "pip install 'bnlab[bench]' --extra-index-url https://download.pytorch.org/whl/cpu"
    assert command in result.stdout  # on one line, the [bench] extra included
    assert "bnlab ConvNet, batch 2" in result.stdout and "PyTorch (same net), batch 2" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines() if "│" in line)


# --- plot on a folder it cannot write ----------------------------------------------------------


def test_plot_into_a_read_only_folder_is_one_error(smoke_copy, monkeypatch):
    experiment = smoke_copy / "smoke"
    experiment.chmod(0o555)
    try:
        if os.access(experiment, os.W_OK):  # root ignores permission bits: the OS refuses as it would

            def refuse(*args, dir=None, **kwargs):
                raise PermissionError(13, "Permission denied", str(dir))

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
            (experiment / "figures").mkdir()
        for target in (experiment, smoke_copy):  # one experiment, and a results root
            result = bnlab("plot", target)
            assert_one_error(result, 1, f"{experiment / 'figures'}: cannot write the figures there", "--out")
            assert "Permission denied" in result.stderr
    finally:
        experiment.chmod(0o755)


def test_plot_where_a_file_holds_the_figures_name(smoke_copy):
    (smoke_copy / "smoke" / "figures").write_text("")
    assert_one_error(bnlab("plot", smoke_copy / "smoke"), 1, "figures: is a file, not a folder", "--out")
    # --out elsewhere works
    result = bnlab("plot", smoke_copy / "smoke", "--out", smoke_copy / "elsewhere")
    assert result.exit_code == 0, result.output
    assert (smoke_copy / "elsewhere" / "history.png").is_file()


# --- results --json ----------------------------------------------------------------------------


def test_results_json_writes_numbers_as_numbers(smoke_results):
    result = bnlab("results", smoke_results / "smoke", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["run_id"] for r in rows] == [
        f"normalization={n}__seed={s}" for n in ("none", "batchnorm") for s in (0, 1)
    ]
    with open(smoke_results / "smoke" / "runs.csv") as f:
        lines = f.read().splitlines()
    for row, line in zip(rows, lines[1:], strict=True):
        cells = line.split(",")
        assert row["seed"] == int(cells[3]) and isinstance(row["seed"], int)
        for i, metric in enumerate(("best_val_acc", "best_train_acc", "final_train_loss", "wall_s")):
            assert isinstance(row[metric], float) and row[metric] == float(cells[4 + i])
        assert row["status"] == "done" and row["model.normalization"] in ("none", "batchnorm")


def test_results_json_of_a_root_does_not_escape_slashes(smoke_results):
    result = bnlab("results", smoke_results, "--json")
    assert result.exit_code == 0, result.output
    assert "\\/" not in result.stdout
    [row] = json.loads(result.stdout)
    assert row["path"] == str(smoke_results / "smoke")
    assert row["runs"] == 4 and row["done"] == 4 and isinstance(row["best_val_acc"], float)


def test_results_json_empty_and_unfinished_cells_are_null(smoke_copy):
    runs = smoke_copy / "smoke" / "runs.csv"
    lines = runs.read_text().splitlines()
    cells = lines[1].split(",")
    cells[1], cells[4:] = "pending", [""] * 4  # an interrupted run: no metrics yet
    runs.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    row = json.loads(bnlab("results", smoke_copy / "smoke", "--json").stdout)[0]
    assert row["status"] == "pending"
    assert row["best_val_acc"] is None and row["wall_s"] is None
    root = json.loads(bnlab("results", smoke_copy, "--json").stdout)[0]
    assert root["pending"] == 1 and root["done"] == 3


# --- claims: --list, a misspelt id, one claim trains only its runs -----------------------------

TINY_CLAIMS = """\
name: tiny
data: {num_train: 100, num_val: 50, num_test: 50}
model: {hidden_dims: [10], weight_scale: 2.0e-2}
solver: {batch_size: 50, num_epochs: 1}
seeds: 5
sweep:
  model.normalization: [null, batchnorm, layernorm]
claims:
  - id: bn-vs-none
    statement: Batch norm trains better than nothing.
    source: a test
    metric: best_train_acc
    key: model.normalization
    a: batchnorm
    b: null
    direction: greater
  - id: ln-vs-none
    statement: Layer norm trains better than nothing.
    source: a test
    metric: best_train_acc
    key: model.normalization
    a: layernorm
    b: null
    direction: greater
"""


def test_claims_list_then_one_claim_trains_only_its_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "tiny.yaml").write_text(TINY_CLAIMS)
    where = ("--dir", tmp_path / "claims", "--out", tmp_path / "out")

    listed = bnlab("claims", "--list", *where)
    assert listed.exit_code == 0, listed.output
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    text = flat(listed.stdout)
    assert "bn-vs-none │ Batch norm trains better than nothing. │ — │ 0/10" in text
    assert "ln-vs-none │ Layer norm trains better than nothing. │ — │ 0/10" in text

    result = bnlab("claims", "bn-vs-none", "--workers", 1, *where)
    assert result.exit_code == 0, result.output
    experiment = tmp_path / "out" / "claims" / "tiny"
    trained = sorted(p.name for p in experiment.iterdir() if (p / "meta.json").is_file())
    assert trained == sorted(f"normalization={n}__seed={s}" for n in ("none", "batchnorm") for s in range(5))
    statuses = [line.split(",")[1] for line in (experiment / "runs.csv").read_text().splitlines()[1:]]
    assert statuses.count("pending") == 5  # layer norm's runs: no claim asked for them
    [entry] = json.loads((tmp_path / "out" / "claims" / "claims.json").read_text())
    assert entry["id"] == "bn-vs-none" and entry["n"] == 5

    listed = bnlab("claims", "--list", "--json", *where)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["bn-vs-none"]["verdict"] == entry["verdict"]
    assert (rows["bn-vs-none"]["runs_finished"], rows["bn-vs-none"]["runs_needed"]) == (10, 10)
    assert rows["ln-vs-none"]["verdict"] is None
    assert (rows["ln-vs-none"]["runs_finished"], rows["ln-vs-none"]["runs_needed"]) == (5, 10)  # the shared baseline


def test_a_misspelt_claim_suggests_the_list(tmp_path):
    result = bnlab("claims", "bn-smal-batch", "--dir", ROOT / "configs" / "claims", "--out", tmp_path)
    assert_one_error(result, 2, "no claim 'bn-smal-batch' (did you mean 'bn-small-batch'?)", "`bnlab claims --list`")
    assert list(tmp_path.iterdir()) == []


# --- recording off for every shipped config; plots as --set ------------------------------------

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
RECORDED_FIGURES = tuple(k for k, kind in FIGURE_KINDS.items() if kind.statistics)  # activations, ics, landscape, depth


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_record_null_works_for_every_shipped_config(config):
    import yaml

    declared = [p["kind"] for p in yaml.safe_load(config.read_text()).get("plots") or []]
    skipped = [kind for kind in declared if kind in RECORDED_FIGURES]
    result = bnlab("plan", config, "--set", "record=null")
    assert result.exit_code == 0, result.output
    if skipped:
        assert f"its {', '.join(skipped)} figure(s) will not be drawn" in flat(result.stderr)
    else:
        assert result.stderr == ""


TINY = ("--set", "seeds=[0]", "--set", "solver.num_epochs=1", "--set", "data.num_train=120")


def test_a_recording_config_trains_and_draws_without_recording(tmp_path):
    config = ROOT / "configs" / "bn_paper_fig1.yaml"
    result = bnlab("run", config, "--set", "record=null", *TINY, "--workers", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "activations figure(s) will not be drawn" in flat(result.stderr)
    experiment = tmp_path / "bn_paper_fig1"
    assert not list(experiment.glob("*/probes.csv"))  # nothing recorded
    drawn = bnlab("plot", experiment)
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in (experiment / "figures").iterdir()) == ["history.png"]


def test_plots_can_be_set(tmp_path):
    plots = "plots=[{kind: history, title: Set from the command line}]"
    result = bnlab("run", SMOKE, "--set", plots, "--workers", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    import yaml

    spec = yaml.safe_load((tmp_path / "smoke" / "spec.yaml").read_text())
    assert spec["plots"] == [{"kind": "history", "x": None, "title": "Set from the command line", "layers": None}]
    bad = bnlab("plan", SMOKE, "--set", "plots=[{kind: sweep, x: model.weight_scale}]")
    assert_one_error(bad, 2, "--set plots=[{kind: sweep, x: model.weight_scale}]: plots[0]: a sweep figure needs x")


def test_a_changed_set_on_existing_results_suggests_a_name_or_out(smoke_copy):
    result = bnlab("run", SMOKE, "--set", "solver.num_epochs=1", "--out", smoke_copy)
    assert_one_error(result, 1, "made with a different config", "--set name=smoke-2", "--out")
    renamed = bnlab("run", SMOKE, "--set", "solver.num_epochs=1", "--set", "name=smoke-2", "--out", smoke_copy)
    assert renamed.exit_code == 0, renamed.output
    assert (smoke_copy / "smoke-2" / "runs.csv").is_file() and (smoke_copy / "smoke" / "runs.csv").is_file()


# --- an 80-column terminal -----------------------------------------------------------------------


def cells(output: str, column: int) -> list[str]:
    """The text of one column of a rich table, a line per table line (folded values span lines)."""
    return [line.split("│")[column + 1].strip() for line in output.splitlines() if line.startswith("│")]


def test_plan_in_80_columns_shows_whole_run_ids(monkeypatch):
    from bnlab.spec.experiment import load_experiment

    monkeypatch.setenv("COLUMNS", "80")
    config = ROOT / "configs" / "weight_scale.yaml"
    result = bnlab("plan", config)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    run_ids = [run.run_id for run in load_experiment(config).runs]
    assert "".join(cells(result.stdout, 0)) == "".join(run_ids)  # folded, every character there
    assert "0.000162378" in cells(result.stdout, 2)  # as in the run id, not 0.0001623776739188721


WIDE = """\
name: wide
data: {num_train: 100, num_val: 50, num_test: 50}
model: {hidden_dims: [10], weight_scale: 2.0e-2}
solver: {batch_size: 50, num_epochs: 1}
seeds: 2
sweep:
  model.normalization: [null, batchnorm]
  model.weight_scale: [1.0e-4, 0.0001623776739188721]
  solver.optim_config.learning_rate: [1.0e-3]
"""


def test_summary_in_80_columns_cuts_no_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    spec = tmp_path / "wide.yaml"
    spec.write_text(WIDE)
    result = bnlab("run", spec, "--workers", 1, "--out", tmp_path / "results")
    assert result.exit_code == 0, result.output
    shown = bnlab("results", tmp_path / "results" / "wide")
    assert "…" not in shown.stdout and max(map(len, shown.stdout.splitlines())) <= 80
    rows = json.loads(bnlab("results", tmp_path / "results" / "wide", "--json").stdout)
    table = [" ".join(cells(shown.stdout, i)) for i in range(7)]
    for metric, column in (("best_val_acc", 4), ("best_train_acc", 5), ("final_train_loss", 6)):
        for group in range(4):  # each group's mean, from runs.csv, appears in its column
            values = [r[metric] for r in rows[2 * group : 2 * group + 2]]
            assert f"{sum(values) / 2:.3f} ±" in table[column]
    assert "".join(cells(shown.stdout, 1)).count("0.000162378") == 2
    root = bnlab("results", tmp_path / "results")  # the list of experiments: the path folds, whole
    assert "…" not in root.stdout and max(map(len, root.stdout.splitlines())) <= 80
    assert "".join(cells(root.stdout, 7)) == str(tmp_path / "results" / "wide")


def test_progress_in_80_columns_folds_the_run_id_and_keeps_the_time():
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from bnlab.cli.render import progress_columns as _progress_columns

    console = Console(width=80, file=StringIO())
    progress = Progress(*_progress_columns(), console=console)
    run_id = "normalization=batchnorm__weight_scale=0.000162378__seed=2"
    progress.update(progress.add_task("[bold]weight_scale", total=120, note="2 worker(s)"), completed=30)
    progress.update(progress.add_task(f"  {run_id}", total=10, note="val acc 0.123"), completed=3)
    console.print(progress.make_tasks_table(progress.tasks))
    lines = console.file.getvalue().splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in console.file.getvalue()
    assert "30/120 2 worker(s)" in lines[0] and lines[0].rstrip().endswith("0:00:00")
    assert "3/10" in lines[1] and "val acc 0.123" in lines[1] and lines[1].rstrip().endswith("0:00:00")
    width = lines[1].index("━")  # the description column, folded under itself
    assert "".join(line[:width].strip() for line in lines[1:]) == run_id


# --- the report: the claims' ids, one wording for "no normalization" ----------------------------


def test_report_names_claims_by_their_cli_id_and_says_none_as_the_tables_do(smoke_copy, tmp_path):
    import re

    (smoke_copy / "claims").mkdir()
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "tiny.yaml").write_text(TINY_CLAIMS)
    ran = bnlab("claims", "bn-vs-none", "--workers", 1, "--dir", tmp_path / "claims", "--out", smoke_copy)
    assert ran.exit_code == 0, ran.output
    assert bnlab("plot", smoke_copy / "smoke").exit_code == 0
    result = bnlab("report", smoke_copy)
    assert result.exit_code == 0, result.output
    html = (smoke_copy / "report.html").read_text()

    claims = html[html.index('<section id="claims">') : html.index("</section>")]
    assert re.search(r"<tr><td><code>bn-vs-none</code><br>", claims)  # the id `bnlab claims` takes
    assert "<figcaption><code>bn-vs-none</code>:" in claims

    smoke = html[html.index('<section id="smoke"') :]
    assert "<td>none</td>" in smoke  # the summary table's cell ...
    assert re.search(r'alt="[^"]*Lines: none[;,.]', smoke)  # ... and the figure's legend say the same
    assert "no normalization" not in html


def test_the_guide_quotes_the_changed_set_error_as_the_cli_prints_it(tmp_path, monkeypatch):
    readme = (ROOT / "docs" / "guide" / "first-experiment.md").read_text()
    quoted = next(line for line in readme.splitlines() if "this run was made with a different config" in line)
    monkeypatch.chdir(tmp_path)
    assert bnlab("run", SMOKE, "--workers", 1).exit_code == 0
    result = bnlab("run", SMOKE, "--set", "solver.num_epochs=3", "--workers", 1)
    assert result.exit_code == 1
    assert flat(result.stderr) == quoted
