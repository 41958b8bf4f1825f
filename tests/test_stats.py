"""Known-answer tests of the claims lab's statistics (bnlab.claims.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bnlab.claims.stats import (
    cohens_dz,
    holm,
    paired_power,
    paired_t,
    planned_looks,
    seeds_for_power,
    sequential_p,
    simulate_sequential,
    verdict_adjusted,
)

# --- Holm --------------------------------------------------------------------------------------


def test_holm_textbook_example():
    # Wikipedia's "Holm-Bonferroni method" example: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05
    # rejects H4 (0.005 < 0.05/4) and H1 (0.01 < 0.05/3), then stops at H3 (0.03 > 0.05/2).
    # Adjusted by hand: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 0.04).
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_keeps_order_and_handles_ties_and_empty():
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
    assert holm([0.3]) == [0.3]
    assert holm([]) == []
    # never below the raw p, never above Bonferroni's m * p
    p = np.random.default_rng(0).uniform(size=30)
    adj = np.array(holm(p.tolist()))
    assert np.all(adj >= p) and np.all(adj <= np.minimum(1, 30 * p) + 1e-15)


# --- the adjusted verdict at its edges ---------------------------------------------------------


@pytest.mark.parametrize(
    ("p_adj", "mean", "direction", "expected"),
    [
        (0.0499, +0.1, "greater", "supported"),
        (0.0499, -0.1, "greater", "contradicted"),
        (0.0499, -0.1, "less", "supported"),
        (0.0499, +0.1, "less", "contradicted"),
        (0.05, +0.1, "greater", "inconclusive"),  # 0.05 itself is not below 0.05
        (0.05, -0.1, "less", "inconclusive"),
        (0.5, +0.1, "greater", "inconclusive"),
        (0.0, 0.0, "greater", "inconclusive"),  # no sign to decide
        (math.nan, +0.1, "greater", "inconclusive"),
    ],
)
def test_verdict_adjusted_edges(p_adj, mean, direction, expected):
    assert verdict_adjusted(p_adj, mean, direction) == expected


# --- effect size and power ---------------------------------------------------------------------


def test_cohens_dz():
    # differences 1, 2, 3: mean 2, sd 1
    assert cohens_dz([1, 2, 3], [0, 0, 0]) == pytest.approx(2.0)
    # differences -1, 1, -1, 1: mean 0 -> 0; 2, 4: mean 3, sd sqrt(2)
    assert cohens_dz([0, 2, 0, 2], [1, 1, 1, 1]) == pytest.approx(0.0)
    assert cohens_dz([3, 5], [1, 1]) == pytest.approx(-3 / -math.sqrt(2))
    assert cohens_dz([1, 1, 1], [0, 0, 0]) is None  # no spread: undefined


def test_paired_t_known_values():
    # differences 1, 2, 3: mean 2, se 1/sqrt(3), t = 2 sqrt(3) = 3.4641 with 2 df -> p = 0.07418
    t = paired_t([1, 2, 3], [0, 0, 0])
    assert t.mean_diff == pytest.approx(2.0)
    assert t.p_value == pytest.approx(0.074180, abs=1e-5)
    # t(0.975, 2) = 4.302653
    assert t.ci_high - 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_seeds_for_power_matches_the_tables():
    # G*Power (matched pairs, two-tailed, alpha 0.05, power 0.80): d_z 0.5 -> 34 pairs, 0.8 -> 15,
    # 0.2 -> 199; Cohen's (1988) table for d 1.0 gives 10 (paired: the one-sample t).
    assert seeds_for_power(0.5) == 34
    assert seeds_for_power(-0.8) == 15
    assert seeds_for_power(0.2) == 199
    assert seeds_for_power(1.0) == 10
    assert paired_power(34, 0.5) >= 0.8 > paired_power(33, 0.5)
    assert seeds_for_power(0.0) is None and seeds_for_power(None) is None


# --- sequential seeds --------------------------------------------------------------------------


def test_sequential_p_is_bonferroni_over_the_looks():
    assert sequential_p(0.01, 1) == 0.01  # a fixed design: the plain p
    assert sequential_p(0.01, 3) == pytest.approx(0.03)
    assert sequential_p(0.4, 3) == 1.0
    assert planned_looks(8, 8, 24) == [8, 16, 24]
    assert planned_looks(5, 8, 24) == [5, 13, 21, 24]
    assert planned_looks(8, 8, 8) == [8]


def test_no_true_effect_few_sequential_claims_end_decided():
    """2,000 simulated claims with no effect, looked at after 8, 16 and 24 seeds and stopped when
    decided: fewer than 5% end decided. Stopping at the naive p < 0.05 inflates it above 5%."""
    decided, _ = simulate_sequential(0.0, [8, 16, 24], n_sims=2000, seed=21)
    assert decided.mean() < 0.05
    naive, _ = simulate_sequential(0.0, [8, 16, 24], n_sims=2000, seed=21, bonferroni=False)
    assert naive.mean() > 0.06  # what the correction is for (about 0.10 with three looks)


def test_with_a_real_effect_the_sequential_design_decides_sooner_than_the_fixed_one():
    """d_z = 0.8, a budget of 24 seeds: the fixed design always spends 24; the sequential one stops
    at 8 or 16 seeds in most claims, and decides in over 90% of them (the fixed design: about 96%;
    the Bonferroni split costs a little power for stopping early)."""
    looks = [8, 16, 24]
    decided, used = simulate_sequential(0.8, looks, n_sims=2000, seed=21)
    fixed, fixed_used = simulate_sequential(0.8, [24], n_sims=2000, seed=21)
    assert fixed_used.mean() == 24
    assert used.mean() < 0.75 * 24
    assert np.median(used) <= 16
    assert decided.mean() > 0.9 and fixed.mean() > 0.9
