"""Rebuild the generated parts of the results pages (docs/results/*.md, and the README if it has
any) from results/: `make readme` (after `make experiments`, and `make claims` for the claims table).

Generated blocks sit between `<!-- bnlab:NAME -->` and `<!-- /bnlab:NAME -->`; everything outside
them is prose and left alone (its numbers are updated by hand, citing the command beside them).
Blocks: `provenance` (what made the numbers), `cnn_norm` (best validation accuracy per
normalization and batch size), `claims` (the verdict table and its counts), and
`table FOLDER... -- METRIC...` (any experiment's groups of runs, each metric of the claims lab as
mean ± std over seeds: `<!-- bnlab:table claims/claims_shift -- final_val_acc -->`), `claim ID`
(one claim's verdict, where it holds and its effect, in a sentence), `cells ID...` (every cell
of the named claims, a row each), `init_depth` (Yang et al.'s and De & Smith's predictions beside
results/init_depth), `norm_placement` (Xiong et al.'s depth scaling beside
results/norm_placement), `bench GROUP...` (results/bench.json's rows of those groups, from `make
bench`). Figures: every
docs/figures/EXPERIMENT_KIND.png is copied from results/EXPERIMENT/figures/KIND.png, and
docs/figures/claims/ID.png from results/claims/figures/ID.png (docs/figures/report.png is a
browser screenshot, not regenerated). A block whose results are missing is left as it is, and said.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bnlab.claims.evaluate import metric_values  # noqa: E402
from bnlab.claims.files import cell_label  # noqa: E402
from bnlab.lab.formatting import format_cell, format_mean_std  # noqa: E402
from bnlab.nn.probes import growth_factor  # noqa: E402
from bnlab.numerics import numerics_summary  # noqa: E402
from bnlab.results import group_summary, load_experiment  # noqa: E402

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]  # the pages whose blocks are rebuilt
RESULTS = ROOT / "results"
FIGURES = ROOT / "docs" / "figures"
# README figures whose experiment is not their name's prefix
NAMED_FIGURES = {
    "batch_size_batchnorm.png": "batch_size/figures/batch_size_batchnorm.png",
    "batch_size_layernorm.png": "layernorm_batch_size/figures/batch_size_layernorm.png",
}
BLOCK = re.compile(
    r"(<!-- bnlab:(?P<name>[a-z_]+)(?P<args>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /bnlab:(?P=name) -->)", re.DOTALL
)


def provenance_block(results: Path) -> str | None:
    """One line: the numerics, versions and commit of every run under results/."""
    metas = [json.loads(p.read_text()) for p in sorted(results.glob("*/*/meta.json"))]
    metas += [json.loads(p.read_text()) for p in sorted(results.glob("claims/*/*/meta.json"))]
    if not metas:
        return None
    numpy = sorted({m.get("versions", {}).get("numpy", "?") for m in metas})
    commits = sorted({(m.get("git_commit") or "unknown")[:10] for m in metas})
    return (
        f"*These numbers: {len(metas)} runs, numerics {numerics_summary(metas)}; numpy {', '.join(numpy)}; "
        f"bnlab commit {', '.join(commits)} (`make readme` regenerates the tables and figures from results/).*\n"
    )


def cnn_norm_block(results: Path) -> str | None:
    """Best validation accuracy (mean ± std over seeds) per normalization (rows) and batch size
    (columns), the best of each column in bold."""
    folder = results / "cnn_norm"
    if not (folder / "runs.csv").is_file():
        return None
    header, rows = group_summary(folder)
    norm_col, batch_col, val_col = (
        header.index("normalization"),
        header.index("batch_size"),
        header.index("best val acc"),
    )
    names = {
        "none": "none",
        "batchnorm": "spatial batch norm",
        "groupnorm": "group norm (4 groups)",
        "layernorm": "layer norm (over C, H, W)",
    }
    batches = list(dict.fromkeys(row[batch_col] for row in rows))
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        table.setdefault(row[norm_col], {})[row[batch_col]] = row[val_col]
    best = {b: max(table, key=lambda n: float(table[n].get(b, "0").split(" ")[0])) for b in batches}
    lines = ["| normalization | " + " | ".join(f"batch {b}" for b in batches) + " |", "|---" * (len(batches) + 1) + "|"]
    for norm, cells in table.items():
        shown = [f"**{cells[b]}**" if best[b] == norm else cells.get(b, "—") for b in batches]
        lines.append(f"| {names.get(norm, norm)} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def init_depth_block(results: Path) -> str | None:
    """results/init_depth at iteration 1, theory beside measurement: Yang et al.'s growth factor of
    the squared weight-gradient norm per layer towards the input (least-squares over layers 2-16)
    and the range of the layer outputs' variance, per plain net; De & Smith's stream variance after
    blocks 1, 2, 4, 8 and 16, and its growth per block, per residual net (mean ± std over seeds)."""
    if not (results / "init_depth" / "runs.csv").is_file():
        return None
    experiment = load_experiment(results / "init_depth")
    probes = experiment.probes.merge(experiment.runs, on="run_id")
    probes = probes[probes["iteration"] == 1]
    plain, residual = probes[probes["model.residual"] == "none"], probes[probes["model.residual"] == "pre"]
    lines = [
        "| plain net | grad_norm² growth per layer (layers 2–16) | Yang et al. | layer-output variance, min–max |",
        "|---|---|---|---|",
    ]
    for norm, rows in plain.groupby("model.normalization", sort=False):
        grad = rows[(rows["statistic"] == "grad_norm") & rows["layer"].between(2, 16)]
        factors = [growth_factor(r["layer"], r["value"] ** 2) for _, r in grad.groupby("seed")]
        variance = rows[rows["statistic"] == "out_std"].groupby("layer")["value"].apply(lambda v: (v**2).mean())
        theory = "π/(π−1) = 1.467" if norm == "batchnorm" else "no growth (1)"
        spread = f"{variance.min():.4g}–{variance.max():.4g}"
        lines.append(f"| {norm} | {format_mean_std(factors)} | {theory} | {spread} |")
    blocks = [1, 2, 4, 8, 16]
    lines += ["", "| residual net (pre) | " + " | ".join(f"block {b}" for b in blocks) + " | per block | De & Smith |"]
    lines.append("|---" * (len(blocks) + 3) + "|")
    kinds = {("none", "False"): ("no normalization", "doubling (×2)"),
             ("batchnorm", "False"): ("batch norm", "1 + l: 2, 3, 5, 9, 17"),
             ("none", "True"): ("SkipInit (no normalization)", "constant (α = 0)")}  # fmt: skip
    stream = residual[residual["statistic"] == "out_std"].assign(var=lambda d: d["value"] ** 2)
    for (norm, skipinit), rows in stream.groupby(["model.normalization", "model.skipinit"], sort=False):
        name, theory = kinds[norm, str(skipinit)]
        at = rows.groupby("layer")["var"].mean()
        per_block = [1 / growth_factor(r["layer"], r["var"]) for _, r in rows.groupby("seed")]
        growth = "" if norm == "batchnorm" else f"×{format_mean_std(per_block)}"
        lines.append(f"| {name} | " + " | ".join(f"{at[b]:.4g}" for b in blocks) + f" | {growth} | {theory} |")
    return "\n".join(lines) + "\n"


def norm_placement_block(results: Path) -> str | None:
    """results/norm_placement at iteration 1, beside Xiong et al.'s bounds: per residual form, the
    gradient norm of the last block's last weight layer (W_{2B+1}) at each depth B (mean ± std over
    seeds), its log-log slope against B, and at the largest depth the last block's over the first's."""
    if not (results / "norm_placement" / "runs.csv").is_file():
        return None
    experiment = load_experiment(results / "norm_placement")
    probes = experiment.probes.merge(experiment.runs, on="run_id")
    grads = probes[(probes["iteration"] == 1) & (probes["statistic"] == "grad_norm")].copy()
    grads["blocks"] = grads["model.hidden_dims"].map(lambda dims: len(json.loads(dims)))
    depths = sorted(grads["blocks"].unique())
    bound = {"pre": "−0.5 (as 1/√L)", "postnorm": "0 (independent of L)"}
    lines = [
        "| residual | " + " | ".join(f"{b} blocks" for b in depths) + " | log-log slope | Xiong et al. "
        f"| last / first block at {depths[-1]} |",
        "|---" * (len(depths) + 4) + "|",
    ]
    for form, rows in grads.groupby("model.residual", sort=False):
        last = rows[rows["layer"] == 2 * rows["blocks"] + 1]
        at = [last[last["blocks"] == b]["value"].tolist() for b in depths]
        means = [float(np.mean(v)) for v in at]
        slope = float(np.polyfit(np.log(depths), np.log(means), 1)[0])
        deepest = rows[rows["blocks"] == depths[-1]].groupby("layer")["value"].mean()
        ratio = deepest[2 * depths[-1] + 1] / deepest[3]
        cells = " | ".join(format_mean_std(v) for v in at)
        lines.append(f"| {form} | {cells} | {slope:+.2f} | {bound.get(form, '')} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def claims_block(results: Path, figures: str = "docs/figures") -> str | None:
    """The claims' table: led by the verdict after Holm's adjustment (for a claim with cells, where
    it holds), then the unadjusted one, with the counts of each; `figures`: the figures folder as
    the page links it."""
    file = results / "claims" / "claims.json"
    if not file.is_file():
        return None
    claims = json.loads(file.read_text())
    cells = sum(len(c.get("cells") or []) for c in claims)
    lines = [
        f"| claim | statement | verdict after Holm ({cells} cells) | where it holds | a − b [95% CI] | n "
        "| unadjusted |",
        "|---|---|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    for c in claims:
        own = c.get("cells") or []
        if len(own) == 1:
            adjusted, scope = own[0]["verdict_adjusted"], ""
            if adjusted == "inconclusive" and own[0].get("seeds_for_power"):
                scope = f"80% power would need ~{own[0]['seeds_for_power']} seeds"
        else:
            adjusted, scope = c["scope"]["holds"], c["scope"]["text"]
        counts[adjusted] = counts.get(adjusted, 0) + 1
        shown = {"contradicted": "**contradicted**", "nowhere": "**nowhere**"}.get(adjusted, adjusted)
        shown = {"inconclusive": "*inconclusive*", "somewhere": "*somewhere*"}.get(adjusted, shown)
        where = ", ".join(f"{k.rsplit('.', 1)[-1]} {_value(v)}" for k, v in (c.get("where") or {}).items())
        compared = f"{_metric(c)}: {_value(c['a'])} − {_value(c['b'])}" + (f" ({where})" if where else "")
        effect = f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        figure = f"{c['id']}-cells" if len(own) > 1 else c["id"]
        lines.append(
            f"| [`{c['id']}`]({figures}/claims/{figure}.png) | {c['statement']} <br><sub>{compared}</sub> "
            f"| {shown} | {scope} | {effect} | {c['n']} | {c['verdict']} |"
        )
    order = ("supported", "contradicted", "inconclusive", "everywhere", "somewhere", "nowhere")
    total = ", ".join(f"{counts[v]} {v}" for v in order if v in counts)
    return "\n".join(lines) + f"\n\nCounts after the adjustment: {total}.\n"


def table_block(results: Path, args: str) -> str | None:
    """`FOLDER... -- METRIC...`: one row per group of runs (the same swept values) of each
    experiment folder under results/, with its runs done and each metric (bnlab.claims.evaluate's,
    e.g. final_val_acc, val_acc_mode_gap) as mean ± std over the group's seeds; groups with no
    finished run are left out. A claim's cells are folders too: with several folders, the first
    column names each one's cell (after its '__'; "as specified" for the file's own condition), or
    the folder, when they are different experiments."""
    folders, _, metrics = (part.split() for part in args.partition(" -- "))
    if not folders or not metrics:
        raise SystemExit(f"table block {args!r}: give FOLDER... -- METRIC...")
    if not all((results / folder / "runs.csv").is_file() for folder in folders):
        return None
    lines, header = [], None
    for folder in folders:
        experiment = load_experiment(results / folder)
        keys = experiment.swept_keys
        if header is None:
            first = "cell" if len({f.split("__")[0] for f in folders}) == 1 else "experiment"
            header = [first] * (len(folders) > 1) + [*(k.rsplit(".", 1)[-1] for k in keys), "runs", *metrics]
            lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        runs = experiment.runs.set_index("run_id")
        values = {m: metric_values(experiment, m) for m in metrics}
        if len({f.split("__")[0] for f in folders}) > 1:  # different experiments: named by their folders
            cell = folder
        else:  # one claim's cells
            cell = ", ".join(_cell_part(part) for part in folder.split("__")[1:]) or "as specified"
        groups = runs.groupby([runs[k].astype(str) for k in keys], sort=False) if keys else [((), runs)]
        for swept, group in groups:
            swept = swept if isinstance(swept, tuple) else (swept,)
            done = int((group["status"] == "done").sum())
            if not done:  # runs no claim needed: never trained
                continue
            shown = [format_mean_std(values[m].reindex(group.index).tolist()) for m in metrics]
            first = [cell] * (len(folders) > 1)
            lines.append("| " + " | ".join([*first, *map(format_cell, swept), str(done), *shown]) + " |")
    return "\n".join(lines) + "\n"


def _cell_part(part: str) -> str:
    """A cell folder's part as a label: 'hidden_dims-100-100-100' -> 'hidden_dims=3x100'."""
    key, _, value = part.partition("-")
    values = value.split("-")
    return f"{key}={len(values)}x{values[0]}" if len(values) > 1 and len(set(values)) == 1 else f"{key}={value}"


