"""Every layer function under one name, so notebook code ports with `from bnlab.layers import ...`.

The layers live in bnlab.nn: layers (affine, activations, dropout, softmax), norms, conv.
"""

from bnlab.nn.conv import *  # noqa: F403
from bnlab.nn.layers import *  # noqa: F403
from bnlab.nn.norms import *  # noqa: F403
