"""New rows, defined in this file alone (issue 28): a toy normalization runs through a spec (its
option a spec key with its default and limits), the gradient-check suite (its nets checked like
every other normalization's), `bnlab run` and `bnlab plot`; a toy data set (one .npz file) and a toy
figure kind run through the same spec, run and plot. Rows are read when the spec's schema is
imported, so they are registered first, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, SMOKE, needs_shared_data

TOY = r'''
import json, sys
import numpy as np
from bnlab.nn import normalizations

def centre_forward(x, gamma, beta, param):
    """Each sample's features minus their mean, scaled: layer norm without the division."""
    centred = x - x.mean(axis=1, keepdims=True)
    return param["centre_scale"] * gamma * centred + beta, (centred, gamma, param["centre_scale"])

def centre_backward(dout, cache):
    centred, gamma, scale = cache
    dcentred = scale * gamma * dout
    return dcentred - dcentred.mean(axis=1, keepdims=True), (scale * centred * dout).sum(axis=0), dout.sum(axis=0)

normalizations.NORMALIZATIONS["centre"] = normalizations.Normalization(
    centre_forward, centre_backward, residual=False,
    options={"centre_scale": normalizations.Option(1.0, float, {"gt": 0})},
)

from bnlab.data import datasets
from bnlab.spec import figure_kinds

figure_kinds.FIGURE_KINDS["final_loss"] = figure_kinds.FigureKind("final_loss", "Each run's final training loss.")

def read_toy(folder):
    arrays = np.load(folder / "toy.npz")
    return datasets.Raw(arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"])

datasets.DATASETS["toy"] = datasets.Dataset(
    "toy", "toy", ("toy.npz",), "", {}, (1, 4, 4), ("a", "b", "c"), "scale", read_toy
)

from bnlab.errors import SpecError
from bnlab.figures import kinds
from bnlab.spec.experiment import experiment_from_text
from matplotlib.figure import Figure

def final_loss(results, plot):
    figure = Figure()
    figure.add_subplot().bar(list(results.runs["run_id"]), results.runs["final_train_loss"])
    return [("final_loss", figure)]

kinds.DRAW["final_loss"] = final_loss
from bnlab.nn.gradcheck_suite import checks_named

spec = open(sys.argv[1]).read()
runs = experiment_from_text(spec, "toy.yaml", ["model.normalization=centre", "model.centre_scale=2.0"]).runs
try:
    experiment_from_text(spec, "toy.yaml", ["model.normalization=centre", "model.centre_scale=-1"])
    refused = None
except SpecError as error:
    refused = str(error)
checks = checks_named("centre")

from bnlab.cli import app
out = sys.argv[2]
toy_spec = out + "/toy.yaml"
open(toy_spec, "w").write(spec.replace("model.normalization: [null, batchnorm]", "model.normalization: [null, centre]"))
rng = np.random.RandomState(0)
(data := __import__("pathlib").Path(out) / "data" / "toy").mkdir(parents=True)
np.savez(data / "toy.npz", train_x=rng.randint(0, 256, (60, 1, 4, 4)).astype(np.uint8), train_y=rng.randint(0, 3, 60),
         test_x=rng.randint(0, 256, (10, 1, 4, 4)).astype(np.uint8), test_y=rng.randint(0, 3, 10))
toy_data_spec = out + "/toy_data.yaml"
open(toy_data_spec, "w").write(
    "name: toy_data\ndata: {dataset: toy, num_train: 40, num_val: 20, num_test: 10}\n"
    "model: {hidden_dims: [6], normalization: centre}\nsolver: {batch_size: 10, num_epochs: 1}\n"
    "plots: [{kind: final_loss}]\n"
)
for args in (
    ["run", toy_spec, "--out", out, "--workers", "1"],
    ["plot", out + "/smoke"],
    ["run", toy_data_spec, "--out", out, "--workers", "1", "--data-dir", out + "/data"],
    ["plot", out + "/toy_data"],
):
    code = app(args, standalone_mode=False)
    assert not code, (args, code)
print(json.dumps({
    "config": runs[0].config["model"],
    "refused": refused,
    "checks": [(c.name, c.passed) for c in checks],
}))
'''


@needs_shared_data
def test_a_toy_normalization_data_set_and_figure_kind_run_through_spec_gradcheck_run_and_plot(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", TOY, str(SMOKE), str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["config"]["normalization"] == "centre" and result["config"]["centre_scale"] == 2.0
    assert "centre_scale" in result["refused"]  # its limit (> 0) is the spec's
    names = [name for name, _ in result["checks"]]
    # its fully connected nets: 4 activations x 2 positions x 2 regularizations, each W, b and gamma/beta
    assert len({name.split(" W ")[0] for name in names if " W (worst" in name}) == 16
    assert all(passed for _, passed in result["checks"])
    statuses = [row.split(",") for row in (tmp_path / "smoke" / "runs.csv").read_text().splitlines()[1:]]
    assert len(statuses) == 4 and all("done" in row for row in statuses)
    assert sum("normalization=centre__seed" in ",".join(row) for row in statuses) == 2
    assert (tmp_path / "smoke" / "figures" / "history.png").stat().st_size > 0
    # the toy data set's run trained on its 4x4 grey images in 3 classes, and the toy kind was drawn
    (run,) = [p for p in (tmp_path / "toy_data").iterdir() if (p / "meta.json").is_file()]
    assert json.loads((run / "meta.json").read_text())["status"] == "done"
    assert "dataset: toy" in (run / "config.yaml").read_text()
    assert (tmp_path / "toy_data" / "figures" / "final_loss.png").stat().st_size > 0
