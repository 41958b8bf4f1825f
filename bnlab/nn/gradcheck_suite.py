"""The notebooks' gradient checks as data, for `bnlab gradcheck` to show as a table.

Every backward pass in bnlab.nn is compared with centred differences of its forward pass, and
the FullyConnectedNet's gradients with centred differences of its loss, for each normalization,
with and without L2 regularization. Everything runs in float64 on fixed seeds of private
RandomStates, so the table is the same on every run and numpy's global RNG is left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bnlab.nn import conv, layers, norms
from bnlab.nn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from bnlab.nn.nets import FullyConnectedNet
from bnlab.nn.norms import NORMALIZATIONS

SEED = 231
REGS = (0.0, 3.14)

# Thresholds on rel_error (float64, h = 1e-5). A centred difference has truncation error ~h**2 and
# rounding error ~1e-16 * |f| / h ~ 1e-11, so a correct backward agrees to ~1e-9 on well-scaled
# inputs, while a wrong one is off by 1e-3 or more.
LINEAR = 1e-8  # affine, relu, dropout: linear in each input, only rounding remains
NORM = 1e-7  # normalizations and softmax: the notebooks expect errors of 1e-13 to 1e-8
SAME = 1e-10  # two exact formulas for one gradient differ only by rounding
# rel_error is taken entry by entry, and in the net some entries of dW are ~1e-7 (of db, dgamma,
# dbeta ~1e-6), where the ~1e-11 rounding noise of the numerical gradient alone is a relative error
# of 1e-4 (1e-5); the notebooks likewise expect up to 1e-4 for W.
NET_W = 1e-4
NET_OTHER = 1e-5
# Absolute: a bias right before batch norm is cancelled by the mean subtraction, so its gradient is
# exactly zero and its numerical estimate is rounding noise, ~ulp(loss) / h ~ 2e-11.
VANISHING = 1e-9
BIAS_CANCELLING = ("batchnorm", "noisy_batchnorm")  # their per-unit noise is the same for every sample


@dataclass(frozen=True)
class GradCheck:
    """One comparison: `error` (a rel_error, unless the name says otherwise) against `threshold`."""

    name: str
    error: float
    threshold: float

    @property
    def passed(self) -> bool:
        return bool(self.error < self.threshold)  # a nan error fails


def run_gradchecks() -> list[GradCheck]:
    """All checks, layers first, then the net for each normalization and regularization."""
    checks = _layer_checks()
    for normalization in (None, *NORMALIZATIONS):
        for reg in REGS:
            checks += _net_checks(normalization, reg)
    return checks


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

    rng = np.random.RandomState(SEED)
    scores, y = rng.randn(6, 5), rng.randint(5, size=6)
    numerical = eval_numerical_gradient(lambda s: layers.softmax_loss(s, y)[0], scores.copy())
    checks.append(GradCheck("softmax_loss dx", rel_error(numerical, layers.softmax_loss(scores, y)[1]), NORM))

    checks += _batchnorm_checks()

    rng = np.random.RandomState(SEED)
    x, gamma, beta = _normalized_input(rng, (4, 5)), rng.randn(5), rng.randn(5)

    def noisy_forward(x, gamma, beta):
        # a fresh generator on every call: the same noise each time, so the function is fixed
        param = {"mode": "train", "noise_rng": np.random.RandomState(SEED)}
        return norms.noisy_batchnorm_forward(x, gamma, beta, param)

    checks += _backward_vs_numerical(
        "noisy_batchnorm (noise fixed)",
        noisy_forward,
        norms.noisy_batchnorm_backward,
        (x, gamma, beta),
        ("dx", "dgamma", "dbeta"),
        rng.randn(4, 5),
        NORM,
    )

    rng = np.random.RandomState(SEED)
    x, gamma, beta = _normalized_input(rng, (4, 5)), rng.randn(5), rng.randn(5)
    checks += _backward_vs_numerical(
        "layernorm",
        norms.layernorm_forward,
        norms.layernorm_backward,
        (x, gamma, beta, {}),
        ("dx", "dgamma", "dbeta"),
        rng.randn(4, 5),
        NORM,
    )

    rng = np.random.RandomState(SEED)
    x, gamma, beta = _normalized_input(rng, (4, 6)), rng.randn(6), rng.randn(6)
    checks += _backward_vs_numerical(
        "groupnorm (G=2)",
        norms.groupnorm_forward,
        norms.groupnorm_backward,
        (x, gamma, beta, 2, {}),
        ("dx", "dgamma", "dbeta"),
        rng.randn(4, 6),
        NORM,
    )

    rng = np.random.RandomState(SEED)
    x, gamma, beta = _normalized_input(rng, (2, 3, 2, 3)), rng.randn(3), rng.randn(3)
    checks += _backward_vs_numerical(
        "spatial batchnorm",
        conv.spatial_batchnorm_forward,
        conv.spatial_batchnorm_backward,
        (x, gamma, beta, {"mode": "train"}),
        ("dx", "dgamma", "dbeta"),
        rng.randn(2, 3, 2, 3),
        NORM,
    )

    rng = np.random.RandomState(SEED)
    x = _normalized_input(rng, (2, 6, 2, 3))
    gamma, beta = rng.randn(1, 6, 1, 1), rng.randn(1, 6, 1, 1)
    checks += _backward_vs_numerical(
        "spatial groupnorm (G=2)",
        conv.spatial_groupnorm_forward,
        conv.spatial_groupnorm_backward,
        (x, gamma, beta, 2, {}),
        ("dx", "dgamma", "dbeta"),
        rng.randn(2, 6, 2, 3),
        NORM,
    )

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


def _batchnorm_checks() -> list[GradCheck]:
    """Both batch-norm backward passes against numerical gradients, and against each other on the
    notebooks' larger (100, 500) batch."""
    rng = np.random.RandomState(SEED)
    x, gamma, beta = _normalized_input(rng, (4, 5)), rng.randn(5), rng.randn(5)
    dout = rng.randn(4, 5)
    checks = []
    for label, backward in (
        ("batchnorm_backward", norms.batchnorm_backward),
        ("batchnorm_backward_alt", norms.batchnorm_backward_alt),
    ):
        checks += _backward_vs_numerical(
            label,
            norms.batchnorm_forward,
            backward,
            (x, gamma, beta, {"mode": "train"}),
            ("dx", "dgamma", "dbeta"),
            dout,
            NORM,
        )

    rng = np.random.RandomState(SEED)
    x, gamma, beta = 5 * rng.randn(100, 500) + 12, rng.randn(500), rng.randn(500)
    dout = rng.randn(100, 500)
    _, cache = norms.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    graph = norms.batchnorm_backward(dout, cache)
    closed_form = norms.batchnorm_backward_alt(dout, cache)
    error = max(rel_error(a, b) for a, b in zip(graph, closed_form, strict=True))
    checks.append(GradCheck("batchnorm_backward_alt = batchnorm_backward (dx, dgamma, dbeta)", error, SAME))
    return checks


