"""Passing-Bablok regression: vectorised implementation against a loop over the published definition."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy.stats import norm

from sirtreg.dosimetry import passing_bablok
from sirtreg.dosimetry.passing_bablok import pairwise_slopes
from sirtreg.errors import InputError


def brute_force(x, y, confidence=0.95):
    """Passing and Bablok (1983), written out pair by pair."""
    n = len(x)
    slopes = []
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[j] - x[i], y[j] - y[i]
            if dx == 0 and dy == 0:
                continue  # 0/0 is not used
            slope = dy / dx if dx != 0 else math.inf  # vertical pairs
            if slope != -1:
                slopes.append(slope)
    slopes.sort()
    big_n = len(slopes)
    k = sum(1 for s in slopes if s < -1)

    def order(position):  # 1-based
        return slopes[position - 1] if 1 <= position <= big_n else math.nan

    if big_n % 2:
        b = order((big_n + 1) // 2 + k)
    else:
        b = (order(big_n // 2 + k) + order(big_n // 2 + 1 + k)) / 2
    c = norm.ppf(1 - (1 - confidence) / 2) * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    m1 = math.floor((big_n - c) / 2 + 0.5)
    m2 = big_n - m1 + 1
    lower, upper = order(m1 + k), order(m2 + k)

    def intercept(slope):
        return statistics.median([yi - slope * xi for xi, yi in zip(x, y)]) if math.isfinite(slope) else math.nan

    return b, (lower, upper), intercept(b), (intercept(upper), intercept(lower))


@pytest.mark.parametrize("seed, n", [(0, 12), (1, 25), (2, 40), (3, 7), (4, 60)])
def test_matches_the_brute_force_definition_on_data_with_ties(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, n).astype(float)  # many equal x and duplicate points
    y = np.round(1.1 * x + rng.integers(-3, 4, n) + rng.choice([0.0, 0.5], n), 1)
    fast = passing_bablok(x, y)
    slope, slope_ci, intercept, intercept_ci = brute_force(list(x), list(y))
    np.testing.assert_allclose(
        [fast.slope, *fast.slope_ci, fast.intercept, *fast.intercept_ci],
        [slope, *slope_ci, intercept, *intercept_ci], rtol=0, atol=1e-9, equal_nan=True)


def test_ties_vertical_pairs_and_minus_one_slopes():
    x = [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    y = [0.0, 1.0, 1.0, 1.0, 3.0, 2.0]  # a duplicate point, a vertical pair, a slope of exactly -1
    slopes = pairwise_slopes(np.array(x), np.array(y))
    assert slopes.size == 15 - 1 - 1 and np.isinf(slopes[-1]) and not np.any(slopes == -1)
    fast = passing_bablok(x, y)
    assert (fast.slope, fast.slope_ci, fast.intercept) == brute_force(x, y)[:3] == (1.0, (0.0, math.inf), 0.0)


@pytest.mark.parametrize("slope, intercept", [(1.0, 0.0), (0.5, 2.0), (3.0, -7.5)])
def test_noise_free_lines_are_exact(slope, intercept):
    x = np.array([1.0, 2.0, 2.0, 3.5, 5.0, 8.0, 13.0, 21.0])
    fit = passing_bablok(x, intercept + slope * x)
    assert fit.slope == pytest.approx(slope, abs=1e-12) and fit.intercept == pytest.approx(intercept, abs=1e-12)
    assert fit.slope_ci == pytest.approx((slope, slope), abs=1e-12)
    assert fit.intercept_ci == pytest.approx((intercept, intercept), abs=1e-12)
    np.testing.assert_allclose(fit.predict(x), intercept + slope * x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swapping_the_axes_inverts_the_slope(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(10, 100, 31)
    y = 5.0 + 0.8 * x + rng.normal(0, 4, x.size)
    forward, backward = passing_bablok(x, y), passing_bablok(y, x)
    assert backward.slope == pytest.approx(1 / forward.slope, rel=1e-9)
    assert backward.slope_ci == pytest.approx((1 / forward.slope_ci[1], 1 / forward.slope_ci[0]), rel=1e-9)
    assert backward.intercept == pytest.approx(-forward.intercept / forward.slope, abs=0.5)


def test_too_few_points_give_open_confidence_bounds():
    fit = passing_bablok([1.0, 2.0, 3.0], [1.1, 2.0, 3.2])
    assert math.isnan(fit.slope_ci[0]) and math.isnan(fit.slope_ci[1])


@pytest.mark.parametrize("x, y, message", [
    ([1.0, 2.0], [1.0], "x and y must have the same length, got 2 and 1"),
    ([1.0], [1.0], "at least 2 pairs are needed, got 1"),
    ([1.0, np.nan], [1.0, 2.0], "x and y must be finite numbers"),
    ([2.0, 2.0, 2.0], [3.0, 3.0, 3.0], "needs at least two distinct points"),
    ([1.0, 2.0, 3.0, 4.0], [8.0, 6.0, 4.0, 2.0], "needs positively related data"),
])
def test_bad_input_is_refused(x, y, message):
    with pytest.raises(InputError, match=message):
        passing_bablok(x, y)
