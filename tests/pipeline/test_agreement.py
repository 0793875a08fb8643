"""Which lesion numbers to trust: spreads across registrations and differences to the MAA CT's lesion, with known
answers."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.geometry import Grid, LabelVolume
from sirtreg.pipeline.agreement import LesionDose, lesion_agreement, lesion_doses, row_flag

IMAGE = "mr-image, mr-liver"


def _dose(source: str, centre=(0.0, 0.0, 0.0), mean=100.0, v70=100.0, v100=50.0, name="lesion 4", image=IMAGE):
    return LesionDose(name, source, image, centre, mean, v70, v100)


def test_registrations_that_agree_are_not_flagged():
    [agreement] = lesion_agreement([_dose("mr-image"), _dose("mr-liver", centre=(3.0, 4.0, 0.0), mean=109.0,
                                                             v70=95.0, v100=41.0)])
    assert agreement.registrations == ("mr-image", "mr-liver") and not agreement.flagged
    assert agreement.centre_spread_mm == pytest.approx(5.0)  # at the limit: not more than 5 mm
    assert agreement.mean_dose_spread_percent == pytest.approx(100 * 9 / 104.5)
    assert (agreement.v70_spread_points, agreement.v100_spread_points) == (5.0, 9.0)


def test_a_lesion_carried_far_off_by_one_registration_is_flagged_with_its_reasons():
    drawn = {"lesion 4": _dose("MAA CT", image="MAA CT", mean=230.0)}
    carried = [_dose("mr-image", mean=225.0), _dose("mr-liver", centre=(0.0, 22.6, 0.0), mean=9.0, v70=21.0, v100=0.0)]
    [agreement] = lesion_agreement(carried, drawn)
    assert agreement.flagged and agreement.centre_spread_mm == pytest.approx(22.6)
    assert agreement.reasons == (
        "mass centres up to 22.6 mm apart",
        "mean dose 9.0-225.0 Gy (185 % of their mean)",
        "V70 21-100 %",
        "V100 0-50 %",
        "mr-liver: 22.6 mm from the lesion drawn on the MAA CT",
        "mr-liver: mean dose 9.0 Gy against 230.0 Gy drawn on the MAA CT",
        "mr-liver: V70 21 % against 100 % drawn on the MAA CT",
        "mr-liver: V100 0 % against 50 % drawn on the MAA CT")
    # a registration's row names the spread and its own differences, not those of the other registration
    assert row_flag(agreement, "mr-image") == "mass centres up to 22.6 mm apart; mean dose 9.0-225.0 Gy (185 % of " \
                                             "their mean); V70 21-100 %; V100 0-50 %"
    assert "mr-liver: 22.6 mm" in row_flag(agreement, "mr-liver") and row_flag(None, "mr-liver") == ""


def test_one_registration_is_held_to_the_lesion_drawn_on_the_maa_ct_and_an_empty_lesion_is_flagged():
    drawn = {"lesion 4": _dose("MAA CT", image="MAA CT")}
    [alone] = lesion_agreement([_dose("ct", centre=(0.0, 0.0, 6.0), image="ct")], drawn)
    assert alone.centre_spread_mm is None and alone.reasons == ("ct: 6.0 mm from the lesion drawn on the MAA CT",)
    [empty] = lesion_agreement([LesionDose("lesion 4", "ct", "ct", None, None, None, None)])
    assert empty.reasons == ("ct: the carried lesion is empty on the MAA CT grid",)


def test_lesions_of_different_images_or_names_are_kept_apart():
    agreements = lesion_agreement([_dose("ct", image="ct"), _dose("mr-image", centre=(0.0, 0.0, 30.0)),
                                   _dose("mr-liver", name="lesion 5")])
    assert [(a.image, a.name, a.registrations) for a in agreements] == [
        ("ct", "lesion 4", ("ct",)), (IMAGE, "lesion 4", ("mr-image",)), (IMAGE, "lesion 5", ("mr-liver",))]
    assert not any(a.flagged for a in agreements)


def test_lesion_doses_have_the_mass_centres_of_their_labels_in_mm():
    grid = Grid((10, 8, 6), (2.0, 3.0, 4.0), (-10.0, 5.0, 100.0))
    array = np.zeros(grid.shape, np.uint8)  # (z, y, x)
    array[2, 3, 4:6] = 1  # i 4-5, j 3, k 2: centre (4.5, 3, 2) -> (-1, 14, 108) mm
    lesions = LabelVolume(array, grid, labels={1: "lesion 1", 2: "lesion 2"})
    doses = lesion_doses(lesions, {1: "lesion 1", 2: "lesion 2"},
                         {1: {"mean_gy": 120.5, "V70_percent": 90.0, "V100_percent": ""}}, source="ct", image="ct")
    assert doses[0] == LesionDose("lesion 1", "ct", "ct", pytest.approx((-1.0, 14.0, 108.0)), 120.5, 90.0, None)
    assert doses[1] == LesionDose("lesion 2", "ct", "ct", None, None, None, None)  # label 2 holds no voxel
