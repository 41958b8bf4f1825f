"""Closed choices the lab takes and the command line offers (typer shows an Enum's values and
rejects others). Imports nothing heavy: `bnlab --help` loads it."""

from enum import Enum


def _choices(name: str, values: tuple[str, ...], doc: str) -> type[Enum]:
    """A str Enum whose members are named as their values (name.png == "png")."""
    choices = Enum(name, [(value, value) for value in values], type=str, module=__name__)
    choices.__doc__ = doc
    return choices


ExecutorKind = _choices(
    "ExecutorKind",
    ("local", "dask"),
    "Where runs execute: `local` (this process, or worker processes here) or `dask` (a cluster).",
)
# How long a Dask executor waits for a first worker before giving up (`--wait-for-workers`).
DASK_WAIT_S = 120.0
FigureFormat = _choices("FigureFormat", ("png", "svg", "pdf"), "The file formats figures are drawn in.")
BenchSection = _choices(
    "BenchSection",
    ("sweep", "step", "batchnorm", "conv", "startup", "record", "blas", "memory"),
    "The sections of `bnlab bench`, in the order they run (bnlab.bench says what each times).",
)
