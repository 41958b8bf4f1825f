"""Every layer of bnlab.layers: forward values against independent formulas, backward passes
against centred differences (float64), and the batch-norm running statistics."""

import math
import warnings

import numpy as np
import pytest

from bnlab import layers
from bnlab.nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error

EPS = 1e-5


def numerical_grads(forward, args, n_diff, dout):
    """Numerical gradients of sum(forward(*args)[0] * dout) w.r.t. the first n_diff args."""
    grads = []
    for i in range(n_diff):

        def f(v, i=i):
            return forward(*args[:i], v, *args[i + 1 :])[0]

        grads.append(eval_numerical_gradient_array(f, args[i].copy(), dout))
    return grads


def backward_errors(forward, backward, args, n_diff, dout):
    """rel_error of each analytic gradient against its numerical estimate."""
    _, cache = forward(*args)
    analytic = backward(dout, cache)
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)
    assert len(analytic) == n_diff
    numerical = numerical_grads(forward, args, n_diff, dout)
    return [rel_error(n, a) for n, a in zip(numerical, analytic, strict=True)]


def normalize(x, axis):
    """(x - mean) / sqrt(var + eps) over `axis`, written out independently of bnlab."""
    mean = x.mean(axis=axis, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


# --- affine, relu, softmax ---------------------------------------------------------------------


def test_affine_forward_flattens_each_example():
    rng = np.random.RandomState(0)
    x, w, b = rng.randn(3, 2, 4), rng.randn(8, 5), rng.randn(5)
    out, _ = layers.affine_forward(x, w, b)
    expected = np.array([[sum(x[n].ravel()[d] * w[d, m] for d in range(8)) + b[m] for m in range(5)] for n in range(3)])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_affine_backward_matches_numerical_gradients():
    rng = np.random.RandomState(1)
    x, w, b = rng.randn(4, 2, 3), rng.randn(6, 5), rng.randn(5)
    errors = backward_errors(layers.affine_forward, layers.affine_backward, (x, w, b), 3, rng.randn(4, 5))
    assert max(errors) < 1e-8, errors


def test_relu_forward_and_backward():
    rng = np.random.RandomState(2)
    x = rng.randn(5, 6)
    x += 0.1 * np.sign(x)  # away from the kink, where the centred difference is meaningless
    out, _ = layers.relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0.0))
    errors = backward_errors(layers.relu_forward, layers.relu_backward, (x,), 1, rng.randn(5, 6))
    assert errors[0] < 1e-10


def independent_softmax_loss(x, y):
    """Mean cross-entropy with exact summation in Python floats: log-sum-exp - x[y] per row."""
    losses = []
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        top = max(row)
        lse = top + math.log(math.fsum(math.exp(v - top) for v in row))
        losses.append(lse - row[label])
    return math.fsum(losses) / len(losses)


def test_softmax_loss_value_and_gradient():
    rng = np.random.RandomState(3)
    x, y = rng.randn(7, 5), rng.randint(5, size=7)
    loss, dx = layers.softmax_loss(x, y)
    assert loss == pytest.approx(independent_softmax_loss(x, y), rel=1e-14)
    dx_num = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], x.copy())
    assert rel_error(dx_num, dx) < 1e-7


def test_softmax_loss_of_known_small_scores():
    # Uniform scores over C classes: loss log(C), gradient (1/C - onehot) / N.
    loss, dx = layers.softmax_loss(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(math.log(4), rel=1e-15)
    np.testing.assert_allclose(dx, (np.full((2, 4), 0.25) - np.eye(4)[[1, 3]]) / 2, rtol=1e-15)
    x = np.array([[1.0, 2.0, 3.0]])
    expected = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1.0
    assert layers.softmax_loss(x, np.array([0]))[0] == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("big", [1e4, 1e30])
def test_softmax_loss_is_stable_for_huge_scores(big):
    x = np.array([[big, 0.0, -big], [0.0, big, 0.0]])
    # Overflow, 0/0 or log(0) anywhere fails the test; exp underflowing to 0 is the intended outcome.
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss, dx = layers.softmax_loss(x, np.array([2, 1]))
    # Row 1 misses by 2 * big, row 2 is right with probability 1: mean loss = big.
    assert math.isfinite(loss)
    assert loss == pytest.approx(big, rel=1e-12)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx, np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]) / 2, atol=1e-12)


