"""Closed choices the lab takes and the command line offers (typer shows an Enum's values and
rejects others). Imports nothing heavy: `bnlab --help` loads it."""

from enum import Enum


class ExecutorKind(str, Enum):
    """Where runs execute: `local` (this process, or worker processes here) or `dask` (a cluster)."""

    local = "local"
    dask = "dask"
