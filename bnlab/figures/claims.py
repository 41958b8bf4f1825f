"""Figures of the claims (`bnlab claims`): a forest plot per claim, its trend across conditions,
and where each claim holds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from bnlab.figures.draw import label_axes, save_figure
from bnlab.lab.formatting import format_value
from bnlab.lab.results import read_claims

# --- claims (bnlab claims) ----------------------------------------------------------------------

VERDICT_COLORS = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}


def plot_claims(claims_root: str | Path, ids: Sequence[str] | None = None) -> list[Path]:
    """Draws claims_root/figures/<id>.png for every entry of claims_root/claims.json (or those in
    ids), as `bnlab claims` wrote it, <id>-cells.png (forest) and <id>-trend.png for a claim with
    cells, and scope.png over every claim with cells; returns the written paths."""
    everything = read_claims(claims_root)
    entries = [e for e in everything if ids is None or e["id"] in ids]
    out_dir = Path(claims_root) / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [save_figure(claim_figure(entry), out_dir / f"{entry['id']}.png", "png") for entry in entries]
    paths += [
        save_figure(forest_figure(entry), out_dir / f"{entry['id']}-cells.png", "png")
        for entry in entries
        if len(entry.get("cells", [])) > 1
    ]
    paths += [
        save_figure(figure, out_dir / f"{entry['id']}-trend.png", "png")
        for entry in entries
        if (figure := trend_figure(entry)) is not None
    ]
    scoped = [e for e in everything if e.get("cells")]
    if scoped:  # the overview shows the whole family, whichever claims were drawn now
        paths.append(save_figure(scope_figure(scoped), out_dir / "scope.png", "png"))
    return paths


def _cell_name(where: dict) -> str:
    from bnlab.claims import cell_label

    return cell_label(where) or "own condition"


def forest_figure(entry: dict) -> Figure:
    """One row per cell of a claim: the mean difference a - b with its 95% t interval, coloured by
    the cell's adjusted verdict, 0 marked; the cell's adjusted p and seeds at the right."""
    cells = entry["cells"]
    fig = Figure(figsize=(8, 1.3 + 0.42 * len(cells)), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(cells))[::-1]
    for y, cell in zip(ys, cells, strict=True):
        color = VERDICT_COLORS[cell["verdict_adjusted"]]
        mean = cell["mean_diff"]
        ax.errorbar(
            [mean], [y], xerr=[[mean - cell["ci_low"]], [cell["ci_high"] - mean]], fmt="D", color=color, capsize=4
        )
        ax.annotate(
            f"p adj. {cell['p_adjusted']:.2g}, n {cell['n']}",
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
        )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(ys, [_cell_name(c["where"]) for c in cells], fontsize=8)
    ax.set_ylim(-0.7, len(cells) - 0.3)
    for verdict, color in VERDICT_COLORS.items():
        ax.plot([], [], "D", color=color, label=verdict)
    ax.legend(loc="best", fontsize=7)
    claimed = ">" if entry["direction"] == "greater" else "<"
    xlabel = f"{entry['metric']}: a - b (claimed {claimed} 0), mean and 95% t interval"
    ax.xaxis.set_major_locator(MaxNLocator(6))
    values = np.array([v for c in cells for v in (c["ci_low"], c["mean_diff"], c["ci_high"])], dtype=float)
    size = np.abs(values[np.isfinite(values) & (values != 0)])
    if len(size) and size.max() > 100 * np.median(size):
        # A cell orders of magnitude off (a diverging net) would flatten every other row: the axis
        # spans the others, and a mean beyond it is written at the edge it lies past.
        typical = values[np.abs(values) <= 100 * np.median(size)]
        low, high = min(typical.min(), 0.0), max(typical.max(), 0.0)
        low, high = low - 0.1 * (high - low), high + 0.1 * (high - low)
        ax.set_xlim(low, high)
        for y, cell in zip(ys, cells, strict=True):
            mean = cell["mean_diff"]
            if not low <= mean <= high:
                edge, align, text = (low, "left", f"◀ {mean:+.3g}") if mean < low else (high, "right", f"{mean:+.3g} ▶")
                color = VERDICT_COLORS[cell["verdict_adjusted"]]
                ax.annotate(text, (edge, y), ha=align, va="bottom", fontsize=8, color=color)
    ax.set_xlabel(xlabel)
    counts = ", ".join(f"{len(entry['scope'][v])} {v}" for v in VERDICT_COLORS if entry["scope"].get(v))
    fig.suptitle(
        f"{entry['id']} ({entry['scope']['holds']}: {counts} of {len(cells)} cells)\n{entry['statement']}", fontsize=9
    )
    return fig


TRAINS_ABOVE = 0.15  # a net "trains" when its mean accuracy is above chance (0.1 for 10 classes) + 0.05


def trend_figure(entry: dict) -> Figure | None:
    """For a claim across a numeric condition with at least three values (a learning rate): the
    metric of both groups (mean ± std over seeds) against it, a panel per value of the other
    conditions, and the largest value at which each group's mean accuracy is above
    TRAINS_ABOVE (chance + 0.05) marked. None for a claim without such a condition."""
    cells = entry.get("cells") or []
    keys = list(cells[0]["where"]) if cells else []
    numeric = [
        k
        for k in keys
        if all(isinstance(c["where"][k], (int, float)) and not isinstance(c["where"][k], bool) for c in cells)
        and len({c["where"][k] for c in cells}) >= 3
    ]
    if not numeric:
        return None
    x_key = numeric[0]
    panels: dict[str, list[dict]] = {}
    for cell in cells:
        panels.setdefault(_cell_name({k: v for k, v in cell["where"].items() if k != x_key}), []).append(cell)
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    key = entry["key"].rsplit(".", 1)[-1]
    for ax, (title, group) in zip(axes, panels.items(), strict=True):
        group = sorted(group, key=lambda c: c["where"][x_key])
        xs = [c["where"][x_key] for c in group]
        for side, color in (("a", "tab:blue"), ("b", "tab:orange")):
            values = [np.array([p[side] for p in c["pairs"]]) for c in group]
            means = np.array([v.mean() for v in values])
            stds = np.array([v.std() for v in values])
            label = f"{key} = {format_value(entry[side])}"
            ax.plot(xs, means, "-o", color=color, label=label)
            ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.2)
            trains = [x for x, m in zip(xs, means, strict=True) if m > TRAINS_ABOVE]
            if trains and "acc" in entry["metric"]:
                ax.axvline(max(trains), color=color, linestyle=":", linewidth=1.5)
        if "acc" in entry["metric"]:
            ax.axhline(0.1, color="gray", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        label_axes(ax, title, x_key.rsplit(".", 1)[-1], entry["metric"])
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{entry['id']}: {entry['metric']} against {x_key.rsplit('.', 1)[-1]} (mean ± std over seeds); dotted: "
        f"the largest value where the mean is above {TRAINS_ABOVE} (chance 0.1, dashed)",
        fontsize=9,
    )
    return fig


def scope_figure(entries: list[dict]) -> Figure:
    """One page with every claim's scope: a row per claim, a square per cell coloured by its
    adjusted verdict, and where the claim holds in words."""
    import textwrap

    width = max(len(e["cells"]) for e in entries)
    fig = Figure(figsize=(11, 0.8 + 0.32 * len(entries)), layout="constrained")
    ax = fig.subplots()
    for row, entry in enumerate(entries):
        y = len(entries) - 1 - row
        for x, cell in enumerate(entry["cells"]):
            ax.add_patch(
                Rectangle((x + 0.08, y - 0.38), 0.84, 0.76, color=VERDICT_COLORS[cell["verdict_adjusted"]], linewidth=0)
            )
        ax.text(-0.3, y, entry["id"], ha="right", va="center", fontsize=8)
        text = textwrap.shorten(entry["scope"]["text"], 110, placeholder=" ...")
        ax.text(width + 0.3, y, text, ha="left", va="center", fontsize=7)
    ax.set_xlim(-4.5, width + 15)  # room for the ids at the left and the words at the right
    ax.set_ylim(-0.6, len(entries) - 0.4)
    ax.axis("off")
    for verdict, color in VERDICT_COLORS.items():
        ax.plot([], [], "s", color=color, label=verdict)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    ax.set_title(
        "Where each claim holds: a square per cell, coloured by its verdict after Holm's adjustment", fontsize=9
    )
    return fig


def claim_figure(entry: dict) -> Figure:
    """Left: the metric of the two groups for every seed, a line joining each pair. Right: the
    per-seed differences a - b, their mean and 95% t interval, and 0 (the verdict's reference)."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    key = entry["key"].rsplit(".", 1)[-1]
    labels = [f"{key} = {format_value(entry['a'])}", f"{key} = {format_value(entry['b'])}"]
    color = VERDICT_COLORS[entry["verdict"]]
    for pair in entry["pairs"]:
        left.plot([0, 1], [pair["a"], pair["b"]], "-o", color="tab:blue", alpha=0.6)
    left.set_xticks([0, 1], labels)
    left.set_xlim(-0.4, 1.4)
    label_axes(left, "per seed (lines join a seed's pair)", None, entry["metric"])
    diffs = [p["a"] - p["b"] for p in entry["pairs"]]
    jitter = np.linspace(-0.08, 0.08, len(diffs)) if len(diffs) > 1 else [0.0]
    right.plot(jitter, diffs, "o", color="tab:blue", alpha=0.6, label="a - b per seed")
    mean, low, high = entry["mean_diff"], entry["ci_low"], entry["ci_high"]
    right.errorbar(
        [0.3],
        [mean],
        yerr=[[mean - low], [high - mean]],
        fmt="D",
        color=color,
        capsize=8,
        markersize=8,
        label="mean, 95% t interval",
    )
    right.axhline(0, color="black", linewidth=1)
    right.set_xticks([])
    right.set_xlim(-0.3, 0.6)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    claimed = ">" if entry["direction"] == "greater" else "<"
    label_axes(right, f"claimed: a - b {claimed} 0", None, f"difference in {entry['metric']}")
    where = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in entry["where"].items())
    fig.suptitle(
        f"{entry['id']}: {entry['verdict']} (n = {entry['n']}, p = {entry['p_value']:.2g})"
        f"{'  [' + where + ']' if where else ''}\n{entry['statement']}",
        fontsize=10,
        color=color if entry["verdict"] != "inconclusive" else "black",
    )
    return fig
