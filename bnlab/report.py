"""One self-contained HTML page of results: `bnlab report PATH` writes PATH/report.html.

For a results root it shows every experiment in it, for an experiment's folder that one; reads
results folders only (bnlab.results, the runs' meta.json, claims/claims.json), and draws the figures
with bnlab.figures. Figures are PNG data URIs and the style sheet is inline, with no script: the file
opens offline and can be mailed. Per experiment: description, summary table of the run groups (as
`bnlab results` shows it), every figure with a caption and alt text, diverged, failed and pending
runs, the resolved spec (folded) and provenance. When claims/claims.json exists beside the
experiments, a verdict table of the claims comes first, linked to their figures.

This module gathers the page's data as plain dicts, lists and strings; the markup is the Jinja2
template templates/report.html.j2, which autoescapes every value it is given.
"""

from __future__ import annotations

import base64
import datetime
import io
import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from matplotlib.figure import Figure

from bnlab.claims.stats import holm_sentence
from bnlab.errors import ResultsError
from bnlab.figures.experiment import caption, drawn_figures
from bnlab.lab.atomic import write_text
from bnlab.lab.formatting import format_number, format_value
from bnlab.lab.results import (
    CLAIMS_FILE,
    ExperimentResults,
    claims_dir,
    experiment_folders,
    group_summary,
    load_experiment,
    provenance_note,
    read_claims,
    read_meta,
)
from bnlab.numerics import numerics_summary

REPORT_NAME = "report.html"
FIGURE_DPI = 100  # the widest figure (11 in) is then 1100 px: sharp on a laptop, scaled down on a phone

# The page's markup: templates/report.html.j2 (with its inline style sheet), shipped as package data.
TEMPLATES = Environment(
    loader=PackageLoader("bnlab", "templates"),
    autoescape=True,  # every value is text, never markup
    undefined=StrictUndefined,  # a misspelt name in the template fails instead of printing nothing
    trim_blocks=True,
    lstrip_blocks=True,
)


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
    claims = _claims(path.parent if single else path, path.name if single else None, problems)
    html = TEMPLATES.get_template("report.html.j2").render(
        title=f"bnlab report: {path.name if single else 'results'}",
        path=str(path),
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        claims=claims,
        experiments=[_experiment(folder, problems) for folder in folders],
    )
    return html, problems


# --- experiments -----------------------------------------------------------------------------------


def _experiment(folder: Path, problems: list[str]) -> dict:
    """What the page shows of one experiment; {"error": ...} instead when it cannot be read."""
    shown = {"name": folder.name, "anchor": _anchor(folder.name), "error": None}
    try:
        results = load_experiment(folder)
        header, rows = group_summary(folder)
    except ResultsError as err:
        problems.append(str(err))
        return {**shown, "error": str(err)}
    figures, no_figures = _figures(results, problems)
    not_done, not_done_counts = _not_done(results)
    metas = [read_meta(results.path / r) for r in results.runs.loc[results.runs["status"] != "pending", "run_id"]]
    return {
        **shown,
        "description": str(results.spec.get("description") or ""),
        "runs": len(results.runs),
        "not_done": not_done,
        "not_done_counts": not_done_counts,
        "header": header,
        "rows": rows,
        "numeric_from": len(header) - 3,  # the metrics' columns: mean ± std
        "figures": figures,
        "no_figures": no_figures,
        "spec": (folder / "spec.yaml").read_text(errors="replace"),
        "provenance": _provenance(results, metas),
        "provenance_note": provenance_note(folder),
    }


def _not_done(results: ExperimentResults) -> tuple[list[dict], str]:
    """The runs that are not done (diverged, failed, pending), each with what happened to it, and
    how many there are of each status ("1 diverged, 1 failed")."""
    runs = results.runs
    odd = runs[runs["status"] != "done"]
    shown = []
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
        shown.append({"run_id": run_id, "status": status, "note": note})
    return shown, ", ".join(f"{n} {s}" for s, n in odd["status"].value_counts(sort=False).items())


