"""What the server that local workers fork from loads once (bnlab.lab.worker_start): the code a
worker runs, and every compiled kernel, from numba's disk cache (or compiled into it)."""

from bnlab.lab import executors  # noqa: F401  (imported for the workers forked from here)
from bnlab.nn import fused

fused.warm_up()
