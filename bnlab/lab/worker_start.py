"""How local worker processes start: forked from a server process that has imported the training
code and loaded the compiled kernels once (multiprocessing's forkserver, with bnlab.lab.preload),
so that each worker begins training at once rather than spending a second on imports and on
numba's start-up. Where the OS has no forkserver (Windows), workers are spawned.

`start()` launches the server early, while the coordinating process reads specs and data; it
imports nothing heavy itself. Forking from the server, never from the coordinator, stays safe next
to the coordinator's threads (rich's live display).
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

PRELOAD = ["bnlab.lab.preload"]


def context() -> BaseContext:
    """The multiprocessing context local workers start in."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def start(workers: int | None) -> None:
    """Start the server now, if `workers` (None: default_workers()) local processes will train;
    a no-op where workers are spawned, or when it already runs."""
    if (workers or default_workers()) > 1 and context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
