"""The layer rows of the gradient-check table (bnlab.nn.gradcheck_suite): every backward pass of
bnlab.nn's layers against centred differences of its forward pass, the fast convolution and
pooling also against the naive loops, and the compiled layers (bnlab.nn.fused) against the numpy
ones; the thresholds and the check itself, which the nets' rows share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from bnlab.nn import conv, fused, layers, norms
from bnlab.nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.normalizations import NORMALIZATIONS

SEED = 231

# Thresholds on rel_error (float64, h = 1e-5). A centred difference has truncation error ~h**2 and
# rounding error ~1e-16 * |f| / h ~ 1e-11, so a correct backward agrees to ~1e-9 on well-scaled
# inputs, while a wrong one is off by 1e-3 or more.
LINEAR = 1e-8  # affine, relu, dropout: linear in each input, only rounding remains
NORM = 1e-7  # normalizations and softmax: the notebooks expect errors of 1e-13 to 1e-8
CONV = 1e-7  # a convolution's dx sums up to K*K products, and entries near the border are small
SAME = 1e-10  # two exact formulas for one gradient differ only by rounding
# rel_error is taken entry by entry, and in the net some entries of dW are ~1e-7 (of db, dgamma,
# dbeta ~1e-6), where the ~1e-11 rounding noise of the numerical gradient alone is a relative error
# of 1e-4 (1e-5); the notebooks likewise expect up to 1e-4 for W.
NET_W = 1e-4
NET_OTHER = 1e-5
# Absolute: a bias right before batch norm is cancelled by the mean subtraction, so its gradient is
# exactly zero and its numerical estimate is rounding noise, ~ulp(loss) / h ~ 2e-11.
VANISHING = 1e-9
# A loss that moves by less than this (relative) when a parameter entry moves by 1 either way does
# not depend on that entry: a thousand float64 roundings of the loss. Even were the loss merely flat
# over that whole interval, its true gradient there is 0, which is what such entries are checked for.
IGNORED_CHANGE = 1e-12


@dataclass(frozen=True)
class GradCheck:
    """One comparison: `error` (a rel_error, unless the name says otherwise) against `threshold`."""

    name: str
    error: float
    threshold: float

    @property
    def passed(self) -> bool:
        return bool(self.error < self.threshold)  # a nan error fails


# --- layers ----------------------------------------------------------------------------------


def backward_vs_numerical(
    label: str,
    forward: Callable,
    backward: Callable,
    args: tuple,
    names: Sequence[str],
    dout: np.ndarray,
    threshold: float,
) -> list[GradCheck]:
    """One check per differentiated input: backward(dout, cache) against the numerical gradient of
    sum(forward(*args)[0] * dout). `names` label the leading args, in the order backward returns
    their gradients; the remaining args (group count, param dict) are passed through."""
    _, cache = forward(*args)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    checks = []
    for i, (name, grad) in enumerate(zip(names, grads, strict=True)):

        def f(v: np.ndarray, i: int = i) -> np.ndarray:
            return forward(*args[:i], v, *args[i + 1 :])[0]

        numerical = eval_numerical_gradient_array(f, args[i].copy(), dout)
        checks.append(GradCheck(f"{label} {name}", rel_error(numerical, grad), threshold))
    return checks


def normalized_input(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs with a variance (~0.25) small enough that leaving eps out of a backward pass shows
    (a relative change of eps / var = 4e-5), yet large enough for accurate centred differences."""
    return 0.5 * rng.randn(*shape) + 1.0


