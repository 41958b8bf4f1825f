"""Local workers start forked from a server that has loaded the training code and the compiled
kernels (bnlab.lab.worker_start), where the OS has a forkserver."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from bnlab.lab import worker_start


def _state_at_start() -> tuple[bool, int, int]:
    """In a worker, before it does anything: whether the executors module is imported, how many
    kernel signatures are loaded, and the parent process's pid."""
    from bnlab.nn import kernels

    loaded = sum(
        len(getattr(kernels, name).overloads) for name in dir(kernels) if hasattr(getattr(kernels, name), "overloads")
    )
    return "bnlab.lab.executors" in sys.modules, loaded, multiprocessing.parent_process().pid


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="no forkserver on this OS")
def test_workers_start_with_the_code_imported_and_the_kernels_loaded():
    worker_start.start(2)
    with ProcessPoolExecutor(2, mp_context=worker_start.context()) as pool:
        imported, loaded, parent = pool.submit(_state_at_start).result()
    assert imported
    assert loaded >= 8  # the kernels' float32 signatures, loaded by warm_up in the server
    assert parent == os.getpid()  # a worker follows this process, not the server, when it dies


def test_workers_are_spawned_where_there_is_no_forkserver(monkeypatch):
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert worker_start.context().get_start_method() == "spawn"
    worker_start.start(4)  # nothing to start
