"""Spec YAML: YAML 1.2 numbers (1e-3 is a float), no YAML 1.1 yes/no booleans, and the line and
column of a key path for messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bnlab.errors import SpecError

# libyaml's C parser and emitter, where PyYAML was built with them: the same values, several times faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def safe_dump(value: Any, **options: Any) -> str:
    """yaml.safe_dump(value, **options)'s text, from libyaml's emitter where PyYAML has it."""
    return yaml.dump(value, Dumper=_SAFE_DUMPER, **options)


def safe_load(text: str) -> Any:
    """yaml.safe_load(text)'s values, from libyaml's parser where PyYAML has it."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def as_yaml_gives_back(value: Any) -> Any:
    """A deep copy of value as safe_dump then safe_load give it back (tuples become lists, and so on)."""
    return safe_load(safe_dump(value))


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 as a float (YAML 1.2), not as the string '1e-3' (YAML 1.1)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _Yaml11Boolean(yaml.MarkedYAMLError):
    """yes/no/on/off: booleans to YAML 1.1 (and PyYAML), strings to YAML 1.2; `normalization: no`
    would silently become False."""


def _construct_bool(loader: YamlLoader, node: yaml.ScalarNode) -> bool:
    if node.value.lower() in ("true", "false"):
        return loader.construct_yaml_bool(node)
    raise _Yaml11Boolean(problem=node.value, problem_mark=node.start_mark)


YamlLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python values; a syntax error becomes a SpecError with line and column."""
    try:
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except _Yaml11Boolean as exc:
        mark = exc.problem_mark
        raise SpecError(
            f"{source}:{mark.line + 1}:{mark.column + 1}: {exc.problem!r} is a boolean in YAML 1.1 but a word in "
            f"YAML 1.2, so bnlab does not guess; write true or false, null for none, or quote the word"
        ) from None
    except (yaml.YAMLError, ValueError, AttributeError, RecursionError) as exc:  # 2001-13-45, !!int abc, [[[...
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where}: invalid YAML: {problem}") from None


def yaml_position(text: str, path: tuple) -> str:
    """':line:col' of the node at a key path in the YAML text, or '' if it cannot be found."""
    try:
        node = yaml.compose(text, Loader=YamlLoader)
    except yaml.YAMLError:
        return ""
    best = node
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            best, node = match[0]  # point at the key, where a reader looks
            continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        best = node
    return f":{best.start_mark.line + 1}:{best.start_mark.column + 1}" if best is not None else ""


def read_text(path: Path, what: str) -> str:
    """A spec or claims file's text (UTF-8); SpecError naming `what` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the {what}: {exc}") from None
