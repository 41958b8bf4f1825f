"""Runs on a Dask cluster, with the bytes they would have here.

A Dask worker imports numpy before it runs any task, so OpenBLAS has chosen its kernels by the
time bnlab could pin them (bnlab.numerics): a worker started plainly on an AVX-512 machine computes
with SkylakeX kernels and other bytes. Before the first run, bnlab therefore registers a nanny
plugin (PortableNumerics) that puts OPENBLAS_CORETYPE into each nanny's environment and restarts
its worker process, which loads OpenBLAS anew with the portable kernels; the scheduler keeps the
plugin and gives it to every nanny that joins later. Dask's own `Environ` nanny plugin is not
enough: it updates the environment inside the worker process, after numpy has loaded. A worker
without a nanny (`--no-nanny`) cannot be restarted: bnlab refuses to send it runs, naming it and
the fix, unless told to accept its numbers (allow_unportable), which every run then records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from bnlab import numerics
from bnlab.errors import BnlabError
from bnlab.lab.choices import DASK_WAIT_S
from bnlab.lab.executors import Progress, execute_run, outcome_of
from bnlab.lab.train import RunOutcome

try:
    from distributed import Client, Queue, as_completed, get_worker
    from distributed.diagnostics.plugin import NannyPlugin
except ImportError:  # the dask extra is optional: DaskExecutor says what to install
    Client = None
    NannyPlugin = object

if TYPE_CHECKING:
    from bnlab.spec.experiment import Run

PLUGIN_NAME = "bnlab-portable-numerics"
NOTICE_EVERY_S = 10.0


class PortableNumerics(NannyPlugin):
    """Sets OPENBLAS_CORETYPE to the portable kernels in the nanny's environment and the one it
    spawns workers with, then (restart = True) restarts its worker process so that they apply."""

    restart = True
    name = PLUGIN_NAME

    def setup(self, nanny) -> None:
        if numerics.missing_flags(numerics.PORTABLE_KERNEL, numerics.cpu_flags()):
            return  # this host cannot run them: its worker stays as it is, and is refused
        for environment in (os.environ, nanny.pre_spawn_env, nanny.env):
            environment["OPENBLAS_CORETYPE"] = numerics.PORTABLE_KERNEL


class DaskExecutor:
    """Runs submitted to a Dask distributed cluster (`pip install 'bnlab[dask]'`), one task each.

    The workers find the data by the usual rules (data_dir if given, else their own BNLAB_DATA_DIR
    or cache folder) and prepare their own copy of it where they do not share this machine's disk.
    Before the first run it waits up to wait_for_workers seconds for a worker (saying so through
    on_notice), makes the workers compute with portable numerics (the module docstring) and refuses
    any that do not, unless allow_unportable. Start workers with `--nthreads 1`: a run is
    single-threaded by design.
    """

    def __init__(
        self,
        scheduler: str,
        data_dir: str | None = None,
        timeout: float = 10,
        wait_for_workers: float = DASK_WAIT_S,
        allow_unportable: bool = False,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        if Client is None:
            raise BnlabError(
                "the Dask executor needs dask's distributed scheduler: pip install 'bnlab[dask]' "
                "(or pip install 'dask[distributed]')"
            )
        try:
            self.client = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BnlabError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask scheduler` "
                f"and workers with `dask worker {scheduler} --nthreads 1`"
            ) from None
        self.scheduler, self.data_dir = scheduler, data_dir
        self.wait_for_workers, self.allow_unportable = wait_for_workers, allow_unportable
        self.on_notice = on_notice or (lambda message: None)
        # Only a portable coordinator asks its workers for portable numerics (BNLAB_BLAS=native does not).
        self.require_portable = numerics.provenance()["mode"] == "portable" and not allow_unportable
        self._ready = False

    def execute(self, runs: list[Run], progress: Progress | None = None) -> Iterator[RunOutcome]:
        if not runs:
            return
        if not self._ready:
            self._await_workers()
            if numerics.provenance()["mode"] == "portable":
                self._make_workers_portable()
            self._ready = True
        # Workers put their epoch events on a cluster queue, each before its run's result; draining
        # the queue before yielding a finished run keeps every event ahead of its run's outcome.
        events = Queue(f"bnlab-progress-{uuid.uuid4().hex}", client=self.client) if progress else None
        futures = self.client.map(
            _execute_on_dask,
            [run.run_id for run in runs],
            [run.config for run in runs],
            data_dir=self.data_dir,
            queue_name=events.name if events else None,
            require_portable=self.require_portable,
            scheduler=self.scheduler,
            key=[f"bnlab-{run.run_id}" for run in runs],
            pure=False,
        )
        by_key = {future.key: run for future, run in zip(futures, runs, strict=True)}
        try:
            with self.client.as_current():
                finished = as_completed(futures)
                while not finished.is_empty():
                    batch = finished.next_batch(block=False)
                    if events is not None:
                        for event in events.get(batch=True):
                            progress(event)
                    for future in batch:
                        yield outcome_of(future, by_key[future.key])
                    if not batch:
                        time.sleep(0.2)
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()

    def _workers(self) -> dict[str, dict]:
        return self.client.run_on_scheduler(_workers_and_nannies)

    def _await_workers(self) -> None:
        """Return once a worker is connected; say so every NOTICE_EVERY_S seconds until then, and
        give up after wait_for_workers seconds."""
        start = time.monotonic()
        said = -NOTICE_EVERY_S
        while not self._workers():
            waited = time.monotonic() - start
            if waited >= self.wait_for_workers:
                raise BnlabError(
                    f"no Dask worker connected to {self.scheduler} in {self.wait_for_workers:g} s; start one with "
                    f"`dask worker {self.scheduler} --nthreads 1`, or wait longer with --wait-for-workers SECONDS"
                )
            if waited - said >= NOTICE_EVERY_S:
                said = waited
                self.on_notice(
                    f"waiting for workers: 0 connected to {self.scheduler} "
                    f"({waited:.0f} s of {self.wait_for_workers:g} s; start one with `dask worker {self.scheduler} "
                    f"--nthreads 1`)"
                )
            time.sleep(0.25)

    def _make_workers_portable(self) -> None:
        """Register PortableNumerics once per scheduler (nannies restart their workers), then check
        every worker: a BnlabError naming each that is not portable, unless allow_unportable."""
        if not self.client.run_on_scheduler(_has_plugin):
            before = len(self._workers())
            self.on_notice(f"restarting the cluster's {before} worker(s) with portable numerics (once per scheduler)")
            self.client.register_plugin(PortableNumerics(), name=PLUGIN_NAME)
            self.client.wait_for_workers(before, timeout=max(60.0, self.wait_for_workers))
        reports = self.client.run(_worker_numerics)
        nannies = self._workers()
        no_nanny = "; it runs without a nanny, so bnlab cannot restart it"
        refused = [
            f"{address} ({report['why']}{'' if nannies.get(address) else no_nanny})"
            for address, report in sorted(reports.items())
            if not report["portable"]
        ]
        if refused and not self.allow_unportable:
            raise BnlabError(
                f"{len(refused)} Dask worker(s) would not compute with portable numerics, so their runs would "
                f"give other bytes: {'; '.join(refused)}. Restart each as "
                f"`OPENBLAS_CORETYPE={numerics.PORTABLE_KERNEL} dask worker {self.scheduler} --nthreads 1` "
                f"(or with its nanny, without --no-nanny), "
                f"or pass --allow-unportable-workers to accept their numbers (every run records them)"
            )
        if refused:
            self.on_notice(f"{len(refused)} worker(s) not portable, accepted: {'; '.join(refused)}")


def _workers_and_nannies(dask_scheduler) -> dict[str, str | None]:
    """On the scheduler: each worker's address and its nanny's (None without one)."""
    return {address: state.nanny for address, state in dask_scheduler.workers.items()}


def _has_plugin(dask_scheduler) -> bool:
    return PLUGIN_NAME in dask_scheduler.nanny_plugins


def _worker_numerics() -> dict:
    """On a worker: whether it computes with portable numerics, and why not."""
    record = numerics.provenance()
    kernel = record["blas"]["kernel"]
    return {"portable": record["portable"], "why": record.get("why_not_portable") or f"{kernel} kernels"}


def _execute_on_dask(
    run_id: str, config: dict, data_dir: str | None, queue_name: str | None, require_portable: bool, scheduler: str
) -> RunOutcome:
    """execute_run on a Dask worker, its epoch events sent to the named cluster queue. A worker
    that joined after the check and is not portable trains nothing: its run fails, saying why."""
    if require_portable and not numerics.provenance()["portable"]:
        raise BnlabError(
            f"worker {get_worker().address} does not compute with portable numerics "
            f"({_worker_numerics()['why']}); restart it as `OPENBLAS_CORETYPE={numerics.PORTABLE_KERNEL} "
            f"dask worker {scheduler} --nthreads 1`"
        )
    put = Queue(queue_name).put if queue_name is not None else None
    return execute_run(run_id, config, data_dir, put)
