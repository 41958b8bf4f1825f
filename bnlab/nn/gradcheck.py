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
    return _central_differences(x, h, f, lambda plus, minus: plus - minus)


def eval_numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, df: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Gradient of sum(f(x) * df) at x for an array-valued f: the backward pass that df drives."""
    return _central_differences(x, h, lambda x: f(x).copy(), lambda plus, minus: np.sum((plus - minus) * df))


def _central_differences(x: np.ndarray, h: float, value: Callable, difference: Callable) -> np.ndarray:
    """grad[i] = difference(value(x + h e_i), value(x - h e_i)) / 2h for every index i of x,
    perturbing x in place and restoring it."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = value(x)
        x[i] = old - h
        minus = value(x)
        x[i] = old
        grad[i] = difference(plus, minus) / (2 * h)
        it.iternext()
    return grad
