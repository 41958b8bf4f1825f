"""Residual nets (bnlab.nn.residual), out_std, depth at initialization, and their specs, claims and
figure: forward passes against the formulas written out here, out_std against the layers' outputs
computed here, Yang et al.'s gradient explosion factor measured by bnlab's recorder."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bnlab.claims import metric_values
from bnlab.errors import SpecError
from bnlab.figures import plot_experiment
from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.lab.train import build_model
from bnlab.nn.conv import conv_forward_naive
from bnlab.nn.nets import FullyConnectedNet
from bnlab.nn.probes import Recorder, growth_factor
from bnlab.nn.residual import ResidualConvNet, ResidualMLP
from bnlab.nn.solver import Solver
from bnlab.spec.experiment import experiment_from_text

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
EPS = 1e-5


def bn(x):
    return (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + EPS)


def ln(x):
    return (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + EPS)


def relu(x):
    return np.maximum(x, 0)


def cross_entropy(scores, y):
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean()


def randomize(model, rng):
    """Every gamma, beta and alpha moved off its initial value, so that none of them is trivially 1 or 0."""
    for name, value in model.params.items():
        if name.startswith(("gamma", "beta", "alpha", "b")):
            value[...] = rng.uniform(0.5, 1.5, value.shape) if name.startswith("gamma") else rng.randn(*value.shape)


def run_forward(model, X, y):
    model.layer_outputs = {}
    loss, _ = model.loss(X, y)
    return loss, model.layer_outputs


# --- forward passes written out ------------------------------------------------------------


def test_pre_activation_mlp_with_batch_norm_and_skipinit_is_the_formula():
    rng = np.random.RandomState(0)
    X, y = rng.randn(10, 5), rng.randint(3, size=10)
    model = ResidualMLP([4, 6, 6], input_dim=5, num_classes=3, residual="pre", skipinit=True,
                        normalization="batchnorm", dtype=np.float64, rng=rng)  # fmt: skip
    randomize(model, rng)
    p = model.params
    assert set(p) >= {"W1", "W8", "P4", "alpha3", "alpha5", "alpha7", "gamma1", "gamma8"} and "P2" not in p
    h = bn(X @ p["W1"] + p["b1"]) * p["gamma1"] + p["beta1"]
    streams = {}
    for k in (1, 2, 3):
        i, j = 2 * k, 2 * k + 1
        a = relu(bn(h) * p[f"gamma{i}"] + p[f"beta{i}"]) @ p[f"W{i}"] + p[f"b{i}"]
        r = relu(bn(a) * p[f"gamma{j}"] + p[f"beta{j}"]) @ p[f"W{j}"] + p[f"b{j}"]
        shortcut = h @ p[f"P{i}"] if f"P{i}" in p else h
        h = shortcut + p[f"alpha{j}"] * r
        streams[k] = h
    scores = relu(bn(h) * p["gamma8"] + p["beta8"]) @ p["W8"] + p["b8"]
    loss, outputs = run_forward(model, X, y)
    assert loss == pytest.approx(cross_entropy(scores, y), rel=1e-12)
    for k in (1, 2, 3):
        np.testing.assert_allclose(outputs[k], streams[k], rtol=1e-12, atol=1e-12)


def test_post_mlp_with_layer_norm_is_he_et_al_2015s_block():
    rng = np.random.RandomState(1)
    X, y = rng.randn(7, 5), rng.randint(3, size=7)
    model = ResidualMLP([6, 6], input_dim=5, num_classes=3, residual="post", normalization="layernorm",
                        dtype=np.float64, rng=rng)  # fmt: skip
    randomize(model, rng)
    p = model.params
    h = relu(ln(X @ p["W1"] + p["b1"]) * p["gamma1"] + p["beta1"])
    for k in (1, 2):
        i, j = 2 * k, 2 * k + 1
        a = relu(ln(h @ p[f"W{i}"] + p[f"b{i}"]) * p[f"gamma{i}"] + p[f"beta{i}"])
        r = ln(a @ p[f"W{j}"] + p[f"b{j}"]) * p[f"gamma{j}"] + p[f"beta{j}"]
        h = relu(h + r)
    scores = h @ p["W6"] + p["b6"]
    assert "gamma6" not in p  # post: no norm before the output layer
    assert run_forward(model, X, y)[0] == pytest.approx(cross_entropy(scores, y), rel=1e-12)


def avg_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def test_conv_net_pools_projects_and_averages_as_documented():
    rng = np.random.RandomState(2)
    X, y = rng.randn(3, 2, 8, 8), rng.randint(4, size=3)
    model = ResidualConvNet([3, 5], input_dim=(2, 8, 8), num_classes=4, residual="pre", skipinit=True,
                            dtype=np.float64, rng=rng)  # fmt: skip
    randomize(model, rng)
    p, same = model.params, {"stride": 1, "pad": 1}

    def conv(x, i):
        return conv_forward_naive(x, p[f"W{i}"], p[f"b{i}"], same)[0]

    h = conv(X, 1)
    shapes = {}
    for k in (1, 2):
        i, j = 2 * k, 2 * k + 1
        h = avg_pool(h)
        shortcut = np.einsum("nchw,fc->nfhw", h, p[f"P{i}"][:, :, 0, 0]) if f"P{i}" in p else h
        h = shortcut + p[f"alpha{j}"] * conv(relu(conv(relu(h), i)), j)
        shapes[k] = h.shape
    scores = relu(h).mean(axis=(2, 3)) @ p["W6"] + p["b6"]
    loss, outputs = run_forward(model, X, y)
    assert shapes == {1: (3, 3, 4, 4), 2: (3, 5, 2, 2)} and p["P4"].shape == (5, 3, 1, 1)
    assert loss == pytest.approx(cross_entropy(scores, y), rel=1e-10)
    np.testing.assert_allclose(outputs[2], h, rtol=1e-10, atol=1e-12)


def test_skipinit_starts_every_block_as_the_identity():
    rng = np.random.RandomState(3)
    X, y = rng.randn(6, 5), rng.randint(3, size=6)
    model = ResidualMLP([4, 4, 4], input_dim=5, num_classes=3, skipinit=True, dtype=np.float64, rng=rng)
    assert all(model.params[f"alpha{j}"].tolist() == [0.0] for j in (3, 5, 7))
    _, outputs = run_forward(model, X, y)
    stem = X @ model.params["W1"] + model.params["b1"]
    for k in (1, 2, 3):
        np.testing.assert_array_equal(outputs[k], stem)
    _, grads = model.loss(X, y)
    assert np.all(grads["W2"] == 0) and np.any(grads["alpha3"] != 0)  # only alpha moves the branch at first


@pytest.mark.parametrize("bad, message", [
    (dict(residual="mid"), "unknown residual form"),
    (dict(hidden_dims=[]), "at least one block"),
    (dict(normalization="groupnorm", num_groups=3), "must divide"),
])  # fmt: skip
def test_bad_residual_options_are_refused(bad, message):
    options = {"hidden_dims": [4, 4], "input_dim": 3, **bad}
    with pytest.raises(ValueError, match=message):
        ResidualMLP(**options)


def test_conv_net_needs_sizes_the_poolings_divide():
    with pytest.raises(ValueError, match="divisible by 8"):
        ResidualConvNet([4, 4, 4], input_dim=(3, 12, 12))


# --- out_std and the depth statistics ------------------------------------------------------


def record_first_iteration(model, X, y, statistics):
    """bnlab's recorder at iteration 1 of a Solver with batches of len(X) samples; returns
    {(layer, statistic): value} and the minibatch's rows of X."""
    data = {"X_train": X, "y_train": y, "X_val": X[:2], "y_val": y[:2]}
    recorder = Recorder(statistics, every=1000)
    rng = np.random.RandomState(0)
    batch = copy.deepcopy(rng).choice(len(X), len(X))  # what the Solver draws first (with replacement)
    solver = Solver(model, data, update_rule="sgd", optim_config={"learning_rate": 1e-3}, batch_size=len(X),
                    num_epochs=1, num_train_samples=2, rng=rng, recorder=recorder)  # fmt: skip
    solver.train()
    values = {(layer, statistic): value for iteration, layer, statistic, value in recorder.rows if iteration == 1}
    return values, X[batch]


