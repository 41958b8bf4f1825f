"""FullyConnectedNet: gradients against centred differences for every normalization, the
architecture against an independent forward pass, parameter names, dtypes and initialization."""

import math

import numpy as np
import pytest

from bnlab.nn.gradcheck import eval_numerical_gradient, rel_error
from bnlab.nn.nets import ConvNet, FullyConnectedNet

N, D, HIDDEN, C = 6, 15, [20, 30], 10
EPS = 1e-5


def small_net(normalization, reg=0.0, seed=16, **kwargs):
    """The notebooks' gradient-check net in float64, with data drawn from the same RandomState.
    Seed 16 keeps every ReLU input of every configuration below at least 5e-4 away from the kink."""
    rng = np.random.RandomState(seed)
    X, y = rng.randn(N, D), rng.randint(C, size=N)
    model = FullyConnectedNet(
        HIDDEN,
        input_dim=D,
        num_classes=C,
        normalization=normalization,
        reg=reg,
        weight_scale=5e-2,
        dtype=np.float64,
        rng=rng,
        **kwargs,
    )
    return model, X, y


def gradient_errors(model, X, y):
    """name -> (rel_error, numerical gradient, analytic gradient) for every parameter."""
    _, grads = model.loss(X, y)
    assert sorted(grads) == sorted(model.params)
    out = {}
    for name in sorted(grads):
        numerical = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name])
        out[name] = (rel_error(numerical, grads[name]), numerical, grads[name])
    return out


# The numerical gradient carries rounding noise ~ulp(loss) / h ~ 2e-11 per entry; rel_error is taken
# entry by entry, and the smallest entries of dW are ~1e-7 (of db, dgamma, dbeta ~1e-6), hence:
THRESHOLD = {"W": 1e-4, "b": 1e-5, "gamma": 1e-5, "beta": 1e-5}


@pytest.mark.parametrize("reg", [0.0, 3.14])
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm", "groupnorm"])
def test_gradients_match_numerical_gradients(normalization, reg):
    model, X, y = small_net(normalization, reg, num_groups=5)
    assert distance_to_relu_kink(model, X) > 2e-4  # the inputs are well-conditioned
    for name, (error, numerical, analytic) in gradient_errors(model, X, y).items():
        kind = name.rstrip("0123456789")
        if normalization == "batchnorm" and kind == "b" and name != "b3":
            # Batch norm subtracts the batch mean, cancelling the bias before it: zero gradient,
            # and a numerical estimate that is pure rounding noise.
            assert np.abs(analytic).max() < 1e-12, name
            assert np.abs(numerical).max() < 1e-9, name
        else:
            assert error < THRESHOLD[kind], (name, error)


@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_gradients_with_dropout_match_numerical_gradients_for_a_fixed_mask(normalization):
    model, X, y = small_net(normalization, reg=0.5, dropout_keep_ratio=0.6)
    # A seed instead of the model's RandomState: the same mask on every call, so the loss being
    # differentiated numerically is one fixed function.
    model.dropout_param = {"mode": "train", "p": 0.6, "seed": 123}
    for name, (error, numerical, analytic) in gradient_errors(model, X, y).items():
        kind = name.rstrip("0123456789")
        if normalization == "batchnorm" and kind == "b" and name != "b3":
            assert np.abs(analytic).max() < 1e-12 and np.abs(numerical).max() < 1e-9, name
        else:
            assert error < THRESHOLD[kind], (name, error)


# --- architecture --------------------------------------------------------------------------------


