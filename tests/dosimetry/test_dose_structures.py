"""Dose statistics of structures on their own grids: hand-computed values, grid independence, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import SPECT_GRID, box_labels

from sirtreg.dosimetry import (
    Territory,
    local_deposition_dose,
    structure_dose,
    structure_doses,
)
from sirtreg.geometry import Grid, LabelVolume, Volume


@pytest.fixture
def ramp_dose() -> Volume:
    """10 (i + 1) Gy in SPECT voxel column i: linear in x, so linear interpolation is exact."""
    i = np.arange(SPECT_GRID.size[0], dtype=np.float32)
    return Volume(np.broadcast_to(10.0 * (i + 1), SPECT_GRID.shape).copy(), SPECT_GRID)


# columns i = 2..11 (centres x = -48..-12 mm, edges x = -50..-10 mm) receive 30..120 Gy
LOW, HIGH = [-50.0, -20.0, -20.0], [-10.0, 20.0, 20.0]


def test_structure_on_the_dose_grid(ramp_dose):
    row = structure_dose(ramp_dose, box_labels(SPECT_GRID, LOW, HIGH, "lesion"))
    assert (row.mean_gy, row.median_gy, row.min_gy, row.max_gy) == pytest.approx((75, 75, 30, 120))
    assert row.v_percent == pytest.approx({70.0: 60.0, 100.0: 30.0})
    assert row.d_gy == pytest.approx({50.0: 80.0, 70.0: 60.0, 90.0: 40.0})
    assert row.volume_ml == pytest.approx(40 * 44 * 44 / 1000)  # y and z: 11 centres from -20 to 20 mm


def test_structure_on_a_fine_grid_sees_the_interpolated_dose(ramp_dose):
    fine = Grid((40, 40, 40), (1.0, 1.0, 1.0), (-49.5, -19.5, -19.5))
    row = structure_dose(ramp_dose, LabelVolume.from_mask(np.ones(fine.shape, bool), fine, name="lesion"))
    # D(x) = 10 ((x + 56) / 4 + 1) at the 1 mm centres x = -49.5 .. -10.5
    assert (row.mean_gy, row.min_gy, row.max_gy) == pytest.approx((75.0, 26.25, 123.75))
    assert row.v_percent == pytest.approx({70.0: 55.0, 100.0: 25.0})  # x >= -32 and x >= -20
    assert row.d_gy[50.0] == pytest.approx(76.25)
    assert row.volume_ml == pytest.approx(64.0)


def test_a_coarse_structure_is_sampled_below_its_voxels(ramp_dose):
    coarse = Grid((5, 5, 5), (8.0, 8.0, 8.0), (-46.0, -16.0, -16.0))  # edges -50..-10 in x
    row = structure_dose(ramp_dose, LabelVolume.from_mask(np.ones(coarse.shape, bool), coarse, name="lesion"))
    assert row.mean_gy == pytest.approx(75.0) and row.v_percent[70.0] == pytest.approx(60.0)


@pytest.fixture
def blob_dose() -> Volume:
    points = SPECT_GRID.world_coordinates(np.float64)
    r2 = np.sum((points - [4.0, -2.0, 3.0]) ** 2, axis=-1)
    return Volume((20.0 + 150.0 * np.exp(-r2 / (2 * 10.0**2))).astype(np.float32), SPECT_GRID)


def sphere_on(grid: Grid) -> LabelVolume:
    distance = np.linalg.norm(grid.world_coordinates(np.float64) - [2.1, -3.3, 1.2], axis=-1)
    return LabelVolume.from_mask(distance <= 15.0, grid, name="lesion")


@pytest.mark.parametrize("spacing_mm, shift_mm", [(0.5, 0.0), (1.0, 0.5), (0.7, 0.35)])
def test_results_do_not_drift_with_the_structure_grid(blob_dose, spacing_mm, shift_mm):
    reference = structure_dose(blob_dose, sphere_on(Grid((40, 40, 40), (1.0,) * 3, (-17.5, -20.5, -16.5))))
    n = int(np.ceil(40 / spacing_mm))
    grid = Grid((n, n, n), (spacing_mm,) * 3, tuple(np.array([-18.0, -21.0, -17.0]) + shift_mm))
    row = structure_dose(blob_dose, sphere_on(grid))
    assert row.mean_gy == pytest.approx(reference.mean_gy, rel=0.005)
    assert row.d_gy[50.0] == pytest.approx(reference.d_gy[50.0], rel=0.01)
    for threshold in (70.0, 100.0):
        assert row.v_percent[threshold] == pytest.approx(reference.v_percent[threshold], abs=0.5)
    assert row.volume_ml == pytest.approx(4 / 3 * np.pi * 15.0**3 / 1000, rel=0.02)


def test_lesions_outside_the_field_of_view_are_reported_per_lesion(ramp_dose):
    inside = box_labels(SPECT_GRID, LOW, HIGH, "Tumor 1")
    far_grid = Grid((10, 10, 10), (1.0, 1.0, 1.0), (300.0, 0.0, 0.0))
    far = LabelVolume.from_mask(np.ones(far_grid.shape, bool), far_grid, name="Tumor 2")
    edge_grid = Grid((20, 10, 10), (1.0, 1.0, 1.0), (50.5, 0.0, 0.0))  # x = 50.5 .. 69.5, the SPECT ends at 58
    edge = LabelVolume.from_mask(np.ones(edge_grid.shape, bool), edge_grid, name="Tumor 3")
    empty = LabelVolume(np.zeros(SPECT_GRID.shape, np.uint8), SPECT_GRID, labels={4: "Tumor 4"})
    rows = structure_doses(ramp_dose, [inside, far, edge, empty])
    assert [r.name for r in rows] == ["Tumor 1", "Tumor 2", "Tumor 3", "Tumor 4"]
    assert rows[0].ok and rows[0].mean_gy == pytest.approx(75.0)
    assert rows[1].error == "'Tumor 2' lies outside the SPECT field of view" and rows[1].mean_gy is None
    assert rows[2].error == "60.0 % of 'Tumor 3' lies outside the SPECT field of view"
    assert rows[3].error == "'Tumor 4' is empty"
    table = [r.row(vx_gy=(70.0, 100.0), dx_percent=(50.0, 70.0, 90.0)) for r in rows]
    assert all(list(t) == list(table[0]) for t in table)
    assert table[1]["V70_percent"] is None and table[1]["error"].endswith("field of view")


def test_every_label_of_a_label_map_is_a_structure(ramp_dose):
    array = box_labels(SPECT_GRID, LOW, HIGH, "a").array + 2 * box_labels(SPECT_GRID, [10, -8, -8], [30, 8, 8], "b").array
    rows = structure_doses(ramp_dose, LabelVolume(array, SPECT_GRID, labels={1: "Tumor 1", 2: "Tumor 2"}), vx_gy=(150,))
    assert [r.name for r in rows] == ["Tumor 1", "Tumor 2"]
    assert rows[1].v_percent == {150.0: 100.0}


def test_a_sharp_uptake_edge_loses_dose_in_the_outer_half_voxel(uniform_spect, liver_on_ct):
    """No counts outside the liver: along each axis the 1 mm samples in the outer 2 mm of
    each face interpolate toward zero (on average 3/4 of the dose), a factor 0.99 per axis."""
    dose = local_deposition_dose(uniform_spect, [Territory(liver_on_ct, 1.0)]).dose
    row = structure_dose(dose, liver_on_ct)
    assert row.mean_gy == pytest.approx(49.67 / 1.05 * 0.99**3, rel=1e-4)
    assert row.max_gy == pytest.approx(49.67 / 1.05, rel=1e-5)
