"""A results folder written by bnlab before the results format moved to bnlab.lab.results
(tests/data/results_v1_smoke: `bnlab run configs/smoke.yaml` at commit 4eb2948) still loads,
resumes and plots."""

from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path

from conftest import SMOKE

from bnlab.figures import plot_experiment
from bnlab.lab.results import finished_on_disk, group_summary, plan_rows, read_meta
from bnlab.results import load_experiment
from bnlab.spec.experiment import load_experiment as load_spec

OLD = Path(__file__).parent / "data" / "results_v1_smoke"


def test_an_old_folder_loads_with_every_table():
    res = load_experiment(OLD)
    with open(OLD / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert res.runs["run_id"].tolist() == [r["run_id"] for r in rows]
    assert res.swept_keys == ["model.normalization"]
    assert res.runs["best_val_acc"].tolist() == [float(r["best_val_acc"]) for r in rows]
    for run_id in res.runs["run_id"]:
        with open(OLD / run_id / "history.csv", newline="") as f:
            losses = [float(r["loss"]) for r in csv.DictReader(f)]
        assert res.history.loc[res.history["run_id"] == run_id, "loss"].tolist() == losses
        assert read_meta(OLD / run_id)["status"] == "done"


def test_an_old_folder_is_resumed_not_redone():
    experiment = load_spec(SMOKE)
    assert sorted(finished_on_disk(experiment.runs, OLD)) == sorted(r.run_id for r in experiment.runs)
    rows = plan_rows(experiment.runs, OLD, force=False)
    with open(OLD / "runs.csv", newline="") as f:
        on_disk = {r["run_id"]: r for r in csv.DictReader(f)}
    for run_id, row in rows.items():  # kept as they are: same status and metrics, as text
        assert {k: str(v) for k, v in row.items()} == on_disk[run_id]


def test_an_old_folder_plots(tmp_path):
    folder = tmp_path / "smoke"
    shutil.copytree(OLD, folder)
    written = plot_experiment(folder)
    assert written and all(p.is_file() and p.stat().st_size > 0 for p in written)


def test_the_summary_shortens_long_swept_values_and_exploding_losses(tmp_path):
    """What `bnlab run` and the report print for a weight-scale sweep: no 0.00016237767391887210,
    no 26853570.657 ± 2078789.274."""
    folder = tmp_path / "smoke"
    shutil.copytree(OLD, folder)
    with open(folder / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [26853570.657 - 2078789.274, 26853570.657 + 2078789.274]
    for row, loss in zip(rows[:2], losses, strict=True):  # the two seeds of the first group
        row["model.normalization"] = "0.00016237767391887210"
        row["final_train_loss"] = repr(loss)
    with open(folder / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header, table = group_summary(folder)
    assert header[0] == "normalization" and header[-1] == "final train loss"
    first = table[0]
    assert first[0] == "0.000162378"  # 6 significant digits, as in run ids
    assert first[-1] == f"2.69e+07 ± {statistics.stdev(losses):.2e}"
    accs = [float(r["best_val_acc"]) for r in rows[:2]]
    assert first[2] == f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}"
