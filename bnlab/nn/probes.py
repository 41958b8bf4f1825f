"""Looking inside a net as it trains: per-layer statistics, internal covariate shift, landscape.

A Recorder is handed to the Solver (`Solver(..., recorder=Recorder())`). At every `every`-th
iteration (iterations 1, every + 1, 2 * every + 1, ...: 1-based, as in history.csv, whose loss at
that iteration is computed on the same parameters and minibatch) the Solver calls
`record(solver, iteration, X, y)` with that iteration's minibatch before training on it. The
recorder evaluates the net on the minibatch (probe passes), computes what the statistics need, and
puts everything back, so training goes on exactly as it would have without it: parameters, the
update rule's state and every layer's bn_param (running statistics, noise generators) are restored
after each probe pass, and the random generators the net draws dropout masks from are rewound to
their state before the step, so every probe pass sees the masks (and noisy-batch-norm noise) of the
real step and nothing is drawn from the run's stream.

Rows are tidy: (iteration, layer, statistic, value); layer 0 is the whole net. Statistics:

    per hidden layer i, on the input of its nonlinearity (model.activation_inputs[i], all N x D
    values of the minibatch pooled):
        mean, std, p15, p50, p85     moments and percentiles (numpy's linear interpolation)
        saturated                    fraction of values where the activation's derivative is below
                                     5% of its maximum: sigmoid and tanh in their flat tails; ReLU
                                     where its output is 0 (input <= 0); leaky ReLU where the input
                                     is <= 0 if its negative slope is below 5% of 1 (the default
                                     0.01 is), never otherwise
    per hidden layer i, on its output (model.layer_outputs[i]: for a plain net what the layer
    hands to the next one; for a residual net the stream after block i):
        out_std                      the standard deviation of all its values in the minibatch
    per weighted layer i (params[f"W{i}"]):
        grad_norm                    ||dL/dW_i||
        weight_norm                  ||W_i||
        update_ratio                 ||W_i(t+1) - W_i(t)|| / ||W_i(t)||, the update the Solver applies
        update_angle                 the angle between W_i(t) and W_i(t+1), in radians: for weights
                                     feeding a batch norm, where only the direction matters, the
                                     step that counts (Wan et al. 2021's angular update)
        effective_lr                 lr / ||W_i(t)||^2: the learning rate of a scale-invariant
                                     weight's direction (van Laarhoven 2017); lr is the rate W_i
                                     sees (warm-up and the Solver's lr_growth included)
        ics_l2, ics_cos              Santurkar et al. (2018), Definition 2.1: G = dL/dW_i at the
                                     current parameters, G' = dL/dW_i after every parameter of the
                                     layers below i (W, b, gamma, beta of layers 1..i-1) took this
                                     iteration's update, layer i and above unchanged, same
                                     minibatch: ||G - G'|| and cos(G, G'). Not for layer 1, which
                                     has no layers below.
    per hidden layer i >= 2 whose input passes a dropout (fully connected nets; Li et al. 2019,
    bnlab.nn.variance_shift), on the minibatch, with a mask drawn from a generator of its own:
        shift_measured               the training-time variance of layer i's affine output over its
                                     test-time variance (mean over features of each)
        shift_predicted              the same ratio as the formula gives it
    for the whole net (layer 0), along the gradient g of all parameters: the loss and gradient at
    theta - m * lr * g for each step multiple m of `landscape_steps` (lr: the current learning rate)
        loss_range                   max - min of the losses there and at theta itself
        grad_change                  max over m of ||g(theta - m lr g) - g(theta)||  (predictiveness)
        beta_smoothness              max over m of that change / ||m lr g||  (distance moved)

Cost of a recorded iteration, in forward-backward passes: 1, plus one per layer above the first
for ICS, plus one per step multiple for the landscape; `every` amortizes it (see DEFAULT_EVERY).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from functools import partial

import numpy as np

from bnlab.nn.variance_shift import dropout_variance_shift

ACTIVATION_STATISTICS = ("mean", "std", "p15", "p50", "p85", "saturated")
OUTPUT_STATISTICS = ("out_std",)
WEIGHT_STATISTICS = ("grad_norm", "weight_norm", "update_ratio", "update_angle", "effective_lr")
ICS_STATISTICS = ("ics_l2", "ics_cos")
LANDSCAPE_STATISTICS = ("loss_range", "grad_change", "beta_smoothness")
SHIFT_STATISTICS = ("shift_measured", "shift_predicted")
STATISTICS = (
    ACTIVATION_STATISTICS + OUTPUT_STATISTICS + WEIGHT_STATISTICS + ICS_STATISTICS + LANDSCAPE_STATISTICS
) + SHIFT_STATISTICS
# What a Recorder records unless told: all but the statistics added after results recorded "all"
# (those results keep matching their specs); name them to record them.
DEFAULT_STATISTICS = tuple(s for s in STATISTICS if s not in ("update_angle", "effective_lr", *SHIFT_STATISTICS))
# A recorded iteration of a six-layer net with every statistic costs about 11 training steps: every
# 100th keeps the wall time at 1.05-1.1x that of training alone (`bnlab bench --section record`).
DEFAULT_EVERY = 100
DEFAULT_LANDSCAPE_STEPS = (0.5, 1.0, 2.0, 4.0)
SATURATION_FRACTION = 0.05  # "flat": the derivative below 5% of its maximum

Row = tuple[int, int, str, float]


def _sigmoid_derivative(x: np.ndarray) -> np.ndarray:
    s = 0.5 * (1 + np.tanh(0.5 * x))  # the sigmoid without overflow in exp
    return s * (1 - s)


# name -> (derivative of the activation, its maximum); leaky ReLU is handled with its slope
DERIVATIVES = {
    "sigmoid": (_sigmoid_derivative, 0.25),
    "tanh": (lambda x: 1 - np.tanh(x) ** 2, 1.0),
}


def saturated_fraction(x: np.ndarray, activation: str, negative_slope: float = 0.01) -> float:
    """Fraction of the nonlinearity inputs x where `activation` is flat: its derivative below
    SATURATION_FRACTION of its maximum. ReLU: input <= 0 (output 0). Leaky ReLU: input <= 0 when
    negative_slope < SATURATION_FRACTION (its derivative there is the slope; the maximum is 1)."""
    if activation == "relu" or (activation == "leaky_relu" and negative_slope < SATURATION_FRACTION):
        return float(np.mean(x <= 0))
    if activation == "leaky_relu":
        return 0.0
    if activation not in DERIVATIVES:
        raise ValueError(
            f"no saturation rule for activation {activation!r}: expected one of {['relu', 'leaky_relu', *DERIVATIVES]}"
        )
    derivative, maximum = DERIVATIVES[activation]
    return float(np.mean(derivative(x.astype(np.float64)) < SATURATION_FRACTION * maximum))


def activation_statistics(x: np.ndarray, activation: str, negative_slope: float = 0.01) -> dict[str, float]:
    """mean, std, p15, p50, p85 and saturated of one layer's nonlinearity inputs x (any shape)."""
    values = x.astype(np.float64).ravel()
    p15, p50, p85 = np.percentile(values, [15, 50, 85])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p15": float(p15),
        "p50": float(p50),
        "p85": float(p85),
        "saturated": saturated_fraction(values, activation, negative_slope),
    }


