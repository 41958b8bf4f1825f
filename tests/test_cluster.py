"""bnlab on a Dask cluster started as users start one: `dask scheduler`, then `dask worker ADDRESS`
with nothing set in the workers' environment (issue 27). The workers are made to compute with
portable numerics, so `bnlab run` and `bnlab claims` write the local executor's bytes; a worker
that cannot be made portable is refused, or accepted and flagged when the user says so; a
scheduler without workers is said at once and given up on; workers that do not share a disk
prepare their own copy of the data."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHARED_DATA, SMOKE, bnlab, needs_shared_data, write

distributed = pytest.importorskip("distributed", reason="the dask extra is part of the dev install")
pytestmark = needs_shared_data

DASK = Path(sys.executable).parent / "dask"
# What bnlab does to workers serves portable numerics; with BNLAB_BLAS=native every machine computes
# with its own kernels, by request, and nothing is made the same.
portable_only = pytest.mark.skipif(
    os.environ.get("BNLAB_BLAS", "portable") == "native", reason="BNLAB_BLAS=native asks for each machine's kernels"
)

CONV = """\
name: conv_smoke
data: {num_train: 100, num_val: 50, num_test: 50}
model: {architecture: conv, channels: [4, 8], hidden_dims: [], num_groups: 2, weight_scale: he}
solver: {update_rule: adam, batch_size: 25, num_epochs: 1}
seeds: [0]
sweep:
  model.normalization: [null, batchnorm, groupnorm]
"""

CLAIMS = """\
name: cluster_claims
data: {num_train: 100, num_val: 50, num_test: 50}
model: {hidden_dims: [10], weight_scale: 2.0e-2}
solver: {batch_size: 50, num_epochs: 1}
seeds: 5
sweep:
  model.normalization: [null, batchnorm]
claims:
  - id: bn-vs-none
    statement: Batch norm trains better than nothing.
    source: a test
    metric: best_train_acc
    key: model.normalization
    a: batchnorm
    b: null
    direction: greater
