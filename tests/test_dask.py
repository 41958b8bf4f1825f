"""The Dask executor on a 2-worker LocalCluster bound to loopback: the same results as the local
executor, a worker killed mid-run reported and resumed, and a clear message without the extra."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SHARED_DATA as DATA
from conftest import SMOKE as SMOKE_FILE
from conftest import needs_shared_data

from bnlab.errors import BnlabError
from bnlab.lab.cluster import DaskExecutor
from bnlab.lab.executors import SerialExecutor
from bnlab.lab.runner import run_experiment
from bnlab.spec.experiment import experiment_from_text

distributed = pytest.importorskip("distributed", reason="the dask extra is part of the dev install")

SMOKE = SMOKE_FILE.read_text()

# Runs of about three seconds each, so that a worker can be killed while it trains one.
SLOW = """\
name: slow
data: {num_train: 1000, num_val: 200, num_test: 10}
model: {hidden_dims: [100, 100, 100]}
solver: {update_rule: adam, batch_size: 10, num_epochs: 20}
seeds: [0, 1, 2, 3]
"""


@pytest.fixture(scope="module")
def cluster():
    import dask

    # allowed-failures 0: a task whose worker dies is reported at once rather than retried elsewhere
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"PYTHONPATH": os.pathsep.join(sys.path)},
        ) as local:
            yield local


def csv_files(folder: Path) -> dict[str, str]:
    return {
        f"{run.name}/{name}": (run / name).read_text()
        for run in sorted(p for p in folder.iterdir() if p.is_dir())
        for name in ("history.csv", "epochs.csv")
    }


@needs_shared_data
def test_dask_results_equal_the_local_executor(cluster, tmp_path):
    experiment = experiment_from_text(SMOKE, "smoke.yaml")
    local = run_experiment(experiment, tmp_path / "local", SerialExecutor(str(DATA)))
    executor = DaskExecutor(cluster.scheduler_address, str(DATA))
    try:
        remote = run_experiment(experiment, tmp_path / "dask", executor)
    finally:
        executor.close()
    assert [o.status for o in remote.outcomes] == ["done"] * 4
    assert csv_files(remote.path) == csv_files(local.path)
    drop_wall = [line.rsplit(",", 1)[0] for line in (local.path / "runs.csv").read_text().splitlines()]
    assert drop_wall == [line.rsplit(",", 1)[0] for line in (remote.path / "runs.csv").read_text().splitlines()]

    # each run records the numerics of the process that trained it: the cluster's workers inherit
    # the OPENBLAS_CORETYPE bnlab set in this process, so they compute with the same kernels
    def numerics(folder: Path) -> list[dict]:
        return [json.loads(p.read_text())["numerics"] for p in sorted(folder.glob("*/meta.json"))]

    assert len(numerics(remote.path)) == 4
    assert {r["blas"]["kernel"] for r in numerics(remote.path)} == {r["blas"]["kernel"] for r in numerics(local.path)}


@needs_shared_data
def test_epoch_progress_arrives_from_the_cluster_before_each_outcome(cluster):
    experiment = experiment_from_text(SMOKE, "smoke.yaml")
    seen: list[tuple] = []
    executor = DaskExecutor(cluster.scheduler_address, str(DATA))
    try:
        for outcome in executor.execute(
            experiment.runs, progress=lambda event: seen.append((event["run_id"], event["epoch"]))
        ):
            seen.append((outcome.run_id, "outcome"))
    finally:
        executor.close()
    for run in experiment.runs:  # smoke: 2 epochs, checked after the first iteration and after each
        mine = [entry for run_id, entry in seen if run_id == run.run_id]
        assert mine == [0, 1, 2, "outcome"]


@needs_shared_data
def test_a_worker_killed_mid_run_is_reported_and_the_sweep_resumes(cluster, tmp_path):
    experiment = experiment_from_text(SLOW, "slow.yaml")
    executor = DaskExecutor(cluster.scheduler_address, str(DATA))
    pids = list(executor.client.run(os.getpid).values())

    def kill_one_worker_while_it_trains():
        time.sleep(1.5)  # both workers are inside their first runs by now
        os.kill(pids[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_while_it_trains)
    try:
        killer.start()
        first = run_experiment(experiment, tmp_path, executor)
        killer.join()
        failed = [o for o in first.outcomes if o.status == "failed"]
        assert len(failed) >= 1 and all("KilledWorker" in o.error for o in failed)
        assert len(first.outcomes) == 4  # the other runs went on
        executor.client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead one

        second = run_experiment(experiment, tmp_path, executor)
    finally:
        executor.close()
    assert sorted(o.run_id for o in second.outcomes) == sorted(o.run_id for o in failed)
    assert all(o.status == "done" for o in second.outcomes)
    rows = (tmp_path / "slow" / "runs.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(",done," in row for row in rows)


def test_without_the_extra_the_message_says_what_to_install():
    code = """
import sys
sys.modules["distributed"] = None  # makes `import distributed` fail, as without the extra
from bnlab.errors import BnlabError
from bnlab.lab.cluster import DaskExecutor
try:
    DaskExecutor("tcp://127.0.0.1:1")
except BnlabError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'bnlab[dask]'" in done.stdout


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(BnlabError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskExecutor("tcp://127.0.0.1:9", timeout=1)
