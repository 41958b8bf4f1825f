"""Convolutional layers of x (N, C, H, W): convolution, max and average pooling, spatial normalizations.

CS231n's names and conventions: w (F, C, HH, WW), conv_param {'stride', 'pad'}, pool_param
{'pool_height', 'pool_width', 'stride'}; forward returns (out, cache), backward takes (dout, cache).
The *_naive functions are plain loops, the readable reference; the *_fast ones are vectorized numpy.

Memory layout. The fast layers compute channels-last: they read x through x.transpose(0, 2, 3, 1)
and return their (N, C, H, W) result as a transposed view of an (N, H, W, C) array (PyTorch's
"channels_last" memory format). Shapes and values are the NCHW ones, so any numpy code may use
them; a chain of fast layers never transposes in memory, because each one's channels-last view of
the previous output is already contiguous, and the normalization's (N*H*W, C) view of it is free.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from bnlab.nn import norms

Array = np.ndarray
Cache = tuple[Any, ...]


def _output_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    return 1 + (size + 2 * pad - kernel) // stride


def conv_output_shape(x_shape: tuple[int, ...], w_shape: tuple[int, ...], conv_param: dict) -> tuple[int, ...]:
    """(N, F, H', W') of the convolution of x (N, C, H, W) with filters w (F, C, HH, WW)."""
    stride, pad = conv_param["stride"], conv_param["pad"]
    h_out = _output_size(x_shape[2], w_shape[2], stride, pad)
    return x_shape[0], w_shape[0], h_out, _output_size(x_shape[3], w_shape[3], stride, pad)


def conv_sizes(hw: tuple[int, int], blocks: int, kernel_size: int, pad: int) -> list[tuple[int, int]]:
    """(H, W) of the input and after each conv block (a KxK stride-1 conv padded by `pad`, then a
    2x2 pool of stride 2, which drops an odd last row or column)."""
    sizes = [tuple(hw)]
    for _ in range(blocks):
        h, w = (s + 2 * pad - kernel_size + 1 for s in sizes[-1])
        sizes.append((h // 2, w // 2) if min(h, w) >= 2 else (0, 0))
    return sizes


def _channels_last(x: Array) -> Array:
    """x (N, C, H, W) as a C-contiguous (N, H, W, C) array: a view when x is channels-last in
    memory (what the fast layers return), one copy otherwise."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# --- convolution -----------------------------------------------------------------------------


def conv_forward_naive(x: Array, w: Array, b: Array, conv_param: dict) -> tuple[Array, Cache]:
    """Convolution (cross-correlation, as every deep-learning library) by loops over every output.

    Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W') with
    H' = 1 + (H + 2 * pad - HH) // stride, W' likewise. x is zero-padded by `pad` on each side.
    """
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, f, h_out, w_out = conv_output_shape(x.shape, w.shape, conv_param)
    hh, ww = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, f, h_out, w_out), dtype=x.dtype)
    for i in range(n):
        for k in range(f):
            for r in range(h_out):
                for c in range(w_out):
                    window = xp[i, :, r * stride : r * stride + hh, c * stride : c * stride + ww]
                    out[i, k, r, c] = np.sum(window * w[k]) + b[k]
    return out, (x, w, conv_param)


