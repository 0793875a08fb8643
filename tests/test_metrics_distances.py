"""Surface distances, mass-centre distances, RMSD and Jacobians against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume
from sirtreg.metrics import (
    hausdorff95_mm,
    jacobian_determinant,
    jacobian_statistics,
    mass_centre_distances_mm,
    mean_surface_distance_mm,
    rmsd_mm,
    rrmsd_mm,
)


def ball(grid: Grid, centre_mm, radius_mm: float) -> np.ndarray:
    return np.linalg.norm(grid.world_coordinates(np.float64) - np.asarray(centre_mm), axis=-1) <= radius_mm


@pytest.mark.parametrize("spacing_mm", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.0), (2.0, 1.5, 3.0)])
def test_concentric_spheres_are_their_radius_difference_apart(spacing_mm):
    spacing = np.asarray(spacing_mm)
    size = np.round(80.0 / spacing).astype(int)
    grid = Grid(tuple(size), spacing_mm, tuple(-(size - 1) * spacing / 2))  # centred on the origin
    inner, outer = ball(grid, (0, 0, 0), 20.0), ball(grid, (0, 0, 0), 28.0)
    tolerance = max(spacing_mm) / 2
    assert mean_surface_distance_mm(inner, outer, grid) == pytest.approx(8.0, abs=tolerance)
    assert hausdorff95_mm(inner, outer, grid) == pytest.approx(8.0, abs=tolerance + 0.5)
    assert mean_surface_distance_mm(outer, outer, grid) == 0.0


def test_surface_distance_refusals():
    grid = Grid((10, 10, 10))
    full = np.ones(grid.shape, dtype=bool)
    with pytest.raises(InputError, match="empty"):
        mean_surface_distance_mm(full, np.zeros(grid.shape, dtype=bool), grid)
    with pytest.raises(InputError, match="not on the grid"):
        mean_surface_distance_mm(full, full[:5], grid)


def test_mass_centre_distance_of_a_shifted_sphere_equals_the_shift():
    grid_a = Grid((60, 60, 30), (1.0, 1.0, 2.0), (-30.0, -30.0, -30.0))
    rotation = Rotation.from_euler("z", 25, degrees=True).as_matrix()
    grid_b = Grid((80, 80, 40), (0.9, 0.9, 1.7), (-35.0, -35.0, -35.0), tuple(rotation.ravel()))
    shift = np.array([3.0, -4.0, 6.0])
    a = LabelVolume.from_mask(ball(grid_a, (0, 0, 0), 10.0), grid_a, name="lesion 1")
    b = LabelVolume.from_mask(ball(grid_b, shift, 10.0), grid_b, name="lesion 1")
    distances = mass_centre_distances_mm(a, b)
    assert distances["lesion 1"] == pytest.approx(np.linalg.norm(shift), abs=0.1)


def test_mass_centre_distance_refuses_unpaired_landmarks():
    grid = Grid((10, 10, 10))
    a = LabelVolume.from_mask(ball(grid, (5, 5, 5), 2), grid, name="lesion 1")
    b = LabelVolume.from_mask(ball(grid, (5, 5, 5), 2), grid, name="clip")
    with pytest.raises(InputError, match="do not pair up.*clip, lesion 1"):
        mass_centre_distances_mm(a, b)


def test_rmsd_and_rrmsd_follow_the_paper():
    assert rmsd_mm(3.0) == pytest.approx(3.0)
    assert rmsd_mm(2.0, [4.0, 4.0]) == pytest.approx(np.sqrt((4 + 16 + 16) / 3))
    assert rrmsd_mm([3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    with pytest.raises(InputError, match=">= 0"):
        rmsd_mm(-1.0)
    with pytest.raises(InputError, match="at least one"):
        rrmsd_mm([])


def test_jacobian_of_an_affine_field_is_its_determinant_on_an_oblique_grid():
    rotation = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
    grid = Grid((12, 14, 10), (1.2, 0.8, 2.5), (5.0, -3.0, 7.0), tuple(rotation.ravel()))
    matrix = np.array([[1.1, 0.05, 0.0], [0.0, 0.9, 0.1], [0.02, 0.0, 1.2]])
    world = grid.world_coordinates(np.float64)
    field = DisplacementField(world @ (matrix - np.eye(3)).T, grid)
    np.testing.assert_allclose(jacobian_determinant(field), np.linalg.det(matrix), rtol=1e-4)


def test_folding_is_counted():
    grid = Grid((20, 4, 4))
    u = np.zeros((*grid.shape, 3))
    u[..., 10:, 0] = -3.0  # a step back by 3 voxels: points cross over at the step
    stats = jacobian_statistics(DisplacementField(u, grid))
    assert stats.minimum <= 0 and stats.percent_folding == pytest.approx(100 * 2 / 20)
