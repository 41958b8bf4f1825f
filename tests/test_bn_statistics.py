"""Precise batch-norm statistics (issue 30): recompute_bn_statistics sets each layer's running
statistics to its input's population mean and biased variance over the data, layer by layer, as an
independent forward pass computes them, for fully connected and conv nets."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab import ConvNet, FullyConnectedNet, recompute_bn_statistics
from bnlab.layers import conv_forward_naive, max_pool_forward_naive

EPS = 1e-5


def normalized(a: np.ndarray, mean, var, gamma, beta) -> np.ndarray:
    return gamma * (a - mean) / np.sqrt(var + EPS) + beta


@pytest.mark.parametrize("batch_size", [None, 7])
def test_a_fully_connected_nets_statistics_are_its_inputs_population_statistics(batch_size):
    rng = np.random.RandomState(0)
    net = FullyConnectedNet([6, 5], input_dim=4, num_classes=3, normalization="batchnorm", weight_scale=0.5,
                            dtype=np.float64, seed=1)  # fmt: skip
    for name in ("gamma1", "beta1"):  # away from the identity, so layer 2's input depends on them
        net.params[name] = rng.randn(6)
    X = rng.randn(50, 4) * 3 + 2
    assert recompute_bn_statistics(net, X, batch_size) == [0, 1]
    p = net.params
    a1 = X @ p["W1"] + p["b1"]
    first = net.bn_params[0]
    np.testing.assert_allclose(first["running_mean"], a1.mean(0), rtol=1e-9)
    np.testing.assert_allclose(first["running_var"], a1.var(0), rtol=1e-9)
    h1 = np.maximum(normalized(a1, a1.mean(0), a1.var(0), p["gamma1"], p["beta1"]), 0)
    a2 = h1 @ p["W2"] + p["b2"]
    np.testing.assert_allclose(net.bn_params[1]["running_mean"], a2.mean(0), rtol=1e-9)
    np.testing.assert_allclose(net.bn_params[1]["running_var"], a2.var(0), rtol=1e-9)


def test_a_conv_nets_statistics_are_per_channel_over_images_and_positions():
    rng = np.random.RandomState(2)
    net = ConvNet([2, 3], input_dim=(1, 6, 6), num_classes=3, normalization="batchnorm", dtype=np.float64, seed=3)
    net.params["gamma1"], net.params["beta1"] = rng.randn(2), rng.randn(2)
    X = rng.randn(5, 1, 6, 6)
    assert recompute_bn_statistics(net, X) == [0, 1]
    p, conv_param = net.params, {"stride": 1, "pad": 1}
    a1, _ = conv_forward_naive(X, p["W1"], p["b1"], conv_param)
    mean1, var1 = a1.mean(axis=(0, 2, 3)), a1.var(axis=(0, 2, 3))
    np.testing.assert_allclose(net.bn_params[0]["running_mean"], mean1, rtol=1e-9)
    np.testing.assert_allclose(net.bn_params[0]["running_var"], var1, rtol=1e-9)
    shape = (1, 2, 1, 1)
    h1 = np.maximum(normalized(a1, mean1.reshape(shape), var1.reshape(shape), p["gamma1"].reshape(shape),
                               p["beta1"].reshape(shape)), 0)  # fmt: skip
    h1, _ = max_pool_forward_naive(h1, {"pool_height": 2, "pool_width": 2, "stride": 2})
    a2, _ = conv_forward_naive(h1, p["W2"], p["b2"], conv_param)
    np.testing.assert_allclose(net.bn_params[1]["running_mean"], a2.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(net.bn_params[1]["running_var"], a2.var(axis=(0, 2, 3)), rtol=1e-9)


def test_nets_without_running_statistics_are_left_alone():
    net = FullyConnectedNet([4], input_dim=3, normalization="layernorm", dtype=np.float64, seed=0)
    before = [dict(p) for p in net.bn_params]
    assert recompute_bn_statistics(net, np.ones((4, 3))) == [] and net.bn_params == before


def test_momentum_is_the_old_values_share_and_a_spec_key(tmp_path):
    """CS231n's convention: running = momentum * running + (1 - momentum) * batch (PyTorch's
    momentum 0.1 is 0.9 here); a spec sets it per run, and at its default it stays out of configs."""
    from bnlab.spec.experiment import experiment_from_text

    X = np.random.RandomState(4).randn(30, 3)
    net = FullyConnectedNet([3], input_dim=3, normalization="batchnorm", momentum=0.25, dtype=np.float64, seed=0)
    a1 = X @ net.params["W1"] + net.params["b1"]
    net.loss(X, np.zeros(30, dtype=int))
    np.testing.assert_allclose(net.bn_params[0]["running_mean"], 0.75 * a1.mean(0), rtol=1e-12)
    text = "name: m\nmodel: {hidden_dims: [3], normalization: batchnorm}\nsweep: {model.momentum: [0.9, 0.5]}\n"
    default, set_ = (run.config["model"] for run in experiment_from_text(text, "m.yaml").runs)
    assert "momentum" not in default and set_["momentum"] == 0.5


@pytest.mark.parametrize("scale, shift", [(0.5, 3.0), (-2.0, -1.0)])
def test_adabn_undoes_an_affine_shift_of_the_inputs_to_the_size_of_eps(scale, shift):
    """AdaBN (Li et al. 2016): statistics re-estimated on shifted inputs x' = a x + b. The first
    affine layer turns the shift into a per-feature one, a * h + c_j, which batch norm removes
    exactly but for eps: (a h + c - mean') / sqrt(var' + eps) = (h - mean) / sqrt(var + eps / a**2)
    (with a < 0 the features flip sign: the first layer is made odd by zero biases and no ReLU
    before the norm sees it). The stored statistics do not undo it."""
    rng = np.random.RandomState(4)
    net = FullyConnectedNet([8, 6], input_dim=5, num_classes=4, normalization="batchnorm", weight_scale=0.5,
                            dtype=np.float64, seed=2)  # fmt: skip
    X = rng.randn(200, 5) * 2 + 1
    recompute_bn_statistics(net, X)
    scores = net.loss(X)
    shifted = scale * X + shift
    stale = net.loss(shifted)
    recompute_bn_statistics(net, shifted)
    adapted = net.loss(shifted)
    if scale > 0:
        # the only difference left is eps / a**2 against eps, relative to the features' variance
        bound = 4 * EPS / scale**2 / net.bn_params[0]["running_var"].min()
        assert np.max(np.abs(adapted - scores)) <= bound * np.max(np.abs(scores)) + 1e-12
    else:  # a negative scale flips every first-layer feature: the norm's output is -x_hat
        a1 = X @ net.params["W1"] + net.params["b1"]
        flipped = -(a1 - a1.mean(0)) / np.sqrt(a1.var(0) + EPS / scale**2)
        first = net.bn_params[0]
        a1_shifted = shifted @ net.params["W1"] + net.params["b1"]
        x_hat = (a1_shifted - first["running_mean"]) / np.sqrt(first["running_var"] + EPS)
        np.testing.assert_allclose(x_hat, flipped, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(stale - scores)) > 0.1  # with the stored statistics the shift is not undone


def test_precise_bn_checks_use_population_statistics_and_leave_training_as_it_was():
    from bnlab import Solver

    rng = np.random.RandomState(6)
    X, y = rng.randn(120, 10), rng.randint(3, size=120)
    data = {"X_train": X[:80], "y_train": y[:80], "X_val": X[80:], "y_val": y[80:]}
    solvers = []
    for precise in (False, True):
        net = FullyConnectedNet([12, 8], input_dim=10, num_classes=3, normalization="batchnorm", dtype=np.float64,
                                seed=0)  # fmt: skip
        solver = Solver(net, data, update_rule="adam", batch_size=8, num_epochs=3, rng=np.random.RandomState(1),
                        precise_bn=precise)  # fmt: skip
        solver.train()
        solvers.append(solver)
    plain, precise = solvers
    assert precise.loss_history == plain.loss_history  # the updates are the same
    # the best model keeps the precise statistics: those of its own inputs over the training set
    kept = [dict(p) for p in precise.model.bn_params]
    recompute_bn_statistics(precise.model, data["X_train"])
    for before, after in zip(kept, precise.model.bn_params, strict=True):
        np.testing.assert_array_equal(before["running_mean"], after["running_mean"])
        np.testing.assert_array_equal(before["running_var"], after["running_var"])
    assert precise.best_val_acc == precise.check_accuracy(data["X_val"], data["y_val"])
