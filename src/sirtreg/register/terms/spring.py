"""The spring-model regulariser.

Every pair of neighbouring voxels (6 or 26 neighbours) is joined by a spring that
opposes changes of its length. Rest lengths are the lengths after the affine
initialisation, so the regulariser penalises only the non-rigid part and does
not fight the affine scaling: for a neighbour offset d (mm),

    E = mean_pairs ((|A d + dv| - |A d|) / |d|)^2

with A the affine matrix and dv the difference of the non-affine displacement v
between the two voxels (the engine weights E by the settings' ``rigidity``).
Dividing by |d| makes each term a strain and taking the mean over springs makes
E independent of the voxel size (it approximates the integral of squared strain
over the working region).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def neighbour_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """Half of the neighbour offsets (dz, dy, dx): 3 for 6-connectivity, 13 for 26."""
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    offsets = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        if offset <= (0, 0, 0):
            continue  # each pair once
        if connectivity == 6 and sum(abs(v) for v in offset) != 1:
            continue
        offsets.append(offset)
    return offsets


def _pair_slices(offset: tuple[int, int, int], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples (a, b) selecting the voxels x and x + offset of every pair inside a (D, H, W) grid."""
    slices_a, slices_b = [], []
    for step, size in zip(offset, shape):
        slices_a.append(slice(max(0, -step), size - max(0, step)))
        slices_b.append(slice(max(0, step), size - max(0, -step)))
    return tuple(slices_a), tuple(slices_b)


class _SpringEnergy(torch.autograd.Function):
    """Spring energy and its analytic gradient (cheaper than autograd through 13 shifted views).

    Works channels-first (3, D, H, W), so that lengths are element-wise sums of three planes.
    """

    @staticmethod
    def forward(ctx, displacement, rest_vectors, original_lengths, offsets):  # type: ignore[override]
        v = displacement.permute(3, 0, 1, 2).contiguous()
        energy = v.new_zeros(())
        gradient = torch.zeros_like(v)
        count = 0
        for n, offset in enumerate(offsets):
            a, b = _pair_slices(offset, v.shape[1:])
            a, b = (slice(None), *a), (slice(None), *b)
            spring = v[b] - v[a]
            spring += rest_vectors[n].reshape(3, 1, 1, 1)
            length = spring.square().sum(dim=0).sqrt_()
            strain = (length - torch.linalg.norm(rest_vectors[n])).div_(original_lengths[n])
            energy = energy + strain.square().sum()
            count += strain.numel()
            pull = spring.mul_((2.0 / original_lengths[n]) * strain / length.clamp_min_(1e-9))
            gradient[b] += pull
            gradient[a] -= pull
        ctx.save_for_backward(gradient.permute(1, 2, 3, 0) / max(count, 1))
        return energy / max(count, 1)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return grad_output * gradient, None, None, None


class SpringRegulariser(nn.Module):
    """Spring energy of a non-affine displacement v (D, H, W, 3) in mm on a grid.

    Parameters
    ----------
    index_to_world : (3, 3) tensor: world offset (mm) of one step along (i, j, k).
    affine_matrix : (3, 3) tensor A of the affine initialisation (identity if None).
    connectivity : 6 or 26 neighbours.
    """

    def __init__(self, index_to_world: torch.Tensor, affine_matrix: torch.Tensor | None = None, *,
                 connectivity: int = 26) -> None:
        super().__init__()
        index_to_world = index_to_world.float()
        matrix = affine_matrix.float() if affine_matrix is not None else torch.eye(3)
        self.offsets = neighbour_offsets(connectivity)
        rest, length = [], []
        for dz, dy, dx in self.offsets:
            d = index_to_world @ torch.tensor([dx, dy, dz], dtype=torch.float32)
            rest.append(matrix @ d)
            length.append(torch.linalg.norm(d))
        self.register_buffer("rest_vectors", torch.stack(rest), persistent=False)
        self.register_buffer("original_lengths", torch.stack(length), persistent=False)

    def forward(self, displacement: torch.Tensor) -> torch.Tensor:
        return _SpringEnergy.apply(displacement, self.rest_vectors, self.original_lengths, self.offsets)
