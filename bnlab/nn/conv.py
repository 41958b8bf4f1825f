"""Convolutional layers: spatial normalizations of x (N, C, H, W), one function per pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.nn import norms

Array = np.ndarray
Cache = tuple[Any, ...]


# --- spatial (convolutional) normalization ---------------------------------------------------


def spatial_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch normalization of x (N, C, H, W) per channel, over N, H and W.

    gamma, beta (C,); bn_param as for batchnorm_forward. Implemented as batchnorm_forward on the
    (N*H*W, C) view of the channels-last array.
    """
    n, c, h, w = x.shape
    flat = x.transpose(0, 2, 3, 1).reshape(-1, c)
    out, cache = norms.batchnorm_forward(flat, gamma, beta, bn_param)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), cache


def spatial_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Shapes: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    n, c, h, w = dout.shape
    flat = dout.transpose(0, 2, 3, 1).reshape(-1, c)
    dx, dgamma, dbeta = norms.batchnorm_backward_alt(flat, cache)
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
