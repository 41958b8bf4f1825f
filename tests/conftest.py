"""Make `import bnlab` work when pytest runs from a checkout without the package installed."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Before any test module imports numpy: bnlab pins OpenBLAS's kernels when it is imported first
# (portable numerics), so the suite computes as every bnlab process does.
import bnlab  # noqa: E402, F401