def test_out_std_is_the_std_of_each_layers_output():
    rng = np.random.RandomState(4)
    X, y = rng.randn(12, 6), rng.randint(3, size=12)
    plain = FullyConnectedNet([5, 4], input_dim=6, num_classes=3, weight_scale=0.5, dtype=np.float64, rng=rng)
    p = copy.deepcopy(plain.params)
    values, batch = record_first_iteration(plain, X, y, ["out_std"])
    h1 = relu(batch @ p["W1"] + p["b1"])
    h2 = relu(h1 @ p["W2"] + p["b2"])
    assert values == {(1, "out_std"): pytest.approx(h1.std()), (2, "out_std"): pytest.approx(h2.std())}

    residual = ResidualMLP([4, 4], input_dim=6, num_classes=3, normalization="batchnorm", dtype=np.float64, rng=rng)
    p = copy.deepcopy(residual.params)
    values, batch = record_first_iteration(residual, X, y, ["out_std"])
    h = bn(batch @ p["W1"] + p["b1"])
    stds = {}
    for k in (1, 2):
        i, j = 2 * k, 2 * k + 1
        h = h + relu(bn(relu(bn(h)) @ p[f"W{i}"] + p[f"b{i}"])) @ p[f"W{j}"] + p[f"b{j}"]
        stds[(k, "out_std")] = pytest.approx(h.std())
    assert values == stds


