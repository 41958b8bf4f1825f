"""Batch norm, batch norm + ReLU, convolution, max pooling, batch norm + max pooling and Adam over
bnlab.nn.kernels' compiled loops: the same functions as the CS231n numpy layers (bnlab.nn.norms, bnlab.nn.conv,
bnlab.nn.optim), with the same interfaces, in fewer passes over memory and fewer calls.

The nets use these where they apply (batch norm in train mode, alone or before a ReLU, convolution,
a 2x2 max pool that tiles its input, alone or after batch norm; the Solver's Adam); the numpy layers
stay the readable reference they are tested against (tests/test_fused.py) and what every other
case runs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from bnlab.nn import conv, kernels, layers, norms, optim

Array = np.ndarray
Cache = tuple[Any, ...]


def _statistics(flat: Array, bn_param: dict) -> tuple[Array, Array]:
    """The batch mean and inv_std of flat (M, C) in its dtype, and the running statistics blended
    as batchnorm_forward blends them (kernels.batch_statistics: one call)."""
    zeros = np.zeros(flat.shape[1], flat.dtype)
    running_mean, running_var = bn_param.get("running_mean", zeros), bn_param.get("running_var", zeros)
    old, new = norms.running_shares(bn_param)
    mean, inv_std, bn_param["running_mean"], bn_param["running_var"] = kernels.batch_statistics(
        flat, running_mean, running_var, running_mean.dtype.type(old), flat.dtype.type(new), bn_param.get("eps", 1e-5)
    )
    return mean, inv_std


def batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """norms.batchnorm_forward: statistics in float64 in one call, x_hat and out in another. Test
    mode is the numpy layer's. Shapes: x (N, D), gamma, beta (D,) -> out (N, D)."""
    if bn_param["mode"] != "train":
        return norms.batchnorm_forward(x, gamma, beta, bn_param)
    x = np.ascontiguousarray(x)
    mean, inv_std = _statistics(x, bn_param)
    x_hat, out = kernels.normalize(x, mean, inv_std, gamma, beta)
    return out, (x_hat, gamma, inv_std)


def batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """norms.batchnorm_backward_alt in one pass for the sums and one for dx.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    x_hat, gamma, inv_std = cache
    return kernels.normalize_backward(np.ascontiguousarray(dout), x_hat, gamma, inv_std)


def batchnorm_relu_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """batchnorm_forward then layers.relu_forward, in one call: the same bytes. In test mode
    (accuracy checks), norms.batchnorm_forward's scale and shift and the ReLU in one pass.
    Shapes: x (N, D), gamma, beta (D,) -> out (N, D); the cache's last entry is the relu's input."""
    x = np.ascontiguousarray(x)
    if bn_param["mode"] != "train":
        scale, shift = norms.running_scale_shift(gamma, beta, bn_param, x)
        if not scale.dtype == shift.dtype == x.dtype:  # numpy would compute in the wider dtype
            normalized = norms.batchnorm_forward(x, gamma, beta, bn_param)[0]
            return layers.relu_forward(normalized)[0], (normalized,)
        normalized, out = kernels.scale_shift_relu(x, scale, shift)
        return out, (normalized,)
    mean, inv_std = _statistics(x, bn_param)
    x_hat, normalized_x, out = kernels.normalize_relu(x, mean, inv_std, gamma, beta)
    return out, (x_hat, gamma, inv_std, normalized_x)


def batchnorm_relu_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Backward of batchnorm_relu_forward: layers.relu_backward then batchnorm_backward, in one call.
    Shapes: dout (N, D) -> dx (N, D), dgamma, dbeta (D,)."""
    x_hat, gamma, inv_std, normalized_x = cache
    return kernels.normalize_relu_backward(np.ascontiguousarray(dout), normalized_x, x_hat, gamma, inv_std)


