"""The claims lab: the statistics against a textbook case, the verdict rule at its edges, claim
files and their messages, metrics, the JSON contract, resuming, and `bnlab claims` itself."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import ROOT, SHARED_DATA, bnlab, read_csv, write

from bnlab.claims import load_claim_file, load_claims, metric_values
from bnlab.claims.stats import paired_t, verdict
from bnlab.errors import SpecError
from bnlab.results import load_experiment

FIELDS = [
    "id", "statement", "source", "experiment", "metric", "key", "a", "b", "where", "direction",
    "pairs", "mean_diff", "ci_low", "ci_high", "p_value", "verdict", "n",
]  # fmt: skip

# A seconds-long experiment: 3-layer net, 200 images, 2 epochs, 5 seeds, batch norm vs none.
TINY = """\
name: tiny
data: {num_train: 200, num_val: 100, num_test: 10}
model: {hidden_dims: [20, 20], weight_scale: 2.0e-2}
solver: {update_rule: adam, optim_config: {learning_rate: 1.0e-3}, batch_size: 50, num_epochs: 2}
seeds: 5
sweep:
  model.normalization: [null, batchnorm]
claims:
  - id: tiny-train
    statement: Batch norm trains the tiny net faster.
    source: 000, Batchnorm for deep networks
    metric: train_acc@1
    key: model.normalization
    a: batchnorm
    b: null
    direction: greater
  - id: tiny-loss
    statement: Batch norm lowers the training loss of the second epoch.
    source: 000, Batchnorm for deep networks
    metric: train_loss@2
    key: model.normalization
    a: batchnorm
    b: null
    direction: less
