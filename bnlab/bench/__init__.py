"""`bnlab bench`: what it measures is bnlab.bench.sections, how it measures bnlab.bench.measure,
the memory of a full-size sweep bnlab.bench.memory."""

from bnlab.bench.measure import BenchRow, rows_to_json, saved_json
from bnlab.bench.sections import SECTIONS, run_benchmarks

__all__ = ["SECTIONS", "BenchRow", "rows_to_json", "run_benchmarks", "saved_json"]
