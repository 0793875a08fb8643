"""Surface distances between two masks on one grid, in mm.

Definition used throughout sirtreg: the surface of a mask is the set of its
voxels with at least one 6-neighbour outside the mask. For every surface voxel
of A, d(a, B) is the Euclidean distance (mm, anisotropic spacing respected) from
its centre to the nearest surface-voxel centre of B, and vice versa.

- MSD (mean surface distance, symmetric) = (sum_a d(a, B) + sum_b d(b, A)) / (|S_A| + |S_B|)
- HD95 = the 95th percentile of the pooled distances {d(a, B)} and {d(b, A)}
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import Grid

_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x) array of the mask voxels that touch the outside (6-connectivity)."""
    mask = np.asarray(mask, dtype=bool)
    interior = ndimage.binary_erosion(mask, structure=_SIX_NEIGHBOURS, border_value=0)
    return mask & ~interior


def _spacing_zyx(grid: Grid) -> tuple[float, float, float]:
    sx, sy, sz = grid.spacing_mm
    return (sz, sy, sx)


def surface_distances_mm(mask_a: np.ndarray, mask_b: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of A to the surface of B, and from B to A."""
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != grid.shape or b.shape != grid.shape:
        raise InputError(f"masks of shape {a.shape} and {b.shape} are not on the grid {grid.describe()}")
    if not a.any() or not b.any():
        raise InputError("a mask is empty: surface distances are undefined")
    surface_a, surface_b = surface_voxels(a), surface_voxels(b)
    spacing = _spacing_zyx(grid)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)
    return to_b[surface_a], to_a[surface_b]


def mean_surface_distance_mm(mask_a: np.ndarray, mask_b: np.ndarray, grid: Grid) -> float:
    """Symmetric mean surface distance (mm) of two masks on ``grid`` (see module docstring)."""
    a_to_b, b_to_a = surface_distances_mm(mask_a, mask_b, grid)
    return float((a_to_b.sum() + b_to_a.sum()) / (a_to_b.size + b_to_a.size))


def hausdorff95_mm(mask_a: np.ndarray, mask_b: np.ndarray, grid: Grid) -> float:
    """95th percentile (mm) of the pooled symmetric surface distances."""
    a_to_b, b_to_a = surface_distances_mm(mask_a, mask_b, grid)
    return float(np.percentile(np.concatenate([a_to_b, b_to_a]), 95.0))