def layer_checks() -> list[GradCheck]:
    checks: list[GradCheck] = []

    rng = np.random.RandomState(SEED)
    x, w, b = rng.randn(4, 2, 3), rng.randn(6, 5), rng.randn(5)
    dout = rng.randn(4, 5)
    checks += backward_vs_numerical(
        "affine", layers.affine_forward, layers.affine_backward, (x, w, b), ("dx", "dw", "db"), dout, LINEAR
    )

    rng = np.random.RandomState(SEED)
    x = rng.randn(4, 6)
    x += np.sign(x) * 0.1  # keep every input away from the kink at 0
    checks += backward_vs_numerical(
        "relu", layers.relu_forward, layers.relu_backward, (x,), ("dx",), rng.randn(4, 6), LINEAR
    )
    checks += backward_vs_numerical(
        "leaky_relu (slope 0.01)",
        partial(layers.leaky_relu_forward, negative_slope=0.01),
        layers.leaky_relu_backward,
        (x,),
        ("dx",),
        rng.randn(4, 6),
        LINEAR,
    )

    rng = np.random.RandomState(SEED)
    x = 2 * rng.randn(4, 6)  # both tails and the middle of the curves
    for name in ("sigmoid", "tanh"):
        forward, backward = ACTIVATIONS[name]
        checks += backward_vs_numerical(name, forward, backward, (x,), ("dx",), rng.randn(4, 6), NORM)

    rng = np.random.RandomState(SEED)
    scores, y = rng.randn(6, 5), rng.randint(5, size=6)
    numerical = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores.copy())
    checks.append(GradCheck("softmax_loss dx", rel_error(numerical, layers.softmax_loss(scores, y)[1]), NORM))

    for name, forward, backward, x_shape, param_shape, options in _norm_cases():
        checks += _norm_check(name, forward, backward, x_shape, param_shape, *options)
    checks += _batchnorm_alt_check()
    checks += _batchrenorm_checks()

    rng = np.random.RandomState(SEED)
    x = rng.randn(10, 8)
    # A fixed seed draws the same mask on every call, so the function being differentiated is fixed.
    dropout_param = {"mode": "train", "p": 0.7, "seed": SEED}
    checks += backward_vs_numerical(
        "dropout (p=0.7)",
        layers.dropout_forward,
        layers.dropout_backward,
        (x, dropout_param),
        ("dx",),
        rng.randn(10, 8),
        LINEAR,
    )
    return checks


def _noisy_batchnorm_fixed(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray):
    """noisy_batchnorm_forward with a fresh generator on every call: the same noise each time, so
    the function being differentiated is fixed."""
    (param,) = NORMALIZATIONS["noisy_batchnorm"].layer_params({}, 1)  # its options' defaults
    param["noise_rng"] = np.random.RandomState(SEED)
    return norms.noisy_batchnorm_forward(x, gamma, beta, param)


def _norm_cases() -> list[tuple]:
    """name, forward, backward, the shape of x, of gamma and beta, the arguments after them; looked
    up on every call, so that the checks see the functions as they are now (tests break them)."""
    return [
        ("batchnorm_backward", norms.batchnorm_forward, norms.batchnorm_backward, (4, 5), (5,), [{"mode": "train"}]),
        (
            "batchnorm_backward_alt",
            norms.batchnorm_forward,
            norms.batchnorm_backward_alt,
            (4, 5),
            (5,),
            [{"mode": "train"}],
        ),
        ("noisy_batchnorm (noise fixed)", _noisy_batchnorm_fixed, norms.noisy_batchnorm_backward, (4, 5), (5,), []),
        (
            "frozen_batchnorm (statistics set)",
            norms.frozen_batchnorm_forward,
            norms.frozen_batchnorm_backward,
            (4, 5),
            (5,),
            [{"mode": "train", "running_mean": np.linspace(-1, 1, 5), "running_var": np.linspace(0.5, 2, 5)}],
        ),
        ("layernorm", norms.layernorm_forward, norms.layernorm_backward, (4, 5), (5,), [{}]),
        ("rmsnorm", norms.rmsnorm_forward, norms.rmsnorm_backward, (4, 5), (5,), [{}]),
        ("groupnorm (G=2)", norms.groupnorm_forward, norms.groupnorm_backward, (4, 6), (6,), [2, {}]),
        (
            "spatial batchnorm",
            conv.spatial_batchnorm_forward,
            conv.spatial_batchnorm_backward,
            (2, 3, 2, 3),
            (3,),
            [{"mode": "train"}],
        ),
        (
            "spatial groupnorm (G=2)",
            conv.spatial_groupnorm_forward,
            conv.spatial_groupnorm_backward,
            (2, 6, 2, 3),
            (1, 6, 1, 1),
            [2, {}],
        ),
    ]


