"""bnlab.nn.gradcheck_suite: every check passes on bnlab's layers and net, and a deliberately broken backward
pass fails exactly the checks that depend on it."""

import dataclasses
import math

import numpy as np
import pytest

from bnlab import layers
from bnlab.nn import conv, fused, gradcheck_suite, normalizations, norms
from bnlab.nn import layers as nn_layers
from bnlab.nn.gradcheck_suite import GradCheck, run_gradchecks


@pytest.fixture(scope="module")
def run():
    """One run of all checks (about 5 s), from a seeded global RNG, and that RNG's next draws."""
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
    assert 400 <= len(names) <= 800
    for layer in (
        "affine dx",
        "affine dw",
        "affine db",
        "relu dx",
        "leaky_relu (slope 0.01) dx",
        "sigmoid dx",
        "tanh dx",
        "softmax_loss dx",
        "batchnorm_backward dx",
        "batchnorm_backward_alt dgamma",
        "batchnorm_backward_alt = batchnorm_backward",
        "layernorm dbeta",
        "rmsnorm dx",
        "rmsnorm dgamma",
        "rmsnorm dbeta",
        "batchrenorm (r, d clipped) dx",
        "batchrenorm (r, d clipped) dgamma",
        "batchrenorm (r, d clipped) dbeta",
        "batchrenorm (rmax=1, dmax=0) = batchnorm_backward_alt",
        "groupnorm (G=2) dx",
        "spatial batchnorm dgamma",
        "spatial groupnorm (G=2) dbeta",
        "dropout (p=0.7) dx",
        "conv s=1 p=1 k=3 naive dx",
        "layernorm conv form dx",
    ):
        assert any(name.startswith(layer) for name in names), layer
    for net in NETS:
        assert any(name.startswith(f"{net}W (worst: W") for name in names), net
        assert any(name.startswith(f"{net}b ") for name in names), net
    for net in NETS:
        if "no norm" not in net:
            assert any(name.startswith(f"{net}gamma/beta (worst: ") for name in names), net
    assert len(NETS) == 4 * (1 + 8 * 2) * 2
    for net in CONVNETS + WS_NETS:
        assert any(name.startswith(f"{net}W (worst: W") for name in names), net
    for layer in ("avg_pool 2x2 dx", "global_avg_pool dx", "projection fc dp", "projection 1x1 conv dp"):
        assert layer in names, layer
    for net in RESIDUAL_NETS:
        assert any(name.startswith(f"{net}W (worst: ") for name in names), net
    for kind in ("mlp", "conv"):
        for form in ("pre", "post"):
            assert any(name.startswith(f"residual {kind} {form} no norm skipinit reg=0 alpha ") for name in names)


def test_conv_and_pool_cases_cover_the_issues_grid(checks):
    """Strides 1 and 2, paddings 0 to 2, kernels 3 and 5, non-square inputs; pools that tile and that don't."""
    names = [c.name for c in checks]
    conv_rows = [n for n in names if n.startswith("conv s=") and "fast = naive" in n]
    for part in ("s=1", "s=2", "p=0", "p=1", "p=2", "k=3", "k=5"):
        assert any(f" {part} " in row for row in conv_rows), part
    for suffix in ("fast dx", "fast dw", "fast db"):
        assert sum(n.endswith(suffix) and n.startswith("conv") for n in names) == len(conv_rows)
    pool_rows = [n for n in names if n.startswith("max_pool") and "fast = naive" in n]
    assert len(pool_rows) >= 3 and any("2x2 s=2" in r for r in pool_rows) and any("3x3 s=2" in r for r in pool_rows)


def test_the_global_rng_is_left_alone(run):
    _, expected, drawn = run
    np.testing.assert_array_equal(drawn, expected)


def test_gradcheck_passes_strictly_below_its_threshold_and_never_on_nan():
    assert GradCheck("a", 1e-9, 1e-8).passed
    assert not GradCheck("a", 1e-8, 1e-8).passed
    assert not GradCheck("a", math.nan, 1e-8).passed
    with pytest.raises(dataclasses.FrozenInstanceError):
        GradCheck("a", 0.0, 1.0).error = 2.0  # type: ignore[misc]


ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
NORMS = ("batchnorm", "layernorm", "groupnorm", "rmsnorm", "batchrenorm", "noisy_batchnorm", "ghost_batchnorm",
         "frozen_batchnorm")  # fmt: skip


