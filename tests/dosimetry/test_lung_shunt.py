"""The lung shunt fraction measured on planar views and on the SPECT/CT, against hand-computed values, and the
lungs found in a CT (on the digital patient, whose lungs and lung shunt are known)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from dose_phantoms import CT_GRID, SPECT_GRID, box_labels, box_mask

from sirtreg.dosimetry.lung_shunt import lungs_from_ct, planar_lung_shunt, spect_lung_shunt
from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.metrics import dice

VIEW = Grid((64, 64, 1), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))


def view(lung_counts: float, liver_counts: float) -> Volume:
    """A planar view: the lung region (rows 5-14) and the liver region (rows 30-49) hold these counts in all."""
    counts = np.zeros(VIEW.shape, np.float32)
    counts[0, 5:15, 10:20] = lung_counts / 100
    counts[0, 30:50, 10:40] = liver_counts / 600
    return Volume(counts, VIEW, "NM")


def region(rows: slice, columns: slice, name: str) -> LabelVolume:
    mask = np.zeros(VIEW.shape, bool)
    mask[0, rows, columns] = True
    return LabelVolume.from_mask(mask, VIEW, name=name)


LUNG, LIVER = region(slice(5, 15), slice(10, 20), "lung"), region(slice(30, 50), slice(10, 40), "liver")


def test_planar_views_give_the_geometric_mean_shunt():
    shunt = planar_lung_shunt(view(100.0, 900.0), view(64.0, 1600.0), lung_anterior=LUNG, liver_anterior=LIVER,
                              lung_posterior=LUNG, liver_posterior=LIVER)
    # G_lung = sqrt(100 x 64) = 80, G_liver = sqrt(900 x 1600) = 1200: 80 / 1280
    assert shunt.fraction == pytest.approx(0.0625, rel=1e-6)
    assert (shunt.lung_counts, shunt.liver_counts) == (pytest.approx(80.0), pytest.approx(1200.0))
    assert shunt.describe().startswith("lung shunt fraction 6.25 % measured on the planar views")


def test_planar_regions_must_lie_on_their_view_and_hold_counts():
    other = LabelVolume.from_mask(np.ones((1, 8, 8), bool), Grid((8, 8, 1), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="the anterior lung region lies on another grid than its view"):
        planar_lung_shunt(view(100, 900), view(64, 1600), lung_anterior=other, liver_anterior=LIVER,
                          lung_posterior=LUNG, liver_posterior=LIVER)
    with pytest.raises(InputError, match="the posterior lung region holds no counts"):
        planar_lung_shunt(view(100, 900), view(0, 1600), lung_anterior=LUNG, liver_anterior=LIVER,
                          lung_posterior=LUNG, liver_posterior=LIVER)


def test_spect_counts_inside_the_lung_and_liver_contours():
    """Liver [-50, 50]^3 mm at 10 counts per SPECT voxel; a lung slab above it at 1 count per voxel."""
    counts = np.where(box_mask(SPECT_GRID, [-48] * 3, [48] * 3), 10.0, 0.0)
    counts[box_mask(SPECT_GRID, [-48, -48, 52], [48, 48, 56])] = 1.0  # 2 slices of 25 x 25 SPECT voxels
    spect = Volume(counts.astype(np.float32), SPECT_GRID, "NM")
    lung = box_labels(SPECT_GRID, [-48, -48, 52], [48, 48, 56], "lung")
    liver = box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver")  # on the CT grid: its edges meet the SPECT's
    shunt = spect_lung_shunt(spect, lung, liver)
    assert shunt.fraction == pytest.approx(2 * 625 / (2 * 625 + 10 * 25**3))
    assert shunt.lung_coverage == pytest.approx(1.0) and shunt.warnings == ()


def test_a_lung_beyond_the_spect_field_of_view_gives_a_lower_bound(caplog):
    counts = np.where(box_mask(SPECT_GRID, [-48] * 3, [48] * 3), 10.0, 1.0).astype(np.float32)
    spect = Volume(counts, SPECT_GRID, "NM")
    # a lung from z = 54 to 114 mm on a 4 mm grid of its own; the SPECT ends at 58 mm: 4 of 60 mm inside
    lung_grid = Grid((25, 25, 15), (4.0, 4.0, 4.0), (-48.0, -48.0, 56.0))
    lung = LabelVolume.from_mask(np.ones(lung_grid.shape, bool), lung_grid, name="lung")
    with caplog.at_level(logging.WARNING):
        shunt = spect_lung_shunt(spect, lung, box_labels(SPECT_GRID, [-48] * 3, [48] * 3, "liver"))
    assert shunt.lung_coverage == pytest.approx(4 / 60)
    assert shunt.describe().endswith("7 % of the lung in the field of view: a lower bound)")
    assert "only 7 % of the lung lies inside the SPECT's field of view" in caplog.text


def test_the_lungs_of_the_digital_patient_and_its_lung_shunt(fast_patient):
    reference, spect = fast_patient.reference, fast_patient.spect
    organs = reference.organs
    truth = organs.array == organs.value_of("lung")
    liver = reference.liver  # tumours included
    lungs = lungs_from_ct(reference.image, liver)
    assert dice(lungs.array > 0, truth) > 0.98
    # the SPECT blurs the liver's counts across the diaphragm: a known overestimate, small here
    measured = spect_lung_shunt(spect.image, lungs, liver)
    assert measured.fraction == pytest.approx(spect.lung_shunt_fraction, abs=0.005)


@pytest.mark.parametrize(("air_box", "message"), [
    (None, "no air inside the body below -400 HU"),
    ([-40, -40, -50], "no air inside the body above the liver"),
])
def test_a_ct_without_lungs_is_refused(air_box, message):
    hu = np.where(box_mask(CT_GRID, [-52] * 3, [52] * 3), 40.0, -1000.0).astype(np.float32)  # a body in air
    if air_box is not None:  # 20 x 20 x 10 mm of gas below the liver's centre
        hu[box_mask(CT_GRID, air_box, [-20, -20, -40])] = -900.0
    liver = box_labels(CT_GRID, [-30] * 3, [30] * 3, "liver")
    with pytest.raises(InputError, match=message):
        lungs_from_ct(Volume(hu, CT_GRID, "CT"), liver)


def test_lungs_outside_the_spect_are_refused():
    spect = Volume(np.where(box_mask(SPECT_GRID, [-48] * 3, [48] * 3), 10.0, 0.0).astype(np.float32), SPECT_GRID,
                   "NM")
    far = Grid((10, 10, 10), (4.0, 4.0, 4.0), (-20.0, -20.0, 200.0))  # 140 mm above the SPECT's top
    lung = LabelVolume.from_mask(np.ones(far.shape, bool), far, name="lung")
    with pytest.raises(InputError, match="the lungs lie outside the SPECT's field of view"):
        spect_lung_shunt(spect, lung, box_labels(SPECT_GRID, [-48] * 3, [48] * 3, "liver"))
