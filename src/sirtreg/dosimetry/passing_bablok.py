"""Passing-Bablok regression (Passing and Bablok, J Clin Chem Clin Biochem 1983;21:709-20).

A method-comparison regression robust to outliers and free of assumptions on
the error distribution; its slope is a shifted median of all pairwise slopes.

For the n points, every pair i < j gives ``S_ij = (y_j - y_i) / (x_j - x_i)``;
pairs with 0/0 are left out, pairs with equal x and different y are vertical
(slope +inf, a convention independent of the order of the data), and slopes
of exactly -1 are left out. With the N remaining slopes sorted and
``K = #{S_ij < -1}``, the slope is the median shifted by K (1-based):
``S_((N+1)/2 + K)`` for odd N, the mean of ``S_(N/2 + K)`` and
``S_(N/2 + 1 + K)`` for even N. Its confidence interval is
``[S_(M1 + K), S_(M2 + K)]`` with ``C = z_(1-alpha/2) sqrt(n (n-1) (2n+5) / 18)``,
``M1 = round((N - C) / 2)``, ``M2 = N - M1 + 1``; bounds that fall outside
1..N (too few points) are NaN. The intercept is ``median(y - b x)``, its
interval ``[median(y - b_upper x), median(y - b_lower x)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from sirtreg.errors import InputError


@dataclass(frozen=True)
class PassingBablokResult:
    """Slope and intercept of ``y = intercept + slope * x`` with their confidence intervals."""

    slope: float
    slope_ci: tuple[float, float]
    intercept: float
    intercept_ci: tuple[float, float]
    n: int
    confidence: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(x, dtype=np.float64)


def paired_values(x: np.ndarray, y: np.ndarray, *, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 vectors of equal length >= ``minimum``, refusing NaN and infinity."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise InputError(f"x and y must have the same length, got {x.size} and {y.size}")
    if x.size < minimum:
        raise InputError(f"at least {minimum} pairs are needed, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InputError("x and y must be finite numbers")
    return x, y


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _order_statistic(sorted_slopes: np.ndarray, position: int) -> float:
    """The 1-based ``position``-th sorted slope, or NaN outside 1..N."""
    return float(sorted_slopes[position - 1]) if 1 <= position <= sorted_slopes.size else math.nan


def pairwise_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sorted slopes of all pairs i < j, without 0/0 pairs and slopes of exactly -1."""
    i, j = np.triu_indices(x.size, k=1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    keep = (dx != 0) | (dy != 0)
    dx, dy = dx[keep], dy[keep]
    with np.errstate(divide="ignore"):
        slopes = np.where(dx != 0, dy / np.where(dx != 0, dx, 1.0), np.inf)
    return np.sort(slopes[slopes != -1.0])


def passing_bablok(x: np.ndarray, y: np.ndarray, *, confidence: float = 0.95) -> PassingBablokResult:
    """Passing-Bablok regression of ``y`` (new method) on ``x`` (reference), both (n,).

    Raises :class:`InputError` when fewer than 2 pairs are given or no slope
    can be formed, and when the data are so negatively related that the shifted
    median falls outside the slopes (the method assumes a positive relation).
    """
    x, y = paired_values(x, y)
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence!r}")
    slopes = pairwise_slopes(x, y)
    total = slopes.size
    if total == 0:
        raise InputError("Passing-Bablok regression needs at least two distinct points")
    shift = int(np.count_nonzero(slopes < -1.0))
    if total % 2:
        slope = _order_statistic(slopes, (total + 1) // 2 + shift)
    else:
        slope = 0.5 * (_order_statistic(slopes, total // 2 + shift) + _order_statistic(slopes, total // 2 + 1 + shift))
    if not math.isfinite(slope):
        raise InputError("Passing-Bablok regression needs positively related data; the slope is undefined here")
    n = x.size
    c_gamma = norm.ppf(0.5 + confidence / 2.0) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    m1 = _round_half_up((total - c_gamma) / 2.0)
    m2 = total - m1 + 1
    lower, upper = _order_statistic(slopes, m1 + shift), _order_statistic(slopes, m2 + shift)

    def intercept_for(b: float) -> float:
        return float(np.median(y - b * x)) if math.isfinite(b) else math.nan

    return PassingBablokResult(
        slope=slope,
        slope_ci=(lower, upper),
        intercept=intercept_for(slope),
        intercept_ci=(intercept_for(upper), intercept_for(lower)),
        n=n,
        confidence=confidence,
    )