"""


pytestmark = pytest.mark.usefixtures("shared_data")  # without the data every test here skips, saying so


# --- statistics ----------------------------------------------------------------------------------


def test_paired_t_on_students_sleep_data():
    # Student (1908) / Cushny & Peebles: extra hours of sleep of 10 patients under two drugs.
    # R's t.test(extra ~ group, data = sleep, paired = TRUE) prints t = -4.0621, df = 9,
    # p-value = 0.002833, 95 percent CI -2.4598858 -0.7001142, mean difference -1.58 (group 1 - 2).
    drug1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    t = paired_t(drug2, drug1)
    assert t.n == 10
    assert t.mean_diff == pytest.approx(1.58)
    assert t.ci_low == pytest.approx(0.7001142, abs=1e-7)
    assert t.ci_high == pytest.approx(2.4598858, abs=1e-7)
    assert t.p_value == pytest.approx(0.002833, abs=5e-7)


def test_paired_t_by_hand_with_two_pairs():
    # differences 1 and 3: mean 2, sd sqrt(2), se 1; t(1) quantile 0.975 = tan(0.475 pi) = 12.7062;
    # p of t = 2 with 1 df: 1 - 2 atan(2) / pi
    t = paired_t([2, 4], [1, 1])
    half = math.tan(0.475 * math.pi)
    assert (t.ci_low, t.ci_high) == pytest.approx((2 - half, 2 + half))
    assert t.p_value == pytest.approx(1 - 2 * math.atan(2) / math.pi)


def test_identical_differences_give_a_point_interval():
    assert paired_t([3, 4, 5], [1, 2, 3]) == pytest.approx(paired_t([3, 4, 5], [1, 2, 3]))
    t = paired_t([3, 4, 5], [1, 2, 3])
    assert (t.mean_diff, t.ci_low, t.ci_high, t.p_value) == (2, 2, 2, 0)
    t = paired_t([1, 2], [1, 2])
    assert (t.ci_low, t.ci_high, t.p_value) == (0, 0, 1)
    with pytest.raises(ValueError):
        paired_t([1], [0])


@pytest.mark.parametrize(
    ("low", "high", "direction", "expected"),
    [
        (0.01, 0.2, "greater", "supported"),
        (0.01, 0.2, "less", "contradicted"),
        (-0.2, -0.01, "less", "supported"),
        (-0.2, -0.01, "greater", "contradicted"),
        (0.0, 0.2, "greater", "inconclusive"),  # touching 0 is not on a side
        (-0.2, 0.0, "less", "inconclusive"),
        (-0.2, 0.0, "greater", "inconclusive"),
        (-0.1, 0.1, "greater", "inconclusive"),
        (0.0, 0.0, "less", "inconclusive"),
        (1e-12, 1e-12, "greater", "supported"),
    ],
)
def test_verdict_rule(low, high, direction, expected):
    assert verdict(low, high, direction) == expected


# --- claim files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "phrases"),
    [
        ("    direction: less", "    direction: lower", ["claims.1.direction", "greater or less"]),
        ("metric: train_loss@2", "metric: val_loss", ["claims.1.metric", "unknown metric 'val_loss'", "train_loss@K"]),
        ("    source: 000, Batchnorm for deep networks\n    metric: train_loss@2",
         "    sorce: x\n    metric: train_loss@2", ["claims.1.sorce: unknown key (did you mean 'source'?)"]),
        ("id: tiny-loss", "id: tiny-train", ["claim id appears twice: 'tiny-train'"]),
    ],
)  # fmt: skip
def test_bad_claims_are_one_line_errors_with_their_position(tmp_path, old, new, phrases):
    path = write(tmp_path, "c.yaml", TINY.replace(old, new))
    with pytest.raises(SpecError) as err:
        load_claim_file(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    for phrase in phrases:
        assert phrase in message


@pytest.mark.parametrize(
    ("old", "new", "phrase"),
    [
        ("key: model.normalization\n    a: batchnorm\n    b: null\n    direction: less",
         "key: solver.batch_size\n    a: 5\n    b: 50\n    direction: less", "key 'solver.batch_size' is not swept"),
        ("    b: null\n    direction: less", "    b: layernorm\n    direction: less",
         "no run has model.normalization='layernorm'"),
        ("seeds: 5", "seeds: 4", "needs at least 5 seeds"),
        ("metric: train_loss@2", "metric: probe:ics_l2", "needs a `record:` section"),
    ],
)  # fmt: skip
def test_a_claim_that_does_not_fit_its_experiment_is_reported_not_raised(tmp_path, old, new, phrase):
    group = load_claim_file(write(tmp_path, "c.yaml", TINY.replace(old, new)))
    assert group.problem is not None and phrase in group.problem and "\n" not in group.problem


def test_spec_errors_point_at_the_right_line_of_a_claims_file(tmp_path):
    # the claims block comes first: hiding it must keep every line number
    claims = TINY[TINY.index("claims:") :]
    text = claims + TINY[: TINY.index("claims:")].replace("weight_scale: 2.0e-2", "weight_scal: 2.0e-2")
    path = write(tmp_path, "c.yaml", text)
    group = load_claim_file(path)
    line = text.splitlines().index(next(s for s in text.splitlines() if s.startswith("model:"))) + 1
    assert group.problem.startswith(f"{path}:{line}:")
    assert "did you mean 'weight_scale'" in group.problem


def test_a_claim_must_fix_the_other_swept_keys(tmp_path):
    sweep = "  model.normalization: [null, batchnorm]"
    text = TINY.replace(sweep, sweep + "\n  model.reg: [0.0, 0.1]")
    group = load_claim_file(write(tmp_path, "c.yaml", text))
    assert "fix model.reg in where (its values: [0.0, 0.1])" in group.problem
    fixed = text.replace("    direction: greater", "    where: {model.reg: 0.1}\n    direction: greater")
    fixed = fixed.replace("    direction: less", "    where: {model.reg: 0}\n    direction: less")
    group = load_claim_file(write(tmp_path, "c.yaml", fixed))
    assert group.problem is None


def test_a_claims_file_may_name_its_experiment(tmp_path):
    spec = TINY[: TINY.index("claims:")]
    write(tmp_path / "specs", "tiny.yaml", spec)
    text = "experiment: ../specs/tiny.yaml\nset: [seeds=6]\n" + TINY[TINY.index("claims:") :]
    group = load_claim_file(write(tmp_path / "claims", "c.yaml", text))
    assert group.problem is None
    assert group.experiment.spec.seed_list() == [0, 1, 2, 3, 4, 5]


def test_claim_ids_are_unique_over_files(tmp_path):
    write(tmp_path, "a.yaml", TINY)
    write(tmp_path, "b.yaml", TINY.replace("name: tiny", "name: tiny2"))
    with pytest.raises(SpecError, match="claim id 'tiny-train' is also used in"):
        load_claims(tmp_path)


# --- running: metrics, JSON, resume, CLI ---------------------------------------------------------


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """`bnlab claims --json` once on the tiny claims, plus a claims file this bnlab cannot run."""
    root = tmp_path_factory.mktemp("claims")
    write(root / "claims", "tiny.yaml", TINY)
    other_claim = TINY[TINY.index("  - id: tiny-loss") :].replace("tiny-loss", "other-loss")
    # other configs than tiny's (equal configs would share one folder)
    other_spec = TINY[: TINY.index("  - id: tiny-train")]
    other_spec = other_spec.replace("tiny", "other").replace("num_val: 100", "num_val: 90")
    write(root / "claims", "other.yaml", other_spec + other_claim)
    write(root / "claims", "future.yaml", TINY.replace("name: tiny", "name: future").replace("tiny-", "future-")
          .replace("[null, batchnorm]", "[null, batchnorm, superbatchnorm]"))  # fmt: skip
    mp = pytest.MonkeyPatch()
    mp.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    result = bnlab("claims", "--dir", root / "claims", "--out", root / "results", "--workers", "1", "--json")
    mp.undo()
    return root, result


def test_claims_json_has_the_contracted_shape(ran):
    root, result = ran
    assert result.exit_code == 1  # the future claims were skipped
    printed = json.loads(result.stdout)
    on_disk = json.loads((root / "results" / "claims" / "claims.json").read_text())
    assert printed == on_disk
    assert [e["id"] for e in on_disk] == ["other-loss", "tiny-train", "tiny-loss"]  # files by name
    for entry in on_disk[1:]:
        assert list(entry) == [*FIELDS, "cells", "scope"]
        assert entry["experiment"] == str(root / "results" / "claims" / "tiny")
        assert entry["key"] == "model.normalization" and entry["a"] == "batchnorm" and entry["b"] is None
        assert entry["where"] == {} and entry["n"] == 5
        assert [p["seed"] for p in entry["pairs"]] == [0, 1, 2, 3, 4]
        assert entry["verdict"] in ("supported", "contradicted", "inconclusive")
        diffs = [p["a"] - p["b"] for p in entry["pairs"]]
        assert entry["mean_diff"] == pytest.approx(sum(diffs) / 5)
        assert entry["ci_low"] <= entry["mean_diff"] <= entry["ci_high"]
        assert 0 <= entry["p_value"] <= 1
        assert (root / "results" / "claims" / "figures" / f"{entry['id']}.png").stat().st_size > 0


def test_pairs_are_the_runs_metrics(ran):
    root, _ = ran
    exp = root / "results" / "claims" / "tiny"
    entries = {e["id"]: e for e in json.loads((root / "results" / "claims" / "claims.json").read_text())}
    for seed in range(5):
        for side, norm in (("a", "batchnorm"), ("b", "none")):
            run = exp / f"normalization={norm}__seed={seed}"
            epoch1 = [r for r in read_csv(run / "epochs.csv") if r["epoch"] == "1"][-1]
            assert entries["tiny-train"]["pairs"][seed][side] == pytest.approx(float(epoch1["train_acc"]))
            losses = [float(r["loss"]) for r in read_csv(run / "history.csv") if r["epoch"] == "2"]
            assert len(losses) == 4  # 200 images / batch 50
            assert entries["tiny-loss"]["pairs"][seed][side] == pytest.approx(sum(losses) / 4)


def test_runs_csv_columns_are_metrics(ran):
    root, _ = ran
    results = load_experiment(root / "results" / "claims" / "tiny")
    values = metric_values(results, "best_val_acc")
    rows = read_csv(results.path / "runs.csv")
    assert {r["run_id"]: float(r["best_val_acc"]) for r in rows} == pytest.approx(values.to_dict())
    with pytest.raises(SpecError, match="needs probes.csv"):
        metric_values(results, "probe:ics_l2")


def test_unrunnable_claims_are_reported_and_the_others_run(ran):
    _, result = ran
    assert "skipped 2 claim(s) of" in result.stderr and "superbatchnorm" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_run_trains_nothing_and_keeps_other_claims(ran):
    root, _ = ran
    exp = root / "results" / "claims" / "tiny"
    before = {p.name: p.stat().st_mtime_ns for p in exp.glob("*/meta.json")}
    result = bnlab("claims", "tiny-loss", "--dir", root / "claims", "--out", root / "results", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert {p.name: p.stat().st_mtime_ns for p in exp.glob("*/meta.json")} == before
    assert "tiny-loss" in result.stdout and "tiny-train" not in result.stdout
    assert "skipped" not in result.stderr  # the future claims were not asked for
    on_disk = json.loads((root / "results" / "claims" / "claims.json").read_text())
    assert [e["id"] for e in on_disk] == ["other-loss", "tiny-train", "tiny-loss"]  # the others are kept


def test_an_unknown_claim_id_is_one_message(ran):
    root, _ = ran
    result = bnlab("claims", "tiny-trian", "--dir", root / "claims", "--out", root / "results")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "no claim 'tiny-trian' (did you mean 'tiny-train'?)" in " ".join(result.stderr.split())


def test_a_missing_claims_folder_is_one_message(tmp_path):
    result = bnlab("claims", "--dir", tmp_path / "nowhere", "--out", tmp_path / "results")
    assert result.exit_code == 2
    assert "no claims folder here" in result.stderr and "Traceback" not in result.stderr


def test_help_has_examples():
    result = bnlab("claims", "--help")
    assert result.exit_code == 0
    assert "bnlab claims --workers 2" in result.stdout and "--json" in result.stdout


def test_the_repository_claims_load(tmp_path):
    groups = load_claims(ROOT / "configs" / "claims")
    ids = [c.id for g in groups for c in g.claims]
    assert len(ids) >= 12 and len(set(ids)) == len(ids)
    for group in groups:
        # a file may wait for a feature of another issue, but a claim must fit its experiment
        assert group.problem is None or ": claim " not in group.problem, group.problem
        if group.experiment is not None:
            assert len(group.experiment.spec.seed_list()) >= 5


# Distances to a reference run: a claim that weak L2 ends closer to strong L2 than none does.
REFERENCE = (
    TINY[: TINY.index("sweep:")]
    + """\
