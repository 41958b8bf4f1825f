"""bnlab.spec.experiment: YAML experiment specs, their validation, sweep expansion, --set overrides and run ids.

Expected values are written out by hand (the runs a sweep must give, the ids a reader expects) or come
from numpy (logspace / linspace); every bad input must be a SpecError whose one message names the
file or the --set, the key path and what would be valid.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnlab.errors import SpecError
from bnlab.spec.experiment import Experiment, experiment_from_text, load_experiment, make_run_id
from bnlab.spec.schema import ExperimentSpec
from bnlab.spec.sweep import field_paths
from bnlab.spec.yaml_text import as_yaml_gives_back, parse_yaml, safe_dump, safe_load

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SOURCE = "bad.yaml"

# A small valid spec that cases extend: a 2-layer net, one seed, no sweep.
BASE = """\
name: t
model:
  hidden_dims: [100, 100]
  weight_scale: 1.0e-2
solver:
  update_rule: adam
  optim_config: {learning_rate: 1.0e-3}
  batch_size: 50
  num_epochs: 3
seeds: [0]
"""


def expt(text: str, *overrides: str) -> Experiment:
    return experiment_from_text(text, SOURCE, overrides)


def spec_error(text: str, *overrides: str) -> str:
    """The message of the SpecError the spec must raise."""
    with pytest.raises(SpecError) as info:
        expt(text, *overrides)
    assert info.value.exit_code == 2
    return str(info.value)


def points(experiment: Experiment) -> list[tuple]:
    """(swept values..., seed) of every run, in run order."""
    return [(*(run.swept[k] for k in experiment.swept_keys), run.seed) for run in experiment.runs]


# --- expansion -------------------------------------------------------------------------------------


def test_no_sweep_is_one_run_per_seed_with_the_resolved_config():
    experiment = expt(BASE.replace("seeds: [0]", "seeds: [4, 2]"))
    assert experiment.swept_keys == []
    assert [run.run_id for run in experiment.runs] == ["seed=4", "seed=2"]
    run = experiment.runs[0]
    assert run.seed == 4 and run.swept == {}
    assert run.config["seed"] == 4
    assert set(run.config) == {"data", "model", "solver", "seed"}
    # values from the file, defaults filled in for the rest
    assert run.config["model"]["hidden_dims"] == [100, 100]
    assert run.config["model"]["normalization"] is None
    assert run.config["model"]["dropout_keep_ratio"] == 1.0
    assert run.config["solver"]["optim_config"] == {"learning_rate": 1e-3}
    assert run.config["data"] == {"dataset": "cifar10", "num_train": 1000, "num_val": 1000, "num_test": 1000}
    # plain values that survive a YAML round trip (they are written to config.yaml)
    assert yaml.safe_load(yaml.safe_dump(run.config)) == run.config


def test_mapping_sweep_is_the_cartesian_product_in_order_with_seeds_innermost():
    text = BASE.replace("seeds: [0]", "seeds: [0, 1]") + (
        "sweep:\n  model.normalization: [null, batchnorm]\n  solver.batch_size: [5, 10, 50]\n"
    )
    experiment = expt(text)
    assert experiment.swept_keys == ["model.normalization", "solver.batch_size"]
    expected = [
        (None, 5, 0), (None, 5, 1), (None, 10, 0), (None, 10, 1), (None, 50, 0), (None, 50, 1),
        ("batchnorm", 5, 0), ("batchnorm", 5, 1), ("batchnorm", 10, 0), ("batchnorm", 10, 1),
        ("batchnorm", 50, 0), ("batchnorm", 50, 1),
    ]  # fmt: skip
    assert points(experiment) == expected
    for run in experiment.runs:  # the swept values are in the config the run trains with
        assert run.config["model"]["normalization"] == run.swept["model.normalization"]
        assert run.config["solver"]["batch_size"] == run.swept["solver.batch_size"]
        assert run.config["seed"] == run.seed


def test_three_axis_product_counts():
    text = BASE + (
        "sweep:\n"
        "  model.normalization: [null, batchnorm, layernorm]\n"
        "  model.reg: [0.0, 0.1]\n"
        "  solver.optim_config.learning_rate: [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]\n"
    )
    experiment = expt(text)
    assert len(experiment.runs) == 3 * 2 * 4
    combos = {(n, r, lr) for n, r, lr, _ in points(experiment)}
    assert combos == set(itertools.product([None, "batchnorm", "layernorm"], [0.0, 0.1], [1e-4, 1e-3, 1e-2, 1e-1]))


def test_union_of_mappings_is_the_batch_size_experiment():
    experiment = load_experiment(CONFIGS / "batch_size.yaml")
    assert experiment.swept_keys == ["model.normalization", "solver.batch_size"]
    expected = [(None, 5), ("batchnorm", 5), ("batchnorm", 10), ("batchnorm", 50)]
    assert points(experiment) == [(*p, seed) for p in expected for seed in (0, 1, 2)]


def test_union_entry_without_a_key_takes_its_value_from_the_base_spec():
    text = BASE + (
        "sweep:\n"
        "  - {model.normalization: [null]}\n"
        "  - {model.normalization: [batchnorm], solver.batch_size: [5, 10]}\n"
        "  - {model.weight_scale: [0.1]}\n"
    )
    experiment = expt(text)
    # keys in order of first appearance over the entries
    assert experiment.swept_keys == ["model.normalization", "solver.batch_size", "model.weight_scale"]
    # the first entry does not sweep the batch size: 50 from the solver section; weight scale 1e-2
    assert points(experiment) == [
        (None, 50, 1e-2, 0),
        ("batchnorm", 5, 1e-2, 0),
        ("batchnorm", 10, 1e-2, 0),
        (None, 50, 0.1, 0),
    ]
    assert experiment.runs[0].config["solver"]["batch_size"] == 50


def test_zip_varies_keys_together():
    text = BASE + (
        "sweep:\n"
        "  model.normalization: [null, batchnorm]\n"
        "  zip:\n"
        "    model.weight_scale: [1.0e-3, 1.0e-2, 1.0e-1]\n"
        "    solver.optim_config.learning_rate: [1.0e-4, 1.0e-3, 1.0e-2]\n"
    )
    experiment = expt(text)
    assert experiment.swept_keys == ["model.normalization", "model.weight_scale", "solver.optim_config.learning_rate"]
    pairs = [(1e-3, 1e-4), (1e-2, 1e-3), (1e-1, 1e-2)]
    assert points(experiment) == [(n, w, lr, 0) for n in (None, "batchnorm") for w, lr in pairs]
    for run in experiment.runs:
        assert run.config["solver"]["optim_config"]["learning_rate"] == run.swept["solver.optim_config.learning_rate"]


def test_zip_of_unequal_lengths_is_an_error():
    message = spec_error(
        BASE + "sweep:\n  zip:\n    model.weight_scale: [0.1, 0.2, 0.3]\n    solver.batch_size: [5, 10]\n"
    )
    assert message.startswith(f"{SOURCE}:12:")  # line of `zip:`
    assert "equal length" in message and "model.weight_scale" in message and "solver.batch_size" in message


@pytest.mark.parametrize(
    "zipped",
    ["{model.weight_scale: [0.1, 0.2]}", "[0.1, 0.2]", "{}"],
    ids=["one-key", "a-list", "empty"],
)
def test_zip_needs_two_keys(zipped):
    message = spec_error(BASE + f"sweep:\n  zip: {zipped}\n")
    assert SOURCE in message and "zip" in message and "at least two keys" in message


@pytest.mark.parametrize(
    "args, expected",
    [
        ("logspace: [-4, 0, 20]", np.logspace(-4, 0, 20)),
        ("logspace: [-3.5, -1.5, 5]", np.logspace(-3.5, -1.5, 5)),
        ("logspace: [-2, -2, 1]", np.logspace(-2, -2, 1)),
        ("logspace: [0, -3, 4]", np.logspace(0, -3, 4)),
        ("linspace: [0.001, 0.01, 10]", np.linspace(0.001, 0.01, 10)),
        ("linspace: [1, 2, 1]", np.linspace(1, 2, 1)),
        ("linspace: [0.5, 0.05, 7]", np.linspace(0.5, 0.05, 7)),
    ],
)
def test_ranges_give_numpys_values(args, expected):
    experiment = expt(BASE + f"sweep:\n  model.weight_scale: {{{args}}}\n")
    values = [run.swept["model.weight_scale"] for run in experiment.runs]
    assert all(type(v) is float for v in values)  # plain floats, not numpy scalars (they go to YAML)
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=0)
    assert len(values) == len(expected)


def test_linspace_ends_exactly_at_stop():
    # 0.1 + 7 * (0.9 / 7) is 1.0000000000000002 in floating point: a keep ratio > 1 would be rejected
    experiment = expt(BASE + "sweep:\n  model.dropout_keep_ratio: {linspace: [0.1, 1, 8]}\n")
    values = [run.swept["model.dropout_keep_ratio"] for run in experiment.runs]
    assert values[-1] == 1.0 and values[0] == 0.1
    assert values == np.linspace(0.1, 1, 8).tolist()


@pytest.mark.parametrize("seeds, expected", [("3", [0, 1, 2]), ("1", [0]), ("[7, 3]", [7, 3]), ("[0]", [0])])
def test_seeds_list_or_count(seeds, expected):
    text = BASE.replace("seeds: [0]", f"seeds: {seeds}") + "sweep:\n  model.normalization: [null, layernorm]\n"
    experiment = expt(text)
    assert [run.seed for run in experiment.runs] == expected + expected  # every point, every seed
    assert experiment.spec.seed_list() == expected


def test_seeds_default_to_one_seed_zero():
    experiment = expt(BASE.replace("seeds: [0]\n", ""))
    assert [run.seed for run in experiment.runs] == [0]


def test_experiment_name_and_resolved_spec():
    experiment = expt(BASE, "solver.num_epochs=7")
    assert experiment.name == "t"
    assert experiment.source == SOURCE
    resolved = experiment.resolved()
    assert resolved["solver"]["num_epochs"] == 7
    assert resolved["data"]["dataset"] == "cifar10"  # defaults filled in
    assert yaml.safe_load(yaml.safe_dump(resolved)) == resolved


def test_run_configs_are_independent_copies():
    experiment = expt(BASE + "sweep:\n  model.normalization: [null, batchnorm]\n")
    first, second = experiment.runs
    first.config["model"]["hidden_dims"].append(7)
    assert second.config["model"]["hidden_dims"] == [100, 100]


def test_the_c_yaml_round_trip_gives_the_python_ones_values_for_every_shipped_run():
    """as_yaml_gives_back (libyaml's loader and dumper, where PyYAML has them) copies a config as
    yaml.safe_load(yaml.safe_dump(...)) does: the same values and types, run by run."""
    runs = [run for path in sorted(CONFIGS.glob("*.yaml")) for run in load_experiment(path).runs]
    assert len(runs) > 300
    for run in runs:
        ours, theirs = as_yaml_gives_back(run.config), yaml.safe_load(yaml.safe_dump(run.config))
        assert ours == theirs and repr(ours) == repr(theirs), run.run_id
    copied = as_yaml_gives_back({"dims": (1, 2), "scale": 1e-4, "name": None})
    assert copied == {"dims": [1, 2], "scale": 1e-4, "name": None}


def test_the_c_yaml_text_is_the_python_ones_for_every_shipped_run():
    """config.yaml, spec.yaml, the runs' identities and runs.csv's list cells are written by libyaml's
    emitter (safe_dump): the same text as PyYAML's own, so results written before stay identical."""
    experiments = [load_experiment(path) for path in sorted(CONFIGS.glob("*.yaml"))]
    for experiment in experiments:
        resolved = experiment.resolved()
        assert safe_dump(resolved, sort_keys=False) == yaml.safe_dump(resolved, sort_keys=False)
        for run in experiment.runs:
            config = as_yaml_gives_back(run.config)
            for sort_keys in (False, True):
                text = safe_dump(config, sort_keys=sort_keys)
                assert text == yaml.safe_dump(config, sort_keys=sort_keys), run.run_id
                assert safe_load(text) == yaml.safe_load(text)
    for cell in ([64, 64, 64], [1e-4, 0.5], [None, "batchnorm"], [[1, 2], []]):
        assert safe_dump(cell, default_flow_style=True) == yaml.safe_dump(cell, default_flow_style=True)


def test_activation_position_init_and_renorm_options_reach_the_run_configs():
    text = _replace(
        "weight_scale: 1.0e-2",
        "weight_scale: he\n  activation: leaky_relu\n  negative_slope: 0.2\n  renorm_rmax: 2\n  renorm_warmup: 0",
    )
    model = expt(text).runs[0].config["model"]
    assert model["weight_scale"] == "he" and model["activation"] == "leaky_relu" and model["negative_slope"] == 0.2
    assert model["renorm_rmax"] == 2.0 and isinstance(model["renorm_rmax"], float) and model["renorm_warmup"] == 0
    defaults = expt(BASE).runs[0].config["model"]
    assert defaults["activation"] == "relu" and defaults["norm_position"] == "before"
    assert (defaults["renorm_rmax"], defaults["renorm_dmax"], defaults["renorm_warmup"]) == (3.0, 5.0, 100)


def test_new_model_options_are_sweepable():
    sweep = (
        "sweep:\n  model.activation: [relu, leaky_relu, sigmoid, tanh]\n"
        "  model.normalization: [rmsnorm, batchrenorm]\n  model.norm_position: [before, after]\n"
        "  model.weight_scale: [he, xavier, 0.05]\n"
    )
    experiment = expt(BASE + sweep)
    assert len(experiment.runs) == 4 * 2 * 2 * 3
    first = "activation=relu__normalization=rmsnorm__norm_position=before__weight_scale=he__seed=0"
    assert experiment.runs[0].run_id == first
    assert {r.config["model"]["weight_scale"] for r in experiment.runs} == {"he", "xavier", 0.05}
    assert "model.renorm_dmax" in field_paths() and "model.negative_slope" in field_paths()


def test_sweeping_a_list_valued_field():
    experiment = expt(BASE + "sweep:\n  model.hidden_dims: [[100, 50], [20]]\n")
    assert [run.config["model"]["hidden_dims"] for run in experiment.runs] == [[100, 50], [20]]
    assert [run.run_id for run in experiment.runs] == ["hidden_dims=100-50__seed=0", "hidden_dims=20__seed=0"]


# --- the shipped configs ---------------------------------------------------------------------------

SHIPPED = {  # name: (points, seeds, swept keys)
    "deep_bn": (2, 3, ["model.normalization"]),
    "weight_scale": (40, 3, ["model.normalization", "model.weight_scale"]),
    "batch_size": (4, 3, ["model.normalization", "solver.batch_size"]),
    "layernorm_batch_size": (4, 3, ["model.normalization", "solver.batch_size"]),
    "norm_batch_size": (12, 3, ["model.normalization", "solver.batch_size"]),
    "smoke": (2, 2, ["model.normalization"]),
    "finetune_pretrain": (1, 1, []),
    "norm_placement": (8, 3, ["model.residual", "model.hidden_dims"]),
    "ws_depth": (3, 3, ["model.normalization", "model.weight_standardization"]),
    "variance_shift": (2, 3, ["model.dropout_keep_ratio"]),
    "weight_decay": (4, 3, ["model.reg", "solver.update_rule", "solver.optim_config.learning_rate"]),
    "cnn_norm": (8, 3, ["model.normalization", "solver.batch_size"]),
    "santurkar": (3, 3, ["model.normalization"]),
    "bn_paper_fig1": (2, 3, ["model.normalization"]),
    "bn_paper_mnist": (2, 3, ["model.normalization"]),
    "lenet_bn": (2, 3, ["model.normalization"]),
    "init_depth": (6, 5, ["model.residual", "model.normalization", "model.skipinit"]),
    "resnet_norm": (
        8,
        3,
        [
            "model.normalization",
            "model.skipinit",
            "model.architecture",
            "model.channels",
            "model.hidden_dims",
            "model.residual",
        ],
    ),  # fmt: skip
}


def test_every_config_is_listed_here():
    assert sorted(path.stem for path in CONFIGS.glob("*.yaml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_loads(name):
    num_points, num_seeds, swept_keys = SHIPPED[name]
    experiment = load_experiment(CONFIGS / f"{name}.yaml")
    assert experiment.name == name
    assert experiment.source == str(CONFIGS / f"{name}.yaml")
    assert experiment.swept_keys == swept_keys
    assert len(experiment.runs) == num_points * num_seeds
    assert len({run.run_id for run in experiment.runs}) == len(experiment.runs)
    assert len({repr(tuple(run.swept.values())) for run in experiment.runs}) == num_points  # lists: repr


def test_weight_scale_config_is_the_notebooks_grid():
    experiment = load_experiment(CONFIGS / "weight_scale.yaml", ["seeds=[0]"])
    assert len(experiment.runs) == 40
    scales = [run.swept["model.weight_scale"] for run in experiment.runs]
    np.testing.assert_allclose(scales[:20], np.logspace(-4, 0, 20), rtol=1e-12, atol=0)
    np.testing.assert_allclose(scales[20:], np.logspace(-4, 0, 20), rtol=1e-12, atol=0)
    assert [run.swept["model.normalization"] for run in experiment.runs] == [None] * 20 + ["batchnorm"] * 20
    assert experiment.runs[0].config["model"]["hidden_dims"] == [50] * 7


def test_batch_size_config_learning_rate_is_ten_to_minus_three_and_a_half():
    experiment = load_experiment(CONFIGS / "batch_size.yaml")
    for run in experiment.runs:
        assert run.config["solver"]["optim_config"]["learning_rate"] == pytest.approx(10**-3.5, rel=1e-15)


def test_norm_batch_size_config_sweeps_group_norm_with_five_groups():
    experiment = load_experiment(CONFIGS / "norm_batch_size.yaml")
    groupnorm = [run for run in experiment.runs if run.swept["model.normalization"] == "groupnorm"]
    assert len(groupnorm) == 3 * 3
    assert all(run.config["model"]["num_groups"] == 5 for run in groupnorm)


# --- overrides -------------------------------------------------------------------------------------


def test_set_changes_every_runs_config():
    experiment = load_experiment(CONFIGS / "deep_bn.yaml", ["solver.num_epochs=2"])
    assert experiment.spec.solver.num_epochs == 2
    assert len(experiment.runs) == 6
    assert all(run.config["solver"]["num_epochs"] == 2 for run in experiment.runs)


def test_set_of_a_swept_key_fixes_its_axis():
    experiment = load_experiment(CONFIGS / "weight_scale.yaml", ["model.normalization=batchnorm"])
    assert len(experiment.runs) == 20 * 3
    assert {run.swept["model.normalization"] for run in experiment.runs} == {"batchnorm"}
    # the key stays swept, so the run ids are those of the same runs without the override
    full = {run.run_id for run in load_experiment(CONFIGS / "weight_scale.yaml").runs}
    assert {run.run_id for run in experiment.runs} <= full

    experiment = load_experiment(CONFIGS / "weight_scale.yaml", ["model.weight_scale=1e-3"])
    assert len(experiment.runs) == 2 * 3
    assert {run.config["model"]["weight_scale"] for run in experiment.runs} == {0.001}


def test_set_of_a_key_swept_in_some_union_entries():
    experiment = load_experiment(CONFIGS / "batch_size.yaml", ["solver.batch_size=20"])
    assert points(experiment) == [(n, 20, seed) for n in (None, "batchnorm") for seed in (0, 1, 2)]


def test_set_of_a_zipped_key_is_refused():
    text = BASE + "sweep:\n  zip:\n    model.weight_scale: [0.1, 0.2]\n    solver.batch_size: [5, 10]\n"
    message = spec_error(text, "solver.batch_size=7")
    assert message.startswith("--set solver.batch_size=7:") and "zipped" in message


def test_set_seeds():
    experiment = load_experiment(CONFIGS / "deep_bn.yaml", ["seeds=[5]"])
    assert [run.seed for run in experiment.runs] == [5, 5]
    assert [run.run_id for run in experiment.runs] == ["normalization=none__seed=5", "normalization=batchnorm__seed=5"]
    experiment = load_experiment(CONFIGS / "deep_bn.yaml", ["seeds=2"])
    assert [run.seed for run in experiment.runs] == [0, 1, 0, 1]


def test_later_set_wins_and_sets_can_add_sections():
    experiment = expt(BASE, "solver.num_epochs=2", "solver.num_epochs=4", "data.num_train=500")
    assert experiment.runs[0].config["solver"]["num_epochs"] == 4
    assert experiment.runs[0].config["data"]["num_train"] == 500  # BASE has no data section


def test_set_values_are_yaml():
    experiment = expt(BASE, "model.hidden_dims=[30, 20]", "model.normalization=null", "name=other")
    assert experiment.runs[0].config["model"]["hidden_dims"] == [30, 20]
    assert experiment.runs[0].config["model"]["normalization"] is None
    assert experiment.name == "other"
    experiment = expt(BASE + "sweep:\n  model.normalization: [batchnorm]\n", "model.normalization=")
    assert experiment.runs[0].swept == {"model.normalization": None}  # an empty value is null


@pytest.mark.parametrize("written", ["1e-3", "1E-3", "1.e-3", "+1e-3", "0.001", "1.0e-3"])
def test_yaml_12_floats_in_files_and_in_set(written):
    experiment = expt(BASE.replace("weight_scale: 1.0e-2", f"weight_scale: {written}"))
    value = experiment.runs[0].config["model"]["weight_scale"]
    assert type(value) is float and value == 0.001
    experiment = expt(BASE, f"solver.optim_config.learning_rate={written}")
    value = experiment.runs[0].config["solver"]["optim_config"]["learning_rate"]
    assert type(value) is float and value == 0.001
    experiment = expt(BASE + f"sweep:\n  model.reg: [0, {written}]\n")
    assert [run.swept["model.reg"] for run in experiment.runs] == [0, 0.001]


@pytest.mark.parametrize(
    "written, expected",
    [("._", "._"), ("._e1", "._e1"), (".", "."), ("1e", "1e"), ("e3", "e3"), ("-.5", -0.5), ("+.5e3", 500.0),
     (".5E-3", 0.0005), ("1_000.5", 1000.5), ("2e0", 2.0), ("-1e-3", -0.001), (".inf", math.inf)],
)  # fmt: skip
def test_yaml_12_float_resolver(written, expected):
    # a YAML 1.2 float has a digit before or after the point; '._' is text (float('.') would fail loading it)
    value = parse_yaml(f"v: {written}", SOURCE)["v"]
    assert type(value) is type(expected) and value == expected


def test_a_quoted_number_is_a_string():
    message = spec_error(BASE.replace("batch_size: 50", "batch_size: '50'"))
    assert "solver.batch_size" in message and "'50'" in message


@pytest.mark.parametrize(
    "item, expected",
    [
        ("solver.num_epochs", ["--set solver.num_epochs:", "KEY=VALUE"]),
        ("solver.num_epoch=2", ["--set solver.num_epoch=2:", "names no field", "did you mean 'solver.num_epochs'"]),
        ("model.weigth_scale=2", ["did you mean 'model.weight_scale'", "model.weight_scale or"]),
        ("epochs=2", ["--set epochs=2:", "'epochs' names no field"]),
        ("=2", ["--set =2:", "names no field"]),
        ("model=3", ["--set model=3:", "'model' names no field"]),
        ("solver.batch_size=fifty", ["--set solver.batch_size=fifty:", "solver.batch_size", "'fifty'"]),
        ("solver.num_epochs=true", ["--set solver.num_epochs=true:", "solver.num_epochs", "integer", "True"]),
        ("solver.num_epochs=2.0", ["--set solver.num_epochs=2.0:", "solver.num_epochs", "integer"]),
        ("solver.num_epochs=0", ["--set solver.num_epochs=0:", "solver.num_epochs", "greater than or equal to 1"]),
        ("model.weight_scale=-1", ["--set model.weight_scale=-1:", "model.weight_scale", "positive", "(got -1)"]),
        ("model.normalization=batch", ["--set model.normalization=batch:", "'batchnorm'", "'groupnorm'"]),
        ("model.hidden_dims=[1, 2", ["--set model.hidden_dims=[1, 2", "invalid YAML"]),
        ("seeds=[]", ["--set seeds=[]:", "seeds:", "count from 1"]),
        ("seeds=x", ["--set seeds=x:", "seeds:", "'x'"]),
        ("name=my run", ["--set name=my run:", "name:", "letters, digits"]),
        ("solver.optim_config.momentum=0.9", ["--set solver.optim_config.momentum=0.9:", "'momentum'", "'adam'"]),
    ],
)
def test_bad_set(item, expected):
    message = spec_error(BASE, item)
    for part in expected:
        assert part in message
    assert SOURCE not in message  # the file is fine: the message names the --set


def test_set_through_a_value_that_is_not_a_mapping():
    message = spec_error(BASE.replace("optim_config: {learning_rate: 1.0e-3}", "optim_config: 3"),
                         "solver.optim_config.learning_rate=0.1")  # fmt: skip
    assert message.startswith("--set solver.optim_config.learning_rate=0.1:") and "not a mapping" in message


def test_set_that_breaks_groupnorm_names_the_set():
    text = BASE.replace("hidden_dims: [100, 100]", "hidden_dims: [100, 100]\n  normalization: groupnorm")
    assert expt(text).runs[0].config["model"]["num_groups"] == 5
    message = spec_error(text, "model.num_groups=7")
    assert message.startswith("--set model.num_groups=7:") and "num_groups=7 must divide" in message


# --- run ids ---------------------------------------------------------------------------------------


def test_run_ids_are_readable():
    ids = [run.run_id for run in load_experiment(CONFIGS / "weight_scale.yaml").runs]
    assert "normalization=batchnorm__weight_scale=0.0001__seed=0" in ids
    assert "normalization=none__weight_scale=1__seed=2" in ids
    ids = [run.run_id for run in load_experiment(CONFIGS / "batch_size.yaml").runs]
    assert ids[:4] == [
        "normalization=none__batch_size=5__seed=0",
        "normalization=none__batch_size=5__seed=1",
        "normalization=none__batch_size=5__seed=2",
        "normalization=batchnorm__batch_size=5__seed=0",
    ]


def test_make_run_id():
    assert make_run_id({}, 3) == "seed=3"
    swept = {"model.normalization": "layernorm", "solver.optim_config.learning_rate": 10**-3.5}
    assert make_run_id(swept, 0) == "normalization=layernorm__learning_rate=0.000316228__seed=0"  # 6 digits
    assert make_run_id({"model.hidden_dims": [100, 50]}, 1) == "hidden_dims=100-50__seed=1"
    assert make_run_id({"model.normalization": None}, 1) == "normalization=none__seed=1"
    # ids are folder names: no path separators or spaces whatever the value
    assert make_run_id({"data.dataset": "a/b c"}, 0) == "dataset=a-b-c__seed=0"


def test_run_ids_are_stable_when_a_sweep_grows():
    small = expt(BASE + "sweep:\n  model.normalization: [null, batchnorm]\n  model.weight_scale: [0.01, 0.1]\n")
    grown = expt(
        BASE.replace("seeds: [0]", "seeds: [0, 1]")
        + "sweep:\n  model.normalization: [null, layernorm, batchnorm]\n  model.weight_scale: [0.001, 0.01, 0.1]\n"
    )
    before = {run.run_id: run.config for run in small.runs}
    after = {run.run_id: run.config for run in grown.runs}
    assert len(before) == 4 and len(after) == 18
    assert set(before) <= set(after)
    for run_id, config in before.items():  # the same id is the same run
        assert after[run_id] == config


def test_run_ids_are_stable_across_range_sweeps():
    # the 20-point logspace and a 5-point one share 1e-4 and 1: those keep their ids
    coarse = {r.run_id for r in expt(BASE + "sweep:\n  model.weight_scale: {logspace: [-4, 0, 5]}\n").runs}
    fine = {r.run_id for r in expt(BASE + "sweep:\n  model.weight_scale: {logspace: [-4, 0, 20]}\n").runs}
    assert coarse & fine == {"weight_scale=0.0001__seed=0", "weight_scale=1__seed=0"}


@pytest.mark.parametrize(
    "sweep",
    [
        "  model.normalization: [batchnorm, batchnorm]\n",
        "  model.weight_scale: [0.1, 0.10]\n",
        "  - {model.normalization: [null, batchnorm]}\n  - {model.normalization: [batchnorm]}\n",
        "  - {solver.batch_size: [50]}\n  - {model.normalization: [null]}\n",  # both are the base spec
    ],
)
def test_duplicate_runs_are_an_error(sweep):
    message = spec_error(BASE + "sweep:\n" + sweep)
    assert message.startswith(f"{SOURCE}:11:")  # line of `sweep:`
    assert "appears twice" in message and "remove the repeated values" in message


def test_a_duplicate_caused_by_a_set_names_the_set():
    sweep = (
        "  - {model.normalization: [null], model.reg: [0.0]}\n"
        "  - {model.normalization: [batchnorm], model.reg: [0.0, 0.1]}\n"
    )
    message = spec_error(BASE + "sweep:\n" + sweep, "model.normalization=batchnorm")
    assert message.startswith("--set model.normalization=batchnorm: the run normalization=batchnorm__")
    assert "appears twice" in message and "drop the --set" in message and "\n" not in message


@pytest.mark.parametrize("word", ["yes", "No", "ON", "off"])
def test_yaml_11_booleans_in_a_set_are_refused(word):
    message = spec_error(BASE, f"model.normalization={word}")
    assert message.startswith(f"--set model.normalization={word}") and f"{word!r} is a boolean in YAML 1.1" in message


def test_yaml_12_booleans_and_quoted_words_still_read():
    assert parse_yaml("[true, false, 'yes', \"off\", yess]", "x") == [True, False, "yes", "off", "yess"]


def test_seed_listed_twice_is_an_error():
    message = spec_error(BASE.replace("seeds: [0]", "seeds: [0, 1, 0]"))
    assert message.startswith(f"{SOURCE}:10:") and "seeds" in message and "twice" in message


# --- bad input -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: no such spec file; check the path"):
        load_experiment(tmp_path / "nope.yaml")


def test_directory(tmp_path):
    with pytest.raises(SpecError, match=r"is a directory, not a spec file"):
        load_experiment(tmp_path)


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", b"---\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert str(info.value).startswith(str(path)) and "empty" in str(info.value) and "configs/" in str(info.value)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.replace("name: t", "name: t\ndescription: caf\xe9").encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1\.yaml: cannot read the spec file"):
        load_experiment(path)


def test_file_errors_name_the_file_and_position(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("batch_size: 50", "batch_sise: 50"))
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}:8:3: solver.batch_sise: unknown key (did you mean 'batch_size'?)")


@pytest.mark.parametrize(
    "text, where",
    [
        ("name: t\nmodel: {hidden_dims: [1, 2}\n", ":2:27:"),  # the '}' that should be ']'
        ("name: t\nmodel:\n\thidden_dims: [1]\n", ":3:1:"),  # a tab indents
        ("name: t\nname: [\n", ":3:1:"),
        ("name: 'unclosed\nmodel: {}\n", ":3:1:"),
        ("a: b: c\n", ":1:5:"),
    ],
)
def test_yaml_syntax_error_has_line_and_column(text, where):
    message = spec_error(text)
    assert message.startswith(SOURCE + where) and "invalid YAML" in message


@pytest.mark.parametrize("key", ["int", "str", "float", "[key]", "x]", "list[int]", "constrained-int"])
@pytest.mark.parametrize("section", ["", "model", "solver"])
def test_unknown_keys_that_look_like_pydantic_location_tags(key, section):
    # pydantic puts 'list[int]', '[key]', ... in its error locations; a user's key of that name is still named
    if section:
        text = BASE.replace(f"{section}:\n", f"{section}:\n  '{key}': 1\n")
        path, valid = f"{section}.{key}", "valid keys here: " + ("hidden_dims" if section == "model" else "update_rule")
    else:
        text, path, valid = BASE + f"'{key}': 1\n", key, "valid keys here: name, description"
    for overrides in [(), ("model.reg=0",), ("seeds=[1]",)]:
        message = spec_error(text, *overrides)
        assert message.startswith(SOURCE + ":") and f"{path}: unknown key" in message and valid in message


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(text, kind):
    message = spec_error(text)
    assert message.startswith(SOURCE + ":") and "top level must be a mapping" in message and kind in message


def _replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


BAD_SPECS = [
    # (id, spec text, substrings the message must contain)
    ("unknown-top-key", BASE + "sedes: [1]\n",
     [":11:1: sedes: unknown key (did you mean 'seeds'?)", "valid keys here: name, description, data"]),
    ("unknown-data-key", BASE + "data: {num_trian: 10}\n",
     ["data.num_trian: unknown key (did you mean 'num_train'?)", "num_val"]),
    ("unknown-model-key", _replace("weight_scale: 1.0e-2", "weight_scal: 1.0e-2"),
     [":4:3: model.weight_scal: unknown key (did you mean 'weight_scale'?)", "hidden_dims, normalization"]),
    ("unknown-solver-key", _replace("num_epochs: 3", "num_epocs: 3"),
     [":9:3: solver.num_epocs: unknown key (did you mean 'num_epochs'?)", "update_rule"]),
    ("unknown-plots-key", BASE + "plots:\n  - {kind: history, titel: x}\n",
     ["plots.0.titel: unknown key (did you mean 'title'?)", "kind, x, title"]),
    ("missing-model", "name: t\n", ["model: required key is missing"]),
    ("missing-name", BASE.replace("name: t\n", ""), ["name: required key is missing"]),
    ("section-not-mapping", _replace("solver:\n  update_rule: adam\n  optim_config: {learning_rate: 1.0e-3}\n"
                                     "  batch_size: 50\n  num_epochs: 3\n", "solver: adam\n"),
     [":5:1: solver:", "valid dictionary", "'adam'"]),
    ("hidden-dims-string", _replace("[100, 100]", "'100'"), [":3:3: model.hidden_dims:", "list", "'100'"]),
    ("hidden-dims-empty", _replace("[100, 100]", "[]"), ["model:", "hidden_dims is required for architecture fc"]),
    ("hidden-dims-zero", _replace("[100, 100]", "[100, 0]"), ["model.hidden_dims.1:", "greater than or equal to 1"]),
    ("hidden-dims-float", _replace("[100, 100]", "[100, 1.5]"), ["model.hidden_dims.1:", "integer", "1.5"]),
    ("batch-size-float", _replace("batch_size: 50", "batch_size: 50.0"), ["solver.batch_size:", "integer"]),
    ("batch-size-zero", _replace("batch_size: 50", "batch_size: 0"),
     [":8:3: solver.batch_size:", "greater than or equal to 1", "(got 0)"]),
    ("epochs-zero", _replace("num_epochs: 3", "num_epochs: 0"), ["solver.num_epochs:", "greater than or equal to 1"]),
    ("epochs-bool", _replace("num_epochs: 3", "num_epochs: true"), ["solver.num_epochs:", "integer", "True"]),
    ("weight-scale-zero", _replace("weight_scale: 1.0e-2", "weight_scale: 0"),
     [":4:3: model.weight_scale: give a positive finite number", "'he' or 'xavier' (got 0)"]),
    ("weight-scale-negative", _replace("weight_scale: 1.0e-2", "weight_scale: -1.0e-2"),
     ["model.weight_scale:", "positive", "(got -0.01)"]),
    ("weight-scale-word", _replace("weight_scale: 1.0e-2", "weight_scale: small"),
     ["model.weight_scale:", "number", "'he' or 'xavier'", "'small'"]),
    ("weight-scale-inf", _replace("weight_scale: 1.0e-2", "weight_scale: .inf"),
     ["model.weight_scale:", "finite"]),
    ("weight-scale-bool", _replace("weight_scale: 1.0e-2", "weight_scale: true"),
     ["model.weight_scale:", "(got True)"]),
    ("weight-scale-capitalized", _replace("weight_scale: 1.0e-2", "weight_scale: He"),
     ["model.weight_scale:", "'he' or 'xavier' (got 'He')"]),
    ("unknown-activation", _replace("weight_scale: 1.0e-2", "activation: gelu"),
     [":4:3: model.activation:", "'relu', 'leaky_relu', 'sigmoid' or 'tanh'", "'gelu'"]),
    ("unknown-norm-position", _replace("weight_scale: 1.0e-2", "norm_position: between"),
     [":4:3: model.norm_position:", "'before' or 'after'", "'between'"]),
    ("negative-slope-negative", _replace("weight_scale: 1.0e-2", "negative_slope: -0.1"),
     ["model.negative_slope:", "greater than or equal to 0"]),
    ("negative-slope-word", _replace("weight_scale: 1.0e-2", "negative_slope: small"),
     ["model.negative_slope:", "number", "'small'"]),
    ("renorm-rmax-below-one", _replace("weight_scale: 1.0e-2", "renorm_rmax: 0.5"),
     ["model.renorm_rmax:", "greater than or equal to 1"]),
    ("renorm-dmax-negative", _replace("weight_scale: 1.0e-2", "renorm_dmax: -1"),
     ["model.renorm_dmax:", "greater than or equal to 0"]),
    ("renorm-warmup-float", _replace("weight_scale: 1.0e-2", "renorm_warmup: 2.5"),
     ["model.renorm_warmup:", "integer"]),
    ("yaml11-no", _replace("weight_scale: 1.0e-2", "normalization: no"),
     [":4:18: 'no' is a boolean in YAML 1.1", "write true or false, null for none, or quote"]),
    ("yaml11-on-key", BASE + "on: 1\n", [":11:1: 'on' is a boolean in YAML 1.1"]),
    ("yaml11-yes-in-sweep", BASE + "sweep:\n  model.normalization: [null, Yes]\n", [":12:31: 'Yes' is a boolean"]),
    ("reg-negative", _replace("weight_scale: 1.0e-2", "reg: -0.1"), ["model.reg:", "greater than or equal to 0"]),
    ("learning-rate-zero", _replace("learning_rate: 1.0e-3", "learning_rate: 0"),
     [":5:1: solver:", "optim_config.learning_rate must be a positive number"]),
    ("learning-rate-negative", _replace("learning_rate: 1.0e-3", "learning_rate: -1.0e-3"),
     ["learning_rate must be a positive number"]),
    ("learning-rate-string", _replace("learning_rate: 1.0e-3", "learning_rate: fast"),
     ["solver.optim_config.learning_rate:", "number", "'fast'"]),
    ("optim-key-for-another-rule", _replace("update_rule: adam", "update_rule: sgd").replace(
        "{learning_rate: 1.0e-3}", "{learning_rate: 1.0e-3, beta1: 0.9}"),
     ["solver:", "optim_config has no 'beta1' for update_rule 'sgd'", "valid keys: learning_rate"]),
    ("optim-key-typo", _replace("learning_rate: 1.0e-3", "learnig_rate: 1.0e-3"),
     ["no 'learnig_rate'", "did you mean 'learning_rate'", "beta1, beta2, epsilon"]),
    ("unknown-normalization", _replace("weight_scale: 1.0e-2", "normalization: batch"),
     [":4:3: model.normalization:", "'noisy_batchnorm', 'ghost_batchnorm' or 'frozen_batchnorm'", "'batch'"]),
    ("unknown-update-rule", _replace("update_rule: adam", "update_rule: adamw"),
     [":6:3: solver.update_rule:", "'sgd_momentum'", "'adamw'"]),
    ("unknown-dtype", _replace("weight_scale: 1.0e-2", "dtype: float16"), ["model.dtype:", "'float32'"]),
    (
        "unknown-dataset",
        BASE + "data: {dataset: mnsit}\n",
        ["data.dataset:", "did you mean 'mnist'", "cifar10, mnist, fashion_mnist"],
    ),
    ("keep-ratio-zero", _replace("weight_scale: 1.0e-2", "dropout_keep_ratio: 0"),
     ["model.dropout_keep_ratio:", "greater than 0"]),
    ("keep-ratio-above-one", _replace("weight_scale: 1.0e-2", "dropout_keep_ratio: 1.5"),
     ["model.dropout_keep_ratio:", "less than or equal to 1"]),
    ("lr-decay-zero", _replace("num_epochs: 3", "lr_decay: 0"), ["solver.lr_decay:", "greater than 0"]),
    ("num-train-zero", BASE + "data: {num_train: 0}\n", ["data.num_train:", "greater than or equal to 1"]),
    ("groupnorm-groups", _replace("weight_scale: 1.0e-2", "normalization: groupnorm\n  num_groups: 7"),
     [":2:1: model:", "num_groups=7 must divide every hidden width [100, 100]"]),
    ("name-with-spaces", _replace("name: t", "name: my experiment"),
     [":1:1: name:", "letters, digits", "'my experiment'"]),
    ("name-with-slash", _replace("name: t", "name: ../t"), ["name:", "results folder"]),
    ("name-with-newline", _replace("name: t", 'name: "t\\n"'), ["name:", "letters, digits"]),
    ("name-number", _replace("name: t", "name: 7"), ["name:", "got 7"]),
    ("seeds-zero", _replace("seeds: [0]", "seeds: 0"), [":10:1: seeds:", "count from 1", "(got 0)"]),
    ("seeds-empty", _replace("seeds: [0]", "seeds: []"), ["seeds:", "count from 1"]),
    ("seeds-float", _replace("seeds: [0]", "seeds: [0, 1.5]"), ["seeds:", "whole-number"]),
    ("seeds-negative", _replace("seeds: [0]", "seeds: [-1]"), ["seeds:", "-1"]),
    ("seeds-too-big", _replace("seeds: [0]", "seeds: [4294967296]"), ["seeds:", "4294967296"]),
    ("sweep-scalar", BASE + "sweep: 3\n", [":11:1: sweep:", "(got 3)"]),
    ("sweep-empty-list", BASE + "sweep: []\n", [":11:1: sweep:", "empty list sweeps nothing"]),
    ("sweep-empty-entry", BASE + "sweep: [{}]\n", [":11:", "non-empty mappings"]),
    ("sweep-entry-not-mapping", BASE + "sweep: [[1]]\n", [":11:", "sweep"]),
    ("sweep-unknown-key", BASE + "sweep:\n  model.weight_scal: [0.1]\n",
     [":12:3: 'model.weight_scal' names no field (did you mean 'model.weight_scale'?)", "keys look like"]),
    ("sweep-key-without-section", BASE + "sweep:\n  weight_scale: [0.1]\n",
     [":12:3: 'weight_scale' names no field (did you mean 'model.weight_scale'?)"]),
    ("sweep-section-key", BASE + "sweep:\n  model: [0.1]\n", [":12:3: 'model' names no field"]),
    ("sweep-unknown-key-in-union", BASE + "sweep:\n  - {model.normalization: [null]}\n  - {solver.batchsize: [5]}\n",
     [":13:6: 'solver.batchsize' names no field (did you mean 'solver.batch_size'?)"]),
    ("sweep-unknown-key-in-zip", BASE + "sweep:\n  zip: {model.reg: [0, 1], model.rge: [1, 2]}\n",
     [":12:28: 'model.rge' names no field (did you mean 'model.reg'?)"]),
    ("sweep-empty-values", BASE + "sweep:\n  model.normalization: []\n",
     [":12:3: sweep.model.normalization: the value list is empty"]),
    ("sweep-scalar-values", BASE + "sweep:\n  model.normalization: batchnorm\n",
     [":12:3: sweep.model.normalization: expected a list of values or {logspace"]),
    ("logspace-two-args", BASE + "sweep:\n  model.weight_scale: {logspace: [1, 2]}\n",
     [":12:3: sweep.model.weight_scale: logspace takes [start, stop, count]", "[1, 2]"]),
    ("logspace-float-count", BASE + "sweep:\n  model.weight_scale: {logspace: [0, 1, 2.5]}\n",
     ["logspace takes [start, stop, count]", "whole count from 1", "2.5"]),
    ("logspace-zero-count", BASE + "sweep:\n  model.weight_scale: {logspace: [0, 1, 0]}\n", ["whole count"]),
    ("logspace-bool", BASE + "sweep:\n  model.weight_scale: {logspace: [0, true, 3]}\n", ["logspace takes"]),
    ("logspace-nan", BASE + "sweep:\n  model.weight_scale: {logspace: [0, .nan, 3]}\n", ["logspace takes"]),
    ("linspace-string", BASE + "sweep:\n  model.weight_scale: {linspace: x}\n", ["linspace takes", "'x'"]),
    ("linspace-and-logspace", BASE + "sweep:\n  model.weight_scale: {linspace: [0, 1, 2], logspace: [0, 1, 2]}\n",
     ["expected a list of values"]),
    ("geomspace", BASE + "sweep:\n  model.weight_scale: {geomspace: [1, 2, 3]}\n", ["expected a list of values"]),
    ("swept-value-out-of-range", BASE + "sweep:\n  model.weight_scale: [1.0e-2, -1]\n",
     [":11:1: sweep run (model.weight_scale=-1): model.weight_scale:", "positive finite number"]),
    ("swept-value-wrong-type", BASE + "sweep:\n  solver.batch_size: [5, ten]\n",
     ["sweep run (solver.batch_size='ten'): solver.batch_size:", "integer"]),
    ("swept-normalization-typo", BASE + "sweep:\n  model.normalization: [null, batchnrm]\n",
     ["sweep run (model.normalization='batchnrm'): model.normalization:", "'batchnorm'"]),
    ("swept-logspace-overflow", BASE + "sweep:\n  model.weight_scale: {logspace: [0, 400, 2]}\n",
     ["sweep", "model.weight_scale"]),
    ("swept-groupnorm", _replace("weight_scale: 1.0e-2", "num_groups: 3")
     + "sweep:\n  model.normalization: [null, groupnorm]\n",
     ["sweep run (model.normalization='groupnorm'): model:", "num_groups=3 must divide"]),
    ("swept-optim-key-for-rule", BASE + "sweep:\n  solver.optim_config.momentum: [0.9]\n",
     ["sweep run", "no 'momentum' for update_rule 'adam'"]),
    ("plot-sweep-x-not-swept", BASE + "sweep:\n  model.normalization: [null, batchnorm]\n"
     "plots:\n  - {kind: sweep, x: model.weight_scale}\n",
     [":14:5: plots[0]: a sweep figure needs x set to a swept key", "model.normalization"]),
    ("plot-sweep-without-x", BASE + "sweep:\n  model.weight_scale: [0.1, 0.2]\nplots: [{kind: sweep}]\n",
     ["plots[0]: a sweep figure needs x"]),
    ("plot-batch-size-not-swept", BASE + "sweep:\n  model.weight_scale: [0.1, 0.2]\nplots: [{kind: batch_size}]\n",
     ["plots[0]: a batch_size figure needs solver.batch_size in the sweep"]),
    ("plot-unknown-kind", BASE + "plots: [{kind: heatmap}]\n", ["plots.0.kind:", "'history'", "'heatmap'"]),
    ("weight-scale-unknown-init", _replace("weight_scale: 1.0e-2", "weight_scale: kaiming"),
     ["model.weight_scale:", "'he' or 'xavier'", "'kaiming'"]),
    ("unknown-architecture", _replace("weight_scale: 1.0e-2", "architecture: cnn"),
     [":4:3: model.architecture:", "'fc' or 'conv'", "'cnn'"]),
    ("conv-without-channels", _replace("weight_scale: 1.0e-2", "architecture: conv"),
     [":2:1: model:", "channels is required for architecture conv"]),
    ("fc-with-channels", _replace("weight_scale: 1.0e-2", "channels: [8]"),
     ["model:", "channels is only for architecture conv"]),
    ("fc-without-hidden-dims", BASE.replace("  hidden_dims: [100, 100]\n", ""),
     ["model:", "hidden_dims is required for architecture fc"]),
    ("conv-even-kernel", _replace("weight_scale: 1.0e-2", "architecture: conv\n  channels: [8]\n  kernel_size: 4"),
     ["model:", "kernel_size must be odd", "got 4"]),
    ("conv-channels-empty", _replace("weight_scale: 1.0e-2", "architecture: conv\n  channels: []"),
     ["model.channels:", "at least 1"]),
    ("conv-too-many-blocks", _replace("weight_scale: 1.0e-2", "architecture: conv\n  channels: [8, 8, 8, 8, 8, 8]"),
     ["model.channels:", "at most 5"]),
    ("conv-dropout", _replace("weight_scale: 1.0e-2", "architecture: conv\n  channels: [8]\n  dropout_keep_ratio: 0.5"),
     ["model:", "no dropout"]),
    ("conv-groupnorm-channels", _replace("weight_scale: 1.0e-2", "architecture: conv\n  channels: [8, 12]\n"
                                         "  normalization: groupnorm\n  num_groups: 5"),
     ["model:", "num_groups=5 must divide every width (channels and hidden_dims) [8, 12, 100, 100]"]),
    ("swept-architecture-without-channels", BASE + "sweep:\n  model.architecture: [fc, conv]\n",
     ["sweep run (model.architecture='conv'): model:", "channels is required"]),
    ("lr-growth-with-adam", _replace("num_epochs: 3", "num_epochs: 3\n  lr_growth: 1.01"),
     ["solver:", "lr_growth grows plain SGD's rate; set update_rule: sgd (got 'adam')"]),
    ("lr-growth-below-one", _replace("num_epochs: 3", "num_epochs: 3\n  lr_growth: 0.9"),
     ["solver.lr_growth:", "greater than or equal to 1"]),
]  # fmt: skip


@pytest.mark.parametrize("text, expected", [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec(text, expected):
    message = spec_error(text)
    assert message.startswith(SOURCE), message
    assert "\n" not in message, message  # one line for the CLI
    for part in expected:
        assert part in message, message


def test_conv_spec_takes_an_empty_hidden_dims_as_no_hidden_layer():
    text = BASE.replace("  hidden_dims: [100, 100]\n", "  architecture: conv\n  channels: [8]\n  hidden_dims: []\n")
    model = expt(text.replace("weight_scale: 1.0e-2", "weight_scale: he")).runs[0].config["model"]
    assert model["hidden_dims"] == [] and model["channels"] == [8]


def test_conv_spec_resolves_with_optional_hidden_dims_and_sweeps_channels():
    text = BASE.replace("  hidden_dims: [100, 100]\n", "  architecture: conv\n  channels: [16, 32]\n")
    text = text.replace("weight_scale: 1.0e-2", "weight_scale: he")
    experiment = expt(text + "sweep:\n  model.channels: [[8], [16, 32]]\n  model.kernel_size: [3, 5]\n")
    assert len(experiment.runs) == 4
    model = experiment.runs[-1].config["model"]
    assert model["architecture"] == "conv" and model["channels"] == [16, 32] and model["kernel_size"] == 5
    assert model["hidden_dims"] is None and model["weight_scale"] == "he"
    assert [run.run_id for run in experiment.runs][:2] == ["channels=8__kernel_size=3__seed=0",
                                                           "channels=8__kernel_size=5__seed=0"]  # fmt: skip
    assert "model.architecture" in field_paths() and "model.channels" in field_paths()


def test_fc_is_the_default_architecture():
    model = expt(BASE).runs[0].config["model"]
    assert model["architecture"] == "fc" and model["channels"] is None


# --- field paths -----------------------------------------------------------------------------------


def test_field_paths_name_every_section_field_and_optimizer_key():
    paths = field_paths()
    assert len(paths) == len(set(paths))
    for section in ("data", "model", "solver"):
        schema = ExperimentSpec.model_fields[section].annotation
        assert {f"{section}.{name}" for name in schema.model_fields} <= set(paths)
    assert {"data.num_train", "model.weight_scale", "model.normalization", "solver.batch_size"} <= set(paths)
    assert {f"solver.optim_config.{k}" for k in ("learning_rate", "momentum", "decay_rate", "beta1", "beta2",
                                                  "epsilon")} <= set(paths)  # fmt: skip
    assert not any(p in paths for p in ("name", "seeds", "sweep", "model"))


# --- property: any input gives an Experiment or a SpecError -----------------------------------------

SHIPPED_TEXTS = {path.stem: path.read_text() for path in sorted(CONFIGS.glob("*.yaml"))}
SHIPPED_RAW = {name: yaml.safe_load(text) for name, text in SHIPPED_TEXTS.items()}
KNOWN_KEYS = sorted(
    {"name", "description", "data", "model", "solver", "seeds", "sweep", "plots", "zip", "logspace", "linspace",
     "kind", "x", "title"}
    | {path.rsplit(".", 1)[-1] for path in field_paths()}
    | set(field_paths())
)  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 200),
    st.floats(),
    st.floats(-5, 5),
    st.text(max_size=12),
    st.sampled_from(["batchnorm", "layernorm", "groupnorm", "adam", "sgd", "history", "sweep", "batch_size"]),
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(max_size=10),
    st.text(alphabet="ab_.-[]", max_size=6),  # pydantic writes '[key]', 'list[int]' in its error locations
    st.sampled_from(["int", "str", "float", "[key]", "constrained-int", "list[int]"]),
    st.integers(-2, 5),
    st.none(),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
documents = st.one_of(st.dictionaries(keys, values, max_size=8), values)

set_keys = st.one_of(st.sampled_from([*field_paths(), "name", "description", "seeds"]), st.text(max_size=12))
set_values = st.one_of(
    st.text(max_size=12),
    values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
)
set_items = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", set_keys, set_values),
    st.text(max_size=24),
)
overrides = st.lists(set_items, max_size=3)

PROPERTY = settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def check_outcome(text: str, items: list[str]) -> None:
    """The contract: an Experiment whose runs are consistent, or a SpecError naming the file or the --set."""
    try:
        experiment = experiment_from_text(text, "prop.yaml", items)
    except SpecError as exc:
        message = str(exc)
        assert message.startswith(("prop.yaml", "--set ")), message
        return
    assert isinstance(experiment, Experiment)
    seeds = experiment.spec.seed_list()
    assert len(experiment.runs) % len(seeds) == 0
    assert len({run.run_id for run in experiment.runs}) == len(experiment.runs)
    for run in experiment.runs:
        assert run.seed in seeds and run.config["seed"] == run.seed
        assert list(run.swept) == experiment.swept_keys
        assert 0 <= run.seed < 2**32  # numpy.random.RandomState takes these


def _containers(node, path=()):
    """(path, container) of every dict and list inside a parsed YAML document."""
    if isinstance(node, (dict, list)):
        yield path, node
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            yield from _containers(child, (*path, key))


@st.composite
def mutated_configs(draw):
    raw = copy.deepcopy(SHIPPED_RAW[draw(st.sampled_from(sorted(SHIPPED_RAW)))])
    for _ in range(draw(st.integers(1, 3))):
        containers = list(_containers(raw))
        _, node = draw(st.sampled_from(containers))
        slots = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["delete", "replace", "replace", "insert"]))
        if action == "insert" or not slots:
            if isinstance(node, dict):
                node[draw(keys)] = draw(values)
            else:
                node.insert(draw(st.integers(0, len(node))), draw(values))
        elif action == "delete":
            del node[draw(st.sampled_from(slots))]
        else:
            node[draw(st.sampled_from(slots))] = draw(st.one_of(scalars, values))
    return yaml.safe_dump(raw, default_flow_style=draw(st.booleans()), allow_unicode=draw(st.booleans()))