def reference_forward(params, X, normalization, num_groups):
    """Scores and the ReLU inputs of {affine - [norm] - relu} x 2 - affine in plain numpy, train
    mode, written independently of bnlab.layers."""
    h, relu_inputs = X, []
    for i in (1, 2):
        a = h @ params[f"W{i}"] + params[f"b{i}"]
        if normalization == "batchnorm":
            a = (a - a.mean(0)) / np.sqrt(a.var(0) + EPS)
        elif normalization == "layernorm":
            a = (a - a.mean(1, keepdims=True)) / np.sqrt(a.var(1, keepdims=True) + EPS)
        elif normalization == "groupnorm":
            g = a.reshape(len(a), num_groups, -1)
            a = ((g - g.mean(2, keepdims=True)) / np.sqrt(g.var(2, keepdims=True) + EPS)).reshape(a.shape)
        if normalization is not None:
            a = params[f"gamma{i}"] * a + params[f"beta{i}"]
        relu_inputs.append(a)
        h = np.maximum(a, 0)
    return h @ params["W3"] + params["b3"], relu_inputs


def reference_loss(params, X, y, normalization, reg, num_groups):
    scores, _ = reference_forward(params, X, normalization, num_groups)
    log_norm = np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1)) + scores.max(1)
    data_loss = np.mean(log_norm - scores[np.arange(len(y)), y])
    return data_loss + 0.5 * reg * sum(np.sum(params[f"W{i}"] ** 2) for i in (1, 2, 3))


def distance_to_relu_kink(model, X):
    """How close the nearest ReLU input is to 0. A step h = 1e-5 in one parameter moves the ReLU
    inputs by ~|x| h / std <= 1e-4 here; one that straddles the kink makes the centred difference
    meaningless."""
    _, relu_inputs = reference_forward(model.params, X, model.normalization, model.bn_params[0].get("num_groups"))
    return min(np.abs(a).min() for a in relu_inputs)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm", "groupnorm"])
def test_loss_equals_an_independent_forward_pass(normalization):
    model, X, y = small_net(normalization, reg=0.7, num_groups=2)
    rng = np.random.RandomState(1)
    for name in model.params:  # non-trivial gammas, betas and biases
        if not name.startswith("W"):
            model.params[name] = model.params[name] + 0.3 * rng.randn(*model.params[name].shape)
    expected = reference_loss(model.params, X, y, normalization, 0.7, 2)
    assert model.loss(X, y)[0] == pytest.approx(expected, rel=1e-12)


ACTIVATION_REFERENCE = {
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.05 * a),  # the net below is built with slope 0.05
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
}


def reference_scores(params, X, activation, normalization, position):
    """Scores and activation inputs of the net with any activation and a norm before or after it,
    in plain numpy (train mode, groups of 2)."""
    h, activation_inputs = X, []
    for i in (1, 2):
        a = h @ params[f"W{i}"] + params[f"b{i}"]

        def norm(v, i=i):
            if normalization == "rmsnorm":
                v = v / np.sqrt((v**2).mean(1, keepdims=True) + EPS)
            elif normalization == "layernorm":
                v = (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + EPS)
            elif normalization in ("batchnorm", "batchrenorm"):  # renorm: r = 1, d = 0 at step 0
                v = (v - v.mean(0)) / np.sqrt(v.var(0) + EPS)
            return params[f"gamma{i}"] * v + params[f"beta{i}"]

        if normalization and position == "before":
            a = norm(a)
        activation_inputs.append(a)
        h = ACTIVATION_REFERENCE[activation](a)
        if normalization and position == "after":
            h = norm(h)
    return h @ params["W3"] + params["b3"], activation_inputs


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm", "rmsnorm", "batchrenorm"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_every_activation_and_norm_position_equals_an_independent_forward_pass(activation, normalization, position):
    model, X, y = small_net(normalization, activation=activation, negative_slope=0.05, norm_position=position)
    rng = np.random.RandomState(2)
    for name in model.params:  # non-trivial gammas, betas and biases
        if not name.startswith("W"):
            model.params[name] = model.params[name] + 0.3 * rng.randn(*model.params[name].shape)
    model.activation_inputs = {}
    expected_scores, expected_inputs = reference_scores(model.params, X, activation, normalization, position)
    model.loss(X, y)
    # the activation's input in both positions: the norm's output before it, the affine output after
    assert sorted(model.activation_inputs) == [1, 2]
    for i in (1, 2):
        np.testing.assert_allclose(model.activation_inputs[i], expected_inputs[i - 1], rtol=1e-12, atol=1e-15)
    model.activation_inputs = None
    if normalization not in ("batchnorm", "batchrenorm"):  # test mode = train mode for the rest
        np.testing.assert_allclose(model.loss(X), expected_scores, rtol=1e-12, atol=1e-15)
    assert model.activation_name == activation and model.norm_position == position


