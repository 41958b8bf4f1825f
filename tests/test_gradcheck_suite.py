"""bnlab.nn.gradcheck_suite: every check passes on bnlab's layers and net, and a deliberately broken backward
pass fails exactly the checks that depend on it."""

import dataclasses
import math

import numpy as np
import pytest

from bnlab import layers
from bnlab.nn import conv, norms
from bnlab.nn import layers as nn_layers
from bnlab.nn.gradcheck_suite import GradCheck, run_gradchecks


@pytest.fixture(scope="module")
def run():
    """One run of all checks (about 2 s), from a seeded global RNG, and that RNG's next draws."""
    np.random.seed(5)
    expected = np.random.randn(3)
    np.random.seed(5)
    checks = run_gradchecks()
    return checks, expected, np.random.randn(3)


@pytest.fixture(scope="module")
def checks(run):
    return run[0]


def test_every_check_passes(checks):
    failed = [(c.name, c.error, c.threshold) for c in checks if not c.passed]
    assert not failed
    assert all(math.isfinite(c.error) and c.error >= 0 for c in checks)


def test_the_table_covers_every_layer_and_net_configuration(checks):
    names = [c.name for c in checks]
    assert len(names) == len(set(names))
    assert 40 <= len(names) <= 80
    for layer in (
        "affine dx",
        "affine dw",
        "affine db",
        "relu dx",
        "softmax_loss dx",
        "batchnorm_backward dx",
        "batchnorm_backward_alt dgamma",
        "batchnorm_backward_alt = batchnorm_backward",
        "layernorm dbeta",
        "groupnorm (G=2) dx",
        "spatial batchnorm dgamma",
        "spatial groupnorm (G=2) dbeta",
        "dropout (p=0.7) dx",
    ):
        assert any(name.startswith(layer) for name in names), layer
    for norm in ("no norm", "batchnorm", "layernorm", "groupnorm"):
        for reg in ("0", "3.14"):
            assert any(name.startswith(f"net {norm} reg={reg} W (worst: W") for name in names), (norm, reg)


def test_the_global_rng_is_left_alone(run):
    _, expected, drawn = run
    np.testing.assert_array_equal(drawn, expected)


def test_gradcheck_passes_strictly_below_its_threshold_and_never_on_nan():
    assert GradCheck("a", 1e-9, 1e-8).passed
    assert not GradCheck("a", 1e-8, 1e-8).passed
    assert not GradCheck("a", math.nan, 1e-8).passed
    with pytest.raises(dataclasses.FrozenInstanceError):
        GradCheck("a", 0.0, 1.0).error = 2.0  # type: ignore[misc]


def break_function(monkeypatch, name, broken):
    """Replace a layer function where it is defined and in the tables that nets look it up in."""
    module = next(m for m in (nn_layers, norms, conv) if hasattr(m, name))
    original = getattr(module, name)
    monkeypatch.setattr(module, name, broken)
    for key, norm in norms.NORMALIZATIONS.items():
        if norm.backward is original:
            monkeypatch.setitem(norms.NORMALIZATIONS, key, dataclasses.replace(norm, backward=broken))
    for key, (forward, backward) in nn_layers.ACTIVATIONS.items():
        if backward is original:
            monkeypatch.setitem(nn_layers.ACTIVATIONS, key, (forward, broken))


def scale_output(function, index, factor):
    """`function` with its index-th returned gradient multiplied by factor: a 1% wrong backward."""

    def broken(dout, cache):
        grads = list(function(dout, cache))
        grads[index] = grads[index] * factor
        return tuple(grads)

    return broken


NORMS = ("no norm", "batchnorm", "layernorm", "groupnorm", "noisy_batchnorm")
NETS = [f"net {n} reg={r} " for n in NORMS for r in ("0", "3.14")]


@pytest.mark.parametrize(
    "breakages, failing",
    [
        # dx of layer norm feeds every parameter of the net's first layer. Dropout, which the net
        # checks leave out, is broken in the same run (its one check is independent of the rest).
        (
            [
                ("layernorm_backward", scale_output(layers.layernorm_backward, 0, 1.01)),
                ("dropout_backward", lambda d, c: d),
            ],
            ["layernorm dx", "net layernorm reg=0 ", "net layernorm reg=3.14 ", "dropout (p=0.7) dx"],
        ),
        # The net's layers 2..L take dW from affine_backward.
        (
            [("affine_backward", scale_output(layers.affine_backward, 1, 1.01))],
            ["affine dw"] + [f"{net}W " for net in NETS],
        ),
        # Spatial batch norm, noisy batch norm and the net use the closed form.
        (
            [("batchnorm_backward_alt", scale_output(layers.batchnorm_backward_alt, 1, 1.01))],
            [
                "batchnorm_backward_alt dgamma",
                "batchnorm_backward_alt = batchnorm_backward",
                "spatial batchnorm dgamma",
                "net batchnorm reg=0 gamma/beta",
                "net batchnorm reg=3.14 gamma/beta",
                "noisy_batchnorm (noise fixed) dgamma",
                "net noisy_batchnorm reg=0 gamma/beta",
                "net noisy_batchnorm reg=3.14 gamma/beta",
            ],
        ),
    ],
    ids=["layernorm-dx+dropout", "affine-dw", "batchnorm_alt-dgamma"],
)
def test_a_broken_backward_fails_exactly_its_checks(monkeypatch, breakages, failing):
    for name, broken in breakages:
        break_function(monkeypatch, name, broken)
    failed = [c.name for c in run_gradchecks() if not c.passed]
    for prefix in failing:
        assert any(f.startswith(prefix) for f in failed), prefix
    for f in failed:
        assert any(f.startswith(prefix) for prefix in failing), f