@PROPERTY
@given(document=documents, items=overrides)
def test_random_documents_give_an_experiment_or_a_spec_error(document, items):
    check_outcome(yaml.safe_dump(document), items)


@PROPERTY
@given(text=mutated_configs(), items=overrides)
def test_mutated_configs_give_an_experiment_or_a_spec_error(text, items):
    check_outcome(text, items)


@PROPERTY
@given(name=st.sampled_from(sorted(SHIPPED_TEXTS)), items=st.lists(set_items, min_size=1, max_size=4))
def test_random_overrides_of_shipped_configs_give_an_experiment_or_a_spec_error(name, items):
    check_outcome(SHIPPED_TEXTS[name], items)


YAML_TOKENS = [
    *":-[]{},#&*!|>'\"%@`?\t\n .0123456789e_",
    ": ", "- ", "\n  ", "\n\t", "? ", "&a ", "*a", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ",
    "!!python/object:os.system ", "2001-13-45", "2001-02-03 25:00:00", "1e-3", "1e999", ".inf", ".nan", "null",
    "~", "true", "0x1F", "0o17", "1_000", "---\n", "...\n", "%YAML 1.2\n", "\ufeff", "\u00e9", "\u2028",
]  # fmt: skip
yaml_ish = st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.characters()), max_size=30).map("".join)


