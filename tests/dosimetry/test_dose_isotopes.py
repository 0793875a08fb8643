"""Isotope constants, names and decay correction."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from sirtreg.dosimetry import (
    HO166,
    Y90,
    Isotope,
    decay_corrected_activity_gbq,
    get_isotope,
)
from sirtreg.errors import InputError


def test_documented_constants():
    assert (Y90.dose_factor_gy_kg_per_gbq, Y90.half_life_h) == (49.67, 64.1)
    assert (HO166.dose_factor_gy_kg_per_gbq, HO166.half_life_h) == (15.87, 26.8)


@pytest.mark.parametrize("name, expected", [("y90", Y90), ("Y-90", Y90), ("90Y", Y90), ("Ho-166", HO166), ("166ho", HO166)])
def test_isotope_names(name, expected):
    assert get_isotope(name) is expected


def test_unknown_isotope_is_refused():
    with pytest.raises(InputError, match="unknown isotope 'I-131'"):
        get_isotope("I-131")


def test_custom_isotope_is_accepted_and_checked():
    assert get_isotope(Isotope("Y-90 (TG-144)", 49.38, 64.1)).dose_factor_gy_kg_per_gbq == 49.38
    with pytest.raises(InputError, match="dose factor of bad must be a positive number"):
        Isotope("bad", -1.0, 10.0)


@pytest.mark.parametrize("isotope", [Y90, HO166])
def test_one_half_life_halves_the_activity(isotope):
    calibration = datetime(2024, 5, 1, 12, 0)
    later = calibration + timedelta(hours=isotope.half_life_h)
    assert decay_corrected_activity_gbq(3.0, isotope=isotope, calibration_time=calibration,
                                        injection_time=later) == pytest.approx(1.5, rel=1e-12)
    earlier = calibration - timedelta(hours=24)
    assert decay_corrected_activity_gbq(3.0, isotope=isotope, calibration_time=calibration,
                                        injection_time=earlier) == pytest.approx(3.0 * 2 ** (24 / isotope.half_life_h))


def test_mixed_naive_and_aware_times_are_refused():
    with pytest.raises(InputError, match="both carry a timezone or both not"):
        decay_corrected_activity_gbq(1.0, isotope="y90", calibration_time=datetime(2024, 1, 1),
                                     injection_time=datetime(2024, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize("activity", [0.0, -1.0, math.nan, math.inf])
def test_bad_calibrated_activity_is_refused(activity):
    with pytest.raises(InputError, match="calibrated activity must be a positive number of GBq"):
        decay_corrected_activity_gbq(activity, isotope="y90", calibration_time=datetime(2024, 1, 1),
                                     injection_time=datetime(2024, 1, 2))