def conv_backward_naive(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Each output's gradient flows back to the window and the filter that made it.

    Shapes: dout (N, F, H', W') -> dx (N, C, H, W), dw (F, C, HH, WW), db (F,).
    """
    x, w, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, _, h, w_in = x.shape
    f, _, hh, ww = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for i in range(n):
        for k in range(f):
            for r in range(dout.shape[2]):
                for c in range(dout.shape[3]):
                    rows, cols = slice(r * stride, r * stride + hh), slice(c * stride, c * stride + ww)
                    dw[k] += dout[i, k, r, c] * xp[i, :, rows, cols]
                    dxp[i, :, rows, cols] += dout[i, k, r, c] * w[k]
    return dxp[:, :, pad : pad + h, pad : pad + w_in], dw, db


def conv_forward_fast(x: Array, w: Array, b: Array, conv_param: dict) -> tuple[Array, Cache]:
    """Convolution as one matrix product (im2col), the same function as conv_forward_naive.

    The zero-padded input is copied once, channels-last, into xp (N, H+2p, W+2p, C); the windows
    are a strided view of it, (N, H', W', HH, WW*C), since a window row's WW*C values are
    contiguous there; they are copied once into cols (N*H'*W', HH*WW*C), and out = cols @ w_mat + b
    is directly the channels-last output. The cache keeps cols (for dw) and w (for dx), not x.
    Shapes: x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, H', W'), channels-last in memory.
    """
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, c, h, w_in = x.shape
    f, _, hh, ww = w.shape
    h_out, w_out = conv_output_shape(x.shape, w.shape, conv_param)[2:]

    xp = np.zeros((n, h + 2 * pad, w_in + 2 * pad, c), dtype=x.dtype)
    xp[:, pad : pad + h, pad : pad + w_in, :] = x.transpose(0, 2, 3, 1)
    s_n, s_h, s_w, s_c = xp.strides
    windows = as_strided(
        xp, shape=(n, h_out, w_out, hh, ww * c), strides=(s_n, s_h * stride, s_w * stride, s_h, s_c), writeable=False
    )
    cols = np.empty((n * h_out * w_out, hh * ww * c), dtype=x.dtype)
    cols.reshape(windows.shape)[...] = windows
    w_mat = w.transpose(2, 3, 1, 0).reshape(hh * ww * c, f)  # rows in the (HH, WW, C) order of cols
    out = cols @ w_mat
    out += b
    return out.reshape(n, h_out, w_out, f).transpose(0, 3, 1, 2), (cols, w, x.shape, conv_param)


def conv_backward_fast(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Backward of conv_forward_fast: dw = cols.T @ dout; the gradient of the windows, dcols, as one
    stacked matrix product laid out (HH, WW, N, H', W', C), so that col2im is one vectorized add of
    a contiguous block per kernel offset into a strided slice of dx (HH*WW adds, no loop over
    samples or pixels).

    Shapes: dout (N, F, H', W') -> dx (N, C, H, W) (channels-last in memory), dw (F, C, HH, WW), db (F,).
    """
    cols, w, x_shape, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    n, c, h, w_in = x_shape
    f, _, hh, ww = w.shape
    dout_flat = _channels_last(dout).reshape(-1, f)
    dw, db = conv_param_grads(dout_flat, cols, w.shape)

    h_out, w_out = dout.shape[2:]
    dcols = np.matmul(dout_flat, w.transpose(2, 3, 0, 1)).reshape(hh, ww, n, h_out, w_out, c)
    dxp = np.zeros((n, h + 2 * pad, w_in + 2 * pad, c), dtype=dout.dtype)
    for i in range(hh):
        for j in range(ww):
            dxp[:, i : i + stride * h_out : stride, j : j + stride * w_out : stride, :] += dcols[i, j]
    return dxp[:, pad : pad + h, pad : pad + w_in, :].transpose(0, 3, 1, 2), dw, db


def conv_backward_fast_params(dout: Array, cache: Cache) -> tuple[Array, Array]:
    """conv_backward_fast without dx: a net's first layer, whose input gradient nobody needs.

    Shapes: dout (N, F, H', W') -> dw (F, C, HH, WW), db (F,).
    """
    cols, w, _, _ = cache
    return conv_param_grads(_channels_last(dout).reshape(-1, w.shape[0]), cols, w.shape)


