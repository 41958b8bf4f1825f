"""First-order update rules, each `update(w, dw, config) -> (next_w, config)`.

`config` holds the hyperparameters and the rule's state (velocity, moments); a missing
hyperparameter takes the notebooks' default from DEFAULTS on the first call, and the same dict
must be passed back on the next step. State arrays take the dtype of w; w itself is not modified.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray

DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}


def with_defaults(rule: str, config: dict | None) -> dict:
    config = {} if config is None else config
    for key, value in DEFAULTS[rule].items():
        config.setdefault(key, value)
    return config


def state(config: dict, key: str, w: Array) -> Array:
    """The rule's state array `key` in config, zeros like w before the first step."""
    state = config.get(key)
    return np.zeros_like(w) if state is None else state


def sgd(w: Array, dw: Array, config: dict | None = None) -> tuple[Array, dict]:
    """Vanilla SGD: next_w = w - learning_rate * dw."""
    config = with_defaults("sgd", config)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w: Array, dw: Array, config: dict | None = None) -> tuple[Array, dict]:
    """SGD with momentum: v = momentum * v - learning_rate * dw; next_w = w + v (v starts at 0)."""
    config = with_defaults("sgd_momentum", config)
    v = state(config, "velocity", w)
    v = config["momentum"] * v - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config


def rmsprop(w: Array, dw: Array, config: dict | None = None) -> tuple[Array, dict]:
    """RMSProp: cache = decay_rate * cache + (1 - decay_rate) * dw**2 (cache starts at 0);
    next_w = w - learning_rate * dw / (sqrt(cache) + epsilon).
    """
    config = with_defaults("rmsprop", config)
    cache = state(config, "cache", w)
    cache = config["decay_rate"] * cache + (1 - config["decay_rate"]) * (dw * dw)
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"]), config


def adam(w: Array, dw: Array, config: dict | None = None) -> tuple[Array, dict]:
    """Adam with bias correction; t (starting at 0) is incremented before the correction.

    m = beta1 * m + (1 - beta1) * dw;  v = beta2 * v + (1 - beta2) * dw**2
    next_w = w - learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)
    """
    config = with_defaults("adam", config)
    m, v = state(config, "m", w), state(config, "v", w)
    beta1, beta2 = config["beta1"], config["beta2"]
    t = config["t"] = config.get("t", 0) + 1
    # Memory-bound: each line is a pass over all parameters, so the moments are updated in place
    # and one scratch buffer serves every temporary and becomes next_w.
    m *= beta1
    scratch = np.multiply(dw, 1 - beta1)
    m += scratch
    v *= beta2
    np.multiply(dw, dw, out=scratch)
    scratch *= 1 - beta2
    v += scratch
    config["m"], config["v"] = m, v
    # the bias corrections folded into scalars: sqrt(v / c2) = sqrt(v) / sqrt(c2)
    np.sqrt(v, out=scratch)
    scratch *= 1 / math.sqrt(1 - beta2**t)
    scratch += config["epsilon"]
    np.divide(m, scratch, out=scratch)
    scratch *= config["learning_rate"] / (1 - beta1**t)
    return np.subtract(w, scratch, out=scratch), config


UPDATE_RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}
