"""How bnlab writes values and numbers for people: one place for run ids, tables, figure labels and
the report, so the same value reads the same everywhere."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

FIXED_RANGE = (1e-3, 1e4)  # within it, fixed decimals read best (accuracies, losses); outside, powers of ten


def format_value(value: Any) -> str:
    """A config value (a swept value, a claim's setting): None as 'none', lists joined by '-', floats
    to 6 significant digits (1e-05, 0.000162378), anything else as text. Run ids are made of these."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "-".join(format_value(v) for v in value)
    return str(value)


def file_safe(value: Any) -> str:
    """A value in a run id or folder name: as format_value writes it, with only file-name-safe
    characters (others become -)."""
    return re.sub(r"[^A-Za-z0-9.+-]", "-", format_value(value))


def format_short(value: Any) -> str:
    """A swept value for a label: a list of one repeated value (or a CSV cell's text of one) as
    'NxV' (hidden_dims 5x100), the rest as text."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, list) and len(value) > 1 and all(v == value[0] for v in value):
        return f"{len(value)}x{value[0]}"
    return "null" if value is None else str(value)


def format_number(x: float, digits: int = 3, sign: bool = False) -> str:
    """A measured number: `digits` decimals when |x| is in FIXED_RANGE (0.843, 2.096) or 0, else
    `digits` significant digits in scientific notation (2.69e+07, 1.62e-04); nan and inf as such.
    sign: a + before positive numbers (differences)."""
    plus = "+" if sign else ""
    if not math.isfinite(x):
        return f"{x:{plus}}"
    if x == 0 or FIXED_RANGE[0] <= abs(x) < FIXED_RANGE[1]:
        return f"{x:{plus}.{digits}f}"
    return f"{x:{plus}.{digits - 1}e}"


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± std' (std with n - 1, as statistics.stdev) of the finite values, in the mean's notation;
    the value alone when there is one, '—' when there is none."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return "—"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return format_number(mean, digits)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    if mean == 0 or FIXED_RANGE[0] <= abs(mean) < FIXED_RANGE[1]:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{format_number(mean, digits)} ± {std:.{digits - 1}e}"


def format_cell(text: str) -> str:
    """A value as written in a CSV cell, for a table: numbers with many digits shortened as
    format_value does (0.00016237767391887210 -> 0.000162378), the rest unchanged."""
    try:
        int(text)
        return text
    except ValueError:
        pass
    try:
        return format_value(float(text))
    except ValueError:
        return text


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'title'?)' when one of `choices` is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
