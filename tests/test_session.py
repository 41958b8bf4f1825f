"""bnlab.lab.session: the sequence `bnlab run` and `bnlab claims` share."""

from __future__ import annotations

import pytest
from conftest import SMOKE

from bnlab.errors import DataError, SpecError
from bnlab.lab import session
from bnlab.lab.executors import SerialExecutor
from bnlab.lab.session import check_out, load_experiments, open_session


def test_the_executor_is_closed_however_the_block_ends(monkeypatch, shared_data):
    closed = []

    class Recording(SerialExecutor):
        def execute(self, runs, progress=None):
            yield from ()

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(session, "make_executor", lambda *args, **kwargs: Recording())
    experiments = load_experiments([SMOKE])
    with pytest.raises(RuntimeError), open_session(experiments, workers=1) as lab:
        assert lab.where == "1 worker(s)" and list(lab.executor.execute(experiments[0].runs)) == []
        raise RuntimeError("a sweep failed")
    assert closed == [True]


def test_a_session_that_trains_nothing_needs_no_data(tmp_path, monkeypatch):
    """No data anywhere (no folder named, an empty cache, downloads refused): opening a session and
    executing no run reads nothing; the first run to train asks for the data."""
    monkeypatch.delenv("BNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    experiments = load_experiments([SMOKE])
    with open_session(experiments, workers=1) as lab:
        assert list(lab.executor.execute([])) == []
        with pytest.raises(DataError, match="CIFAR-10"):
            lab.executor.prepare(experiments[0].runs)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_two_specs_of_one_name_are_refused():
    with pytest.raises(SpecError, match="share a folder"):
        load_experiments([SMOKE, SMOKE])


def test_an_out_folder_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "results"
    file.write_text("")
    with pytest.raises(SpecError, match="is a file, not a folder"):
        check_out(file)
    with pytest.raises(SpecError, match="no folder can be made inside it"):
        check_out(file / "sub")