def test_growth_factor_of_a_geometric_sequence():
    layers = np.arange(2, 10)
    assert growth_factor(layers, 3.0 * 1.5 ** (20 - layers)) == pytest.approx(1.5)
    assert growth_factor(layers, np.full(8, 7.0)) == pytest.approx(1.0)


def measured_factor(normalization, seed, width=256, depth=16):
    """The per-layer growth of ||dW_l||^2 towards the input, layers 2 .. depth - 1, at iteration 1
    of a plain ReLU net with He init (depth weight layers), as bnlab's recorder measures it."""
    rng = np.random.RandomState(seed)
    X, y = rng.randn(width, width), rng.randint(10, size=width)
    model = FullyConnectedNet([width] * (depth - 1), input_dim=width, normalization=normalization,
                              weight_scale="he", dtype=np.float64, rng=rng)  # fmt: skip
    values, _ = record_first_iteration(model, X, y, ["grad_norm"])
    layers = list(range(2, depth))
    return growth_factor(layers, [values[(layer, "grad_norm")] ** 2 for layer in layers])


def test_yang_et_al_gradient_explosion_factor_with_batch_norm():
    """Yang et al. 2019: pi / (pi - 1) = 1.467 per layer; averaged over the 14 inner layers of three
    nets of width and batch 256 (an independent numpy check gives 1.46-1.50 for batch 50-512 and
    width 100-512)."""
    factors = [measured_factor("batchnorm", seed) for seed in range(3)]
    assert abs(np.mean(factors) - math.pi / (math.pi - 1)) < 0.05
    assert max(factors) - min(factors) < 0.05  # each net alone, not only their mean


@pytest.mark.parametrize("normalization", [None, "layernorm"])
def test_no_explosion_without_normalization_or_with_layer_norm(normalization):
    assert measured_factor(normalization, 0, width=128) < 1.1


def test_batch_norm_residual_stream_grows_by_one_per_block_and_doubles_without():
    """De & Smith 2020: Var(x_l) = 1 + l with batch norm (the stem's norm gives 1 at l = 0), and
    2 ** l * Var(x_0) without normalization, in a pre-activation residual MLP with He init."""
    rng = np.random.RandomState(5)
    X, y = rng.randn(256, 64), rng.randint(10, size=256)
    variances = {}
    for normalization in ("batchnorm", None):
        model = ResidualMLP([256] * 8, input_dim=64, normalization=normalization, dtype=np.float64,
                            rng=np.random.RandomState(6))  # fmt: skip
        values, _ = record_first_iteration(model, X, y, ["out_std"])
        variances[normalization] = np.array([values[(k, "out_std")] ** 2 for k in range(1, 9)])
    np.testing.assert_allclose(variances["batchnorm"], 1 + np.arange(1, 9), rtol=0.15)
    ratios = variances[None][1:] / variances[None][:-1]
    assert 1.7 < np.exp(np.log(ratios).mean()) < 2.3


# --- specs, runs, claims and the figure ------------------------------------------------------

BASE = """
name: res
data: {num_train: 20, num_val: 10, num_test: 0}
model: {hidden_dims: [8, 8], weight_scale: he}
solver: {batch_size: 10, num_epochs: 1}
"""


