"""The weight-scale sweep in PyTorch, as a peer for `bnlab bench --section sweep`:
`python -m bnlab.bench.torch_peer SPEC --workers 2 --data-dir DIR` trains every run of a spec of
fully connected nets (seed 0) with the same work as `bnlab run`: the same data and preprocessing,
the same net (Linear - [BatchNorm1d] - ReLU, weights drawn with the run's weight_scale), Adam,
minibatches drawn with replacement, and accuracy checks on 1000 training images and the
validation set after the first iteration and every epoch; one thread per worker process.
"""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path

import numpy as np

from bnlab.data import datasets
from bnlab.nn.optim import DEFAULTS as OPTIM_DEFAULTS
from bnlab.spec.experiment import load_experiment


def train_run(config: dict, data: dict[str, np.ndarray]) -> float:
    """Train one run's net in PyTorch; returns its best validation accuracy."""
    import torch

    torch.set_num_threads(1)
    model, solver = config["model"], config["solver"]
    supported = model["normalization"] in (None, "batchnorm") and solver["update_rule"] == "adam"
    if model["architecture"] != "fc" or not supported:
        raise SystemExit("the PyTorch peer trains fully connected nets with batch norm or none, with Adam")
    torch.manual_seed(config["seed"])
    rng = np.random.RandomState(config["seed"])
    dims = [int(np.prod(data["X_train"].shape[1:])), *model["hidden_dims"], 10]
    layers: list = []
    for i in range(len(dims) - 1):
        linear = torch.nn.Linear(dims[i], dims[i + 1])
        torch.nn.init.normal_(linear.weight, 0.0, float(model["weight_scale"]))
        torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(dims) - 2:
            if model["normalization"] == "batchnorm":
                layers.append(torch.nn.BatchNorm1d(dims[i + 1], momentum=0.1))  # bnlab's 0.9
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    learning_rate = solver["optim_config"].get("learning_rate", OPTIM_DEFAULTS["adam"]["learning_rate"])
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    X = {k: torch.from_numpy(v.reshape(len(v), -1)) for k, v in data.items() if k.startswith("X")}
    y = {k: torch.from_numpy(v.astype(np.int64)) for k, v in data.items() if k.startswith("y")}
    n, batch = len(X["X_train"]), solver["batch_size"]
    per_epoch = max(n // batch, 1)
    best = 0.0
    for iteration in range(per_epoch * solver["num_epochs"]):
        net.train()
        idx = torch.from_numpy(rng.choice(n, batch))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X["X_train"][idx]), y["y_train"][idx]).backward()
        optimizer.step()
        if iteration == 0 or (iteration + 1) % per_epoch == 0:
            net.eval()
            with torch.no_grad():
                subset = torch.from_numpy(rng.choice(n, min(n, 1000)))
                (net(X["X_train"][subset]).argmax(1) == y["y_train"][subset]).float().mean()
                best = max(best, float((net(X["X_val"]).argmax(1) == y["y_val"]).float().mean()))
    return best


_DATA: dict[str, np.ndarray] = {}  # set before the worker processes fork, so they share it


def _worker(config: dict) -> float:
    return train_run(config, _DATA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    runs = load_experiment(args.spec, ["seeds=[0]"]).runs
    data = datasets.load_dataset(datasets.Request.of_run(runs[0].config), args.data_dir)
    _DATA.update((k, v) for k, v in data.items() if k[0] in "Xy" and "test" not in k)
    configs = [run.config for run in runs]
    if args.workers == 1:
        for config in configs:
            _worker(config)
        return
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        pool.map(_worker, configs, chunksize=1)


if __name__ == "__main__":
    main()
