"""Claims across conditions: cells from `across`, their statistics, the family's Holm adjustment,
scope, shared runs, resuming, --until-decided and the Dask executor."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import HAS_SHARED_DATA, NO_SHARED_DATA, ROOT, SHARED_DATA, bnlab, needs_shared_data, write

from bnlab.claims import ClaimSpec, cells, load_claim_file, scope
from bnlab.claims.stats import holm

# tiny net, two conditions of two values: four cells; depth [20, 20] with lr 1e-3 is the claim's own
ACROSS = """\
name: tinyx
data: {num_train: 200, num_val: 100, num_test: 10}
model: {hidden_dims: [20, 20], weight_scale: 2.0e-2}
solver: {update_rule: adam, optim_config: {learning_rate: 1.0e-3}, batch_size: 50, num_epochs: 2}
seeds: 5
sweep:
  model.normalization: [null, batchnorm]
claims:
  - id: x-train
    statement: Batch norm trains the tiny net faster.
    source: test
    metric: train_acc@1
    key: model.normalization
    a: batchnorm
    b: null
    direction: greater
    across:
      model.hidden_dims: [[20], [20, 20]]
      optimizer:
        - {solver.update_rule: sgd_momentum, solver.optim_config: {learning_rate: 1.0e-2}}
        - {solver.update_rule: adam, solver.optim_config: {learning_rate: 1.0e-3}}
  - id: x-loss
    statement: Batch norm lowers the training loss of the second epoch.
    source: test
    metric: train_loss@2
    key: model.normalization
    a: batchnorm
    b: null
    direction: less
