"""Scale invariance of the weights below a batch norm (issue 31: van Laarhoven 2017, Hoffer et al.
2018), exact where the theory is: with eps made negligible (1e-12), the loss does not depend on the
scale of a weight matrix feeding a batch norm, so its gradient is orthogonal to it and scales as
1/||W||, and plain SGD without weight decay only grows its norm, by exactly eta^2 ||g||^2 a step."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from bnlab import ConvNet, FullyConnectedNet, Solver
from bnlab.figures import plot_experiment
from bnlab.figures.groups import finished_runs, run_groups
from bnlab.figures.kinds import angular_equilibrium
from bnlab.lab.executors import make_executor
from bnlab.lab.runner import run_experiment
from bnlab.nn.probes import Recorder
from bnlab.results import load_experiment
from bnlab.spec.experiment import experiment_from_text

EPS = 1e-12  # batch norm's eps, made negligible: the invariance is exact but for eps


def tiny_eps(net) -> None:
    for bn_param in net.bn_params:
        bn_param["eps"] = EPS


def fc_net(seed: int = 0) -> FullyConnectedNet:
    net = FullyConnectedNet([9, 7, 6], input_dim=5, num_classes=4, normalization="batchnorm", weight_scale=0.3,
                            dtype=np.float64, seed=seed)  # fmt: skip
    tiny_eps(net)
    return net


def conv_net(seed: int = 0) -> ConvNet:
    net = ConvNet([3, 4], input_dim=(2, 8, 8), num_classes=4, hidden_dims=[6], normalization="batchnorm",
                  dtype=np.float64, seed=seed)  # fmt: skip
    tiny_eps(net)
    return net


def feeding_a_norm(net) -> list[str]:
    """The weight matrices whose output goes into a batch norm: every layer but the output one."""
    return [f"W{i}" for i in range(1, net.num_layers)]


@pytest.mark.parametrize("make, shape", [(fc_net, (10, 5)), (conv_net, (6, 2, 8, 8))], ids=["fc", "conv"])
def test_the_gradient_of_a_weight_feeding_batch_norm_is_orthogonal_to_it_and_scales_as_one_over_its_norm(make, shape):
    rng = np.random.RandomState(1)
    X, y = rng.randn(*shape), rng.randint(4, size=shape[0])
    net = make()
    _, grads = net.loss(X, y)
    for name in feeding_a_norm(net):
        w, g = net.params[name], grads[name]
        cosine = np.sum(w * g) / (np.linalg.norm(w) * np.linalg.norm(g))
        assert abs(cosine) < 1e-9, (name, cosine)
    last = f"W{net.num_layers}"  # the output layer feeds the softmax, not a norm: no such identity
    assert (
        abs(np.sum(net.params[last] * grads[last])) / (np.linalg.norm(net.params[last]) * np.linalg.norm(grads[last]))
        > 1e-3
    )
    for name in feeding_a_norm(net):
        scaled = make()
        scaled.params[name] = 2.5 * scaled.params[name]
        _, scaled_grads = scaled.loss(X, y)
        np.testing.assert_allclose(scaled_grads[name], grads[name] / 2.5, rtol=1e-7, atol=1e-14)


def test_plain_sgd_grows_the_norm_by_eta_squared_times_the_squared_gradient_at_every_step():
    """||W_{t+1}||^2 = ||W_t||^2 + eta^2 ||g_t||^2 for every weight feeding a batch norm, 100 steps
    of SGD without weight decay (the cross term -2 eta <W, g> vanishes with the orthogonality)."""
    rng = np.random.RandomState(2)
    X, y = rng.randn(200, 5), rng.randint(4, size=200)
    net, eta = fc_net(), 0.5
    solver = Solver(net, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="sgd",
                    optim_config={"learning_rate": eta}, batch_size=20, rng=np.random.RandomState(3))  # fmt: skip
    worst = 0.0
    for _ in range(100):
        before = {name: net.params[name].copy() for name in feeding_a_norm(net)}
        batch_rng_state = solver.rng.get_state()
        batch = solver.rng.choice(len(X), solver.batch_size)
        solver.rng.set_state(batch_rng_state)  # the step draws the same batch
        _, grads = net.loss(X[batch], y[batch])
        grads = {name: grads[name].copy() for name in before}
        solver._step()
        for name, w in before.items():
            expected = np.sum(w * w) + eta**2 * np.sum(grads[name] ** 2)
            worst = max(worst, abs(np.sum(net.params[name] ** 2) - expected) / expected)
    assert worst < 1e-10
    assert all(np.sum(net.params[n] ** 2) > np.sum(fc_net().params[n] ** 2) for n in feeding_a_norm(net))


class _Angles:
    """A recorder (the Solver's hook) of every update's angle for W1, through bnlab's own Recorder."""

    def __init__(self) -> None:
        self.recorder = Recorder(statistics=["update_angle", "effective_lr", "weight_norm"], every=1)

    def due(self, iteration: int) -> bool:
        return True

    def record(self, solver, iteration, X, y) -> None:
        self.recorder.record(solver, iteration, X, y)

    def of(self, statistic: str, layer: int = 1) -> np.ndarray:
        return np.array([v for _, lay, s, v in self.recorder.rows if s == statistic and lay == layer])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_settles_the_angular_update_at_its_equilibrium(momentum):
    """Wan et al. 2021 (spherical motion dynamics): for weights feeding a batch norm, SGD with
    learning rate eta, weight decay lambda (the L2 term's gradient) and momentum alpha settles at
    an angular update of sqrt(2 eta lambda / (1 + alpha)) per step, whatever the data. Measured:
    the root mean square of W1's recorded angles over the last 1,000 of 4,000 steps, within 5%;
    the effective learning rate is eta / ||W1||^2 at every step."""
    rng = np.random.RandomState(0)
    data = {"X_train": rng.randn(500, 20), "y_train": rng.randint(10, size=500), "X_val": rng.randn(50, 20),
            "y_val": rng.randint(10, size=50)}  # fmt: skip
    net = FullyConnectedNet([30, 30], input_dim=20, normalization="batchnorm", reg=1e-2, weight_scale=0.1,
                            dtype=np.float64, seed=1)  # fmt: skip
    eta = 0.05 if momentum == 0 else 0.005  # the same effective rate eta / (1 - alpha)
    rule = "sgd" if momentum == 0 else "sgd_momentum"
    config = {"learning_rate": eta} | ({"momentum": momentum} if momentum else {})
    angles = _Angles()
    solver = Solver(net, data, update_rule=rule, optim_config=config, batch_size=50, num_epochs=400,
                    num_train_samples=50, rng=np.random.RandomState(2), recorder=angles)  # fmt: skip
    solver.train()
    measured = np.sqrt(np.mean(angles.of("update_angle")[-1000:] ** 2))
    predicted = np.sqrt(2 * eta * 1e-2 / (1 + momentum))
    assert abs(measured / predicted - 1) < 0.05, (measured, predicted)
    np.testing.assert_allclose(angles.of("effective_lr"), eta / angles.of("weight_norm") ** 2, rtol=1e-12)


def test_weight_decay_is_an_exponentially_growing_learning_rate():
    """Li & Arora 2020: when every trained parameter is scale-invariant (here the weights feeding
    batch norm; biases, gammas, betas and the output layer held fixed), gradient descent with weight
    decay, w_{t+1} = (1 - eta lambda) w_t - eta grad L(w_t), is gradient descent without it at the
    rate eta_t = eta (1 - eta lambda)^(-2t-1), on w~_t = w_t / (1 - eta lambda)^t. In float64, 60
    steps: the same losses and the same directions, to 1e-9."""
    rng = np.random.RandomState(1)
    X, y = rng.randn(40, 5), rng.randint(4, size=40)
    eta, lam = 0.1, 0.05
    decayed, grown = fc_net(), fc_net()
    trained = feeding_a_norm(decayed)
    for t in range(60):
        loss_decayed, grads = decayed.loss(X, y)
        for name in trained:
            decayed.params[name] = (1 - eta * lam) * decayed.params[name] - eta * grads[name]
        loss_grown, grads = grown.loss(X, y)
        for name in trained:
            grown.params[name] = grown.params[name] - eta * (1 - eta * lam) ** (-2 * t - 1) * grads[name]
        assert loss_decayed == pytest.approx(loss_grown, rel=1e-9), t
    for name in trained:  # relative to the matrix's norm: an entry near 0 carries the others' rounding
        difference = decayed.params[name] / (1 - eta * lam) ** 60 - grown.params[name]
        assert np.linalg.norm(difference) < 1e-9 * np.linalg.norm(grown.params[name]), name
    assert np.linalg.norm(grown.params["W1"]) > 1.3 * np.linalg.norm(decayed.params["W1"])  # (1 - eta lam)^-60: 1.35


def test_the_solvers_lr_growth_is_weight_decay_on_the_scale_invariant_weights():
    """The same theorem through the Solver, every parameter trained: weight decay (reg, the output
    layer left out with reg_output) at rate eta, against lr_growth (1 - eta lambda)^-2 at the same
    rate without it. The weights feeding batch norm agree up to their scale
    (1 - eta lambda)^t, everything else (output layer, biases, gammas, betas) to rounding, the
    train-mode scores too. Float64, 50 updates."""
    rng = np.random.RandomState(3)
    data = {"X_train": rng.randn(60, 5), "y_train": rng.randint(4, size=60),
            "X_val": rng.randn(30, 5), "y_val": rng.randint(4, size=30)}  # fmt: skip
    eta, lam, shrink = 0.1, 0.05, 1 - 0.1 * 0.05
    nets = {}
    for name, reg, growth in (("decayed", lam, 1.0), ("grown", 0.0, shrink**-2)):
        net = fc_net()
        net.reg, net.reg_output = reg, False
        solver = Solver(net, data, update_rule="sgd", optim_config={"learning_rate": eta}, lr_growth=growth,
                        batch_size=20, rng=np.random.RandomState(4))  # fmt: skip
        for _ in range(50):  # train() would end on the best parameters; these are the last
            solver.loss_history.append(solver._step())
        nets[name] = net
    decayed, grown = nets["decayed"], nets["grown"]
    invariant = feeding_a_norm(decayed)
    assert decayed.hidden_weights() == invariant
    for name, value in grown.params.items():
        expected = decayed.params[name] / shrink**50 if name in invariant else decayed.params[name]
        # + 1e-12: the biases before a batch norm get a zero gradient but for rounding (~1e-17)
        assert np.linalg.norm(value - expected) < 1e-9 * np.linalg.norm(value) + 1e-12, name
    assert np.linalg.norm(grown.params["W1"]) > 1.2 * np.linalg.norm(decayed.params["W1"])  # shrink^-50: 1.28
    # in train mode; test mode's running averages mix the scales of past steps, so they differ
    np.testing.assert_allclose(grown.batch_statistics_scores(data["X_val"]),
                               decayed.batch_statistics_scores(data["X_val"]), rtol=1e-8)  # fmt: skip


def test_lr_growth_needs_plain_sgd_and_leaves_the_output_layer_at_its_rate():
    net = fc_net()
    data = {
        "X_train": np.zeros((4, 5)),
        "y_train": np.zeros(4, int),
        "X_val": np.zeros((4, 5)),
        "y_val": np.zeros(4, int),
    }
    with pytest.raises(ValueError, match="lr_growth grows the rate of plain SGD"):
        Solver(net, data, update_rule="adam", lr_growth=1.01)
    solver = Solver(net, data, update_rule="sgd", optim_config={"learning_rate": 0.1}, lr_growth=2.0)
    assert solver.rate_of("W1", 4) == pytest.approx(0.1 * 2.0**3.5, rel=1e-15)
    assert solver.rate_of(f"W{net.num_layers}", 4) == 0.1 and solver.rate_of("gamma1", 4) == 0.1


ANGULAR_SPEC = """
name: angular
data: {num_train: 100, num_val: 50, num_test: 0}
model: {hidden_dims: [16, 16], normalization: batchnorm, reg: 0.05}
solver: {update_rule: sgd, optim_config: {learning_rate: 0.05}, batch_size: 25, num_epochs: 3}
seeds: 1
sweep:
  zip: {solver.update_rule: [sgd, sgd_momentum], solver.optim_config.learning_rate: [0.05, 0.005]}
record: {statistics: [update_angle, effective_lr], every: 2}
plots: [{kind: angular}]
"""


def test_the_angular_figure_draws_the_recorded_angles_beside_their_equilibrium(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    run_experiment(experiment_from_text(ANGULAR_SPEC, "angular.yaml"), tmp_path, make_executor(1))
    written = plot_experiment(tmp_path / "angular")
    assert [path.name for path in written] == ["angular.png"] and written[0].stat().st_size > 10_000
    results = load_experiment(tmp_path / "angular")
    groups = run_groups(results, finished_runs(results), results.swept_keys)
    equilibria = [angular_equilibrium(results, group) for group in groups]
    assert equilibria == pytest.approx([np.sqrt(2 * 0.05 * 0.05), np.sqrt(2 * 0.005 * 0.05 / 1.9)], rel=1e-12)
