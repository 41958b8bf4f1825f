"""bnlab.nn.probes: every statistic against a computation written out here on a tiny float64 net,
recording that leaves training untouched, and the tidy table a run writes."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.nn.nets import ConvNet, FullyConnectedNet
from bnlab.nn.probes import STATISTICS, Recorder, activation_statistics, saturated_fraction
from bnlab.nn.solver import Solver
from bnlab.results import load_experiment
from bnlab.spec.experiment import experiment_from_text

LR = 0.05
N, D, H, C = 8, 6, [5, 4], 3


def tiny(normalization=None, keep=1.0, seed=0, num_train=40):
    """A float64 net (6 -> 5 -> 4 -> 3) and its data; the net and the minibatches share one RandomState."""
    data_rng = np.random.RandomState(100 + seed)
    X, y = data_rng.randn(num_train, D), data_rng.randint(C, size=num_train)
    rng = np.random.RandomState(seed)
    model = FullyConnectedNet(
        H, input_dim=D, num_classes=C, normalization=normalization, dropout_keep_ratio=keep,
        weight_scale=0.5, dtype=np.float64, rng=rng,
    )  # fmt: skip
    return model, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, rng


def record_first_step(model, data, rng, update_rule="sgd", statistics=STATISTICS, steps=(0.5, 1.0, 2.0)):
    """Record iteration 1 only; returns {(layer, statistic): value}, the minibatch and the
    parameters before training."""
    params = {k: v.copy() for k, v in model.params.items()}
    recorder = Recorder(statistics, every=1000, landscape_steps=steps)
    batch = copy.deepcopy(rng).choice(len(data["X_train"]), 8)  # what the Solver draws first
    solver = Solver(model, data, update_rule=update_rule, optim_config={"learning_rate": LR},
                    batch_size=8, num_epochs=1, rng=rng, recorder=recorder)  # fmt: skip
    solver.train()
    assert {row[0] for row in recorder.rows} == {1}
    values = {(layer, stat): value for _, layer, stat, value in recorder.rows}
    return values, data["X_train"][batch], data["y_train"][batch], params


# --- the net written out by hand: affine - relu - affine - relu - affine - softmax ------------


def hand_forward(p, X):
    a1 = X @ p["W1"] + p["b1"]
    a2 = np.maximum(a1, 0) @ p["W2"] + p["b2"]
    scores = np.maximum(a2, 0) @ p["W3"] + p["b3"]
    return a1, a2, scores


def hand_loss(p, X, y):
    *_, scores = hand_forward(p, X)
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def hand_grads(p, X, y):
    a1, a2, scores = hand_forward(p, X)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    dscores = probs.copy()
    dscores[np.arange(len(y)), y] -= 1
    dscores /= len(y)
    h1, h2 = np.maximum(a1, 0), np.maximum(a2, 0)
    g = {"W3": h2.T @ dscores, "b3": dscores.sum(0)}
    da2 = (dscores @ p["W3"].T) * (a2 > 0)
    g["W2"], g["b2"] = h1.T @ da2, da2.sum(0)
    da1 = (da2 @ p["W2"].T) * (a1 > 0)
    g["W1"], g["b1"] = X.T @ da1, da1.sum(0)
    return g


def percentile(values, q):
    """Linear interpolation between the order statistics, as numpy's default."""
    s = np.sort(values.ravel())
    pos = q / 100 * (len(s) - 1)
    low = int(math.floor(pos))
    return s[low] + (pos - low) * (s[min(low + 1, len(s) - 1)] - s[low])


def test_activation_statistics_are_those_of_the_nonlinearity_inputs():
    values, X, _, p = record_first_step(*tiny())
    for layer, a in zip((1, 2), hand_forward(p, X)[:2], strict=True):
        assert values[(layer, "mean")] == pytest.approx(a.sum() / a.size, abs=1e-12)
        assert values[(layer, "std")] == pytest.approx(math.sqrt(((a - a.mean()) ** 2).sum() / a.size), abs=1e-12)
        for q in (15, 50, 85):
            assert values[(layer, f"p{q}")] == pytest.approx(percentile(a, q), abs=1e-12)
        assert values[(layer, "saturated")] == pytest.approx(np.count_nonzero(a <= 0) / a.size)


