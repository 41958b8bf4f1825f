"""python -m bnlab: the same as the bnlab command."""

from bnlab.cli import app

app(prog_name="bnlab")
