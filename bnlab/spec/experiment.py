"""Experiment specs: YAML in, validated runs out.

A spec names an experiment and gives the `data`, `model` and `solver` sections (every option of
the data loader, FullyConnectedNet or ConvNet (model.architecture: fc | conv) and Solver), the
`seeds`, a `sweep` and optional `plots`:

    name: deep_bn
    model: {hidden_dims: [100, 100, 100, 100, 100], weight_scale: 2e-2}
    solver: {update_rule: adam, optim_config: {learning_rate: 1e-3}, batch_size: 50}
    seeds: [0, 1, 2]
    sweep:
      model.normalization: [null, batchnorm]

An optional `record:` section (statistics, every, landscape_steps) makes every run record what
bnlab.nn.probes measures inside the net; `record: null` or `--set record=null` turns it off, and
the figures that draw recorded statistics are then skipped (Experiment.skipped_plots names them).

A sweep mapping is a Cartesian product of its keys; `zip: {key: [...], key: [...]}` inside it
makes keys vary together; a list of mappings is the union of their runs; `{logspace: [a, b, n]}`
and `{linspace: [a, b, n]}` generate values (logspace as numpy's: 10**a .. 10**b). Every run is
repeated for every seed. Nothing here trains or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bnlab.data.datasets import DATASETS
from bnlab.errors import SpecError
from bnlab.lab.formatting import did_you_mean, file_safe
from bnlab.nn.conv import conv_sizes
from bnlab.nn.normalizations import NORMALIZATIONS
from bnlab.spec.figure_kinds import FIGURE_KINDS
from bnlab.spec.schema import MAX_RUNS, SECTIONS, ExperimentSpec, PlotSpec, RecordSpec
from bnlab.spec.sweep import apply_override, expand_sweep, get_key, with_values
from bnlab.spec.yaml_text import parse_yaml, read_text, safe_dump, yaml_position

# --- a run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training run: its stable id, seed, the swept values that distinguish it and its full
    resolved config (sections data, model, solver, plus seed) as plain YAML-able values."""

    run_id: str
    seed: int
    swept: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    """A validated spec and its expanded runs."""

    spec: ExperimentSpec
    source: str  # where the spec came from, for messages
    swept_keys: list[str]
    runs: list[Run]
    skipped_plots: tuple[str, ...] = ()  # declared figures dropped because nothing is recorded

    @property
    def name(self) -> str:
        return self.spec.name

    def resolved(self) -> dict[str, Any]:
        """The spec with overrides applied and defaults filled in, as written to spec.yaml."""
        resolved = self.spec.model_dump(mode="json", exclude_none=False)
        if resolved["data"]["preprocess"] is None:  # the data set's default: spec.yaml stays as before it existed
            del resolved["data"]["preprocess"]
        return resolved


# --- loading and validation ------------------------------------------------------------------


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Read a spec file, apply `key=value` overrides, validate it and expand its runs."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise SpecError(f"{source}: no such spec file; check the path (specs live in configs/)")
    if path.is_dir():
        raise SpecError(f"{source}: is a directory, not a spec file; name a .yaml file inside it")
    return experiment_from_text(read_text(path, "spec file"), source, overrides)