# --- batch normalization -------------------------------------------------------------------------


def notebook_bn_inputs(seed=231, n=4, d=5):
    """The notebooks' gradient-check inputs: x = 5 * randn + 12, gamma, beta, dout ~ randn."""
    rng = np.random.RandomState(seed)
    return 5 * rng.randn(n, d) + 12, rng.randn(d), rng.randn(d), rng.randn(n, d)


@pytest.mark.parametrize("backward", [layers.batchnorm_backward, layers.batchnorm_backward_alt])
def test_batchnorm_backward_matches_numerical_gradients(backward):
    x, gamma, beta, dout = notebook_bn_inputs()
    errors = backward_errors(layers.batchnorm_forward, backward, (x, gamma, beta, {"mode": "train"}), 3, dout)
    assert max(errors) < 1e-7, errors


@pytest.mark.parametrize("backward", [layers.batchnorm_backward, layers.batchnorm_backward_alt])
def test_batchnorm_backward_where_eps_matters(backward):
    # var ~ 1e-3, so eps shifts the gradients by ~1%: a backward that drops eps fails here.
    rng = np.random.RandomState(4)
    x, gamma, beta, dout = 0.03 * rng.randn(8, 5) + 1, rng.randn(5), rng.randn(5), rng.randn(8, 5)
    errors = backward_errors(layers.batchnorm_forward, backward, (x, gamma, beta, {"mode": "train"}), 3, dout)
    assert max(errors) < 1e-6, errors


def test_batchnorm_backward_alt_equals_graph_backward_on_notebook_batch():
    x, gamma, beta, dout = notebook_bn_inputs(n=100, d=500)
    _, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for graph, closed_form in zip(
        layers.batchnorm_backward(dout, cache), layers.batchnorm_backward_alt(dout, cache), strict=True
    ):
        assert rel_error(graph, closed_form) < 1e-10


def test_batchnorm_train_output_has_mean_beta_and_std_gamma():
    rng = np.random.RandomState(5)
    x = rng.randn(200, 3) * np.array([30.0, 3.0, 0.3]) + np.array([-5.0, 10.0, 2.0])
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    out, _ = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, rtol=1e-13)
    # The std falls short of gamma by the factor sqrt(var / (var + eps)) only.
    np.testing.assert_allclose(out.std(axis=0), gamma * np.sqrt(x.var(axis=0) / (x.var(axis=0) + EPS)), rtol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-4)
    np.testing.assert_allclose(out, gamma * normalize(x, 0) + beta, rtol=1e-12)


