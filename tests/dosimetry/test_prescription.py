"""Activity prescription (MIRD single compartment, partition model, BSA) and its limits, against hand-computed
values."""

from __future__ import annotations

import pytest

from sirtreg.dosimetry import Compartments, Limits, prescribe
from sirtreg.dosimetry.prescription import bsa_shunt_factor, dubois_bsa_m2, prescribe_territories
from sirtreg.errors import InputError

# tumour 0.2 kg at a tumour-to-normal ratio of 4 in a 1.4 kg liver (density 1 g/mL), lung shunt 10 %
LIVER = Compartments(territory="liver", liver_ml=1400.0, territory_ml=1400.0, tumour_ml=200.0, normal_ml=1200.0,
                     liver_tumour_ml=200.0, density_g_per_ml=1.0, tumour_to_normal_ratio=4.0,
                     territory_count_fraction=0.9)
C = 49.67  # Y-90, Gy kg/GBq


def test_mird_gives_the_territory_its_mean_dose():
    plan = prescribe("mird", LIVER, dose_gy=120.0, lung_shunt_fraction=0.1)
    assert plan.activity_gbq == pytest.approx(120.0 * 1.4 / (C * 0.9))  # 3.758 GBq
    assert plan.binding == "prescription"
    assert plan.doses_gy["territory"] == pytest.approx(120.0)
    assert plan.doses_gy["lung"] == pytest.approx(C * plan.activity_gbq * 0.1)


def test_partition_model_gives_the_tumour_its_dose():
    plan = prescribe("partition", LIVER, dose_gy=120.0, target="tumour", lung_shunt_fraction=0.1)
    # D_N = 120 / 4 = 30 Gy; A = 30 (4 x 0.2 + 1.2) / (49.67 x 0.9) = 1.3422 GBq
    assert plan.activity_gbq == pytest.approx(30.0 * 2.0 / (C * 0.9))
    assert plan.doses_gy["tumour"] == pytest.approx(120.0)
    assert plan.doses_gy["normal liver"] == pytest.approx(30.0)
    assert plan.doses_gy["lung"] == pytest.approx(C * plan.activity_gbq * 0.1)  # 6.67 Gy
    normal = prescribe("partition", LIVER, dose_gy=30.0, target="normal", lung_shunt_fraction=0.1)
    assert normal.activity_gbq == pytest.approx(plan.activity_gbq)


def test_holmium_scales_with_its_dose_factor():
    yttrium = prescribe("mird", LIVER, dose_gy=60.0)
    holmium = prescribe("mird", LIVER, dose_gy=60.0, isotope="ho166")
    assert holmium.activity_gbq == pytest.approx(yttrium.activity_gbq * 49.67 / 15.87)


def test_dubois_body_surface_area():
    # 0.20247 x 1.75^0.725 x 80^0.425, worked by hand: 1.5004 x 6.4389 x 0.20247
    assert dubois_bsa_m2(175.0, 80.0) == pytest.approx(1.9561, abs=5e-4)


@pytest.mark.parametrize(("lung_shunt_fraction", "factor"), [(0.0, 1.0), (0.099, 1.0), (0.10, 0.8), (0.149, 0.8),
                                                              (0.15, 0.6), (0.20, 0.6)])
def test_bsa_reduces_the_activity_for_the_lung_shunt(lung_shunt_fraction, factor):
    assert bsa_shunt_factor(lung_shunt_fraction) == factor


def test_bsa_activity_and_its_share_for_a_perfused_volume():
    whole = prescribe("bsa", LIVER, microspheres="resin", height_cm=175.0, weight_kg=80.0, lung_shunt_fraction=0.12)
    bsa = dubois_bsa_m2(175.0, 80.0)
    assert whole.activity_gbq == pytest.approx((bsa - 0.2 + 200.0 / 1400.0) * 0.8)
    # the lobe holds half the liver and all its tumour: the whole liver's involvement counts, times its share
    lobe = Compartments(territory="perfused volume", liver_ml=1400.0, territory_ml=700.0, tumour_ml=200.0,
                        normal_ml=500.0, liver_tumour_ml=200.0, density_g_per_ml=1.0, tumour_to_normal_ratio=4.0,
                        territory_count_fraction=0.5)
    half = prescribe("bsa", lobe, microspheres="resin", height_cm=175.0, weight_kg=80.0, lung_shunt_fraction=0.12)
    assert half.activity_gbq == pytest.approx(whole.activity_gbq / 2)


def test_a_plan_over_the_lung_limit_is_refused_or_lowered_to_it():
    # A = 120 x 1.4 / (49.67 x 0.8) = 4.228 GBq: lung 49.67 x 4.228 x 0.2 = 42.0 Gy; 30 Gy at 3.02 GBq
    with pytest.raises(InputError, match=r"mird plan of 4\.23 GBq breaks the lung limit of 30 Gy per treatment "
                                         r"\(lung 42\.0 Gy.*at most 3\.02 GBq keeps every limit"):
        prescribe("mird", LIVER, dose_gy=120.0, lung_shunt_fraction=0.2)
    plan = prescribe("mird", LIVER, dose_gy=120.0, lung_shunt_fraction=0.2, within_limits=True)
    assert plan.binding == "lung limit of 30 Gy per treatment"
    assert plan.doses_gy["lung"] == pytest.approx(30.0)
    assert plan.activity_gbq == pytest.approx(30.0 / (C * 0.2))
    assert plan.prescribed_activity_gbq == pytest.approx(120.0 * 1.4 / (C * 0.8))