def claim_block(results: Path, claim_id: str) -> str | None:
    """One claim from claims.json in a line: its verdict after Holm's adjustment (where it holds,
    for a claim with cells), the mean difference a − b with its 95% interval and the seeds, per cell."""
    file = results / "claims" / "claims.json"
    claims = {c["id"]: c for c in json.loads(file.read_text())} if file.is_file() else {}
    if claim_id not in claims:
        return None
    c = claims[claim_id]
    cells = c.get("cells") or []
    verdict = cells[0]["verdict_adjusted"] if len(cells) == 1 else c["scope"]["text"]
    effects = "; ".join(
        f"{(cell_label(cell['where']) or 'its condition') + ': ' if len(cells) > 1 else ''}{cell['mean_diff']:+.3f} "
        f"[{cell['ci_low']:+.3f}, {cell['ci_high']:+.3f}], {cell['n']} seeds"
        for cell in cells
    )
    return f"`{claim_id}` ({_metric(c)}, {_value(c['a'])} − {_value(c['b'])}): **{verdict}** after Holm; {effects}.\n"


def cells_block(results: Path, claim_ids: str) -> str | None:
    """Every cell of the named claims in a table: the claim, the cell, a − b with its 95% interval,
    the seeds and the verdict after Holm's adjustment over the family."""
    file = results / "claims" / "claims.json"
    claims = {c["id"]: c for c in json.loads(file.read_text())} if file.is_file() else {}
    ids = claim_ids.split()
    if not ids or any(i not in claims for i in ids):
        return None
    lines = ["| claim | cell | a − b [95% CI] | seeds | after Holm |", "|---|---|---|---|---|"]
    for claim_id in ids:
        c = claims[claim_id]
        for cell in c.get("cells") or []:
            verdict = cell["verdict_adjusted"]
            shown = {"contradicted": "**contradicted**", "inconclusive": "*inconclusive*"}.get(verdict, verdict)
            lines.append(
                f"| `{claim_id}` | {cell_label(cell['where']) or 'its condition'} | {cell['mean_diff']:+.3g} "
                f"[{cell['ci_low']:+.3g}, {cell['ci_high']:+.3g}] | {cell['n']} | {shown} |"
            )
    return "\n".join(lines) + "\n"


