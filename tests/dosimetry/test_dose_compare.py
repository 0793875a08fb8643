"""Cohort comparison statistics of reference vs registered lesion doses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sirtreg.dosimetry import (
    StructureDose,
    compare_metric,
    compare_structure_doses,
    pearson_r,
    quartiles,
    relative_difference_percent,
)
from sirtreg.errors import InputError


def lesion(name, mean_gy, v70, v100, error=None):
    if error:
        return StructureDose(name=name, volume_ml=1.0, error=error)
    return StructureDose(name=name, volume_ml=1.0, mean_gy=mean_gy, v_percent={70.0: v70, 100.0: v100})


def test_relative_difference_and_quartiles():
    np.testing.assert_allclose(relative_difference_percent([100.0, 50.0, 80.0], [110.0, 45.0, 80.0]), [10, -10, 0])
    # interpolated between order statistics (a weighted sum): compared within a relative 1e-9
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((2.0, 3.0, 4.0), rel=1e-9)
    with pytest.raises(InputError, match="a relative difference needs non-zero reference values"):
        relative_difference_percent([0.0, 1.0], [1.0, 1.0])


def test_pearson_confidence_interval_is_fishers():
    rng = np.random.default_rng(5)
    x = rng.normal(size=23)
    y = x + rng.normal(scale=0.7, size=23)
    result = pearson_r(x, y)
    reference = stats.pearsonr(x, y)
    assert result.r == pytest.approx(reference.statistic)
    assert result.ci == pytest.approx(tuple(reference.confidence_interval(0.95)))
    z = np.arctanh(result.r)
    assert result.ci[0] == pytest.approx(np.tanh(z - 1.959964 / np.sqrt(20)), rel=1e-6)


def test_pearson_refuses_constant_data():
    with pytest.raises(InputError, match="Pearson's r is undefined when one of the variables is constant"):
        pearson_r([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])


def test_compare_structure_doses():
    rng = np.random.default_rng(2)
    means = rng.uniform(50, 300, 12)
    reference = [lesion(f"L{i}", m, min(100.0, m / 2), min(100.0, m / 4)) for i, m in enumerate(means)]
    registered = [lesion(f"L{i}", m * 1.05, min(100.0, m / 2) + 2, min(100.0, m / 4) - 1)
                  for i, m in enumerate(means)]
    reference.append(lesion("L12", 100.0, 50.0, 25.0))
    registered.append(lesion("L12", 0, 0, 0, error="'L12' lies outside the SPECT field of view"))
    cohort = compare_structure_doses(reference, registered)
    assert list(cohort.metrics) == ["mean dose", "V70", "V100"]
    assert cohort.skipped == ("L12 / L12: 'L12' lies outside the SPECT field of view",)
    mean = cohort.metrics["mean dose"]
    np.testing.assert_allclose(mean.difference, 5.0)
    assert mean.quartiles == pytest.approx((5.0, 5.0, 5.0)) and mean.small_difference_fraction == 1.0
    assert mean.passing_bablok.slope == pytest.approx(1.05) and mean.pearson.r == pytest.approx(1.0)
    np.testing.assert_allclose(cohort.metrics["V100"].difference, -1.0)


def test_a_metric_without_spread_has_no_fit():
    comparison = compare_metric("V70", [100.0] * 5, [100.0] * 5, relative=False)
    assert comparison.pearson is None and comparison.passing_bablok is None
    assert comparison.quartiles == (0.0, 0.0, 0.0)


def test_unequal_cohorts_are_refused():
    with pytest.raises(InputError, match="1 reference lesions but 0 registered lesions"):
        compare_structure_doses([lesion("a", 1.0, 0.0, 0.0)], [])
