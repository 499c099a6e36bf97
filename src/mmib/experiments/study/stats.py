"""Paired statistics of a study: effects with 95 % confidence intervals, tests, and claim verdicts.

Values are paired by (training seed, data seed). For a claim "A is better than B"
on a metric, each pair gives the improvement ``d`` of A over B in the metric's
direction (``B - A`` for a metric where lower is better, ``A - B`` otherwise), so
``d > 0`` always means "as claimed". The effect is the mean of ``d`` with a t
confidence interval; the standardised effect is Cohen's d_z = mean / sd of the
differences with an exact interval from the noncentral t distribution. Tests are
scipy's (``ttest_1samp`` on the differences, i.e. ``ttest_rel``, or ``wilcoxon``);
several comparisons in one claim are Holm-adjusted.

Verdicts: **holds** (significant in the claimed direction; for a margin claim, the
one-sided test shows A is no worse than B by more than the margin), **does not hold**
(significant the other way, or the 95 % interval excludes every improvement of at
least ``min_effect``; for a margin claim, A is significantly worse than B by more than
the margin), otherwise **inconclusive at this power**.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive at this power"
CONFIDENCE = 0.95

Pair = tuple[int, int]


@dataclass
class Effect:
    """One paired comparison (``better`` vs ``than``), in the claimed direction."""

    better: str
    than: str
    n: int
    mean: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    dz: float = math.nan
    dz_ci: tuple[float, float] = (math.nan, math.nan)
    p: float = math.nan
    p_adjusted: float = math.nan
    verdict: str = INCONCLUSIVE
    reason: str = ""
    pairs: list[Pair] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = [list(p) for p in self.pairs]
        return d


def paired_differences(a: Mapping[Pair, float], b: Mapping[Pair, float], mode: str) -> tuple[list[Pair], np.ndarray]:
    """Pairs both have finite values for, and the improvements of ``a`` over ``b`` in direction ``mode``."""
    pairs = sorted(p for p in a if p in b and math.isfinite(a[p]) and math.isfinite(b[p]))
    x = np.array([a[p] for p in pairs], dtype=np.float64)
    y = np.array([b[p] for p in pairs], dtype=np.float64)
    return pairs, (y - x) if mode == "min" else (x - y)


def mean_ci(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """t interval of the mean of ``d`` (exact when the differences are constant)."""
    from scipy import stats

    n = d.size
    if n < 2:
        return (math.nan, math.nan)
    m, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return (m, m)
    h = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (m - h, m + h)


def dz_ci(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float]]:
    """Cohen's d_z of paired differences and its interval (noncentral t inversion)."""
    from scipy import optimize, stats

    n = d.size
    if n < 2:
        return math.nan, (math.nan, math.nan)
    sd = float(d.std(ddof=1))
    m = float(d.mean())
    if sd == 0:
        value = 0.0 if m == 0 else math.copysign(math.inf, m)
        return value, (value, value)
    dz = m / sd
    # The interval of -d_z is the mirror of d_z's, so solve for |t| only: scipy's noncentral t cdf
    # returns NaN far in the tail on the other side of zero (t < 0 with ncp > 0, ...).
    t_obs = abs(dz) * math.sqrt(n)
    df = n - 1
    scale = math.sqrt(1.0 + t_obs * t_obs / (2.0 * df))  # about the noncentral t's spread at ncp = t

    def bound(q: float) -> float:
        # The cdf falls as ncp grows; walk out from ncp = t in growing steps until it crosses q, then
        # bracket the root there: the far tails, where the cdf is NaN or stuck at 0 or 1, are never reached.
        f = lambda ncp: float(stats.nct.cdf(t_obs, df, ncp)) - q  # noqa: E731
        f0 = f(t_obs)
        if not math.isfinite(f0):
            return math.nan
        if f0 == 0:
            return t_obs / math.sqrt(n)
        direction = 1.0 if f0 > 0 else -1.0
        prev, step = t_obs, 0.5 * scale
        for _ in range(100):
            x = prev + direction * step
            fx = f(x)
            if not math.isfinite(fx):
                return math.nan
            if (fx > 0) != (f0 > 0) or fx == 0:
                return optimize.brentq(f, min(prev, x), max(prev, x)) / math.sqrt(n)
            prev, step = x, step * 1.5
        return math.nan

    alpha = 1 - confidence
    low, high = bound(1 - alpha / 2), bound(alpha / 2)
    return (dz, (low, high)) if dz >= 0 else (dz, (-high, -low))


