"""One self-contained HTML page of results: `bnlab report PATH` writes PATH/report.html.

For a results root it shows every experiment in it, for an experiment's folder that one; reads
results folders only (bnlab.results, the runs' meta.json, claims/claims.json), and draws the figures
with bnlab.plots. Figures are PNG data URIs and the style sheet is inline, with no script: the file
opens offline and can be mailed. Per experiment: description, summary table of the run groups (as
`bnlab results` shows it), every figure with a caption and alt text, diverged, failed and pending
runs, the resolved spec (folded) and provenance. When claims/claims.json exists beside the
experiments, a verdict table of the claims comes first, linked to their figures.
"""

from __future__ import annotations

import base64
import datetime
import io
import math
from html import escape
from pathlib import Path

from matplotlib.figure import Figure

from bnlab.errors import ResultsError
from bnlab.lab.atomic import write_text
from bnlab.lab.formatting import format_number, format_value
from bnlab.lab.results import (
    CLAIMS_FILE,
    ExperimentResults,
    claims_dir,
    experiment_folders,
    group_summary,
    load_experiment,
    read_claims,
    read_meta,
)
from bnlab.numerics import describe_differences, numerics_summary, provenance_differences
from bnlab.plots import caption, drawn_figures

REPORT_NAME = "report.html"
FIGURE_DPI = 100  # the widest figure (11 in) is then 1100 px: sharp on a laptop, scaled down on a phone

STYLE = """
:root { --fg: #1d2330; --muted: #5b6472; --line: #d8dce3; --bg-soft: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 1rem 1.25rem 3rem; color: var(--fg);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.7rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.5rem; padding-top: 0.75rem; border-top: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 0.5rem; }
p.meta, figcaption, .note { color: var(--muted); }
code { overflow-wrap: anywhere; }  /* long paths break rather than widen the page */
nav ul { padding-left: 1.2rem; margin: 0.25rem 0; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.92rem; }
th, td { padding: 0.35rem 0.7rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--bg-soft); white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
table.summary td { white-space: nowrap; }
table.claims td:first-child { min-width: 15rem; }
figure { margin: 1.25rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 0.92rem; margin-top: 0.4rem; }
figcaption b { color: var(--fg); }
.flag { border-left: 4px solid #c77700; background: #fff7e6; padding: 0.5rem 0.8rem; margin: 0.75rem 0; }
.flag.error { border-color: #b3261e; background: #fdecea; }
.verdict { font-weight: 600; white-space: nowrap; }
.verdict.supported { color: #1b7f3b; } .verdict.contradicted { color: #b3261e; }
.verdict.inconclusive { color: #8a6d00; }
details { margin: 0.75rem 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: var(--bg-soft); padding: 0.75rem; overflow-x: auto; font-size: 0.85rem; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0.5rem 0; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 640px) {
  body { font-size: 15px; padding: 0.75rem 0.75rem 2rem; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1.2rem; }
  dl.provenance { grid-template-columns: 1fr; } dl.provenance dd { margin-bottom: 0.4rem; }
}
"""


def write_report(path: str | Path) -> tuple[Path, list[str]]:
    """Writes <path>/report.html (atomically) for the results root or experiment folder `path`.
    Returns the file and the problems met (an experiment or claims file that could not be read:
    the page says so in its place, and the rest is reported)."""
    path = Path(path)
    html, problems = build_report(path)
    file = path / REPORT_NAME
    try:
        write_text(file, html)
    except OSError as err:
        raise ResultsError(f"{file}: cannot be written ({err.strerror}); make {path} writable for you.") from None
    return file, problems


def build_report(path: Path) -> tuple[str, list[str]]:
    """The page's HTML and the problems met (see write_report)."""
    folders = experiment_folders(path)
    single = folders == [path]
    problems: list[str] = []
    claims_html = _claims_section(path.parent if single else path, path.name if single else None, problems)
    sections = [_experiment_section(folder, problems) for folder in folders]
    title = f"bnlab report: {path.name if single else 'results'}"
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = '<li><a href="#claims">claims</a></li>' if claims_html else ""
    nav += "".join(f'<li><a href="#{_anchor(f.name)}">{escape(f.name)}</a></li>' for f in folders)
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="meta">{len(folders)} experiment{"s" if len(folders) != 1 else ""} in '
        f"<code>{escape(str(path))}</code>; written {generated} by <code>bnlab report</code>.</p>",
        f"<nav><ul>{nav}</ul></nav></header>",
        claims_html,
        *sections,
        "</body></html>",
    ]
    return "\n".join(page) + "\n", problems


# --- experiments -----------------------------------------------------------------------------------