def bench_block(results: Path, groups: str) -> str | None:
    """The rows of results/bench.json (`make bench`) of the named groups: median, interquartile
    range and what was measured, and the machine they were measured on first."""
    file = results / "bench.json"
    if not file.is_file():
        return None
    saved = json.loads(file.read_text())
    m = saved["machine"]
    machine = (
        f"*Measured on {m['cpu']}, {m['cores']} cores; {m['blas']['name']} {m['blas']['version']} "
        f"({m['blas']['kernel']} kernels); numpy {m['numpy']}, numba {m['numba']}, "
        f"PyTorch {m['torch'] or 'not installed'} (`make bench`, then `make readme`).*"
    )
    lines = [machine, "", "| measurement | median | IQR | how |", "|---|---|---|---|"]
    for row in saved["rows"]:
        if row["group"] not in groups.split():
            continue
        unit = {"x": "×", "s": " s", "ms": " ms", "MB": " MB", "img/s": " images/s"}.get(row["unit"], f" {row['unit']}")
        if row["median"] is None:
            lines.append(f"| {row['name']} | — | — | {row['note']} |")
            continue
        median = f"**{row['median']:.2f}{unit}**" if row["unit"] == "x" else f"{row['median']:.4g}{unit}"
        how = row["note"] or (f"{row['ratio']:.2f} {row['ratio_of']}" if row["ratio"] is not None else "")
        lines.append(f"| {row['name']} | {median} | {row['iqr']:.3g}{unit} | {how} |")
    return "\n".join(lines) + "\n"


