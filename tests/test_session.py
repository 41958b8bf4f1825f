"""bnlab.lab.session: the sequence `bnlab run` and `bnlab claims` share."""

from __future__ import annotations

import pytest
from conftest import SMOKE

from bnlab.errors import SpecError
from bnlab.lab import session
from bnlab.lab.executors import ProcessExecutor, SerialExecutor
from bnlab.lab.session import check_out, load_experiments, open_session


def test_the_executor_is_closed_however_the_block_ends(monkeypatch):
    closed = []

    class Recording(SerialExecutor):
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(session, "make_executor", lambda *args: Recording())
    with pytest.raises(RuntimeError), open_session([], workers=1) as lab:
        assert isinstance(lab.executor, Recording) and lab.where == "1 worker(s)"
        raise RuntimeError("a sweep failed")
    assert closed == [True]


def test_every_executor_can_be_closed():
    for executor in (SerialExecutor(), ProcessExecutor(2)):
        executor.close()


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