@st.composite
def spliced_configs(draw):
    """A shipped config with a random slice replaced by random text: broken indentation, tags, tabs."""
    text = SHIPPED_TEXTS[draw(st.sampled_from(sorted(SHIPPED_TEXTS)))]
    start = draw(st.integers(0, len(text)))
    stop = draw(st.integers(start, min(len(text), start + 40)))
    return text[:start] + draw(yaml_ish) + text[stop:]


numbers = st.one_of(st.integers(-10, 10), st.integers(), st.floats(), st.floats(-400, 400), st.booleans())
ranges = st.builds(
    lambda kind, args: {kind: args},
    st.sampled_from(["logspace", "linspace", "geomspace"]),
    st.one_of(st.lists(numbers, max_size=4), scalars),
)
sweep_values = st.one_of(st.lists(st.one_of(scalars, values), max_size=4), ranges, scalars)
sweep_keys = st.one_of(st.sampled_from(field_paths()), keys)
zips = st.dictionaries(sweep_keys, sweep_values, max_size=3)
sweep_blocks = st.dictionaries(st.one_of(sweep_keys, st.just("zip")), st.one_of(sweep_values, zips), max_size=3)


@st.composite
def schema_specs(draw):
    """A shipped config with random values at real field paths and a random sweep: deep into the checks."""
    raw = copy.deepcopy(SHIPPED_RAW[draw(st.sampled_from(sorted(SHIPPED_RAW)))])
    for path in draw(st.lists(st.sampled_from(field_paths()), max_size=3)):
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):  # an earlier path may have set it to a scalar
                node[part] = {}
            node = node[part]
        node[leaf] = draw(st.one_of(scalars, values))
    if draw(st.booleans()):
        raw["seeds"] = draw(st.one_of(st.lists(numbers, max_size=3), numbers))
    raw["sweep"] = draw(st.one_of(sweep_blocks, st.lists(sweep_blocks, max_size=3), values))
    if draw(st.booleans()):
        raw["plots"] = draw(st.lists(st.dictionaries(st.sampled_from(["kind", "x", "title", "y"]), scalars | sweep_keys,
                                                     max_size=3), max_size=2))  # fmt: skip
    return yaml.safe_dump(raw, default_flow_style=draw(st.booleans()))


