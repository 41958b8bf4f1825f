"""Portable numerics (issue 17): whatever kernel OpenBLAS would pick or OPENBLAS_CORETYPE names, a
bnlab process and its workers compute with the Haswell kernels and write the same bytes; the
committed reference hashes of smoke match; BNLAB_BLAS=native records the machine's own kernel; a
numpy imported before bnlab is detected, recorded and warned about once."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import reference_hashes
from conftest import bnlab

from bnlab import numerics
from bnlab.data import cifar10 as datasets

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "datasets"

x86 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="OpenBLAS's coretypes are x86-64 kernels"
)


@pytest.fixture(autouse=True)
def shared_data(monkeypatch):
    monkeypatch.setenv("BNLAB_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="module")
def haswell(tmp_path_factory) -> Path:
    """smoke under OPENBLAS_CORETYPE=Haswell, the kernels portable numerics pin."""
    os.environ["BNLAB_DATA_DIR"] = str(SHARED_DATA)
    return reference_hashes.run_smoke(tmp_path_factory.mktemp("haswell"), OPENBLAS_CORETYPE="Haswell", BNLAB_BLAS=None)


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for name in ("history.csv", "epochs.csv")
        for p in sorted(folder.glob(f"*/{name}"))
    }


def numerics_of(folder: Path) -> list[dict]:
    return [json.loads(p.read_text())["numerics"] for p in sorted(folder.glob("*/meta.json"))]


def plain_numpy_kernel(**env: str | None) -> str:
    """The kernel OpenBLAS picks in a python that imports numpy without bnlab."""
    child = {k: v for k, v in os.environ.items() if k not in env}
    child.update({k: v for k, v in env.items() if v is not None})
    code = "import numpy, threadpoolctl; print([i['architecture'] for i in threadpoolctl.threadpool_info()][0])"
    return subprocess.run(
        [sys.executable, "-c", code], env=child, capture_output=True, text=True, check=True
    ).stdout.strip()


# The machine's own AVX-512 kernels where it has them; forced on a CPU without, they would kill the process.
OWN_FAST_KERNEL = "SkylakeX" if "avx512f" in (numerics.cpu_flags() or set()) else "Zen"


@x86
@pytest.mark.parametrize(("coretype", "workers"), [(OWN_FAST_KERNEL, 2), ("Sandybridge", 1), (None, 1)])
def test_a_run_is_the_same_bytes_whatever_coretype_the_environment_names(haswell, tmp_path, coretype, workers):
    if coretype:  # without bnlab, the variable does choose those kernels here
        assert plain_numpy_kernel(OPENBLAS_CORETYPE=coretype) == coretype
    folder = reference_hashes.run_smoke(tmp_path, workers=workers, OPENBLAS_CORETYPE=coretype, BNLAB_BLAS=None)
    assert files(folder) == files(haswell) and len(files(folder)) == 8
    for record in numerics_of(folder):
        assert record["blas"]["kernel"] == "Haswell" and record["portable"] is True and record["mode"] == "portable"


@x86
def test_without_the_pin_sandybridge_kernels_give_other_bytes(haswell, tmp_path):
    """The control: what the pin prevents does happen here (else the test above proves nothing)."""
    folder = reference_hashes.run_smoke(tmp_path, OPENBLAS_CORETYPE="Sandybridge", BNLAB_BLAS="native")
    assert files(folder) != files(haswell)
    assert {r["blas"]["kernel"] for r in numerics_of(folder)} == {"Sandybridge"}


@x86
def test_native_records_the_kernel_the_machine_picks(tmp_path):
    folder = reference_hashes.run_smoke(tmp_path, OPENBLAS_CORETYPE=None, BNLAB_BLAS="native")
    machine = plain_numpy_kernel(OPENBLAS_CORETYPE=None)
    for record in numerics_of(folder):
        assert record["mode"] == "native" and record["blas"]["kernel"] == machine
        assert record["portable"] is False
        assert record["cpu"] == numerics.cpu_model() and record["numpy"] and record["blas"]["name"] == "openblas"
    # said where users look: `bnlab results` (table and JSON) and the report
    shown = bnlab("results", folder)
    lines = [line for line in shown.stderr.splitlines() if "not portable" in line]
    assert shown.exit_code == 0 and len(lines) == 1
    assert f"not portable: all 4 runs computed with {machine} kernels (BNLAB_BLAS=native)" in lines[0]
    listed = json.loads(bnlab("results", folder.parent, "--json").stdout)
    assert [row["provenance_note"] for row in listed] == [lines[0].split(": ", 1)[1].strip()]
    assert bnlab("report", folder.parent).exit_code == 0
    assert "not portable: all 4 runs" in (folder.parent / "report.html").read_text()


def test_the_reference_hashes_of_smoke_match(haswell):
    info = datasets.describe_cifar10(None)
    if info["num_train"] != 5000:
        pytest.skip("the hashes are of the shared CIFAR-10 subset (5,000 training images): its mean image differs")
    assert reference_hashes.history_hashes(haswell) == reference_hashes.read()
    assert len(reference_hashes.read()) == 4


@x86
def test_numpy_imported_before_bnlab_is_recorded_and_warned_about_once():
    code = """
import warnings, numpy, json
import bnlab
from bnlab import numerics
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = numerics.provenance()
    numerics.provenance()
