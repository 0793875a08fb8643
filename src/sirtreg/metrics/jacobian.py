"""Jacobian determinant of a dense transform T(x) = x + u(x)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sirtreg.geometry import DisplacementField


def jacobian_determinant(field: DisplacementField) -> np.ndarray:
    """det(I + du/dx) at every voxel, shape (z, y, x); derivatives in world mm (central differences).

    Values <= 0 mean folding; < 1 local compression; > 1 local expansion.
    """
    grid = field.grid
    # du_c / d index_a for index axes a = (i, j, k), array axes (z, y, x) = (k, j, i)
    gradients = np.empty((*grid.shape, 3, 3), dtype=np.float64)
    for c in range(3):
        d_dk, d_dj, d_di = np.gradient(field.array[..., c].astype(np.float64))
        gradients[..., c, 0], gradients[..., c, 1], gradients[..., c, 2] = d_di, d_dj, d_dk
    # index = diag(1/s) D^T (x - o)  =>  du/dx = du/dindex @ diag(1/s) @ D^T
    index_per_mm = np.diag(1.0 / np.asarray(grid.spacing_mm)) @ grid.direction_matrix.T
    jacobian = np.eye(3) + gradients @ index_per_mm
    return np.linalg.det(jacobian)


@dataclass(frozen=True)
class JacobianStatistics:
    minimum: float
    maximum: float
    percent_folding: float  # % of voxels with determinant <= 0


def jacobian_statistics(field: DisplacementField, mask: np.ndarray | None = None) -> JacobianStatistics:
    """Min, max and % of voxels with det <= 0, optionally inside a (z, y, x) mask."""
    determinant = jacobian_determinant(field)
    values = determinant[np.asarray(mask, dtype=bool)] if mask is not None else determinant.ravel()
    return JacobianStatistics(
        minimum=float(values.min()), maximum=float(values.max()),
        percent_folding=100.0 * float(np.count_nonzero(values <= 0)) / values.size,
    )