def spatial_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """conv.spatial_batchnorm_forward on the (N*H*W, C) view of channels-last x; out is
    channels-last in memory. Shapes: x (N, C, H, W) -> out (N, C, H, W)."""
    n, c, h, w = x.shape
    out, cache = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W) (channels-last in memory), dgamma, dbeta (C,)."""
    n, c, h, w = dout.shape
    dx, dgamma, dbeta = batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, c), cache)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def batchnorm_maxpool_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Spatial batch norm (train mode) then a 2x2 max pool of stride 2, without materializing the
    normalized map: the same function as conv.spatial_batchnorm_forward followed by
    conv.max_pool_forward_fast. The cache keeps x (the conv output) and the winners, not x_hat.
    Shapes: x (N, C, H, W) with H, W even -> out (N, C, H/2, W/2), channels-last in memory."""
    n, c, h, w = x.shape
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    mean, inv_std = _statistics(x_last.reshape(-1, c), bn_param)
    out, won = kernels.normalize_maxpool(x_last, mean, inv_std, gamma, beta)
    return out.transpose(0, 3, 1, 2), (x_last, won, mean, inv_std, gamma, beta)


def batchnorm_maxpool_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H/2, W/2) -> dx (N, C, H, W) (channels-last in memory), dgamma, dbeta (C,)."""
    x_last, won, mean, inv_std, gamma, _ = cache
    dpool = np.ascontiguousarray(dout.transpose(0, 2, 3, 1))
    dx, dgamma, dbeta = kernels.normalize_maxpool_backward(dpool, won, x_last, mean, inv_std, gamma)
    return dx.transpose(0, 3, 1, 2), dgamma, dbeta


def max_pool_forward(x: Array, pool_param: dict) -> tuple[Array, Cache]:
    """conv.max_pool_forward_fast in one compiled pass when 2x2 windows of stride 2 tile x (every
    conv net's pool), the same bytes and cache; other windows are the numpy layer's.
    Shapes: x (N, C, H, W) -> out (N, C, H', W'), channels-last in memory."""
    if not conv.tiled_2x2(x.shape, pool_param):
        return conv.max_pool_forward_fast(x, pool_param)
    out, won = kernels.maxpool(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    return out.transpose(0, 3, 1, 2), (won, x.shape, pool_param)


def max_pool_backward(dout: Array, cache: Cache) -> Array:
    """Backward of max_pool_forward (conv.max_pool_backward_fast's bytes).
    Shapes: dout (N, C, H', W') -> dx (N, C, H, W), channels-last in memory."""
    won, shape, pool_param = cache
    if not conv.tiled_2x2(shape, pool_param):
        return conv.max_pool_backward_fast(dout, cache)
    dx = kernels.maxpool_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)), won, shape[2], shape[3])
    return dx.transpose(0, 3, 1, 2)


def normalized(cache: Cache) -> Array:
    """The normalized map (N, C, H, W) of a batchnorm_maxpool_forward cache, as the unfused
    spatial batch norm outputs it: for recording what the activation sees, beside the step."""
    x_last, _, mean, inv_std, gamma, beta = cache
    n, h, w, c = x_last.shape
    out = kernels.normalize(x_last.reshape(-1, c), mean, inv_std, gamma, beta)[1]
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def conv_forward(x: Array, w: Array, b: Array, conv_param: dict) -> tuple[Array, Cache]:
    """conv.conv_forward_fast with im2col as one compiled pass (windows read from x channels-last,
    padding written as zeros, no padded copy). Same cache, same bytes.
    Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W'), channels-last in memory."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, _, _, _ = x.shape
    f, c, hh, ww = w.shape
    h_out, w_out = conv.conv_output_shape(x.shape, w.shape, conv_param)[2:]
    cols = kernels.im2col(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), hh, ww, pad, stride, h_out, w_out)
    out = cols @ w.transpose(2, 3, 1, 0).reshape(hh * ww * c, f)
    out += b
    return out.reshape(n, h_out, w_out, f).transpose(0, 3, 1, 2), (cols, w, x.shape, conv_param)


def conv_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """conv.conv_backward_fast with the windows' gradient as one matrix product and col2im as one
    compiled pass that adds each window back in a fixed order.
    Shapes: dout (N, F, H', W') -> dx (N, C, H, W) (channels-last in memory), dw (F, C, HH, WW), db (F,)."""
    cols, w, x_shape, conv_param = cache
    n, c, h, w_in = x_shape
    f, _, hh, ww = w.shape
    dout_flat = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, f)
    dw, db = conv.conv_param_grads(dout_flat, cols, w.shape)
    dcols = dout_flat @ w.transpose(0, 2, 3, 1).reshape(f, hh * ww * c)
    h_out, w_out = dout.shape[2:]
    dx = kernels.col2im(dcols, n, h, w_in, c, hh, ww, conv_param["pad"], conv_param["stride"], h_out, w_out)
    return dx.transpose(0, 3, 1, 2), dw, db