def _metric(claim: dict) -> str:
    """The claim's metric, as its distance to the reference run when it has one."""
    reference = claim.get("reference")
    if not reference:
        return claim["metric"]
    at = ", ".join(f"{key.rsplit('.', 1)[-1]}={_value(value)}" for key, value in reference.items())
    return f"|{claim['metric']} − its value at {at}|"


def _value(value) -> str:
    return "none" if value is None else str(value)


def _only(paths) -> list[Path]:
    found = list(paths)
    return found if len(found) == 1 else []


def copy_figures(results: Path, figures: Path) -> list[str]:
    """Copy each figure the pages show from its experiment's figures/ folder, and every claim's
    figure; returns the ones with no source."""
    missing = []
    # every claim's figures: the claims table links each one
    claims_figures = {figures / "claims" / p.name for p in (results / "claims" / "figures").glob("*.png")}
    for target in sorted(figures.glob("*.png")) + sorted(set(figures.glob("claims/*.png")) | claims_figures):
        if target.parent.name == "claims":
            sources = [results / "claims" / "figures" / target.name]
        elif target.name in NAMED_FIGURES:
            sources = [results / NAMED_FIGURES[target.name]]
        else:  # EXPERIMENT_KIND.png from EXPERIMENT/figures/KIND.png, or its only KIND_*.png (sweep_model_...)
            parts = target.stem.split("_")
            sources = []
            for i in range(1, len(parts)):
                folder, kind = results / "_".join(parts[:i]) / "figures", "_".join(parts[i:])
                sources += [folder / f"{kind}.png", *_only(folder.glob(f"{kind}_*.png"))]
        source = next((s for s in sources if s.is_file()), None)
        if source is None:
            missing.append(f"{target.parent.name}/{target.name}")
        else:
            shutil.copyfile(source, target)
    return missing