@PROPERTY
@given(text=schema_specs(), items=overrides)
def test_random_specs_give_an_experiment_or_a_spec_error(text, items):
    check_outcome(text, items)


@PROPERTY
@given(text=st.one_of(yaml_ish, st.text(max_size=80), spliced_configs()), items=st.lists(st.text(max_size=20),
                                                                                       max_size=2))  # fmt: skip
def test_random_text_gives_an_experiment_or_a_spec_error(text, items):
    check_outcome(text, items)


@pytest.mark.parametrize(
    "value",
    ["2001-13-45", "!!int abc", "!!float x", "!!timestamp x", "!!binary '#'", "!!python/object:os.system x",
     "&a [*a]", "!!set {a: 1}", "2001-01-01", "[[1, 2]]: 3", "? [1]\n: 2"],
)  # fmt: skip
def test_yaml_that_pyyaml_cannot_construct_is_a_spec_error(value):
    # each one in the file and as a --set value; nothing but an Experiment or a SpecError comes out
    check_outcome(BASE + f"description: {value}\n", [])
    check_outcome(BASE, [f"description={value}"])
    check_outcome(BASE, [f"model.weight_scale={value}"])
    check_outcome(BASE + f"sweep:\n  model.weight_scale: [{value}]\n", [])


@pytest.mark.parametrize(
    "text",
    [
        BASE + "sweep:\n  model.reg: {linspace: [0, 1" + "0" * 400 + ", 3]}\n",  # no float holds it
        BASE + "sweep:\n  model.reg: {linspace: [0, 1, 1" + "0" * 400 + "]}\n",
        BASE + "sweep:\n  model.reg: {linspace: [0, 1, 1000000000000]}\n",  # a typo, not a sweep
        BASE.replace("seeds: [0]", "seeds: 1000000000000"),
        BASE + "sweep:\n  model.reg: {linspace: [0, 1, 5000]}\n  model.weight_scale: {linspace: [1, 2, 5000]}\n",
        BASE.replace("seeds: [0]", "seeds: 5000") + "sweep:\n  model.reg: [0, 0.1, 0.2]\n",
    ],
    ids=["huge-stop", "huge-count", "count-1e12", "seeds-1e12", "product-25e6", "points-x-seeds"],
)
def test_huge_sweeps_are_spec_errors_not_a_hang(text):
    message = spec_error(text)
    assert message.startswith(SOURCE) and "10000" in message


