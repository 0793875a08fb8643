"""Pairs with an exact truth made from a CT and its liver: motion, rendering, lesions, redrawn contours."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, LabelVolume
from sirtreg.phantom.known_pair import (
    KnownMotion,
    bias_field,
    draw_motion,
    make_known_pair,
    mr_like,
    paint_lesions,
    redraw,
    rician,
)
from sirtreg.register import registration_quality


@pytest.fixture(scope="module")
def ct_and_liver(fast_patient):
    reference = fast_patient.reference
    image = reference.image.with_array(reference.image.array.astype(np.float32))
    return image, reference.liver.array > 0


@pytest.fixture(scope="module")
def painted(ct_and_liver):
    image, liver = ct_and_liver
    return paint_lesions(image, liver, np.random.default_rng(0), volumes_ml=(2.0, 20.0, 5.0),
                         at_edge=(False, False, True))


@pytest.mark.slow
def test_lesions_have_their_volume_lie_in_the_liver_and_are_darker(ct_and_liver, painted):
    image, liver = ct_and_liver
    painted_image, lesions = painted
    assert lesions.present_labels() == [1, 2, 3]
    assert not np.any((lesions.array > 0) & ~liver)
    volumes = [lesions.volume_ml(v) for v in (1, 2)]
    # lumpy balls: within 35 % of their nominal volume (interior lesions are not clipped by the liver)
    assert volumes[0] == pytest.approx(2.0, rel=0.35) and volumes[1] == pytest.approx(20.0, rel=0.35)
    assert lesions.volume_ml(3) < 5.0  # the edge lesion is clipped by the liver surface
    for value in (1, 2, 3):
        inside = lesions.array == value
        assert np.median(painted_image.array[inside]) < np.median(image.array[liver & ~(lesions.array > 0)]) - 15


def test_a_lesion_with_no_room_is_refused(ct_and_liver):
    image, liver = ct_and_liver
    with pytest.raises(InputError, match="no room"):
        paint_lesions(image, liver, np.random.default_rng(0), volumes_ml=(5000.0,), at_edge=(False,))
    with pytest.raises(InputError, match="one at_edge flag per lesion"):
        paint_lesions(image, liver, np.random.default_rng(0), volumes_ml=(5.0, 6.0), at_edge=(False,))


@pytest.fixture(scope="module")
def motion(ct_and_liver):
    image, liver = ct_and_liver
    return draw_motion(image, liver, np.random.default_rng(1), rotation_deg=5.0, translation_mm=30.0,
                       sliding_mm=(10.0, 20.0), bspline_mm=(3.0, 6.0))


@pytest.mark.slow
def test_the_truth_inverts_the_motion(ct_and_liver, motion):
    image, _ = ct_and_liver
    points = image.grid.world_coordinates(np.float64)[::4, ::8, ::8].reshape(-1, 3)
    back = motion.floating_to_reference(motion.reference_to_floating(points))
    assert np.max(np.abs(back - points)) < 0.01  # mm; the fixed point stops at 1e-3 mm per step
    assert 10.0 < motion.description["sliding_mm"] < 21.0
    assert motion.description["rotation_deg"] <= 5.0 + 1e-9
    assert motion.description["translation_mm"] <= 30.0 + 1e-9


def test_a_pure_translation_moves_every_point_alike(ct_and_liver):
    image, _ = ct_and_liver
    shift = np.array([5.0, -3.0, 12.0])
    motion = KnownMotion(np.eye(3), np.zeros(3), shift, DisplacementField.zeros(image.grid.with_spacing((8.0,) * 3)))
    points = image.grid.world_coordinates(np.float64)[::8, ::16, ::16].reshape(-1, 3)
    np.testing.assert_allclose(motion.reference_to_floating(points), points - shift, atol=1e-9)


@pytest.fixture(scope="module")
def mr_pair(ct_and_liver, painted, motion):
    image, liver = ct_and_liver
    painted_image, lesions = painted
    liver_map = LabelVolume(liver.astype(np.uint8), image.grid, labels={1: "liver"})
    return make_known_pair(painted_image, liver_map, lesions, motion, modality="MR", spacing_mm=(2.0, 2.0, 5.0),
                           rng=np.random.default_rng(2), truncation="top", cut_fraction=0.1, contour_sd_mm=0.0)


@pytest.mark.slow
def test_a_thick_slice_mr_like_pair_has_its_truth(mr_pair):
    pair = mr_pair
    assert pair.floating.grid.spacing_mm == (2.0, 2.0, 5.0)
    assert pair.floating.modality == "MR" and pair.floating.array.min() >= 0
    truth = registration_quality(pair.truth, reference_liver=pair.reference_liver, floating_liver=pair.floating_liver,
                                 reference_landmarks=pair.reference_lesions, floating_landmarks=pair.floating_lesions)
    unregistered = registration_quality(
        DisplacementField.zeros(pair.reference.grid.with_spacing((4.0,) * 3)), reference_liver=pair.reference_liver,
        floating_liver=pair.floating_liver)
    # the truth leaves what 5 mm slices and the cut-off top of the liver leave; the motion is far larger
    assert truth.liver_dsc > 0.9 and truth.rmsd_mm < 2.5, truth
    assert unregistered.liver_msd_mm > 3 * truth.liver_msd_mm


@pytest.mark.slow
def test_the_field_of_view_cuts_the_top_of_the_liver(mr_pair):
    pair = mr_pair
    kept = pair.floating_liver.volume_ml(1) / pair.reference_liver.volume_ml(1)
    assert 0.75 < kept < 0.99


def test_mr_like_remapping_is_not_monotonic_and_bias_stays_within_30_percent(fast_patient):
    hu = np.array([-100.0, 0.0, 60.0, 300.0])
    signal = mr_like(hu, np.random.default_rng(0))
    assert signal[0] > signal[2] > signal[1] and signal[3] < signal[2]  # fat bright, water dark, bone dim
    field = bias_field(fast_patient.reference.image.grid, np.random.default_rng(0), strength=0.3)
    assert field.min() == pytest.approx(0.7, abs=1e-3) and field.max() == pytest.approx(1.3, abs=1e-3)


def test_rician_noise_has_the_rayleigh_floor_on_zero_signal():
    noise = rician(np.zeros(200_000, np.float32), 10.0, np.random.default_rng(0))
    assert noise.mean() == pytest.approx(10.0 * np.sqrt(np.pi / 2), rel=0.02)


def test_redrawn_contours_move_by_about_their_standard_deviation(fast_patient):
    liver = fast_patient.reference.liver
    drawn = redraw(liver, np.random.default_rng(0), sigma_mm=1.5)
    quality = registration_quality(DisplacementField.zeros(liver.grid.with_spacing((4.0,) * 3)),
                                   reference_liver=liver, floating_liver=drawn)
    assert 0.5 < quality.liver_msd_mm < 3.0
    assert redraw(liver, np.random.default_rng(0), sigma_mm=0.0) is liver