def _experiment_section(folder: Path, problems: list[str]) -> str:
    head = f'<section id="{_anchor(folder.name)}" class="experiment"><h2>{escape(folder.name)}</h2>'
    try:
        results = load_experiment(folder)
        header, rows = group_summary(folder)
    except ResultsError as err:
        problems.append(str(err))
        return f'{head}<p class="flag error">Could not be read: {escape(str(err))}</p></section>'
    parts = [head]
    if results.spec.get("description"):
        parts.append(f"<p>{escape(str(results.spec['description']))}</p>")
    parts.append(_flags(results))
    parts.append('<h3>Summary</h3><p class="note">Mean ± std over seeds of each run group.</p>')
    parts.append(_table(header, rows, numeric_from=len(header) - 3))
    parts.append(_figures(results, problems))
    spec_text = (folder / "spec.yaml").read_text(errors="replace")
    parts.append(f"<details><summary>Resolved spec (spec.yaml)</summary><pre>{escape(spec_text)}</pre></details>")
    parts.append(_provenance(results))
    parts.append("</section>")
    return "\n".join(parts)


def _flags(results: ExperimentResults) -> str:
    """A warning box listing the runs that are not done: diverged, failed, pending."""
    runs = results.runs
    odd = runs[runs["status"] != "done"]
    if odd.empty:
        return f'<p class="note">All {len(runs)} runs finished.</p>'
    items = []
    for run_id, status in zip(odd["run_id"], odd["status"], strict=True):
        if status == "diverged":
            losses = results.history[results.history["run_id"] == run_id]
            where = f" at iteration {int(losses['iteration'].iloc[-1])}" if len(losses) else ""
            note = f"the loss became nan or inf{where}; its curves stop there"
        elif status == "failed":
            error = read_meta(results.path / run_id).get("error") or ""
            note = f"{error.strip().splitlines()[-1]} (not drawn)" if error.strip() else "no error recorded (not drawn)"
        else:
            note = "not run yet (not drawn)"
        items.append(f"<li><code>{escape(run_id)}</code>: <b>{escape(status)}</b>, {escape(note)}</li>")
    counts = ", ".join(f"{n} {s}" for s, n in odd["status"].value_counts(sort=False).items())
    head = f"<b>{len(odd)} of {len(runs)} runs not done ({counts}):</b>"
    return f'<div class="flag">{head}<ul>{"".join(items)}</ul></div>'


def _figures(results: ExperimentResults, problems: list[str]) -> str:
    try:
        figures = drawn_figures(results)
    except ResultsError as err:  # nothing finished yet (the flags say why), or a bad plots entry: a problem
        if results.runs["status"].isin(["done", "diverged"]).any():
            problems.append(str(err))
        return f'<h3>Figures</h3><p class="flag">No figures: {escape(str(err))}</p>'
    parts = ["<h3>Figures</h3>"]
    for stem, fig, plot in figures:
        title, _, notes = fig.get_suptitle().partition("\n")
        what = caption(plot)
        notes = f"Shown: {notes.strip('()')}." if notes else ""
        text = f"<b>{escape(title)}.</b> {escape(what)} {escape(notes)}".strip()
        parts.append(
            f'<figure id="{_anchor(results.path.name + "-" + stem)}">'
            f'<img src="{_png(fig)}" alt="{escape(_alt_text(fig, title), quote=True)}" '
            f'width="{round(fig.get_figwidth() * FIGURE_DPI)}" height="{round(fig.get_figheight() * FIGURE_DPI)}">'
            f"<figcaption>{text}</figcaption></figure>"
        )
    return "\n".join(parts)


def _alt_text(fig: Figure, title: str) -> str:
    """What a reader who cannot see the figure needs: its title, its panels and its lines."""
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    lines = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    text = f"Line charts: {title}."
    if panels:
        text += f" Panels: {'; '.join(panels)}."
    if lines:
        text += f" Lines: {'; '.join(lines)}."
    return text


def _provenance(results: ExperimentResults) -> str:
    """Commit, versions, dates and wall time, from the runs' meta.json and runs.csv."""
    metas = [read_meta(results.path / r) for r in results.runs.loc[results.runs["status"] != "pending", "run_id"]]
    commits = sorted({m["git_commit"] for m in metas if m.get("git_commit")})
    versions = sorted(
        {", ".join(f"{k} {v}" for k, v in m["versions"].items()) for m in metas if isinstance(m.get("versions"), dict)}
    )
    started = sorted(filter(None, (_utc(m.get("started")) for m in metas)))
    wall = results.runs["wall_s"][results.runs["wall_s"].notna()]
    memory = [m["peak_rss_mb"] for m in metas if isinstance(m.get("peak_rss_mb"), (int, float))]
    rows = {
        "commit": "; ".join(commits) or "unknown",
        "versions": "; ".join(versions) or "unknown",
        "date": " to ".join(dict.fromkeys([started[0], started[-1]])) if started else "unknown",
        "wall time": f"{wall.sum():.3g} s over {len(wall)} runs (sum of the runs' times; longest {wall.max():.3g} s)"
        if len(wall)
        else "unknown",
    }
    if memory:
        rows["peak memory"] = f"{max(memory):.0f} MB (largest run)"
    rows["numerics"] = numerics_summary(metas)
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows.items())
    differing = provenance_differences(metas)
    if differing:
        text = f"the runs differ in provenance: {describe_differences(differing)}"
        items += f'<dt>differs</dt><dd class="flag">{escape(text)}</dd>'
    return f'<h3>Provenance</h3><dl class="provenance">{items}</dl>'