def test_saturation_thresholds_of_each_activation():
    # sigmoid: s (1 - s) < 0.05 * 1/4 beyond |x| = logit(s*), s* the smaller root of s - s^2 = 0.0125
    s_star = (1 - math.sqrt(1 - 4 * 0.0125)) / 2
    edge = math.log((1 - s_star) / s_star)
    x = np.array([0.0, edge - 1e-3, -(edge - 1e-3), edge + 1e-3, -(edge + 1e-3), 50.0, -50.0, 1.0])
    assert saturated_fraction(x, "sigmoid") == 4 / 8
    # tanh: 1 - tanh^2 < 0.05 beyond |x| = atanh(sqrt(0.95))
    edge = math.atanh(math.sqrt(0.95))
    x = np.array([0.0, edge - 1e-3, edge + 1e-3, -(edge + 1e-3), 20.0])
    assert saturated_fraction(x, "tanh") == 3 / 5
    x = np.array([-2.0, -0.0, 0.0, 1e-9, 3.0])
    assert saturated_fraction(x, "relu") == 3 / 5  # output 0: input <= 0
    assert saturated_fraction(x, "leaky_relu", negative_slope=0.01) == 3 / 5  # slope 0.01 < 5% of 1
    assert saturated_fraction(x, "leaky_relu", negative_slope=0.2) == 0.0  # never flat
    with pytest.raises(ValueError, match="no saturation rule"):
        saturated_fraction(x, "softplus")
    stats = activation_statistics(np.array([[1.0, 2.0], [3.0, 4.0]]), "relu")
    assert stats == {"mean": 2.5, "std": math.sqrt(1.25), "p15": 1.45, "p50": 2.5, "p85": 3.55, "saturated": 0.0}


def test_norms_and_the_update_ratio_of_sgd_and_adam():
    values, X, y, p = record_first_step(*tiny())
    g = hand_grads(p, X, y)
    for layer in (1, 2, 3):
        w, dw = p[f"W{layer}"], g[f"W{layer}"]
        assert values[(layer, "grad_norm")] == pytest.approx(math.sqrt((dw**2).sum()), rel=1e-9)
        assert values[(layer, "weight_norm")] == pytest.approx(math.sqrt((w**2).sum()), rel=1e-12)
        # SGD moves W by -lr dW
        assert values[(layer, "update_ratio")] == pytest.approx(LR * math.sqrt((dw**2).sum() / (w**2).sum()), rel=1e-9)
    values, X, y, p = record_first_step(*tiny(), update_rule="adam")
    g = hand_grads(p, X, y)
    for layer in (1, 2, 3):
        # Adam's first step is lr * g / (|g| + eps): lr per entry where g is far from 0
        w, dw = p[f"W{layer}"], g[f"W{layer}"]
        step = LR * dw / (np.abs(dw) + 1e-8)
        assert values[(layer, "update_ratio")] == pytest.approx(math.sqrt((step**2).sum() / (w**2).sum()), rel=1e-6)


def test_ics_is_the_gradient_change_after_the_lower_layers_step():
    values, X, y, p = record_first_step(*tiny())
    g = hand_grads(p, X, y)
    assert (1, "ics_l2") not in values  # nothing below the first layer
    for layer in (2, 3):
        shifted = dict(p)
        for below in range(1, layer):  # layers below take this iteration's SGD step; the rest stay
            shifted[f"W{below}"] = p[f"W{below}"] - LR * g[f"W{below}"]
            shifted[f"b{below}"] = p[f"b{below}"] - LR * g[f"b{below}"]
        g_after = hand_grads(shifted, X, y)[f"W{layer}"]
        before = g[f"W{layer}"]
        assert values[(layer, "ics_l2")] == pytest.approx(np.linalg.norm(before - g_after), rel=1e-7)
        cos = (before * g_after).sum() / (np.linalg.norm(before) * np.linalg.norm(g_after))
        assert values[(layer, "ics_cos")] == pytest.approx(cos, rel=1e-9)
        assert values[(layer, "ics_l2")] > 0


def test_landscape_along_the_gradient():
    steps = (0.5, 1.0, 2.0)
    values, X, y, p = record_first_step(*tiny(), steps=steps)
    g = hand_grads(p, X, y)
    names = sorted(p)
    flat_g = np.concatenate([g[k].ravel() for k in names])
    losses, changes, betas = [hand_loss(p, X, y)], [], []
    for m in steps:
        moved = {k: p[k] - m * LR * g[k] for k in names}
        losses.append(hand_loss(moved, X, y))
        g_moved = hand_grads(moved, X, y)
        change = np.linalg.norm(np.concatenate([g_moved[k].ravel() for k in names]) - flat_g)
        changes.append(change)
        betas.append(change / (m * LR * np.linalg.norm(flat_g)))
    assert values[(0, "loss_range")] == pytest.approx(max(losses) - min(losses), rel=1e-9)
    assert values[(0, "grad_change")] == pytest.approx(max(changes), rel=1e-9)
    assert values[(0, "beta_smoothness")] == pytest.approx(max(betas), rel=1e-9)


