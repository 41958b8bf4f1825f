"""The normalizations a net can use, one row each: its passes over features (N, D) and, where
conv nets take it, over channels (N, C, H, W), its options with their defaults and limits, what
its layers keep between calls, and what its gradient checks need.

The passes themselves are bnlab.nn.norms' and bnlab.nn.conv's, in the CS231n style. Nets, residual
nets, the spec's schema and the gradient-check suite read this table and name no normalization
themselves: a new normalization is a row here (and its passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnlab.nn import conv, fused, norms

Array = np.ndarray
Forward = Callable[[Array, Array, Array, dict], tuple[Array, Any]]  # (x, gamma, beta, param) -> (out, cache)
Backward = Callable[[Array, Any], tuple[Array, Array, Array]]  # (dout, cache) -> (dx, dgamma, dbeta)

NOISE_STREAM = 0x6E6F6973  # 'nois': a seed word that sets the noise generators apart from the net's own


@dataclass(frozen=True)
class Option:
    """A normalization's option as a spec key and a net's keyword: its default, its type and the
    pydantic constraints on it (ge, gt), the key its layers read it under, and whether every run's
    config records it even when its normalization is not used (as runs made before this table did)."""

    default: Any
    kind: type = float
    constraints: dict = field(default_factory=dict)
    param_key: str | None = None  # the key in the layer's param dict (default: the option's name)
    recorded_unused: bool = False
    omitted_at_default: bool = False  # added after results existed: at its default it stays out of configs
    doc: str = ""


# The running statistics' momentum, in CS231n's convention (Keras's too, default 0.99 there): each
# train step keeps this fraction of the old value, running = momentum * running + (1 - momentum) *
# batch. PyTorch's BatchNorm `momentum` is the other fraction: PyTorch's 0.1 is 0.9 here.
MOMENTUM = Option(0.9, float, {"ge": 0, "lt": 1}, omitted_at_default=True, doc="the old running value's share")


@dataclass(frozen=True)
class Normalization:
    """One normalization. forward/backward take x (N, D) and gamma, beta (D,); spatial_forward and
    spatial_backward x (N, C, H, W) and gamma, beta (C,) (None: conv nets do not take it).
    `divides` names an option that must divide every width the norm sees (group norm's groups).
    `cancels_bias`: the output ignores a per-feature shift of the input, so the bias before it gets
    an exactly zero gradient. `residual`: residual nets take it. `noisy`: it draws noise, from a
    generator per layer seeded with (the net's noise seed, NOISE_STREAM, layer). `batch_statistics`:
    it normalizes each feature over the samples of a batch (True), or of a virtual batch as large as
    its option of that name says, so a batch of one leaves it one value per feature.
    `running_statistics`: test mode uses a running mean and variance (bn_param's running_mean and
    running_var), which bnlab.nn.statistics.recompute_bn_statistics can set exactly.
    `maxpool_forward`/`maxpool_backward`: the conv form in train mode followed by a 2x2 max pool, as
    one pass (None: the conv net runs the two); `relu_forward`/`relu_backward` likewise forward
    followed by a ReLU, as one call.
    `gradcheck_options`: the options of the gradient checks' small nets; `gradcheck_setup(bn_params,
    widths)` puts the layers in the state the checks differentiate (a fixed function)."""

    forward: Forward
    backward: Backward
    spatial_forward: Forward | None = None
    spatial_backward: Backward | None = None
    maxpool_forward: Forward | None = None
    maxpool_backward: Backward | None = None
    relu_forward: Forward | None = None
    relu_backward: Backward | None = None
    options: dict[str, Option] = field(default_factory=dict)
    divides: str | None = None
    cancels_bias: bool = False
    residual: bool = True
    noisy: bool = False
    batch_statistics: bool | str = False
    running_statistics: bool = False
    gradcheck_options: dict = field(default_factory=dict)
    gradcheck_setup: Callable[[list[dict], Sequence[int]], None] | None = None

    def layer_params(self, options: dict, layers: int, seed: int | None = None) -> list[dict]:
        """The param dict of each of `layers` normalization layers (1-based order), from the net's
        options (defaults where absent): mode, and each option under its param key. `seed` seeds
        the layers' own random streams, where the normalization draws noise."""
        shared = {"mode": "train"}
        for name, option in self.options.items():
            shared[option.param_key or name] = options.get(name, option.default)
        params = [dict(shared) for _ in range(layers)]
        if self.noisy and seed is not None:
            for layer, param in enumerate(params, start=1):
                param["noise_rng"] = np.random.RandomState([seed, NOISE_STREAM, layer])
        return params

    def check_widths(self, options: dict, widths: Sequence[int], which: str) -> None:
        """ValueError when the option in `divides` does not divide every width (`which` names them)."""
        if self.divides is not None:
            value = options.get(self.divides, self.options[self.divides].default)
            if any(width % value for width in widths):
                raise ValueError(f"{self.divides}={value} must divide {which} {list(widths)}")


def _groupnorm(x: Array, gamma: Array, beta: Array, param: dict):
    return norms.groupnorm_forward(x, gamma, beta, param["num_groups"], param)


def _spatial_groupnorm(x: Array, gamma: Array, beta: Array, param: dict):
    return conv.spatial_groupnorm_forward(x, gamma, beta, param["num_groups"], param)


def _spatial_layernorm(x: Array, gamma: Array, beta: Array, param: dict):
    """Layer norm over (C, H, W): group norm with one group."""
    return conv.spatial_groupnorm_forward(x, gamma, beta, 1, param)


def _clipped_renorm(bn_params: list[dict], widths: Sequence[int]) -> None:
    """Moving statistics far from any batch's, so that r and d are clipped: constants, as batch
    renorm's backward pass treats them."""
    for param, width in zip(bn_params, widths, strict=True):
        param.update(running_mean=np.full(width, -10.0), running_std=np.full(width, 1e-3))


def _rewound_noise(bn_params: list[dict], widths: Sequence[int]) -> None:
    """Every evaluation draws the same noise: each layer's generator at a fixed seed."""
    for layer, param in enumerate(bn_params):
        param.update(noise_rng=np.random.RandomState(231 + layer), noise_step=0)


def _set_statistics(bn_params: list[dict], widths: Sequence[int]) -> None:
    """Statistics away from zero and one, as a pre-trained net's are."""
    for param, width in zip(bn_params, widths, strict=True):
        param.update(running_mean=np.linspace(-0.5, 0.5, width), running_var=np.linspace(0.5, 2.0, width))


NORMALIZATIONS: dict[str, Normalization] = {
    "batchnorm": Normalization(  # compiled: the functions of norms.batchnorm_* and conv.spatial_batchnorm_*
        fused.batchnorm_forward,
        fused.batchnorm_backward,
        fused.spatial_batchnorm_forward,
        fused.spatial_batchnorm_backward,
        maxpool_forward=fused.batchnorm_maxpool_forward,
        maxpool_backward=fused.batchnorm_maxpool_backward,
        relu_forward=fused.batchnorm_relu_forward,
        relu_backward=fused.batchnorm_relu_backward,
        cancels_bias=True,
        running_statistics=True,
        options={"momentum": MOMENTUM},
        batch_statistics=True,
    ),
    "layernorm": Normalization(
        norms.layernorm_forward, norms.layernorm_backward, _spatial_layernorm, conv.spatial_groupnorm_backward
    ),
    "groupnorm": Normalization(
        _groupnorm,
        norms.groupnorm_backward,
        _spatial_groupnorm,
        conv.spatial_groupnorm_backward,
        options={"num_groups": Option(5, int, {"ge": 1}, recorded_unused=True, doc="groups per layer")},
        divides="num_groups",
        gradcheck_options={"num_groups": 2},
    ),
    "rmsnorm": Normalization(norms.rmsnorm_forward, norms.rmsnorm_backward),
    "batchrenorm": Normalization(
        norms.batchrenorm_forward,
        norms.batchrenorm_backward,
        # the clipping, ramped from batch norm's (rmax 1, dmax 0) over renorm_warmup iterations
        options={
            "momentum": MOMENTUM,
            "renorm_rmax": Option(3.0, float, {"ge": 1}, "rmax", True, doc="r clipped to [1/rmax, rmax]"),
            "renorm_dmax": Option(5.0, float, {"ge": 0}, "dmax", True, doc="d clipped to [-dmax, dmax]"),
            "renorm_warmup": Option(100, int, {"ge": 0}, "warmup", True, doc="iterations of the ramp"),
        },
        cancels_bias=True,
        batch_statistics=True,
        # clipped to 1.5 and 0.5: a ReLU after it still sees inputs of both signs
        gradcheck_options={"renorm_rmax": 1.5, "renorm_dmax": 0.5, "renorm_warmup": 0},
        gradcheck_setup=_clipped_renorm,
    ),
    "noisy_batchnorm": Normalization(
        norms.noisy_batchnorm_forward,
        norms.noisy_batchnorm_backward,
        # the spread of the per-unit shift and extra scale at the first step, and the steps over
        # which that spread grows by itself (bnlab.nn.norms.noisy_batchnorm_forward)
        options={
            "momentum": MOMENTUM,
            "noise_mean": Option(0.5, float, {"ge": 0}, doc="spread of the per-unit shift at the first step"),
            "noise_scale": Option(0.5, float, {"ge": 0}, doc="spread of the extra per-unit scale at the first step"),
            "noise_growth": Option(1000, float, {"gt": 0}, doc="steps over which the spread doubles"),
        },
        cancels_bias=True,
        running_statistics=True,
        batch_statistics=True,
        residual=False,
        noisy=True,
        gradcheck_setup=_rewound_noise,
    ),
    "ghost_batchnorm": Normalization(
        norms.ghost_batchnorm_forward,
        norms.ghost_batchnorm_backward,
        conv.spatial_ghost_batchnorm_forward,
        conv.spatial_ghost_batchnorm_backward,
        # Hoffer et al. 2017: each virtual batch of ghost_batch_size samples normalized by its own statistics
        options={"momentum": MOMENTUM, "ghost_batch_size": Option(32, int, {"ge": 1}, doc="samples per virtual batch")},
        cancels_bias=True,
        running_statistics=True,
        batch_statistics="ghost_batch_size",
        gradcheck_options={"ghost_batch_size": 4},
    ),
    "frozen_batchnorm": Normalization(
        norms.frozen_batchnorm_forward,
        norms.frozen_batchnorm_backward,
        conv.spatial_frozen_batchnorm_forward,
        conv.spatial_frozen_batchnorm_backward,
        # normalizes with running statistics it never updates (from model.init_from's run, or
        # recomputed by model.recompute_statistics): fine-tuning with frozen statistics
        running_statistics=True,
        gradcheck_setup=_set_statistics,
    ),
}


def named(normalization: str | None, conv_form: bool = False) -> Normalization | None:
    """The row of `normalization` (None for none); ValueError naming the choices when there is no
    such row, or (conv_form) when conv nets do not take it."""
    if normalization is None:
        return None
    row = NORMALIZATIONS.get(normalization)
    choices = [n for n, r in NORMALIZATIONS.items() if not conv_form or r.spatial_forward is not None]
    if row is None or normalization not in choices:
        raise ValueError(f"unknown normalization {normalization!r}: expected None or one of {choices}")
    return row


def option_names() -> list[str]:
    """Every option of every normalization, in the table's order."""
    return [name for row in NORMALIZATIONS.values() for name in row.options]
