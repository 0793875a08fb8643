"""MIND-SSC: the self-similarity context descriptor, a similarity that holds across modalities.

Heinrich et al. (MICCAI 2013) describe each voxel by how much its neighbourhood resembles itself:
for the 12 pairs of its six face neighbours that lie sqrt(2) steps apart, the squared
difference of the two neighbours' patches (a box average of the squared difference of the image
shifted to each neighbour), then ``exp(-d / v)`` with d that distance minus its smallest value
over the 12 pairs and v their mean (a local noise estimate). The descriptor depends on local
structure only, not on the intensities themselves: a bias field, a non-monotonic intensity
mapping (CT vs MR) or a different contrast leave it nearly unchanged. Registration then
minimises the mean squared difference of the 12 descriptor channels (:class:`DescriptorSSD`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

# the six face neighbours (dz, dy, dx) and the 12 pairs of them that are sqrt(2) apart
_NEIGHBOURS = ((0, 0, 1), (0, 0, -1), (0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0))
PAIRS = tuple((a, b) for a, b in itertools.combinations(_NEIGHBOURS, 2)
              if sum((p - q) ** 2 for p, q in zip(a, b)) == 2)
CHANNELS = len(PAIRS)


def _shifted(padded: torch.Tensor, offset: tuple[int, int, int], pad: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The image shifted by ``offset`` voxels, read from an edge-padded copy."""
    dz, dy, dx = offset
    return padded[pad + dz:pad + dz + shape[0], pad + dy:pad + dy + shape[1], pad + dx:pad + dx + shape[2]]


def mind_ssc(image: torch.Tensor, *, dilation: int = 1, radius: int = 1) -> torch.Tensor:
    """MIND-SSC descriptor (12, D, H, W) of an image (D, H, W) on an isotropic grid.

    ``dilation``: distance (voxels) of the neighbours from the centre; ``radius``: half-width (voxels)
    of the cubic patch over which squared differences are averaged.
    """
    shape = tuple(image.shape)
    pad = dilation
    padded = F.pad(image[None, None], (pad,) * 6, mode="replicate")[0, 0]
    shifted = {n: _shifted(padded, tuple(dilation * v for v in n), pad, shape) for n in _NEIGHBOURS}
    distances = torch.stack([(shifted[a] - shifted[b]) ** 2 for a, b in PAIRS])
    size = 2 * radius + 1
    distances = F.avg_pool3d(F.pad(distances[None], (radius,) * 6, mode="replicate"), size, stride=1)[0]
    distances = distances - distances.min(dim=0, keepdim=True).values
    variance = distances.mean(dim=0, keepdim=True)
    mean_variance = variance.mean()
    variance = variance.clamp(min=float(mean_variance) * 1e-3 + 1e-12, max=float(mean_variance) * 1e3 + 1e-12)
    return torch.exp(-distances / variance)


class DescriptorSSD(nn.Module):
    """Mean over masked voxels and over channels of the squared difference of two descriptors (C, D, H, W)."""

    def forward(self, reference: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if reference.shape != warped.shape:
            raise ValueError(f"descriptors differ in shape: {tuple(reference.shape)} vs {tuple(warped.shape)}")
        weight = mask.to(warped.dtype)
        squared = ((reference - warped) ** 2).mean(dim=0)
        return (squared * weight).sum() / weight.sum().clamp_min(1.0)
