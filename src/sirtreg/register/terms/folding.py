"""A penalty on folding: local inversions of the transform that the spring model cannot see.

Springs oppose changes of length, and a mirror image keeps every length, so a
spring network alone can fold (a voxel cell turned inside out costs little).
This term penalises voxels whose Jacobian determinant falls below a threshold:

    E = mean over voxels of relu(threshold - det(A + dv/dx))^2 / threshold^2

with A the affine matrix and dv/dx the derivative of the non-affine
displacement v (central differences, per mm). It is zero while every voxel keeps
at least ``threshold`` of its volume, so it does not bias ordinary deformation.
"""

from __future__ import annotations

import torch
from torch import nn


def _determinant(j: torch.Tensor) -> torch.Tensor:
    """det of (..., 3, 3) matrices, written out (cheaper than ``linalg.det`` with autograd)."""
    return (j[..., 0, 0] * (j[..., 1, 1] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 1])
            - j[..., 0, 1] * (j[..., 1, 0] * j[..., 2, 2] - j[..., 1, 2] * j[..., 2, 0])
            + j[..., 0, 2] * (j[..., 1, 0] * j[..., 2, 1] - j[..., 1, 1] * j[..., 2, 0]))


def jacobian_of_displacement(displacement: torch.Tensor, index_to_world: torch.Tensor,
                             affine_matrix: torch.Tensor) -> torch.Tensor:
    """Jacobians (D, H, W, 3, 3) of x -> A x + v(x) for v (D, H, W, 3) in mm.

    Central differences inside, one-sided at the borders: the definition
    :func:`sirtreg.metrics.jacobian_determinant` reports folding with.
    """
    d_dk, d_dj, d_di = torch.gradient(displacement, dim=(0, 1, 2))
    by_index = torch.stack([d_di, d_dj, d_dk], dim=-1)
    return affine_matrix + by_index @ torch.linalg.inv(index_to_world)


class FoldingPenalty(nn.Module):
    """Mean squared shortfall of the Jacobian determinant below ``threshold`` (relative), for v (D, H, W, 3) mm.

    Parameters
    ----------
    index_to_world : (3, 3) tensor: world offset (mm) of one step along (i, j, k).
    affine_matrix : (3, 3) tensor A of the affine part (identity if None).
    threshold : smallest determinant that costs nothing (0 < threshold < 1).
    """

    def __init__(self, index_to_world: torch.Tensor, affine_matrix: torch.Tensor | None = None, *,
                 threshold: float = 0.3) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the folding threshold must lie in (0, 1), got {threshold}")
        self.threshold = threshold
        self.register_buffer("index_to_world", index_to_world.float(), persistent=False)
        matrix = affine_matrix.float() if affine_matrix is not None else torch.eye(3)
        self.register_buffer("affine_matrix", matrix, persistent=False)

    def forward(self, displacement: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # usually no cell is near folding: then the term and its gradient are zero
            determinant = _determinant(jacobian_of_displacement(displacement, self.index_to_world,
                                                                self.affine_matrix))
            if bool((determinant >= self.threshold).all()):
                return displacement.new_zeros(())
        jacobian = jacobian_of_displacement(displacement, self.index_to_world, self.affine_matrix)
        shortfall = torch.relu(self.threshold - _determinant(jacobian)) / self.threshold
        return (shortfall**2).mean()