def test_only_the_chosen_statistics_are_recorded_at_the_cadence():
    model, data, rng = tiny()
    recorder = Recorder(["p50", "ics_cos"], every=3)
    Solver(model, data, batch_size=8, num_epochs=2, rng=rng, recorder=recorder).train()  # 10 iterations
    assert {row[0] for row in recorder.rows} == {1, 4, 7, 10}
    assert {row[2] for row in recorder.rows} == {"p50", "ics_cos"}
    assert len(recorder.rows) == 4 * (2 + 2)  # p50 of layers 1, 2; ics_cos of layers 2, 3
    with pytest.raises(ValueError, match="unknown statistic"):
        Recorder(["median"])


@pytest.mark.parametrize(
    "normalization, keep, update_rule",
    [(None, 0.7, "adam"), ("batchnorm", 1.0, "sgd_momentum"), ("noisy_batchnorm", 0.8, "adam")],
)
def test_recording_changes_nothing_in_training(normalization, keep, update_rule):
    """Losses, parameters, running statistics, optimizer state and random streams: bit for bit."""
    solvers = []
    for recorder in (None, Recorder(every=2)):
        model, data, rng = tiny(normalization, keep)
        np.random.seed(7)
        solver = Solver(model, data, update_rule=update_rule, optim_config={"learning_rate": LR},
                        batch_size=8, num_epochs=3, rng=rng, recorder=recorder)  # fmt: skip
        solver.train()
        solvers.append((solver, np.random.rand()))
    (off, global_off), (on, global_on) = solvers
    assert on.recorder.rows
    assert on.loss_history == off.loss_history
    assert on.val_acc_history == off.val_acc_history
    for name in off.model.params:
        np.testing.assert_array_equal(on.model.params[name], off.model.params[name])
    np.testing.assert_array_equal(on._flat, off._flat)
    for key in ("m", "v", "velocity"):
        if key in off.optim_state:
            np.testing.assert_array_equal(on.optim_state[key], off.optim_state[key])
    for a, b in zip(on.model.bn_params, off.model.bn_params, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], np.ndarray):
                np.testing.assert_array_equal(a[key], b[key])
            elif isinstance(a[key], np.random.RandomState):
                assert a[key].randint(2**31) == b[key].randint(2**31)
            else:
                assert a[key] == b[key]
    assert on.rng.randint(2**31) == off.rng.randint(2**31)
    assert global_on == global_off  # numpy's global generator untouched
    assert on.model.activation_inputs is None


# --- a run: the tidy table on disk, histories with and without recording ----------------------

SPEC = """
name: probes
data: {num_train: 100, num_val: 50, num_test: 50}
model: {hidden_dims: [12, 10], weight_scale: 5.0e-2, dropout_keep_ratio: 0.9}
solver: {update_rule: sgd, optim_config: {learning_rate: 1.0e-2}, batch_size: 25, num_epochs: 2}
seeds: [0]
sweep:
  model.normalization: [null, noisy_batchnorm]
record: {every: 3}
"""


def test_a_run_writes_a_tidy_table_and_the_same_history(tmp_path, shared_data):
    on = experiment_from_text(SPEC, "probes.yaml")
    off = experiment_from_text(SPEC, "probes.yaml", ["record=null"])
    assert "record" not in off.runs[0].config and on.runs[0].config["record"]["every"] == 3
    run_experiment(on, tmp_path / "on", make_executor(1))
    run_experiment(off, tmp_path / "off", make_executor(1))
    for run in on.runs:
        for name in ("history.csv", "epochs.csv"):
            assert (tmp_path / "on/probes" / run.run_id / name).read_bytes() == (
                tmp_path / "off/probes" / run.run_id / name
            ).read_bytes()
        assert not (tmp_path / "off/probes" / run.run_id / "probes.csv").exists()
    probes = load_experiment(tmp_path / "on/probes").probes
    assert list(probes.columns) == ["run_id", "iteration", "layer", "statistic", "value"]
    assert probes["iteration"].dtype == np.int64 and probes["layer"].dtype == np.int64
    # 8 iterations recorded at 1, 4, 7; per run and iteration: 7 x 2 hidden-layer statistics (6 of
    # the nonlinearity inputs, out_std), 3 x 3 weight statistics, 2 x 2 ICS (layers 2 and 3) and 3
    # landscape ones
    assert sorted(probes["iteration"].unique()) == [1, 4, 7]
    assert len(probes) == 2 * 3 * (14 + 9 + 4 + 3)
    # a spec's record: {} records all but those added later, which are recorded on request
    later = {"update_angle", "effective_lr", "shift_measured", "shift_predicted"}
    assert set(probes["statistic"]) == set(STATISTICS) - later
    assert set(probes.loc[probes["layer"] == 0, "statistic"]) == {"loss_range", "grad_change", "beta_smoothness"}
    assert not probes.duplicated(["run_id", "iteration", "layer", "statistic"]).any()
    assert load_experiment(tmp_path / "off/probes").probes.empty