def test_the_net_binds_the_leaky_slope():
    model, X, _ = small_net(None, activation="leaky_relu", negative_slope=0.5)
    x = np.array([[-2.0, 3.0]])
    np.testing.assert_array_equal(model.activation[0](x)[0], [[-1.0, 3.0]])
    np.testing.assert_array_equal(model.activation[1](np.ones((1, 2)), model.activation[0](x)[1]), [[0.5, 1.0]])


def test_batchrenorm_net_passes_its_clipping_options_to_every_layer():
    model = FullyConnectedNet([8, 6], input_dim=4, normalization="batchrenorm", renorm_rmax=2.0, renorm_dmax=1.0,
                              renorm_warmup=7)  # fmt: skip
    assert [(p["rmax"], p["dmax"], p["warmup"]) for p in model.bn_params] == [(2.0, 1.0, 7)] * 2
    assert "rmax" not in FullyConnectedNet([8], input_dim=4, normalization="batchnorm").bn_params[0]


# --- initialization --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight_scale", "expected_std"),
    [("he", math.sqrt(2 / 1000)), ("xavier", math.sqrt(2 / (1000 + 500))), (0.03, 0.03)],
)
def test_initial_weight_standard_deviations(weight_scale, expected_std):
    # He et al. 2015: std sqrt(2 / fan_in); Glorot & Bengio 2010 (normal): sqrt(2 / (fan_in + fan_out)).
    model = FullyConnectedNet([500], input_dim=1000, num_classes=10, weight_scale=weight_scale, dtype=np.float64,
                              seed=3)  # fmt: skip
    w = model.params["W1"]  # 500,000 draws: the sample std is within 0.3% of the true one (5 sigma)
    assert w.std() == pytest.approx(expected_std, rel=5 / math.sqrt(2 * w.size))
    assert abs(w.mean()) < 5 * expected_std / math.sqrt(w.size)
    expected_last = {"he": math.sqrt(2 / 500), "xavier": math.sqrt(2 / 510), 0.03: 0.03}[weight_scale]
    assert model.params["W2"].std() == pytest.approx(expected_last, rel=5 / math.sqrt(2 * 5000))


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm", "groupnorm"])
def test_parameter_names_and_shapes(normalization):
    model = FullyConnectedNet([7, 8, 9], input_dim=12, num_classes=4, normalization=normalization, num_groups=1)
    dims = [12, 7, 8, 9, 4]
    expected = {}
    for i in range(1, 5):
        expected[f"W{i}"] = (dims[i - 1], dims[i])
        expected[f"b{i}"] = (dims[i],)
    if normalization is not None:  # every hidden layer, never the output layer
        for i in range(1, 4):
            expected[f"gamma{i}"] = expected[f"beta{i}"] = (dims[i],)
    assert {name: p.shape for name, p in model.params.items()} == expected
    for name, p in model.params.items():
        if name.startswith("b") and name[1:].isdigit() or name.startswith("beta"):
            assert not p.any()
        elif name.startswith("gamma"):
            assert np.all(p == 1)


