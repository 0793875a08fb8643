"""Sampling placed tensors: values and point derivatives from precomputed gradient images."""

from __future__ import annotations

import numpy as np
import torch

from sirtreg.geometry import Grid
from sirtreg.register.sampling import PlacedTensor, grid_points, trilinear_rows, world_gradients

OBLIQUE = Grid((30, 26, 22), (2.0, 2.5, 3.0), (-30.0, -32.0, -33.0),
               tuple(np.linalg.qr(np.array([[1.0, 0.2, 0.1], [-0.1, 1.0, 0.3], [0.2, -0.2, 1.0]]))[0].ravel()))


def _function(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth f(x, y, z) at points (..., 3) mm and its exact gradient (..., 3) per mm."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    value = np.sin(x / 15.0) + 0.5 * np.cos(y / 20.0) * z / 30.0
    gradient = np.stack([np.cos(x / 15.0) / 15.0, -0.5 * np.sin(y / 20.0) / 20.0 * z / 30.0,
                         0.5 * np.cos(y / 20.0) / 30.0], axis=-1)
    return value, gradient


def _smooth(grid: Grid) -> tuple[torch.Tensor, np.ndarray]:
    """The smooth image on ``grid`` as a (1, D, H, W) tensor and its exact gradient (z, y, x, 3)."""
    value, gradient = _function(grid.world_coordinates(np.float64))
    return torch.from_numpy(value.astype(np.float32))[None], gradient


def test_world_gradients_match_the_analytic_gradient_on_an_oblique_grid():
    data, exact = _smooth(OBLIQUE)
    gradient = world_gradients(data.permute(1, 2, 3, 0), OBLIQUE)[..., 0, :].numpy()
    inner = (slice(1, -1),) * 3
    assert np.abs(gradient[inner] - exact[inner]).max() < 2e-3  # central differences, error O(h^2 / L^3)


def test_world_gradients_are_torchs_central_differences_and_zero_across_one_slice():
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(5, 7, 9, 3)).astype(np.float32))  # (D, H, W, C)
    axial = Grid((9, 7, 5), (2.0, 1.5, 3.0))
    expected = torch.stack([d / s for d, s in zip(torch.gradient(data, dim=(2, 1, 0)), (2.0, 1.5, 3.0))], dim=-1)
    # the same differences; per mm by the inverse spacing, which may round the last bit otherwise than dividing
    torch.testing.assert_close(world_gradients(data, axial), expected, rtol=1e-6, atol=0.0)
    out = torch.full((*data.shape, 3), float("nan"))
    assert world_gradients(data, axial, out=out) is out
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0.0)
    single = world_gradients(data[:1], Grid((9, 7, 1), (2.0, 1.5, 3.0)))  # one slice: no slope along z
    assert torch.equal(single[..., 2], torch.zeros_like(single[..., 2]))
    torch.testing.assert_close(single[..., 0], expected[:1, ..., 0], rtol=1e-6, atol=0.0)


def test_point_derivatives_from_gradient_images_agree_with_autograd():
    data, _ = _smooth(OBLIQUE)
    inner = OBLIQUE.crop((4, 4, 4), (OBLIQUE.size[0] - 4, OBLIQUE.size[1] - 4, OBLIQUE.size[2] - 4))
    points = grid_points(inner.with_spacing((3.3, 3.1, 2.9))) + 0.37
    derivatives = []
    for with_gradients in (False, True):
        moved = points.clone().requires_grad_(True)
        values, inside = PlacedTensor(data, OBLIQUE, with_gradients=with_gradients).sample(moved)
        assert bool(inside.all())
        (values**2).sum().backward()
        derivatives.append(moved.grad.numpy())
        sampled = values.detach()
    autograd, known = derivatives
    assert np.allclose(PlacedTensor(data, OBLIQUE).sample(points)[0].numpy(), sampled.numpy(), atol=1e-6)
    value, gradient = _function(points.double().numpy())
    exact = 2.0 * value[..., None] * gradient  # d(f^2)/dx
    # trilinear autograd is piecewise constant between voxels; interpolated gradients are closer to the truth
    error_known, error_autograd = np.abs(known - exact).max(), np.abs(autograd - exact).max()
    assert error_known < 0.02 * np.abs(exact).max()
    assert error_known < error_autograd


def test_point_derivatives_vanish_outside_the_grid():
    data, _ = _smooth(OBLIQUE)
    far = torch.tensor([[[[500.0, 0.0, 0.0]]]], requires_grad=True)
    values, inside = PlacedTensor(data, OBLIQUE, with_gradients=True).sample(far)
    values.sum().backward()
    assert not bool(inside.any())
    assert torch.all(far.grad == 0)


def test_trilinear_rows_match_grid_sample_with_border_padding_and_flat_axes():
    rng = np.random.default_rng(4)
    for size in ((7, 6, 5), (7, 1, 5), (1, 1, 4)):
        data = torch.from_numpy(rng.normal(size=(3, size[2], size[1], size[0])).astype(np.float32))
        index = torch.from_numpy(rng.uniform(-2, max(size) + 2, (200, 3)).astype(np.float32))
        table = data.flatten(1).T.contiguous()
        ours = trilinear_rows(table, size, index).T
        scale = 2.0 / torch.clamp(torch.tensor(size, dtype=torch.float32) - 1.0, min=1.0)
        grid = (index * scale - 1.0).reshape(1, 1, 1, -1, 3)
        theirs = torch.nn.functional.grid_sample(data[None], grid, mode="bilinear", padding_mode="border",
                                                 align_corners=True).reshape(3, -1)
        assert torch.allclose(ours, theirs, atol=1e-5), size
