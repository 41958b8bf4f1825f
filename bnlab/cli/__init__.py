"""The `bnlab` command line, one module per command or small group of commands (each registers
on the one typer app of bnlab.cli.app). Heavy modules (numpy, pandas, matplotlib) are imported
inside the commands that use them, so `bnlab --help` answers at once."""

from bnlab.cli import run, results, claims, tools  # noqa: F401, I001  (the commands, in --help's order)
from bnlab.cli.app import app

__all__ = ["app"]