def experiment_from_text(text: str, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Validate a spec given as YAML text (see load_experiment)."""
    raw = parse_yaml(text, source)
    if raw is None:
        raise SpecError(f"{source}: the spec is empty; start from one of the files in configs/")
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: the top level must be a mapping of sections (name, data, model, solver, "
            f"seeds, sweep, plots, record), not a {type(raw).__name__}"
        )
    overridden = {apply_override(raw, item): item for item in overrides}
    spec = _validate(ExperimentSpec, raw, source, text, overridden)
    seeds = spec.seed_list()
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{source}{yaml_position(text, ('seeds',))}: seeds: {seeds} lists a seed twice")
    swept_keys, points = expand_sweep(spec.sweep, source, text)
    if len(points) * len(seeds) > MAX_RUNS:
        raise SpecError(f"{source}: {len(points)} sweep points x {len(seeds)} seeds is more than {MAX_RUNS} runs")
    # `record: null` (or --set record=null) turns recording off on purpose; no record key at all with
    # figures of recorded statistics is more likely a forgotten section, and stays an error
    record_off = "record" in raw and raw["record"] is None
    skipped_plots = _check_plots(spec, swept_keys, source, text, overridden.get("plots"), record_off)

    base = {name: getattr(spec, name).model_dump(mode="json") for name in SECTIONS}
    if spec.record is not None:  # only then: configs of runs without recording stay as they were
        base["record"] = spec.record.model_dump(mode="json")
    runs, seen = [], {}
    for point in points:
        config = with_values(base, point)
        for section, model in SECTIONS.items():
            try:
                # store the validated values: a swept weight_scale of 1 becomes the float 1.0
                config[section] = model.model_validate(config[section]).model_dump(mode="json")
            except ValidationError as exc:
                values = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise SpecError(
                    f"{source}{yaml_position(text, ('sweep',))}: sweep run ({values}): {_first_error(exc, (section,))}"
                ) from None
        if config["data"]["preprocess"] in (None, DATASETS[config["data"]["dataset"]].default_preprocess):
            # the data set's default stays implicit, so configs (and results) made before the key match
            del config["data"]["preprocess"]
        _check_conv_fits(config, source, text, point)
        _check_batch_statistics(config, source, text, point)
        config = _implicit_defaults_dropped(config)
        # an option at its default (a row's, or one added later) left the config, but names its runs by its value
        swept = {key: get_key(config, key) for key in swept_keys}
        swept.update({k: v for k, v in point.items() if k in IMPLIED_AT_DEFAULT and swept.get(k) is None})
        for seed in seeds:
            run_id = make_run_id(swept, seed)
            identity = safe_dump({**config, "seed": seed}, sort_keys=True)
            if identity in seen or run_id in seen.values():
                # a --set of a swept key fixes it in every sweep entry, which can make entries overlap
                culprits = [item for key, item in overridden.items() if key in swept_keys]
                if culprits:
                    raise SpecError(
                        f"--set {culprits[0]}: the run {run_id} appears twice after expansion, because the "
                        f"--set gives {culprits[0].partition('=')[0]} one value in sweep entries that differed "
                        f"by it; drop the --set or edit the sweep in {source}"
                    )
                raise SpecError(
                    f"{source}{yaml_position(text, ('sweep',))}: sweep: the run {run_id} appears twice after "
                    f"expansion; remove the repeated values (or sweep entries that overlap)"
                )
            seen[identity] = run_id
            runs.append(Run(run_id, seed, swept, {**config, "seed": seed}))
    return Experiment(spec, source, swept_keys, runs, skipped_plots)


# The rows' options that stay out of a run's config at their default, as spec keys.
ROW_OPTIONS_OMITTED = {
    f"model.{name}"
    for row in NORMALIZATIONS.values()
    for name, option in row.options.items()
    if option.omitted_at_default
}
# Options added after results existed: at their defaults they stay out of a run's config, so those
# configs (and the results made before the option) still match.
ADDED_LATER = {
    "data": {"classes": None, "shift_scale": 1.0, "shift_offset": 0.0},
    "model": {
        "padding": "same",
        "pool": "max",
        "dropout_position": "every",
        "weight_standardization": None,
        "init_from": None,
        "new_head": False,
        "recompute_statistics": False,
        "reg_output": True,
    },
    "solver": {
        "accumulate": 1,
        "train_mode_accuracy": False,
        "save_weights": True,
        "precise_bn": False,
        "adabn": False,
        "warmup_iters": 0,
        "lr_growth": 1.0,
    },
}


IMPLIED_AT_DEFAULT = ROW_OPTIONS_OMITTED | {f"{section}.{key}" for section, keys in ADDED_LATER.items() for key in keys}


def _implicit_defaults_dropped(config: dict) -> dict:
    """The run's config without the keys whose values it implies: options added later at their
    defaults, a normalization's options where it is not used (but those every config has recorded
    since the start), a plain net's residual keys. So configs, and results made before those keys
    existed, still match."""
    for section, defaults in ADDED_LATER.items():
        for key, default in defaults.items():
            if config[section][key] == default:
                del config[section][key]
    for row in NORMALIZATIONS.values():
        for key, option in row.options.items():
            if option.omitted_at_default and config["model"].get(key, option.default) == option.default:
                config["model"].pop(key, None)
    # a normalization's options stay out of the configs of runs that do not use it (and so out
    # of results made before them), but those every config has recorded since the start
    used = NORMALIZATIONS.get(config["model"]["normalization"])
    unused = {
        name
        for row in NORMALIZATIONS.values()
        if row is not used
        for name, option in row.options.items()
        if not option.recorded_unused and name not in (used.options if used else {})
    }
    config["model"] = {k: v for k, v in config["model"].items() if k not in unused}
    if config["model"]["residual"] is None:  # likewise for plain nets
        config["model"] = {k: v for k, v in config["model"].items() if k not in ("residual", "skipinit")}
    return config


def _check_conv_fits(config: dict, source: str, text: str, point: dict) -> None:
    """A conv net's blocks must leave at least one pixel of the data set's images."""
    model = config["model"]
    if model["architecture"] != "conv":
        return
    _, h, w = DATASETS[config["data"]["dataset"]].image_shape
    pad = (model["kernel_size"] - 1) // 2 if model["padding"] == "same" else 0
    sizes = conv_sizes((h, w), len(model["channels"]), model["kernel_size"], pad)
    if min(sizes[-1]) < 1:
        values = "".join(f" ({k}={v!r})" for k, v in point.items())
        raise SpecError(
            f"{source}{yaml_position(text, ('model',))}: model{values}: {len(model['channels'])} conv blocks of kernel "
            f"{model['kernel_size']}, padding {model['padding']} leave nothing of {config['data']['dataset']}'s "
            f"{h}x{w} images (sizes {sizes}); use fewer channels entries, a smaller kernel_size or padding same"
        )


def _check_batch_statistics(config: dict, source: str, text: str, point: dict) -> None:
    """A normalization over the samples of a (virtual) batch needs two of them in a fully connected
    layer: over one, every feature is its own mean and the output is beta, whatever the input. A conv
    layer's conv form has H*W values per channel even then."""
    model, solver = config["model"], config["solver"]
    row = NORMALIZATIONS.get(model["normalization"])
    if row is None or not row.batch_statistics:
        return
    samples = solver["batch_size"]
    if isinstance(row.batch_statistics, str):
        samples = min(samples, model[row.batch_statistics])
    fully_connected = model["architecture"] == "fc" or (bool(model.get("hidden_dims")) and not model.get("residual"))
    if samples == 1 and fully_connected:
        values = "".join(f" ({k}={v!r})" for k, v in point.items()) or ""
        raise SpecError(
            f"{source}{yaml_position(text, ('solver',))}: run{values}: {model['normalization']} would normalize each "
            f"feature of a fully connected layer over 1 sample, so its output would be beta whatever the input; "
            f"use batches of 2 or more, or a normalization within each sample (layernorm, groupnorm)"
        )