"""


def test_two_conditions_give_four_cells_with_their_overrides():
    claim = ClaimSpec.model_validate(
        {
            "id": "c", "statement": "s", "source": "s", "metric": "best_val_acc", "key": "model.normalization",
            "a": "batchnorm", "b": None, "direction": "greater",
            "across": {"model.hidden_dims": [[20], [20, 20]], "data.num_train": [100, 400]},
        }
    )  # fmt: skip
    got = cells(claim)
    assert [c.where for c in got] == [
        {"model.hidden_dims": [20], "data.num_train": 100},
        {"model.hidden_dims": [20], "data.num_train": 400},
        {"model.hidden_dims": [20, 20], "data.num_train": 100},
        {"model.hidden_dims": [20, 20], "data.num_train": 400},
    ]
    assert got[1].overrides == ("model.hidden_dims=[20]", "data.num_train=400")
    assert got[3].keys == {"model.hidden_dims", "data.num_train"}


def test_a_cell_of_a_claims_file_is_its_experiment_with_the_values_set(tmp_path):
    group = load_claim_file(write(tmp_path, "c.yaml", ACROSS))
    assert group.problem is None
    cell = cells(group.claims[0])[0]
    experiment = group.make(list(cell.overrides))
    config = experiment.runs[0].config
    assert config["model"]["hidden_dims"] == [20]
    assert config["solver"]["update_rule"] == "sgd_momentum"
    assert config["solver"]["optim_config"]["learning_rate"] == 1.0e-2


def test_an_across_cell_that_makes_a_bad_spec_is_reported(tmp_path):
    text = ACROSS.replace("model.hidden_dims: [[20], [20, 20]]", "model.hidden_dim: [[20], [20, 20]]")
    group = load_claim_file(write(tmp_path, "c.yaml", text))
    assert "across cell" in group.problem and "hidden_dim" in group.problem
    text = ACROSS.replace("model.hidden_dims: [[20], [20, 20]]", "model.normalization: [null]")
    assert "cannot vary the compared key" in load_claim_file(write(tmp_path, "d.yaml", text)).problem


@pytest.mark.parametrize(
    ("verdicts", "holds"),
    [
        (["supported", "supported"], "everywhere"),
        (["supported", "contradicted"], "somewhere"),
        (["inconclusive", "contradicted"], "nowhere"),
    ],
)
def test_scope(verdicts, holds):
    got = scope([{"where": {"model.hidden_dims": i}, "verdict_adjusted": v} for i, v in enumerate(verdicts)])
    assert got["holds"] == holds
    assert got["supported"] == [f"hidden_dims={i}" for i, v in enumerate(verdicts) if v == "supported"]
    if holds == "somewhere":
        assert got["text"] == "supported in 1 of 2 cells: hidden_dims=0; contradicted in hidden_dims=1"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    if not HAS_SHARED_DATA:
        pytest.skip(NO_SHARED_DATA)
    root = tmp_path_factory.mktemp("across")
    write(root / "claims", "x.yaml", ACROSS)
    mp = pytest.MonkeyPatch()
    mp.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    result = bnlab("claims", "--dir", root / "claims", "--out", root / "results", "--workers", "2", "--json")
    mp.undo()
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)


CELL_FIELDS = {
    "where", "pairs", "n", "mean_diff", "ci_low", "ci_high", "p_value", "p_sequential", "effect_size",
    "p_adjusted", "verdict", "verdict_adjusted",
}  # fmt: skip


def test_cells_in_json_with_their_statistics(ran):
    root, entries = ran
    train, loss = entries
    assert len(train["cells"]) == 4 and len(loss["cells"]) == 1
    for cell in train["cells"] + loss["cells"]:
        assert CELL_FIELDS <= set(cell) and "experiment" not in cell
        d = np.array([p["a"] - p["b"] for p in cell["pairs"]])
        assert cell["n"] == 5 and cell["mean_diff"] == pytest.approx(d.mean())
        assert cell["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
        assert cell["p_sequential"] == cell["p_value"]  # a fixed number of seeds: one look
    # Holm over the five cells of the family, computed here independently of the lab's order
    family = train["cells"] + loss["cells"]
    assert [c["p_adjusted"] for c in family] == pytest.approx(holm([c["p_sequential"] for c in family]))
    # the cell with the claim's own condition (depth [20, 20], Adam 1e-3) has its top-level numbers
    own = train["cells"][3]
    assert own["pairs"] == train["pairs"] and own["mean_diff"] == train["mean_diff"]
    assert train["scope"]["holds"] in ("everywhere", "somewhere", "nowhere")


def test_a_cell_is_trained_in_its_condition_and_equal_configs_share_runs(ran):
    root, entries = ran
    claims = root / "results" / "claims"
    folders = sorted(p.name for p in claims.iterdir() if p.is_dir() and p.name != "figures")
    # the own condition and its equal cell share `tinyx`; x-loss uses the same runs
    assert folders == [
        "tinyx",
        "tinyx__hidden_dims-20-20__optimizer-sgd-momentum",
        "tinyx__hidden_dims-20__optimizer-adam",
        "tinyx__hidden_dims-20__optimizer-sgd-momentum",
    ]
    assert entries[1]["experiment"] == entries[0]["experiment"] == str(claims / "tinyx")
    run = claims / "tinyx__hidden_dims-20__optimizer-sgd-momentum" / "normalization=batchnorm__seed=0"
    config = (run / "config.yaml").read_text()
    assert "hidden_dims:\n  - 20\n" in config and "update_rule: sgd_momentum" in config
    epochs = (run / "epochs.csv").read_text().splitlines()
    header, first = epochs[0].split(","), [r.split(",") for r in epochs[1:] if r.startswith("1,")][-1]
    cell = entries[0]["cells"][0]
    assert cell["where"] == {"model.hidden_dims": [20], "optimizer": ACROSS_SGD}
    assert cell["pairs"][0]["a"] == pytest.approx(float(first[header.index("train_acc")]))


ACROSS_SGD = {"solver.update_rule": "sgd_momentum", "solver.optim_config": {"learning_rate": 1.0e-2}}


def test_a_rerun_trains_nothing_and_prints_the_adjusted_verdicts(ran, monkeypatch):
    """With no data anywhere: finished claims need none."""
    root, entries = ran
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "empty-cache"))
    claims = root / "results" / "claims"
    before = {p: p.stat().st_mtime_ns for p in claims.glob("*/*/meta.json")}
    result = bnlab("claims", "--dir", root / "claims", "--out", root / "results", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in claims.glob("*/*/meta.json")} == before
    text = " ".join(result.stdout.split())
    assert "Holm" in text and "verdict" in text and "x-train" in text
    assert json.loads((claims / "claims.json").read_text()) == entries
    assert (claims / "figures" / "x-train.png").stat().st_size > 0
    assert not (root / "empty-cache").exists()


def test_list_counts_the_runs_of_every_cell(ran, tmp_path):
    """x-train compares 2 arms x 5 seeds in each of its 4 cells (its own condition is one of them),
    x-loss the 10 runs of its own condition: all finished, and the verdicts are the adjusted ones."""
    root, entries = ran
    result = bnlab("claims", "--list", "--json", "--dir", root / "claims", "--out", root / "results")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert (rows["x-train"]["cells"], rows["x-train"]["runs_needed"], rows["x-train"]["runs_finished"]) == (4, 40, 40)
    assert (rows["x-loss"]["cells"], rows["x-loss"]["runs_needed"], rows["x-loss"]["runs_finished"]) == (1, 10, 10)
    assert rows["x-train"]["verdict"] == entries[0]["scope"]["holds"]
    assert rows["x-loss"]["verdict"] == entries[1]["cells"][0]["verdict_adjusted"]
    # a run of a cell's own folder gone: the cell's claim misses it, the other claim does not
    copy = tmp_path / "results"
    shutil.copytree(root / "results", copy)
    shutil.rmtree(copy / "claims" / "tinyx__hidden_dims-20__optimizer-adam" / "normalization=batchnorm__seed=3")
    result = bnlab("claims", "--list", "--json", "--dir", root / "claims", "--out", copy)
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert (rows["x-train"]["runs_finished"], rows["x-loss"]["runs_finished"]) == (39, 10)


def test_until_decided_adds_seeds_to_inconclusive_cells_only(ran, shared_data):
    root, _ = ran
    result = bnlab(
        "claims", "x-loss", "--dir", root / "claims", "--out", root / "results", "--workers", "2",
        "--until-decided", "--max-seeds", "7", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    (cell,) = entry["cells"]
    assert cell["planned_looks"] == 2  # looks at 5 and 7 seeds
    assert cell["p_sequential"] == pytest.approx(min(1.0, 2 * cell["p_value"]))
    assert cell["looks"] in ([5], [5, 7])
    assert cell["n"] == cell["looks"][-1]
    assert (cell["looks"] == [5, 7]) == (cell["n"] == 7)
    # the top-level fields stay the claim's own condition at its own 5 seeds
    assert entry["n"] == 5
    if cell["verdict_adjusted"] == "inconclusive":
        assert cell["seeds_for_power"] is None or cell["seeds_for_power"] >= 2


def test_claims_on_a_dask_cluster_equal_local_ones(ran, tmp_path, shared_data):
    distributed = pytest.importorskip("distributed", reason="the dask extra is part of the dev install")
    root, entries = ran
    write(tmp_path / "claims", "x.yaml", ACROSS)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env={"PYTHONPATH": os.pathsep.join(sys.path), "BNLAB_DATA_DIR": str(SHARED_DATA)},
    ) as cluster:
        result = bnlab(
            "claims", "x-train", "--dir", tmp_path / "claims", "--out", tmp_path / "results",
            "--executor", "dask", "--scheduler", cluster.scheduler_address, "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    (remote,) = json.loads(result.stdout)
    local = entries[0]
    assert [c["pairs"] for c in remote["cells"]] == [c["pairs"] for c in local["cells"]]
    assert remote["pairs"] == local["pairs"]


def _cell(where, a, b, verdict="supported"):
    pairs = [{"seed": s, "a": a + 0.01 * s, "b": b - 0.01 * s} for s in range(5)]
    return {"where": where, "pairs": pairs, "n": 5, "mean_diff": a - b, "ci_low": a - b - 0.05,
            "ci_high": a - b + 0.05, "p_adjusted": 0.01, "verdict_adjusted": verdict}  # fmt: skip


def test_forest_trend_and_scope_figures(tmp_path):
    from bnlab.figures.claims import forest_figure, plot_claims, scope_figure, trend_figure

    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    verdicts = ["inconclusive", "supported"] * 2
    cells_ = [_cell({"optimizer": {"solver.update_rule": o}, "solver.optim_config.learning_rate": lr},
                    0.3 if lr < 1 else 0.1, 0.3 if lr < 0.1 else 0.1, v)
              for o in ("adam", "sgd_momentum") for lr, v in zip(lrs, verdicts, strict=True)]  # fmt: skip
    entry = {**cells_[1], "id": "lr", "statement": "s", "metric": "best_val_acc", "key": "model.normalization",
             "a": "batchnorm", "b": None, "where": {}, "direction": "greater", "p_value": 0.01,
             "verdict": "supported", "cells": cells_, "scope": scope(cells_)}  # fmt: skip
    forest = forest_figure(entry)
    (ax,) = forest.axes
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "optimizer=adam, learning_rate=0.001"
    trend = trend_figure(entry)
    assert [ax.get_title() for ax in trend.axes] == ["optimizer=adam", "optimizer=sgd_momentum"]
    # the largest learning rate where batch norm's mean accuracy is above 0.15: 0.1 (not 1.0)
    dotted = [line.get_xdata()[0] for line in trend.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert dotted == [0.1, 0.01]
    assert trend_figure({**entry, "cells": cells_[:2]}) is None  # two values are no trend
    assert len(scope_figure([entry, entry]).axes[0].patches) == 16
    write(tmp_path, "claims.json", json.dumps([entry]))
    names = sorted(p.name for p in plot_claims(tmp_path))
    assert names == ["lr-cells.png", "lr-trend.png", "lr.png", "scope.png"]


@needs_shared_data
def test_runs_with_equal_configs_are_trained_once(tmp_path, monkeypatch):
    """A cell that fixes a swept key to one of its values has a different spec but the same runs as
    the claim's own condition: nothing more is trained, and the cell's pairs are those runs'."""
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    text = (
        ACROSS[: ACROSS.index("claims:")]
        .replace("name: tinyx", "name: tinylr")
        .replace("optim_config: {learning_rate: 1.0e-3}, ", "")
        .replace("model.normalization: [null, batchnorm]", "model.normalization: [null, batchnorm]\n"
                 "  solver.optim_config.learning_rate: [1.0e-3, 1.0e-2]")
    ) + """claims:
  - id: lr-bn
    statement: s
    source: s
    metric: best_train_acc
    key: model.normalization
    a: batchnorm
    b: null
    where: {solver.optim_config.learning_rate: 1.0e-2}
    direction: greater
    across:
      solver.optim_config.learning_rate: [1.0e-3, 1.0e-2]
"""  # fmt: skip
    write(tmp_path / "claims", "lr.yaml", text)
    result = bnlab("claims", "--dir", tmp_path / "claims", "--out", tmp_path / "results", "--workers", "2", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)
    claims = tmp_path / "results" / "claims"
    # the own condition needs lr 1e-2 only; the cell at 1e-3 has its own folder, the one at 1e-2 none
    folders = sorted(p.name for p in claims.iterdir() if p.is_dir() and p.name != "figures")
    assert folders == ["tinylr", "tinylr__learning_rate-0.001"]
    assert len(list(claims.glob("*/*/meta.json"))) == 20  # 2 normalizations x 2 rates x 5 seeds, each once
    assert entry["cells"][1]["pairs"] == entry["pairs"]  # lr 1e-2: the claim's own condition
    assert entry["cells"][0]["pairs"] != entry["pairs"]


