"""The statistics of the claims lab: paired t, effect size, Holm's adjustment, sequential seeds, power.

Every claim cell compares two runs per seed (the same seed gives both the same initial weights and
minibatches), so its data are the n differences d = a - b. From them:

- `paired_t`: mean, 95% t interval (n - 1 degrees of freedom) and the two-sided p-value of mean 0;
- `cohens_dz`: the effect size d_z = mean(d) / sd(d), in standard deviations of the differences;
- `sequential_p`: the p-value of a cell whose seeds were added in rounds (`--until-decided`).
  The procedure is a Bonferroni split of alpha over the K looks planned before the first seed:
  each look tests at alpha / K, so the chance that *any* look rejects a true null is at most
  alpha (the union bound), whatever rule decides when to stop. We chose it over an
  alpha-spending boundary or a confidence sequence because it needs no assumption about how the
  looks are correlated, it is exact for a t-test at any n (spending boundaries for the t-test are
  only approximate at 5-30 seeds), and a student can check it by hand: p_sequential = min(1, K * p).
  Its cost is some power at the last look; the lab spends it to stop early when an effect is large.
  With one look (a fixed number of seeds) p_sequential equals p_value.
- `holm`: Holm's step-down adjustment over a family of p-values, which keeps the chance of even
  one false "decided" verdict in the whole family at 5% (family-wise error), uniformly more
  powerful than Bonferroni's m * p.
- `verdict_adjusted`: supported or contradicted (by the sign of the mean difference) when the
  adjusted p-value is below 0.05, else inconclusive.
- `seeds_for_power`: the seeds a paired t-test needs to reach 80% power at an effect d_z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8


@dataclass(frozen=True)
class PairedT:
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_t(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> PairedT:
    """Paired t statistics of the differences a - b (each of shape (n,)): mean, two-sided
    `confidence` interval with n - 1 degrees of freedom, two-sided p-value of mean = 0. Identical
    differences (sd 0) give a zero-width interval and p 0 (or 1 when they are all 0)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    if n < 2:
        raise ValueError(f"a paired t interval needs at least 2 pairs, got {n}")
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return PairedT(n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return PairedT(n, mean, mean - half, mean + half, p)


def verdict(ci_low: float, ci_high: float, direction: str) -> str:
    """The unadjusted verdict: supported when the whole interval is on the claimed side of 0,
    contradicted when it is on the other side, inconclusive when it touches or contains 0."""
    above, below = ci_low > 0, ci_high < 0
    if (above and direction == "greater") or (below and direction == "less"):
        return "supported"
    if above or below:
        return "contradicted"
    return "inconclusive"


def cohens_dz(a: list[float], b: list[float]) -> float | None:
    """Cohen's d_z of the paired differences a - b: their mean over their standard deviation
    (ddof 1). None when the differences do not vary (the ratio is undefined)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return float(d.mean()) / sd if sd > 0 else None


def sequential_p(p_value: float, looks: int) -> float:
    """The p-value of the last of `looks` planned looks, Bonferroni-split: min(1, looks * p).
    Valid under any stopping rule, since P(some look has looks * p <= u) <= u by the union bound."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    return min(1.0, looks * p_value)


def planned_looks(first: int, step: int, max_seeds: int) -> list[int]:
    """The seed counts at which a cell is looked at: `first`, then `step` more each round, up to
    `max_seeds` (the last look is max_seeds itself). One look when max_seeds <= first."""
    if step < 1:
        raise ValueError(f"the round size must be at least 1, got {step}")
    looks = [first]
    while looks[-1] < max_seeds:
        looks.append(min(looks[-1] + step, max_seeds))
    return looks


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sort ascending, multiply the i-th
    smallest (i from 0) by m - i, take the running maximum, cap at 1. Rejecting where the adjusted
    value is below alpha is Holm's procedure at level alpha."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


def holm_sentence(tests: int) -> str:
    """What the adjusted verdicts mean, in one sentence."""
    return (
        f"Verdicts are adjusted for testing {tests} cells at once (Holm's method): the smallest p-value must be "
        f"below 0.05/{tests}, the next below 0.05/{max(tests - 1, 1)}, and so on, so the chance that even one "
        f"decided verdict is a fluke stays under 5%."
    )


def verdict_adjusted(p_adjusted: float, mean_diff: float, direction: str, alpha: float = ALPHA) -> str:
    """supported or contradicted (the sign of mean_diff against the claimed direction) when
    p_adjusted < alpha; else inconclusive."""
    if not p_adjusted < alpha or mean_diff == 0:
        return "inconclusive"
    claimed = mean_diff > 0 if direction == "greater" else mean_diff < 0
    return "supported" if claimed else "contradicted"


def paired_power(n: int | np.ndarray, dz: float, alpha: float = ALPHA) -> np.ndarray:
    """Power of the two-sided paired t-test at level alpha with n pairs when the true effect is d_z
    (the noncentral t distribution with n - 1 degrees of freedom and noncentrality d_z * sqrt(n))."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(dz) * np.sqrt(n)
    return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)


def seeds_for_power(dz: float | None, power: float = POWER, alpha: float = ALPHA, limit: int = 100_000) -> int | None:
    """The smallest number of seeds (pairs) at which the two-sided paired t-test at level alpha has
    `power` against an effect d_z; None when d_z is 0 or undefined, or more than `limit` are needed."""
    if dz is None or not np.isfinite(dz) or dz == 0:
        return None
    # the z approximation is a lower bound; the exact power rises with n, so search upward from it
    guess = max(2, int(((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / abs(dz)) ** 2))
    while guess <= limit:
        ns = np.arange(guess, min(guess + 64, limit + 1))
        ok = np.nonzero(paired_power(ns, dz, alpha) >= power)[0]
        if ok.size:
            return int(ns[ok[0]])
        guess += 64
    return None


def simulate_sequential(
    effect: float, looks: list[int], n_sims: int, seed: int, alpha: float = ALPHA, bonferroni: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate n_sims sequential claims whose differences are N(effect, 1), looked at after each
    seed count of `looks` and stopped at the first look with p_sequential < alpha (with
    bonferroni=False: the naive p < alpha, which optional stopping inflates). Vectorized over the
    simulations. Returns (decided (n_sims,) bool, seeds used (n_sims,) int)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, 1.0, size=(n_sims, looks[-1]))
    k = len(looks) if bonferroni else 1
    decided = np.zeros(n_sims, dtype=bool)
    used = np.full(n_sims, looks[-1])
    for n in looks:
        x = d[:, :n]
        t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
        p = 2 * stats.t.sf(np.abs(t), n - 1)
        now = ~decided & (np.minimum(1.0, k * p) < alpha)
        used[now] = n
        decided |= now
    return decided, used
