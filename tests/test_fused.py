"""The compiled layers (bnlab.nn.fused over bnlab.nn.kernels) against the numpy layers they stand
for, in float64; and their bytes, the same whatever CPU numba compiles them for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnlab.nn import conv, fused, kernels, layers, norms, optim
from bnlab.nn.nets import ConvNet

POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def close(a, b, tol=1e-12):
    return np.allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "stride, pad, k, shape", [(1, 1, 3, (3, 4, 6, 5)), (2, 0, 3, (2, 3, 7, 6)), (2, 2, 5, (2, 2, 6, 5))]
)
def test_compiled_conv_is_the_numpy_conv(stride, pad, k, shape):
    rng = np.random.RandomState(0)
    x, w, b = rng.randn(*shape), rng.randn(4, shape[1], k, k), rng.randn(4)
    param = {"stride": stride, "pad": pad}
    out, cache = fused.conv_forward(x, w, b, param)
    ref, ref_cache = conv.conv_forward_fast(x, w, b, param)
    assert np.array_equal(out, ref)  # im2col copies: the same windows, the same product
    dout = rng.randn(*out.shape)
    for got, want in zip(fused.conv_backward(dout, cache), conv.conv_backward_fast(dout, ref_cache), strict=True):
        assert got.shape == want.shape and close(got, want)
    # against the loops of the naive layer too, from a channels-last input (a later block's)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert close(fused.conv_forward(x_last, w, b, param)[0], conv.conv_forward_naive(x, w, b, param)[0])


def test_compiled_batchnorm_is_the_numpy_batchnorm_with_its_running_statistics():
    rng = np.random.RandomState(1)
    x, gamma, beta = rng.randn(40, 7) * 3 + 2, rng.randn(7), rng.randn(7)
    ours, theirs = {"mode": "train", "momentum": 0.8}, {"mode": "train", "momentum": 0.8}
    for _ in range(3):
        out, cache = fused.batchnorm_forward(x, gamma, beta, ours)
        ref, ref_cache = norms.batchnorm_forward(x, gamma, beta, theirs)
        assert close(out, ref)
    assert close(ours["running_mean"], theirs["running_mean"]) and close(ours["running_var"], theirs["running_var"])
    dout = rng.randn(*x.shape)
    for got, want in zip(
        fused.batchnorm_backward(dout, cache), norms.batchnorm_backward_alt(dout, ref_cache), strict=True
    ):
        assert close(got, want)
    ours["mode"] = theirs["mode"] = "test"
    assert np.array_equal(
        fused.batchnorm_forward(x, gamma, beta, ours)[0], norms.batchnorm_forward(x, gamma, beta, theirs)[0]
    )


def test_batchnorm_fused_with_max_pooling_is_the_two_layers():
    rng = np.random.RandomState(2)
    x = rng.randn(3, 5, 6, 8)
    x[0, 0, :2, :2] = 1.5  # a tied window: the first offset wins in both
    gamma, beta = rng.randn(5), rng.randn(5)
    ours, theirs = {"mode": "train"}, {"mode": "train"}
    out, cache = fused.batchnorm_maxpool_forward(x, gamma, beta, ours)
    normalized, bn_cache = conv.spatial_batchnorm_forward(x, gamma, beta, theirs)
    ref, pool_cache = conv.max_pool_forward_fast(normalized, POOL)
    assert close(out, ref) and close(fused.normalized(cache), normalized)
    assert close(ours["running_var"], theirs["running_var"])
    dout = rng.randn(*out.shape)
    want = conv.spatial_batchnorm_backward(conv.max_pool_backward_fast(dout, pool_cache), bn_cache)
    for got, expected in zip(fused.batchnorm_maxpool_backward(dout, cache), want, strict=True):
        assert close(got, expected)


def test_a_conv_net_step_is_the_same_whether_or_not_activations_are_recorded():
    """The fused block computes the normalized map for the record beside the step: recording
    changes no byte of the loss or the gradients."""
    rng = np.random.RandomState(3)
    X, y = rng.randn(6, 3, 8, 8).astype(np.float32), rng.randint(10, size=6)
    results = []
    for record in (None, {}):
        net = ConvNet([4, 6], input_dim=(3, 8, 8), normalization="batchnorm", seed=0)
        net.activation_inputs = record
        loss, grads = net.loss(X, y)
        results.append((loss, {k: g.tobytes() for k, g in grads.items()}))
        if record is not None:
            assert set(record) == {1, 2} and record[1].shape == (6, 4, 8, 8)
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_batchnorm_relu_is_batchnorm_then_relu_byte_for_byte(dtype):
    """One call for batch norm and the ReLU after it: the output, the running statistics (blended
    over three steps, numpy's way) and the gradients equal the numpy passes' bytes, with exact
    zeros, -0 and NaN among the values the ReLU and its gradient see."""
    rng = np.random.RandomState(1)
    gamma, beta = rng.randn(7).astype(dtype), rng.randn(7).astype(dtype)
    beta[:2] = 0.0  # columns whose normalized value can be exactly 0
    ours, theirs = {"mode": "train", "momentum": 0.8}, {"mode": "train", "momentum": 0.8}
    for _ in range(3):
        x = (rng.randn(9, 7) * 10.0 ** rng.randint(-3, 4, 7)).astype(dtype)
        x[:, 0] = 2.5  # a constant column: x_hat is exactly 0 there
        out, cache = fused.batchnorm_relu_forward(x, gamma, beta, ours)
        # the numpy passes: mean_var's float64 sums, norms.blend_running, then layers.relu_forward
        mean64, var64 = kernels.mean_var(x)
        norms.blend_running(theirs, mean64.astype(dtype), var64.astype(dtype))
        inv_std = (1.0 / np.sqrt(var64 + 1e-5)).astype(dtype)
        x_hat, normalized = kernels.normalize(x, mean64.astype(dtype), inv_std, gamma, beta)
        want, relu_cache = layers.relu_forward(normalized)
        assert out.tobytes() == want.tobytes() and cache[-1].tobytes() == normalized.tobytes()
        for key in ("running_mean", "running_var"):
            assert ours[key].dtype == dtype and ours[key].tobytes() == theirs[key].tobytes()
    dout = rng.randn(*out.shape).astype(dtype)
    dout[0, :3] = [-0.0, np.nan, -2.0]
    got = fused.batchnorm_relu_backward(dout, cache)
    want = fused.batchnorm_backward(layers.relu_backward(dout, relu_cache), (x_hat, gamma, inv_std))
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and a.tobytes() == b.tobytes()
    special = np.array([[-0.0, np.nan, -np.inf, 0.0, 3.0]], dtype)  # np.maximum's edge cases
    one, zero = np.ones(5, dtype), np.zeros(5, dtype)
    relu_out = kernels.normalize_relu(special, zero, one, one, zero)[2]
    assert relu_out.tobytes() == np.maximum(special, 0).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_batchnorm_relu_in_test_mode_is_the_numpy_passes_byte_for_byte(dtype):
    """Accuracy checks: test-mode batch norm (x * scale, then + shift) and the ReLU in one pass give
    norms.batchnorm_forward's and layers.relu_forward's bytes, with a negative gamma, NaN, infinities
    and values whose normalized form is exactly 0 or -0; no running statistics yet means zeros, as
    the numpy layer sets them; mixed dtypes are numpy's (computed in the wider one)."""
    rng = np.random.RandomState(2)
    gamma, beta = rng.randn(6).astype(dtype), rng.randn(6).astype(dtype)
    gamma[1], beta[2:4] = -3.0, 0.0
    trained = {"mode": "train"}
    for _ in range(3):
        norms.batchnorm_forward(rng.randn(20, 6).astype(dtype) * 4 + 1, gamma, beta, trained)
    x = rng.randn(11, 6).astype(dtype) * 3
    x[0, :3] = [np.nan, np.inf, -np.inf]
    x[1:3, 2] = trained["running_mean"][2]  # x * scale + shift exactly 0 (beta 0)
    trained["running_mean"][3], beta[3], x[1:3, 3] = 0.0, -0.0, [-0.0, 0.0]  # -0 * scale + -0: -0
    for running in ({**trained, "mode": "test"}, {"mode": "test"}):
        ours, theirs = dict(running), dict(running)
        out, cache = fused.batchnorm_relu_forward(x, gamma, beta, ours)
        normalized = norms.batchnorm_forward(x, gamma, beta, theirs)[0]
        assert cache[-1].tobytes() == normalized.tobytes()
        assert out.dtype == dtype and out.tobytes() == layers.relu_forward(normalized)[0].tobytes()
        assert ours.keys() == theirs.keys()
        assert all(np.array_equal(ours[key], theirs[key]) for key in ("running_mean", "running_var"))
    if dtype == np.float32:  # float64 statistics: numpy's float64 result, not a float32 one
        wide = {key: value.astype(np.float64) for key, value in trained.items() if key != "mode"}
        out = fused.batchnorm_relu_forward(x, gamma, beta, {**wide, "mode": "test"})[0]
        want = layers.relu_forward(norms.batchnorm_forward(x, gamma, beta, {**wide, "mode": "test"})[0])[0]
        assert out.dtype == np.float64 and out.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_max_pool_is_the_numpy_fast_pool_byte_for_byte(dtype):
    """The compiled 2x2 max pool gives conv.max_pool_forward_fast's output, winners and gradient
    byte for byte, with ties, 0 against -0, NaN and infinities planted in the windows (np.maximum's
    choices: a NaN wins, a tie goes to the second operand) and in the gradient, from an NCHW input
    and from a channels-last one; windows that do not tile the input take the numpy layer."""
    rng = np.random.RandomState(4)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, 1.0, -0.0], dtype)
    for trial in range(8):
        x = rng.randn(3, 5, 6, 8).astype(dtype)
        x.reshape(-1)[rng.choice(x.size, 60, replace=False)] = special[rng.randint(len(special), size=60)]
        if trial % 2:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last in memory
        want, want_cache = conv.max_pool_forward_fast(x, POOL)
        got, got_cache = fused.max_pool_forward(x, POOL)
        assert got.dtype == dtype and got.tobytes() == want.tobytes()
        assert got_cache[0].tobytes() == want_cache[0].tobytes()
        dout = rng.randn(*got.shape).astype(dtype)
        dout.reshape(-1)[rng.choice(dout.size, 12, replace=False)] = special[rng.randint(len(special), size=12)]
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN in both
            want_dx = conv.max_pool_backward_fast(dout, want_cache)
        got_dx = fused.max_pool_backward(dout, got_cache)
        assert got_dx.shape == x.shape
        assert np.ascontiguousarray(got_dx).tobytes() == np.ascontiguousarray(want_dx).tobytes()
    odd = rng.randn(2, 3, 5, 5).astype(dtype)
    for pool in (POOL, {"pool_height": 3, "pool_width": 3, "stride": 2}):
        want, want_cache = conv.max_pool_forward_fast(odd, pool)
        got, got_cache = fused.max_pool_forward(odd, pool)
        assert got.tobytes() == want.tobytes()
        want_dx = conv.max_pool_backward_fast(want, want_cache)
        assert fused.max_pool_backward(got, got_cache).tobytes() == want_dx.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adam_is_the_numpy_adam_byte_for_byte(dtype):
    """The same passes' roundings in one loop, in place: every step's weights and moments equal
    optim.adam's exactly, over gradients that span many magnitudes (so that a cast of a scalar to another
    precision, or a fused multiply-add, would show), on a (3, 5, 7) array as on a flat one."""
    rng = np.random.RandomState(0)
    w = (rng.randn(3, 5, 7) * 10.0 ** rng.randint(-6, 3, (3, 5, 7))).astype(dtype)
    ours, theirs = (w.copy(), {"learning_rate": 3e-3}), (w.copy(), {"learning_rate": 3e-3})
    updated = ours[0]
    for _ in range(6):
        dw = (rng.randn(*w.shape) * 10.0 ** rng.randint(-8, 2, w.shape)).astype(dtype)
        ours, theirs = fused.adam(ours[0], dw, ours[1]), optim.adam(theirs[0], dw, theirs[1])
        assert ours[0] is updated  # in place
        for a, b in ((ours[0], theirs[0]), (ours[1]["m"], theirs[1]["m"]), (ours[1]["v"], theirs[1]["v"])):
            assert a.dtype == dtype and a.shape == w.shape and a.tobytes() == b.tobytes()
    assert ours[1]["t"] == theirs[1]["t"] == 6
    assert not np.array_equal(ours[0], w)  # it did move


