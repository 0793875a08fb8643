"""Local-deposition dose maps against analytic answers, and the refusals of bad input."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from dose_phantoms import SPECT_GRID, box_labels, box_mask

from sirtreg.dosimetry import (
    HO166,
    Territory,
    fractional_uptake_map,
    local_deposition_dose,
    measure_uptake,
)
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import read_image, write_image

UNIFORM_Y90_GY = 49.67 / 1.05  # 1 GBq in 1000 mL of 1.05 g/mL tissue


def y90(spect, liver, activity_gbq=1.0, **options):
    return local_deposition_dose(spect, [Territory(liver, activity_gbq)], **options)


@pytest.mark.parametrize("liver_fixture", ["liver_on_spect", "liver_on_ct"])
def test_uniform_uptake_gives_the_analytic_dose(request, uniform_spect, liver_fixture):
    liver = request.getfixturevalue(liver_fixture)
    result = y90(uniform_spect, liver)
    inside = box_mask(SPECT_GRID, [-50] * 3, [50] * 3)
    np.testing.assert_allclose(result.dose.array[inside], UNIFORM_Y90_GY, rtol=1e-3)
    assert UNIFORM_Y90_GY == pytest.approx(47.30, abs=0.005)
    assert result.counts_inside_fraction == pytest.approx(1.0)
    assert result.absorbed_energy_j() == pytest.approx(49.67, rel=1e-6)
    assert result.warnings == ()


def test_fractional_uptake_sums_to_one(uniform_spect, liver_on_ct):
    uptake = fractional_uptake_map(uniform_spect, liver_on_ct)
    assert uptake.grid.same_as(SPECT_GRID)
    assert float(uptake.array.sum(dtype=np.float64)) == pytest.approx(1.0, rel=1e-6)


def test_a_lesion_with_five_times_the_count_density_gets_five_times_the_dose(uniform_spect, liver_on_spect):
    lesion = box_mask(SPECT_GRID, [-20] * 3, [20] * 3)
    spect = uniform_spect.with_array(np.where(lesion, 50.0, uniform_spect.array))
    dose = y90(spect, liver_on_spect).dose.array
    normal = liver_on_spect.array.astype(bool) & ~lesion
    assert np.ptp(dose[lesion]) < 1e-3 and np.ptp(dose[normal]) < 1e-3
    assert dose[lesion].mean() / dose[normal].mean() == pytest.approx(5.0, rel=1e-6)
    # activity balance: normal dose from the count share
    share = 10.0 * normal.sum() / (10.0 * normal.sum() + 50.0 * lesion.sum())
    normal_mass_kg = normal.sum() * SPECT_GRID.voxel_volume_ml * 1.05 / 1000
    assert dose[normal].mean() == pytest.approx(49.67 * share / normal_mass_kg, rel=1e-5)


def test_density_isotope_and_lung_shunt(uniform_spect, liver_on_spect):
    result = y90(uniform_spect, liver_on_spect, 2.0, isotope=HO166, density_g_per_ml=1.0,
                 lung_shunt_fraction=0.1, lung_mass_kg=0.8)
    assert result.liver_activity_gbq == pytest.approx(1.8)
    assert result.dose.array[14, 14, 14] == pytest.approx(15.87 * 1.8 / 1.0, rel=1e-5)
    assert result.lung_dose_gy == pytest.approx(15.87 * 0.2 / 0.8)


def test_two_territories_get_their_own_activities(uniform_spect):
    left = box_labels(SPECT_GRID, [-50, -50, -50], [0, 50, 50], "left")  # x <= 0 (centres to -2)
    right = box_labels(SPECT_GRID, [2, -50, -50], [50, 50, 50], "right")
    result = local_deposition_dose(uniform_spect, [Territory(left, 1.0), Territory(right, 3.0)])
    for territory, activity in ((left, 1.0), (right, 3.0)):
        mask = territory.array.astype(bool)
        mass_kg = mask.sum() * SPECT_GRID.voxel_volume_ml * 1.05 / 1000
        np.testing.assert_allclose(result.dose.array[mask], 49.67 * activity / mass_kg, rtol=1e-5)
    assert result.absorbed_energy_j() == pytest.approx(49.67 * 4.0, rel=1e-6)


def test_counts_outside_the_liver_are_warned_about(uniform_spect, liver_on_spect, caplog):
    spect = uniform_spect.with_array(uniform_spect.array + 10.0)  # a halo of counts around the liver
    with caplog.at_level(logging.WARNING, logger="sirtreg.dosimetry"):
        result = y90(spect, liver_on_spect)
    outside = 1 - result.counts_inside_fraction
    assert outside > 0.2
    assert result.warnings == (f"{100 * outside:.1f} % of the SPECT counts lie outside liver (more than 20 %): "
                               "check the contour, lung shunt or extrahepatic uptake",)
    assert "lie outside liver" in caplog.text
    # outside the contour: the same calibration per count
    calibration = result.dose.array[14, 14, 14] / 20.0
    assert result.dose.array[0, 0, 0] == pytest.approx(10.0 * calibration, rel=1e-5)


def test_small_negative_noise_is_zeroed_with_a_warning(uniform_spect, liver_on_spect):
    array = uniform_spect.array.copy()
    array[0, 0, 0] = -1.0
    result = y90(uniform_spect.with_array(array), liver_on_spect)
    assert result.warnings == ("1 SPECT voxels with small negative values (0.00064 % of the counts) were set to 0",)
    assert result.dose.array[0, 0, 0] == 0.0


def test_the_dose_map_is_written_as_nifti(uniform_spect, liver_on_spect, tmp_path):
    dose = y90(uniform_spect, liver_on_spect).dose
    back = read_image(write_image(dose, tmp_path / "dose.nii.gz"))
    assert back.grid.same_as(dose.grid)
    np.testing.assert_allclose(back.array, dose.array)


# --- refusals -------------------------------------------------------------------

@pytest.mark.parametrize("activity", [0.0, -2.0, math.nan])
def test_bad_activity_is_refused(uniform_spect, liver_on_spect, activity):
    with pytest.raises(InputError, match="activity must be a positive number of GBq"):
        y90(uniform_spect, liver_on_spect, activity)


def test_unknown_isotope_is_refused(uniform_spect, liver_on_spect):
    with pytest.raises(InputError, match="unknown isotope 'Lu-177'"):
        y90(uniform_spect, liver_on_spect, isotope="Lu-177")


def test_no_counts_in_the_liver_is_refused(uniform_spect, liver_on_spect):
    array = np.where(liver_on_spect.array > 0, 0.0, 7.0)
    with pytest.raises(InputError, match="the SPECT has no counts inside the contour 'liver'"):
        y90(uniform_spect.with_array(array), liver_on_spect)


def test_a_liver_that_does_not_overlap_the_spect_is_refused(uniform_spect):
    far = Grid((20, 20, 20), (2.0, 2.0, 2.0), (0.0, 0.0, 900.0))
    liver = LabelVolume.from_mask(np.ones(far.shape, bool), far, name="liver")
    with pytest.raises(GeometryMismatchError, match="the contour 'liver' and the image grid do not overlap in space"):
        y90(uniform_spect, liver)


@pytest.mark.parametrize("bad, message", [
    (math.nan, "the SPECT holds 1 NaN or infinite voxels"),
    (-1e6, "the SPECT holds negative counts .* give counts, not a background-subtracted image"),
])
def test_bad_spect_voxels_are_refused(uniform_spect, liver_on_spect, bad, message):
    array = uniform_spect.array.copy()
    array[14, 14, 14] = bad
    with pytest.raises(InputError, match=message):
        y90(Volume(array, SPECT_GRID), liver_on_spect)


@pytest.mark.parametrize("options, message", [
    ({"lung_shunt_fraction": 1.0}, r"lung shunt fraction must be in \[0, 1\)"),
    ({"lung_shunt_fraction": math.nan}, r"lung shunt fraction must be in \[0, 1\)"),
    ({"density_g_per_ml": 0.0}, r"tissue density \(g/mL\) must be in \[0.3, 2\], got 0.0"),
    ({"density_g_per_ml": math.nan}, r"tissue density \(g/mL\) must be in \[0.3, 2\], got nan"),
    ({"density_g_per_ml": 1050.0}, r"tissue density \(g/mL\) must be in \[0.3, 2\], got 1050.0"),  # kg/m^3
    ({"lung_mass_kg": -1.0}, r"lung mass \(kg\) must be in \[0.1, 5\], got -1.0"),
    ({"lung_mass_kg": 1000.0}, r"lung mass \(kg\) must be in \[0.1, 5\], got 1000.0"),  # grams
])
def test_bad_options_are_refused(uniform_spect, liver_on_spect, options, message):
    with pytest.raises(InputError, match=message):
        y90(uniform_spect, liver_on_spect, **options)


def test_measure_uptake_needs_a_contour(uniform_spect):
    with pytest.raises(InputError, match="at least one contour is needed"):
        measure_uptake(uniform_spect, [])