def test_batchnorm_net_uses_running_statistics_at_test_time():
    model, X, y = small_net("batchnorm")
    model.loss(X, y)  # one training pass fills the running statistics
    np.testing.assert_allclose(model.bn_params[0]["running_mean"], 0.1 * (X @ model.params["W1"]).mean(0))
    scores = model.loss(X)
    # At test time each example is scored on its own: the batch around it does not matter.
    np.testing.assert_allclose(model.loss(X[:2])[:1], scores[:1], rtol=1e-12)
    np.testing.assert_allclose(model.loss(X[:1]), scores[:1], rtol=1e-12)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([10], normalization="instancenorm")
    with pytest.raises(ValueError, match="activation 'gelu'"):
        FullyConnectedNet([10], activation="gelu")
    with pytest.raises(ValueError, match="norm_position"):
        FullyConnectedNet([10], normalization="batchnorm", norm_position="middle")
    with pytest.raises(ValueError, match="weight_scale"):
        FullyConnectedNet([10], weight_scale="lecun")
    with pytest.raises(ValueError, match="num_groups"):
        FullyConnectedNet([20, 30], normalization="groupnorm", num_groups=4)


# --- dtype and initialization --------------------------------------------------------------------


def test_default_dtype_is_float32_end_to_end():
    rng = np.random.RandomState(2)
    model = FullyConnectedNet([20], input_dim=15, normalization="batchnorm", rng=rng)
    assert all(p.dtype == np.float32 for p in model.params.values())
    X = rng.randn(4, 15).astype(np.float32)
    assert model.loss(X).dtype == np.float32
    _, grads = model.loss(X, rng.randint(10, size=4))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.loss(X.astype(np.float64)).dtype == np.float32  # inputs are cast to the model's dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_come_from_the_global_rng_in_order_when_no_seed_is_given(dtype):
    weight_scale = 3e-2
    np.random.seed(42)
    expected = [weight_scale * np.random.randn(15, 20), weight_scale * np.random.randn(20, 10)]
    np.random.seed(42)
    model = FullyConnectedNet([20], input_dim=15, weight_scale=weight_scale, dtype=dtype, normalization="layernorm")
    np.testing.assert_array_equal(model.params["W1"], expected[0].astype(dtype))
    np.testing.assert_array_equal(model.params["W2"], expected[1].astype(dtype))


def test_seed_and_rng_give_reproducible_weights_and_leave_the_global_rng_alone():
    state = np.random.get_state()
    a = FullyConnectedNet([20], input_dim=15, seed=7)
    b = FullyConnectedNet([20], input_dim=15, rng=np.random.RandomState(7))
    c = FullyConnectedNet([20], input_dim=15, seed=8)
    after = np.random.get_state()
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


# --- ConvNet -------------------------------------------------------------------------------------


def small_convnet(normalization, hidden_dims=(5,), reg=0.0, **kwargs):
    rng = np.random.RandomState(3)
    X, y = rng.randn(6, 3, 8, 6), rng.randint(4, size=6)
    model = ConvNet(
        [2, 4],
        input_dim=(3, 8, 6),
        num_classes=4,
        hidden_dims=list(hidden_dims),
        normalization=normalization,
        num_groups=2 if hidden_dims == () else 1,
        reg=reg,
        weight_scale="he",
        dtype=np.float64,
        rng=rng,
        **kwargs,
    )
    return model, X, y


@pytest.mark.parametrize("normalization", [None, "layernorm", "groupnorm"])
def test_convnet_with_a_hidden_layer_matches_numerical_gradients(normalization):
    # (batch norm is in bnlab gradcheck without the hidden layer, which would cancel some gradients)
    model, X, y = small_convnet(normalization, reg=0.5)
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name in grads:
        numerical = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name])
        assert rel_error(numerical, grads[name]) < 1e-5, name