@pytest.mark.parametrize(
    ("override", "ok"),
    [
        ("solver.optim_config.beta1=1.0", False),  # 1 - beta1**t = 0: Adam would divide by zero
        ("solver.optim_config.beta2=1.5", False),
        ("solver.optim_config.beta1=0", True),  # no momentum at all is a valid Adam
        ("solver.optim_config.epsilon=0", False),
        ("solver.optim_config.beta2=0.99", True),
    ],
)
def test_decay_factors_lie_in_zero_to_one(override, ok):
    if ok:
        assert expt(BASE, override).runs
    else:
        message = spec_error(BASE, override)
        assert override.split("=")[0].removeprefix("solver.") in message


def test_momentum_range_for_sgd_momentum():
    spec = BASE.replace("update_rule: adam", "update_rule: sgd_momentum")
    assert expt(spec, "solver.optim_config.momentum=0").runs
    assert "[0, 1)" in spec_error(spec, "solver.optim_config.momentum=1")


def test_run_configs_hold_validated_values():
    run = expt(BASE + "sweep:\n  model.weight_scale: [1]\n").runs[0]
    assert run.config["model"]["weight_scale"] == 1.0
    assert isinstance(run.config["model"]["weight_scale"], float)


# --- record: what the nets record inside (bnlab.nn.probes) ------------------------------------------


