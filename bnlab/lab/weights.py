"""A trained net kept: a run's weights.npz (its net's state(): the parameters and the
normalizations' running statistics, in the run's dtype), the net rebuilt from a run folder
(load_net), and the comparison `bnlab reproduce` makes. config.yaml beside it says which net.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnlab.errors import ResultsError, SpecError
from bnlab.lab.train import run_net
from bnlab.spec.yaml_text import safe_load

FILE = "weights.npz"


def read_state(folder: str | Path) -> dict[str, np.ndarray]:
    """The arrays of folder/weights.npz; ResultsError naming the folder when it has none."""
    file = Path(folder) / FILE
    if not file.is_file():
        raise ResultsError(
            f"{folder}: has no {FILE} (a run made with solver.save_weights: false, by the claims lab, or before "
            f"bnlab kept weights); rerun it with `bnlab run SPEC --force` to keep them"
        )
    try:
        with np.load(file) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{file}: not a readable weights file ({exc}); rerun the run with --force") from None


def net_for(config: dict):
    """A fresh net of a run's config, with the initial weights train_run draws first."""
    return run_net(config, np.random.RandomState(config["seed"]))


def load_net(run_folder: str | Path):
    """The trained net of a finished run, ready to evaluate: built from its config.yaml, with the
    parameters and running statistics of its weights.npz (the Solver's best, those that scored the
    run's best validation accuracy). `net.loss(X)` gives its class scores in test mode."""
    folder = Path(run_folder)
    try:
        config = safe_load((folder / "config.yaml").read_text())
    except OSError as exc:
        raise ResultsError(f"{folder}: not a run folder (no readable config.yaml: {exc.strerror})") from None
    net = net_for(config)
    try:
        net.load_state(read_state(folder))
    except ValueError as exc:
        raise ResultsError(f"{folder}: {exc}") from None
    return net


def differing_weights(original: Path, rerun: Path) -> str | None:
    """None when two runs' weights.npz hold the same arrays, bit for bit; else the first that differs."""
    a, b = read_state(original), read_state(rerun)
    if a.keys() != b.keys():
        return f"{FILE}: different arrays ({', '.join(sorted(a.keys() ^ b.keys()))})"
    for name in a:
        if a[name].dtype != b[name].dtype or a[name].tobytes() != b[name].tobytes():
            return f"{FILE}: {name} differs"
    return None


def check_init_from(runs: list, source: str) -> None:
    """Before training: every run with model.init_from names a run folder with weights that fit
    its net; SpecError naming the folder and the arrays that differ otherwise."""
    checked = set()
    for run in runs:
        folder = run.config["model"].get("init_from")
        key = (folder, repr(sorted(run.config["model"].items())), run.config.get("data", {}).get("dataset"))
        if not folder or key in checked:
            continue
        checked.add(key)
        try:
            state = read_state(folder)
        except ResultsError as exc:
            raise SpecError(f"{source}: model.init_from: {exc}") from None
        try:
            net_for(run.config).load_state(state, new_head=run.config["model"].get("new_head", False))
        except ValueError as exc:
            raise SpecError(
                f"{source}: model.init_from {folder}: {exc}; name a run of the same net, or change this model to match"
            ) from None
