"""The notebooks' gradient checks as data, for `bnlab gradcheck` to show as a table.

Every backward pass in bnlab.nn is compared with centred differences of its forward pass (the
fast convolution and pooling also with the naive loops, over strides, paddings, kernel sizes and
non-square inputs); the FullyConnectedNet's gradients with centred differences of its loss for
each activation, normalization and norm position, the ConvNet's for each normalization, with and
without L2 regularization, both nets with weight standardization (plain and scaled), a small
d2l-style LeNet's (average pooling, valid convolutions), and the residual nets' (bnlab.nn.residual)
for each form, normalization and SkipInit, with their pooling and projection layers. Everything
runs in float64 on fixed seeds of private RandomStates, so the table is the same on every run and
numpy's global RNG is left untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection
from functools import partial

import numpy as np

from bnlab.nn.gradcheck import eval_numerical_gradient, rel_error
from bnlab.nn.gradcheck_layers import (
    IGNORED_CHANGE,
    LINEAR,
    NET_OTHER,
    NET_W,
    SEED,
    VANISHING,
    GradCheck,
    backward_vs_numerical,
    compiled_checks,
    conv_checks,
    layer_checks,
)
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

REGS = (0.0, 3.14)
# The net: N, input features, hidden widths, classes. Tiny, so that 88 nets take seconds, yet wide
# enough that no group of features is all zero after a ReLU (where a norm after it has the huge
# curvature of 1 / sqrt(eps) and centred differences lose their accuracy). N = 8 rather than the
# notebooks' 2: batch statistics of 2 samples make the loss ill-conditioned.
NET_SIZES = (8, 3, [8, 6], 3)
NET_SCALE = 2e-1


def gradcheck_cases() -> dict[str, Callable[[], list[GradCheck]]]:
    """Every group of checks by name, in the table's order, each run only when called: the layers,
    convolution and pooling, then the fully connected net for each activation, normalization,
    position and regularization (without a normalization both positions are the same net: checked
    once), the conv net for each normalization and regularization, LeNet and the residual nets. A
    net's rows begin with its group's name."""
    cases: dict[str, Callable[[], list[GradCheck]]] = {
        "layers": layer_checks,
        "conv and pooling": conv_checks,
        "compiled layers": compiled_checks,
    }
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
    for form, kind, normalization in WS_NETS:
        label = f"ws {form} {kind} {normalization or 'no norm'}"
        if kind == "net":
            cases[label] = partial(_net_checks, label, "relu", normalization, "before", 0.0, form)
        else:
            cases[label] = partial(_convnet_checks, label, normalization, 0.0, form)
    for normalization in (None, "batchnorm"):
        label = f"lenet (valid, avg pool, sigmoid) {normalization or 'no norm'}"
        cases[label] = partial(_lenet_checks, label, normalization)
    cases["residual layers"] = _residual_layer_checks
    for kind, residual, normalization, skipinit, reg in RESIDUAL_NETS:
        label = f"residual {kind} {residual} {normalization or 'no norm'}{' skipinit' if skipinit else ''} reg={reg:g}"
        cases[label] = partial(_residual_checks, label, kind, residual, normalization, skipinit, reg)
    return cases


# The groups whose rows do not begin with the group's name: a few hundred milliseconds in all.
LAYER_CASES = ("layers", "conv and pooling", "compiled layers", "residual layers")


def run_gradchecks(cases: Collection[str] | None = None) -> list[GradCheck]:
    """The checks of the named groups of gradcheck_cases() (all by default), in the table's order."""
    return [check for name, case in gradcheck_cases().items() if cases is None or name in cases for check in case()]


def checks_named(text: str) -> list[GradCheck]:
    """The checks whose row name contains `text` ('layernorm', 'convnet batchnorm'), running only
    the groups that can hold such rows."""
    chosen = [name for name in gradcheck_cases() if text in name or name in LAYER_CASES]
    return [check for check in run_gradchecks(chosen) if text in check.name]


# --- the net ---------------------------------------------------------------------------------


# Weight standardization in the fully connected and the conv net as it is used: plain with the
# normalizations it is meant for (without one, unit-variance weights blow the signal up layer by
# layer, and centred differences of so steep a loss lose their digits), scaled without one.
WS_FORMS = (("standard", "groupnorm"), ("standard", "batchnorm"), ("scaled", None), ("scaled", "groupnorm"))
WS_NETS = [(form, kind, n) for kind in ("net", "convnet") for form, n in WS_FORMS]


def _net_checks(
    label: str, activation: str, normalization: str | None, position: str, reg: float, ws: str | None = None
) -> list[GradCheck]:
    """The fully connected net's gradients against numerical ones (see _model_checks), its hidden
    weights standardized with ws."""
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
        weight_standardization=ws,
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


def _convnet_checks(label: str, normalization: str | None, reg: float, ws: str | None = None) -> list[GradCheck]:
    """The conv net's gradients against numerical ones: two conv blocks (8x6 -> 4x3 -> 2x1, so the
    second pool drops a column) and the affine output. No hidden fully connected layer: batch norm
    there would cancel the last block's beta wherever the ReLU passes every sample, an exact zero
    that numerical noise cannot match in relative terms (tests/test_nets.py checks that layer).
    ws: the conv filters standardized so (None: not)."""
    options = dict(hidden_dims=[], normalization=normalization, reg=reg, weight_scale="he", weight_standardization=ws)
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
    (re)norm follows the hidden affine layers, their biases must be among them (but those the net
    names unnormalized_biases). With
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
        unnormalized = {f"b{model.num_layers}", *getattr(model, "unnormalized_biases", ())}
        if cancelled and kind == "b" and name not in unnormalized:
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
    *(("mlp", r, n, s, 0.0) for r in ("pre", "post", "postnorm") for n, s in
      ((None, False), (None, True), ("batchnorm", False), ("layernorm", False), ("rmsnorm", False))),
    ("mlp", "pre", "batchnorm", True, 0.0),
    ("mlp", "pre", "batchnorm", False, REGS[1]),
    *(("conv", r, n, s, 0.0) for r in ("pre", "post", "postnorm") for n, s in
      ((None, False), (None, True), ("batchnorm", False), ("layernorm", False))),
]  # fmt: skip
RESIDUAL_ALPHA = 0.5  # SkipInit's alpha moved off 0, where every branch gradient is trivially 0


def _residual_layer_checks() -> list[GradCheck]:
    rng = np.random.RandomState(SEED)
    x = rng.randn(2, 3, 4, 6)
    checks = backward_vs_numerical(
        "avg_pool 2x2", avg_pool2x2_forward, avg_pool2x2_backward, (x,), ("dx",), rng.randn(2, 3, 2, 3), LINEAR
    )
    checks += backward_vs_numerical(
        "global_avg_pool", global_avg_pool_forward, global_avg_pool_backward, (x,), ("dx",), rng.randn(2, 3), LINEAR
    )
    for label, x, p, out_shape in (
        ("projection fc", rng.randn(4, 5), rng.randn(5, 3), (4, 3)),
        ("projection 1x1 conv", rng.randn(2, 3, 4, 5), rng.randn(6, 3, 1, 1), (2, 6, 4, 5)),
    ):
        checks += backward_vs_numerical(
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
