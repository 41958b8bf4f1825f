"""Provenance (issue 17): every run's meta.json says which numpy, BLAS, kernel and CPU made it and
whether numerics were portable; `bnlab results` and the report say when an experiment's runs differ."""

from __future__ import annotations

import json
import shutil

from conftest import bnlab
from threadpoolctl import threadpool_info

from bnlab.numerics import cpu_model


def test_every_meta_json_records_the_numerics_of_the_process_that_trained_it(smoke_results):
    import numpy as np

    # numpy's own BLAS, as numpy was built against it (scipy, loaded by numba, brings another)
    built = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["version"]
    blas = next(lib for lib in threadpool_info() if lib["user_api"] == "blas" and lib["version"] == built)
    metas = [json.loads(p.read_text()) for p in sorted(smoke_results.glob("*/meta.json"))]
    assert len(metas) == 4
    for meta in metas:
        record = meta["numerics"]
        assert record["numpy"] == np.__version__ == meta["versions"]["numpy"]
        assert record["blas"] == {
            "name": blas["internal_api"],
            "version": blas["version"],
            "kernel": blas["architecture"],
        }
        assert record["cpu"] == cpu_model() and record["mode"] in ("portable", "native")
        assert record["portable"] == (record["mode"] == "portable" and blas["architecture"] in ("Haswell", "Zen"))
        assert isinstance(record["numpy_simd"], list)


def test_results_and_report_say_when_runs_differ_in_provenance(smoke_results, tmp_path):
    same = bnlab("results", smoke_results)
    assert same.exit_code == 0 and "differ in provenance" not in same.output

    mixed = tmp_path / "mixed"
    shutil.copytree(smoke_results, mixed)
    meta_file = mixed / "normalization=none__seed=1" / "meta.json"
    meta = json.loads(meta_file.read_text())
    kernel = meta["numerics"]["blas"]["kernel"]
    meta["numerics"]["blas"]["kernel"] = "Elsewhere"  # as if made on another machine
    meta_file.write_text(json.dumps(meta))

    result = bnlab("results", mixed)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    assert f"runs differ in provenance: kernel: {kernel} (3 runs), Elsewhere (1 run)" in text
    assert "runs differ in provenance" in " ".join(bnlab("results", tmp_path).output.split())

    assert bnlab("report", mixed).exit_code == 0
    html = (mixed / "report.html").read_text()
    assert f"runs differ in provenance: kernel: {kernel} (3 runs), Elsewhere (1 run)" in html
    assert bnlab("report", smoke_results).exit_code == 0
    assert "differ in provenance" not in (smoke_results / "report.html").read_text()