sweep:
  model.reg: [0.0, 0.01, 0.3]
claims:
  - id: tiny-near
    statement: The net with weak L2 ends closer to the one with strong L2 than the one without.
    source: test
    metric: final_val_acc
    reference: {model.reg: 0.3}
    key: model.reg
    a: 0.01
    b: 0.0
    direction: less
"""
)


def test_a_claim_with_a_reference_compares_distances_to_the_reference_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    write(tmp_path / "claims", "near.yaml", REFERENCE)
    result = bnlab("claims", "--dir", tmp_path / "claims", "--out", tmp_path / "results", "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)[0]
    exp = tmp_path / "results" / "claims" / "tiny"
    assert len(list(exp.glob("*/meta.json"))) == 15  # the reference runs trained too

    def final_val_acc(reg, seed):
        return float(read_csv(exp / f"reg={reg}__seed={seed}" / "epochs.csv")[-1]["val_acc"])

    for pair in entry["pairs"]:
        seed = pair["seed"]
        assert pair["a"] == pytest.approx(abs(final_val_acc(0.01, seed) - final_val_acc(0.3, seed)), abs=1e-12)
        assert pair["b"] == pytest.approx(abs(final_val_acc(0, seed) - final_val_acc(0.3, seed)), abs=1e-12)


@pytest.mark.parametrize(
    ("reference", "phrase"),
    [("{model.reg: 0.3, model.normalization: batchnorm}", "reference.model.normalization is not swept"),
     ("{model.reg: 0.5}", "picks 0 runs for 5 seeds; it must pick one per seed")],
)  # fmt: skip
def test_a_reference_must_pick_one_run_per_seed(tmp_path, reference, phrase):
    group = load_claim_file(write(tmp_path, "c.yaml", REFERENCE.replace("{model.reg: 0.3}", reference)))
    assert group.problem is not None and phrase in group.problem and "\n" not in group.problem


def test_a_probe_metric_may_pick_an_iteration_or_a_range_of_them():
    # layer 1 then 2 at iterations 1, 41, 81: values 1..6
    probes = pd.DataFrame({"run_id": "r", "iteration": [1, 1, 41, 41, 81, 81], "layer": [1, 2] * 3,
                           "statistic": "p50", "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})  # fmt: skip
    results = SimpleNamespace(runs=pd.DataFrame({"run_id": ["r"]}), probes=probes, path=Path("x"))
    expected = {"probe:p50[41]": 3.5, "probe:p50@2[81]": 6.0, "probe:p50[41:]": 4.5, "probe:p50[:41]": 2.5,
                "probe:p50@1[1:41]": 2.0, "probe:p50@2/1[41:81]": 5.0 / 4.0, "probe:p50": 3.5}  # fmt: skip
    for metric, value in expected.items():
        assert metric_values(results, metric)["r"] == pytest.approx(value), metric
