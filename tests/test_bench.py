"""Smoke tests of bnlab.bench: every section returns well-formed rows at tiny sizes. No timings are
asserted, only what the rows must say whatever the machine."""

import importlib.util
import json
import math
import pickle
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, needs_shared_data

from bnlab.bench import BenchRow, rows_to_json, run_benchmarks
from bnlab.bench.sections import first_layer_work
from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.spec.experiment import load_experiment

TINY_SPEC = """\
name: tiny
data: {num_train: 20, num_val: 10, num_test: 5}
model: {hidden_dims: [8]}
solver: {update_rule: adam, batch_size: 10, num_epochs: 1}
sweep:
  model.normalization: [null, batchnorm]
"""


def write_tiny_cifar(folder: Path) -> Path:
    """A cifar-10-batches-py folder in the official format: two batches of 20 images, a test batch of 5."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 5)]:
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(batches / name, "wb") as f:
            pickle.dump({"data": images, "labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    return batches


def assert_measured(row: BenchRow) -> None:
    assert row.median is not None and math.isfinite(row.median) and row.median > 0, row
    assert row.iqr is not None and row.iqr >= 0, row
    assert row.repeats >= 1, row


NUMPY_COMPILED_RATIO = (", numpy", ", compiled", ": numpy / compiled time")


def test_step_and_batchnorm_rows():
    rows = run_benchmarks({"step", "batchnorm"}, quick=True)
    assert len({row.name for row in rows}) == len(rows)
    for row in rows:
        assert_measured(row)

    step = [row for row in rows if row.group == "step" and row.unit == "s"]
    # two nets, two dtypes
    assert len(step) == 4
    assert {row.name.split(",")[0] for row in step} == {"6 layers", "8 layers"}
    # then each compiled part of a step beside the numpy passes it replaces: both times, the ratio
    parts = {row.name: row for row in rows if row.group == "step" and row.unit != "s"}
    assert len(parts) == 12
    compiled_parts = (
        "batch norm + ReLU forward",
        "batch norm + ReLU backward",
        "batch norm + ReLU, test mode, 1,000 x 50",
    )
    for name in (*compiled_parts, "Adam, 170,160 parameters"):
        numpy_ms, compiled_ms, ratio = (parts[f"{name}{suffix}"] for suffix in NUMPY_COMPILED_RATIO)
        assert numpy_ms.unit == compiled_ms.unit == "ms" and ratio.unit == "x"
        assert ratio.repeats == numpy_ms.repeats == compiled_ms.repeats

    kernels = [row for row in rows if row.group == "batchnorm"]
    for dtype in ("float64", "float32"):
        of_dtype = {row.name.rsplit(" ", 2)[0]: row for row in kernels if row.name.endswith(dtype)}
        copy = of_dtype["np.copy"]
        for name in ("batchnorm_forward (train)", "batchnorm_backward", "batchnorm_backward_alt"):
            row = of_dtype[name]
            assert row.ratio_of == "x np.copy"
            assert row.ratio == pytest.approx(row.median / copy.median)
        speedup = of_dtype["speedup of backward_alt over backward"]
        assert speedup.unit == "x" and speedup.repeats == copy.repeats


def test_record_rows_pair_recording_off_and_on():
    rows = run_benchmarks({"record"}, repeats=2, quick=True)
    assert [row.group for row in rows] == ["record"] * 3
    off, on, overhead = rows
    for row in rows:
        assert_measured(row)
    assert "off" in off.name and "every 100 iterations" in on.name
    assert overhead.unit == "x" and overhead.repeats == off.repeats == on.repeats


def test_sweep_and_startup_on_a_tiny_spec(tmp_path):
    batches = write_tiny_cifar(tmp_path / "data")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    started = []
    rows = run_benchmarks(
        {"sweep", "startup"}, repeats=1, quick=True, spec=spec, data_dir=batches, on_section=started.append
    )
    assert started == ["sweep", "startup"]
    by_name = {row.name: row for row in rows}
    peer = by_name.pop("PyTorch (same runs), 2 workers")
    if importlib.util.find_spec("torch") is None:  # the peer is a hint, not a number
        assert peer.median is None and "pip install 'bnlab[bench]'" in peer.note
    else:
        assert_measured(peer)
        assert by_name.pop("PyTorch / bnlab time, 2 workers").unit == "x"
        assert by_name.pop("PyTorch / the floor, 2 workers").unit == "x"
    for row in by_name.values():
        assert_measured(row)
    assert by_name["first-layer products alone, 2 workers (the floor)"].unit == "s"

    one, two = by_name["tiny.yaml, 1 worker"], by_name["tiny.yaml, 2 workers"]
    assert one.repeats == two.repeats == 1
    assert one.note.startswith("2 runs")  # the spec's two normalizations, one seed
    assert by_name["speedup of 2 workers over 1"].median == pytest.approx(one.median / two.median)
    memory = [row for row in rows if row.group == "memory"]
    assert len(memory) == 2 and all(row.unit == "MB" for row in memory)
    assert {row.name for row in rows if row.group == "startup"} == {
        "python -c pass (interpreter alone)",
        "bnlab --help",
    }


@needs_shared_data
def test_the_floor_counts_each_runs_first_layer_work_from_its_files(tmp_path):
    """first_layer_work reads what the first layer multiplied from real run folders: the smoke
    sweep (3072 inputs, width 20, batch 50) at 200 training images is 4 steps an epoch, so 3 epochs
    are 12 steps and 4 checks (after the first step and each epoch), of the 200 training images
    and the 100 validation ones (120 and 100 with num_train_samples 120); a conv net has no such floor."""
    smoke = ROOT / "configs" / "smoke.yaml"
    run_experiment(load_experiment(smoke, ["solver.num_epochs=3", "seeds=[0]"]), tmp_path / "a", make_executor(1))
    metas = sorted((tmp_path / "a").glob("*/*/meta.json"))
    assert first_layer_work(metas) == {(3072, 20, 50, 12, 4, 200, 100): 2}
    sampled = load_experiment(smoke, ["solver.num_epochs=3", "seeds=[0]", "solver.num_train_samples=120"])
    run_experiment(sampled, tmp_path / "b", make_executor(1))
    assert first_layer_work(sorted((tmp_path / "b").glob("*/*/meta.json"))) == {(3072, 20, 50, 12, 4, 120, 100): 2}
    conv = ["model.architecture=conv", "model.channels=[4]", "solver.num_epochs=1", "seeds=[0]"]
    run_experiment(load_experiment(smoke, conv), tmp_path / "c", make_executor(1))
    assert first_layer_work(sorted((tmp_path / "c").glob("*/*/meta.json"))) is None


def test_missing_data_is_a_row_not_an_error(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    rows = run_benchmarks({"sweep"}, spec=spec, data_dir=tmp_path / "nowhere")
    assert [row.name for row in rows] == ["tiny.yaml, 1 worker", "tiny.yaml, 2 workers"]
    for row in rows:
        assert row.median is None and row.repeats == 0
        assert "CIFAR-10 not found" in row.note and str(tmp_path / "nowhere") in row.note


def test_rows_to_json_round_trips():
    rows = [
        BenchRow("sweep", "a", 1.5, 0.25, 3, note="n"),
        BenchRow("sweep", "b", None, None, 0, unit="MB"),
    ]
    assert json.loads(rows_to_json(rows)) == [asdict(row) for row in rows]


@pytest.mark.parametrize("sections, repeats", [({"nope"}, 3), ({"step"}, 0)])
def test_bad_arguments(sections, repeats):
    with pytest.raises(ValueError):
        run_benchmarks(sections, repeats=repeats)


def test_conv_rows_with_and_without_torch(monkeypatch):
    import bnlab.bench.conv as bench

    rows = run_benchmarks({"conv"}, quick=True)
    by_name = {row.name: row for row in rows}
    assert_measured(by_name["bnlab ConvNet, batch 2"])
    assert by_name["bnlab ConvNet, batch 2"].unit == "img/s"
    memory = by_name["peak memory of a training step"]
    assert memory.unit == "MB" and memory.median > 0
    pools = ("batch norm + max pool forward", "batch norm + max pool backward", "max pool forward (other norms)")
    for layer in ("conv forward", "conv backward", *pools, "max pool backward (other norms)"):
        numpy_time, compiled = by_name[f"{layer}, numpy"], by_name[f"{layer}, compiled"]
        assert_measured(numpy_time)
        assert_measured(compiled)
        speedup = by_name[f"{layer}: numpy / compiled time"]
        assert speedup.unit == "x" and speedup.repeats == numpy_time.repeats == compiled.repeats
    if bench._torch_conv_step(2) is not None:  # torch installed: measured beside, and the ratio of the two
        assert_measured(by_name["PyTorch (same net), batch 2"])
        assert by_name["bnlab / PyTorch, batch 2"].unit == "x"

    monkeypatch.setattr(bench, "_torch_conv_step", lambda batch: None)
    rows = run_benchmarks({"conv"}, quick=True)
    torch_row = next(row for row in rows if row.name == "PyTorch (same net), batch 2")
    assert torch_row.median is None and "pip install 'bnlab[bench]'" in torch_row.note
    assert not any(row.name.startswith("bnlab / PyTorch") for row in rows)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="OpenBLAS coretypes are x86-64")
def test_blas_rows_pair_portable_and_native_processes(tmp_path):
    batches = write_tiny_cifar(tmp_path / "data")
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    rows = run_benchmarks({"blas"}, repeats=2, quick=True, spec=spec, data_dir=batches)
    assert {row.group for row in rows} == {"blas"}
    for row in rows:
        assert_measured(row)
        assert row.repeats == 2
    names = [row.name for row in rows]
    assert names[0] == "sweep, portable (Haswell kernels)" and names[1].startswith("sweep, native (")
    sweep_price = rows[2]
    assert sweep_price.name == "sweep: portable / native time" and sweep_price.unit == "x"
    assert names[3] == "conv step, portable (Haswell kernels)" and rows[3].unit == "img/s"
    assert rows[5].name == "conv: portable / native time" and rows[5].unit == "x"


def test_bench_save_writes_the_rows_and_the_machine_and_refuses_a_missing_folder(tmp_path):
    from conftest import bnlab

    from bnlab.numerics import cpu_model

    result = bnlab("bench", "--section", "sweep", "--save", tmp_path / "nowhere" / "bench.json")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"no folder {tmp_path / 'nowhere'}" in " ".join(result.stderr.split())
    file = tmp_path / "bench.json"
    result = bnlab("bench", "--section", "sweep", "--data-dir", tmp_path / "no-data", "--save", file, "--json")
    assert result.exit_code == 0, result.output
    saved = json.loads(file.read_text())
    assert saved["rows"] == json.loads(result.stdout)  # what --json prints
    assert [row["median"] for row in saved["rows"]] == [None, None]  # no data: rows that say why
    assert saved["machine"]["cpu"] == cpu_model() and saved["machine"]["cores"] >= 1
    assert saved["machine"]["numpy"] == np.__version__
