"""Closed choices the lab takes and the command line offers (typer shows an Enum's values and
rejects others). Imports nothing heavy: `bnlab --help` loads it."""

from enum import Enum


class ExecutorKind(str, Enum):
    """Where runs execute: `local` (this process, or worker processes here) or `dask` (a cluster)."""

    local = "local"
    dask = "dask"


class FigureFormat(str, Enum):
    """The file formats figures are drawn in (matplotlib's savefig)."""

    png = "png"
    svg = "svg"
    pdf = "pdf"


class BenchSection(str, Enum):
    """The sections of `bnlab bench`, in the order they run (bnlab.bench says what each times)."""

    sweep = "sweep"
    step = "step"
    batchnorm = "batchnorm"
    conv = "conv"
    startup = "startup"
    record = "record"
    blas = "blas"
    memory = "memory"