def test_the_cumulative_lung_limit_counts_earlier_treatments():
    limits = Limits(previous_lung_gy=45.0)  # the plan's 6.67 Gy would make 51.7 Gy
    with pytest.raises(InputError, match=r"cumulative lung limit of 50 Gy \(45 Gy before\)"):
        prescribe("partition", LIVER, dose_gy=120.0, lung_shunt_fraction=0.1, limits=limits)
    plan = prescribe("partition", LIVER, dose_gy=120.0, lung_shunt_fraction=0.1, limits=limits, within_limits=True)
    assert plan.doses_gy["cumulative lung"] == pytest.approx(50.0)


def test_a_normal_liver_limit_binds_the_partition_model():
    limits = Limits(normal_liver_gy=40.0)
    plan = prescribe("partition", LIVER, dose_gy=250.0, limits=limits, within_limits=True)
    assert plan.binding == "normal liver limit of 40 Gy"
    assert plan.doses_gy["normal liver"] == pytest.approx(40.0) and plan.doses_gy["tumour"] == pytest.approx(160.0)
    assert plan.prescribed_activity_gbq > plan.activity_gbq


@pytest.mark.parametrize(("method", "options", "message"), [
    ("dosimetry", {"dose_gy": 1.0}, "method must be one of mird, partition, bsa"),
    ("mird", {}, r"the mird method needs a target dose \(Gy\)"),
    ("mird", {"dose_gy": -1.0}, r"mird target dose \(Gy\) must be a positive number"),
    ("partition", {"dose_gy": 100.0, "target": "lesion"}, "target is tumour or normal, got 'lesion'"),
    ("bsa", {"microspheres": "glass", "height_cm": 170, "weight_kg": 70}, "resin Y-90 microspheres only"),
    ("bsa", {"microspheres": "resin", "isotope": "ho166", "height_cm": 170, "weight_kg": 70}, "resin Y-90"),
    ("bsa", {"microspheres": "resin"}, "needs the patient's height"),
    ("bsa", {"microspheres": "resin", "height_cm": 17, "weight_kg": 70}, "expected 50-250 cm"),
    ("bsa", {"microspheres": "resin", "height_cm": 170, "weight_kg": 70, "dose_gy": 50.0}, "takes no target dose"),
    ("bsa", {"microspheres": "resin", "height_cm": 170, "weight_kg": 70, "lung_shunt_fraction": 0.21},
     "above 20 %: the BSA method allows no treatment"),
    ("mird", {"dose_gy": 100.0, "microspheres": "ceramic"}, "microspheres must be glass or resin"),
    ("mird", {"dose_gy": 100.0, "lung_shunt_fraction": 1.0}, r"lung shunt fraction must be in \[0, 1\)"),
])
def test_bad_plans_are_refused(method, options, message):
    with pytest.raises(InputError, match=message):
        prescribe(method, LIVER, **options)


def test_partition_needs_tumours():
    no_tumour = Compartments(territory="liver", liver_ml=1400.0, territory_ml=1400.0, tumour_ml=0.0,
                             normal_ml=1400.0, liver_tumour_ml=0.0, density_g_per_ml=1.0,
                             tumour_to_normal_ratio=None, territory_count_fraction=0.9)
    with pytest.raises(InputError, match="needs tumour contours in the liver"):
        prescribe("partition", no_tumour, dose_gy=100.0)
    assert prescribe("mird", no_tumour, dose_gy=100.0).doses_gy.keys() == {"territory", "lung", "cumulative lung"}


@pytest.mark.parametrize(("limits", "message"), [
    ({"previous_lung_gy": 50.0}, "leaves nothing of the 50 Gy cumulative lung limit"),
    ({"previous_lung_gy": -1.0}, "earlier lung dose must be >= 0 Gy"),
    ({"lung_gy": 0.0}, r"lung limit \(Gy\) must be a positive number"),
    ({"normal_liver_gy": float("nan")}, r"normal liver limit \(Gy\) must be a positive number"),
])
def test_bad_limits_are_refused(limits, message):
    with pytest.raises(InputError, match=message):
        Limits(**limits)


def test_a_tumour_without_counts_gets_no_dose_and_cannot_be_the_target():
    """R = 0: all the activity goes to the normal liver, whose dose per GBq counts its mass alone."""
    cold = Compartments(territory="liver", liver_ml=1400.0, territory_ml=1400.0, tumour_ml=400.0, normal_ml=1000.0,
                        liver_tumour_ml=400.0, density_g_per_ml=1.0, tumour_to_normal_ratio=0.0,
                        territory_count_fraction=0.9)
    plan = prescribe("mird", cold, dose_gy=40.0, limits=Limits(normal_liver_gy=40.0), within_limits=True)
    assert plan.doses_gy["tumour"] == 0.0
    assert plan.doses_gy["normal liver"] == pytest.approx(40.0)  # the limit binds: C A / 1.0 kg
    assert plan.activity_gbq == pytest.approx(40.0 * 1.0 / C)
    with pytest.raises(InputError, match="hold no MAA counts"):
        prescribe("partition", cold, dose_gy=120.0, target="tumour")


def test_a_plan_without_territories_is_refused():
    with pytest.raises(InputError, match="a plan needs at least one territory"):
        prescribe_territories("mird", [], dose_gy=100.0)