print(json.dumps({"record": first, "warnings": [str(w.message) for w in caught]}))
"""
    env = {**os.environ, "OPENBLAS_CORETYPE": "Sandybridge"}
    env.pop("BNLAB_BLAS", None)
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout)  # fmt: skip
    assert out["record"]["portable"] is False and out["record"]["blas"]["kernel"] == "Sandybridge"
    assert "numpy was imported before bnlab" in out["record"]["why_not_portable"]
    assert len(out["warnings"]) == 1 and "not portable" in out["warnings"][0]


def test_provenance_differences_name_each_field_that_varies_with_its_counts():
    meta = {"versions": {"bnlab": "0.1.0", "numpy": "2.4.6"}, "git_commit": "abc",
            "numerics": {"blas": {"name": "openblas", "version": "0.3.31", "kernel": "Haswell"}, "portable": True,
                         "cpu": "AMD EPYC"}}  # fmt: skip
    other = json.loads(json.dumps(meta))
    other["numerics"]["blas"]["kernel"] = "SkylakeX"
    other["numerics"]["portable"] = False
    assert numerics.provenance_differences([meta, meta]) == {}
    differing = numerics.provenance_differences([meta, meta, other, {}])
    assert differing["kernel"] == {"Haswell": 2, "SkylakeX": 1, "unrecorded": 1}
    assert differing["portable"] == {"True": 2, "False": 1, "unrecorded": 1}
    text = numerics.describe_differences({"kernel": {"Haswell": 2, "SkylakeX": 1}})
    assert text == "kernel: Haswell (2 runs), SkylakeX (1 run)"


def test_a_bad_bnlab_blas_is_one_clear_usage_error(tmp_path):
    env = {**os.environ, "BNLAB_BLAS": "fast", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bnlab.cli", "results", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "BNLAB_BLAS='fast': choose portable" in " ".join(done.stderr.split()) and "Traceback" not in done.stderr


# A 2-core AMD EPYC of family 25 (Zen 3): AVX2, no AVX-512, as /proc/cpuinfo lists its flags.
ZEN3_FLAGS = set(
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall "
    "nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq "
    "pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor "
    "lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb "
    "stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt "
    "xsavec xgetbv1 xsaves clzero xsaveerptr rdpru wbnoinvd arat npt nrip_save umip pku ospke vaes vpclmulqdq "
    "rdpid fsrm".split()
)
AVX512_KERNEL_SETS = {"SkylakeX", "Cooperlake", "SapphireRapids"}  # OpenBLAS's kernels that execute AVX-512


def test_the_kernel_sets_chosen_for_a_cpu_without_avx512_contain_no_avx512_set():
    wanted = ["Haswell", "SkylakeX", "Cooperlake", "Sandybridge", "Prescott"]
    chosen, notes = numerics.choose_kernels(wanted, ZEN3_FLAGS)
    assert not set(chosen) & AVX512_KERNEL_SETS
    # Zen in SkylakeX's place; for Cooperlake the next set down not already tested: Nehalem (SSE4.2)
    assert chosen == ["Haswell", "Zen", "Nehalem", "Sandybridge", "Prescott"]
    assert notes == [
        "left out SkylakeX: this CPU lacks avx512f; Zen runs in its place",
        "left out Cooperlake: this CPU lacks avx512f, avx512_bf16; Nehalem runs in its place",
    ]
    assert numerics.choose_kernels(["SkylakeX", "Sandybridge", "Prescott"], ZEN3_FLAGS)[0] == [
        "Zen", "Sandybridge", "Prescott"
    ]  # fmt: skip


def test_an_avx512_cpu_tests_the_kernel_sets_asked_for():
    flags = ZEN3_FLAGS | {"avx512f", "avx512dq", "avx512bw", "avx512vl"}
    assert numerics.choose_kernels(["SkylakeX", "Sandybridge", "Prescott"], flags) == (
        ["SkylakeX", "Sandybridge", "Prescott"],
        [],
    )
    # unknown flags (not Linux): nothing can be ruled out, so nothing is
    assert numerics.choose_kernels(["SkylakeX"], None) == (["SkylakeX"], [])


def test_a_forced_kernel_the_cpu_cannot_run_is_named_with_what_it_lacks():
    message = numerics.unrunnable_kernel_message("SkylakeX", ZEN3_FLAGS)
    assert message.startswith("OPENBLAS_CORETYPE=SkylakeX: this CPU lacks avx512f")
    assert "Zen" in message and "SkylakeX," not in message  # the sets it can run, and only those
    assert numerics.unrunnable_kernel_message("haswell", ZEN3_FLAGS) is None
    assert numerics.unrunnable_kernel_message(None, ZEN3_FLAGS) is None


def test_bnlab_refuses_a_forced_kernel_this_cpu_cannot_run_before_numpy_loads():
    """Through the CLI, with a kernel set this very CPU lacks the instructions for (on an AVX2-only
    CPU SkylakeX, on an AVX-512 one without AMX SapphireRapids)."""
    flags = numerics.cpu_flags()
    kernel = next((k for k in numerics.KERNEL_NEEDS if numerics.missing_flags(k, flags)), None)
    if kernel is None:
        pytest.skip("this CPU runs every kernel set bnlab knows (or its flags cannot be read)")
    env = {**os.environ, "BNLAB_BLAS": "native", "OPENBLAS_CORETYPE": kernel, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bnlab", "gradcheck"], env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    text = " ".join(done.stderr.split())
    assert f"error: OPENBLAS_CORETYPE={kernel}: this CPU lacks" in text and "Traceback" not in text
    assert done.stdout == "" and len(lines) == 1
