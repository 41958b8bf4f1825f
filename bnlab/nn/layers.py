"""Layers of a neural network, one function per pass: affine, activations, dropout, softmax loss.

Every `*_forward` returns `(out, cache)`; every `*_backward` takes `(dout, cache)` and returns the
gradients with respect to the forward inputs, in the order of the forward signature. Arrays keep
the dtype they come in with, so a float32 net trains in float32 and a float64 check stays exact.
Normalizations live in bnlab.nn.norms, convolution, pooling and spatial norms in bnlab.nn.conv.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray
Cache = tuple[Any, ...]


# --- affine and activations ------------------------------------------------------------------


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


def leaky_relu_forward(x: Array, negative_slope: float = 0.01) -> tuple[Array, Cache]:
    """out = x where x > 0, else negative_slope * x, any shape (0.01: ie590's and PyTorch's default)."""
    return np.where(x > 0, x, x * x.dtype.type(negative_slope)), (x, negative_slope)


def leaky_relu_backward(dout: Array, cache: Cache) -> Array:
    """The gradient passes where the input was positive and is scaled by the slope elsewhere."""
    x, negative_slope = cache
    return np.where(x > 0, dout, dout * dout.dtype.type(negative_slope))


def sigmoid_forward(x: Array) -> tuple[Array, Cache]:
    """out = 1 / (1 + exp(-x)), any shape, computed from z = exp(-|x|) <= 1 so that no input
    overflows: 1 / (1 + z) for x >= 0 and z / (1 + z) for x < 0."""
    z = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1, z) / (1 + z)
    return out, (out,)


def sigmoid_backward(dout: Array, cache: Cache) -> Array:
    """d sigmoid / dx = out * (1 - out)."""
    (out,) = cache
    return dout * out * (1 - out)


def tanh_forward(x: Array) -> tuple[Array, Cache]:
    """out = tanh(x), any shape."""
    out = np.tanh(x)
    return out, (out,)


def tanh_backward(dout: Array, cache: Cache) -> Array:
    """d tanh / dx = 1 - out**2."""
    (out,) = cache
    return dout * (1 - out * out)


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


# --- the activation table: name -> (forward, backward) ----------------------------------------
# Each forward takes one array (leaky_relu also its slope, which the net binds), each backward
# (dout, cache).

ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
}
