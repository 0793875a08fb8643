"""The compartments of an activity plan measured on a box phantom whose contours meet the SPECT's voxel edges."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import CT_GRID, SPECT_GRID, box_labels, box_mask

from sirtreg.dosimetry import measure_compartments
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, Volume

# the tumour [-18, 18]^3 mm is exactly the SPECT voxels of 35 counts; everything else has 7 (ratio 5)
SPECT = Volume(np.where(box_mask(SPECT_GRID, [-18] * 3, [18] * 3), 35.0, 7.0).astype(np.float32), SPECT_GRID)
LIVER = box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver")  # 1000 mL
TUMOUR = box_labels(CT_GRID, [-18] * 3, [18] * 3, "tumour")  # 36^3 mm = 46.656 mL
UPPER = box_labels(CT_GRID, [-50, -50, 0], [50, 50, 50], "perfused")  # 500 mL, half of the tumour


def test_a_perfused_territory_and_its_tumour_share():
    compartments = measure_compartments(SPECT, LIVER, tumours=[TUMOUR], perfused=UPPER, density_g_per_ml=1.0)
    assert compartments.territory == "perfused volume"
    assert compartments.liver_ml == pytest.approx(1000.0)
    assert compartments.territory_ml == pytest.approx(500.0)
    assert compartments.tumour_ml == pytest.approx(46.656 / 2)
    assert compartments.normal_ml == pytest.approx(500.0 - 46.656 / 2)
    assert compartments.tumour_to_normal_ratio == pytest.approx(5.0)
    assert compartments.mass_kg(500.0) == pytest.approx(0.5)
    # 7 counts in 7812.5 SPECT voxels of 64 mL/1000 and 28 more in 364.5 of them, of 7 x 29^3 + 28 x 9^3 counts
    assert compartments.territory_count_fraction == pytest.approx((7 * 7812.5 + 28 * 364.5) / (7 * 29**3 + 28 * 9**3))
    assert compartments.liver_tumour_ml == pytest.approx(46.656)  # the whole liver's, for the BSA method
    assert compartments.tumour_involvement == pytest.approx(46.656 / 1000.0)


def test_without_a_perfused_volume_the_liver_is_treated_and_a_normal_contour_is_used_as_given():
    normal = box_labels(CT_GRID, [-50, -50, 30], [50, 50, 50], "normal")
    compartments = measure_compartments(SPECT, LIVER, tumours=[TUMOUR], normal=normal)
    assert compartments.territory == "liver" and compartments.territory_ml == pytest.approx(1000.0)
    assert compartments.normal_ml == pytest.approx(200.0)
    assert compartments.tumour_to_normal_ratio == pytest.approx(5.0)
    assert compartments.mass_kg(1000.0) == pytest.approx(1.05)  # the default density
    assert measure_compartments(SPECT, LIVER).tumour_to_normal_ratio is None


def test_contours_on_another_grid_are_refused():
    other = box_labels(Grid((50, 50, 50), (2.0, 2.0, 2.0), (-49.0, -49.0, -49.0)), [-18] * 3, [18] * 3, "tumour")
    with pytest.raises(GeometryMismatchError, match="the tumour contour lies on another grid than the liver"):
        measure_compartments(SPECT, LIVER, tumours=[other])


def test_a_territory_without_normal_liver_is_refused():
    with pytest.raises(InputError, match="holds no normal liver outside the tumours"):
        measure_compartments(SPECT, LIVER, tumours=[box_labels(CT_GRID, [-50, -50, 0], [50, 50, 50], "tumour")],
                             perfused=UPPER)


def test_a_territory_no_tumour_reaches_has_no_tumour_to_normal_ratio():
    lower = box_labels(CT_GRID, [-18, -18, -50], [18, 18, -30], "tumour")  # below the upper half
    compartments = measure_compartments(SPECT, LIVER, tumours=[lower], perfused=UPPER, territory_name="upper lobe")
    assert compartments.tumour_to_normal_ratio is None and compartments.tumour_ml == 0.0
    assert compartments.territory == "upper lobe" and compartments.normal_ml == pytest.approx(500.0)
