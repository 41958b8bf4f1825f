"""Where runs execute. An executor takes runs and yields their outcomes as they finish.

Every executor trains with one BLAS thread per run, so a run's numbers never depend on how many
runs share the machine, in a process set up as bnlab.lab.process_setup describes (subnormals flushed, large
temporaries on the heap). Each process maps the prepared data (bnlab.data.prepared: the caller prepares
it before starting workers; the operating system shares its pages between them) and reuses it for
every run it gets. Results are written by the caller, never here.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from threadpoolctl import threadpool_limits

from bnlab import numerics
from bnlab.data import datasets, views
from bnlab.lab import weights, worker_start
from bnlab.lab.process_setup import flush_subnormals, keep_large_arrays_on_heap
from bnlab.lab.train import RunOutcome, train_run

if TYPE_CHECKING:  # workers receive plain ids and configs: they need not import pydantic
    from bnlab.spec.experiment import Run

Progress = Callable[[dict], None]


class Executor(Protocol):
    """Runs go in, outcomes come out in the order they finish; `progress` receives the per-epoch
    events of the runs under way (in the calling process)."""

    def execute(self, runs: list[Run], progress: Progress | None = None) -> Iterator[RunOutcome]: ...

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); it runs nothing afterwards."""


def execute_run(run_id: str, config: dict, data_dir: str | None, progress: Progress | None = None) -> RunOutcome:
    """Load the run's data (once per process) and train it on one BLAS thread; the outcome records
    this process's numerics (a Dask worker's BLAS may not be the coordinator's)."""
    try:
        data = views.run_view(datasets.load_dataset(datasets.Request.of_run(config), data_dir), config["data"])
    except ValueError as exc:  # the run's view of the data leaves nothing to train on: this run fails
        return RunOutcome(run_id, "failed", started=time.time(), error=str(exc))
    init_from = config["model"].get("init_from")
    init_state = weights.read_state(init_from) if init_from else None
    keep_large_arrays_on_heap()
    with threadpool_limits(limits=1), flush_subnormals():
        outcome = train_run(run_id, config, data, progress, init_state)
    outcome.numerics = numerics.provenance()
    return outcome


class SerialExecutor:
    """Every run in this process, one after the other: no start-up cost, easiest to debug."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = data_dir

    def execute(self, runs: list[Run], progress: Progress | None = None) -> Iterator[RunOutcome]:
        for run in runs:
            yield execute_run(run.run_id, run.config, self.data_dir, progress)

    def close(self) -> None:
        pass  # nothing held between sweeps


# --- a pool of local worker processes -------------------------------------------------------

_progress_queue: multiprocessing.Queue | None = None


def _init_worker(progress_queue: multiprocessing.Queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    # Ctrl-C reaches the whole process group: the coordinating process alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A coordinator killed with SIGKILL cannot shut the pool down: without this, its workers
    # would wait for work forever (holding its stdout and stderr open).
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    multiprocessing.parent_process().join()
    os._exit(1)


def _worker_execute(run_id: str, config: dict, data_dir: str | None, spill_dir: str) -> RunOutcome:
    outcome = execute_run(run_id, config, data_dir, _progress_queue.put if _progress_queue is not None else None)
    # The trained net goes back as a file in spill_dir, not through the pool's pipe: a worker
    # terminated in the middle of writing a large result (Ctrl-C) would leave the coordinator
    # waiting forever for the rest of it.
    if outcome.weights is not None:
        outcome.weights_file = os.path.join(spill_dir, f"{os.getpid()}-{run_id}.npz")
        Path(outcome.weights_file).write_bytes(outcome.weights)
        outcome.weights = None
    return outcome


class ProcessExecutor:
    """Runs spread over `workers` processes of this machine, started as bnlab.lab.worker_start
    says (forked from a server that has the code and kernels loaded, or spawned)."""

    def __init__(self, workers: int, data_dir: str | None = None) -> None:
        self.workers = workers
        self.data_dir = data_dir

    def execute(self, runs: list[Run], progress: Progress | None = None) -> Iterator[RunOutcome]:
        if not runs:
            return
        context = worker_start.context()
        progress_queue = context.Queue()
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(runs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(progress_queue,),
        )
        spill_dir = tempfile.mkdtemp(prefix="bnlab-weights-")
        pending: dict[Future, Run] = {
            pool.submit(_worker_execute, run.run_id, run.config, self.data_dir, spill_dir): run for run in runs
        }
        try:
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress_queue, progress)
                for future in done:
                    run = pending.pop(future)
                    yield outcome_of(future, run)
            _drain(progress_queue, progress)
        finally:
            # Reached on success, on Ctrl-C and when the consumer stops early: leave no worker behind.
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            progress_queue.close()
            shutil.rmtree(spill_dir, ignore_errors=True)

    def close(self) -> None:
        pass  # each execute() starts and stops its own pool


def outcome_of(future, run: Run) -> RunOutcome:
    """The future's outcome, or a failed one saying why (a dead worker, missing data)."""
    try:
        outcome = future.result()
    except BrokenProcessPool:
        return RunOutcome(run.run_id, "failed", error="its worker process died (killed or out of memory)")
    except Exception as exc:  # noqa: BLE001 - e.g. dask's KilledWorker, or data missing on a worker
        return RunOutcome(run.run_id, "failed", error=f"{type(exc).__name__}: {exc}")
    if outcome.weights_file is not None:  # a worker process's weights (_worker_execute)
        outcome.weights = Path(outcome.weights_file).read_bytes()
        os.remove(outcome.weights_file)
        outcome.weights_file = None
    return outcome


def _drain(progress_queue: multiprocessing.Queue, progress: Progress | None) -> None:
    while True:
        try:
            event = progress_queue.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        if progress is not None:
            progress(event)


def make_executor(workers: int, data_dir: str | Path | None = None) -> Executor:
    """Local workers: one runs in this process, more use a process pool (a Dask cluster is
    bnlab.lab.cluster.DaskExecutor)."""
    data_dir = str(data_dir) if data_dir is not None else None
    return SerialExecutor(data_dir) if workers == 1 else ProcessExecutor(workers, data_dir)
