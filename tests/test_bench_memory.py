"""bnlab.bench.memory: the process-tree PSS it samples, and its section at tiny sizes. No timings
are asserted."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import pytest

from bnlab.bench import memory as bench_memory
from bnlab.bench import run_benchmarks

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="PSS comes from Linux's /proc/PID/smaps_rollup"
)

MAPPED_MB = 80

# Two children map the same file and touch every page, wait for each other, and stay a while:
# RSS would count the file twice; PSS, as the bench sums it, once.
SHARED_MAP = textwrap.dedent(
    """
    import mmap, os, subprocess, sys, time
    path, role = sys.argv[1], sys.argv[2]
    if role == "parent":
        children = [subprocess.Popen([sys.executable, __file__, path, str(i)]) for i in range(2)]
        sys.exit(max(child.wait() for child in children))
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    sum(view[i] for i in range(0, len(view), 4096))
    open(path + f".ready{role}", "w").close()
    while not all(os.path.exists(path + f".ready{i}") for i in range(2)):
        time.sleep(0.01)
    time.sleep(1.5)
    """
)


def test_pss_of_a_process_tree_counts_a_shared_file_once(tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(SHARED_MAP)
    peaks = {}
    for size in (4096, MAPPED_MB * 10**6):  # one page: the three interpreters alone
        data = tmp_path / f"shared{size}.bin"
        data.write_bytes(b"\1" * size)
        peaks[size] = bench_memory._peak_pss([sys.executable, str(script), str(data), "parent"], env=None)[0]
    # The file once over the interpreters (whose PSS depends on what else shares their libraries);
    # counted twice it would add 160 MB.
    added = peaks[MAPPED_MB * 10**6] - peaks[4096]
    assert 0.8 * MAPPED_MB * 10**6 < added < 1.3 * MAPPED_MB * 10**6


def test_memory_section_at_tiny_sizes():
    rows = {row.name: row for row in run_benchmarks({"memory"}, quick=True)}
    peaks = [rows["peak PSS, 1 worker(s)"], rows["peak PSS, 2 worker(s)"]]
    for row in [*peaks, rows["first preparation"], rows["a worker's data ready"]]:
        assert row.median is not None and math.isfinite(row.median) and row.median > 0, row
    assert all(row.unit == "MB" and row.median > 10 for row in peaks)  # at least an interpreter with numpy
    assert "bar <= 1600 MB" in peaks[1].note and "bar <= 1 s" in rows["a worker's data ready"].note
    assert "PSS per extra worker, 1 to 2" in rows
