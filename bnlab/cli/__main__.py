"""python -m bnlab.cli, as the tests and benchmarks run it: the bnlab command."""

from bnlab.cli import app

app(prog_name="bnlab")