def p_value(d: np.ndarray, test: str = "t", shift: float = 0.0, alternative: str = "two-sided") -> float:
    """p of H0: the differences are centred on ``-shift`` (scipy's t test or Wilcoxon signed-rank)."""
    from scipy import stats

    x = d + shift
    if x.size < 2:
        return math.nan
    if np.all(x == 0):
        return 1.0
    if test == "t" and float(x.std(ddof=1)) == 0:  # a constant difference: no sampling noise at all
        sign = 1.0 if x[0] > 0 else -1.0
        if alternative == "two-sided":
            return 0.0
        return 0.0 if (alternative == "greater") == (sign > 0) else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "wilcoxon":
            return float(stats.wilcoxon(x, alternative=alternative).pvalue)
        return float(stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def compare(
    better: str, than: str, a: Mapping[Pair, float], b: Mapping[Pair, float], mode: str, *, test: str = "t",
) -> Effect:
    """Effect of ``better`` over ``than`` (no verdict yet: see :func:`decide`)."""
    pairs, d = paired_differences(a, b, mode)
    e = Effect(better, than, len(pairs), pairs=pairs, diffs=[float(v) for v in d])
    if d.size:
        e.mean = float(d.mean())
    if d.size >= 2:
        e.ci = mean_ci(d)
        e.dz, e.dz_ci = dz_ci(d)
        e.p = p_value(d, test)
    return e


def decide(effects: list[Effect], alpha: float, *, min_effect: float | None = None, margin: float | None = None,
           test: str = "t") -> str:
    """Set each effect's adjusted p and verdict; return the claim's verdict (all hold / any fails / else)."""
    if margin is not None:
        ps = []
        for e in effects:
            d = np.array(e.diffs)
            e.p = p_value(d, test, shift=margin, alternative="greater") if d.size >= 2 else math.nan
            ps.append(e.p)
    else:
        ps = [e.p for e in effects]
    adjusted = holm(ps)
    for e, p in zip(effects, adjusted):
        e.p_adjusted = p
        d = np.array(e.diffs)
        if e.n < 2:
            e.verdict, e.reason = INCONCLUSIVE, f"{e.n} paired value(s): a paired test needs at least 2"
        elif margin is not None:
            worse = p_value(d, test, shift=margin, alternative="less")
            if p < alpha:
                e.verdict, e.reason = HOLDS, f"no worse than by {margin:g} (one-sided p = {p:.3g})"
            elif math.isfinite(worse) and worse * len(effects) < alpha:
                e.verdict, e.reason = DOES_NOT_HOLD, f"worse by more than {margin:g} (one-sided p = {worse:.3g})"
            else:
                e.verdict, e.reason = INCONCLUSIVE, f"one-sided p = {p:.3g} >= {alpha:g}"
        elif p < alpha and e.mean > 0:
            e.verdict, e.reason = HOLDS, f"p = {p:.3g} < {alpha:g}, in the claimed direction"
        elif p < alpha and e.mean < 0:
            e.verdict, e.reason = DOES_NOT_HOLD, f"p = {p:.3g} < {alpha:g}, in the other direction"
        elif min_effect is not None and math.isfinite(e.ci[1]) and e.ci[1] < min_effect:
            e.verdict, e.reason = DOES_NOT_HOLD, (f"the 95 % CI [{e.ci[0]:.3g}, {e.ci[1]:.3g}] excludes an effect "
                                                  f"of {min_effect:g}")
        else:
            e.verdict, e.reason = INCONCLUSIVE, f"p = {p:.3g} >= {alpha:g}"
    return combine([e.verdict for e in effects])


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its comparisons': holds if all hold, does not hold if any does not, else inconclusive."""
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else INCONCLUSIVE


@dataclass
class FailureEffect:
    """A failure-rate claim: ``better`` (the row said to fail) fails more often than ``than``."""

    better: str
    than: str
    failed: int
    total: int
    other_failed: int
    other_total: int
    p: float = math.nan
    p_adjusted: float = math.nan
    rate_ci: tuple[float, float] = (math.nan, math.nan)
    verdict: str = INCONCLUSIVE
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failure_effect(better: str, than: str, failed: int, total: int, other_failed: int, other_total: int) -> FailureEffect:
    from scipy import stats

    e = FailureEffect(better, than, failed, total, other_failed, other_total)
    if total and other_total:
        table = [[failed, total - failed], [other_failed, other_total - other_failed]]
        e.p = float(stats.fisher_exact(table, alternative="greater").pvalue)
        ci = stats.binomtest(failed, total).proportion_ci(CONFIDENCE, method="exact")
        e.rate_ci = (float(ci.low), float(ci.high))
    return e


def decide_failures(effects: list[FailureEffect], alpha: float, min_effect: float | None = None) -> str:
    from scipy import stats

    for e, p in zip(effects, holm([e.p for e in effects])):
        e.p_adjusted = p
        if not (e.total and e.other_total):
            e.verdict, e.reason = INCONCLUSIVE, "no finished or failed runs to count"
            continue
        other_way = float(stats.fisher_exact([[e.failed, e.total - e.failed],
                                              [e.other_failed, e.other_total - e.other_failed]],
                                             alternative="less").pvalue)
        if p < alpha:
            e.verdict, e.reason = HOLDS, f"Fisher's exact p = {p:.3g}"
        elif other_way * len(effects) < alpha:
            e.verdict, e.reason = DOES_NOT_HOLD, f"fails less often (Fisher's exact p = {other_way:.3g})"
        elif min_effect is not None and e.rate_ci[1] < min_effect:
            e.verdict, e.reason = DOES_NOT_HOLD, (f"{e.failed} of {e.total} runs failed; the 95 % CI of its failure rate "
                                                  f"[{e.rate_ci[0]:.2f}, {e.rate_ci[1]:.2f}] excludes {min_effect:g}")
        else:
            e.verdict, e.reason = INCONCLUSIVE, f"Fisher's exact p = {p:.3g} >= {alpha:g}"
    return combine([e.verdict for e in effects])


def summarise(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite values (NaN where undefined)."""
    a = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not a.size:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan, int(a.size)
