"""Ghost batch norm (Hoffer et al. 2017) and batches of one (issue 30): each virtual batch is
normalized by its own statistics (checked against a plain computation), one virtual batch is batch
norm to the byte, the backward passes match numerical gradients, and a batch norm that would see one
value per feature is refused where the spec is read."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import bnlab, write

from bnlab.layers import batchnorm_forward, ghost_batchnorm_backward, ghost_batchnorm_forward
from bnlab.nn.conv import (
    spatial_batchnorm_forward,
    spatial_ghost_batchnorm_backward,
    spatial_ghost_batchnorm_forward,
)
from bnlab.nn.gradcheck import eval_numerical_gradient_array, rel_error

EPS = 1e-5


def plain_batchnorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, axes: tuple) -> np.ndarray:
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def test_each_virtual_batch_is_normalized_by_its_own_statistics():
    rng = np.random.RandomState(0)
    x, gamma, beta = 3 * rng.randn(10, 4) + 1, rng.randn(4), rng.randn(4)
    param = {"mode": "train", "ghost_batch_size": 4}
    out, _ = ghost_batchnorm_forward(x, gamma, beta, param)
    chunks = [x[0:4], x[4:8], x[8:10]]  # the last virtual batch is what is left
    expected = np.concatenate([plain_batchnorm(c, gamma, beta, (0,)) for c in chunks])
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    # the running statistics blend the mean over virtual batches of their means and variances
    np.testing.assert_allclose(param["running_mean"], 0.1 * np.mean([c.mean(0) for c in chunks], 0), rtol=1e-12)
    np.testing.assert_allclose(param["running_var"], 0.1 * np.mean([c.var(0) for c in chunks], 0), rtol=1e-12)


def test_the_conv_form_normalizes_each_virtual_batch_over_its_images_positions():
    rng = np.random.RandomState(1)
    x, gamma, beta = rng.randn(6, 3, 4, 5), rng.randn(3), rng.randn(3)
    out, _ = spatial_ghost_batchnorm_forward(x, gamma, beta, {"mode": "train", "ghost_batch_size": 2})
    shape = (1, 3, 1, 1)
    expected = np.concatenate(
        [plain_batchnorm(x[i : i + 2], gamma.reshape(shape), beta.reshape(shape), (0, 2, 3)) for i in (0, 2, 4)]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_virtual_batch_is_batch_norm_to_the_byte(dtype):
    rng = np.random.RandomState(2)
    x, gamma, beta = (rng.randn(16, 5) * 2).astype(dtype), rng.randn(5).astype(dtype), rng.randn(5).astype(dtype)
    ghost, plain = {"mode": "train", "ghost_batch_size": 16}, {"mode": "train"}
    for _ in range(2):
        a, _ = ghost_batchnorm_forward(x, gamma, beta, ghost)
        b, _ = batchnorm_forward(x, gamma, beta, plain)
        assert a.tobytes() == b.tobytes()
    for key in ("running_mean", "running_var"):
        assert ghost[key].tobytes() == plain[key].tobytes()
    for mode in ("test",):
        ghost["mode"] = plain["mode"] = mode
        assert (
            ghost_batchnorm_forward(x, gamma, beta, ghost)[0].tobytes()
            == batchnorm_forward(x, gamma, beta, plain)[0].tobytes()
        )
    x4 = rng.randn(3, 2, 3, 3).astype(dtype)
    a, _ = spatial_ghost_batchnorm_forward(x4, gamma[:2], beta[:2], {"mode": "train", "ghost_batch_size": 8})
    b, _ = spatial_batchnorm_forward(x4, gamma[:2], beta[:2], {"mode": "train"})
    assert np.array_equal(a, b) and a.strides == b.strides  # channels-last in memory as batch norm's


@pytest.mark.parametrize("conv_form", [False, True])
def test_backward_matches_numerical_gradients(conv_form):
    rng = np.random.RandomState(3)
    shape = (6, 3, 2, 3) if conv_form else (7, 4)
    forward, backward = (
        (spatial_ghost_batchnorm_forward, spatial_ghost_batchnorm_backward)
        if conv_form
        else (ghost_batchnorm_forward, ghost_batchnorm_backward)
    )
    x, gamma, beta = rng.randn(*shape) * 2 + 1, rng.randn(shape[1]), rng.randn(shape[1])
    dout = rng.randn(*shape)

    def run(x_, g_, b_):
        return forward(x_, g_, b_, {"mode": "train", "ghost_batch_size": 3})[0]

    _, cache = forward(x, gamma, beta, {"mode": "train", "ghost_batch_size": 3})
    dx, dgamma, dbeta = backward(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: run(v, gamma, beta), x, dout)) < 1e-7
    assert rel_error(dgamma, eval_numerical_gradient_array(lambda v: run(x, v, beta), gamma, dout)) < 1e-7
    assert rel_error(dbeta, eval_numerical_gradient_array(lambda v: run(x, gamma, v), beta, dout)) < 1e-7


BATCH_OF_ONE = """\
name: one
data: {num_train: 20, num_val: 10, num_test: 10}
model: %s
solver: {batch_size: 1, num_epochs: 1}
"""


@pytest.mark.parametrize(
    ("model", "refused"),
    [
        ("{hidden_dims: [10], normalization: batchnorm}", True),
        ("{architecture: conv, channels: [4], hidden_dims: [8], normalization: batchnorm}", True),
        ("{architecture: conv, channels: [4], normalization: batchnorm}", False),  # 32x32 values per channel
        ("{hidden_dims: [10], normalization: layernorm}", False),
    ],
)
def test_a_batch_norm_over_one_value_per_feature_is_refused_through_the_cli(tmp_path, model, refused):
    spec = write(tmp_path, "one.yaml", BATCH_OF_ONE % model)
    result = bnlab("plan", spec)
    if refused:
        assert result.exit_code == 2 and "Traceback" not in result.output
        text = " ".join(result.stderr.split())
        assert (
            "one.yaml:4:1: run: batchnorm would normalize each feature of a fully connected layer over 1 sample" in text
        )
        assert "use batches of 2 or more" in text
    else:
        assert result.exit_code == 0, result.output


def test_a_ghost_batch_of_one_is_refused_too(tmp_path):
    spec = write(tmp_path, "one.yaml", BATCH_OF_ONE.replace("batch_size: 1", "batch_size: 8")
                 % "{hidden_dims: [10], normalization: ghost_batchnorm, ghost_batch_size: 1}")  # fmt: skip
    result = bnlab("plan", spec)
    assert result.exit_code == 2 and "ghost_batchnorm would normalize each feature" in " ".join(result.stderr.split())