def _validate(model: type[BaseModel], raw: dict, source: str, text: str, overridden: dict[str, str]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        loc = [str(p) for p in _key_path(exc.errors()[0]["loc"])]
        for key, item in overridden.items():
            path = key.split(".")
            if path[: len(loc)] == loc[: len(path)]:  # the error is in the value set, or in a section holding it
                raise SpecError(f"--set {item}: {_first_error(exc)}") from None
        raise SpecError(f"{source}{yaml_position(text, tuple(loc))}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError, prefix: tuple = ()) -> str:
    """The first validation error as 'key.path: what is wrong (got value)'."""
    err = exc.errors()[0]
    loc = (*prefix, *_key_path(err["loc"]))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _schema_at(loc[:-1])
        fields = list(parent.model_fields) if parent else []
        hint = did_you_mean(str(loc[-1]), fields)
        return f"{key}: unknown key{hint}; valid keys here: {', '.join(fields)}"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    if loc[:1] == ("seeds",):
        return (
            f"seeds: give a list of whole-number seeds from 0 to 2**32 - 1 or a count from 1 to {MAX_RUNS} "
            f"(got {err['input']!r})"
        )
    if loc == ("name",):
        return f"name: use letters, digits, '_', '.' and '-' (it names the results folder), got {err['input']!r}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error"):
        return f"{key}: {message}"
    return f"{key}: {message} (got {err['input']!r})"


def _key_path(loc: tuple) -> tuple:
    """A pydantic error location as a key path. pydantic names the union member it tried right after
    a union field ('seeds', 'list[int]', 0) and marks a bad mapping key ('optim_config', 1, '[key]');
    a user's own key is never dropped, whatever its name."""
    unions = ("seeds", "sweep")
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (i == 1 and loc[0] in unions) and not (part == "[key]" and i >= 2 and i == len(loc) - 1)
    )