def _norm_check(name: str, forward, backward, x_shape: tuple, param_shape: tuple, *options) -> list[GradCheck]:
    """dx, dgamma and dbeta of a normalization against numerical gradients, at x from
    _normalized_input and gamma, beta, dout drawn after it from a fresh SEED stream."""
    rng = np.random.RandomState(SEED)
    x = normalized_input(rng, x_shape)
    gamma, beta = rng.randn(*param_shape), rng.randn(*param_shape)
    inputs, names = (x, gamma, beta, *options), ("dx", "dgamma", "dbeta")
    return backward_vs_numerical(name, forward, backward, inputs, names, rng.randn(*x_shape), NORM)


def _batchnorm_alt_check() -> list[GradCheck]:
    """The two batch-norm backward passes against each other on the notebooks' larger (100, 500) batch."""
    rng = np.random.RandomState(SEED)
    x, gamma, beta = 5 * rng.randn(100, 500) + 12, rng.randn(500), rng.randn(500)
    dout = rng.randn(100, 500)
    _, cache = norms.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    graph = norms.batchnorm_backward(dout, cache)
    closed_form = norms.batchnorm_backward_alt(dout, cache)
    error = max(rel_error(a, b) for a, b in zip(graph, closed_form, strict=True))
    return [GradCheck("batchnorm_backward_alt = batchnorm_backward (dx, dgamma, dbeta)", error, SAME)]


def _batchrenorm_forward_fresh(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict):
    """batchrenorm_forward on a copy of bn_param: every evaluation sees the same moving statistics."""
    return norms.batchrenorm_forward(x, gamma, beta, dict(bn_param))


def _batchrenorm_checks() -> list[GradCheck]:
    """The backward pass treats r and d as constants (the paper's stop_gradient), which the forward
    pass's derivative agrees with where both are clipped: moving statistics far from the batch's
    (r = sigma_B / sigma ~ 50 > rmax = 3, d = 100 > dmax = 5). With rmax = 1 and dmax = 0 (always
    clipped) it is batch norm, to rounding."""
    rng = np.random.RandomState(SEED)
    x, gamma, beta = normalized_input(rng, (4, 5)), rng.randn(5), rng.randn(5)
    dout = rng.randn(4, 5)
    far = {"mode": "train", "rmax": 3.0, "dmax": 5.0, "running_mean": x.mean(axis=0) - 1}
    far["running_std"] = np.full(5, 0.01)
    checks = backward_vs_numerical(
        "batchrenorm (r, d clipped)",
        _batchrenorm_forward_fresh,
        norms.batchrenorm_backward,
        (x, gamma, beta, far),
        ("dx", "dgamma", "dbeta"),
        dout,
        NORM,
    )
    _, renorm_cache = norms.batchrenorm_forward(x, gamma, beta, {"mode": "train", "rmax": 1.0, "dmax": 0.0})
    _, bn_cache = norms.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    renorm, bn = norms.batchrenorm_backward(dout, renorm_cache), norms.batchnorm_backward_alt(dout, bn_cache)
    error = max(rel_error(a, b) for a, b in zip(renorm, bn, strict=True))
    checks.append(GradCheck("batchrenorm (rmax=1, dmax=0) = batchnorm_backward_alt", error, SAME))
    return checks


# --- convolution, pooling, spatial norms ----------------------------------------------------

# (stride, pad, kernel, input (N, C, H, W)): strides 1 and 2, paddings 0 to 2, kernels 3 and 5,
# non-square inputs, windows that do not fit the input exactly.
CONV_CASES = [(1, 1, 3, (2, 3, 5, 4)), (2, 0, 3, (2, 2, 7, 6)), (2, 2, 5, (2, 2, 6, 5)), (1, 0, 5, (1, 2, 6, 7))]
# (pool_height, pool_width, stride, input): 2x2 tiles (the fast road), and the fallback for
# overlapping windows, non-square windows and inputs the windows do not tile.
POOL_CASES = [(2, 2, 2, (2, 3, 4, 6)), (3, 3, 2, (2, 2, 7, 5)), (2, 3, 1, (1, 2, 4, 5)), (2, 2, 2, (1, 2, 5, 7))]