def test_batchnorm_running_statistics_follow_the_momentum_recurrence():
    rng = np.random.RandomState(6)
    x1, x2 = rng.randn(10, 4) + 3, 2 * rng.randn(10, 4) - 1
    gamma, beta = np.ones(4), np.zeros(4)
    bn_param = {"mode": "train"}  # default momentum 0.9, running stats start at 0
    layers.batchnorm_forward(x1, gamma, beta, bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x1.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn_param["running_var"], 0.1 * x1.var(axis=0), rtol=1e-13)
    layers.batchnorm_forward(x2, gamma, beta, bn_param)
    np.testing.assert_allclose(
        bn_param["running_mean"], 0.9 * 0.1 * x1.mean(axis=0) + 0.1 * x2.mean(axis=0), rtol=1e-14
    )
    np.testing.assert_allclose(bn_param["running_var"], 0.09 * x1.var(axis=0) + 0.1 * x2.var(axis=0), rtol=1e-13)

    bn_param = {"mode": "train", "momentum": 0.5, "running_mean": np.ones(4), "running_var": np.ones(4)}
    layers.batchnorm_forward(x1, gamma, beta, bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.5 + 0.5 * x1.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(bn_param["running_var"], 0.5 + 0.5 * x1.var(axis=0), rtol=1e-13)


def test_batchnorm_test_mode_uses_running_statistics_after_warm_up():
    rng = np.random.RandomState(7)
    w = rng.randn(20, 3)
    gamma, beta = np.array([0.5, 1.0, 2.0]), np.array([-1.0, 0.0, 1.0])
    bn_param = {"mode": "train"}
    running_mean, running_var = np.zeros(3), np.zeros(3)
    for _ in range(50):
        a = np.maximum(0, rng.randn(100, 20)) @ w
        layers.batchnorm_forward(a, gamma, beta, bn_param)
        running_mean = 0.9 * running_mean + 0.1 * a.mean(axis=0)
        running_var = 0.9 * running_var + 0.1 * a.var(axis=0)
    np.testing.assert_allclose(bn_param["running_mean"], running_mean, rtol=1e-12)
    np.testing.assert_allclose(bn_param["running_var"], running_var, rtol=1e-12)

    bn_param["mode"] = "test"
    a = np.maximum(0, rng.randn(100, 20)) @ w
    out, _ = layers.batchnorm_forward(a, gamma, beta, bn_param)
    expected = gamma * (a - running_mean) / np.sqrt(running_var + EPS) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # Test mode leaves the running statistics alone, and depends on no other example of the batch.
    np.testing.assert_allclose(bn_param["running_mean"], running_mean, rtol=1e-12)
    single, _ = layers.batchnorm_forward(a[:1], gamma, beta, bn_param)
    np.testing.assert_allclose(single, out[:1], rtol=1e-12, atol=1e-12)


def test_batchnorm_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        layers.batchnorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), {"mode": "eval"})


# --- layer and group normalization -------------------------------------------------------------


def test_layernorm_backward_matches_numerical_gradients():
    x, gamma, beta, dout = notebook_bn_inputs()
    errors = backward_errors(layers.layernorm_forward, layers.layernorm_backward, (x, gamma, beta, {}), 3, dout)
    assert max(errors) < 1e-7, errors
    rng = np.random.RandomState(8)  # small per-sample variance: eps matters
    x = 0.03 * rng.randn(4, 6) + 1
    errors = backward_errors(
        layers.layernorm_forward, layers.layernorm_backward, (x, rng.randn(6), rng.randn(6), {}), 3, rng.randn(4, 6)
    )
    assert max(errors) < 1e-6, errors


def test_layernorm_normalizes_each_example_over_its_features():
    rng = np.random.RandomState(9)
    x = rng.randn(4, 30) * np.array([[10.0], [1.0], [0.1], [50.0]]) + 7
    out, _ = layers.layernorm_forward(x, np.full(30, 3.0), np.full(30, 5.0), {})
    np.testing.assert_allclose(out.mean(axis=1), 5.0, rtol=1e-13)
    np.testing.assert_allclose(out.std(axis=1), 3.0, rtol=1e-3)
    np.testing.assert_allclose(out, 3.0 * normalize(x, 1) + 5.0, rtol=1e-12)


def test_groupnorm_backward_matches_numerical_gradients():
    rng = np.random.RandomState(10)
    for G in (1, 2, 3, 6):
        x, gamma, beta, dout = 0.5 * rng.randn(4, 6) + 1, rng.randn(6), rng.randn(6), rng.randn(4, 6)
        args = (x, gamma, beta, G, {})
        errors = backward_errors(layers.groupnorm_forward, layers.groupnorm_backward, args, 3, dout)
        assert max(errors) < 1e-7, (G, errors)


def test_groupnorm_normalizes_contiguous_groups_of_features():
    rng = np.random.RandomState(11)
    x, gamma, beta = rng.randn(3, 12) * 4 + 2, rng.randn(12), rng.randn(12)
    out, _ = layers.groupnorm_forward(x, gamma, beta, 4, {})
    expected = np.empty_like(x)
    for n in range(3):
        for g in range(4):
            part = x[n, 3 * g : 3 * g + 3]
            expected[n, 3 * g : 3 * g + 3] = (part - part.mean()) / np.sqrt(part.var() + EPS)
    np.testing.assert_allclose(out, gamma * expected + beta, rtol=1e-12, atol=1e-12)