# --- the net ---------------------------------------------------------------------------------


def _net_checks(normalization: str | None, reg: float) -> list[GradCheck]:
    """The net's gradients against numerical ones: one row per kind of parameter (weights, biases,
    gammas and betas) with the worst parameter named, and for batch norm a row showing that the
    biases it cancels get zero gradient."""
    rng = np.random.RandomState(SEED)
    # N = 6 rather than the notebooks' 2: batch statistics of 2 samples make the loss ill-conditioned.
    n, d, hidden_dims, c = 6, 15, [20, 30], 10
    X, y = rng.randn(n, d), rng.randint(c, size=n)
    model = FullyConnectedNet(
        hidden_dims,
        input_dim=d,
        num_classes=c,
        normalization=normalization,
        num_groups=5,
        reg=reg,
        weight_scale=5e-2,
        dtype=np.float64,
        rng=rng,
    )

    def loss():
        # Noisy batch norm draws new noise on every call: rewinding its generators fixes the function.
        for i, bn_param in enumerate(model.bn_params):
            bn_param.update(noise_rng=np.random.RandomState(SEED + i), noise_step=0)
        return model.loss(X, y)

    _, grads = loss()
    errors: dict[str, dict[str, float]] = {}  # kind -> parameter name -> rel_error
    vanishing = 0.0
    for name in sorted(grads):
        numerical = eval_numerical_gradient(lambda _: loss()[0], model.params[name])
        kind = {"W": "W", "b": "b"}.get(name.rstrip("0123456789"), "gamma/beta")
        if normalization in BIAS_CANCELLING and kind == "b" and name != f"b{model.num_layers}":
            # np.max, unlike max, keeps a nan
            vanishing = float(np.max([vanishing, np.abs(numerical).max(), np.abs(grads[name]).max()]))
            continue
        errors.setdefault(kind, {})[name] = rel_error(numerical, grads[name])

    label = f"net {normalization or 'no norm'} reg={reg:g}"
    checks = []
    for kind, by_name in errors.items():
        name = max(by_name, key=lambda k: math.inf if math.isnan(by_name[k]) else by_name[k])
        checks.append(GradCheck(f"{label} {kind} (worst: {name})", by_name[name], NET_W if kind == "W" else NET_OTHER))
    if normalization in BIAS_CANCELLING:
        checks.append(GradCheck(f"{label} b before {normalization}: max |grad| (should be 0)", vanishing, VANISHING))
    return checks
