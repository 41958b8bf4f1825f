"""Numerical gradients by centred differences, and the relative error used to compare them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rel_error(x: np.ndarray, y: np.ndarray) -> float:
    """max |x - y| / max(1e-8, |x| + |y|), elementwise: 0 for equal arrays, 1 for opposite ones."""
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, verbose: bool = False, h: float = 1e-5
) -> np.ndarray:
    """Gradient of the scalar f at x, one coordinate at a time: (f(x + h) - f(x - h)) / 2h.

    x is perturbed in place and restored, so f may read x through a closure (a model's params).
    `verbose` is accepted so notebook calls port unchanged; bnlab never prints.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f(x)
        x[i] = old - h
        f_minus = f(x)
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
        it.iternext()
    return grad


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of sum(f(x) * df) at x for an array-valued f: the backward pass that df drives."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        pos = f(x).copy()
        x[i] = old - h
        neg = f(x).copy()
        x[i] = old
        grad[i] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad
