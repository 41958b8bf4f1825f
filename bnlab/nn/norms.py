"""Normalization layers over the features of x (N, D), one function per pass (the table nets read is
bnlab.nn.normalizations).

Forward passes return `(out, cache)`, backward passes take `(dout, cache)` and return
`(dx, dgamma, dbeta)`. eps is 1e-5 everywhere, as the notebooks' batch norm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.nn.layers import ACTIVATIONS

Array = np.ndarray
Cache = tuple[Any, ...]


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
    n = x.shape[0]

    if mode == "train":
        mean = x.mean(axis=0)
        x_hat = x - mean
        var = np.einsum("nd,nd->d", x_hat, x_hat) / n  # sum of squares without a temporary
        inv_std = 1.0 / np.sqrt(var + eps)
        x_hat *= inv_std
        out = x_hat * gamma
        out += beta
        cache = (x_hat, gamma, inv_std, eps)
        blend_running(bn_param, mean, var)
    elif mode == "test":
        scale, shift = running_scale_shift(gamma, beta, bn_param, x)
        out = x * scale
        out += shift
        cache = ()
    else:
        raise ValueError(f"invalid batchnorm mode {mode!r}: expected 'train' or 'test'")
    return out, cache


def running_scale_shift(gamma: Array, beta: Array, bn_param: dict, x: Array) -> tuple[Array, Array]:
    """Test mode's gamma * (x - running_mean) / sqrt(running_var + eps) + beta as x * scale + shift,
    one scale and one shift per feature of x (N, D): two passes over x instead of four. The running
    statistics start as zeros in bn_param when there are none yet."""
    d = x.shape[1]
    running_mean = bn_param.setdefault("running_mean", np.zeros(d, dtype=x.dtype))
    scale = gamma / np.sqrt(bn_param.setdefault("running_var", np.zeros(d, dtype=x.dtype)) + bn_param.get("eps", 1e-5))
    return scale, beta - running_mean * scale


def running_shares(bn_param: dict) -> tuple[float, float]:
    """The old running value's share and the batch statistic's: momentum (0.9 unless bn_param
    says) and 1 - momentum."""
    momentum = bn_param.get("momentum", 0.9)
    return momentum, 1 - momentum


def blend_running(bn_param: dict, mean: Array, var: Array) -> None:
    """running = momentum * running + (1 - momentum) * batch statistic, for the mean and the
    variance in bn_param (zeros before the first step)."""
    old, new = running_shares(bn_param)
    zeros = np.zeros_like(mean)
    bn_param["running_mean"] = old * bn_param.get("running_mean", zeros) + new * mean
    bn_param["running_var"] = old * bn_param.get("running_var", zeros) + new * var


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


# --- weight standardization (Qiao et al. 2019; scaled: Brock et al. 2021) -------------------

WS_EPS = 1e-10  # on the variance of a unit's weights: tiny, as weights of std 1e-2 have variance 1e-4


def weight_standardization_forward(w: Array, gain: float | None = None) -> tuple[Array, Cache]:
    """Each output unit's incoming weights standardized to zero mean and unit variance: over the
    rows of a fully connected w (D, M) or over (C, HH, WW) of a conv filter bank w (F, C, HH, WW).
    With a gain, scaled weight standardization: gain * (w - mean) / (std * sqrt(fan_in)), so a unit's
    weights have squared norm gain**2 and, with gain = 1 / std(activation(z)) for z ~ N(0, 1), its
    output keeps unit variance layer after layer without any normalization. Returns (w_hat, cache)."""
    axes = 0 if w.ndim == 2 else (1, 2, 3)
    fan_in = w.size // (w.shape[1] if w.ndim == 2 else w.shape[0])
    centred = w - w.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + WS_EPS)
    v = centred * inv_std
    scale = 1.0 if gain is None else gain / np.sqrt(fan_in)
    return v * w.dtype.type(scale), (v, inv_std, scale, axes)


def weight_standardization_backward(dw_hat: Array, cache: Cache) -> Array:
    """dw from dw_hat: layer norm's backward over each unit's weights, times the scale.
    Shapes: dw_hat as w -> dw as w."""
    v, inv_std, scale, axes = cache
    dv = dw_hat * dw_hat.dtype.type(scale)
    return inv_std * (dv - dv.mean(axis=axes, keepdims=True) - v * (dv * v).mean(axis=axes, keepdims=True))


def activation_gain(activation: str, negative_slope: float = 0.01) -> float:
    """1 / std(activation(z)) for z ~ N(0, 1): scaled weight standardization's gain. In closed form
    for (leaky) ReLU of slope a: var = (1 + a^2) / 2 - (1 - a)^2 / (2 pi), so ReLU's is
    sqrt(2) / sqrt(1 - 1/pi) = 1.7129; sigmoid's and tanh's by 100-point Gauss-Hermite quadrature."""
    if activation in ("relu", "leaky_relu"):
        a = negative_slope if activation == "leaky_relu" else 0.0
        return float(1.0 / np.sqrt((1 + a * a) / 2 - (1 - a) ** 2 / (2 * np.pi)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)  # for the weight exp(-z^2 / 2)
    weights = weights / weights.sum()
    values = ACTIVATIONS[activation][0](nodes)[0]  # (out, cache)
    mean = np.dot(weights, values)
    return float(1.0 / np.sqrt(np.dot(weights, (values - mean) ** 2)))


# --- batch norm with frozen statistics (fine-tuning) -----------------------------------------


def frozen_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch norm whose statistics do not move: in train and test mode alike, x (N, D) is
    normalized with bn_param's running_mean and running_var (zeros and ones until set, e.g. by a
    pre-trained run's weights) and they are never updated; gamma, beta (D,) still learn. What
    Keras's `trainable = False` does to the statistics, and torchvision's FrozenBatchNorm2d (which
    freezes gamma and beta too). Shapes: x (N, D) -> out (N, D)."""
    d = x.shape[1]
    mean = bn_param.setdefault("running_mean", np.zeros(d, dtype=x.dtype))
    var = bn_param.setdefault("running_var", np.ones(d, dtype=x.dtype))
    inv_std = 1.0 / np.sqrt(var + bn_param.get("eps", 1e-5))
    x_hat = (x - mean) * inv_std
    return x_hat * gamma + beta, (x_hat, gamma, inv_std)


