"""The OpenBLAS kernel sets to test on this CPU, of those named: `python tools/kernels.py SkylakeX
Sandybridge Prescott` prints the sets to force (space-separated), each one this CPU cannot execute
replaced by the next one down (bnlab.numerics.choose_kernels), and says on stderr what it left out."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bnlab import numerics  # noqa: E402

chosen, notes = numerics.choose_kernels(sys.argv[1:], numerics.cpu_flags())
for note in notes:
    print(f"kernels: {note}", file=sys.stderr)
print(" ".join(chosen))
