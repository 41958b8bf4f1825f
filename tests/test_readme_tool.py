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
