"""The `bnlab` command line: help, every command, bad inputs, and what a user sees when a sweep is
interrupted (Ctrl-C) or killed (SIGKILL). In-process with typer's CliRunner where possible; a real
process where signals, exit codes and leftover processes are the point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA, SMOKE, bnlab, read_csv
from filelock import FileLock

from bnlab.cli import app
from bnlab.data import cifar10 as data

SMOKE_IDS = [f"normalization={norm}__seed={seed}" for norm in ("none", "batchnorm") for seed in (0, 1)]

# smoke with 8 runs of ~0.2 s each: long enough to interrupt in the middle, short enough for a test
LONGER = [
    *("--set", "seeds=[0, 1, 2, 3]"),
    *("--set", "solver.num_epochs=3"),
    *("--set", "data.num_train=1000"),
    *("--set", "model.hidden_dims=[100, 100]"),
]
LONGER_RUNS = 8


pytestmark = pytest.mark.usefixtures("shared_data")  # without the data every test here skips, saying so


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def flat(text: str) -> str:
    """Text with every run of whitespace (a terminal's line wraps) as one space."""
    return " ".join(text.split())


def assert_one_error(result, code: int, *phrases: str, stdout: bool = False) -> None:
    """Exit `code`, one message on stderr naming `phrases`, no traceback, and nothing on stdout
    unless `stdout` (a sweep that fails once started has shown its progress bar)."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception that escaped the CLI
    assert stdout or result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("error:") == 1, result.stderr
    for phrase in phrases:
        assert phrase in flat(result.stderr), (phrase, result.stderr)


# --- help --------------------------------------------------------------------------------------

COMMANDS = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_an_example(command):
    result = bnlab(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    assert "Traceback" not in result.output


def test_no_arguments_shows_help():
    result = bnlab()
    assert result.exit_code in (0, 2) and "run" in result.output and "Traceback" not in result.output


# --- plan, dry runs, data, results, gradcheck ------------------------------------------------------


def test_plan_lists_the_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bnlab("plan", SMOKE)
    assert result.exit_code == 0, result.output
    assert "4 runs" in result.stdout
    for run_id in SMOKE_IDS:
        assert run_id in result.stdout
    assert bnlab("plan", SMOKE, "--set", "seeds=3").stdout.count("normalization=batchnorm__seed=") == 3
    assert tree(tmp_path) == []


def test_dry_run_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bnlab("run", SMOKE, "--dry-run")
    assert result.exit_code == 0, result.output
    assert all(run_id in result.stdout for run_id in SMOKE_IDS)
    assert bnlab("run", SMOKE, "--dry-run", "--out", tmp_path / "out").exit_code == 0
    assert tree(tmp_path) == []


def test_data_shows_where_the_data_is():
    result = bnlab("data")
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert str(SHARED_DATA / "cifar-10-batches-py") in text and "BNLAB_DATA_DIR" in text
    assert "5,000 training images" in text and "1,000 test" in text  # the subset's README: 5 x 1,000 and 1,000
    assert json.loads(bnlab("data", "--json").stdout)["num_train"] == 5000


def test_data_shows_any_data_set():
    """The shared MNIST subset (its README: 4,000 training and 1,000 test digits) as `--dataset mnist`
    finds it; a misspelt name is one error line with the right one suggested."""
    result = bnlab("data", "--dataset", "mnist")
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert f"mnist found in {SHARED_DATA / 'mnist'}" in text and "4,000 training images" in text
    info = json.loads(bnlab("data", "-d", "mnist", "--json").stdout)
    assert (info["dataset"], info["num_train"], info["num_test"]) == ("mnist", 4000, 1000)
    assert [f["images"] for f in info["files"]] == [4000, 4000, 1000, 1000]
    wrong = bnlab("data", "--dataset", "mnst")
    assert wrong.exit_code == 1 and "did you mean 'mnist'" in wrong.output and "Traceback" not in wrong.output


def test_data_says_where_it_looked_when_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(tmp_path))
    result = bnlab("data")
    assert result.exit_code == 1
    assert str(tmp_path / "cifar-10-batches-py") in "".join(result.output.split())
    assert "--data-dir" in result.output and "Traceback" not in result.output
    assert tree(tmp_path) == []


def test_results_lists_experiments(tmp_path):
    out = tmp_path / "results"
    assert bnlab("run", SMOKE, "--workers", 1, "--out", out).exit_code == 0

    table = bnlab("results", out)
    assert table.exit_code == 0, table.output
    assert "smoke" in table.stdout

    (record,) = json.loads(bnlab("results", out, "--json").stdout)
    assert record["name"] == "smoke" and record["runs"] == 4 and record["done"] == 4
    rows = json.loads(bnlab("results", out / "smoke", "--json").stdout)
    # runs.csv's rows, numbers as numbers (tests/test_new_user.py checks the types)
    assert [{k: str(v) for k, v in row.items()} for row in rows] == read_csv(out / "smoke" / "runs.csv")

    assert_one_error(bnlab("results", tmp_path / "nowhere"), 1, str(tmp_path / "nowhere"))


def test_plot_and_report_of_a_results_root_after_a_run(tmp_path):
    out = tmp_path / "results"
    assert bnlab("run", SMOKE, "--workers", 1, "--out", out).exit_code == 0

    drawn = bnlab("plot", out)
    assert drawn.exit_code == 0, drawn.output
    assert flat(drawn.stdout) == f"smoke: wrote history.png in {out / 'smoke' / 'figures'}"
    assert (out / "smoke" / "figures" / "history.png").stat().st_size > 0

    report = bnlab("report", out)
    assert report.exit_code == 0, report.output
    assert flat(report.stdout) == f"wrote {out / 'report.html'}" and report.stderr == ""
    assert "normalization=batchnorm" not in (out / "report.html").read_text()  # all done: no run flagged


def test_plot_of_a_root_draws_every_experiment_it_can(tmp_path):
    from test_results import write_results_folder

    write_results_folder(tmp_path / "a_waiting", [{"seed": 0, "status": "pending"}])
    write_results_folder(tmp_path / "b_done", [{"seed": 0}, {"seed": 1}], num_epochs=2, iterations_per_epoch=5)
    (tmp_path / "claims").mkdir()  # not an experiment: no runs.csv

    result = bnlab("plot", tmp_path, "--format", "svg")

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert flat(result.stdout) == f"b_done: wrote history.svg in {tmp_path / 'b_done' / 'figures'}"
    assert (tmp_path / "b_done" / "figures" / "history.svg").is_file()
    assert not (tmp_path / "a_waiting" / "figures").exists()
    errors = flat(result.stderr)
    assert errors.startswith(f"error: {tmp_path / 'a_waiting' / 'runs.csv'}: no finished runs to plot yet")
    assert errors.endswith("1 of 2 experiments not drawn")

    result = bnlab("plot", tmp_path, "--out", tmp_path / "figs")  # --out: a folder per experiment
    assert (tmp_path / "figs" / "b_done" / "history.png").is_file() and result.exit_code == 1


def test_report_of_a_root_with_an_unreadable_experiment(tmp_path):
    from test_results import write_results_folder

    write_results_folder(tmp_path / "good", [{"seed": 0}], num_epochs=1, iterations_per_epoch=5)
    write_results_folder(tmp_path / "broken", [{"seed": 0}], num_epochs=1, iterations_per_epoch=5)
    (tmp_path / "broken" / "runs.csv").write_text("run_id\nx\n")

    result = bnlab("report", tmp_path)

    assert_one_error(result, 1, str(tmp_path / "broken" / "runs.csv"), "missing column(s)", stdout=True)
    assert flat(result.stdout) == f"wrote {tmp_path / 'report.html'}"  # the rest is reported all the same
    assert 'id="good"' in (tmp_path / "report.html").read_text()


def test_gradcheck_json():
    """--only keeps it quick (the whole table is tests/test_gradcheck_suite.py's)."""
    result = bnlab("gradcheck", "--json", "--only", "layernorm")
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)
    assert len(checks) >= 10 and len({c["name"] for c in checks}) == len(checks)
    assert all("layernorm" in c["name"] for c in checks)
    assert any(c["name"].startswith("layernorm dx") for c in checks)
    assert any(c["name"].startswith("net relu layernorm after reg=0 W") for c in checks)
    for check in checks:
        assert check["passed"] is True and 0 <= check["error"] <= check["threshold"] < 1e-3, check


def test_a_diverging_run_does_not_fail_the_sweep(tmp_path):
    spec = tmp_path / "diverge.yaml"
    spec.write_text(
        "name: diverge\n"
        "data: {num_train: 200, num_val: 50, num_test: 10}\n"
        "model: {hidden_dims: [20, 20], weight_scale: 2.0e-2}\n"
        "solver: {update_rule: sgd, batch_size: 50, num_epochs: 2}\n"
        "sweep: {solver.optim_config.learning_rate: [1.0e-3, 1.0e+6]}\n"
    )
    result = bnlab("run", spec, "--workers", 1, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "diverged" in result.stdout and "Traceback" not in result.output
    rows = read_csv(tmp_path / "out" / "diverge" / "runs.csv")
    assert [r["status"] for r in rows] == ["done", "diverged"]


# --- bad inputs: one message, the right exit code, nothing written ----------------------------------


def test_brackets_in_a_message_are_text_not_markup(tmp_path):
    spec = tmp_path / "range.yaml"
    spec.write_text("name: r\nmodel: {hidden_dims: [10]}\nsweep:\n  model.weight_scale: {logspace: [-4, 0]}\n")
    assert_one_error(bnlab("plan", spec), 2, "[start, stop, count]", "[-4, 0]")


@pytest.mark.parametrize(
    ("args", "code", "phrases"),
    [
        (["run", SMOKE, "--set", "solver.num_epochs"], 2, ["--set solver.num_epochs", "KEY=VALUE"]),
        (["run", SMOKE, "--set", "model.nope=1"], 2, ["model.nope"]),
        (["run", SMOKE, "--set", "solver.num_epochs=two"], 2, ["solver.num_epochs", "'two'"]),
        (["plan", SMOKE, "--set", "model.weight_scale=-1"], 2, ["model.weight_scale"]),
        (["run", "missing.yaml"], 2, ["missing.yaml", "no such spec file"]),
        (["run", "a_folder"], 2, ["a_folder", "is a directory"]),
        (["run", SMOKE, "--out", "a_file"], 2, ["a_file", "not a folder"]),
        # 4,950 + 100 validation images > the 5,000 of the subset: the spec must change
        (["run", SMOKE, "--set", "data.num_train=4950"], 2, ["4950", "100", "5000"]),
        (["plot", "nowhere"], 1, ["nowhere", "no such results folder"]),
        (["plot", "a_file"], 1, ["a_file", "not a folder", "results root"]),
        (["plot", "a_folder"], 1, ["a_folder", "no experiments here", "bnlab run SPEC"]),
        (["report", "nowhere"], 1, ["nowhere", "no such results folder"]),
        (["report", "a_folder"], 1, ["a_folder", "no experiments here"]),
    ],
)
def test_bad_input(tmp_path, monkeypatch, args, code, phrases):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    before = tree(tmp_path)
    assert_one_error(bnlab(*args), code, *phrases)
    assert tree(tmp_path) == before
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_workers_must_be_positive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bnlab("run", SMOKE, "--workers", 0)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "--workers" in result.stderr and "Traceback" not in result.output
    assert tree(tmp_path) == []


def test_out_not_writable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").touch()
        (locked / "probe").unlink()
        # root ignores permission bits: a path under a file cannot be written by anyone
        (tmp_path / "a_file").write_text("")
        out, problem = tmp_path / "a_file" / "results", "is a file, so no folder can be made inside it"
    except PermissionError:
        out, problem = locked / "results", "not writable"
    before = tree(tmp_path)
    assert_one_error(bnlab("run", SMOKE, "--out", out), 2, problem)
    assert tree(tmp_path) == before


@pytest.fixture
def no_network(monkeypatch):
    """Every download attempt is recorded and fails at once, as it does on an offline machine."""
    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(data, "_fetch", offline)
    return attempts


@pytest.mark.parametrize("how", ["env", "option"])
def test_missing_data_in_a_named_folder(tmp_path, monkeypatch, no_network, how):
    """A folder named by BNLAB_DATA_DIR or --data-dir without CIFAR-10: say so, download nothing."""
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    if how == "env":
        monkeypatch.setenv("BNLAB_DATA_DIR", str(empty))
        args = []
    else:
        args = ["--data-dir", empty]
    result = bnlab("run", SMOKE, *args)
    assert_one_error(result, 1, str(empty / "cifar-10-batches-py"), "--data-dir", "BNLAB_DATA_DIR", "--download")
    assert no_network == []
    assert tree(tmp_path) == ["empty"]


def test_missing_data_in_the_cache_fails_fast_offline(tmp_path, monkeypatch, no_network):
    """Neither --data-dir nor BNLAB_DATA_DIR: the cache is filled by a download, which fails here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNLAB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = bnlab("run", SMOKE)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert len(no_network) == 1 and "Traceback" not in result.output
    assert "cannot download" in flat(result.stderr) and "--data-dir" in result.stderr
    assert not (tmp_path / "results").exists()
    assert [p for p in tree(tmp_path) if "cifar-10" in p] == []  # no partial archive left


def test_a_locked_experiment_is_refused(tmp_path):
    exp_dir = tmp_path / "out" / "smoke"
    exp_dir.mkdir(parents=True)
    with FileLock(exp_dir / ".lock"):
        result = bnlab("run", SMOKE, "--workers", 1, "--out", tmp_path / "out")
    assert_one_error(result, 1, "another `bnlab run` is writing", str(exp_dir), stdout=True)
    assert [p.name for p in exp_dir.iterdir()] == [".lock"]


def test_a_changed_config_is_refused_with_exit_1(tmp_path):
    out = tmp_path / "out"
    assert bnlab("run", SMOKE, "--workers", 1, "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in (out / "smoke").rglob("*") if p.is_file()}
    result = bnlab("run", SMOKE, "--workers", 1, "--out", out, "--set", "model.reg=0.1")
    assert_one_error(result, 1, "--force", "model.reg", stdout=True)
    assert {p: p.read_bytes() for p in (out / "smoke").rglob("*") if p.is_file()} == before


def test_rerun_says_nothing_was_left_to_train(tmp_path):
    out = tmp_path / "out"
    assert bnlab("run", SMOKE, "--workers", 1, "--out", out).exit_code == 0
    runs = (out / "smoke" / "runs.csv").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "smoke").glob("normalization=*/*")}
    again = bnlab("run", SMOKE, "--workers", 1, "--out", out)
    assert (
        again.exit_code == 0
        and "all 4 runs are already finished" in again.stdout
        and "nothing to train" in again.stdout
    )
    assert {p: p.stat().st_mtime_ns for p in (out / "smoke").glob("normalization=*/*")} == mtimes
    assert len(mtimes) == 4 * 5 and (out / "smoke" / "runs.csv").read_bytes() == runs  # 5 files per run


# --- real processes: SIGKILL and Ctrl-C ------------------------------------------------------------


def process_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # a narrow terminal: messages must still show paths whole
    return {**os.environ, "PYTHONPATH": path, "BNLAB_DATA_DIR": str(SHARED_DATA), "COLUMNS": "60"}


def start(tmp_path: Path, out: Path, workers: int) -> subprocess.Popen:
    """`bnlab run` of the longer smoke sweep in a new process; its output goes to files."""
    args = [sys.executable, "-m", "bnlab.cli", "run", str(SMOKE), *LONGER, "--workers", str(workers), "--out", str(out)]
    return subprocess.Popen(
        args,
        cwd=tmp_path,
        env=process_env(),
        stdout=open(tmp_path / "stdout.txt", "w"),  # noqa: SIM115 - the child owns it
        stderr=open(tmp_path / "stderr.txt", "w"),  # noqa: SIM115
        # a shell that started pytest in the background made it ignore SIGINT, which children inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def children_of(pid: int) -> set[int]:
    """Processes whose parent is `pid`, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_until(condition, proc: subprocess.Popen, children: set[int], timeout: float = 60) -> None:
    """Poll `condition` while `proc` runs, collecting its child processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"bnlab run ended early: {(proc.args, proc.returncode)}"
        assert time.monotonic() < deadline, "bnlab run made no progress"
        children |= children_of(proc.pid)
        time.sleep(0.01)
    children |= children_of(proc.pid)


def finished_rows(exp_dir: Path) -> int:
    runs = exp_dir / "runs.csv"
    return sum(r["status"] == "done" for r in read_csv(runs)) if runs.exists() else 0


def assert_no_process_left(children: set[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(pid) for pid in children):
        time.sleep(0.05)
    left = [pid for pid in children if running(pid)]
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left behind by bnlab run: {left}"


def snapshot(exp_dir: Path) -> dict:
    """What a sweep computed: every run's files but meta.json, runs.csv without timings."""
    runs = [{k: v for k, v in row.items() if k != "wall_s"} for row in read_csv(exp_dir / "runs.csv")]
    files = {
        str(p.relative_to(exp_dir)): p.read_bytes()
        for p in sorted(exp_dir.glob("*/*"))
        if p.name in ("config.yaml", "history.csv", "epochs.csv")
    }
    return {"runs": runs, "files": files, "spec": (exp_dir / "spec.yaml").read_bytes()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
        result = bnlab("run", SMOKE, *LONGER, "--workers", 1, "--out", out)
    assert result.exit_code == 0, result.output
    found = snapshot(out / "smoke")
    assert len(found["runs"]) == LONGER_RUNS and len(found["files"]) == 3 * LONGER_RUNS
    return found


def rerun_to_completion(tmp_path: Path, out: Path, workers: int) -> None:
    args = [sys.executable, "-m", "bnlab.cli", "run", str(SMOKE), *LONGER, "--workers", str(workers), "--out", str(out)]
    done = subprocess.run(args, cwd=tmp_path, env=process_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_sweep_then_resume(tmp_path, uninterrupted, workers):
    out = tmp_path / "out"
    exp_dir = out / "smoke"
    proc = start(tmp_path, out, workers)
    children: set[int] = set()
    wait_until(lambda: finished_rows(exp_dir) >= 1, proc, children)
    # Frozen mid-sweep (its workers may go on, but only it writes results): however slow the
    # machine, the lock check below cannot race with the end of the sweep.
    proc.send_signal(signal.SIGSTOP)
    statuses = [r["status"] for r in read_csv(exp_dir / "runs.csv")]
    assert "pending" in statuses and "done" in statuses

    # while it runs, the experiment is locked
    locked = bnlab("run", SMOKE, *LONGER, "--workers", 1, "--out", out)
    assert_one_error(locked, 1, "another `bnlab run` is writing", stdout=True)

    children |= children_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert [r["status"] for r in read_csv(exp_dir / "runs.csv")] == statuses  # nothing written after the stop
    if workers > 1:
        assert len(children) >= workers  # the worker processes were seen
    assert_no_process_left(children)
    with FileLock(exp_dir / ".lock", timeout=0):  # the kernel dropped the lock with the process
        pass

    rerun_to_completion(tmp_path, out, workers)
    assert snapshot(exp_dir) == uninterrupted
    assert [p.name for p in exp_dir.iterdir() if p.name.startswith(".")] == [".lock"]  # no staging leftovers


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, uninterrupted, workers):
    out = tmp_path / "out"
    exp_dir = out / "smoke"
    proc = start(tmp_path, out, workers)
    children: set[int] = set()
    wait_until(lambda: finished_rows(exp_dir) >= 1, proc, children)

    proc.send_signal(signal.SIGINT)  # wherever it lands: training, writing a run, or between them
    assert proc.wait(timeout=120) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    finished = finished_rows(exp_dir)
    assert 1 <= finished < LONGER_RUNS
    # the message, runs.csv and the run folders agree
    on_disk = [d for d in exp_dir.iterdir() if (d / "meta.json").exists() and not d.name.startswith(".")]
    assert len(on_disk) == finished
    message = flat(stderr)
    assert f"{finished} of {LONGER_RUNS} runs" in message
    assert "run the same command again to resume" in message and str(exp_dir) in stderr
    assert_no_process_left(children)

    rerun_to_completion(tmp_path, out, workers)
    assert snapshot(exp_dir) == uninterrupted


def test_gradcheck_only_matching_nothing_is_a_usage_error():
    result = bnlab("gradcheck", "--only", "no-such-layer")
    assert result.exit_code == 2 and "no-such-layer" in result.stderr and "Traceback" not in result.output


def test_a_finished_sweep_reruns_without_its_data(smoke_results, tmp_path, monkeypatch, no_network):
    """Results copied to a machine with no data (no folder configured, an empty cache, offline):
    every run is done, so nothing is located, loaded or downloaded, and the rerun succeeds."""
    shutil.copytree(smoke_results, tmp_path / "results" / "smoke")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file() and p.name != ".lock"}
    result = bnlab("run", SMOKE, "--out", tmp_path / "results", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "all 4 runs are already finished" in flat(result.stdout) and no_network == []
    assert not (tmp_path / "cache").exists() and not (tmp_path / "home").exists()
    after = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    summary = bnlab("results", tmp_path / "results", "--json")
    assert summary.exit_code == 0 and [(e["runs"], e["done"]) for e in json.loads(summary.stdout)] == [(4, 4)]
