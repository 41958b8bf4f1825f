"""The notebooks' gradient checks as data, for `bnlab gradcheck` to show as a table.

Every backward pass in bnlab.nn is compared with centred differences of its forward pass (the
fast convolution and pooling also with the naive loops, over strides, paddings, kernel sizes and
non-square inputs); the FullyConnectedNet's gradients with centred differences of its loss for
each activation, normalization and norm position, the ConvNet's for each normalization, with and
without L2 regularization, a small d2l-style LeNet's (average pooling, valid convolutions), and
the residual nets' (bnlab.nn.residual) for each form, normalization and SkipInit, with their
pooling and projection layers. Everything runs in float64 on fixed seeds of private RandomStates,
so the table is the same on every run and numpy's global RNG is left untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from bnlab.nn import conv, layers, norms
from bnlab.nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.nets import ConvNet, FullyConnectedNet
from bnlab.nn.normalizations import NORMALIZATIONS
from bnlab.nn.residual import (
    ResidualConvNet,
    ResidualMLP,
    avg_pool2x2_backward,
    avg_pool2x2_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    projection_backward,
    projection_forward,
)

SEED = 231
REGS = (0.0, 3.14)
# The net: N, input features, hidden widths, classes. Tiny, so that 88 nets take seconds, yet wide
# enough that no group of features is all zero after a ReLU (where a norm after it has the huge
# curvature of 1 / sqrt(eps) and centred differences lose their accuracy). N = 8 rather than the
# notebooks' 2: batch statistics of 2 samples make the loss ill-conditioned.
NET_SIZES = (8, 3, [8, 6], 3)
NET_SCALE = 2e-1

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


def gradcheck_cases() -> dict[str, Callable[[], list[GradCheck]]]:
    """Every group of checks by name, in the table's order, each run only when called: the layers,
    convolution and pooling, then the fully connected net for each activation, normalization,
    position and regularization (without a normalization both positions are the same net: checked
    once), the conv net for each normalization and regularization, LeNet and the residual nets. A
    net's rows begin with its group's name."""
    cases: dict[str, Callable[[], list[GradCheck]]] = {"layers": _layer_checks, "conv and pooling": _conv_checks}
    for activation in ACTIVATIONS:
        for normalization in (None, *NORMALIZATIONS):
            for position in ("before",) if normalization is None else ("before", "after"):
                for reg in REGS:
                    label = f"net {activation} {normalization or 'no norm'}"
                    label += f" {position} reg={reg:g}" if normalization else f" reg={reg:g}"
                    cases[label] = partial(_net_checks, label, activation, normalization, position, reg)
    for normalization in (None, *(n for n, row in NORMALIZATIONS.items() if row.spatial_forward is not None)):
        for reg in REGS:
            label = f"convnet {normalization or 'no norm'} reg={reg:g}"
            cases[label] = partial(_convnet_checks, label, normalization, reg)
    for normalization in (None, "batchnorm"):
        label = f"lenet (valid, avg pool, sigmoid) {normalization or 'no norm'}"
        cases[label] = partial(_lenet_checks, label, normalization)
    cases["residual layers"] = _residual_layer_checks
    for kind, residual, normalization, skipinit, reg in RESIDUAL_NETS:
        label = f"residual {kind} {residual} {normalization or 'no norm'}{' skipinit' if skipinit else ''} reg={reg:g}"
        cases[label] = partial(_residual_checks, label, kind, residual, normalization, skipinit, reg)
    return cases


# The groups whose rows do not begin with the group's name: a few hundred milliseconds in all.
LAYER_CASES = ("layers", "conv and pooling", "residual layers")


def run_gradchecks(cases: Collection[str] | None = None) -> list[GradCheck]:
    """The checks of the named groups of gradcheck_cases() (all by default), in the table's order."""
    return [check for name, case in gradcheck_cases().items() if cases is None or name in cases for check in case()]


def checks_named(text: str) -> list[GradCheck]:
    """The checks whose row name contains `text` ('layernorm', 'convnet batchnorm'), running only
    the groups that can hold such rows."""
    chosen = [name for name in gradcheck_cases() if text in name or name in LAYER_CASES]
    return [check for check in run_gradchecks(chosen) if text in check.name]


# --- layers ----------------------------------------------------------------------------------