def test_groupnorm_with_one_group_is_layernorm_and_with_d_groups_normalizes_each_feature_alone():
    rng = np.random.RandomState(12)
    x, gamma, beta = rng.randn(5, 8) * 3, rng.randn(8), rng.randn(8)
    one_group, _ = layers.groupnorm_forward(x, gamma, beta, 1, {})
    np.testing.assert_allclose(one_group, layers.layernorm_forward(x, gamma, beta, {})[0], rtol=1e-13, atol=1e-13)
    # A group of one feature is that feature minus itself: x_hat = 0, out = beta, for any x.
    alone, _ = layers.groupnorm_forward(x, gamma, beta, 8, {})
    np.testing.assert_allclose(alone, np.broadcast_to(beta, x.shape), rtol=0, atol=1e-15)


# --- spatial normalization -----------------------------------------------------------------------


def test_spatial_batchnorm_backward_matches_numerical_gradients():
    rng = np.random.RandomState(13)
    x, gamma, beta, dout = 0.5 * rng.randn(2, 3, 2, 3) + 1, rng.randn(3), rng.randn(3), rng.randn(2, 3, 2, 3)
    args = (x, gamma, beta, {"mode": "train"})
    errors = backward_errors(layers.spatial_batchnorm_forward, layers.spatial_batchnorm_backward, args, 3, dout)
    assert max(errors) < 1e-7, errors


def test_spatial_batchnorm_normalizes_each_channel_over_batch_and_positions():
    rng = np.random.RandomState(14)
    x = rng.randn(4, 3, 5, 6) * np.array([1.0, 10.0, 0.5])[None, :, None, None] + 3
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.0, 1.0])
    bn_param = {"mode": "train"}
    out, _ = layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
    expected = gamma[None, :, None, None] * normalize(x, (0, 2, 3)) + beta[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-13)


def test_spatial_groupnorm_backward_matches_numerical_gradients():
    rng = np.random.RandomState(15)
    for G in (1, 2, 6):
        x = 0.5 * rng.randn(2, 6, 2, 3) + 1
        gamma, beta, dout = rng.randn(1, 6, 1, 1), rng.randn(1, 6, 1, 1), rng.randn(2, 6, 2, 3)
        args = (x, gamma, beta, G, {})
        errors = backward_errors(layers.spatial_groupnorm_forward, layers.spatial_groupnorm_backward, args, 3, dout)
        assert max(errors) < 1e-7, (G, errors)


def test_spatial_groupnorm_gradients_of_gamma_and_beta_keep_their_shape():
    rng = np.random.RandomState(16)
    x, gamma, beta = rng.randn(2, 4, 3, 3), rng.randn(1, 4, 1, 1), rng.randn(1, 4, 1, 1)
    out, cache = layers.spatial_groupnorm_forward(x, gamma, beta, 2, {})
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == (1, 4, 1, 1)


def test_spatial_groupnorm_with_one_group_is_layernorm_over_chw():
    rng = np.random.RandomState(17)
    n, c, h, w = 3, 4, 2, 5
    x, gamma, beta = 2 * rng.randn(n, c, h, w) + 1, rng.randn(1, c, 1, 1), rng.randn(1, c, 1, 1)
    out, _ = layers.spatial_groupnorm_forward(x, gamma, beta, 1, {})
    # Layer norm's per-feature gamma, beta: each channel's value repeated over its h * w positions.
    ln_out, _ = layers.layernorm_forward(
        x.reshape(n, -1), np.repeat(gamma.ravel(), h * w), np.repeat(beta.ravel(), h * w), {}
    )
    np.testing.assert_allclose(out, ln_out.reshape(n, c, h, w), rtol=1e-13, atol=1e-13)


