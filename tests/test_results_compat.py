"""A results folder written by bnlab before the results format moved to bnlab.lab.results
(tests/data/results_v1_smoke: `bnlab run configs/smoke.yaml` at commit 4eb2948) still loads,
resumes and plots."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from conftest import SMOKE

from bnlab.lab.results import finished_on_disk, plan_rows, read_meta
from bnlab.lab.spec import load_experiment as load_spec
from bnlab.plots import plot_experiment
from bnlab.results import load_experiment

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
