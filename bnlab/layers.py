"""Layers of a neural network, one function per pass.

Every `*_forward` returns `(out, cache)`; every `*_backward` takes `(dout, cache)` and returns the
gradients with respect to the forward inputs, in the order of the forward signature. Arrays keep
the dtype they come in with, so a float32 net trains in float32 and a float64 check stays exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray
Cache = tuple[Any, ...]


# --- affine and ReLU -------------------------------------------------------------------------


def affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
    """out = x @ w + b, where x (N, d_1, ..., d_k) is flattened to (N, D).

    Shapes: x (N, d_1, ..., d_k), w (D, M), b (M,) -> out (N, M).
    """
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, M) -> dx (N, d_1, ..., d_k), dw (D, M), db (M,)."""
    x, w = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x: Array) -> tuple[Array, Cache]:
    """out = max(0, x), any shape."""
    return np.maximum(x, 0), (x,)


def relu_backward(dout: Array, cache: Cache) -> Array:
    """The gradient passes where the input was positive."""
    (x,) = cache
    return dout * (x > 0)


# --- softmax loss ----------------------------------------------------------------------------


def softmax_loss(x: Array, y: Array) -> tuple[float, Array]:
    """Mean cross-entropy of the softmax of scores x (N, C) for labels y (N,), and dloss/dx.

    The log-sum-exp is taken after subtracting each row's maximum, so huge scores give a large
    finite loss rather than inf or nan.
    """
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -log_probs[np.arange(n), y].mean()
    dx = np.exp(log_probs)
    dx[np.arange(n), y] -= 1
    dx /= n
    return float(loss), dx


# --- batch normalization ---------------------------------------------------------------------


def batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch normalization over the batch axis of x (N, D); gamma, beta (D,).

    bn_param: 'mode' ('train' | 'test', required), 'eps' (1e-5), 'momentum' (0.9), and
    'running_mean', 'running_var' (D,), created as zeros on the first call and updated in place
    of the dict in train mode: running = momentum * running + (1 - momentum) * batch statistic.
    Train mode uses the batch mean and the biased batch variance; test mode the running ones.
    """
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    n, d = x.shape
    running_mean = bn_param.get("running_mean", np.zeros(d, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(d, dtype=x.dtype))

    if mode == "train":
        mean = x.mean(axis=0)
        x_hat = x - mean
        var = np.einsum("nd,nd->d", x_hat, x_hat) / n  # sum of squares without a temporary
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat *= inv_std
        out = x_hat * gamma
        out += beta
        cache = (x_hat, gamma, inv_std, eps)
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    elif mode == "test":
        # gamma * (x - mean) / std + beta as one scale and one shift per feature: two passes
        scale = gamma / np.sqrt(running_var + eps)
        out = x * scale
        out += beta - running_mean * scale
        cache = ()
    else:
        raise ValueError(f"invalid batchnorm mode {mode!r}: expected 'train' or 'test'")

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, cache


def batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Backward through the computation graph of batchnorm_forward, one node at a time.

    Graph: mean = sum(x) / N -> centered = x - mean -> var = sum(centered**2) / N
    -> std = sqrt(var + eps) -> inv_std = 1 / std -> x_hat = centered * inv_std
    -> out = gamma * x_hat + beta. The cache keeps x_hat and inv_std; the other nodes' values
    are recovered from them. Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    x_hat, gamma, inv_std, eps = cache
    n = dout.shape[0]
    std = 1.0 / inv_std
    centered = x_hat * std
    var = std * std - eps
    # out = gamma * x_hat + beta
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = dout * gamma
    # x_hat = centered * inv_std: centered feeds x_hat and var, so its gradient has two branches
    dinv_std = (dx_hat * centered).sum(axis=0)
    dcentered = dx_hat * inv_std
    # inv_std = 1 / std, std = sqrt(var + eps)
    dstd = -dinv_std / std**2
    dvar = dstd / (2 * np.sqrt(var + eps))
    # var = sum(centered**2) / N
    dcentered += 2 * centered * dvar / n
    # centered = x - mean, mean = sum(x) / N: x feeds both
    dmean = -dcentered.sum(axis=0)
    dx = dcentered + dmean / n
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Backward of batchnorm_forward in the closed form derived on paper.

    With dx_hat = gamma * dout, sum(dx_hat) = gamma * dbeta and sum(dx_hat * x_hat) = gamma * dgamma:
        dx = gamma * inv_std * (dout - (dbeta + x_hat * dgamma) / N)
    computed as dout * a - x_hat * b - c with per-feature a, b, c: three passes over the data.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    x_hat, gamma, inv_std = cache[:3]
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, x_hat)
    a = gamma * inv_std
    dx = dout * a
    dx -= x_hat * (a * dgamma / n)
    dx -= a * dbeta / n
    return dx, dgamma, dbeta


# --- layer normalization ---------------------------------------------------------------------


def layernorm_forward(x: Array, gamma: Array, beta: Array, ln_param: dict) -> tuple[Array, Cache]:
    """Layer normalization: each sample of x (N, D) normalized over its D features.

    gamma, beta (D,). ln_param may hold 'eps' (1e-5); there are no running statistics, so train
    and test behave the same.
    """
    eps = ln_param.get("eps", 1e-5)
    d = x.shape[1]
    x_hat = x - x.mean(axis=1, keepdims=True)
    var = np.einsum("nd,nd->n", x_hat, x_hat) / d
    inv_std = (1.0 / np.sqrt(var + eps))[:, None]
    x_hat *= inv_std
    out = x_hat * gamma
    out += beta
    return out, (x_hat, gamma, inv_std)


def layernorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """The batch-norm closed form along the feature axis, with dx_hat = gamma * dout:
        dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)), means per sample.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    x_hat, gamma, inv_std = cache
    d = dout.shape[1]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, x_hat)
    dx_hat = dout * gamma
    mean_dx_hat = dx_hat.mean(axis=1, keepdims=True)
    mean_dx_hat_x_hat = (np.einsum("nd,nd->n", dx_hat, x_hat) / d)[:, None]
    dx = dx_hat
    dx -= mean_dx_hat
    dx -= x_hat * mean_dx_hat_x_hat
    dx *= inv_std
    return dx, dgamma, dbeta


