"""What the server that local workers fork from loads once (bnlab.lab.worker_start): the code a
worker runs, and the compiled kernels for float32, the dtype nets train in (from numba's disk
cache, or compiled into it; a float64 run loads its own)."""

import numpy as np

from bnlab.lab import executors  # noqa: F401  (imported for the workers forked from here)
from bnlab.nn import fused

fused.warm_up((np.float32,))
