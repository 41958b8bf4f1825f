"""Make `import bnlab` work when pytest runs from a checkout without the package installed."""

import os
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True, scope="session")
def _prepared_data_in_a_temporary_folder(tmp_path_factory):
    """Data the tests prepare (bnlab.lab.prepared), in this process and its subprocesses, goes to a
    folder of this session, not into the user's cache."""
    os.environ["BNLAB_PREPARED_DIR"] = str(tmp_path_factory.mktemp("prepared"))