def test_spatial_groupnorm_with_one_group_per_channel_is_instance_norm():
    rng = np.random.RandomState(18)
    x, gamma, beta = rng.randn(2, 3, 4, 4) + 5, rng.randn(1, 3, 1, 1), rng.randn(1, 3, 1, 1)
    out, _ = layers.spatial_groupnorm_forward(x, gamma, beta, 3, {})
    np.testing.assert_allclose(out, gamma * normalize(x, (2, 3)) + beta, rtol=1e-12, atol=1e-12)


# --- dropout --------------------------------------------------------------------------------


def test_dropout_backward_matches_numerical_gradient_with_a_fixed_seed():
    rng = np.random.RandomState(19)
    x = rng.randn(10, 8)
    errors = backward_errors(
        layers.dropout_forward,
        layers.dropout_backward,
        (x, {"mode": "train", "p": 0.6, "seed": 5}),
        1,
        rng.randn(10, 8),
    )
    assert errors[0] < 1e-10


def test_dropout_keeps_units_with_probability_p_and_scales_them_by_1_over_p():
    x = np.full((500, 400), 2.0)
    p = 0.3
    out, _ = layers.dropout_forward(x, {"mode": "train", "p": p, "seed": 0})
    kept = out != 0
    np.testing.assert_allclose(out[kept], 2.0 / p, rtol=1e-15)
    # 200,000 Bernoulli(0.3) draws: the kept fraction has std 0.001.
    assert kept.mean() == pytest.approx(p, abs=0.005)
    assert out.mean() == pytest.approx(2.0, rel=0.02)


def test_dropout_seed_fixes_the_mask_and_rng_draws_fresh_ones():
    x = np.ones((20, 20))
    seeded = {"mode": "train", "p": 0.5, "seed": 3}
    np.testing.assert_array_equal(layers.dropout_forward(x, seeded)[0], layers.dropout_forward(x, seeded)[0])
    drawn = {"mode": "train", "p": 0.5, "rng": np.random.RandomState(3)}
    first, second = layers.dropout_forward(x, drawn)[0], layers.dropout_forward(x, drawn)[0]
    np.testing.assert_array_equal(first, layers.dropout_forward(x, seeded)[0])  # same stream, first draw
    assert not np.array_equal(first, second)


def test_dropout_is_the_identity_at_test_time_and_for_p_1():
    x = np.random.RandomState(20).randn(4, 5)
    for param in ({"mode": "test", "p": 0.5}, {"mode": "train", "p": 1.0}):
        out, cache = layers.dropout_forward(x, param)
        np.testing.assert_array_equal(out, x)
        dout = np.arange(20.0).reshape(4, 5)
        np.testing.assert_array_equal(layers.dropout_backward(dout, cache), dout)


# --- dtypes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forward, extra",
    [
        (layers.batchnorm_forward, ({"mode": "train"},)),
        (layers.layernorm_forward, ({},)),
        (lambda x, g, b, p: layers.groupnorm_forward(x, g, b, 2, p), ({},)),
    ],
)
def test_norm_layers_keep_float32(forward, extra):
    rng = np.random.RandomState(21)
    x = rng.randn(6, 4).astype(np.float32)
    out, cache = forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), *extra)
    assert out.dtype == np.float32


def test_training_process_tuning_changes_no_normal_number():
    # Flushing subnormals turns only values below float32's smallest normal into zero.
    from bnlab.lab.process_setup import flush_subnormals, keep_large_arrays_on_heap

    keep_large_arrays_on_heap()  # allocation only: no value can change
    tiny = np.array([1e-39, -1e-40], dtype=np.float32)  # subnormal
    normal = np.array([1.5e-38, 3.0, -7.25], dtype=np.float32)
    with flush_subnormals() as flushing:
        flushed = tiny * np.float32(1.0)
        kept = normal * np.float32(1.0)
    np.testing.assert_array_equal(kept, normal)
    if flushing:
        np.testing.assert_array_equal(flushed, 0.0)
    np.testing.assert_array_equal(tiny * np.float32(1.0), tiny)  # the previous mode is restored