def growth_factor(layers: Sequence[int], values: Sequence[float]) -> float:
    """The factor by which positive `values` grow per layer towards the input (layer 1): exp(-slope)
    of the least-squares line through (layer, log value). For Yang et al.'s (2019) gradient
    explosion, pass the squared weight-gradient norms of the hidden layers."""
    slope = np.polyfit(np.asarray(layers, dtype=float), np.log(np.asarray(values, dtype=float)), 1)[0]
    return float(np.exp(-slope))


def _layer_of(name: str) -> int:
    """'W3', 'gamma3', 'beta3' -> 3: a parameter's layer number is its trailing digits."""
    match = re.search(r"(\d+)$", name)
    if match is None:
        raise ValueError(f"parameter {name!r} has no layer number: recording needs names like W1, b1, gamma1")
    return int(match.group(1))


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two arrays as vectors, in radians, accurate for tiny angles too:
    2 atan2(||u - v||, ||u + v||) for their unit vectors u, v (arccos of the cosine loses half the digits)."""
    u = a.astype(np.float64).ravel() / _norm(a)
    v = b.astype(np.float64).ravel() / _norm(b)
    return 2.0 * float(np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v)))


def _norm(v: np.ndarray) -> float:
    return float(np.sqrt(np.dot(v.astype(np.float64).ravel(), v.astype(np.float64).ravel())))


class Recorder:
    """Collects `rows` of the chosen statistics every `every` iterations (see the module docstring).

    statistics: names from STATISTICS (default DEFAULT_STATISTICS); every: the cadence; landscape_steps: the step
    multiples m (of the learning rate) at which the landscape is probed.
    """

    def __init__(
        self,
        statistics: Sequence[str] = DEFAULT_STATISTICS,
        every: int = DEFAULT_EVERY,
        landscape_steps: Sequence[float] = DEFAULT_LANDSCAPE_STEPS,
    ) -> None:
        unknown = [s for s in statistics if s not in STATISTICS]
        if unknown:
            raise ValueError(f"unknown statistic(s) {unknown}: expected names from {list(STATISTICS)}")
        if every < 1 or not landscape_steps or any(not m > 0 for m in landscape_steps):
            raise ValueError("every must be >= 1 and landscape_steps a non-empty list of positive multiples")
        self.statistics = set(statistics)
        self.every = every
        self.landscape_steps = [float(m) for m in landscape_steps]
        self.rows: list[Row] = []

    def due(self, iteration: int) -> bool:
        """Iterations 1, every + 1, 2 * every + 1, ... (1-based)."""
        return (iteration - 1) % self.every == 0

    def record(self, solver, iteration: int, X: np.ndarray, y: np.ndarray) -> None:
        """Append this iteration's rows; the solver and its model are left exactly as they were."""
        model = solver.model
        saved = _Snapshot(solver)
        try:
            inputs: dict[int, np.ndarray] = {}
            outputs: dict[int, np.ndarray] = {}
            wanted = self.statistics & set(ACTIVATION_STATISTICS)
            loss, grads = saved.loss_at(
                saved.flat, X, y, inputs if wanted else None, outputs if "out_std" in self.statistics else None
            )
            self._activations(iteration, model, inputs)
            for layer in sorted(outputs):
                self._add(iteration, layer, "out_std", float(outputs[layer].astype(np.float64).std()))
            flat_grads = solver.grown(np.concatenate([grads[name].ravel() for name in solver._names]), iteration)
            state = {**copy.deepcopy(solver.optim_state), "learning_rate": solver.rate_at(iteration)}
            next_flat, _ = solver.update_rule(saved.flat.copy(), flat_grads.copy(), state)
            self._weights(iteration, saved, grads, next_flat, partial(solver.rate_of, iteration=iteration))
            if self.statistics & set(ICS_STATISTICS):
                self._ics(iteration, saved, grads, next_flat, X, y)
            if self.statistics & set(LANDSCAPE_STATISTICS):  # steps of the rate this update applies
                self._landscape(iteration, saved, loss, flat_grads, float(state["learning_rate"]), X, y)
            if self.statistics & set(SHIFT_STATISTICS) and getattr(model, "dropout_layers", None):
                # a generator of its own: the run's stream draws exactly what it would without it
                for row in dropout_variance_shift(model, X, np.random.RandomState(iteration)):
                    self._add(iteration, row["layer"], "shift_measured", row["train_var"] / row["test_var"])
                    self._add(iteration, row["layer"], "shift_predicted", row["predicted_train_var"] / row["test_var"])
        finally:
            saved.restore()

    def _add(self, iteration: int, layer: int, statistic: str, value: float) -> None:
        if statistic in self.statistics:
            self.rows.append((iteration, layer, statistic, float(value)))

    def _activations(self, iteration: int, model, inputs: dict[int, np.ndarray]) -> None:
        name = getattr(model, "activation_name", "relu")
        slope = getattr(model, "negative_slope", 0.01)
        for layer in sorted(inputs):
            for statistic, value in activation_statistics(inputs[layer], name, slope).items():
                self._add(iteration, layer, statistic, value)

    def _weights(self, iteration: int, saved: _Snapshot, grads: dict, next_flat: np.ndarray, rate_of) -> None:
        for layer in saved.layers:
            name = f"W{layer}"
            weight, updated = saved.flat[saved.slices[name]], next_flat[saved.slices[name]]
            weight_norm = _norm(weight)
            self._add(iteration, layer, "grad_norm", _norm(grads[name]))
            self._add(iteration, layer, "weight_norm", weight_norm)
            self._add(iteration, layer, "update_ratio", _norm(updated - weight) / weight_norm)
            self._add(iteration, layer, "update_angle", angle_between(weight, updated))
            self._add(iteration, layer, "effective_lr", rate_of(name) / weight_norm**2)

    def _ics(self, iteration: int, saved: _Snapshot, grads: dict, next_flat: np.ndarray, X, y) -> None:
        """Definition 2.1: layer i's weight gradient after the layers below it are updated."""
        for layer in saved.layers[1:]:
            mixed = saved.flat.copy()
            for name, where in saved.slices.items():
                if _layer_of(name) < layer:
                    mixed[where] = next_flat[where]
            _, shifted = saved.loss_at(mixed, X, y)
            g = grads[f"W{layer}"].astype(np.float64).ravel()
            g_shifted = shifted[f"W{layer}"].astype(np.float64).ravel()
            self._add(iteration, layer, "ics_l2", _norm(g - g_shifted))
            denominator = _norm(g) * _norm(g_shifted)
            self._add(iteration, layer, "ics_cos", np.dot(g, g_shifted) / denominator if denominator else np.nan)

    def _landscape(self, iteration: int, saved: _Snapshot, loss: float, g: np.ndarray, lr: float, X, y) -> None:
        losses, changes, betas = [loss], [], []
        for m in self.landscape_steps:
            step = (m * lr) * g
            moved_loss, moved_grads = saved.loss_at(saved.flat - step, X, y)
            moved_g = np.concatenate([moved_grads[name].ravel() for name in saved.names])
            change = _norm(moved_g - g)
            losses.append(moved_loss)
            changes.append(change)
            distance = _norm(step)
            betas.append(change / distance if distance else np.nan)
        self._add(iteration, 0, "loss_range", max(losses) - min(losses))
        self._add(iteration, 0, "grad_change", max(changes))
        self._add(iteration, 0, "beta_smoothness", max(betas))