def test_convnet_parameter_shapes_and_he_init():
    model = ConvNet([32, 64], kernel_size=5, hidden_dims=[100], normalization="batchnorm", seed=0)
    p = model.params
    assert p["W1"].shape == (32, 3, 5, 5) and p["W2"].shape == (64, 32, 5, 5)
    assert p["W3"].shape == (64 * 8 * 8, 100) and p["W4"].shape == (100, 10)
    assert p["gamma1"].shape == (32,) and p["beta3"].shape == (100,) and "gamma4" not in p
    assert all(v.dtype == np.float32 for v in p.values())
    # fan_in = C*K*K; the sample std of n draws is off by ~1/sqrt(2n) relative (1.4% for W1's 2400)
    assert abs(p["W1"].std() - np.sqrt(2 / (3 * 25))) < 0.05 * np.sqrt(2 / 75)
    assert abs(p["W2"].std() - np.sqrt(2 / (32 * 25))) < 0.02 * np.sqrt(2 / 800)
    xavier = ConvNet([16], weight_scale="xavier", seed=0).params["W1"]
    assert abs(xavier.std() - np.sqrt(2 / (3 * 9 + 16 * 9))) < 0.05 * np.sqrt(2 / 171)  # fan_out = F*K*K
    assert len(model.bn_params) == 3


def test_convnet_initial_loss_is_log_of_the_classes_with_small_weights():
    rng = np.random.RandomState(0)
    model = ConvNet([8, 8], input_dim=(3, 16, 16), weight_scale=1e-3, rng=rng)
    loss, _ = model.loss(rng.randn(20, 3, 16, 16).astype(np.float32), rng.randint(10, size=20))
    assert abs(loss - np.log(10)) < 1e-3


def test_convnet_records_activation_inputs_of_every_hidden_layer():
    model, X, y = small_convnet("batchnorm")
    model.activation_inputs = {}
    model.loss(X, y)
    assert sorted(model.activation_inputs) == [1, 2, 3]
    assert model.activation_inputs[1].shape == (6, 2, 8, 6)  # before the pool
    assert model.activation_inputs[2].shape == (6, 4, 4, 3)
    assert model.activation_inputs[3].shape == (6, 5)
    # batch norm's output, before the ReLU: per channel mean 0 over (N, H, W)
    np.testing.assert_allclose(model.activation_inputs[1].mean(axis=(0, 2, 3)), 0, atol=1e-10)
    assert model.activation_name == "relu" and model.normalization == "batchnorm"


def test_convnet_pooling_before_the_activation_changes_nothing():
    model, X, y = small_convnet("groupnorm", reg=0.1)
    loss, grads = model.loss(X, y)
    assert model.pool_first
    model.pool_first = False  # the textbook order: activation, then pool
    loss2, grads2 = model.loss(X, y)
    assert loss == pytest.approx(loss2, rel=1e-14)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads2[name], rtol=1e-12, atol=1e-15)


def test_convnet_uses_running_statistics_at_test_time():
    model, X, y = small_convnet("batchnorm")
    model.loss(X, y)
    running = model.bn_params[0]["running_mean"]
    assert running.shape == (2,) and np.any(running != 0)
    # in test mode a sample's scores do not depend on the rest of the batch
    np.testing.assert_allclose(model.loss(X)[:2], model.loss(X[:2]), rtol=1e-12)


def test_convnet_overfits_a_few_images():
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 3, 8, 8).astype(np.float32), rng.randint(10, size=20)
    model = ConvNet([8, 16], input_dim=(3, 8, 8), normalization="batchnorm", rng=rng)
    from bnlab import Solver

    solver = Solver(model, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="adam",
                    optim_config={"learning_rate": 1e-2}, batch_size=10, num_epochs=30, rng=rng)  # fmt: skip
    solver.train()
    assert solver.train_acc_history[-1] == 1.0


def test_convnet_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="normalization"):
        ConvNet([8], normalization="batch")
    with pytest.raises(ValueError, match="odd"):
        ConvNet([8], kernel_size=4)
    with pytest.raises(ValueError, match="num_groups=3 must divide"):
        ConvNet([8], normalization="groupnorm", num_groups=3)
    with pytest.raises(ValueError, match="activation"):
        ConvNet([8], activation="gelu")
    with pytest.raises(ValueError, match="pixels"):
        ConvNet([8] * 6)


def test_convnet_is_exported_from_bnlab():
    import bnlab

    assert bnlab.ConvNet is ConvNet