def _utc(stamp: object) -> str | None:
    """meta.json's start time (ISO 8601 with offset) as 'YYYY-MM-DD HH:MM UTC'; None if it is not one."""
    try:
        moment = datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- claims ----------------------------------------------------------------------------------------


def _claims_section(root: Path, experiment: str | None, problems: list[str]) -> str:
    """The verdict table of root/claims/claims.json (only the claims on `experiment` if given),
    then each claim's figure; "" when there is no claims file."""
    if not (claims_dir(root) / CLAIMS_FILE).is_file():
        return ""
    try:
        claims = read_claims(claims_dir(root))
    except ResultsError as err:
        problem = str(err)
        problems.append(problem)
        return f'<section id="claims"><h2>Claims</h2><p class="flag error">{escape(problem)}</p></section>'
    if experiment is not None:
        claims = [c for c in claims if Path(str(c.get("experiment", ""))).name == experiment]
        if not claims:
            return ""
    rows, figures = [], []
    for claim in claims:
        anchor = _anchor(f"claim-{claim['id']}")
        figure = claims_dir(root) / "figures" / f"{claim['id']}.png"
        statement = escape(str(claim.get("statement", claim["id"])))
        if figure.is_file():
            statement = f'<a href="#{anchor}">{statement}</a>'
            alt = f"Claim figure: {claim.get('statement', claim['id'])}"
            figures.append(
                f'<figure id="{anchor}"><img src="{_data_uri(figure.read_bytes())}" alt="{escape(alt, quote=True)}">'
                f"<figcaption><code>{escape(str(claim['id']))}</code>: "
                f"<b>{escape(str(claim.get('statement', claim['id'])))}</b> "
                f"({escape(str(claim.get('source', '')))}): {escape(_comparison(claim))}; verdict "
                f"{escape(str(claim.get('verdict', '?')))}.</figcaption></figure>"
            )
        verdict = str(claim.get("verdict", "?"))
        rows.append(
            # the id first: what `bnlab claims ID` and claims.json call the claim
            f"<tr><td><code>{escape(str(claim['id']))}</code><br>{statement}"
            f"<br><small>{escape(_comparison(claim))}</small></td>"
            f'<td class="verdict {escape(verdict, quote=True)}">{escape(verdict)}</td>'
            f'<td class="num">{escape(_effect(claim))}</td><td class="num">{escape(str(claim.get("n", "")))}</td>'
            f"<td>{escape(str(claim.get('source', '')))}</td></tr>"
        )
    # the verdict right after the claim: on a phone the table scrolls, and those two are seen first
    head = "".join(f"<th>{h}</th>" for h in ("claim", "verdict", "effect [95% interval]", "n", "source"))
    return (
        '<section id="claims"><h2>Claims</h2><p class="note">Each claim compares two settings a and b of one '
        "experiment over paired seeds (from claims/claims.json); the effect is the mean over the n seeds of "
        "the metric's difference a − b; <code>bnlab claims ID</code> reruns one.</p>"
        f'<div class="scroll"><table class="claims"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        + ("<h3>Figures</h3>" if figures else "")
        + "".join(figures)
        + "</section>"
    )


def _comparison(claim: dict) -> str:
    where = ", ".join(f"{k} = {format_value(v)}" for k, v in (claim.get("where") or {}).items())
    a, b = format_value(claim.get("a")), format_value(claim.get("b"))
    text = f"{claim.get('metric', '?')}: {claim.get('key', '?')} = {a} (a) vs {b} (b)"
    return text + (f" ({where})" if where else "") + f", expected {claim.get('direction', '?')}"


def _effect(claim: dict) -> str:
    def number(key: str) -> str:
        value = claim.get(key)
        return format_number(value, sign=True) if isinstance(value, (int, float)) and math.isfinite(value) else "?"

    return f"{number('mean_diff')} [{number('ci_low')}, {number('ci_high')}]"


# --- HTML pieces -----------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], numeric_from: int) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{escape(cell)}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    table = f'<table class="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return _data_uri(buffer.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _anchor(text: str) -> str:
    """An id usable in a URL fragment: run ids hold '=' and dots."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