# --- conv nets --------------------------------------------------------------------------------


def tiny_convnet():
    rng = np.random.RandomState(3)
    model = ConvNet([3, 4], input_dim=(2, 8, 8), num_classes=3, hidden_dims=[5], normalization="batchnorm",
                    weight_scale="he", dtype=np.float64, rng=rng)  # fmt: skip
    data = {"X_train": rng.randn(24, 2, 8, 8), "y_train": rng.randint(3, size=24),
            "X_val": rng.randn(6, 2, 8, 8), "y_val": rng.randint(3, size=6)}  # fmt: skip
    return model, data, rng


def test_recording_a_conv_net_changes_nothing_and_covers_every_layer():
    solvers = []
    for recorder in (None, Recorder(every=2)):
        model, data, rng = tiny_convnet()
        solver = Solver(model, data, update_rule="adam", batch_size=6, num_epochs=2, rng=rng, recorder=recorder)
        solver.train()
        solvers.append(solver)
    off, on = solvers
    assert on.loss_history == off.loss_history and on.val_acc_history == off.val_acc_history
    for name in off.model.params:
        np.testing.assert_array_equal(on.model.params[name], off.model.params[name])
    for a, b in zip(on.model.bn_params, off.model.bn_params, strict=True):
        np.testing.assert_array_equal(a["running_mean"], b["running_mean"])
        np.testing.assert_array_equal(a["running_var"], b["running_var"])
    layers_of = {}
    for _, layer, statistic, _ in on.recorder.rows:
        layers_of.setdefault(statistic, set()).add(layer)
    assert layers_of["p50"] == {1, 2, 3}  # two conv blocks and the hidden fc layer
    assert layers_of["ics_l2"] == {2, 3, 4} and layers_of["grad_norm"] == {1, 2, 3, 4}


def test_conv_ics_is_the_second_blocks_gradient_change_after_the_first_block_steps():
    """Definition 2.1 by hand for conv layer 2 under plain SGD: step block 1 (W1, b1, gamma1,
    beta1) by -lr * its gradient, recompute dL/dW2 on the same minibatch, compare."""
    model, data, rng = tiny_convnet()
    batch = np.random.RandomState(0).choice(24, 6)  # the Solver's first draw: iteration 1's minibatch
    X, y = data["X_train"][batch], data["y_train"][batch]
    before = copy.deepcopy(model.params)
    _, grads = model.loss(X, y)
    stepped = copy.deepcopy(model)
    for name in ("W1", "b1", "gamma1", "beta1"):
        stepped.params[name] = stepped.params[name] - LR * grads[name]
    _, grads_after = stepped.loss(X, y)
    g, g2 = grads["W2"].ravel(), grads_after["W2"].ravel()
    expected_l2 = np.linalg.norm(g - g2)
    expected_cos = g @ g2 / (np.linalg.norm(g) * np.linalg.norm(g2))

    model.params = copy.deepcopy(before)
    recorder = Recorder(["ics_l2", "ics_cos"], every=100)
    solver = Solver(model, data, update_rule="sgd", optim_config={"learning_rate": LR},
                    batch_size=6, num_epochs=1, rng=np.random.RandomState(0), recorder=recorder)  # fmt: skip
    solver.train()
    recorded = {statistic: value for _, layer, statistic, value in recorder.rows if layer == 2}
    assert math.isclose(recorded["ics_l2"], expected_l2, rel_tol=1e-9)
    assert math.isclose(recorded["ics_cos"], expected_cos, rel_tol=1e-9)