# --- leaky ReLU, sigmoid, tanh ------------------------------------------------------------------


def test_activation_forwards_against_their_definitions():
    x = np.array([[-3.0, -0.5, 0.0, 0.25, 2.0]])
    # leaky ReLU: x for x > 0, slope * x otherwise (PyTorch's default slope 0.01)
    np.testing.assert_allclose(layers.leaky_relu_forward(x)[0], [[-0.03, -0.005, 0.0, 0.25, 2.0]], rtol=1e-15)
    slope = layers.leaky_relu_forward(x, negative_slope=0.2)[0]
    np.testing.assert_allclose(slope, [[-0.6, -0.1, 0.0, 0.25, 2.0]], rtol=1e-15)
    # sigmoid 1 / (1 + e^-x) and tanh, from math's exp and tanh one value at a time
    sigmoid = [[1 / (1 + math.exp(-v)) for v in x[0]]]
    np.testing.assert_allclose(layers.sigmoid_forward(x)[0], sigmoid, rtol=1e-15)
    np.testing.assert_allclose(layers.tanh_forward(x)[0], [[math.tanh(v) for v in x[0]]], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_never_overflows(dtype):
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    # e^-1000 underflowing to 0 is exact enough; an overflow, a division by zero or a nan raises
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out, cache = layers.sigmoid_forward(x)
        dx = layers.sigmoid_backward(np.ones_like(x), cache)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out[[0, 2, 4]], [0.0, 0.5, 1.0])
    assert 0 < out[1] < 1e-40 or (dtype == np.float32 and out[1] == 0)  # e^-100 ~ 3.7e-44
    np.testing.assert_array_equal(dx[[0, 4]], [0.0, 0.0])


@pytest.mark.parametrize(
    "forward, backward",
    [
        (layers.leaky_relu_forward, layers.leaky_relu_backward),
        (lambda x: layers.leaky_relu_forward(x, negative_slope=0.3), layers.leaky_relu_backward),
        (layers.sigmoid_forward, layers.sigmoid_backward),
        (layers.tanh_forward, layers.tanh_backward),
    ],
    ids=["leaky_relu", "leaky_relu-0.3", "sigmoid", "tanh"],
)
def test_activation_backwards_match_numerical_gradients(forward, backward):
    rng = np.random.RandomState(3)
    x = 2 * rng.randn(5, 7)
    x += np.sign(x) * 0.1  # away from the leaky ReLU's kink
    (error,) = backward_errors(forward, backward, (x,), 1, rng.randn(5, 7))
    assert error < 1e-8


def test_activation_table_has_every_activation():
    assert list(layers.ACTIVATIONS) == ["relu", "leaky_relu", "sigmoid", "tanh"]
    assert layers.ACTIVATIONS["tanh"] == (layers.tanh_forward, layers.tanh_backward)


# --- RMS norm -------------------------------------------------------------------------------------


def test_rmsnorm_forward_is_the_papers_formula():
    # Zhang & Sennrich 2019, eq. 4: a_bar_i = a_i / RMS(a) * g_i with RMS(a) = sqrt(mean(a^2)) (+ eps
    # inside the root, as torch.nn.functional.rms_norm(x, (D,), weight=g, eps) computes
    # x * rsqrt(mean(x^2, -1) + eps) * weight); bnlab adds beta, which is 0 here.
    rng = np.random.RandomState(4)
    x, gamma = 3 * rng.randn(5, 6) + 1, rng.randn(6)
    expected = np.empty_like(x)
    for n in range(5):
        rms = math.sqrt(sum(v * v for v in x[n]) / 6 + EPS)
        expected[n] = x[n] / rms * gamma
    out, _ = layers.rmsnorm_forward(x, gamma, np.zeros(6), {})
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    # no centering: a sample's mean is kept, unlike layer norm
    out, _ = layers.rmsnorm_forward(np.full((1, 4), 2.0), np.ones(4), np.zeros(4), {})
    np.testing.assert_allclose(out, np.ones((1, 4)) * 2 / math.sqrt(4 + EPS), rtol=1e-15)