def nets(activation: str | None = None, norm: str | None = None) -> list[str]:
    """Row-name prefixes of the net checks, for one activation and/or normalization or all."""
    names = []
    for act in ACTIVATIONS if activation is None else (activation,):
        for n in ("no norm", *NORMS) if norm is None else (norm,):
            for position in ("",) if n == "no norm" else (" before", " after"):
                names += [f"net {act} {n}{position} reg={r} " for r in ("0", "3.14")]
    return names


NETS = nets()


def break_function(monkeypatch, name, broken):
    """Replace a layer function where it is defined and in the rows that nets look it up in
    ("fused.name": bnlab.nn.fused's, whose names the numpy layers share)."""
    if name.startswith("fused."):
        module, name = fused, name.removeprefix("fused.")
    else:
        module = next(m for m in (nn_layers, norms, conv) if hasattr(m, name))
    original = getattr(module, name)
    monkeypatch.setattr(module, name, broken)
    for key, row in normalizations.NORMALIZATIONS.items():
        for part in ("backward", "spatial_backward", "maxpool_backward", "relu_backward"):
            if getattr(row, part) is original:
                row = dataclasses.replace(row, **{part: broken})
                monkeypatch.setitem(normalizations.NORMALIZATIONS, key, row)
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


def scale_dx(function, factor):
    """A backward that returns dx alone (`function`), its output multiplied by factor."""
    return lambda dout, cache: factor * function(dout, cache)


CONVNETS = [
    f"convnet {n} reg={r} "
    for n in ("no norm", "batchnorm", "layernorm", "groupnorm", "ghost_batchnorm", "frozen_batchnorm")
    for r in ("0", "3.14")
]
LENETS = [f"lenet (valid, avg pool, sigmoid) {n} " for n in ("no norm", "batchnorm")]
WS_COMBOS = (("standard", "groupnorm"), ("standard", "batchnorm"), ("scaled", "no norm"), ("scaled", "groupnorm"))
WS_NETS = [f"ws {form} {kind} {n} " for kind in ("net", "convnet") for form, n in WS_COMBOS]
RESIDUAL_NETS = [
    f"residual {kind} {form} {norm or 'no norm'}{' skipinit' if skip else ''} reg={reg:g} "
    for kind, form, norm, skip, reg in gradcheck_suite.RESIDUAL_NETS
]


def residual_nets(norm: str) -> list[str]:
    return [net for net in RESIDUAL_NETS if f" {norm} " in net]