# --- group normalization, shared by the net and the spatial layer ----------------------------


def groupnorm_forward(x: Array, gamma: Array, beta: Array, G: int, gn_param: dict) -> tuple[Array, Cache]:
    """Group normalization of x (N, D): each sample's D features split into G contiguous groups.

    gamma, beta (D,). G must divide D; G = 1 is layer normalization, G = D normalizes each feature
    alone. gn_param may hold 'eps' (1e-5).
    """
    eps = gn_param.get("eps", 1e-5)
    n, d = x.shape
    grouped = x.reshape(n, G, d // G)
    mean = grouped.mean(axis=2, keepdims=True)
    centered = grouped - mean
    var = (centered * centered).mean(axis=2, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (centered * inv_std).reshape(n, d)
    out = gamma * x_hat + beta
    return out, (x_hat, gamma, inv_std, G)


def groupnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    x_hat, gamma, inv_std, G = cache
    n, d = dout.shape
    dbeta = dout.sum(axis=0)
    dgamma = (dout * x_hat).sum(axis=0)
    dx_hat = (dout * gamma).reshape(n, G, d // G)
    x_hat_g = x_hat.reshape(n, G, d // G)
    m = d // G
    dx = inv_std * (
        dx_hat - (dx_hat.sum(axis=2, keepdims=True) + x_hat_g * (dx_hat * x_hat_g).sum(axis=2, keepdims=True)) / m
    )
    return dx.reshape(n, d), dgamma, dbeta


# --- spatial (convolutional) normalization ---------------------------------------------------


def spatial_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W.

    gamma, beta (C,); bn_param as for batchnorm_forward. Implemented as batchnorm_forward on the
    (N*H*W, C) view of the channels-last array.
    """
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    out, cache = batchnorm_forward(flat, gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    n, c, h, w = dout.shape
    flat = dout.transpose(0, 2, 3, 1).reshape(-1, c)
    dx, dgamma, dbeta = batchnorm_backward_alt(flat, cache)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x: Array, gamma: Array, beta: Array, G: int, gn_param: dict) -> tuple[Array, Cache]:
    """Group normalization of x (N, C, H, W): channels split into G groups, each group normalized
    over its channels and all H, W positions of one sample. gamma, beta (1, C, 1, 1).
    """
    eps = gn_param.get("eps", 1e-5)
    n, c, h, w = x.shape
    grouped = x.reshape(n, G, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    centered = grouped - mean
    var = (centered * centered).mean(axis=2, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (centered * inv_std).reshape(n, c, h, w)
    out = gamma * x_hat + beta
    return out, (x_hat, gamma, inv_std, G)


def spatial_groupnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)."""
    x_hat, gamma, inv_std, G = cache
    n, c, h, w = dout.shape
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3), keepdims=True)
    dx_hat = (dout * gamma).reshape(n, G, -1)
    x_hat_g = x_hat.reshape(n, G, -1)
    m = x_hat_g.shape[2]
    dx = inv_std * (
        dx_hat - (dx_hat.sum(axis=2, keepdims=True) + x_hat_g * (dx_hat * x_hat_g).sum(axis=2, keepdims=True)) / m
    )
    return dx.reshape(n, c, h, w), dgamma, dbeta


# --- dropout ---------------------------------------------------------------------------------


def dropout_forward(x: Array, dropout_param: dict) -> tuple[Array, Cache]:
    """Inverted dropout: in train mode keep each unit with probability p and scale it by 1/p,
    so test mode is the identity.

    dropout_param: 'p' (keep probability in (0, 1]), 'mode' ('train' | 'test'), and optionally
    'rng' (a np.random.RandomState drawn from call after call) or 'seed' (the same mask on every
    call, for checks). With neither, numpy's global RNG is used.
    """
    p, mode = dropout_param["p"], dropout_param["mode"]
    if mode == "test" or p == 1:
        return x, (None,)
    if "rng" in dropout_param:
        rng = dropout_param["rng"]
    elif "seed" in dropout_param:
        rng = np.random.RandomState(dropout_param["seed"])
    else:
        rng = np.random
    mask = (rng.random_sample(x.shape) < p).astype(x.dtype) / x.dtype.type(p)
    return x * mask, (mask,)


def dropout_backward(dout: Array, cache: Cache) -> Array:
    """The gradient flows through the kept units, scaled as in the forward pass."""
    (mask,) = cache
    return dout if mask is None else dout * mask