def conv_checks() -> list[GradCheck]:
    checks: list[GradCheck] = []
    for stride, pad, k, shape in CONV_CASES:
        rng = np.random.RandomState(SEED)
        x, w, b = rng.randn(*shape), rng.randn(3, shape[1], k, k), rng.randn(3)
        conv_param = {"stride": stride, "pad": pad}
        label = f"conv s={stride} p={pad} k={k} x{shape}"
        out, cache = conv.conv_forward_fast(x, w, b, conv_param)
        dout = rng.randn(*out.shape)
        naive_out, naive_cache = conv.conv_forward_naive(x, w, b, conv_param)
        naive = (naive_out, *conv.conv_backward_naive(dout, naive_cache))
        fast = (out, *conv.conv_backward_fast(dout, cache))
        error = max(rel_error(a, f) for a, f in zip(naive, fast, strict=True))
        checks.append(GradCheck(f"{label} fast = naive (out, dx, dw, db)", error, SAME))
        checks += backward_vs_numerical(
            f"{label} fast", conv.conv_forward_fast, conv.conv_backward_fast, (x, w, b, conv_param),
            ("dx", "dw", "db"), dout, CONV,
        )  # fmt: skip
    rng = np.random.RandomState(SEED)
    x, w, b = rng.randn(2, 2, 4, 5), rng.randn(3, 2, 3, 3), rng.randn(3)
    checks += backward_vs_numerical(
        "conv s=1 p=1 k=3 naive", conv.conv_forward_naive, conv.conv_backward_naive, (x, w, b, {"stride": 1, "pad": 1}),
        ("dx", "dw", "db"), rng.randn(2, 3, 4, 5), CONV,
    )  # fmt: skip

    for pool in ("max", "avg"):
        forward = {kind: getattr(conv, f"{pool}_pool_forward_{kind}") for kind in ("naive", "fast")}
        backward = {kind: getattr(conv, f"{pool}_pool_backward_{kind}") for kind in ("naive", "fast")}
        for ph, pw, stride, shape in POOL_CASES:
            rng = np.random.RandomState(SEED)
            # max: distinct values 0.01 apart, so no window holds two maxima within the difference step
            x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01 if pool == "max" else rng.randn(*shape)
            pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
            label = f"{pool}_pool {ph}x{pw} s={stride} x{shape}"
            out, cache = forward["fast"](x, pool_param)
            dout = rng.randn(*out.shape)
            naive_out, naive_cache = forward["naive"](x, pool_param)
            error = max(rel_error(naive_out, out), rel_error(backward["naive"](dout, naive_cache),
                                                             backward["fast"](dout, cache)))  # fmt: skip
            checks.append(GradCheck(f"{label} fast = naive (out, dx)", error, SAME))
            for kind in ("naive", "fast"):
                args = (x, pool_param)
                checks += backward_vs_numerical(
                    f"{label} {kind}", forward[kind], backward[kind], args, ("dx",), dout, LINEAR
                )

    for name, row in NORMALIZATIONS.items():
        if row.spatial_forward is None:
            continue
        rng = np.random.RandomState(SEED)
        x, gamma, beta = normalized_input(rng, (3, 4, 3, 2)), rng.randn(4), rng.randn(4)
        param = row.layer_params(row.gradcheck_options, 1)[0]
        checks += backward_vs_numerical(
            f"{name} conv form", row.spatial_forward, row.spatial_backward,
            (x, gamma, beta, param), ("dx", "dgamma", "dbeta"), rng.randn(*x.shape), NORM,
        )  # fmt: skip
    return checks


# --- the compiled layers (bnlab.nn.fused) ----------------------------------------------------


