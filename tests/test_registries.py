"""One row per concept: the spec's allowed values and rules come from the nn tables and the
figure-kind table, and every reader uses the same rows."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from bnlab.errors import SpecError
from bnlab.figures.kinds import DRAW
from bnlab.nn.architectures import ARCHITECTURES
from bnlab.nn.layers import ACTIVATIONS
from bnlab.nn.nets import ConvNet, FullyConnectedNet
from bnlab.nn.normalizations import NOISE_STREAM, NORMALIZATIONS
from bnlab.spec.experiment import experiment_from_text
from bnlab.spec.figure_kinds import FIGURE_KINDS
from bnlab.spec.schema import ModelSpec, PlotSpec


def allowed(field) -> set:
    """The names a Literal (or Literal | None) field accepts."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return {v for arg in typing.get_args(annotation) for v in typing.get_args(arg)}


def test_spec_choices_are_the_tables_keys():
    fields = ModelSpec.model_fields
    assert allowed(fields["normalization"]) == set(NORMALIZATIONS)
    assert allowed(fields["activation"]) == set(ACTIVATIONS)
    assert allowed(fields["architecture"]) == set(ARCHITECTURES)
    assert allowed(PlotSpec.model_fields["kind"]) == set(FIGURE_KINDS)


def test_every_figure_kind_has_a_draw_function():
    assert DRAW.keys() == FIGURE_KINDS.keys()


def test_architectures_name_their_nets_and_normalizations():
    assert ARCHITECTURES["fc"].net is FullyConnectedNet and ARCHITECTURES["conv"].net is ConvNet
    assert ARCHITECTURES["fc"].normalizations == (None, *NORMALIZATIONS)
    conv_forms = (None, "batchnorm", "layernorm", "groupnorm", "ghost_batchnorm", "frozen_batchnorm")
    assert ARCHITECTURES["conv"].normalizations == conv_forms
    # the options are the constructors' own: conv has no dropout, fc no channels
    assert "dropout_keep_ratio" in ARCHITECTURES["fc"].options - ARCHITECTURES["conv"].options
    assert "channels" in ARCHITECTURES["conv"].options - ARCHITECTURES["fc"].options


SPEC = """
name: t
model: {hidden_dims: [10], %s}
"""


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("kernel_size: 5", ["kernel_size is only for architecture conv"]),
        ("architecture: conv, channels: [4], renorm_rmax: 2", ["renorm_rmax is only for architecture fc"]),
        ("architecture: conv, channels: [4], noise_mean: 1", ["noise_mean is only for architecture fc"]),
        ("architecture: conv, channels: [4], dropout_keep_ratio: 0.5", ["the conv net has no dropout"]),
    ],
)
def test_an_option_the_architecture_lacks_is_an_error(model, words):
    with pytest.raises(SpecError) as err:
        experiment_from_text(SPEC % model, "t.yaml")
    for word in words:
        assert word in str(err.value)


def test_noisy_batchnorm_layers_draw_from_their_own_seeded_generators():
    net = FullyConnectedNet([6, 6], input_dim=4, normalization="noisy_batchnorm", noise_mean=0.2, noise_seed=7, seed=0)
    for layer, param in enumerate(net.bn_params, start=1):
        assert param["noise_mean"] == 0.2
        expected = np.random.RandomState([7, NOISE_STREAM, layer]).uniform(size=3)
        assert np.array_equal(param["noise_rng"].uniform(size=3), expected)
    plain = FullyConnectedNet([6, 6], input_dim=4, normalization="batchnorm", noise_seed=7, seed=0)
    assert all("noise_rng" not in p and "noise_mean" not in p for p in plain.bn_params)


def test_a_net_takes_a_sample_shape_as_input_dim():
    a = FullyConnectedNet([5], input_dim=(3, 2, 2), seed=1)
    b = FullyConnectedNet([5], input_dim=12, seed=1)
    assert a.params["W1"].shape == (12, 5) and np.array_equal(a.params["W1"], b.params["W1"])