def test_aligned_zeros_are_zeros_on_a_64_byte_boundary():
    for shape, dtype in [(1, np.float32), (7, np.float64), ((3, 5), np.float32), ((2, 3, 4), np.float64)]:
        arrays = [fused.aligned_zeros(shape, dtype) for _ in range(8)]  # various places on the heap
        for array in arrays:
            assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous
            assert array.dtype == dtype and array.shape == np.zeros(shape).shape and not array.any()


# A float32 conv net's training steps and every compiled kernel's output on fixed inputs, hashed
# in a fresh process compiled for the CPU named by NUMBA_CPU_NAME.
BYTES_SCRIPT = r"""
import hashlib, json, numpy as np
from bnlab.nn import fused
from bnlab.nn.nets import ConvNet
from bnlab.nn.solver import Solver
rng = np.random.RandomState(0)
digest = hashlib.sha256()
x = rng.randn(4, 6, 8, 10).astype(np.float32)
gamma, beta = rng.randn(6).astype(np.float32), rng.randn(6).astype(np.float32)
out, cache = fused.batchnorm_maxpool_forward(x, gamma, beta, {"mode": "train"})
for array in (out, *fused.batchnorm_maxpool_backward(rng.randn(*out.shape).astype(np.float32), cache)):
    digest.update(array.tobytes())
pooled, pool_cache = fused.max_pool_forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
for array in (pooled, pool_cache[0], fused.max_pool_backward(rng.randn(*pooled.shape).astype(np.float32), pool_cache)):
    digest.update(np.ascontiguousarray(array).tobytes())
X, y = rng.randn(64, 3, 16, 16).astype(np.float32), rng.randint(10, size=64)
net = ConvNet([8, 16], input_dim=(3, 16, 16), hidden_dims=[12], normalization="batchnorm", seed=0)
solver = Solver(net, {"X_train": X, "y_train": y, "X_val": X, "y_val": y}, update_rule="adam", batch_size=16,
                num_epochs=1, rng=np.random.RandomState(0))
solver.train()
digest.update(np.array(solver.loss_history, dtype=np.float64).tobytes())
digest.update(net.loss(X).tobytes())  # test mode: running statistics, the compiled batch norm + ReLU
for name in sorted(net.params):
    digest.update(net.params[name].tobytes())
print(json.dumps(digest.hexdigest()))
"""


@pytest.mark.slow  # compiles the kernels once per CPU name (then numba's disk cache has them)
def test_the_kernels_bytes_do_not_depend_on_the_cpu_they_are_compiled_for():
    digests = {}
    for cpu in ("host", "generic", "haswell", "skylake-avx512", "znver2"):
        env = dict(os.environ)
        env.pop("NUMBA_CPU_NAME", None)
        if cpu != "host":
            env["NUMBA_CPU_NAME"] = cpu
        done = subprocess.run(
            [sys.executable, "-c", BYTES_SCRIPT], env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-2000:]
        digests[cpu] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(digests.values())) == 1, digests
