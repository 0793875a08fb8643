"""Vx, Dx and DVHs of dose samples against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.dosimetry import d_gy, dose_volume_histogram, v_percent
from sirtreg.errors import InputError

TEN = np.arange(1.0, 11.0)  # ten equal voxels receiving 1, 2, ..., 10 Gy


@pytest.mark.parametrize("threshold, expected", [(0, 100), (1, 100), (5, 60), (5.5, 50), (10, 10), (10.01, 0)])
def test_vx(threshold, expected):
    assert v_percent(np.random.default_rng(1).permutation(TEN), threshold) == pytest.approx(expected)


@pytest.mark.parametrize("percent, expected", [(0, 10), (10, 10), (15, 9), (50, 6), (90, 2), (95, 1), (100, 1)])
def test_dx_is_the_minimum_dose_of_the_hottest_part(percent, expected):
    assert d_gy(TEN[::-1], percent) == expected
    assert v_percent(TEN, d_gy(TEN, percent)) >= percent


def test_cumulative_and_differential_dvh():
    dvh = dose_volume_histogram(TEN, bin_gy=1.0)
    np.testing.assert_array_equal(dvh.dose_gy, np.arange(12.0))
    np.testing.assert_allclose(dvh.cumulative_percent, [100, 100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0])
    np.testing.assert_allclose(dvh.differential_percent, [0] + [10] * 10)
    assert dvh.bin_gy == 1.0
    assert dose_volume_histogram(TEN, bin_gy=4.0).cumulative_percent.tolist() == [100, 70, 30, 0]


@pytest.mark.parametrize("call, message", [
    (lambda: v_percent(np.array([]), 70), "no dose samples: the structure is empty"),
    (lambda: d_gy(TEN, 120), r"Dx needs a percentage in \[0, 100\], got 120"),
    (lambda: dose_volume_histogram(TEN, bin_gy=0), "the DVH bin width must be > 0 Gy"),
    (lambda: v_percent(np.array([1.0, np.nan]), 70), "the dose samples hold NaN"),
])
def test_bad_input_is_refused(call, message):
    with pytest.raises(InputError, match=message):
        call()