def conv_param_grads(dout_flat: Array, cols: Array, w_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """dw (F, C, HH, WW) and db (F,) from the output gradient, channels-last (N*H'*W', F), and the
    windows cols of the forward pass."""
    f, c, hh, ww = w_shape
    dw = (cols.T @ dout_flat).reshape(hh, ww, c, f).transpose(3, 2, 0, 1)
    return np.ascontiguousarray(dw), dout_flat.sum(axis=0)


# --- pooling: the windows --------------------------------------------------------------------


def _pooled_size(shape: tuple[int, ...], pool_param: dict) -> tuple[int, int]:
    """(H', W') of a pool's output for an input of shape (N, C, H, W)."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    return _output_size(shape[2], ph, stride), _output_size(shape[3], pw, stride)


def _windows(pool_param: dict, h_out: int, w_out: int):
    """For each output position (r, col) of a pool, (r, col, rows, cols): the slices of the input
    its window reads. The naive passes loop over these."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    for r in range(h_out):
        for col in range(w_out):
            yield r, col, slice(r * stride, r * stride + ph), slice(col * stride, col * stride + pw)


def _pool_naive(x: Array, pool_param: dict, reduce) -> Array:
    """reduce (np.max, np.mean) over each window, one output position at a time. Shapes: x
    (N, C, H, W) -> (N, C, H', W')."""
    out = np.zeros((*x.shape[:2], *_pooled_size(x.shape, pool_param)), dtype=x.dtype)
    for r, col, rows, cols in _windows(pool_param, *out.shape[2:]):
        out[:, :, r, col] = reduce(x[:, :, rows, cols], axis=(2, 3))
    return out


def _offset_views(xl: Array, pool_param: dict, h_out: int, w_out: int):
    """For each window offset k = a * pool_width + b, in row-major order, (k, the strided view
    xl[:, a::stride, b::stride, :] of h_out x w_out positions) of a channels-last array (N, H, W,
    C): the fast passes loop over these, one vectorized operation per offset."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    for k in range(ph * pw):
        a, b = divmod(k, pw)
        yield k, xl[:, a : a + stride * h_out : stride, b : b + stride * w_out : stride, :]


def _pool_grad(shape: tuple[int, int, int, int], pool_param: dict, dout: Array) -> tuple[Array, bool]:
    """The channels-last (N, H, W, C) buffer of a pool's input gradient, and whether the windows
    tile the input (every input in exactly one window: the buffer need not start at zero)."""
    n, c, h, w = shape
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    h_out, w_out = dout.shape[2:]
    tiles = ph == pw == stride and h == ph * h_out and w == pw * w_out
    return (np.empty if tiles else np.zeros)((n, h, w, c), dtype=dout.dtype), tiles


def tiled_2x2(shape: tuple[int, ...], pool_param: dict) -> bool:
    """Whether 2x2 windows of stride 2 tile an input of shape (N, C, H, W): every conv net's pool,
    which the fast and the compiled max pools take a road of their own for."""
    two = pool_param["pool_height"] == pool_param["pool_width"] == pool_param["stride"] == 2
    return two and shape[2] % 2 == 0 and shape[3] % 2 == 0


# --- max pooling -----------------------------------------------------------------------------


def max_pool_forward_naive(x: Array, pool_param: dict) -> tuple[Array, Cache]:
    """Max over each pool_height x pool_width window, windows `stride` apart, no padding.

    Shapes: x (N, C, H, W) -> out (N, C, H', W'), H' = 1 + (H - pool_height) // stride.
    """
    return _pool_naive(x, pool_param, np.max), (x, pool_param)


def max_pool_backward_naive(dout: Array, cache: Cache) -> Array:
    """Each window's gradient goes to its maximum (the first one, row by row, on ties).

    Shapes: dout (N, C, H', W') -> dx (N, C, H, W).
    """
    x, pool_param = cache
    dx = np.zeros_like(x)
    for i in range(x.shape[0]):
        for k in range(x.shape[1]):
            for r, col, rows, cols in _windows(pool_param, *dout.shape[2:]):
                window = x[i, k, rows, cols]
                a, b = np.unravel_index(np.argmax(window), window.shape)
                dx[i, k, rows.start + a, cols.start + b] += dout[i, k, r, col]
    return dx


def max_pool_forward_fast(x: Array, pool_param: dict) -> tuple[Array, Cache]:
    """max_pool_forward_naive vectorized over the window offsets, the same function.

    2x2 windows that tile the input (stride 2, even H and W: every conv net's pool) take the fast
    road: the maximum of each row's pair of columns, then of the pair of rows, as contiguous views
    of the channels-last input. Other windows fall back to a running maximum over the
    pool_height * pool_width strided views x[:, :, a::stride, b::stride]. The cache keeps only
    which offset won (uint8, the first in row-major order on ties, as the naive pass): 1/16 of the
    input's bytes in float32.
    Shapes: x (N, C, H, W) -> out (N, C, H', W'), channels-last in memory.
    """
    n, c, h, w = x.shape
    h_out, w_out = _pooled_size(x.shape, pool_param)
    if tiled_2x2(x.shape, pool_param):
        pairs = _channels_last(x).reshape(n, h, w_out, 2, c)
        left, right = pairs[..., 0, :], pairs[..., 1, :]
        row_max = np.maximum(left, right).reshape(n, h_out, 2, w_out, c)
        row_arg = np.greater(right, left).view(np.uint8).reshape(n, h_out, 2, w_out, c)  # 1: right column
        top, bottom = row_max[:, :, 0], row_max[:, :, 1]
        argmax = np.where(bottom > top, row_arg[:, :, 1] + np.uint8(2), row_arg[:, :, 0])  # offsets 0..3
        out = np.maximum(top, bottom)
    else:
        views = _offset_views(x.transpose(0, 2, 3, 1), pool_param, h_out, w_out)
        out = next(views)[1].copy()
        argmax = np.zeros(out.shape, dtype=np.uint8)
        for k, candidate in views:
            np.copyto(argmax, k, where=candidate > out)
            np.maximum(out, candidate, out=out)
    return out.transpose(0, 3, 1, 2), (argmax, x.shape, pool_param)


def max_pool_backward_fast(dout: Array, cache: Cache) -> Array:
    """Backward of max_pool_forward_fast: for each window offset, dout where that offset won.

    Windows that tile the input write each input once; others accumulate into zeros.
    Shapes: dout (N, C, H', W') -> dx (N, C, H, W), channels-last in memory.
    """
    argmax, shape, pool_param = cache
    dx, tiles = _pool_grad(shape, pool_param, dout)
    dout_l = dout.transpose(0, 2, 3, 1)
    for k, view in _offset_views(dx, pool_param, *argmax.shape[1:3]):
        if tiles:
            np.multiply(dout_l, argmax == k, out=view)
        else:
            view += dout_l * (argmax == k)
    return dx.transpose(0, 3, 1, 2)


# --- average pooling -------------------------------------------------------------------------


def avg_pool_forward_naive(x: Array, pool_param: dict) -> tuple[Array, Cache]:
    """Mean over each pool_height x pool_width window, windows `stride` apart, no padding (LeNet's
    subsampling, PyTorch's AvgPool2d).

    Shapes: x (N, C, H, W) -> out (N, C, H', W'), H' = 1 + (H - pool_height) // stride.
    """
    return _pool_naive(x, pool_param, np.mean), (x.shape, pool_param)


def avg_pool_backward_naive(dout: Array, cache: Cache) -> Array:
    """Each window's gradient is shared equally by its pool_height * pool_width inputs.

    Shapes: dout (N, C, H', W') -> dx (N, C, H, W).
    """
    x_shape, pool_param = cache
    size = pool_param["pool_height"] * pool_param["pool_width"]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for r, col, rows, cols in _windows(pool_param, *dout.shape[2:]):
        dx[:, :, rows, cols] += (dout[:, :, r, col] / size)[:, :, None, None]
    return dx


def avg_pool_forward_fast(x: Array, pool_param: dict) -> tuple[Array, Cache]:
    """avg_pool_forward_naive vectorized over the window offsets: the sum of the pool_height *
    pool_width strided channels-last views x[:, a::stride, b::stride, :], divided once.

    Shapes: x (N, C, H, W) -> out (N, C, H', W'), channels-last in memory.
    """
    n, c = x.shape[:2]
    h_out, w_out = _pooled_size(x.shape, pool_param)
    out = np.zeros((n, h_out, w_out, c), dtype=x.dtype)
    for _, view in _offset_views(x.transpose(0, 2, 3, 1), pool_param, h_out, w_out):
        out += view
    out /= pool_param["pool_height"] * pool_param["pool_width"]
    return out.transpose(0, 3, 1, 2), (x.shape, pool_param)


def avg_pool_backward_fast(dout: Array, cache: Cache) -> Array:
    """Backward of avg_pool_forward_fast: dout / (pool_height * pool_width) added into each
    offset's strided view (written once per input when the windows tile it).

    Shapes: dout (N, C, H', W') -> dx (N, C, H, W), channels-last in memory.
    """
    shape, pool_param = cache
    share = dout.transpose(0, 2, 3, 1) / dout.dtype.type(pool_param["pool_height"] * pool_param["pool_width"])
    dx, tiles = _pool_grad(shape, pool_param, dout)
    for _, view in _offset_views(dx, pool_param, *dout.shape[2:]):
        if tiles:
            view[...] = share
        else:
            view += share
    return dx.transpose(0, 3, 1, 2)


# --- spatial (convolutional) normalization ---------------------------------------------------


def spatial_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W.

    gamma, beta (C,); bn_param as for batchnorm_forward. Implemented as batchnorm_forward on the
    (N*H*W, C) view of the channels-last array (free when x is channels-last in memory); out is
    channels-last in memory.
    """
    n, c, h, w = x.shape
    flat = _channels_last(x).reshape(-1, c)
    out, cache = norms.batchnorm_forward(flat, gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    n, c, h, w = dout.shape
    flat = _channels_last(dout).reshape(-1, c)
    dx, dgamma, dbeta = norms.batchnorm_backward_alt(flat, cache)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_frozen_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch norm of x (N, C, H, W) per channel with fixed statistics (norms.frozen_batchnorm_forward
    on the (N*H*W, C) view); out is channels-last in memory."""
    n, c, h, w = x.shape
    out, cache = norms.frozen_batchnorm_forward(_channels_last(x).reshape(-1, c), gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_frozen_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    n, c, h, w = dout.shape
    dx, dgamma, dbeta = norms.frozen_batchnorm_backward(_channels_last(dout).reshape(-1, c), cache)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x: Array, gamma: Array, beta: Array, G: int, gn_param: dict) -> tuple[Array, Cache]:
    """Group normalization of x (N, C, H, W): channels split into G groups, each group normalized
    over its channels and all H, W positions of one sample. G = 1 is layer normalization over
    (C, H, W). gamma, beta: C values, shaped (C,) or (1, C, 1, 1); gn_param may hold 'eps' (1e-5).

    Computed on the channels-last (N, H*W, C) view: sums over H*W per channel first (a reduction
    with a contiguous inner axis), then over each group's channels; out is channels-last in memory.
    """
    eps = gn_param.get("eps", 1e-5)
    n, c, h, w = x.shape
    xl = _channels_last(x).reshape(n, h * w, c)
    x_hat = xl - _group_mean(xl.sum(axis=1), G, h * w)
    inv_std = 1.0 / np.sqrt(_group_mean(np.einsum("npc,npc->nc", x_hat, x_hat), G, h * w) + eps)
    x_hat *= inv_std
    out = x_hat * gamma.reshape(c)
    out += beta.reshape(c)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), (x_hat, gamma, inv_std, G)


def spatial_groupnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """The group-norm closed form per (sample, group), with dx_hat = gamma * dout:
        dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)).
    Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma and dbeta shaped as gamma.
    """
    x_hat, gamma, inv_std, G = cache
    n, hw, c = x_hat.shape
    dout_l = _channels_last(dout).reshape(n, hw, c)
    dbeta = dout_l.sum(axis=(0, 1)).reshape(gamma.shape)
    dgamma = np.einsum("npc,npc->c", dout_l, x_hat).reshape(gamma.shape)
    dx_hat = dout_l * gamma.reshape(c)
    dx = dx_hat - _group_mean(dx_hat.sum(axis=1), G, hw)
    dx -= x_hat * _group_mean(np.einsum("npc,npc->nc", dx_hat, x_hat), G, hw)
    dx *= inv_std
    return dx.reshape(n, *dout.shape[2:], c).transpose(0, 3, 1, 2), dgamma, dbeta


def _group_mean(channel_sums: Array, G: int, positions: int) -> Array:
    """Per-channel sums over the positions (N, C) -> each group's mean, repeated for each of its
    channels, shaped (N, 1, C) to broadcast against (N, H*W, C)."""
    n, c = channel_sums.shape
    means = channel_sums.reshape(n, G, c // G).sum(axis=2) / (positions * (c // G))
    return np.repeat(means, c // G, axis=1)[:, None, :]


def spatial_ghost_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Ghost batch norm of x (N, C, H, W): spatial batch norm of each virtual batch of
    bn_param['ghost_batch_size'] images, over its images' positions (norms.virtual_batches_forward);
    test mode is spatial_batchnorm_forward's. out is channels-last in memory."""
    if bn_param["mode"] != "train":
        return spatial_batchnorm_forward(x, gamma, beta, bn_param)
    outs, caches = norms.virtual_batches_forward(spatial_batchnorm_forward, x, gamma, beta, bn_param)
    return _join_channels_last(outs), caches


def spatial_ghost_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return norms.virtual_batches_backward(spatial_batchnorm_backward, dout, cache, _join_channels_last)


def _join_channels_last(parts: list[Array]) -> Array:
    """(n_i, C, H, W) arrays joined along N, channels-last in memory as each part is."""
    return np.concatenate([p.transpose(0, 2, 3, 1) for p in parts]).transpose(0, 3, 1, 2)
