"""`bnlab reproduce`: reruns of an intact results folder are identical (exit 0); a tampered one is
caught at the right run and iteration, with what differs in provenance (exit 1); the folder is
never changed; a sample of K runs is the same every time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, SMOKE, bnlab

from bnlab.lab.reproduce import first_difference, reproduce, sample
from bnlab.lab.session import on_demand

pytestmark = pytest.mark.usefixtures("shared_data")  # skips, saying why, without the data


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_intact_folder_reproduces_identically_and_is_left_alone(smoke_results):
    before = snapshot(smoke_results)
    result = bnlab("reproduce", smoke_results, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert result.output.count("identical") == 4 + 1  # four rows and the count line
    assert "4 identical, 0 different" in result.output
    assert snapshot(smoke_results) == before


def test_a_tampered_history_is_named_with_its_first_differing_iteration(smoke_results, tmp_path):
    import shutil

    copy = tmp_path / "smoke"
    shutil.copytree(smoke_results, copy)
    run = copy / "normalization=batchnorm__seed=1"
    lines = (run / "history.csv").read_text().splitlines()
    iteration, epoch, loss = lines[5].split(",")  # iteration 5
    lines[5] = f"{iteration},{epoch},{float(loss) + 0.5!r}"
    (run / "history.csv").write_text("\n".join(lines) + "\n")
    meta = json.loads((run / "meta.json").read_text())
    kernel_now = meta["numerics"]["blas"]["kernel"]
    kernel_then = "Sandybridge" if kernel_now != "Sandybridge" else "SkylakeX"  # as if made on another machine
    meta["numerics"]["blas"]["kernel"] = kernel_then
    (run / "meta.json").write_text(json.dumps(meta))
    before = snapshot(copy)

    result = bnlab("reproduce", copy, "--workers", 1)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "3 identical, 1 different" in text and "normalization=batchnorm__seed=1" in text
    assert f"provenance differs: kernel: {kernel_then} then, {kernel_now} now" in text
    assert snapshot(copy) == before

    # the table's cell, whole (the terminal above wraps it)
    comparisons = reproduce(copy, on_demand(1, SHARED_DATA))
    differing = [c for c in comparisons if not c.identical]
    assert [c.run_id for c in differing] == ["normalization=batchnorm__seed=1"]
    assert differing[0].difference.startswith(
        f"history.csv iteration 5: loss {float(loss) + 0.5!r} vs {loss} (Δ -5.00e-01"
    )
    assert differing[0].provenance == {"kernel": (kernel_then, kernel_now)}


def test_a_sample_of_k_runs_is_fixed_and_spread(smoke_results):
    ids = [f"r{i}" for i in range(10)]
    assert sample(ids, 3) == ["r0", "r3", "r6"] == sample(ids, 3)
    assert sample(ids, None) == ids and sample(ids, 20) == ids
    result = bnlab("reproduce", smoke_results, "--runs", 2, "--workers", 1)
    assert result.exit_code == 0 and "2 identical, 0 different" in result.output


def test_first_difference_names_the_row_column_values_and_delta():
    a = "iteration,epoch,loss\n1,1,2.5\n2,1,2.25\n"
    assert first_difference("history.csv", a, a.replace("2.25", "2.5")) == (
        "history.csv iteration 2: loss 2.25 vs 2.5 (Δ +2.50e-01, relative 1.0e-01)"
    )
    assert "ends after 1 rows of 2" in first_difference("history.csv", a, "iteration,epoch,loss\n1,1,2.5\n")


def test_a_folder_without_runs_is_one_clear_error(tmp_path):
    result = bnlab("reproduce", tmp_path)
    assert result.exit_code == 1
    assert "not an experiment's results folder" in result.output and "Traceback" not in result.output


def test_an_mnist_folder_reproduces_and_without_its_data_could_not_be_rerun(tmp_path, monkeypatch):
    """The rerun reads each run's recorded data set; where it is missing, no run is called different."""
    made = bnlab("run", SMOKE, "--set", "data.dataset=mnist", "--out", tmp_path, "--workers", 1)
    assert made.exit_code == 0, made.output
    folder = tmp_path / "smoke"
    before = snapshot(folder)
    same = bnlab("reproduce", folder, "--workers", 1)
    assert same.exit_code == 0, same.output
    assert "4 identical, 0 different" in same.output and "CIFAR-10" not in same.output

    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    missing = bnlab("reproduce", folder, "--workers", 1, "--data-dir", empty)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    text = " ".join(missing.output.split())
    assert "0 identical, 0 different, 4 could not rerun" in text
    assert "could not rerun 4 run(s), so nothing was compared for them: its mnist data:" in text
    assert "differs:" not in text and "provenance" not in text
    assert snapshot(folder) == before


def test_a_run_with_an_unreadable_config_could_not_be_rerun(smoke_results, tmp_path):
    import shutil

    copy = tmp_path / "smoke"
    shutil.copytree(smoke_results, copy)
    (copy / "normalization=none__seed=0" / "config.yaml").write_text("data: [not, a, mapping")
    result = bnlab("reproduce", copy, "--workers", 1)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "3 identical, 0 different, 1 could not rerun" in text
    assert "cannot read its config.yaml or meta.json" in text
