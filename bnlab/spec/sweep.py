"""The keys a spec may sweep or override: `--set key=value` applied to a raw spec, and a sweep
expanded into its points (products, zip, lists of blocks, logspace and linspace)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from bnlab.errors import SpecError
from bnlab.lab.formatting import did_you_mean
from bnlab.nn.optim import DEFAULTS as OPTIM_DEFAULTS
from bnlab.spec.schema import MAX_RUNS, SECTIONS
from bnlab.spec.yaml_text import as_yaml_gives_back, parse_yaml, yaml_position


def field_paths() -> list[str]:
    """Every dotted key a sweep or an override may name, e.g. 'model.weight_scale'."""
    paths = [f"{section}.{name}" for section, model in SECTIONS.items() for name in model.model_fields]
    paths += sorted({f"solver.optim_config.{k}" for rule in OPTIM_DEFAULTS.values() for k in rule})
    return paths


def check_key(key: Any, source: str, where: str) -> str:
    if not isinstance(key, str) or key not in field_paths():
        raise SpecError(
            f"{source}{where}: {key!r} names no field{did_you_mean(str(key), field_paths())}; "
            f"keys look like model.weight_scale or solver.optim_config.learning_rate"
        )
    return key


def get_key(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def with_values(base: dict, values: dict[str, Any]) -> dict:
    """A deep copy of the sections with dotted keys set."""
    config = as_yaml_gives_back(base)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def apply_override(raw: dict, item: str) -> str:
    """Apply one `--set key=value` to the raw spec and return the key; the value is read as YAML
    (1e-3, null, [1, 2]). A swept key is fixed to the given value: its sweep axis keeps just that.
    """
    where = f"--set {item}"
    if "=" not in item:
        raise SpecError(f"{where}: expected KEY=VALUE, e.g. --set solver.num_epochs=2")
    key, _, text = item.partition("=")
    key = key.strip()
    value = parse_yaml(text, where) if text.strip() else None
    if key in ("name", "description", "seeds", "record", "plots"):
        raw[key] = value
        return key
    if not key.startswith("record."):  # record.* is validated with the record section
        check_key(key, where, "")
    sweep = raw.get("sweep")
    blocks = sweep if isinstance(sweep, list) else [sweep] if isinstance(sweep, dict) else []
    for block in blocks:
        if isinstance(block, dict) and key in block:
            block[key] = [value]
        if isinstance(block, dict) and isinstance(block.get("zip"), dict) and key in block["zip"]:
            raise SpecError(f"{where}: {key} is zipped with other keys in the sweep; edit the spec instead")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"{where}: {part} is not a mapping in the spec, cannot set {key}")
        node = child
    node[leaf] = value
    return key


def expand_sweep(sweep: Any, source: str, text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The swept keys (in order of first appearance) and the list of points (key -> value)."""
    if sweep is None:
        return [], [{}]
    blocks = sweep if isinstance(sweep, list) else [sweep]
    if not blocks:
        raise SpecError(f"{source}{yaml_position(text, ('sweep',))}: sweep: an empty list sweeps nothing; remove it")
    keys: list[str] = []
    points: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = ("sweep", i) if isinstance(sweep, list) else ("sweep",)
        where = f"{source}{yaml_position(text, at)}"
        if not isinstance(block, dict) or not block:
            raise SpecError(f"{where}: sweep entries must be non-empty mappings of keys to value lists")
        axes: list[list[dict[str, Any]]] = []
        for key, values in block.items():
            if key == "zip":
                axes.append(_zip_axis(values, source, text, (*at, "zip")))
                continue
            check_key(key, source, yaml_position(text, (*at, key)))
            axes.append([{key: v} for v in _values(values, f"{source}{yaml_position(text, (*at, key))}", key)])
        if len(points) + math.prod(len(axis) for axis in axes) > MAX_RUNS:
            raise SpecError(f"{where}: the sweep expands to more than {MAX_RUNS} runs; sweep fewer values")
        for combo in itertools.product(*axes):
            point = {k: v for part in combo for k, v in part.items()}
            points.append(point)
            keys += [k for k in point if k not in keys]
    return keys, points


def _zip_axis(block: Any, source: str, text: str, at: tuple) -> list[dict[str, Any]]:
    where = f"{source}{yaml_position(text, at)}"
    if not isinstance(block, dict) or len(block) < 2:
        raise SpecError(f"{where}: zip needs a mapping of at least two keys to value lists of equal length")
    columns = {}
    for key, values in block.items():
        check_key(key, source, yaml_position(text, (*at, key)))
        columns[key] = _values(values, f"{source}{yaml_position(text, (*at, key))}", key)
    lengths = {key: len(v) for key, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise SpecError(f"{where}: zipped lists must have equal lengths, got {lengths}")
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _values(spec: Any, where: str, key: str) -> list[Any]:
    """A value list, or one generated by {logspace: [a, b, n]} / {linspace: [a, b, n]}."""
    if isinstance(spec, list):
        if not spec:
            raise SpecError(f"{where}: sweep.{key}: the value list is empty; give at least one value")
        return spec
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("logspace", "linspace"):
        kind, args = next(iter(spec.items()))
        ok = (
            isinstance(args, list)
            and len(args) == 3
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) and abs(a) < 1e308 for a in args)
            and isinstance(args[2], int)
            and 1 <= args[2] <= MAX_RUNS
        )
        if not ok:
            raise SpecError(
                f"{where}: sweep.{key}: {kind} takes [start, stop, count] with finite numbers and a whole count "
                f"from 1 to {MAX_RUNS}, got {args!r}"
            )
        start, stop, count = args
        with np.errstate(over="ignore", invalid="ignore"):  # 10**400 is inf, which validation then rejects
            grid = (np.logspace if kind == "logspace" else np.linspace)(start, stop, count)
        return grid.tolist()  # numpy's values (stop exactly, not start + (n-1) * step), as plain floats
    raise SpecError(
        f"{where}: sweep.{key}: expected a list of values or {{logspace: [a, b, n]}} / "
        f"{{linspace: [a, b, n]}}, got {spec!r}"
    )
