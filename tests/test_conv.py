"""bnlab.nn.conv: convolution and max pooling (naive and fast) against independent computations, the
channels-last memory layout of the fast layers, what their caches keep, and the spatial norms."""

import numpy as np
import pytest

from bnlab import layers
from bnlab.nn import conv
from bnlab.nn.normalizations import NORMALIZATIONS

# (stride, pad, kernel, input shape): strides 1 and 2, paddings 0 to 2, kernels 3 and 5, non-square.
CASES = [
    (1, 0, 3, (2, 3, 5, 4)),
    (1, 1, 3, (2, 3, 6, 7)),
    (2, 1, 3, (2, 2, 7, 5)),
    (2, 2, 5, (1, 2, 6, 9)),
    (1, 2, 5, (2, 1, 4, 5)),
    (2, 0, 5, (2, 2, 9, 8)),
]


def shifted_sum_conv(x, w, b, stride, pad):
    """Convolution as a sum over kernel offsets of shifted copies of the padded input, computed at
    stride 1 and then subsampled: a different route from both bnlab implementations."""
    n, c, h, wd = x.shape
    f, _, hh, ww = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h1, w1 = h + 2 * pad - hh + 1, wd + 2 * pad - ww + 1
    out = np.zeros((n, f, h1, w1))
    for i in range(hh):
        for j in range(ww):
            out += np.einsum("nchw,fc->nfhw", xp[:, :, i : i + h1, j : j + w1], w[:, :, i, j])
    return out[:, :, ::stride, ::stride] + b[None, :, None, None]


@pytest.mark.parametrize("stride, pad, k, shape", CASES)
def test_conv_forward_naive_and_fast_equal_the_shifted_sum(stride, pad, k, shape):
    rng = np.random.RandomState(0)
    x, w, b = rng.randn(*shape), rng.randn(3, shape[1], k, k), rng.randn(3)
    expected = shifted_sum_conv(x, w, b, stride, pad)
    for forward in (conv.conv_forward_naive, conv.conv_forward_fast):
        out, _ = forward(x, w, b, {"stride": stride, "pad": pad})
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_a_known_convolution_by_hand():
    # A 3x3 kernel of ones with zero padding 1 sums each pixel's neighbourhood.
    x = np.arange(9.0).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
    w, b = np.ones((1, 1, 3, 3)), np.array([0.5])
    expected = np.array([[8, 15, 12], [21, 36, 27], [20, 33, 24]]) + 0.5
    for forward in (conv.conv_forward_naive, conv.conv_forward_fast):
        out, _ = forward(x, w, b, {"stride": 1, "pad": 1})
        np.testing.assert_array_equal(out[0, 0], expected)
    out, _ = conv.conv_forward_fast(x, w, b, {"stride": 2, "pad": 1})
    np.testing.assert_array_equal(out[0, 0], expected[::2, ::2])


@pytest.mark.parametrize("stride, pad, k, shape", CASES)
def test_conv_backward_naive_and_fast_agree_with_the_adjoint(stride, pad, k, shape):
    """Convolution is linear in x and in w: <dout, conv(x)> = <dx, x> for its backward (and likewise
    for w), an identity that holds exactly whatever the implementation."""
    rng = np.random.RandomState(1)
    x, w, b = rng.randn(*shape), rng.randn(3, shape[1], k, k), rng.randn(3)
    param = {"stride": stride, "pad": pad}
    zero_b = np.zeros(3)
    out_x = shifted_sum_conv(x, w, zero_b, stride, pad)
    dout = rng.randn(*out_x.shape)
    results = []
    for forward, backward in [
        (conv.conv_forward_naive, conv.conv_backward_naive),
        (conv.conv_forward_fast, conv.conv_backward_fast),
    ]:
        _, cache = forward(x, w, b, param)
        dx, dw, db = backward(dout, cache)
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
        np.testing.assert_allclose(np.sum(dx * x), np.sum(dout * out_x), rtol=1e-10)
        np.testing.assert_allclose(np.sum(dw * w), np.sum(dout * out_x), rtol=1e-10)
        np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12)
        results.append((dx, dw, db))
    for naive, fast in zip(*results, strict=True):
        np.testing.assert_allclose(fast, naive, rtol=1e-10, atol=1e-12)


