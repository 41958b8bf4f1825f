"""bnlab: a command-line laboratory for normalization layers in deep networks.

The numerical core is bnlab.nn (numpy only); the lab around it (specs, runs, results) is bnlab.lab.
`from bnlab import FullyConnectedNet, ConvNet, Solver` imports the core lazily, so that `bnlab --help`
starts without numpy.
"""

__version__ = "0.1.0"

# Before anything imports numpy: OpenBLAS reads its kernel choice once, when it loads (bnlab.numerics).
from bnlab import numerics as _numerics  # noqa: E402

_numerics.pin()

_EXPORTS = {
    "FullyConnectedNet": "bnlab.nn.nets",
    "ConvNet": "bnlab.nn.nets",
    "Solver": "bnlab.nn.solver",
    "recompute_bn_statistics": "bnlab.nn.statistics",
    "load_net": "bnlab.lab.weights",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
