"""The sha256 of every history.csv of configs/smoke.yaml made with portable numerics.

`make reference-hashes` runs this file to regenerate tests/smoke_history.sha256 on purpose (a change
to the numerics, the data or the smoke config); test_numerics.py checks a fresh run against it.
Never regenerate it to make a failing test pass: a mismatch means the numbers moved.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
FILE = Path(__file__).resolve().parent / "smoke_history.sha256"


def run_smoke(out: Path, workers: int = 1, **env: str | None) -> Path:
    """`bnlab run configs/smoke.yaml` in a fresh process with `env` changed (None removes a
    variable); returns the experiment's folder."""
    child = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    for key, value in env.items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = value
    args = [sys.executable, "-m", "bnlab.cli", "run", str(SMOKE), "--workers", str(workers), "--out", str(out)]
    done = subprocess.run(args, env=child, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"bnlab run configs/smoke.yaml failed ({done.returncode}):\n{done.stderr}")
    return out / "smoke"


def history_hashes(folder: Path) -> dict[str, str]:
    """run id -> sha256 of its history.csv."""
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*/history.csv"))}


def read() -> dict[str, str]:
    """The committed hashes (sha256sum's format: `HASH  RUN_ID/history.csv`)."""
    hashes = {}
    for line in FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            hashes[name.split("/")[0]] = digest
    return hashes


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # portable numerics, whatever this shell says
        folder = run_smoke(Path(tmp), BNLAB_BLAS=None, OPENBLAS_CORETYPE=None)
        lines = [f"{digest}  {run_id}/history.csv" for run_id, digest in history_hashes(folder).items()]
    header = "# configs/smoke.yaml with portable numerics (make reference-hashes); see tests/reference_hashes.py"
    FILE.write_text("\n".join([header, *lines]) + "\n")
    print(f"wrote {FILE}")


if __name__ == "__main__":
    main()
