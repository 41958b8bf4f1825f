"""bnlab.report: the one-page HTML report of a results root or an experiment, read as HTML here and
rendered in a real browser (headless Chromium) at the end, when one is installed."""

from __future__ import annotations

import base64
import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_results import _sweep_runs, write_results_folder

from bnlab.errors import ResultsError
from bnlab.report import build_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLAIM = {
    "id": "bn_faster",
    "statement": "Batch norm trains faster",
    "source": "Ioffe & Szegedy 2015",
    "experiment": "results/a_sweep",
    "metric": "best_train_acc",
    "key": "model.normalization",
    "a": "batchnorm",
    "b": None,
    "where": {"model.weight_scale": 0.1},
    "direction": "greater",
    "pairs": [{"seed": 0, "a": 0.5, "b": 0.4}, {"seed": 1, "a": 0.6, "b": 0.45}],
    "mean_diff": 0.125,
    "ci_low": 0.031,
    "ci_high": 0.219,
    "p_value": 0.04,
    "verdict": "supported",
    "n": 2,
}


class Page(HTMLParser):
    """The parts of a page the tests look at: tags with their attributes, ids, text per tag."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[tuple[str, str]] = []  # (innermost open tag, text)
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br"):
            self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data):
        if data.strip():
            self.text.append((self._open[-1] if self._open else "", data.strip()))

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]

    def texts(self, tag: str) -> list[str]:
        return [text for t, text in self.text if t == tag]


@pytest.fixture
def root(tmp_path) -> Path:
    """A results root: a sweep with a diverged, a failed and a pending run, and a one-run experiment."""
    runs = _sweep_runs()
    runs[5]["status"] = "failed"
    spec = {"name": "a_sweep", "description": "Batch norm vs none at two weight scales.", "seeds": [0, 1]}
    sweep = write_results_folder(tmp_path / "results" / "a_sweep", runs, spec=spec)
    (sweep / "run005").mkdir()
    (sweep / "run005" / "meta.json").write_text(
        json.dumps({"status": "failed", "error": "Traceback ...\nMemoryError: out of memory\n"})
    )
    meta = {"status": "done", "started": "2026-11-20T10:15:00+0100", "git_commit": "abc123", "versions": {"numpy": "2"}}
    single = write_results_folder(tmp_path / "results" / "b_single", [{"seed": 0, "quality": 0.9}])
    (single / "run000" / "meta.json").write_text(json.dumps(meta))
    return tmp_path / "results"


def _claims(root: Path, claims: list[dict], figure: bool = True) -> None:
    (root / "claims" / "figures").mkdir(parents=True)
    (root / "claims" / "claims.json").write_text(json.dumps(claims))
    if figure:
        from matplotlib.figure import Figure

        Figure(figsize=(2, 1)).savefig(root / "claims" / "figures" / f"{claims[0]['id']}.png")


def _sections(page: Page) -> list[str]:
    return [attrs["id"] for attrs in page.all("section")]


def test_a_root_report_has_every_experiment_with_its_tables_figures_and_flags(root):
    file, problems = write_report(root)
    assert file == root / "report.html" and problems == []
    html = file.read_text()
    page = Page(html)

    assert _sections(page) == ["a_sweep", "b_single"]
    assert "Batch norm vs none at two weight scales." in page.texts("p")
    # The summary table: mean +- std (n - 1) over the seeds of each group, computed here from the curves'
    # numbers in runs.csv; the group none/0.001 has seeds 0 and 1 done.
    runs = (root / "a_sweep" / "runs.csv").read_text().splitlines()
    cells = [line.split(",") for line in runs[1:3]]
    accs = [float(c[5]) for c in cells]  # run_id, status, 2 swept keys, seed, best_val_acc
    assert f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}" in page.texts("td")
    assert page.texts("th")[:6] == [
        "normalization",
        "weight_scale",
        "runs",
        "best val acc",
        "best train acc",
        "final train loss",
    ]
    assert "1 done, 1 diverged" in page.texts("td")  # none at 0.1: seed 1 diverged
    # Diverged, failed and pending runs are named, with what happened to them.
    flags = " ".join(page.texts("li") + page.texts("b"))
    assert "3 of 8 runs not done (1 diverged, 1 failed, 1 pending)" in flags
    assert "the loss became nan or inf at iteration 47" in flags
    assert "MemoryError: out of memory" in flags
    assert "not run yet" in flags

    figures = page.all("img")
    assert len(figures) == 2  # a history figure each (two weight scales are too few for a sweep figure)
    for img in figures:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(PNG_SIGNATURE)
        assert img["alt"].startswith("Line charts: ") and "Training accuracy" in img["alt"]
        assert int(img["width"]) > 0 and int(img["height"]) > 0
    assert "Lines: none, weight scale 0.001" in figures[0]["alt"]
    captions = page.texts("figcaption")
    assert len(page.all("figure")) == 2 and any("Training loss per iteration" in c for c in captions)

    assert page.texts("summary") == ["Resolved spec (spec.yaml)"] * 2
    assert "description: Batch norm vs none at two weight scales." in page.texts("pre")[0]
    provenance = dict(zip(page.texts("dt"), page.texts("dd"), strict=True))  # the last experiment's
    assert provenance["commit"] == "abc123" and provenance["versions"] == "numpy 2"
    assert provenance["date"] == "2026-11-20 09:15 UTC"  # 10:15 at +01:00
    assert provenance["wall time"].startswith("1.5 s over 1 runs")
    assert "claims" not in _sections(page)


def test_the_report_stands_alone(root):
    _claims(root, [CLAIM])
    html, _ = build_report(root)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script|<link|<iframe|@import|url\(", html, re.IGNORECASE)
    for attrs in Page(html).tags:
        for name in ("src", "href"):
            assert attrs[1].get(name, "#").startswith(("#", "data:image/png;base64,")), attrs


def test_claims_come_first_with_verdict_effect_and_their_figure(root):
    _claims(root, [CLAIM, {**CLAIM, "id": "other", "verdict": "contradicted", "experiment": "results/b_single"}])
    page = Page(build_report(root)[0])
    assert _sections(page) == ["claims", "a_sweep", "b_single"]
    texts = page.texts("td")
    # a claims.json written before cells existed: no adjusted verdict to show
    assert texts[:5] == ["not adjusted", "+0.125 [+0.031, +0.219]", "2", "supported", "Ioffe & Szegedy 2015"]
    assert "contradicted" in texts
    assert [a["href"] for a in page.all("a")[:3]] == ["#claims", "#a_sweep", "#b_single"]  # contents
    link = page.all("a")[3]
    assert link["href"] == "#claim-bn_faster" and page.texts("a")[3] == "Batch norm trains faster"
    (figure,) = [f for f in page.all("figure") if f.get("id") == "claim-bn_faster"]
    assert len(page.all("img")) == 3 and page.all("img")[0]["alt"] == "Claim figure: Batch norm trains faster"
    assert figure  # the link's target exists


def test_claims_lead_with_the_adjusted_verdict_and_the_scope(root):
    cell = {"where": {"model.hidden_dims": [20]}, "mean_diff": 0.1, "ci_low": 0.0, "ci_high": 0.2, "n": 5,
            "p_value": 0.04, "p_sequential": 0.04, "p_adjusted": 0.08, "verdict_adjusted": "inconclusive"}  # fmt: skip
    scope = {"holds": "somewhere", "text": "supported in 1 of 2 cells: hidden_dims=[20, 20]"}
    cells = [cell, {**cell, "where": {"model.hidden_dims": [20, 20]}, "verdict_adjusted": "supported"}]
    single = {**cell, "where": {}, "verdict_adjusted": "contradicted"}
    _claims(root, [{**CLAIM, "cells": cells, "scope": scope}, {**CLAIM, "id": "one", "cells": [single]}])
    page = Page(build_report(root)[0])
    texts = page.texts("td")
    assert texts[:2] == ["somewhere", "supported in 1 of 2 cells: hidden_dims=[20, 20]"]
    at = texts.index("contradicted")  # one cell: its adjusted verdict, then (no scope) the effect
    assert texts[at + 1] == "+0.125 [+0.031, +0.219]"
    assert "Holm's method" in " ".join(page.texts("p"))


def test_every_value_is_shown_as_text_never_as_markup(root):
    statement = 'Norm <i>helps</i> & "it" <script>alert(1)</script>'
    _claims(root, [{**CLAIM, "statement": statement, "source": "<i>Ioffe</i>"}])
    page = Page(build_report(root)[0])
    assert statement in page.texts("a") and "<i>Ioffe</i>" in page.texts("td")
    assert page.all("img")[0]["alt"] == f"Claim figure: {statement}"
    assert not {"i", "script"} & {tag for tag, _ in page.tags}


def test_one_experiments_report_shows_that_one_and_its_claims(root):
    _claims(root, [CLAIM, {**CLAIM, "id": "other", "statement": "Other claim", "experiment": "results/b_single"}])
    file, problems = write_report(root / "a_sweep")
    assert file == root / "a_sweep" / "report.html" and problems == []
    page = Page(file.read_text())
    assert _sections(page) == ["claims", "a_sweep"]
    assert "Batch norm trains faster" in page.texts("a") and "Other claim" not in " ".join(page.texts("a"))


def test_unreadable_parts_are_reported_and_the_rest_is_shown(root):
    (root / "b_single" / "runs.csv").write_text("run_id,seed\nx,0\n")
    (root / "claims").mkdir()
    (root / "claims" / "claims.json").write_text("{not json")
    file, problems = write_report(root)
    assert len(problems) == 2
    assert "claims.json: not readable claims" in problems[0]  # in the order of the page
    assert "b_single/runs.csv: missing column(s) status" in problems[1]
    page = Page(file.read_text())
    assert _sections(page) == ["claims", "a_sweep", "b_single"] and len(page.all("img")) == 1


def test_an_experiment_with_nothing_finished_says_so(tmp_path):
    write_results_folder(tmp_path / "waiting", [{"seed": 0, "status": "pending"}])
    html, problems = build_report(tmp_path)
    page = Page(html)
    assert page.all("img") == [] and any("no finished runs to plot yet" in t for t in page.texts("p"))
    assert problems == []  # not run yet is a state, not a problem


def test_a_bad_plots_entry_is_a_problem(tmp_path):
    spec = {"name": "bad", "plots": [{"kind": "sweep", "x": "model.nope"}]}
    write_results_folder(tmp_path / "bad", [{"seed": 0}], spec=spec, num_epochs=1, iterations_per_epoch=5)
    html, problems = build_report(tmp_path)
    assert len(problems) == 1 and "spec.yaml: plots[0]: x is 'model.nope'" in problems[0]
    assert Page(html).all("img") == []


def test_a_report_that_cannot_be_written(root):
    (root / "report.html").mkdir()  # as root, permissions would not stop the write: a folder in the way does
    with pytest.raises(ResultsError, match="report.html: cannot be written"):
        write_report(root)


def test_not_a_results_folder(tmp_path):
    with pytest.raises(ResultsError, match="no experiments here"):
        write_report(tmp_path)
    with pytest.raises(ResultsError, match="no such results folder"):
        write_report(tmp_path / "nowhere")


# --- in a real browser -----------------------------------------------------------------------------

CHROMIUM = next(filter(None, map(shutil.which, ("chromium-headless-shell", "chromium", "chromium-browser"))), None)

# Appended to a copy of the report (the report itself has no script): once the page has loaded,
# it writes what the browser made of the page into the DOM, which --dump-dom prints.
CHECKER = """<script>
window.addEventListener("load", () => {
  const images = [...document.querySelectorAll("img")].map(img => ({alt: img.alt, complete: img.complete,
    naturalWidth: img.naturalWidth, shownWidth: img.getBoundingClientRect().width}));
  const svgs = [...document.querySelectorAll("svg")].map(svg => ({shownWidth: svg.getBoundingClientRect().width}));
  const sections = [...document.querySelectorAll("section")].map(s => s.id);
  const overflowing = [...document.body.querySelectorAll("*")]  // tables may: they scroll in their box
    .filter(e => e.getBoundingClientRect().right > window.innerWidth && !e.closest(".scroll"))
    .map(e => e.tagName + ": " + e.textContent.slice(0, 80));
  const result = {images, svgs, sections, overflowing, innerWidth: window.innerWidth,
                  scrollWidth: document.documentElement.scrollWidth};
  const out = document.createElement("pre");
  out.id = "checked";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def _render(page: Path, width: int, tmp_path: Path) -> dict:
    """Loads `page` with the checker in headless Chromium at a window `width` px wide."""
    checked = page.with_name("checked.html")
    checked.write_text(page.read_text().replace("</body>", CHECKER + "</body>"))
    command = [
        CHROMIUM,
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"),
        *("--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars"),
        f"--user-data-dir={tmp_path / f'profile{width}'}",
        f"--window-size={width},900",
        "--virtual-time-budget=10000",  # the load event has fired by then: images are decoded
        "--dump-dom",
        checked.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="checked">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (.ci/run installs chromium-headless-shell)")
@pytest.mark.parametrize("width", [1280, 390])  # a laptop, a phone
def test_in_a_browser_every_figure_loads_and_both_experiments_are_there(root, tmp_path, width):
    _claims(root, [CLAIM])
    file, _ = write_report(root)
    shown = _render(file, width, tmp_path)
    assert shown["sections"] == ["claims", "a_sweep", "b_single"]
    assert len(shown["images"]) == 3  # two experiment figures, one claim figure
    for image in shown["images"] + shown["svgs"]:
        assert image.get("complete", True) and image.get("naturalWidth", 1) > 0, image
        assert 0 < image["shownWidth"] <= width, image
    assert shown["overflowing"] == []  # the page fits the window: only tables scroll sideways, in their box
    assert shown["scrollWidth"] <= shown["innerWidth"]