def frozen_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """A fixed affine map per feature: dx = dout * gamma / std, dgamma = sum(dout * x_hat),
    dbeta = sum(dout). Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    x_hat, gamma, inv_std = cache
    return dout * (gamma * inv_std), np.einsum("nd,nd->d", dout, x_hat), dout.sum(axis=0)


# --- ghost batch normalization (Hoffer et al. 2017) ------------------------------------------


def virtual_batches_forward(forward, x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[list, list]:
    """`forward` (a batch norm's train pass) on consecutive virtual batches of
    bn_param['ghost_batch_size'] samples of x (the last may be smaller): their outputs, and each
    one's (samples, cache).
    The running statistics blend, as batchnorm_forward's do, the mean over the virtual batches of
    their means and biased variances."""
    size = bn_param["ghost_batch_size"]
    outs, caches, means, variances = [], [], [], []
    for start in range(0, len(x), size):
        # momentum 0: the virtual batch's own statistics land in `own`, exactly
        own = {"mode": "train", "eps": bn_param.get("eps", 1e-5), "momentum": 0.0}
        out, cache = forward(x[start : start + size], gamma, beta, own)
        outs.append(out)
        caches.append((len(out), cache))
        means.append(own["running_mean"])
        variances.append(own["running_var"])
    blend_running(bn_param, np.mean(means, 0), np.mean(variances, 0))
    return outs, caches


def ghost_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Ghost batch norm: batch norm of each virtual batch of bn_param['ghost_batch_size'] rows of
    x (N, D) with its own statistics (see virtual_batches_forward); test mode is batchnorm_forward's,
    with the running statistics. Shapes: x (N, D), gamma, beta (D,) -> out (N, D)."""
    if bn_param["mode"] != "train":
        return batchnorm_forward(x, gamma, beta, bn_param)
    outs, caches = virtual_batches_forward(batchnorm_forward, x, gamma, beta, bn_param)
    return np.concatenate(outs), caches


def ghost_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Each virtual batch's batch-norm backward; gamma and beta sum over them.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    return virtual_batches_backward(batchnorm_backward_alt, dout, cache, np.concatenate)


def virtual_batches_backward(backward, dout: Array, caches: list, join) -> tuple[Array, Array, Array]:
    """`backward` on each virtual batch's slice of dout ((samples, cache) in order, as
    virtual_batches_forward gives them), the input gradients joined by `join`, dgamma and dbeta summed."""
    dxs, dgamma, dbeta, start = [], 0, 0, 0
    for rows, cache in caches:
        part = backward(dout[start : start + rows], cache)
        start += rows
        dxs.append(part[0])
        dgamma, dbeta = dgamma + part[1], dbeta + part[2]
    return join(dxs), dgamma, dbeta


# --- noisy batch normalization (Santurkar et al. 2018, Figure 2) -----------------------------


def noisy_batchnorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch norm, then a distribution shift that changes at every training step.

    out = scale * batchnorm(x) + shift, with per-unit scale (D,) and shift (D,) drawn afresh at
    every train-mode call t = 0, 1, 2, ...: shift ~ U(-a_t, a_t), scale ~ U(1, 1 + b_t), where
    a_t = noise_mean * (1 + t / noise_growth) and b_t = noise_scale * (1 + t / noise_growth): each
    unit's output gets a non-zero mean and a non-unit variance, and their spread grows over training.
    Santurkar et al. showed that a net trained with such noise after batch norm trains about as
    well as with plain batch norm, though its layers' input distributions shift far more.

    bn_param: as batchnorm_forward's, plus 'noise_rng' (a np.random.RandomState of the layer's own,
    so the noise never draws from the run's stream; RandomState(0) when absent), 'noise_step' (t,
    counted here), 'noise_scale' and 'noise_growth', and in train mode 'noise_mean' (their defaults are
    the row's in bnlab.nn.normalizations). Test mode uses the noise's expectation:
    batch norm with the running statistics, scaled by 1 + b_t / 2 (t: the training steps so far).
    Shapes: x (N, D), gamma, beta (D,) -> out (N, D).
    """
    out, bn_cache = batchnorm_forward(x, gamma, beta, bn_param)
    t = bn_param.get("noise_step", 0)
    growth = 1 + t / bn_param["noise_growth"]
    b = bn_param["noise_scale"] * growth
    if bn_param["mode"] != "train":
        # the noise's expectation, as inverted dropout does: the next layer was trained on inputs
        # scaled by 1 + b/2 on average (the shift averages to 0)
        out *= x.dtype.type(1 + b / 2)
        return out, (bn_cache, None)
    a = bn_param["noise_mean"] * growth
    if "noise_rng" not in bn_param:
        bn_param["noise_rng"] = np.random.RandomState(0)
    rng = bn_param["noise_rng"]
    bn_param["noise_step"] = t + 1
    d = x.shape[1]
    scale = (1 + rng.uniform(0, b, d)).astype(x.dtype)
    shift = rng.uniform(-a, a, d).astype(x.dtype)
    out *= scale
    out += shift
    return out, (bn_cache, scale)


def noisy_batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """The shift passes the gradient unchanged, the scale multiplies it; then batch norm's backward.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    bn_cache, scale = cache
    if scale is None:
        raise ValueError("noisy_batchnorm_backward: no backward pass in test mode")
    return batchnorm_backward_alt(dout * scale, bn_cache)


# --- layer normalization ---------------------------------------------------------------------


def layernorm_forward(x: Array, gamma: Array, beta: Array, ln_param: dict) -> tuple[Array, Cache]:
    """Layer normalization: each sample of x (N, D) normalized over its D features.

    gamma, beta (D,). ln_param may hold 'eps' (1e-5); there are no running statistics, so train
    and test behave the same.
    """
    return _per_sample_forward(x, gamma, beta, ln_param.get("eps", 1e-5), centered=True)


def layernorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """The batch-norm closed form along the feature axis, with dx_hat = gamma * dout:
        dx = inv_std * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)), means per sample.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    return _per_sample_backward(dout, cache, centered=True)


# --- RMS normalization -----------------------------------------------------------------------


def rmsnorm_forward(x: Array, gamma: Array, beta: Array, rms_param: dict) -> tuple[Array, Cache]:
    """RMS normalization (Zhang & Sennrich 2019): each sample of x (N, D) divided by the root mean
    square of its D features, with no centering: out = x / sqrt(mean(x**2) + eps) * gamma + beta.

    gamma, beta (D,). The paper has no beta; bnlab keeps one like the other norms, and with beta = 0
    this is torch.nn.functional.rms_norm(x, (D,), gamma, eps). rms_param may hold 'eps' (1e-5);
    train and test behave the same.
    """
    return _per_sample_forward(x, gamma, beta, rms_param.get("eps", 1e-5), centered=False)


def rmsnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Layer norm's closed form without the mean term, with dx_hat = gamma * dout:
        dx = inv_rms * (dx_hat - x_hat * mean(dx_hat * x_hat)), the mean per sample.
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    return _per_sample_backward(dout, cache, centered=False)


def _per_sample_forward(x: Array, gamma: Array, beta: Array, eps: float, centered: bool) -> tuple[Array, Cache]:
    """Layer norm's forward (centered) or RMS norm's (not): x_hat = x_c / sqrt(mean(x_c**2) + eps)
    per sample, x_c being x minus its mean over the features (centered) or x; out = gamma * x_hat + beta.
    The cache is (x_hat, gamma, inv_std) for _per_sample_backward."""
    d = x.shape[1]
    x_hat = x - x.mean(axis=1, keepdims=True) if centered else x
    inv_std = (1.0 / np.sqrt(np.einsum("nd,nd->n", x_hat, x_hat) / d + eps))[:, None]
    x_hat = x_hat * inv_std
    out = x_hat * gamma
    out += beta
    return out, (x_hat, gamma, inv_std)


def _per_sample_backward(dout: Array, cache: Cache, centered: bool) -> tuple[Array, Array, Array]:
    """Layer norm's backward (centered) or RMS norm's (not), from the cache (x_hat, gamma, inv_std)."""
    x_hat, gamma, inv_std = cache
    d = dout.shape[1]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, x_hat)
    dx = dout * gamma  # dx_hat, turned into dx in place
    mean_dx_hat_x_hat = (np.einsum("nd,nd->n", dx, x_hat) / d)[:, None]
    if centered:
        dx -= dx.mean(axis=1, keepdims=True)
    dx -= x_hat * mean_dx_hat_x_hat
    dx *= inv_std
    return dx, dgamma, dbeta


# --- batch renormalization -------------------------------------------------------------------


def batchrenorm_forward(x: Array, gamma: Array, beta: Array, bn_param: dict) -> tuple[Array, Cache]:
    """Batch renormalization (Ioffe 2017, Algorithm 1) over the batch axis of x (N, D); gamma, beta (D,).

    Train mode normalizes with the batch statistics and corrects towards the moving ones:
        sigma_B = sqrt(var_B + eps), r = clip(sigma_B / sigma, 1/rmax, rmax),
        d = clip((mu_B - mu) / sigma, -dmax, dmax), out = gamma * ((x - mu_B) / sigma_B * r + d) + beta,
    r and d being constants for the backward pass. Then, as in the paper, the moving mean and the
    moving standard deviation approach the batch ones: mu += (1 - momentum) * (mu_B - mu), likewise
    sigma. Test mode uses them: out = gamma * (x - mu) / sigma + beta. With rmax = 1 and dmax = 0,
    train mode is exactly batchnorm_forward.

    bn_param: 'mode' (required), 'eps' (1e-5), 'momentum' (0.9), 'rmax' (3), 'dmax' (5),
    'warmup' (0): rmax and dmax ramp linearly from 1 and 0 to their values over the first `warmup`
    train-mode calls (the paper starts as batch norm, then relaxes the clipping; 0: no ramp),
    counted in 'step'. 'running_mean' and 'running_std' (D,) start as 0 and 1 (Keras's choice) and
    are updated in place of the dict, as is 'step'.
    """
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    d_features = x.shape[1]
    mu = bn_param.get("running_mean", np.zeros(d_features, dtype=x.dtype))
    sigma = bn_param.get("running_std", np.ones(d_features, dtype=x.dtype))

    if mode == "train":
        step, warmup = bn_param.get("step", 0), bn_param.get("warmup", 0)
        ramp = min(step / warmup, 1.0) if warmup else 1.0
        rmax = 1 + (bn_param.get("rmax", 3.0) - 1) * ramp
        dmax = bn_param.get("dmax", 5.0) * ramp
        mean = x.mean(axis=0)
        x_hat = x - mean
        var = np.einsum("nd,nd->d", x_hat, x_hat) / x.shape[0]
        std = np.sqrt(var + eps)
        inv_std = 1.0 / std
        x_hat *= inv_std
        r = np.clip(std / sigma, 1 / rmax, rmax).astype(x.dtype)
        d = np.clip((mean - mu) / sigma, -dmax, dmax).astype(x.dtype)
        x_renorm = x_hat * r + d
        out = x_renorm * gamma + beta
        cache = (x_hat, x_renorm, gamma, r, inv_std)
        bn_param["running_mean"] = mu + (1 - momentum) * (mean - mu)
        bn_param["running_std"] = sigma + (1 - momentum) * (std - sigma)
        bn_param["step"] = step + 1
    elif mode == "test":
        out = (x - mu) / sigma * gamma + beta
        cache = ()
        bn_param["running_mean"], bn_param["running_std"] = mu, sigma
    else:
        raise ValueError(f"invalid batchrenorm mode {mode!r}: expected 'train' or 'test'")
    return out, cache


def batchrenorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """Backward of batchrenorm_forward with r and d held constant (the paper's stop_gradient):
    batch norm's closed form with gamma * r in place of gamma, and dgamma over the renormalized x:
        dx = gamma * r * inv_std * (dout - (sum(dout) + x_hat * sum(dout * x_hat)) / N).
    Shapes: dout (N, D) -> dx (N, D), dgamma (D,), dbeta (D,).
    """
    x_hat, x_renorm, gamma, r, inv_std = cache
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, x_renorm)
    a = gamma * r * inv_std
    dx = dout * a
    dx -= x_hat * (a * np.einsum("nd,nd->d", dout, x_hat) / n)
    dx -= a * dbeta / n
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
