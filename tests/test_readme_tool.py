"""tools/readme.py (`make readme`): generated blocks are rebuilt from results, prose is untouched,
a block without results is kept, figures are copied from their experiment's figures/ folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("readme_tool", ROOT / "tools" / "readme.py")
readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme)


def fake_results(root: Path) -> Path:
    folder = root / "cnn_norm"
    folder.mkdir(parents=True)
    rows = [
        "run_id,status,model.normalization,solver.batch_size,seed,best_val_acc,best_train_acc,final_train_loss,wall_s"
    ]
    values = {
        ("none", 8): (0.4, 0.5),
        ("none", 64): (0.6, 0.4),
        ("batchnorm", 8): (0.7, 0.9),
        ("batchnorm", 64): (0.5, 0.5),
    }
    for (norm, batch), accs in values.items():
        for seed, acc in enumerate(accs):
            rows.append(f"n={norm}_b={batch}_s={seed},done,{norm},{batch},{seed},{acc},0.5,1.0,1.0")
    (folder / "runs.csv").write_text("\n".join(rows) + "\n")
    (folder / "spec.yaml").write_text("name: cnn_norm\n")
    run = folder / "n=none_b=8_s=0"
    run.mkdir()
    meta = {"versions": {"numpy": "2.4.6"}, "git_commit": "0123456789abcdef",
            "numerics": {"portable": True, "mode": "portable", "cpu": "AMD EPYC",
                         "blas": {"name": "openblas", "version": "0.3.31", "kernel": "Haswell"}}}  # fmt: skip
    (run / "meta.json").write_text(json.dumps(meta))
    (folder / "figures").mkdir()
    (folder / "figures" / "sweep.png").write_bytes(b"new figure")
    return root


def test_blocks_are_rebuilt_from_results_and_prose_is_kept(tmp_path, monkeypatch):
    results = fake_results(tmp_path / "results")
    figures = tmp_path / "figures"
    (figures / "claims").mkdir(parents=True)
    (figures / "cnn_norm_sweep.png").write_bytes(b"old figure")
    (figures / "claims" / "x.png").write_bytes(b"old claim figure")
    file = tmp_path / "README.md"
    file.write_text(
        "Prose 0.123 stays.\n<!-- bnlab:cnn_norm -->\nold table\n<!-- /bnlab:cnn_norm -->\nmiddle\n"
        "<!-- bnlab:claims -->\nold claims\n<!-- /bnlab:claims -->\n"
        "<!-- bnlab:provenance -->\n<!-- /bnlab:provenance -->\n"
    )
    monkeypatch.setattr(readme, "PAGES", [file])
    monkeypatch.setattr(readme, "RESULTS", results)
    monkeypatch.setattr(readme, "FIGURES", figures)
    assert readme.main() == 0
    text = file.read_text()
    assert text.startswith("Prose 0.123 stays.\n<!-- bnlab:cnn_norm -->\n| normalization | batch 8 | batch 64 |\n")
    # means over the two seeds; the best of each column in bold
    assert "| none | 0.450 ± 0.071 | **0.500 ± 0.141** |" in text
    assert "| spatial batch norm | **0.800 ± 0.141** | 0.500 ± 0.000 |" in text
    assert "old table" not in text and "\nmiddle\n" in text
    assert "<!-- bnlab:claims -->\nold claims\n<!-- /bnlab:claims -->" in text  # no claims.json: kept
    assert "numerics portable: openblas 0.3.31 Haswell kernels, AMD EPYC; numpy 2.4.6; bnlab commit 0123456789" in text
    assert (figures / "cnn_norm_sweep.png").read_bytes() == b"new figure"
    assert (figures / "claims" / "x.png").read_bytes() == b"old claim figure"


def test_a_table_block_shows_each_group_of_runs_with_its_metrics(smoke_results, tmp_path, monkeypatch):
    """`table FOLDER -- METRIC...` over a real finished experiment: each normalization's runs, their
    final validation accuracy (the last check in each run's epochs.csv) and best training accuracy as mean ±
    std over seeds, computed here from the CSV files."""
    import statistics

    import pandas as pd

    file = tmp_path / "page.md"
    file.write_text("Prose.\n<!-- bnlab:table smoke -- final_val_acc best_train_acc -->\nold\n<!-- /bnlab:table -->\n")
    monkeypatch.setattr(readme, "PAGES", [file])
    monkeypatch.setattr(readme, "RESULTS", smoke_results.parent)
    monkeypatch.setattr(readme, "FIGURES", tmp_path / "figures")
    assert readme.main() == 0
    lines = file.read_text().splitlines()
    assert lines[0] == "Prose." and lines[2] == "| normalization | runs | final_val_acc | best_train_acc |"
    runs = pd.read_csv(smoke_results / "runs.csv", keep_default_na=False)
    final = {run: pd.read_csv(smoke_results / run / "epochs.csv")["val_acc"].iloc[-1] for run in runs["run_id"]}
    for row, norm in zip(lines[4:6], ("none", "batchnorm"), strict=True):
        group = runs[runs["model.normalization"] == norm]
        shown = [
            f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
            for v in ([final[r] for r in group["run_id"]], group["best_train_acc"].tolist())
        ]
        assert row == f"| {norm} | 2 | {shown[0]} | {shown[1]} |"
    assert lines[6] == "<!-- /bnlab:table -->"


def test_a_claim_block_says_the_verdict_and_each_cells_effect(tmp_path, monkeypatch):
    cell = {"mean_diff": 0.0412, "ci_low": 0.0209, "ci_high": 0.0611, "n": 8, "verdict_adjusted": "supported"}
    claims = [
        {"id": "one", "metric": "final_val_acc", "a": True, "b": False, "cells": [{**cell, "where": {}}]},
        {"id": "two", "metric": "best_train_acc", "a": 5, "b": None, "scope": {"text": "supported in 1 of 2 cells: x"},
         "cells": [{**cell, "where": {"data.dataset": "cifar10"}},
                   {**cell, "mean_diff": -0.5, "where": {"data.dataset": "mnist"}}]},
    ]  # fmt: skip
    (tmp_path / "results" / "claims").mkdir(parents=True)
    (tmp_path / "results" / "claims" / "claims.json").write_text(json.dumps(claims))
    file = tmp_path / "page.md"
    blocks = "".join(f"<!-- bnlab:claim {i} -->\n<!-- /bnlab:claim -->\n" for i in ("one", "two", "three"))
    file.write_text(blocks)
    monkeypatch.setattr(readme, "PAGES", [file])
    monkeypatch.setattr(readme, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(readme, "FIGURES", tmp_path / "figures")
    assert readme.main() == 0
    assert file.read_text().splitlines() == [
        "<!-- bnlab:claim one -->",
        "`one` (final_val_acc, True − False): **supported** after Holm; +0.041 [+0.021, +0.061], 8 seeds.",
        "<!-- /bnlab:claim -->",
        "<!-- bnlab:claim two -->",
        "`two` (best_train_acc, 5 − none): **supported in 1 of 2 cells: x** after Holm; dataset=cifar10: +0.041 "
        "[+0.021, +0.061], 8 seeds; dataset=mnist: -0.500 [+0.021, +0.061], 8 seeds.",
        "<!-- /bnlab:claim -->",
        "<!-- bnlab:claim three -->",  # not in claims.json: kept as it was
        "<!-- /bnlab:claim -->",
    ]


def _page(tmp_path, monkeypatch, results: Path, text: str) -> Path:
    file = tmp_path / "page.md"
    file.write_text(text)
    monkeypatch.setattr(readme, "PAGES", [file])
    monkeypatch.setattr(readme, "RESULTS", results)
    monkeypatch.setattr(readme, "FIGURES", tmp_path / "figures")
    assert readme.main() == 0
    return file


def test_a_cells_block_lists_every_cell_and_a_reference_claim_names_its_distance(tmp_path, monkeypatch):
    cell = {"mean_diff": -0.0577, "ci_low": -0.087, "ci_high": -0.0291, "n": 24, "verdict_adjusted": "inconclusive"}
    deep = {**cell, "verdict_adjusted": "supported", "where": {"model.hidden_dims": [100] * 5}}
    claims = [{"id": "near", "metric": "final_train_acc", "a": 1.005, "b": 1.0,
               "reference": {"model.reg": 0.05, "solver.lr_growth": 1.0}, "scope": {"text": "in 1 of 2 cells"},
               "cells": [{**cell, "where": {"model.hidden_dims": [100, 100]}}, deep]}]  # fmt: skip
    (tmp_path / "results" / "claims").mkdir(parents=True)
    (tmp_path / "results" / "claims" / "claims.json").write_text(json.dumps(claims))
    text = "<!-- bnlab:cells near -->\n<!-- /bnlab:cells -->\n<!-- bnlab:claim near -->\n<!-- /bnlab:claim -->\n"
    lines = _page(tmp_path, monkeypatch, tmp_path / "results", text).read_text().splitlines()
    assert lines[1:5] == [
        "| claim | cell | a − b [95% CI] | seeds | after Holm |",
        "|---|---|---|---|---|",
        "| `near` | hidden_dims=2x100 | -0.0577 [-0.087, -0.0291] | 24 | *inconclusive* |",
        "| `near` | hidden_dims=5x100 | -0.0577 [-0.087, -0.0291] | 24 | supported |",
    ]
    assert lines[7].startswith("`near` (|final_train_acc − its value at reg=0.05, lr_growth=1.0|, 1.005 − 1.0): ")


def test_a_bench_block_shows_the_saved_rows_of_its_groups_and_the_machine(tmp_path, monkeypatch):
    from bnlab.bench import saved_json
    from bnlab.bench.measure import row
    from bnlab.numerics import cpu_model

    rows = [row("conv", "bnlab, batch 64", [900.0, 1000.0, 1100.0], unit="img/s", note="1 thread"),
            row("conv", "bnlab / PyTorch, batch 64", [1.1, 1.2, 1.3], unit="x", note="median of paired ratios"),
            row("sweep", "bnlab, 2 workers", [10.0, 11.0, 12.0])]  # fmt: skip
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.json").write_text(saved_json(rows))
    lines = _page(tmp_path, monkeypatch, tmp_path / "results", "<!-- bnlab:bench conv -->\n<!-- /bnlab:bench -->\n")
    lines = lines.read_text().splitlines()
    assert lines[1].startswith(f"*Measured on {cpu_model()}, ")
    assert lines[3:] == [
        "| measurement | median | IQR | how |",
        "|---|---|---|---|",
        "| bnlab, batch 64 | 1000 images/s | 100 images/s | 1 thread |",  # IQR of 900, 1000, 1100
        "| bnlab / PyTorch, batch 64 | **1.20×** | 0.1× | median of paired ratios |",
        "<!-- /bnlab:bench -->",
    ]


def _run(tmp_path, monkeypatch, text: str) -> Path:
    """A spec trained for real (1 worker) under tmp_path/results; its results folder."""
    from conftest import SHARED_DATA, bnlab, needs_shared_data  # noqa: F401 - the data must be there

    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result = bnlab("run", spec, "--out", tmp_path / "results", "--workers", 1)
    assert result.exit_code == 0, result.output
    return tmp_path / "results"


def _probes(folder: Path):
    import pandas as pd

    runs = pd.read_csv(folder / "runs.csv", keep_default_na=False)
    frames = [pd.read_csv(folder / r / "probes.csv").assign(run_id=r) for r in runs["run_id"]]
    return pd.concat(frames).merge(runs, on="run_id")


TINY_DEPTH = """
name: init_depth
data: {num_train: 64, num_val: 16, num_test: 0}
model: {hidden_dims: [32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32], weight_scale: he}
solver: {update_rule: sgd, batch_size: 64, num_epochs: 1, num_train_samples: 64}
seeds: 2
sweep:
  - model.residual: [null]
    model.normalization: [null, batchnorm]
  - model.residual: [pre]
    zip: {model.normalization: [null, batchnorm, null], model.skipinit: [false, false, true]}
record: {statistics: [grad_norm, out_std], every: 1}
"""


def test_the_init_depth_block_fits_the_growth_factor_and_reads_the_stream_variance(tmp_path, monkeypatch):
    import numpy as np

    results = _run(tmp_path, monkeypatch, TINY_DEPTH)
    lines = _page(tmp_path, monkeypatch, results, "<!-- bnlab:init_depth -->\n<!-- /bnlab:init_depth -->\n")
    lines = lines.read_text().splitlines()
    probes = _probes(results / "init_depth")
    grads = probes[(probes["statistic"] == "grad_norm") & (probes["model.residual"] == "none")]
    for norm in ("none", "batchnorm"):
        factors = []
        for seed in (0, 1):
            rows = grads[(grads["model.normalization"] == norm) & (grads["seed"] == seed)]
            rows = rows[(rows["layer"] >= 2) & (rows["layer"] <= 16)].sort_values("layer")
            factors.append(np.exp(-np.polyfit(rows["layer"], 2 * np.log(rows["value"]), 1)[0]))
        row = next(line for line in lines if line.startswith(f"| {norm} |"))
        assert row.split(" | ")[1] == f"{np.mean(factors):.3f} ± {np.std(factors, ddof=1):.3f}", row
    stream = probes[(probes["statistic"] == "out_std") & (probes["model.residual"] == "pre")]
    skip = stream[stream["model.skipinit"].astype(str) == "True"]
    variance = (skip[skip["layer"] == 16]["value"] ** 2).mean()
    row = next(line for line in lines if line.startswith("| SkipInit"))
    assert row.split(" | ")[5] == f"{variance:.4g}"


TINY_PLACEMENT = """
name: norm_placement
data: {num_train: 16, num_val: 16, num_test: 0}
model: {hidden_dims: [8, 8], residual: pre, normalization: layernorm, weight_scale: xavier}
solver: {update_rule: sgd, batch_size: 16, num_epochs: 1, num_train_samples: 16}
seeds: 2
sweep:
  model.residual: [pre, postnorm]
  model.hidden_dims: [[8, 8], [8, 8, 8, 8]]
record: {statistics: [grad_norm], every: 1}
"""


def test_the_norm_placement_block_fits_the_last_blocks_gradient_against_depth(tmp_path, monkeypatch):
    import numpy as np

    results = _run(tmp_path, monkeypatch, TINY_PLACEMENT)
    text = "<!-- bnlab:norm_placement -->\n<!-- /bnlab:norm_placement -->\n"
    lines = _page(tmp_path, monkeypatch, results, text).read_text().splitlines()
    assert lines[1].startswith("| residual | 2 blocks | 4 blocks | log-log slope |")
    probes = _probes(results / "norm_placement")
    for form in ("pre", "postnorm"):
        rows = probes[(probes["model.residual"] == form) & (probes["statistic"] == "grad_norm")]
        last = [rows[(rows["model.hidden_dims"] == str([8] * b)) & (rows["layer"] == 2 * b + 1)]["value"].mean()
                for b in (2, 4)]  # fmt: skip
        slope = np.polyfit(np.log([2, 4]), np.log(last), 1)[0]
        row = next(line for line in lines if line.startswith(f"| {form} |"))
        assert row.split(" | ")[3] == f"{slope:+.2f}", row
