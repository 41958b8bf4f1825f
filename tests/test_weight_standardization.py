"""Weight standardization (issue 31, part 4): Qiao et al. 2019's standardized weights and Brock et
al. 2021's scaled ones, whose activations keep unit variance with depth without any normalization."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, SMOKE, bnlab

from bnlab import ConvNet, FullyConnectedNet
from bnlab.figures import plot_experiment
from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.layers import activation_gain, weight_standardization_forward
from bnlab.results import load_experiment
from bnlab.spec.experiment import experiment_from_text


def test_each_units_weights_are_standardized_over_its_fan_in():
    rng = np.random.RandomState(0)
    for w, axes in ((rng.randn(20, 7) * 3 + 1, 0), (rng.randn(5, 3, 3, 3) * 0.1 - 2, (1, 2, 3))):
        w_hat, _ = weight_standardization_forward(w)
        np.testing.assert_allclose(w_hat.mean(axis=axes), 0, atol=1e-12)
        np.testing.assert_allclose(w_hat.std(axis=axes), 1, rtol=1e-7)  # WS_EPS on the variance
        scaled, _ = weight_standardization_forward(w, gain=1.7)
        fan_in = w.size // (w.shape[1] if w.ndim == 2 else w.shape[0])
        np.testing.assert_allclose(scaled, w_hat * 1.7 / np.sqrt(fan_in), rtol=1e-12)
        np.testing.assert_allclose((scaled**2).sum(axis=axes), 1.7**2, rtol=1e-7)  # each unit's norm: the gain


def test_the_gain_is_one_over_the_activations_standard_deviation():
    assert activation_gain("relu") == pytest.approx(np.sqrt(2) / np.sqrt(1 - 1 / np.pi), rel=1e-14)
    assert activation_gain("relu") == pytest.approx(1.7129, abs=1e-4)
    z = np.random.RandomState(0).randn(4_000_000)
    for name, f in (("tanh", np.tanh), ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
                    ("leaky_relu", lambda v: np.where(v > 0, v, 0.01 * v))):  # fmt: skip
        assert activation_gain(name) == pytest.approx(1 / f(z).std(), rel=2e-3), name  # Monte Carlo's error


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_scaled_ws_keeps_unit_variance_over_20_layers_without_normalization(activation):
    """Every hidden layer's pre-activation has variance within 10% of 1 at initialization, for
    inputs of unit variance."""
    X = np.random.RandomState(0).randn(2000, 256)
    net = FullyConnectedNet([256] * 20, input_dim=256, activation=activation, weight_standardization="scaled",
                            weight_scale="he", dtype=np.float64, seed=1)  # fmt: skip
    net.activation_inputs = {}
    net.loss(X)
    variances = [net.activation_inputs[i].var() for i in range(1, 21)]
    assert all(abs(v - 1) < 0.1 for v in variances), np.round(variances, 3)


def test_weight_standardization_combines_with_a_normalization_in_both_nets():
    rng = np.random.RandomState(0)
    net = ConvNet([4, 8], input_dim=(3, 8, 8), normalization="groupnorm", num_groups=2,
                  weight_standardization="standard", dtype=np.float64, seed=0)  # fmt: skip
    loss, grads = net.loss(rng.randn(2, 3, 8, 8), np.array([1, 2]))
    assert np.isfinite(loss) and grads["W1"].shape == net.params["W1"].shape
    # the loss ignores each filter's mean and (but for WS_EPS) its scale: its gradient is orthogonal to both
    w, g = net.params["W1"], grads["W1"]
    centred = w - w.mean(axis=(1, 2, 3), keepdims=True)
    norms = np.sqrt((g * g).sum(axis=(1, 2, 3)))
    cosines = (g * centred).sum(axis=(1, 2, 3)) / (norms * np.sqrt((centred * centred).sum(axis=(1, 2, 3))))
    assert np.abs(cosines).max() < 1e-7
    assert np.abs(g.sum(axis=(1, 2, 3)) / norms).max() < 1e-12


def test_weight_standardization_is_a_spec_key(tmp_path):
    spec = tmp_path / "ws.yaml"
    spec.write_text(SMOKE.read_text())
    result = bnlab("plan", spec, "--set", "model.weight_standardization=scaled")
    assert result.exit_code == 0, result.output
    result = bnlab("plan", spec, "--set", "model.weight_standardization=yes_please")
    assert result.exit_code == 2 and "weight_standardization" in result.stderr and "'scaled'" in result.stderr


WS_DEPTH_SPEC = """
name: ws_depth
data: {num_train: 32, num_val: 16, num_test: 0, preprocess: standardize}
model: {hidden_dims: [32, 32, 32, 32], weight_scale: 2.0e-2}
solver: {batch_size: 32, num_epochs: 1, num_train_samples: 32}
seeds: 1
sweep:
  zip: {model.normalization: [null, null], model.weight_standardization: [null, scaled]}
record: {statistics: [grad_norm, out_std], every: 1}
plots: [{kind: depth}]
"""


def test_the_depth_figure_puts_brock_et_als_constant_beside_scaled_ws(tmp_path, monkeypatch):
    """The stream's variance at initialization: constant with scaled WS (the prediction, dotted),
    vanishing layer by layer without it at the notes' small initial scale."""
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    run_experiment(experiment_from_text(WS_DEPTH_SPEC, "ws_depth.yaml"), tmp_path, make_executor(1))
    assert [p.name for p in plot_experiment(tmp_path / "ws_depth")] == ["depth.png"]
    probes = load_experiment(tmp_path / "ws_depth").probes
    out_std = probes[(probes["statistic"] == "out_std") & (probes["iteration"] == 1)]
    scaled = out_std[out_std["run_id"].str.contains("scaled")].sort_values("layer")["value"].to_numpy()
    plain = out_std[~out_std["run_id"].str.contains("scaled")].sort_values("layer")["value"].to_numpy()
    assert scaled.max() / scaled.min() < 1.5 and plain[-1] < 1e-3 * plain[0]


def test_residual_nets_refuse_it_in_one_line(tmp_path):
    spec = tmp_path / "ws.yaml"
    spec.write_text(SMOKE.read_text())
    result = bnlab("plan", spec, "--set", "model.residual=pre", "--set", "model.weight_standardization=scaled")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "weight_standardization is not available in residual nets; remove it, or remove residual" in result.stderr