def compiled_checks() -> list[GradCheck]:
    """bnlab.nn.fused's layers: equal to the numpy layers they replace, and against numerical
    gradients (conv with padding and stride, batch norm flat, batch norm + ReLU, batch norm + 2x2
    max pool)."""
    checks: list[GradCheck] = []
    for stride, pad, k, shape in CONV_CASES:
        rng = np.random.RandomState(SEED)
        x, w, b = rng.randn(*shape), rng.randn(3, shape[1], k, k), rng.randn(3)
        conv_param = {"stride": stride, "pad": pad}
        label = f"compiled conv s={stride} p={pad} k={k} x{shape}"
        out, cache = fused.conv_forward(x, w, b, conv_param)
        dout = rng.randn(*out.shape)
        fast_out, fast_cache = conv.conv_forward_fast(x, w, b, conv_param)
        numpy_version = (fast_out, *conv.conv_backward_fast(dout, fast_cache))
        error = max(
            rel_error(a, f) for a, f in zip(numpy_version, (out, *fused.conv_backward(dout, cache)), strict=True)
        )
        checks.append(GradCheck(f"{label} = conv fast (out, dx, dw, db)", error, SAME))
        checks += backward_vs_numerical(
            label, fused.conv_forward, fused.conv_backward, (x, w, b, conv_param), ("dx", "dw", "db"), dout, CONV
        )
    rng = np.random.RandomState(SEED)
    x, gamma, beta = normalized_input(rng, (6, 5)), rng.randn(5), rng.randn(5)
    dout = rng.randn(*x.shape)
    out, cache = fused.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    numpy_out, numpy_cache = norms.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    numpy_version = (numpy_out, *norms.batchnorm_backward_alt(dout, numpy_cache))
    error = max(
        rel_error(a, f) for a, f in zip(numpy_version, (out, *fused.batchnorm_backward(dout, cache)), strict=True)
    )
    checks.append(GradCheck("compiled batchnorm = batchnorm_backward_alt (out, dx, dgamma, dbeta)", error, SAME))
    checks += backward_vs_numerical(
        "compiled batchnorm", fused.batchnorm_forward, fused.batchnorm_backward, (x, gamma, beta, {"mode": "train"}),
        ("dx", "dgamma", "dbeta"), dout, NORM,
    )  # fmt: skip
    # batch norm + ReLU: beta puts each column's kink halfway between its two middle values, so
    # that no numerical step crosses it
    x, gamma = normalized_input(rng, (6, 5)), rng.rand(5) + 0.5
    scaled = np.sort(gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5), axis=0)
    beta = -(scaled[2] + scaled[3]) / 2
    out, cache = fused.batchnorm_relu_forward(x, gamma, beta, {"mode": "train"})
    numpy_out, numpy_cache = norms.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    relu_out, relu_cache = layers.relu_forward(numpy_out)
    numpy_version = (relu_out, *norms.batchnorm_backward_alt(layers.relu_backward(dout, relu_cache), numpy_cache))
    ours = (out, *fused.batchnorm_relu_backward(dout, cache))
    error = max(rel_error(a, f) for a, f in zip(numpy_version, ours, strict=True))
    checks.append(GradCheck("compiled batchnorm + relu = batchnorm, relu (out, dx, dgamma, dbeta)", error, SAME))
    checks += backward_vs_numerical(
        "compiled batchnorm + relu", fused.batchnorm_relu_forward, fused.batchnorm_relu_backward,
        (x, gamma, beta, {"mode": "train"}), ("dx", "dgamma", "dbeta"), dout, NORM,
    )  # fmt: skip
    # distinct values 0.01 apart, as for max pooling: no window's winner changes within the step
    x = rng.permutation(2 * 3 * 4 * 6).reshape(2, 3, 4, 6) * 0.01
    gamma, beta = rng.rand(3) + 0.5, rng.randn(3)
    checks += backward_vs_numerical(
        "compiled batchnorm + max pool", fused.batchnorm_maxpool_forward, fused.batchnorm_maxpool_backward,
        (x, gamma, beta, {"mode": "train"}), ("dx", "dgamma", "dbeta"), rng.randn(2, 3, 2, 3), NORM,
    )  # fmt: skip
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    checks += backward_vs_numerical(
        "compiled max pool", fused.max_pool_forward, fused.max_pool_backward, (x, pool), ("dx",),
        rng.randn(2, 3, 2, 3), LINEAR,
    )  # fmt: skip
    return checks
