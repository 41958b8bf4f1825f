"""The nets a spec can name (`model.architecture`), one row each: the class, the option that lists
its widths, the normalizations its layers take and the options it lacks. Residual nets have their
own table (bnlab.nn.residual.RESIDUAL_ARCHITECTURES), of the same rows."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from bnlab.nn.nets import ConvNet, FullyConnectedNet
from bnlab.nn.normalizations import NORMALIZATIONS, Normalization


@dataclass(frozen=True)
class Architecture:
    """One net a spec can name: its class, the option that lists its layer widths (required) and
    what it holds, which rows of bnlab.nn.normalizations its layers take (`takes`), and why it lacks
    an option the other nets have (options it lacks must stay at their defaults)."""

    net: type
    widths: tuple[str, str]
    takes: Callable[[Normalization], bool] = lambda row: True
    lacks: dict[str, str] = field(default_factory=dict)

    @property
    def normalizations(self) -> tuple[str | None, ...]:
        """None and the names of the normalizations it takes, in the table's order."""
        return (None, *(name for name, row in NORMALIZATIONS.items() if self.takes(row)))

    @cached_property  # a row never changes; specs ask for every key of every run
    def options(self) -> frozenset[str]:
        """The model options its constructor takes (not the ones the lab supplies: data shape, rng),
        its normalizations' options among them."""
        named_ = frozenset(inspect.signature(self.net).parameters) - {"input_dim", "num_classes", "seed", "rng"}
        of_norms = {name for n in self.normalizations if n is not None for name in NORMALIZATIONS[n].options}
        return named_ - {"norm_options"} | of_norms

    def build(self, options: dict, input_shape: tuple[int, ...], rng: np.random.RandomState, num_classes: int = 10):
        """The net for inputs of one sample's shape, e.g. (3, 32, 32), from `options` (the ones
        it does not take are left out), its weights drawn from rng."""
        taken = {k: v for k, v in options.items() if k in self.options}
        return self.net(input_dim=tuple(input_shape), num_classes=num_classes, rng=rng, **taken)


ARCHITECTURES: dict[str, Architecture] = {
    "fc": Architecture(FullyConnectedNet, ("hidden_dims", ": at least one width, e.g. [100, 100]")),
    "conv": Architecture(
        ConvNet,
        ("channels", " (the filters of each conv block)"),
        takes=lambda row: row.spatial_forward is not None,
        lacks={
            "dropout_keep_ratio": "the conv net has no dropout; leave it at 1",
            "dropout_position": "the conv net has no dropout; leave it at every",
            "norm_position": "conv nets normalize before the activation only; leave it at before",
        },
    ),
}
