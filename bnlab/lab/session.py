"""A lab session: the one sequence every command that trains follows.

    specs -> experiments (load_experiments) -> the results root checked (check_out)
          -> an executor (open_session) -> sweeps (Session.run) or claims (Session.claims)
          -> for the runs that train, and only then: the data found, fetched if allowed, and
             every split checked and prepared (OnDemand, prepare_data)

`bnlab run` and `bnlab claims` are this sequence with their own progress display; nothing here
prints. Every problem is a BnlabError naming what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from bnlab.data import cifar10 as data
from bnlab.data import datasets
from bnlab.errors import DataError, SpecError
from bnlab.lab import results, weights
from bnlab.lab.choices import ExecutorKind
from bnlab.lab.executors import Executor, make_executor
from bnlab.lab.runner import SweepReport, run_experiment
from bnlab.lab.worker_start import default_workers
from bnlab.nn import fused, kernels
from bnlab.spec.experiment import Experiment, Run, load_experiment


def load_experiments(specs: list[Path], overrides: list[str] | None = None) -> list[Experiment]:
    """The experiments of the spec files, with the --set overrides; two with one name would share a folder."""
    experiments = [load_experiment(spec, overrides or []) for spec in specs]
    names = [e.name for e in experiments]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SpecError(f"two specs name the experiment {duplicate!r}; their results would share a folder")
    return experiments


def check_out(out: Path) -> None:
    """The results root is a folder that exists or can be made, and can be written."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: is a file, not a folder; name a folder for the results")
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise SpecError(f"--out {out}: {existing} is a file, so no folder can be made inside it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(f"--out {out}: {existing} is not writable; choose a folder you can write to")


def prepare_data(
    data_dir: Path | None,
    requests: list[tuple[str, datasets.Request]],
    download: Callable[[Path | None, str], Path] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Path:
    """Find every data set of `requests` ((where the request comes from, the request) pairs;
    download(data_dir, name) fetches one into the cache when it is nowhere and no folder was named),
    check every request's splits fit it, and prepare each split (bnlab.data.prepared) once, here, so
    that every worker maps the same copy instead of making its own; on_notice(message) hears when a
    damaged copy was rebuilt. Returns the data folder, absolute, for the workers."""
    for name in sorted({request.dataset for _, request in requests}):
        found = datasets.locate(name, data_dir)
        if found is None and (data_dir is not None or os.environ.get(data.ENV_VAR) or download is None):
            # A folder named by --data-dir or BNLAB_DATA_DIR without the data is a mistake to report
            # (a typo, an unmounted share), not a place to download into: only the cache is filled.
            raise DataError(datasets.not_found_message(name, data_dir))
        if found is None:
            found = download(data_dir, name)
        num_pool, num_test = datasets.counts(name, data_dir)  # every file read and checked
        for source, r in requests:
            if r.dataset == name and (r.num_train + r.num_val > num_pool or r.num_test > num_test):
                raise SpecError(
                    f"{source}: data asks for num_train {r.num_train} + num_val {r.num_val} "
                    f"training images and num_test {r.num_test}, but {found} holds "
                    f"{num_pool} training and {num_test} test images; lower them "
                    f"(e.g. --set data.num_train={max(num_pool - r.num_val, 1)})"
                )
    for request in sorted({request for _, request in requests}, key=str):
        notice = datasets.prepare_dataset(request, data_dir).notice
        if notice and on_notice is not None:
            on_notice(notice)
    return data.find_data_dir(data_dir).resolve()


def ready_kernels(dtypes: set[str], on_notice: Callable[[str], None] | None = None) -> None:
    """Compile bnlab's kernels for `dtypes` here, once, before any worker starts (they then load
    them from the disk cache); on_notice hears when they are compiled, and how long it took. Once
    done for this CPU, these dtypes and this kernels.py (numba's cache keys the source by its time
    and size too), a marker in the cache says so and later sweeps skip this: their workers load
    just the kernels they use."""
    cache = Path(os.environ.get("NUMBA_CACHE_DIR", "."))
    source = os.stat(kernels.__file__)
    stamp = f"{kernels.target_key()}-{int(source.st_mtime)}-{source.st_size}"
    marker = cache / f"ready-{stamp}-{'-'.join(sorted(dtypes))}"
    if marker.exists():
        return
    if on_notice is not None and not any(cache.rglob("*.nbi")):
        on_notice(f"compiling bnlab's kernels, once for this machine (cached in {cache})")
    compiled, seconds = fused.warm_up(tuple(np.dtype(name).type for name in sorted(dtypes)))
    if compiled and on_notice is not None:
        on_notice(f"compiled {compiled} kernel signatures in {seconds:.1f} s; later runs load them from the cache")
    with contextlib.suppress(OSError):  # a read-only cache only costs the next sweep this warm-up
        cache.mkdir(parents=True, exist_ok=True)
        marker.touch()


class OnDemand:
    """An executor whose data is found and prepared only when runs are to train, the first time
    each data request is seen: a rerun of finished work reads and downloads nothing."""

    def __init__(
        self,
        make: Callable[[Path | None], Executor],
        data_dir: Path | None,
        sources: dict[datasets.Request, str],
        download: Callable | None,
        on_notice: Callable[[str], None] | None,
    ) -> None:
        self._make, self._data_dir, self._sources = make, data_dir, sources
        self._download, self._on_notice = download, on_notice
        self._ready: set[datasets.Request] = set()
        self._executor: Executor | None = None

    def prepare(self, runs: list[Run]) -> None:
        """Find, check and prepare the data of `runs` not prepared yet (prepare_data); make the
        executor once the data is there."""
        requests = {datasets.Request.of_run(run.config) for run in runs} - self._ready
        if requests:
            pairs = [(self._sources.get(r, f"the {r.dataset} runs"), r) for r in sorted(requests, key=str)]
            root = prepare_data(self._data_dir, pairs, self._download, self._on_notice)
            self._ready |= requests
            if self._executor is None:
                ready_kernels({run.config["model"]["dtype"] for run in runs}, self._on_notice)
                self._executor = self._make(root)

    def execute(self, runs: list[Run], progress=None) -> Iterator:
        if runs:
            self.prepare(runs)
            yield from self._executor.execute(runs, progress)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()


def on_demand(workers: int, data_dir: Path | None = None, on_notice: Callable[[str], None] | None = None) -> OnDemand:
    """Local workers (one: this process) for runs of any recorded data, found when they train;
    nothing is downloaded."""
    return OnDemand(partial(make_executor, workers), data_dir, {}, None, on_notice)


@dataclass
class Session:
    """An executor ready for sweeps; `where` says where runs execute ("2 worker(s)", "dask tcp://...")."""

    executor: OnDemand
    workers: int
    where: str

    def run(self, experiment: Experiment, out: Path, force: bool = False, **callbacks) -> SweepReport:
        """Train the runs of `experiment` not finished under out/<name> (bnlab.lab.runner.run_experiment;
        callbacks: on_start, on_outcome, progress). Their data is made ready first, before anything
        is written."""
        rows = results.plan_rows(experiment.runs, out / experiment.name, force)
        pending = [run for run in experiment.runs if rows[run.run_id]["status"] == "pending"]
        weights.check_init_from(pending, experiment.source)
        self.executor.prepare(pending)
        return run_experiment(experiment, out, self.executor, force, **callbacks)

    def claims(self, groups: list, out: Path, ids: set[str] | None = None, **callbacks) -> list[dict]:
        """Run and evaluate the claims (bnlab.claims.run_claims; callbacks: on_experiment,
        on_outcome, progress)."""
        from bnlab.claims import run_claims  # here: scipy loads only for claims

        return run_claims(groups, out, self.executor, ids, **callbacks)


@contextlib.contextmanager
def open_session(
    experiments: list[Experiment],
    data_dir: Path | None = None,
    workers: int | None = None,
    executor: ExecutorKind = ExecutorKind.local,
    scheduler: str | None = None,
    download: Callable[[Path | None], Path] | None = None,
    on_notice: Callable[[str], None] | None = None,
    **cluster_options,
) -> Iterator[Session]:
    """A Session for `experiments`: their data is found and prepared when runs are to train
    (OnDemand; on_notice as for prepare_data, and hears the cluster's waits); cluster_options go to
    bnlab.lab.cluster.DaskExecutor. The executor is closed when the block ends, however it ends."""
    executor = ExecutorKind(executor)  # dask needs the scheduler's address
    workers = workers or default_workers()
    sources = {datasets.Request.of_run(run.config): str(e.source) for e in reversed(experiments) for run in e.runs}
    if executor is ExecutorKind.local:
        make = partial(make_executor, workers)  # given the data folder, once found
    else:
        from bnlab.lab.cluster import DaskExecutor  # here: distributed is an optional extra

        # Connected now, so that an unreachable scheduler is said at once. Dask workers may be other
        # machines: they apply the data rules themselves unless told a folder.
        folder = str(data_dir) if data_dir is not None else None
        remote = DaskExecutor(scheduler, folder, on_notice=on_notice, **cluster_options)
        make = lambda _root: remote  # noqa: E731
    runner = OnDemand(make, data_dir, sources, download, on_notice)
    where = f"{workers} worker(s)" if executor is ExecutorKind.local else f"dask {scheduler}"
    try:
        yield Session(runner, workers, where)
    finally:
        runner.close()