def test_the_table_says_what_power_would_need_for_an_inconclusive_cell():
    from bnlab.cli.claims import power_note as _power_note

    assert _power_note({"verdict_adjusted": "inconclusive", "seeds_for_power": 34}) == "80% power: ~34 seeds"
    assert _power_note({"verdict_adjusted": "supported", "seeds_for_power": None}) == ""
    assert _power_note({"verdict_adjusted": "inconclusive", "seeds_for_power": None}) == ""  # no effect seen


def test_the_readme_table_leads_with_the_adjusted_verdict(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_tool", ROOT / "tools" / "readme.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    one = {**_cell({}, 0.3, 0.2, "inconclusive"), "seeds_for_power": 34}
    many = [_cell({"data.dataset": d}, 0.3, 0.2, v) for d, v in (("cifar10", "supported"), ("mnist", "contradicted"))]
    base = {"statement": "s", "source": "x", "metric": "best_val_acc", "a": "batchnorm", "b": None, "where": {},
            "mean_diff": 0.1, "ci_low": 0.0, "ci_high": 0.2, "n": 5, "verdict": "supported"}  # fmt: skip
    claims = [{**base, "id": "one", "cells": [one]}, {**base, "id": "many", "cells": many, "scope": scope(many)}]
    write(tmp_path / "claims", "claims.json", json.dumps(claims))
    rows = tool.claims_block(tmp_path).splitlines()
    assert rows[0].startswith("| claim | statement | verdict after Holm (3 cells) | where it holds |")
    assert "| *inconclusive* | 80% power would need ~34 seeds |" in rows[2] and rows[2].endswith("| supported |")
    assert "(docs/figures/claims/many-cells.png)" in rows[3] and "| *somewhere* | supported in 1 of 2 cells" in rows[3]
    assert rows[-1] == "Counts after the adjustment: 1 inconclusive, 1 somewhere."