def test_record_section_defaults_and_run_configs():
    from bnlab.nn.probes import DEFAULT_EVERY, DEFAULT_LANDSCAPE_STEPS

    assert "record" not in expt(BASE).runs[0].config  # off unless asked for: old results stay valid
    experiment = expt(BASE + "record: {}\n")
    # the statistics recorded by default since before update_angle and effective_lr: old results match
    recorded_before = [
        "mean",
        "std",
        "p15",
        "p50",
        "p85",
        "saturated",
        "out_std",
        "grad_norm",
        "weight_norm",
        "update_ratio",
        "ics_l2",
        "ics_cos",
        "loss_range",
        "grad_change",
        "beta_smoothness",
    ]
    assert experiment.runs[0].config["record"] == {
        "statistics": recorded_before, "every": DEFAULT_EVERY, "landscape_steps": list(DEFAULT_LANDSCAPE_STEPS)
    }  # fmt: skip
    experiment = expt(BASE + "record: {statistics: [p50, ics_l2], every: 7, landscape_steps: [1, 3]}\n")
    assert experiment.runs[0].config["record"] == {"statistics": ["p50", "ics_l2"], "every": 7,
                                                   "landscape_steps": [1.0, 3.0]}  # fmt: skip
    assert "record" not in expt(BASE + "record: {every: 7}\n", "record=null").runs[0].config
    assert expt(BASE + "record: {every: 7}\n", "record.every=9").runs[0].config["record"]["every"] == 9
    assert expt(BASE, "record.every=9").runs[0].config["record"]["every"] == 9


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("record: {statistics: [median]}\n", (), [":11:", "record.statistics.0:", "'median'"]),
        ("record: {every: 0}\n", (), ["record.every:", "greater than or equal to 1"]),
        ("record: {landscape_steps: []}\n", (), ["record.landscape_steps:"]),
        ("record: {landscape_steps: [-1]}\n", (), ["record.landscape_steps.0:", "greater than 0"]),
        ("record: {statistics: [p50, p50]}\n", (), ["record:", "names a statistic twice"]),
        ("record: {evry: 3}\n", (), ["record.evry: unknown key (did you mean 'every'?)"]),
        ("", ("record.every=-2",), ["--set record.every=-2: record.every:"]),
        ("plots: [{kind: ics}]\n", (), [":11:", "plots[0]: the ics figure needs ics_l2, ics_cos recorded"]),
        ("record: {statistics: [p50]}\nplots: [{kind: landscape}]\n", (), ["needs loss_range"]),
        ("record: {}\nplots: [{kind: history, layers: [1]}]\n", (),
         ["layers is for activations, ics, angular and variance_shift figures only"]),
        ("model: {hidden_dims: [5], normalization: noisy_batchnorm, noise_growth: 0}\n", (),
         ["model.noise_growth:", "greater than 0"]),
    ],
)  # fmt: skip
def test_bad_record_sections(text, overrides, expected):
    if text.startswith("model"):  # a model section of its own
        base = BASE.replace("model:\n  hidden_dims: [100, 100]\n  weight_scale: 1.0e-2\n", "")
    else:
        base = BASE
    message = spec_error(base + text, *overrides)
    for part in expected:
        assert part in message, message


def test_noise_options_are_in_the_configs_of_noisy_batchnorm_runs_only():
    experiment = expt(BASE + "sweep:\n  model.normalization: [null, batchnorm, noisy_batchnorm]\n")
    noise = {"noise_mean": 0.5, "noise_scale": 0.5, "noise_growth": 1000}
    for run in experiment.runs:
        model = run.config["model"]
        if run.swept["model.normalization"] == "noisy_batchnorm":
            assert {k: model[k] for k in noise} == noise
        else:
            assert not set(noise) & set(model)  # configs of runs made before noisy batch norm still match