def adam(w: Array, dw: Array, config: dict | None = None) -> tuple[Array, dict]:
    """optim.adam in one compiled pass instead of twelve, in place: w becomes next_w (and is
    returned), which spares the Solver's flat buffer a copy. The same state in config and the same
    bytes (each numpy pass's scalar, cast to w's dtype as numpy casts it, in the same order)."""
    config = optim.with_defaults("adam", config)
    for key in ("m", "v"):
        if config.get(key) is None:  # optim.state's zeros, aligned
            config[key] = aligned_zeros(w.shape, w.dtype)
    # contiguous, so that the flat views below are the arrays the kernel updates in place
    w, m, v = (np.ascontiguousarray(a) for a in (w, config["m"], config["v"]))
    beta1, beta2 = config["beta1"], config["beta2"]
    t = config["t"] = config.get("t", 0) + 1
    scalar = w.dtype.type
    kernels.adam_update(
        w.reshape(-1), np.ascontiguousarray(dw).reshape(-1), m.reshape(-1), v.reshape(-1),
        scalar(beta1), scalar(1 - beta1), scalar(beta2), scalar(1 - beta2),
        scalar(1 / math.sqrt(1 - beta2**t)), scalar(config["epsilon"]),
        scalar(config["learning_rate"] / (1 - beta1**t)),
    )  # fmt: skip
    config["m"], config["v"] = m, v
    return w, config


def aligned_zeros(shape: int | tuple[int, ...], dtype: type) -> Array:
    """np.zeros(shape, dtype) starting on a 64-byte boundary, where numpy starts arrays on 16-byte
    ones: a compiled loop over arrays that start between two 32-byte boundaries splits half its
    vector loads and stores across cache lines (Adam over the Solver's flat buffers: 2.6x slower)."""
    nbytes = math.prod(np.atleast_1d(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)


# The update rules the Solver applies: optim's numpy rules, Adam compiled (in place).
UPDATE_RULES = {**optim.UPDATE_RULES, "adam": adam}


def warm_up(dtypes: tuple[type, ...] = (np.float32, np.float64)) -> tuple[int, float]:
    """Run every layer above once on tiny arrays of each dtype, so that its kernels are compiled
    (or loaded from the disk cache) now rather than inside the first training step. Returns how
    many kernel signatures had to be compiled (0: all came from the cache) and the seconds it took."""
    start = time.perf_counter()
    before = _compiled()
    rng = np.random.RandomState(0)
    for dtype in dtypes:
        x = rng.randn(2, 3, 4, 4).astype(dtype)
        w = rng.randn(4, 3, 3, 3).astype(dtype)
        h, conv_cache = conv_forward(x, w, np.zeros(4, dtype), {"stride": 1, "pad": 1})  # x: (N, C, H, W) layout
        gamma, beta = np.ones(4, dtype), np.zeros(4, dtype)
        out, cache = batchnorm_maxpool_forward(h, gamma, beta, {"mode": "train"})
        dh = batchnorm_maxpool_backward(out, cache)[0]
        pooled, pool_cache = max_pool_forward(h, {"pool_height": 2, "pool_width": 2, "stride": 2})
        max_pool_backward(pooled, pool_cache)
        conv_backward(dh, conv_cache)
        conv_forward(dh, w.repeat(2, axis=1)[:, :4], np.zeros(4, dtype), {"stride": 1, "pad": 1})  # channels-last x
        flat, flat_cache = batchnorm_forward(rng.randn(3, 4).astype(dtype), gamma, beta, {"mode": "train"})
        batchnorm_backward(flat, flat_cache)
        bn_param = {"mode": "train"}
        flat, flat_cache = batchnorm_relu_forward(flat, gamma, beta, bn_param)
        batchnorm_relu_backward(flat, flat_cache)
        batchnorm_relu_forward(flat, gamma, beta, {**bn_param, "mode": "test"})
        adam(gamma, beta)
    return _compiled() - before, time.perf_counter() - start


def _compiled() -> int:
    """Kernel signatures compiled in this process (numba counts the cache's misses)."""
    dispatchers = [getattr(kernels, name) for name in dir(kernels)]
    return sum(sum(d.stats.cache_misses.values()) for d in dispatchers if hasattr(d, "stats"))
