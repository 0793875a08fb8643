"""Torch images placed in LPS space, sampled at world points (trilinear, differentiable)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sirtreg.geometry import Grid


def grid_points(grid: Grid, device: torch.device | str = "cpu") -> torch.Tensor:
    """World coordinates (mm) of the voxel centres of ``grid`` as a (D, H, W, 3) float32 tensor."""
    return torch.from_numpy(grid.world_coordinates(np.float32)).to(device)


def index_step_matrix(grid: Grid) -> torch.Tensor:
    """(3, 3) float64 tensor whose column c is the world offset (mm) of one voxel step along axis c."""
    return torch.from_numpy(grid.index_to_world_matrix[:3, :3].copy())


@dataclass
class PlacedTensor:
    """Channels (C, D, H, W) on a grid, sampled at world points with ``sample``."""

    data: torch.Tensor
    grid: Grid

    def __post_init__(self) -> None:
        affine = np.linalg.inv(self.grid.index_to_world_matrix)
        device = self.data.device
        self._rotation = torch.from_numpy(affine[:3, :3].astype(np.float32)).to(device)
        self._offset = torch.from_numpy(affine[:3, 3].astype(np.float32)).to(device)
        size = torch.tensor(self.grid.size, dtype=torch.float32, device=device)
        self._upper = size - 1.0
        self._scale = 2.0 / torch.clamp(size - 1.0, min=1.0)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (C, *S) at world points (*S, 3) and a boolean (*S) mask of points inside the grid."""
        spatial = points.shape[:-1]
        index = points.reshape(-1, 3) @ self._rotation.T + self._offset  # (i, j, k)
        inside = ((index >= -0.5) & (index <= self._upper + 0.5)).all(dim=1)
        normalised = (index * self._scale - 1.0).reshape(1, 1, 1, -1, 3)
        values = F.grid_sample(self.data[None], normalised, mode="bilinear", padding_mode="border", align_corners=True)
        return values.reshape(self.data.shape[0], *spatial), inside.reshape(spatial)