class _Snapshot:
    """Everything a probe pass could change, saved before the first one: the flat parameter
    buffer, every bn_param (running statistics, noise generators and counters), the generators
    the net draws from, and activation_inputs. loss_at() evaluates the net from this state."""

    def __init__(self, solver) -> None:
        self.solver = solver
        self.model = solver.model
        self.flat = solver._flat.copy()
        self.names = list(solver._names)
        self.slices: dict[str, slice] = {}
        offset = 0
        for name in self.names:
            size = self.model.params[name].size
            self.slices[name] = slice(offset, offset + size)
            offset += size
        self.layers = sorted(_layer_of(name) for name in self.names if re.fullmatch(r"W\d+", name))
        self.bn_params = copy.deepcopy(getattr(self.model, "bn_params", []))
        dropout_rng = getattr(self.model, "dropout_param", {}).get("rng")
        # the global generator too: a notebook-style run draws minibatches and masks from it
        candidates = (solver.rng, dropout_rng, np.random.mtrand._rand)
        self.rngs = list({id(r): r for r in candidates if r is not None}.values())
        self.rng_states = [r.get_state() for r in self.rngs]
        self.activation_inputs = self.model.activation_inputs
        self.layer_outputs = getattr(self.model, "layer_outputs", None)

    def loss_at(
        self, flat: np.ndarray, X: np.ndarray, y: np.ndarray, inputs: dict | None = None, outputs: dict | None = None
    ):
        """(loss, grads) with the parameters set to `flat`, from the saved state of everything else;
        the nonlinearity inputs go into `inputs` and the layers' outputs into `outputs` when dicts."""
        self.restore()
        self.solver._flat[...] = flat
        self.model.activation_inputs = inputs
        self.model.layer_outputs = outputs
        return self.model.loss(X, y)

    def restore(self) -> None:
        self.solver._flat[...] = self.flat
        # in place: whatever holds a reference to a layer's dict keeps seeing the live one
        for live, saved in zip(self.model.bn_params if self.bn_params else [], self.bn_params, strict=True):
            live.clear()
            live.update(copy.deepcopy(saved))
        for rng, state in zip(self.rngs, self.rng_states, strict=True):
            rng.set_state(state)
        self.model.activation_inputs = self.activation_inputs
        self.model.layer_outputs = self.layer_outputs