def main() -> int:
    start = time.perf_counter()
    builders = {
        "provenance": provenance_block,
        "cnn_norm": cnn_norm_block,
        "init_depth": init_depth_block,
        "norm_placement": norm_placement_block,
        "claims": claims_block,
        "table": table_block,
        "claim": claim_block,
        "cells": cells_block,
        "bench": bench_block,
    }
    rebuilt = []
    for page in PAGES:
        text = page.read_text()

        def rebuild(match: re.Match, page: Path = page) -> str:
            name = match["name"]
            if name not in builders:
                raise SystemExit(f"{page.name}: unknown generated block {name!r}; known: {', '.join(builders)}")
            figures = os.path.relpath(FIGURES, page.parent)
            if name in ("table", "claim", "cells", "bench"):
                body = builders[name](RESULTS, match["args"].strip())
            else:
                body = builders[name](RESULTS, figures) if name == "claims" else builders[name](RESULTS)
            if body is None:
                print(f"kept block {name}: its results are not in {RESULTS}", file=sys.stderr)
                return match.group(0)
            return f"{match.group(1)}{body}{match['close']}"

        new_text = BLOCK.sub(rebuild, text)
        if new_text != text:
            page.write_text(new_text)
            rebuilt.append(page.name)
    missing = copy_figures(RESULTS, FIGURES)  # "folder/name.png"
    for name in missing:
        if name != "figures/report.png":
            print(f"kept docs/figures/{name.removeprefix('figures/')}: no figure for it in {RESULTS}", file=sys.stderr)
    pages = ", ".join(rebuilt) or "no page changed"
    print(f"generated blocks ({pages}) and docs/figures rebuilt from {RESULTS} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