def test_rmsnorm_backward_matches_numerical_gradients():
    rng = np.random.RandomState(5)
    x, gamma, beta = 0.5 * rng.randn(4, 5) + 0.3, rng.randn(5), rng.randn(5)
    errors = backward_errors(layers.rmsnorm_forward, layers.rmsnorm_backward, (x, gamma, beta, {}), 3, rng.randn(4, 5))
    assert max(errors) < 1e-8


# --- batch renorm ---------------------------------------------------------------------------------


def renorm_reference(x, gamma, beta, mu, sigma, rmax, dmax):
    """Ioffe 2017, Algorithm 1 (train), written out: the output, r and d."""
    mu_b = x.mean(axis=0)
    sigma_b = np.sqrt(((x - mu_b) ** 2).mean(axis=0) + EPS)
    r = np.clip(sigma_b / sigma, 1 / rmax, rmax)
    d = np.clip((mu_b - mu) / sigma, -dmax, dmax)
    x_hat = (x - mu_b) / sigma_b * r + d
    return gamma * x_hat + beta, r, d


def test_batchrenorm_train_forward_and_moving_statistics_follow_algorithm_1():
    rng = np.random.RandomState(6)
    x, gamma, beta = 2 * rng.randn(8, 5) + 1, rng.randn(5), rng.randn(5)
    mu, sigma = rng.randn(5), np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    param = {"mode": "train", "rmax": 3.0, "dmax": 1.0, "running_mean": mu.copy(), "running_std": sigma.copy()}
    out, _ = layers.batchrenorm_forward(x, gamma, beta, param)
    expected, r, d = renorm_reference(x, gamma, beta, mu, sigma, 3.0, 1.0)
    assert np.any(r == 3.0) and np.any((r > 1 / 3) & (r < 3)) and np.any(np.abs(d) == 1.0)  # both regimes
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    # mu += alpha (mu_B - mu), sigma += alpha (sigma_B - sigma), alpha = 1 - momentum = 0.1
    sigma_b = np.sqrt(x.var(axis=0) + EPS)
    np.testing.assert_allclose(param["running_mean"], mu + 0.1 * (x.mean(axis=0) - mu), rtol=1e-12)
    np.testing.assert_allclose(param["running_std"], sigma + 0.1 * (sigma_b - sigma), rtol=1e-12)
    assert param["step"] == 1


