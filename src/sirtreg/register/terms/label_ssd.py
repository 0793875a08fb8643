"""Sum of squared differences between one-hot label maps (the paper's LS)."""

from __future__ import annotations

import torch
from torch import nn


class LabelSSD(nn.Module):
    """Mean over voxels of sum over classes of (reference_c - warped_c)^2.

    Inputs are one-hot (or fractional, after interpolation) maps of shape
    (C, D, H, W), one channel per class without background: the liver-only map
    (C = 1) and the liver + landmarks map (C = 2) are the same term.
    ``class_weights`` (C,) weighs the classes (default 1 each).
    """

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.class_weights = class_weights

    def forward(self, reference: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if reference.shape != warped.shape:
            raise ValueError(f"label maps differ in shape: {tuple(reference.shape)} vs {tuple(warped.shape)}")
        squared = (reference - warped) ** 2
        if self.class_weights is not None:
            squared = squared * self.class_weights.reshape(-1, 1, 1, 1)
        weight = mask.to(squared.dtype)
        return (squared.sum(dim=0) * weight).sum() / weight.sum().clamp_min(1.0)
