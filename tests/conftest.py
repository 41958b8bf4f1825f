"""What the test modules share: where things are, the data fixture, the in-process `bnlab` and a
CSV reader. Test modules import the helpers (`from conftest import bnlab, read_csv`); pytest puts
this folder on sys.path. Also makes `import bnlab` work from a checkout without the package
installed."""

from __future__ import annotations

import csv
import importlib
import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Before any test module imports numpy: bnlab pins OpenBLAS's kernels when it is imported first
# (portable numerics), so the suite computes as every bnlab process does.
importlib.import_module("bnlab")  # (not `import bnlab`: that name is the CLI helper below)

SMOKE = ROOT / "configs" / "smoke.yaml"
# this project's machines keep the data beside the checkout (see the README's Data section)
SHARED_DATA = ROOT.parent / "shared" / "datasets"
HAS_SHARED_DATA = (SHARED_DATA / "cifar-10-batches-py").is_dir()
NO_SHARED_DATA = f"needs CIFAR-10 in {SHARED_DATA}/cifar-10-batches-py (this project's machines have it there)"
needs_shared_data = pytest.mark.skipif(not HAS_SHARED_DATA, reason=NO_SHARED_DATA)


@pytest.fixture(autouse=True)
def _data_where_this_project_keeps_it(monkeypatch) -> None:
    """Every test finds the shared data sets as `make` would point bnlab to them, however pytest
    was started (no variable to export by hand); a test about finding no data removes it itself."""
    if HAS_SHARED_DATA and "BNLAB_DATA_DIR" not in os.environ:
        monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """BNLAB_DATA_DIR set to the shared CIFAR-10 folder; the test skips, saying why, when it is absent."""
    if not HAS_SHARED_DATA:
        pytest.skip(NO_SHARED_DATA)
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


def bnlab(*args):
    """`bnlab ARGS` in this process (typer's CliRunner): exit_code, stdout, stderr, exception."""
    from typer.testing import CliRunner

    from bnlab.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def write(folder: Path, name: str, text: str) -> Path:
    """folder/name holding text (folder made if need be): a spec or claims file for a test."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A CIFAR-10 batch file as the official ones are pickled: batch_label, labels, data (n, 3072)."""
    with open(path, "wb") as f:
        pickle.dump({"batch_label": path.name, "labels": [int(v) for v in labels], "data": images}, f)


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    """configs/smoke.yaml trained once for the session (1 worker), for tests that read a finished
    experiment; a test that changes it works on a copy."""
    if not HAS_SHARED_DATA:
        pytest.skip(NO_SHARED_DATA)
    out = tmp_path_factory.mktemp("smoke_results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))
        result = bnlab("run", SMOKE, "--out", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    return out / "smoke"


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts of text, keyed by the header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True, scope="session")
def _prepared_data_in_a_temporary_folder(tmp_path_factory):
    """Data the tests prepare (bnlab.data.prepared), in this process and its subprocesses, goes to a
    folder of this session, not into the user's cache."""
    os.environ["BNLAB_PREPARED_DIR"] = str(tmp_path_factory.mktemp("prepared"))


# The test files whose tests train through the lab (bnlab run, claims, reproduce), start processes
# (workers, Dask, the CLI in a subprocess) or run the whole gradient-check table: `make test-fast`
# leaves them out (`-m "not slow"`), `make test` runs everything.
SLOW_FILES = {
    "test_bench.py", "test_bench_memory.py", "test_claims.py", "test_claims_across.py", "test_cli.py",
    "test_cluster.py", "test_dask.py", "test_gradcheck_suite.py", "test_lenet.py", "test_new_user.py",
    "test_numerics.py", "test_prepared.py", "test_probes.py", "test_provenance.py", "test_report.py",
    "test_reproduce.py", "test_residual.py", "test_runner.py", "test_toy_rows.py",
}  # fmt: skip


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