@pytest.mark.parametrize("model, message", [
    ("{hidden_dims: [8], skipinit: true}", "skipinit scales residual branches"),
    ("{hidden_dims: [8], residual: pre, dropout_keep_ratio: 0.5}", "residual nets have no dropout"),
    ("{hidden_dims: [8], residual: post, norm_position: after}", "norm_position"),
    ("{architecture: conv, channels: [4], hidden_dims: [8], residual: pre}", "no fully connected hidden layers"),
    ("{hidden_dims: [8], residual: middle}", "model.residual"),
    ("{hidden_dims: [8], residual: pre, normalization: noisy_batchnorm}", "not available in residual nets"),
    ("{architecture: conv, channels: [4], residual: pre, normalization: rmsnorm}", "residual conv nets take"),
])  # fmt: skip
def test_bad_residual_specs_name_the_key(model, message):
    with pytest.raises(SpecError, match=message):
        experiment_from_text(BASE.replace("{hidden_dims: [8, 8], weight_scale: he}", model), "res.yaml")


def test_an_empty_hidden_dims_means_none_for_the_residual_conv_net_as_for_the_plain_one():
    for residual in ("null", "pre"):
        model = f"{{architecture: conv, channels: [4], hidden_dims: [], residual: {residual}}}"
        experiment = experiment_from_text(BASE.replace("{hidden_dims: [8, 8], weight_scale: he}", model), "res.yaml")
        built = build_model(experiment.runs[0].config["model"], (3, 4, 4), np.random.RandomState(0))
        assert isinstance(built, ResidualConvNet) == (residual == "pre")


def test_residual_keys_are_swept_and_stay_out_of_plain_runs():
    text = BASE + "sweep:\n  - {model.residual: [null]}\n"
    text += "  - {model.residual: [pre, post], model.skipinit: [false, true]}\n"
    experiment = experiment_from_text(text, "res.yaml")
    assert len(experiment.runs) == 5
    plain = experiment.runs[0].config["model"]
    assert "residual" not in plain and "skipinit" not in plain  # plain runs' configs are as before
    kinds = {}
    for run in experiment.runs:
        model = build_model(run.config["model"], (3, 4, 4), np.random.RandomState(0))
        kinds[run.run_id] = (type(model).__name__, getattr(model, "residual", None), getattr(model, "skipinit", None))
    assert sorted(kinds.values(), key=str) == sorted(
        [("FullyConnectedNet", None, None), ("ResidualMLP", "pre", False), ("ResidualMLP", "pre", True),
         ("ResidualMLP", "post", False), ("ResidualMLP", "post", True)], key=str)  # fmt: skip
    conv = experiment_from_text(BASE, "res.yaml", ["model.architecture=conv", "model.channels=[4, 8]",
                                                   "model.hidden_dims=null", "model.residual=post"])  # fmt: skip
    model = build_model(conv.runs[0].config["model"], (3, 32, 32), np.random.RandomState(0))
    assert isinstance(model, ResidualConvNet) and model.residual == "post" and "P4" in model.params


def test_ratio_metric_divides_the_means_of_two_layers():
    probes = pd.DataFrame({
        "run_id": ["r"] * 6, "iteration": [1, 1, 1, 2, 2, 2], "layer": [1, 2, 3, 1, 2, 3],
        "statistic": ["grad_norm"] * 6, "value": [4.0, 2.0, 1.0, 6.0, 2.0, 3.0],
    })  # fmt: skip
    results = SimpleNamespace(runs=pd.DataFrame({"run_id": ["r"]}), probes=probes, path=Path("x"))
    assert metric_values(results, "probe:grad_norm@1/3")["r"] == pytest.approx(5.0 / 2.0)
    assert metric_values(results, "probe:grad_norm@2")["r"] == pytest.approx(2.0)


DEPTH_SPEC = """
name: depth
data: {num_train: 16, num_val: 16, num_test: 0}
model: {hidden_dims: [16, 16, 16, 16], weight_scale: he}
solver: {batch_size: 16, num_epochs: 1, num_train_samples: 16}
seeds: 2
sweep:
  - {model.residual: [null], model.normalization: [null, batchnorm]}
  - model.residual: [pre]
    zip: {model.normalization: [null, batchnorm, null], model.skipinit: [false, false, true]}
record: {statistics: [grad_norm, out_std], every: 1}
plots: [{kind: depth}]
"""


def test_depth_experiment_runs_and_draws(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    experiment = experiment_from_text(DEPTH_SPEC, "depth.yaml")
    run_experiment(experiment, tmp_path, make_executor(1))
    written = plot_experiment(tmp_path / "depth")
    assert [path.name for path in written] == ["depth.png"] and written[0].stat().st_size > 10_000
    with pytest.raises(SpecError, match="needs grad_norm, out_std recorded"):
        experiment_from_text(DEPTH_SPEC, "depth.yaml", ["record.statistics=[p50]"])