def test_batchrenorm_test_mode_uses_the_moving_statistics():
    rng = np.random.RandomState(7)
    x, gamma, beta = rng.randn(3, 4), rng.randn(4), rng.randn(4)
    mu, sigma = rng.randn(4), rng.rand(4) + 0.5
    param = {"mode": "test", "running_mean": mu, "running_std": sigma}
    out, _ = layers.batchrenorm_forward(x, gamma, beta, param)
    np.testing.assert_allclose(out, gamma * (x - mu) / sigma + beta, rtol=1e-12)
    # fresh moving statistics: mean 0 and std 1, so test mode starts as the identity affine map
    out, _ = layers.batchrenorm_forward(x, gamma, beta, {"mode": "test"})
    np.testing.assert_allclose(out, gamma * x + beta, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchrenorm_with_rmax_1_and_dmax_0_is_batchnorm_exactly(dtype):
    rng = np.random.RandomState(8)
    x = (3 * rng.randn(10, 6) + 2).astype(dtype)
    gamma, beta, dout = (rng.randn(6).astype(dtype), rng.randn(6).astype(dtype), rng.randn(10, 6).astype(dtype))
    # moving statistics far off: unclipped, r and d would be far from 1 and 0
    param = {"mode": "train", "rmax": 1.0, "dmax": 0.0, "running_mean": np.full(6, 5.0, dtype)}
    param["running_std"] = np.full(6, 0.1, dtype)
    renorm, renorm_cache = layers.batchrenorm_forward(x, gamma, beta, param)
    bn, bn_cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    np.testing.assert_array_equal(renorm, bn)
    for a, b in zip(layers.batchrenorm_backward(dout, renorm_cache), layers.batchnorm_backward_alt(dout, bn_cache),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_batchrenorm_backward_holds_r_and_d_constant():
    # With r and d fixed, out = (gamma * r) * x_hat + (gamma * d + beta): batch norm with scale gamma * r,
    # whose input gradient is (gamma r / sigma_B) (dout - mean(dout) - x_hat mean(dout x_hat)).
    rng = np.random.RandomState(9)
    x, gamma, beta, dout = 2 * rng.randn(8, 5) + 1, rng.randn(5), rng.randn(5), rng.randn(8, 5)
    mu, sigma = x.mean(axis=0) + 0.1, np.sqrt(x.var(axis=0)) * 1.2  # r, d inside their clipping range
    param = {"mode": "train", "rmax": 3.0, "dmax": 5.0, "running_mean": mu, "running_std": sigma}
    _, cache = layers.batchrenorm_forward(x, gamma, beta, param)
    dx, dgamma, dbeta = layers.batchrenorm_backward(dout, cache)
    _, r, d = renorm_reference(x, gamma, beta, mu, sigma, 3.0, 5.0)
    assert np.all((r > 1 / 3) & (r < 3)) and np.all(np.abs(d) < 5)
    sigma_b = np.sqrt(x.var(axis=0) + EPS)
    x_hat = (x - x.mean(axis=0)) / sigma_b
    expected_dx = gamma * r / sigma_b * (dout - dout.mean(axis=0) - x_hat * (dout * x_hat).mean(axis=0))
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-10)
    np.testing.assert_allclose(dgamma, (dout * (x_hat * r + d)).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dbeta, dout.sum(axis=0), rtol=1e-12)


def test_batchrenorm_backward_matches_numerical_gradients_where_r_and_d_are_clipped():
    rng = np.random.RandomState(10)
    x, gamma, beta, dout = 0.5 * rng.randn(6, 4) + 1, rng.randn(4), rng.randn(4), rng.randn(6, 4)
    far = {"mode": "train", "rmax": 2.0, "dmax": 1.0, "running_mean": np.full(4, -9.0)}
    far["running_std"] = np.full(4, 0.01)

    def forward(x, gamma, beta, param):  # the same moving statistics on every call
        return layers.batchrenorm_forward(x, gamma, beta, dict(param))

    assert max(backward_errors(forward, layers.batchrenorm_backward, (x, gamma, beta, far), 3, dout)) < 1e-8


def test_batchrenorm_ramps_rmax_and_dmax_from_batchnorm_over_warmup_calls():
    # Moving statistics far from the batch's, so r and d sit at their bounds: 1 + 2t/4 and 5t/4.
    rng = np.random.RandomState(11)
    x = rng.randn(8, 3)
    param = {"mode": "train", "rmax": 3.0, "dmax": 5.0, "warmup": 4}
    for step in range(6):
        param.update(running_mean=np.full(3, -100.0), running_std=np.full(3, 1e-3))
        _, cache = layers.batchrenorm_forward(x, np.ones(3), np.zeros(3), param)
        ramp = min(step / 4, 1.0)
        np.testing.assert_allclose(cache[3], 1 + 2 * ramp)  # r
        x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + EPS)
        np.testing.assert_allclose(cache[1], x_hat * (1 + 2 * ramp) + 5 * ramp, rtol=1e-12)  # d = dmax
    assert param["step"] == 6
    # test mode leaves the count alone
    layers.batchrenorm_forward(x, np.ones(3), np.zeros(3), {**param, "mode": "test"})
    assert param["step"] == 6


@pytest.mark.parametrize("forward", [layers.rmsnorm_forward, layers.batchrenorm_forward])
def test_new_norm_layers_keep_float32(forward):
    rng = np.random.RandomState(21)
    x = rng.randn(6, 4).astype(np.float32)
    param = {"mode": "train"}
    out, _ = forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), param)
    assert out.dtype == np.float32
    assert all(v.dtype == np.float32 for v in param.values() if isinstance(v, np.ndarray))