def test_fast_layers_are_channels_last_in_memory_and_keep_the_dtype():
    rng = np.random.RandomState(2)
    x = rng.randn(2, 3, 8, 6).astype(np.float32)
    w, b = rng.randn(4, 3, 3, 3).astype(np.float32), np.zeros(4, np.float32)
    out, cache = conv.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    assert out.shape == (2, 4, 8, 6) and out.dtype == np.float32
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous
    pooled, _ = conv.max_pool_forward_fast(out, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert pooled.shape == (2, 4, 4, 3) and pooled.transpose(0, 2, 3, 1).flags.c_contiguous
    dx, dw, db = conv.conv_backward_fast(np.ones_like(out), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    # The same numbers from a C-contiguous (N, C, H, W) copy as from the channels-last view
    again, _ = conv.max_pool_forward_fast(np.ascontiguousarray(out), {"pool_height": 2, "pool_width": 2, "stride": 2})
    np.testing.assert_array_equal(again, pooled)


def test_conv_cache_keeps_the_windows_and_the_filters_not_the_input():
    rng = np.random.RandomState(3)
    x, w, b = rng.randn(2, 3, 5, 5), rng.randn(4, 3, 3, 3), rng.randn(4)
    _, cache = conv.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
    arrays = [a for a in cache if isinstance(a, np.ndarray)]
    assert not any(a is x or np.shares_memory(a, x) for a in arrays)
    assert sorted(a.shape for a in arrays) == sorted([(2 * 5 * 5, 3 * 3 * 3), w.shape])
    dw, db = conv.conv_backward_fast_params(np.ones((2, 4, 5, 5)), cache)
    _, dw_full, db_full = conv.conv_backward_fast(np.ones((2, 4, 5, 5)), cache)
    np.testing.assert_array_equal(dw, dw_full)
    np.testing.assert_array_equal(db, db_full)


POOLS = [
    (2, 2, 2, (2, 3, 4, 6)),  # tiles: the fast road
    (2, 2, 2, (1, 2, 5, 7)),  # odd sizes: the last row and column are dropped
    (3, 3, 2, (2, 2, 7, 5)),  # overlapping windows
    (2, 3, 1, (1, 2, 4, 5)),  # non-square, stride 1
    (3, 3, 3, (1, 1, 6, 9)),  # tiles, not 2x2
]


def window_max(x, ph, pw, stride):
    """Max pooling by np.max over each window: the plain definition."""
    n, c, h, w = x.shape
    out = np.empty((n, c, (h - ph) // stride + 1, (w - pw) // stride + 1))
    for r in range(out.shape[2]):
        for s in range(out.shape[3]):
            out[:, :, r, s] = x[:, :, r * stride : r * stride + ph, s * stride : s * stride + pw].max(axis=(2, 3))
    return out


@pytest.mark.parametrize("ph, pw, stride, shape", POOLS)
def test_max_pool_naive_and_fast_forward_and_backward(ph, pw, stride, shape):
    rng = np.random.RandomState(4)
    x = rng.randn(*shape)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    expected = window_max(x, ph, pw, stride)
    dout = rng.randn(*expected.shape)
    grads = []
    for kind in ("naive", "fast"):
        out, cache = getattr(conv, f"max_pool_forward_{kind}")(x, param)
        np.testing.assert_array_equal(out, expected)
        dx = getattr(conv, f"max_pool_backward_{kind}")(dout, cache)
        # every output's gradient lands on an input equal to that output, and nothing else is touched
        assert np.isclose(dx.sum(), dout.sum()) and np.count_nonzero(dx) <= dout.size
        assert set(np.flatnonzero(dx)) <= set(np.flatnonzero(np.isin(x, expected)))
        grads.append(dx)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-14, atol=1e-15)  # sums in another order


def test_max_pool_by_hand_and_ties_go_to_the_first_maximum():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 2:, :2] = 7.0  # the lower-left window is all ties
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    for kind in ("naive", "fast"):
        out, cache = getattr(conv, f"max_pool_forward_{kind}")(x, param)
        np.testing.assert_array_equal(out[0, 0], [[5, 7], [7, 15]])
        dx = getattr(conv, f"max_pool_backward_{kind}")(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
        expected = np.zeros((4, 4))
        expected[1, 1], expected[1, 3], expected[2, 0], expected[3, 3] = 1, 2, 3, 4
        np.testing.assert_array_equal(dx[0, 0], expected)


def test_fast_pool_cache_is_one_byte_per_output():
    x = np.random.RandomState(5).randn(2, 8, 6, 4).astype(np.float32)
    out, cache = conv.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    arrays = [a for a in cache if isinstance(a, np.ndarray)]
    assert sum(a.nbytes for a in arrays) == out.size  # one uint8 per output: 1/16 of x's bytes


# --- spatial normalizations --------------------------------------------------------------------


def test_spatial_batchnorm_normalizes_each_channel_over_n_h_w():
    rng = np.random.RandomState(6)
    x = 3 * rng.randn(4, 3, 5, 6) + 7
    out, _ = NORMALIZATIONS["batchnorm"].spatial_forward(x, np.ones(3), np.zeros(3), {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # eps = 1e-5 against var ~9


@pytest.mark.parametrize("name, groups", [("layernorm", 1), ("groupnorm", 2), ("groupnorm", 3)])
def test_spatial_group_and_layer_norm_against_a_plain_computation(name, groups):
    rng = np.random.RandomState(7)
    x = 2 * rng.randn(3, 6, 4, 5) - 1
    gamma, beta = rng.randn(6), rng.randn(6)
    out, cache = NORMALIZATIONS[name].spatial_forward(x, gamma, beta, {"num_groups": groups})
    xg = x.reshape(3, groups, -1)  # each sample's channels of one group, all positions
    x_hat = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(out, x_hat * gamma[:, None, None] + beta[:, None, None], rtol=1e-12, atol=1e-12)
    dx, dgamma, dbeta = NORMALIZATIONS[name].spatial_backward(np.ones_like(x), cache)
    np.testing.assert_allclose(dbeta, np.full(6, 3 * 4 * 5))
    assert dgamma.shape == (6,) and dx.shape == x.shape


def test_spatial_norms_give_the_same_result_for_channels_last_input():
    rng = np.random.RandomState(8)
    x = rng.randn(2, 4, 3, 5)
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # same values, NHWC memory
    gamma, beta, dout = rng.randn(4), rng.randn(4), rng.randn(*x.shape)
    for name, norm in NORMALIZATIONS.items():
        if norm.spatial_forward is None:
            continue
        (param,) = norm.layer_params({"num_groups": 2, "ghost_batch_size": 1}, 1)
        out_a, cache_a = norm.spatial_forward(x, gamma, beta, dict(param))
        out_b, cache_b = norm.spatial_forward(x_last, gamma, beta, dict(param))
        np.testing.assert_allclose(out_a, out_b, rtol=1e-12, err_msg=name)
        for a, b in zip(norm.spatial_backward(dout, cache_a), norm.spatial_backward(dout, cache_b), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)


def test_spatial_groupnorm_keeps_the_notebooks_gamma_shape():
    rng = np.random.RandomState(9)
    x, gamma, beta = rng.randn(2, 6, 3, 3), rng.randn(1, 6, 1, 1), rng.randn(1, 6, 1, 1)
    out, cache = layers.spatial_groupnorm_forward(x, gamma, beta, 2, {})
    _, dgamma, dbeta = layers.spatial_groupnorm_backward(np.ones_like(out), cache)
    assert dgamma.shape == dbeta.shape == (1, 6, 1, 1)


def test_cs231n_names_are_importable_from_bnlab_layers():
    for name in ("conv_forward_naive", "conv_backward_naive", "conv_forward_fast", "conv_backward_fast",
                 "max_pool_forward_naive", "max_pool_backward_naive", "max_pool_forward_fast",
                 "max_pool_backward_fast", "spatial_batchnorm_forward", "spatial_groupnorm_backward"):  # fmt: skip
        assert callable(getattr(layers, name)), name
