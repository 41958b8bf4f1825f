"""Shifted test sets and fine-tuning with batch norm's statistics (issue 30, parts 3 and 4): a
run's view of its data (data.classes, data.shift_scale/offset), AdaBN checks (solver.adabn),
statistics that do not move (frozen_batchnorm) and statistics recomputed before training
(model.recompute_statistics)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA, SMOKE, bnlab

from bnlab import FullyConnectedNet, Solver
from bnlab.data import datasets
from bnlab.data.views import run_view
from bnlab.lab.weights import read_state
from bnlab.layers import batchnorm_forward, frozen_batchnorm_forward

pytestmark = pytest.mark.usefixtures("shared_data")


@pytest.fixture(scope="module")
def cifar():
    return datasets.load_dataset(datasets.Request("cifar10", 500, 300, 200, np.float64), SHARED_DATA)


def test_a_view_keeps_the_classes_in_order_and_shifts_only_validation_and_test(cifar):
    view = run_view(cifar, {"classes": [3, 7], "shift_scale": 0.5, "shift_offset": 2.0})
    for split in ("train", "val", "test"):
        keep = (cifar[f"y_{split}"] == 3) | (cifar[f"y_{split}"] == 7)
        assert 0 < keep.sum() < len(keep)
        np.testing.assert_array_equal(view[f"y_{split}"], cifar[f"y_{split}"][keep])
        expected = cifar[f"X_{split}"][keep] * (0.5 if split != "train" else 1) + (2.0 if split != "train" else 0)
        np.testing.assert_array_equal(view[f"X_{split}"], expected)
    assert run_view(cifar, {"shift_scale": 1.0})["X_val"] is cifar["X_val"]  # nothing asked, nothing copied


def test_adabn_checks_use_the_validation_sets_statistics_and_leave_training_alone(cifar):
    """The validation accuracy in eval mode with every running statistic set to its population
    value over X_val (computed here independently, layer by layer); the training histories are
    the bytes of a run without it, and the net kept at the end is the one that scored best."""
    shifted = run_view(cifar, {"shift_scale": 0.5, "shift_offset": 0.3})
    histories = {}
    for adabn in (False, True):
        net = FullyConnectedNet([20, 20], input_dim=3072, normalization="batchnorm", dtype=np.float64, seed=0)
        solver = Solver(net, shifted, update_rule="adam", optim_config={"learning_rate": 1e-3}, batch_size=50,
                        num_epochs=2, adabn=adabn, rng=np.random.RandomState(0))  # fmt: skip
        solver.train()
        histories[adabn] = (solver.loss_history, solver.train_acc_history, solver.val_acc_history)
    assert histories[True][:2] == histories[False][:2]
    assert histories[True][2] != histories[False][2]
    # the kept net: its statistics are X_val's population statistics, layer by layer
    X = shifted["X_val"].reshape(len(shifted["X_val"]), -1)
    a1 = X @ net.params["W1"] + net.params["b1"]
    np.testing.assert_allclose(net.bn_params[0]["running_mean"], a1.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.bn_params[0]["running_var"], a1.var(0), rtol=1e-9, atol=1e-12)
    h1 = np.maximum(0, (a1 - a1.mean(0)) / np.sqrt(a1.var(0) + 1e-5) * net.params["gamma1"] + net.params["beta1"])
    a2 = h1 @ net.params["W2"] + net.params["b2"]
    np.testing.assert_allclose(net.bn_params[1]["running_mean"], a2.mean(0), rtol=1e-9, atol=1e-12)
    assert solver.best_val_acc == np.mean(net.loss(X).argmax(1) == shifted["y_val"])


def test_frozen_statistics_normalize_as_test_mode_and_never_move():
    rng = np.random.RandomState(1)
    x, gamma, beta = rng.randn(16, 5) * 3 + 2, rng.randn(5), rng.randn(5)
    stats = {"running_mean": rng.randn(5), "running_var": rng.rand(5) + 0.5}
    frozen = {"mode": "train", **{k: v.copy() for k, v in stats.items()}}
    out, _ = frozen_batchnorm_forward(x, gamma, beta, frozen)
    expected, _ = batchnorm_forward(x, gamma, beta, {"mode": "test", **stats})
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert all(np.array_equal(frozen[k], stats[k]) for k in stats)
    # a batch of one is a batch like any other for it
    np.testing.assert_allclose(frozen_batchnorm_forward(x[:1], gamma, beta, frozen)[0], expected[:1], rtol=1e-12)


def run_spec(tmp_path, name: str, *sets: str):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SMOKE.read_text().replace("name: smoke", f"name: {name}"))
    args = [a for s in sets for a in ("--set", s)]
    return bnlab("run", spec, "--out", tmp_path, "--set", "seeds=[0]", "--set", "solver.num_epochs=1",
                 "--workers", 1, *args)  # fmt: skip


def test_fine_tuning_with_frozen_and_recomputed_statistics_through_the_cli(smoke_results, tmp_path):
    source = smoke_results / "normalization=batchnorm__seed=0"
    base = [f"model.init_from={source}", "data.classes=[5, 6, 7, 8, 9]", "model.normalization=frozen_batchnorm"]
    result = run_spec(tmp_path, "frozen", *base)
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "frozen").glob("*seed=0"))
    kept, started = read_state(run), read_state(source)
    for key in [k for k in started if k.startswith("norm/")]:  # the pre-trained statistics, unmoved
        np.testing.assert_array_equal(kept[key], started[key])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["classes"] == [5, 6, 7, 8, 9]

    result = run_spec(tmp_path, "recomputed", *base, "model.recompute_statistics=true")
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "recomputed").glob("*seed=0"))
    kept = read_state(run)
    data = datasets.load_dataset(datasets.Request.of_run(config))
    X = data["X_train"][np.isin(data["y_train"], [5, 6, 7, 8, 9])].reshape(-1, 3072).astype(np.float64)
    a1 = X @ started["param/W1"].astype(np.float64) + started["param/b1"]
    np.testing.assert_allclose(kept["norm/0/running_mean"], a1.mean(0), rtol=1e-4, atol=1e-4)  # float32 run
    assert not np.allclose(kept["norm/0/running_mean"], started["norm/0/running_mean"], rtol=1e-2)


def test_recomputing_statistics_a_normalization_does_not_keep_is_one_clear_line(tmp_path):
    result = run_spec(tmp_path, "bad", "model.normalization=layernorm", "model.recompute_statistics=true")
    assert result.exit_code == 2, result.output
    assert "recompute_statistics" in result.stderr and "layernorm" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


def test_classes_a_data_set_lacks_are_one_clear_line(tmp_path):
    result = run_spec(tmp_path, "bad", "data.classes=[3, 10]")
    assert result.exit_code == 2, result.output
    assert "classes" in result.stderr and "0 to 9" in result.stderr and "Traceback" not in result.output


def test_a_new_head_keeps_the_fresh_output_layer_and_may_have_other_classes():
    """new_head: every parameter and statistic comes from the state but the output layer's, which
    keeps this net's own initial weights, so a net for 5 classes starts from one trained for 10."""
    rng = np.random.RandomState(0)
    trained = FullyConnectedNet([6, 5], input_dim=4, num_classes=10, normalization="batchnorm", seed=1)
    trained.loss(rng.randn(8, 4).astype(np.float32), np.arange(8))  # running statistics exist
    fresh = FullyConnectedNet([6, 5], input_dim=4, num_classes=5, normalization="batchnorm", seed=2)
    head = {name: fresh.params[name].copy() for name in ("W3", "b3")}
    with pytest.raises(ValueError, match=r"W3 is \(5, 10\) there but \(5, 5\) here"):
        fresh.load_state(trained.state())
    fresh.load_state(trained.state(), new_head=True)
    for name, value in trained.state().items():
        if name not in ("param/W3", "param/b3"):
            np.testing.assert_array_equal(fresh.state()[name], value)
    assert all(np.array_equal(fresh.params[name], value) for name, value in head.items())


def test_classes_that_leave_no_training_image_fail_the_run_in_one_line(tmp_path):
    result = run_spec(tmp_path, "empty", "data.num_train=3", "data.classes=[7]")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "data.classes [7]: none of the 3 train images is of these classes; raise data.num_train" in " ".join(
        result.output.split()
    )