def _backward_vs_numerical(
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


def _normalized_input(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs with a variance (~0.25) small enough that leaving eps out of a backward pass shows
    (a relative change of eps / var = 4e-5), yet large enough for accurate centred differences."""
    return 0.5 * rng.randn(*shape) + 1.0


def _layer_checks() -> list[GradCheck]:
    checks: list[GradCheck] = []

    rng = np.random.RandomState(SEED)
    x, w, b = rng.randn(4, 2, 3), rng.randn(6, 5), rng.randn(5)
    dout = rng.randn(4, 5)
    checks += _backward_vs_numerical(
        "affine", layers.affine_forward, layers.affine_backward, (x, w, b), ("dx", "dw", "db"), dout, LINEAR
    )

    rng = np.random.RandomState(SEED)
    x = rng.randn(4, 6)
    x += np.sign(x) * 0.1  # keep every input away from the kink at 0
    checks += _backward_vs_numerical(
        "relu", layers.relu_forward, layers.relu_backward, (x,), ("dx",), rng.randn(4, 6), LINEAR
    )
    checks += _backward_vs_numerical(
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
        checks += _backward_vs_numerical(name, forward, backward, (x,), ("dx",), rng.randn(4, 6), NORM)

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
    checks += _backward_vs_numerical(
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
    x = _normalized_input(rng, x_shape)
    gamma, beta = rng.randn(*param_shape), rng.randn(*param_shape)
    inputs, names = (x, gamma, beta, *options), ("dx", "dgamma", "dbeta")
    return _backward_vs_numerical(name, forward, backward, inputs, names, rng.randn(*x_shape), NORM)


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
    x, gamma, beta = _normalized_input(rng, (4, 5)), rng.randn(5), rng.randn(5)
    dout = rng.randn(4, 5)
    far = {"mode": "train", "rmax": 3.0, "dmax": 5.0, "running_mean": x.mean(axis=0) - 1}
    far["running_std"] = np.full(5, 0.01)
    checks = _backward_vs_numerical(
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


def _conv_checks() -> list[GradCheck]:
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
        checks += _backward_vs_numerical(
            f"{label} fast", conv.conv_forward_fast, conv.conv_backward_fast, (x, w, b, conv_param),
            ("dx", "dw", "db"), dout, CONV,
        )  # fmt: skip
    rng = np.random.RandomState(SEED)
    x, w, b = rng.randn(2, 2, 4, 5), rng.randn(3, 2, 3, 3), rng.randn(3)
    checks += _backward_vs_numerical(
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
                checks += _backward_vs_numerical(
                    f"{label} {kind}", forward[kind], backward[kind], args, ("dx",), dout, LINEAR
                )

    for name, row in NORMALIZATIONS.items():
        if row.spatial_forward is None:
            continue
        rng = np.random.RandomState(SEED)
        x, gamma, beta = _normalized_input(rng, (3, 4, 3, 2)), rng.randn(4), rng.randn(4)
        param = row.layer_params(row.gradcheck_options, 1)[0]
        checks += _backward_vs_numerical(
            f"{name} conv form", row.spatial_forward, row.spatial_backward,
            (x, gamma, beta, param), ("dx", "dgamma", "dbeta"), rng.randn(*x.shape), NORM,
        )  # fmt: skip
    return checks


# --- the net ---------------------------------------------------------------------------------


def _net_checks(label: str, activation: str, normalization: str | None, position: str, reg: float) -> list[GradCheck]:
    """The fully connected net's gradients against numerical ones (see _model_checks)."""
    rng = np.random.RandomState(SEED)
    n, d, hidden_dims, c = NET_SIZES
    X, y = rng.randn(n, d), rng.randint(c, size=n)
    model = FullyConnectedNet(
        hidden_dims,
        input_dim=d,
        num_classes=c,
        activation=activation,
        normalization=normalization,
        norm_position=position,
        reg=reg,
        weight_scale=NET_SCALE,
        dtype=np.float64,
        rng=rng,
        **(NORMALIZATIONS[normalization].gradcheck_options if normalization else {}),
    )
    initial_bn_params = None
    setup = NORMALIZATIONS[normalization].gradcheck_setup if normalization else None
    if setup is not None:
        # The layers put in a fixed state (clipped renorm, rewound noise); every evaluation starts
        # from it, as the output depends on it.
        setup(model.bn_params, hidden_dims)
        initial_bn_params = copy.deepcopy(model.bn_params)

    return _model_checks(label, model, X, y, initial_bn_params)


def _convnet_checks(label: str, normalization: str | None, reg: float) -> list[GradCheck]:
    """The conv net's gradients against numerical ones: two conv blocks (8x6 -> 4x3 -> 2x1, so the
    second pool drops a column) and the affine output. No hidden fully connected layer: batch norm
    there would cancel the last block's beta wherever the ReLU passes every sample, an exact zero
    that numerical noise cannot match in relative terms (tests/test_nets.py checks that layer)."""
    options = dict(hidden_dims=[], normalization=normalization, reg=reg, weight_scale="he")
    options.update(NORMALIZATIONS[normalization].gradcheck_options if normalization else {})
    return _conv_model_checks(label, [2, 4], (6, 3, 8, 6), options)


def _lenet_checks(label: str, normalization: str | None) -> list[GradCheck]:
    """A small LeNet (d2l's: valid convolutions, average pooling, sigmoid, a hidden affine layer;
    10x10 -> 8x8 -> 4x4 -> 2x2 -> 1x1), its gradients against numerical ones. The sigmoid passes
    gradient everywhere, so batch norm in the hidden layer is checked too."""
    options = dict(padding="valid", pool="avg", hidden_dims=[6], activation="sigmoid", weight_scale="xavier")
    return _conv_model_checks(label, [3, 4], (6, 2, 10, 10), {**options, "normalization": normalization})


def _conv_model_checks(label: str, channels: list[int], x_shape: tuple[int, ...], options: dict) -> list[GradCheck]:
    """_model_checks of a float64 ConvNet(channels, **options) for 5 classes and inputs of x_shape,
    the inputs, labels and weights drawn in that order from a fresh SEED stream."""
    rng = np.random.RandomState(SEED)
    X, y = rng.randn(*x_shape), rng.randint(5, size=x_shape[0])
    model = ConvNet(channels, input_dim=x_shape[1:], num_classes=5, dtype=np.float64, rng=rng, **options)
    return _model_checks(label, model, X, y)


def _model_checks(
    label: str,
    model,
    X: np.ndarray,
    y: np.ndarray,
    initial_bn_params: list | None = None,
) -> list[GradCheck]:
    """A net's gradients against numerical ones: one row per kind of parameter (weights, biases,
    gammas and betas) with the worst parameter named, and a row for the entries whose gradient is
    zero by structure, showing that both gradients vanish there (see _ignored_entries); when batch
    (re)norm follows the hidden affine layers, their biases must be among them. With
    initial_bn_params, every evaluation starts from those normalization states."""
    cancels = model.normalization is not None and NORMALIZATIONS[model.normalization].cancels_bias
    cancelled = cancels and getattr(model, "norm_position", "before") == "before"

    def loss() -> float:
        if initial_bn_params is not None:
            model.bn_params = copy.deepcopy(initial_bn_params)
        return model.loss(X, y)[0]

    _, grads = model.loss(X, y)
    errors: dict[str, dict[str, float]] = {}  # kind -> parameter name -> rel_error
    vanishing, zero_by_structure = 0.0, []
    for name in sorted(grads):
        param = model.params[name]
        numerical = eval_numerical_gradient(lambda _: loss(), param)
        kind = {"W": "W", "P": "W", "b": "b", "alpha": "alpha"}.get(name.rstrip("0123456789"), "gamma/beta")
        ignored = np.zeros(param.shape, dtype=bool) if kind == "W" else _ignored_entries(loss, param)
        if cancelled and kind == "b" and name != f"b{model.num_layers}":
            ignored[...] = True  # expected: a forward pass that failed to cancel them fails the row below
        if ignored.any():
            zero_by_structure.append(name)
            # np.max, unlike max, keeps a nan
            vanishing = float(np.max([vanishing, np.abs(numerical[ignored]).max(), np.abs(grads[name][ignored]).max()]))
        if not ignored.all():
            errors.setdefault(kind, {})[name] = rel_error(numerical[~ignored], grads[name][~ignored])

    checks = []
    for kind, by_name in errors.items():
        name = max(by_name, key=lambda k: math.inf if math.isnan(by_name[k]) else by_name[k])
        checks.append(GradCheck(f"{label} {kind} (worst: {name})", by_name[name], NET_W if kind == "W" else NET_OTHER))
    if zero_by_structure:
        names = ", ".join(zero_by_structure)
        checks.append(GradCheck(f"{label} {names} zero by structure: max |grad| (should be 0)", vanishing, VANISHING))
    return checks


# --- residual nets ---------------------------------------------------------------------------

# (kind, residual, normalization, skipinit, reg) of the residual nets checked: every form of both
# nets without normalization, with SkipInit and with batch norm; the MLP with every normalization
# whose layer has no extra state (batch renorm and noisy batch norm are checked in the plain net)
# and once with L2 (the same code for both nets); the conv net with spatial layer norm, the group
# norm code with one group (group norm over 2 channels of 1x1 maps would see 2 values).
RESIDUAL_NETS = [
    *(("mlp", r, n, s, 0.0) for r in ("pre", "post") for n, s in
      ((None, False), (None, True), ("batchnorm", False), ("layernorm", False), ("rmsnorm", False))),
    ("mlp", "pre", "batchnorm", True, 0.0),
    ("mlp", "pre", "batchnorm", False, REGS[1]),
    *(("conv", r, n, s, 0.0) for r in ("pre", "post") for n, s in
      ((None, False), (None, True), ("batchnorm", False), ("layernorm", False))),
]  # fmt: skip
RESIDUAL_ALPHA = 0.5  # SkipInit's alpha moved off 0, where every branch gradient is trivially 0


def _residual_layer_checks() -> list[GradCheck]:
    rng = np.random.RandomState(SEED)
    x = rng.randn(2, 3, 4, 6)
    checks = _backward_vs_numerical(
        "avg_pool 2x2", avg_pool2x2_forward, avg_pool2x2_backward, (x,), ("dx",), rng.randn(2, 3, 2, 3), LINEAR
    )
    checks += _backward_vs_numerical(
        "global_avg_pool", global_avg_pool_forward, global_avg_pool_backward, (x,), ("dx",), rng.randn(2, 3), LINEAR
    )
    for label, x, p, out_shape in (
        ("projection fc", rng.randn(4, 5), rng.randn(5, 3), (4, 3)),
        ("projection 1x1 conv", rng.randn(2, 3, 4, 5), rng.randn(6, 3, 1, 1), (2, 6, 4, 5)),
    ):
        checks += _backward_vs_numerical(
            label, projection_forward, projection_backward, (x, p), ("dx", "dp"), rng.randn(*out_shape), LINEAR
        )
    return checks


def _residual_checks(
    label: str, kind: str, residual: str, normalization: str | None, skipinit: bool, reg: float
) -> list[GradCheck]:
    """A residual net's gradients against numerical ones. The MLP has three blocks, the conv net two
    (4x4 -> 2x2 -> 1x1), and in both the second block changes the width, so its shortcut is a
    projection. tanh rather than ReLU: a unit that
    a ReLU keeps on for one sample only has a gradient of ~1e-7, where rounding alone is a relative
    error of 1e-4; the activations' own backward passes are checked above. Batch norm cancels every
    hidden bias (in `pre` every consumer of the stream is a batch norm, so a shift of the stream,
    the stem's beta included, is cancelled too: found by _ignored_entries)."""
    rng = np.random.RandomState(SEED)
    options = dict(
        residual=residual,
        skipinit=skipinit,
        normalization=normalization,
        activation="tanh",
        reg=reg,
        dtype=np.float64,
        rng=rng,
    )
    if kind == "mlp":
        X, y = rng.randn(8, 3), rng.randint(3, size=8)
        model = ResidualMLP([4, 6, 6], input_dim=3, num_classes=3, weight_scale=NET_SCALE, **options)
    else:
        X, y = rng.randn(4, 2, 4, 4), rng.randint(3, size=4)
        model = ResidualConvNet([2, 4], input_dim=(2, 4, 4), num_classes=3, **options)
    for name in model.params:
        if name.startswith("alpha"):
            model.params[name][...] = RESIDUAL_ALPHA
    return _model_checks(label, model, X, y)


def _ignored_entries(loss: Callable[[], float], param: np.ndarray) -> np.ndarray:
    """The entries of `param` the loss does not depend on at all: moving one by a whole unit (10^5
    difference steps) either way changes the loss by no more than rounding (IGNORED_CHANGE).

    Their gradient is zero by structure (a bias cancelled by batch norm's mean, or by group norm
    with one channel per group; a gamma or beta whose unit a ReLU after it keeps off for every
    sample at both shifts), so rel_error there compares two rounding noises (~1e-11 from
    the centred difference, ~1e-17 from the backward pass) and rounding decides the verdict. They
    are checked instead to be absolutely below VANISHING; every other entry keeps its threshold.
    """
    base = loss()
    ignored = np.zeros(param.shape, dtype=bool)
    for i in np.ndindex(param.shape):
        old = param[i]
        changes = []
        for shift in (1.0, -1.0):
            param[i] = old + shift
            changes.append(abs(loss() - base))
        param[i] = old
        ignored[i] = max(changes) <= IGNORED_CHANGE * max(1.0, abs(base))
    return ignored
