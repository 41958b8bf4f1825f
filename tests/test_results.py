"""bnlab.results: reading a results folder written per the runner's layout contract.

write_results_folder() writes synthetic folders exactly as `bnlab run` does; test_plots.py uses it too.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnlab.errors import ResultsError
from bnlab.results import ExperimentResults, experiment_folders, list_experiments, load_experiment

METRICS = ["best_val_acc", "best_train_acc", "final_train_loss", "wall_s"]


def write_results_folder(
    folder: Path,
    runs: list[dict],
    spec: dict | None = None,
    num_epochs: int = 5,
    iterations_per_epoch: int = 20,
) -> Path:
    """Writes results/<experiment>/ for `runs` as the runner would and returns the folder.

    Each run is a dict: swept ({dotted key: value}, None normalization written as "none"), seed,
    status (default "done"), quality (0..1, how well it trains; default 0.5) and, for a diverged
    run, diverge_at (the iteration whose loss became nan). The metrics in runs.csv are computed
    from the written curves: best accuracies are their maxima, final_train_loss the mean of the
    last 100 losses (empty when it is not finite).
    """
    folder.mkdir(parents=True)
    spec = spec or {"name": folder.name, "model": {"normalization": None}, "solver": {}, "seeds": [0]}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    swept_keys = list(dict.fromkeys(key for run in runs for key in run.get("swept", {})))
    rows = []
    for index, run in enumerate(runs):
        run_id = f"run{index:03d}"
        status = run.get("status", "done")
        swept = {k: "none" if v is None else v for k, v in run.get("swept", {}).items()}
        row = {"run_id": run_id, "status": status, **swept, "seed": run["seed"]}
        row.update(dict.fromkeys(METRICS, ""))
        if status in ("done", "diverged"):
            row.update(_write_run(folder / run_id, run, num_epochs, iterations_per_epoch))
            meta = {"run_id": run_id, "status": status, "seed": run["seed"], "swept": swept}
            (folder / run_id / "meta.json").write_text(json.dumps({**meta, "wall_s": row["wall_s"]}))
            (folder / run_id / "config.yaml").write_text(yaml.safe_dump({"seed": run["seed"], **swept}))
        rows.append(row)
    with open(folder / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["run_id", "status", *swept_keys, "seed", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _write_run(run_dir: Path, run: dict, num_epochs: int, iterations_per_epoch: int) -> dict:
    """Writes history.csv and epochs.csv of one run; returns its runs.csv metrics."""
    run_dir.mkdir()
    rng = np.random.RandomState(run["seed"] * 1000 + int(1e3 * run.get("quality", 0.5)))
    quality = run.get("quality", 0.5)
    num_iterations = num_epochs * iterations_per_epoch
    stop = run.get("diverge_at", num_iterations)
    t = np.arange(1, stop + 1)
    loss = 2.3 - 1.6 * quality * (1 - np.exp(-4 * t / num_iterations)) + 0.15 * rng.randn(stop)
    if "diverge_at" in run:  # the loss explodes, then becomes nan
        explode = min(9, stop - 1)
        loss[stop - 1 - explode : stop - 1] *= 10.0 ** np.arange(1, explode + 1)
        loss[-1] = math.nan
    epoch_of_iteration = (t - 1) // iterations_per_epoch + 1
    last_epoch = (stop if "diverge_at" not in run else stop - 1) // iterations_per_epoch
    e = np.arange(last_epoch + 1)
    train_acc = 0.1 + 0.8 * quality * (1 - np.exp(-e / 2)) + 0.02 * rng.rand(e.size)
    val_acc = 0.1 + 0.5 * quality * (1 - np.exp(-e / 2)) + 0.02 * rng.rand(e.size)
    _write_csv(run_dir / "history.csv", {"iteration": t, "epoch": epoch_of_iteration, "loss": loss})
    lr = 1e-3 * 0.95**e
    _write_csv(run_dir / "epochs.csv", {"epoch": e, "train_acc": train_acc, "val_acc": val_acc, "learning_rate": lr})
    final_loss = float(np.mean(loss[-100:]))
    return {
        "best_val_acc": repr(float(val_acc.max())),
        "best_train_acc": repr(float(train_acc.max())),
        "final_train_loss": repr(final_loss) if math.isfinite(final_loss) else "",
        "wall_s": "1.5",
    }


def _write_csv(file: Path, columns: dict[str, np.ndarray]) -> None:
    with open(file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*(c.tolist() for c in columns.values()), strict=True))


def _sweep_runs() -> list[dict]:
    """2 normalizations x 2 weight scales x 2 seeds; one pending, one diverged."""
    runs = []
    for norm in (None, "batchnorm"):
        for scale in (1e-3, 0.1):
            for seed in (0, 1):
                runs.append({"swept": {"model.normalization": norm, "model.weight_scale": scale}, "seed": seed})
    runs[3].update(status="diverged", diverge_at=47)
    runs[7]["status"] = "pending"
    return runs


def test_round_trip_of_a_synthetic_folder(tmp_path):
    spec = {"name": "ws", "model": {"hidden_dims": [50, 50], "normalization": None}, "seeds": [0, 1]}
    folder = write_results_folder(tmp_path / "ws", _sweep_runs(), spec=spec, num_epochs=5, iterations_per_epoch=20)
    res = load_experiment(str(folder))

    assert isinstance(res, ExperimentResults)
    assert res.path == folder and res.spec == spec and res.name == "ws"
    assert res.swept_keys == ["model.normalization", "model.weight_scale"]
    runs = res.runs
    assert list(runs.columns) == ["run_id", "status", *res.swept_keys, "seed", *METRICS]
    assert runs["model.normalization"].tolist() == ["none"] * 4 + ["batchnorm"] * 4
    assert runs["model.weight_scale"].dtype == np.float64 and runs["seed"].dtype == np.int64
    assert runs["model.weight_scale"].tolist() == [1e-3, 1e-3, 0.1, 0.1] * 2
    assert runs["status"].tolist() == ["done"] * 3 + ["diverged"] + ["done"] * 3 + ["pending"]
    assert res.pending == ["run007"]
    assert math.isnan(runs.loc[7, "best_val_acc"]) and math.isnan(runs.loc[3, "final_train_loss"])

    # 6 done runs of 5 epochs x 20 iterations, the diverged one stopped at iteration 47 (epoch 3).
    assert len(res.history) == 6 * 100 + 47
    assert list(res.history.columns) == ["run_id", "iteration", "epoch", "loss"]
    diverged = res.history[res.history["run_id"] == "run003"]
    assert diverged["iteration"].tolist() == list(range(1, 48))
    assert diverged["epoch"].iloc[-1] == 3 and math.isnan(diverged["loss"].iloc[-1])
    assert list(res.epochs.columns) == ["run_id", "epoch", "train_acc", "val_acc", "learning_rate"]
    assert res.epochs.groupby("run_id").size().to_dict() == {
        **{f"run00{i}": 6 for i in (0, 1, 2, 4, 5, 6)},
        "run003": 3,  # epochs 0, 1, 2 were checked before it diverged in epoch 3
    }
    # The metric written in runs.csv is the best of the run's val_acc curve.
    best = res.epochs.groupby("run_id")["val_acc"].max()
    assert runs.set_index("run_id").loc[best.index, "best_val_acc"].tolist() == pytest.approx(best.tolist())


def test_swept_text_and_integer_columns_keep_their_types(tmp_path):
    runs = [
        {"swept": {"model.normalization": n, "solver.batch_size": b}, "seed": 0}
        for n, b in [(None, 5), ("batchnorm", 50)]
    ]
    res = load_experiment(write_results_folder(tmp_path / "bs", runs))
    assert res.runs["solver.batch_size"].tolist() == [5, 50] and res.runs["solver.batch_size"].dtype == np.int64
    assert res.runs["model.normalization"].tolist() == ["none", "batchnorm"]


def test_experiment_without_swept_keys(tmp_path):
    res = load_experiment(write_results_folder(tmp_path / "one", [{"seed": 3}]))
    assert res.swept_keys == [] and res.runs["seed"].tolist() == [3] and res.pending == []


def test_list_experiments(tmp_path):
    write_results_folder(tmp_path / "b_sweep", _sweep_runs())
    write_results_folder(tmp_path / "a_single", [{"seed": 0, "quality": 0.9}])
    (tmp_path / "not_an_experiment").mkdir()
    (tmp_path / "notes.txt").write_text("hello")

    table = list_experiments(tmp_path)

    assert list(table.columns) == [
        "name",
        "runs",
        "done",
        "diverged",
        "failed",
        "pending",
        "best_val_acc",
        "path",
    ]
    assert table["name"].tolist() == ["a_single", "b_sweep"]
    assert table[["runs", "done", "diverged", "failed", "pending"]].values.tolist() == [
        [1, 1, 0, 0, 0],
        [8, 6, 1, 0, 1],
    ]
    sweep = load_experiment(tmp_path / "b_sweep")
    assert table.loc[1, "best_val_acc"] == pytest.approx(sweep.epochs["val_acc"].max())
    assert table.loc[1, "path"] == str(tmp_path / "b_sweep")
    records = json.loads(table.to_json(orient="records"))  # as `bnlab results --json` prints it
    assert [r["name"] for r in records] == ["a_single", "b_sweep"] and records[1]["pending"] == 1


def test_list_experiments_of_an_empty_and_a_missing_root(tmp_path):
    assert list_experiments(tmp_path).empty
    with pytest.raises(ResultsError, match="nowhere"):
        list_experiments(tmp_path / "nowhere")


def test_experiment_folders_of_a_root_and_of_one_experiment(tmp_path):
    b = write_results_folder(tmp_path / "b", [{"seed": 0}])
    a = write_results_folder(tmp_path / "a", [{"seed": 0}])
    (tmp_path / "claims").mkdir()  # no runs.csv, no spec.yaml: not an experiment
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "spec.yaml").write_text("name: c\n")  # started, no runs.csv yet: reported when read
    assert experiment_folders(tmp_path) == [a, b, tmp_path / "c"]
    assert experiment_folders(a) == [a]
    with pytest.raises(ResultsError, match="no experiments here"):
        experiment_folders(tmp_path / "claims")
    with pytest.raises(ResultsError, match="not a folder"):
        experiment_folders(a / "runs.csv")
    with pytest.raises(ResultsError, match="no such results folder"):
        experiment_folders(tmp_path / "nowhere")


def _set_cell(file: Path, line: int, column: str, value: str) -> None:
    """Sets one cell of a CSV file; line counts from 1 at the header, as an editor shows it."""
    with open(file, newline="") as f:
        rows = list(csv.reader(f))
    rows[line - 1][rows[0].index(column)] = value
    with open(file, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _drop_column(file: Path, column: str) -> None:
    with open(file, newline="") as f:
        rows = list(csv.reader(f))
    index = rows[0].index(column)
    with open(file, "w", newline="") as f:
        csv.writer(f).writerows(row[:index] + row[index + 1 :] for row in rows)


# (how to break a valid folder, file the message must name, other words it must contain)
BROKEN = {
    "no spec.yaml": (lambda f: (f / "spec.yaml").unlink(), "spec.yaml", ["bnlab run"]),
    "no runs.csv": (lambda f: (f / "runs.csv").unlink(), "runs.csv", ["bnlab run"]),
    "spec.yaml not a mapping": (
        lambda f: (f / "spec.yaml").write_text("- 1\n- 2\n"),
        "spec.yaml",
        ["mapping"],
    ),
    "spec.yaml bad YAML": (
        lambda f: (f / "spec.yaml").write_text("name: [unclosed\n"),
        "spec.yaml",
        ["YAML"],
    ),
    "runs.csv missing column": (
        lambda f: _drop_column(f / "runs.csv", "best_val_acc"),
        "runs.csv",
        ["best_val_acc"],
    ),
    "runs.csv non-numeric metric": (
        lambda f: _set_cell(f / "runs.csv", 2, "best_val_acc", "lots"),
        "runs.csv",
        ["line 2", "best_val_acc", "lots", "number"],
    ),
    "runs.csv unknown status": (
        lambda f: _set_cell(f / "runs.csv", 4, "status", "finished"),
        "runs.csv",
        ["line 4", "status", "finished", "pending"],
    ),
    "runs.csv duplicate run_id": (
        lambda f: _set_cell(f / "runs.csv", 4, "run_id", "run001"),
        "runs.csv",
        ["line 4", "run_id", "run001", "duplicate"],
    ),
    "runs.csv non-integer seed": (
        lambda f: _set_cell(f / "runs.csv", 3, "seed", "one"),
        "runs.csv",
        ["line 3", "seed", "one", "integer"],
    ),
    "done run folder missing": (
        lambda f: shutil.rmtree(f / "run004"),
        "run004",
        ["history.csv", "bnlab run"],
    ),
    "history.csv missing": (
        lambda f: (f / "run001" / "history.csv").unlink(),
        "run001/history.csv",
        ["bnlab run"],
    ),
    "history.csv of a diverged run missing": (
        lambda f: (f / "run003" / "history.csv").unlink(),
        "run003/history.csv",
        ["diverged", "bnlab run"],
    ),
    "history.csv without loss": (
        lambda f: _drop_column(f / "run001" / "history.csv", "loss"),
        "run001/history.csv",
        ["loss", "bnlab run"],
    ),
    "history.csv text in iteration": (
        lambda f: _set_cell(f / "run002" / "history.csv", 6, "iteration", "five"),
        "run002/history.csv",
        ["line 6", "iteration", "five", "integer"],
    ),
    "history.csv empty file": (
        lambda f: (f / "run002" / "history.csv").write_text(""),
        "run002/history.csv",
        ["bnlab run"],
    ),
    "history.csv header only for a done run": (
        lambda f: (f / "run002" / "history.csv").write_text("iteration,epoch,loss\n"),
        "run002/history.csv",
        ["bnlab run"],
    ),
    "epochs.csv missing": (
        lambda f: (f / "run005" / "epochs.csv").unlink(),
        "run005/epochs.csv",
        ["bnlab run"],
    ),
    "epochs.csv non-numeric accuracy": (
        lambda f: _set_cell(f / "run005" / "epochs.csv", 2, "train_acc", "high"),
        "run005/epochs.csv",
        ["line 2", "train_acc", "number"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folders_raise_results_error_naming_the_file(tmp_path, case):
    folder = write_results_folder(tmp_path / "exp", _sweep_runs())
    break_it, file, words = BROKEN[case]
    break_it(folder)
    with pytest.raises(ResultsError) as err:
        load_experiment(folder)
    message = str(err.value)
    assert str(folder / file) in message
    for word in words:
        assert word in message


def test_pending_and_failed_runs_need_no_files(tmp_path):
    runs = [{"seed": 0}, {"seed": 1, "status": "failed"}, {"seed": 2, "status": "pending"}]
    res = load_experiment(write_results_folder(tmp_path / "exp", runs))
    assert res.pending == ["run002"] and set(res.history["run_id"]) == {"run000"}


@pytest.mark.parametrize("make", ["missing", "file"])
def test_folder_missing_or_not_a_folder(tmp_path, make):
    path = tmp_path / "exp"
    if make == "file":
        path.write_text("not a folder")
    with pytest.raises(ResultsError, match="exp") as err:
        load_experiment(path)
    assert str(path) in str(err.value)


def test_list_experiments_names_a_broken_runs_csv(tmp_path):
    folder = write_results_folder(tmp_path / "exp", _sweep_runs())
    _set_cell(folder / "runs.csv", 4, "status", "finished")
    with pytest.raises(ResultsError, match="runs.csv"):
        list_experiments(tmp_path)