def same_net(case: str, prefix: str) -> bool:
    """Whether the rows of a net's group of checks and rows beginning with prefix can meet."""
    return case.startswith(prefix) or prefix.startswith(case)


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
            [
                "layernorm dx",
                *nets(norm="layernorm"),
                "dropout (p=0.7) dx",
                "residual mlp pre layernorm",
                "residual mlp post layernorm",
            ],  # fmt: skip
        ),
        # The net's layers 2..L take dW from affine_backward.
        (
            [("affine_backward", scale_output(layers.affine_backward, 1, 1.01))],
            ["affine dw"] + [f"{net}W " for net in NETS + CONVNETS + LENETS + RESIDUAL_NETS + WS_NETS],
        ),
        # The numpy closed form: its layer rows, spatial batch norm's, batch renorm's at rmax 1,
        # noisy and ghost batch norm (flat and conv form), and the compiled layer's comparison.
        (
            [("batchnorm_backward_alt", scale_output(layers.batchnorm_backward_alt, 1, 1.01))],
            [
                "batchnorm_backward_alt dgamma",
                "batchnorm_backward_alt = batchnorm_backward",
                "spatial batchnorm dgamma",
                "batchrenorm (rmax=1, dmax=0) = batchnorm_backward_alt",
                "compiled batchnorm = batchnorm_backward_alt",
                "compiled batchnorm + relu = batchnorm, relu",
                "noisy_batchnorm (noise fixed) dgamma",
                *(f"{net}gamma/beta" for net in nets(norm="noisy_batchnorm")),
                *(f"{net}gamma/beta" for net in nets(norm="ghost_batchnorm")),
                "convnet ghost_batchnorm reg=0 gamma/beta",
                "convnet ghost_batchnorm reg=3.14 gamma/beta",
                "ghost_batchnorm conv form dgamma",
            ],
        ),
        # Batch norm's row runs the compiled layers: flat (the nets, LeNet's hidden layer, the
        # residual nets; before a ReLU, fused with it), conv form (the row's check, the conv net's
        # second block, whose 4x3 map a 2x2 pool does not tile) and fused with the max pool (the
        # conv net's first block).
        (
            [
                ("fused.batchnorm_backward", scale_output(fused.batchnorm_backward, 1, 1.01)),
                ("fused.batchnorm_maxpool_backward", scale_output(fused.batchnorm_maxpool_backward, 1, 1.01)),
                ("fused.batchnorm_relu_backward", scale_output(fused.batchnorm_relu_backward, 1, 1.01)),
            ],
            [
                "compiled batchnorm dgamma",
                "compiled batchnorm = batchnorm_backward_alt",
                "compiled batchnorm + relu dgamma",
                "compiled batchnorm + relu = batchnorm, relu",
                "compiled batchnorm + max pool dgamma",
                "batchnorm conv form dgamma",
                *(f"{net}gamma/beta" for net in nets(norm="batchnorm")),
                "convnet batchnorm reg=0 gamma/beta",
                "convnet batchnorm reg=3.14 gamma/beta",
                "lenet (valid, avg pool, sigmoid) batchnorm gamma/beta",
                *(f"{net}gamma/beta" for net in residual_nets("batchnorm")),
                *(f"{net}gamma/beta" for net in WS_NETS if " batchnorm " in net),
            ],
        ),
        # Every conv net max-pools through the compiled pool's function: the 2x2 tiling first block
        # (fused with batch norm in the batch-norm net) and the second, whose 4x3 map the numpy
        # layer pools; LeNet and the residual nets average.
        (
            [("fused.max_pool_backward", scale_dx(fused.max_pool_backward, 1.01))],
            ["compiled max pool dx", *CONVNETS, *(net for net in WS_NETS if " convnet " in net)],
        ),
        # The sigmoid's dx feeds every parameter below it in every sigmoid net; batch renorm's
        # dgamma is checked in its layer rows and every batch-renorm net (one run for both).
        (
            [
                ("sigmoid_backward", lambda d, c: 1.01 * layers.sigmoid_backward(d, c)),
                ("batchrenorm_backward", scale_output(layers.batchrenorm_backward, 1, 1.01)),
            ],
            [
                "sigmoid dx",
                *nets(activation="sigmoid"),
                *LENETS,
                "batchrenorm (r, d clipped) dgamma",
                "batchrenorm (rmax=1, dmax=0) = batchnorm_backward_alt",
                *(f"{net}gamma/beta" for net in nets(norm="batchrenorm")),
            ],
        ),
    ],
    ids=[
        "layernorm-dx+dropout",
        "affine-dw",
        "batchnorm_alt-dgamma",
        "compiled-batchnorm-dgamma",
        "compiled-max-pool-dx",
        "sigmoid-dx+batchrenorm-dgamma",
    ],
)
def test_a_broken_backward_fails_exactly_its_checks(monkeypatch, breakages, failing):
    """Runs the groups that must fail (about 12 of them, evenly spread) and every 8th of the
    others, besides the layer groups: the whole suite once per breakage would take minutes."""
    for name, broken in breakages:
        break_function(monkeypatch, name, broken)
    cases = list(gradcheck_suite.gradcheck_cases())
    nets = [case for case in cases if case not in gradcheck_suite.LAYER_CASES]  # their rows begin with the case
    must_fail = [case for case in nets if any(same_net(case, prefix) for prefix in failing)]
    others = [case for case in nets if case not in must_fail]
    chosen = [*gradcheck_suite.LAYER_CASES, *must_fail[:: max(1, len(must_fail) // 12)], *others[::8]]
    assert len(chosen) < len(cases)
    failed = [c.name for c in run_gradchecks(chosen) if not c.passed]
    for prefix in failing:
        layer_row = not any(same_net(case, prefix) for case in nets)
        if layer_row or any(same_net(case, prefix) for case in chosen):
            assert any(f.startswith(prefix) for f in failed), prefix
    for f in failed:
        assert any(f.startswith(prefix) for prefix in failing), f


def test_the_groups_of_checks_partition_the_table(checks):
    """Each group's rows, run alone, are the full table's rows in its order: running a few groups
    (the CLI's --only, the broken-backward tests) checks what the full run checks."""
    cases = gradcheck_suite.gradcheck_cases()
    assert len(cases) == (
        len(gradcheck_suite.LAYER_CASES) + len(NETS) + len(CONVNETS) + len(LENETS) + len(RESIDUAL_NETS) + len(WS_NETS)
    )
    names = [c.name for c in checks]
    order = [name for name in cases if name not in gradcheck_suite.LAYER_CASES]
    # every net's row begins with its group's name, the groups in the table's order
    owners = [max((i for i, case in enumerate(order) if name.startswith(case + " ")), default=None) for name in names]
    owned = [i for i in owners if i is not None]
    assert owned == sorted(owned) and set(owned) == set(range(len(order)))
    some = ["layers", "net tanh batchnorm after reg=3.14", "convnet groupnorm reg=0"]
    rows = [(c.name, c.error) for c in run_gradchecks(some)]
    full = {c.name: c.error for c in checks}
    assert rows and all(full[name] == error for name, error in rows)
    assert [name for name, _ in rows] == [n for n in names if n in dict(rows)]


def test_checks_named_are_every_row_holding_the_text(checks):
    rows = gradcheck_suite.checks_named("rmsnorm")
    assert [c.name for c in rows] == [c.name for c in checks if "rmsnorm" in c.name]
    assert len(rows) >= 3 + 16  # its layer rows and its nets'


def test_a_bias_group_norm_cancels_is_checked_as_zero_not_by_relative_error(checks):
    """The suite's ConvNet has one channel per group in block 1 (2 channels, 2 groups), so group norm
    subtracts b1 right back out: the loss does not depend on it, both gradients are rounding noise
    (~1e-11 and ~1e-17), and their relative error would be decided by rounding (issue 17)."""
    by_name = {c.name: c for c in checks}
    row = by_name["convnet groupnorm reg=0 b1 zero by structure: max |grad| (should be 0)"]
    assert row.passed and row.threshold == 1e-9
    assert "convnet groupnorm reg=0 b (worst: b1)" not in by_name
    assert any(name.startswith("convnet groupnorm reg=0 b (worst: b") for name in by_name)  # b2, b3 still compared


def test_ignored_entries_are_those_the_function_does_not_depend_on():
    from bnlab.nn.gradcheck_suite import _ignored_entries

    x = np.array([0.3, -2.0, 5.0, 1.0])
    # depends on x[0] and x[2]; on x[1] only through a shift a mean subtraction removes, on x[3] not at all
    centred = lambda: float(np.sum((x[:2] - x[:2].mean()) ** 2) + np.sin(x[0]) + x[2] ** 2)  # noqa: E731
    np.testing.assert_array_equal(_ignored_entries(centred, x), [False, False, False, True])
    np.testing.assert_array_equal(x, [0.3, -2.0, 5.0, 1.0])  # restored

    shift = np.array([0.7, -0.2, 1.1])
    cancelled = lambda: float(np.sum(np.tanh((shift - shift.mean()) * 3)))  # noqa: E731
    shift_all = _ignored_entries(cancelled, shift)
    assert not shift_all.any()  # moving one entry is not a common shift: every entry matters


def test_a_backward_that_gives_a_cancelled_bias_a_gradient_fails(monkeypatch):
    """A wrong nonzero gradient where the loss ignores the parameter fails the zero-by-structure row."""
    from bnlab.nn import nets as nn_nets
    from bnlab.nn.gradcheck_suite import _convnet_checks

    original = nn_nets.ConvNet.loss

    def loss(self, X, y=None):
        out = original(self, X, y)
        if y is None:
            return out
        value, grads = out
        grads["b1"] = grads["b1"] + 1e-6
        return value, grads

    monkeypatch.setattr(nn_nets.ConvNet, "loss", loss)
    rows = {c.name: c for c in _convnet_checks("convnet groupnorm reg=0", "groupnorm", 0.0)}
    assert not rows["convnet groupnorm reg=0 b1 zero by structure: max |grad| (should be 0)"].passed
