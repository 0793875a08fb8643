"""Squared distance between paired landmark points (for clicked landmarks)."""

from __future__ import annotations

import torch
from torch import nn


class LandmarkDistance(nn.Module):
    """Mean squared distance (mm^2) between T(reference points) and floating points, both (N, 3)."""

    def forward(self, mapped_reference_points: torch.Tensor, floating_points: torch.Tensor) -> torch.Tensor:
        if mapped_reference_points.shape != floating_points.shape:
            raise ValueError("landmark sets differ in size")
        return ((mapped_reference_points - floating_points) ** 2).sum(dim=-1).mean()