def _schema_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = ExperimentSpec
    if loc[:1] == ("plots",) and len(loc) == 2:
        return PlotSpec  # plots.0: an item of the list of plots
    if loc == ("record",):
        return RecordSpec  # an optional section
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


# --- dotted keys ------------------------------------------------------------------------------


def _check_plots(
    spec: ExperimentSpec,
    swept_keys: list[str],
    source: str,
    text: str,
    override: str | None = None,
    record_off: bool = False,
) -> tuple[str, ...]:
    """Checks the declared figures (`override`: the --set plots=... that gave them). With recording
    turned off (`record_off`: record: null, or --set record=null) the figures of recorded
    statistics are dropped from spec.plots, not refused: returns their kinds."""
    skipped = tuple(p.kind for p in spec.plots or [] if record_off and FIGURE_KINDS[p.kind].statistics)
    for i, plot in enumerate(spec.plots or []):
        if plot.kind in skipped:
            continue
        where = f"--set {override}" if override else f"{source}{yaml_position(text, ('plots', i))}"
        kind = FIGURE_KINDS[plot.kind]
        if kind.takes_x and plot.x not in swept_keys:
            raise SpecError(f"{where}: plots[{i}]: a {plot.kind} figure needs x set to a swept key: {swept_keys}")
        if kind.swept and kind.swept not in swept_keys:
            raise SpecError(f"{where}: plots[{i}]: a {plot.kind} figure needs {kind.swept} in the sweep")
        missing = [s for s in kind.statistics if spec.record is None or s not in spec.record.statistics]
        if missing:
            raise SpecError(
                f"{where}: plots[{i}]: the {plot.kind} figure needs {', '.join(missing)} recorded; "
                f"add them to record.statistics (or a record: section)"
            )
        if plot.layers is not None and not kind.takes_layers:
            takers = [k for k, other in FIGURE_KINDS.items() if other.takes_layers]
            takers = f"{', '.join(takers[:-1])} and {takers[-1]}" if len(takers) > 1 else takers[0]
            raise SpecError(f"{where}: plots[{i}]: layers is for {takers} figures only; remove it")
    if skipped:  # the figures left, or None (figures chosen from the sweep) if none is left
        spec.plots = [p for p in spec.plots if p.kind not in skipped] or None
    return skipped


# --- run ids ---------------------------------------------------------------------------------


def make_run_id(swept: dict[str, Any], seed: int) -> str:
    """A readable id from the swept values and the seed, stable across reruns and spec edits:
    'normalization=batchnorm__weight_scale=0.0001__seed=0'."""
    parts = [f"{key.rsplit('.', 1)[-1]}={file_safe(value)}" for key, value in swept.items()]
    return "__".join([*parts, f"seed={seed}"])