def _figures(results: ExperimentResults, problems: list[str]) -> tuple[list[dict], str | None]:
    """The experiment's figures (image, alt text, caption), or none and why."""
    try:
        figures = drawn_figures(results)
    except ResultsError as err:  # nothing finished yet (the flags say why), or a bad plots entry: a problem
        if results.runs["status"].isin(["done", "diverged"]).any():
            problems.append(str(err))
        return [], str(err)
    shown = []
    for stem, fig, plot in figures:
        title, _, notes = fig.get_suptitle().partition("\n")
        notes = f"Shown: {notes.strip('()')}." if notes else ""
        shown.append(
            {
                "anchor": _anchor(results.path.name + "-" + stem),
                "src": _png(fig),
                "alt": _alt_text(fig, title),
                "width": round(fig.get_figwidth() * FIGURE_DPI),
                "height": round(fig.get_figheight() * FIGURE_DPI),
                "title": title,
                "caption": f"{caption(plot)} {notes}".strip(),
            }
        )
    return shown, None


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


def _provenance(results: ExperimentResults, metas: list[dict]) -> dict[str, str]:
    """Commit, versions, dates and wall time, from the runs' meta.json (`metas`) and runs.csv."""
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
    return rows


def _utc(stamp: object) -> str | None:
    """meta.json's start time (ISO 8601 with offset) as 'YYYY-MM-DD HH:MM UTC'; None if it is not one."""
    try:
        moment = datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- claims ----------------------------------------------------------------------------------------


def _claims(root: Path, experiment: str | None, problems: list[str]) -> dict | None:
    """The verdict table of root/claims/claims.json (only the claims on `experiment` if given) and
    each claim's figures; None when there is nothing to show, {"error": ...} when it cannot be read."""
    if not (claims_dir(root) / CLAIMS_FILE).is_file():
        return None
    try:
        claims = read_claims(claims_dir(root))
    except ResultsError as err:
        problems.append(str(err))
        return {"error": str(err)}
    if experiment is not None:
        claims = [c for c in claims if Path(str(c.get("experiment", ""))).name == experiment]
        if not claims:
            return None
    figures = claims_dir(root) / "figures"
    rows = []
    for claim in claims:
        verdict, adjusted, scope = _adjusted(claim)
        rows.append(
            {
                "id": str(claim["id"]),
                "anchor": _anchor(f"claim-{claim['id']}"),
                "statement": str(claim.get("statement", claim["id"])),
                "comparison": _comparison(claim),
                "verdict": verdict,
                "adjusted": adjusted,
                "scope": scope,
                "effect": _effect(claim),
                "n": str(claim.get("n", "")),
                "source": str(claim.get("source", "")),
                "figure": _image(figures / f"{claim['id']}.png"),
                "forest": _image(figures / f"{claim['id']}-cells.png"),
            }
        )
    cells = sum(len(c.get("cells") or []) for c in claims)
    return {
        "error": None,
        "rows": rows,
        "holm": holm_sentence(cells) if cells else "",
        "overview": _image(figures / "scope.png") if experiment is None else None,
    }


def _adjusted(claim: dict) -> tuple[str, str, str]:
    """(unadjusted verdict, adjusted verdict or where it holds, scope in words) of a claims.json
    entry; a file written before cells existed has no adjustment ("not adjusted")."""
    verdict = str(claim.get("verdict", "?"))
    cells, scope = claim.get("cells") or [], claim.get("scope") or {}
    if len(cells) == 1:
        return verdict, str(cells[0].get("verdict_adjusted", "?")), ""
    return verdict, str(scope.get("holds", "not adjusted")), str(scope.get("text", ""))


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


# --- images ----------------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return _data_uri(buffer.getvalue())


def _image(file: Path) -> str | None:
    """The PNG `file` as a data URI; None when there is no such file."""
    return _data_uri(file.read_bytes()) if file.is_file() else None


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _anchor(text: str) -> str:
    """An id usable in a URL fragment: run ids hold '=' and dots."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