"""


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a worker started by hand: none of the variables bnlab or the tests set."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE" and not k.startswith("BNLAB_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def cluster(tmp: Path, workers: list[tuple[list[str], dict[str, str]]]) -> Iterator[str]:
    """A `dask scheduler` on loopback and `dask worker`s (flags, extra environment), as processes;
    yields the scheduler's address once every worker has connected."""
    address = f"tcp://127.0.0.1:{free_port()}"
    with contextlib.ExitStack() as stack:
        scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
        stack.enter_context(started([*scheduler, "--no-dashboard"], plain_env(), tmp / "scheduler.log"))
        for i, (flags, extra) in enumerate(workers):
            command = [str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard", *flags]
            stack.enter_context(started(command, plain_env(**extra), tmp / f"worker{i}.log"))
        if workers:
            with distributed.Client(address, timeout=60) as client:
                client.wait_for_workers(len(workers), timeout=120)
        yield address


def histories(folder: Path) -> dict[str, bytes]:
    return {
        f"{run.name}/{name}": (run / name).read_bytes()
        for run in sorted(p for p in folder.iterdir() if (p / "meta.json").is_file())
        for name in ("history.csv", "epochs.csv")
    }


def kernels(folder: Path) -> list[tuple[str, bool]]:
    metas = [json.loads(p.read_text())["numerics"] for p in sorted(folder.glob("*/meta.json"))]
    return [(m["blas"]["kernel"], m["portable"]) for m in metas]


@portable_only
def test_plain_workers_give_the_local_bytes_for_runs_and_claims(tmp_path, smoke_results):
    """Two workers started plainly (nanny on, nothing set, each with its own prepared-data folder as
    on hosts that share no disk): histories of a fully connected and a conv spec, and the claims'
    pairs, equal the local executor's."""
    write(tmp_path, "conv.yaml", CONV)
    write(tmp_path / "claims", "c.yaml", CLAIMS)
    local = bnlab("run", tmp_path / "conv.yaml", "--out", tmp_path / "local", "--workers", 1)
    assert local.exit_code == 0, local.output
    local_claims = bnlab("claims", "--dir", tmp_path / "claims", "--out", tmp_path / "local", "--workers", 1, "--json")
    assert local_claims.exit_code == 0, local_claims.output

    hosts = [([], {"BNLAB_PREPARED_DIR": str(tmp_path / f"host{i}")}) for i in (1, 2)]
    with cluster(tmp_path, hosts) as address:
        dask = ("--executor", "dask", "--scheduler", address, "--data-dir", SHARED_DATA)
        result = bnlab("run", SMOKE, tmp_path / "conv.yaml", "--out", tmp_path / "cluster", *dask)
        assert result.exit_code == 0, result.output
        remote_claims = bnlab("claims", "--dir", tmp_path / "claims", "--out", tmp_path / "cluster", "--json", *dask)
        assert remote_claims.exit_code == 0, remote_claims.output

        # each host prepared its own copy, under the same key, with the same bytes
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
        with distributed.Client(address, timeout=30) as client:
            copies = client.run(_prepared_copy, str(SHARED_DATA))
    assert histories(tmp_path / "cluster" / "smoke") == histories(smoke_results) and len(histories(smoke_results)) == 8
    assert histories(tmp_path / "cluster" / "conv_smoke") == histories(tmp_path / "local" / "conv_smoke")
    assert set(kernels(tmp_path / "cluster" / "smoke")) == {("Haswell", True)}
    remote, here = json.loads(remote_claims.stdout), json.loads(local_claims.stdout)
    assert [e["pairs"] for e in remote] == [e["pairs"] for e in here] and len(here[0]["pairs"]) == 5
    (folder_1, arrays_1), (folder_2, arrays_2) = sorted(copies.values())
    assert Path(folder_1).is_relative_to(tmp_path / "host1") and Path(folder_2).is_relative_to(tmp_path / "host2")
    assert Path(folder_1).name == Path(folder_2).name and arrays_1 == arrays_2


def _prepared_copy(data_dir: str) -> tuple[str, dict[str, str]]:
    """On a worker: smoke's data prepared in the worker's own folder, and its arrays' digests."""
    import hashlib

    from bnlab.data import datasets

    request = datasets.Request("cifar10", 200, 100, 100, "float32", None)
    prepared = datasets.prepare_dataset(request, data_dir)
    digests = {name: hashlib.sha256(array.tobytes()).hexdigest() for name, array in prepared.arrays.items()}
    return str(prepared.path), digests


@portable_only
def test_a_worker_that_cannot_be_made_portable_is_refused_or_accepted_and_flagged(tmp_path):
    """A worker without a nanny, forced to other kernels: no run reaches it, the message names it and
    the fix; --allow-unportable-workers trains on it, and `bnlab results` says the runs are not portable."""
    with cluster(tmp_path, [(["--no-nanny"], {"OPENBLAS_CORETYPE": "Sandybridge"})]) as address:
        dask = ("--executor", "dask", "--scheduler", address, "--data-dir", SHARED_DATA)
        refused = bnlab("run", SMOKE, "--out", tmp_path / "out", *dask)
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        text = " ".join(refused.stderr.split())
        assert "1 Dask worker(s) would not compute with portable numerics" in text
        assert "without a nanny" in text and f"OPENBLAS_CORETYPE=Haswell dask worker {address}" in text
        assert histories(tmp_path / "out" / "smoke") == {}  # nothing trained

        accepted = bnlab("run", SMOKE, "--out", tmp_path / "out", *dask, "--allow-unportable-workers")
        assert accepted.exit_code == 0, accepted.output
    assert set(kernels(tmp_path / "out" / "smoke")) == {("Sandybridge", False)}
    shown = bnlab("results", tmp_path / "out")
    assert "not portable: all 4 runs computed with Sandybridge kernels" in " ".join(shown.stderr.split())


def test_a_scheduler_without_workers_is_said_at_once_and_given_up_on(tmp_path):
    with cluster(tmp_path, []) as address:
        dask = ("--executor", "dask", "--scheduler", address, "--data-dir", SHARED_DATA)
        result = bnlab("run", SMOKE, "--out", tmp_path / "out", *dask, "--wait-for-workers", 2)
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.stderr.split())
    waiting = text.index(f"waiting for workers: 0 connected to {address}")
    assert waiting < text.index(f"no Dask worker connected to {address} in 2 s")
    assert "--wait-for-workers" in text
    assert histories(tmp_path / "out" / "smoke") == {}


@portable_only
def test_a_worker_that_joins_later_is_made_portable_too(tmp_path):
    """The scheduler keeps bnlab's nanny plugin: a plain worker started after bnlab's first run
    gets it when it joins, and computes with the portable kernels like the first."""
    from bnlab.lab.cluster import _worker_numerics

    with cluster(tmp_path, [([], {})]) as address:
        dask = ("--executor", "dask", "--scheduler", address, "--data-dir", SHARED_DATA)
        first = bnlab("run", SMOKE, "--out", tmp_path / "out", *dask)
        assert first.exit_code == 0, first.output
        command = [str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard"]
        with started(command, plain_env(), tmp_path / "late.log"), distributed.Client(address, timeout=30) as client:
            for _ in range(240):  # the late worker restarts once with the plugin's environment: wait for it
                client.wait_for_workers(2, timeout=120)
                reports = client.run(_worker_numerics, on_error="return")
                if len(reports) == 2 and all(isinstance(r, dict) and r["portable"] for r in reports.values()):
                    break
                time.sleep(0.5)
    assert len(reports) == 2 and all(report["portable"] for report in reports.values()), reports
