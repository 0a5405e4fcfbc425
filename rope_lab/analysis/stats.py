"""Statistics for small-seed reproductions: a 95% interval for a mean over seeds, the paired difference between two
variants run at the same seeds, and the verdict of a claim.

Intervals follow ../shared/reference/evaluation.md section 8: over n <= 10 seeds a percentile bootstrap undercovers
(77 % at n = 3 for a nominal 95 %), so the interval is the wider of Student's t-interval and the percentile bootstrap
(scipy.stats.bootstrap, 9999 resamples, fixed generator). A verdict is decided by the interval of the paired
difference, never by eye: **held** when it lies wholly on the claimed side of zero, **not held** when it lies wholly
on the other side, **inconclusive** otherwise, and also when the effect is smaller than the claim's noise floor
(the across-seed standard deviation of the metric pooled over the two compared series: what a rerun with another
seed moves it by) or when there is a single seed (no interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
VERDICTS = ("held", "not held", "inconclusive")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    std: float

    def __str__(self) -> str:
        if self.n < 2 or not math.isfinite(self.low):
            return f"{self.mean:.4g} (1 seed)" if self.n == 1 else "n/a"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def mean_interval(values: list[float] | np.ndarray, seed: int = 0) -> Interval:
    """Mean with the wider of the t-interval and the percentile bootstrap (NaN bounds for fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if sd > 0:
        boot = stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                               method="percentile", rng=np.random.default_rng(seed))
        low, high = min(low, float(boot.confidence_interval.low)), max(high, float(boot.confidence_interval.high))
    return Interval(mean, low, high, n, sd)


def paired_difference(a: dict[int, float], b: dict[int, float], seed: int = 0) -> Interval:
    """Interval of mean(a_s - b_s) over the seeds s both variants ran (pairing removes what the seed shares)."""
    common = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in common], seed=seed)


def seeds_agreeing(a: dict[int, float], b: dict[int, float]) -> tuple[int, int]:
    """(seeds where a_s > b_s, seeds both ran with finite values): how many single runs show the direction."""
    common = [s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s])]
    return sum(a[s] > b[s] for s in common), len(common)


def pooled_sd(groups: list[list[float]]) -> float:
    """Pooled within-group standard deviation over seeds: a claim's noise floor over its two compared series."""
    num = den = 0.0
    for g in groups:
        g = [v for v in g if math.isfinite(v)]
        if len(g) >= 2:
            num += float(np.var(g, ddof=1)) * (len(g) - 1)
            den += len(g) - 1
    return math.sqrt(num / den) if den else math.nan


def verdict(diff: Interval, noise_floor: float) -> str:
    """``diff`` is the paired difference signed so that positive supports the claim (see the module docstring)."""
    if diff.n < 2 or not math.isfinite(diff.low):
        return "inconclusive"
    if math.isfinite(noise_floor) and abs(diff.mean) < noise_floor:
        return "inconclusive"
    if diff.low > 0:
        return "held"
    if diff.high < 0:
        return "not held"
    return "inconclusive"


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes of n (evaluation.md 8.6)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half
