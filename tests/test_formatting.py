"""bnlab.lab.formatting: one way to write values and numbers for people."""

import math
import statistics

from bnlab.lab.formatting import format_cell, format_mean_std, format_number, format_value


def test_values_as_run_ids_write_them():
    assert format_value(None) == "none"
    assert format_value(1e-05) == "1e-05"
    assert format_value(0.00016237767391887210) == "0.000162378"
    assert format_value([100, 50]) == "100-50"
    assert format_value("batchnorm") == "batchnorm"


def test_numbers_fixed_in_the_usual_range_scientific_outside():
    assert format_number(0.8427) == "0.843"
    assert format_number(2.0961) == "2.096"
    assert format_number(0.0) == "0.000"
    assert format_number(26853570.657) == "2.69e+07"
    assert format_number(0.00016237767) == "1.62e-04"
    assert format_number(0.109, sign=True) == "+0.109"
    assert format_number(-0.028, sign=True) == "-0.028"
    assert format_number(math.nan) == "nan"


def test_mean_and_std_over_seeds():
    values = [0.13, 0.19]
    expected = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
    assert format_mean_std(values) == expected
    assert format_mean_std([0.5, math.nan]) == "0.500"
    assert format_mean_std([math.nan]) == "—"
    # the report's exploding losses: no 26853570.657 ± 2078789.274
    big = [26853570.657 - 2078789.274, 26853570.657 + 2078789.274]
    assert format_mean_std(big) == f"2.69e+07 ± {statistics.stdev(big):.2e}"


def test_csv_cells_shortened_only_when_numbers():
    assert format_cell("0.00016237767391887210") == "0.000162378"
    assert format_cell("50") == "50"
    assert format_cell("none") == "none"
    assert format_cell("[100, 100]") == "[100, 100]"
