"""Loss terms against known answers: mutual information, label SSD, springs and the folding penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sirtreg.register.terms import FoldingPenalty, LabelSSD, MutualInformation, SpringRegulariser
from sirtreg.register.terms.folding import jacobian_of_displacement
from sirtreg.register.terms.spring import neighbour_offsets

STEP = torch.diag(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64))  # anisotropic voxels, mm per (i, j, k) step


def _world(shape: tuple[int, int, int]) -> torch.Tensor:
    """World coordinates (D, H, W, 3) in mm of an axis-aligned grid with spacing (2, 3, 4) mm."""
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")
    return torch.stack([i, j, k], dim=-1) @ STEP.T


def test_mutual_information_of_an_image_with_itself_is_its_entropy():
    rng = np.random.default_rng(0)
    levels = torch.from_numpy(rng.integers(0, 4, (20, 20, 20)).astype(np.float32) / 3.0)  # four equal-ish classes
    mask = torch.ones_like(levels)
    mi = -MutualInformation(bins=32)(levels, levels, mask)
    fractions = np.bincount(rng.integers(0, 4, 8000), minlength=4) / 8000  # same law, independent draw
    entropy = -np.sum(fractions * np.log(fractions))
    # the cubic Parzen window spreads each floating level over 4 bins, lowering MI below H a little
    assert 0.8 * entropy < float(mi) <= entropy + 1e-3


def test_mutual_information_ignores_a_non_monotonic_intensity_mapping_and_sees_independence():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.integers(0, 4, (20, 20, 20)).astype(np.float32) / 3.0)
    remapped = torch.tensor([0.7, 0.1, 1.0, 0.4])[(image * 3).round().long()]  # like CT -> MR
    noise = torch.from_numpy(rng.random((20, 20, 20)).astype(np.float32))
    mask = torch.ones_like(image)
    term = MutualInformation(bins=32)
    same, mapped, independent = (-term(image, other, mask) for other in (image, remapped, noise))
    assert float(mapped) == pytest.approx(float(same), rel=0.02)
    assert float(independent) < 0.05 * float(same)


def test_mutual_information_counts_only_masked_voxels_and_refuses_too_few():
    image = torch.linspace(0, 1, 1000).reshape(10, 10, 10)
    mask = torch.zeros_like(image)
    mask[:5] = 1
    term = MutualInformation(bins=16)
    scrambled = image.clone()
    scrambled[5:] = scrambled[5:].flip(0)  # changes only voxels outside the mask
    assert float(term(image, scrambled, mask)) == pytest.approx(float(term(image, image, mask)))
    with pytest.raises(ValueError, match="at least 16"):
        term(image, image, torch.zeros_like(image))
    with pytest.raises(ValueError, match="at least 8 bins"):
        MutualInformation(bins=4)


def test_label_ssd_of_a_shifted_box_counts_the_uncovered_voxels():
    reference = torch.zeros(1, 10, 10, 10)
    reference[0, 2:6, 2:6, 2:6] = 1
    shifted = torch.roll(reference, 1, dims=3)
    mask = torch.ones(10, 10, 10)
    assert float(LabelSSD()(reference, shifted, mask)) == pytest.approx(2 * 16 / 1000)
    weighted = LabelSSD(torch.tensor([3.0]))(reference, shifted, mask)
    assert float(weighted) == pytest.approx(3 * 2 * 16 / 1000)
    with pytest.raises(ValueError, match="differ in shape"):
        LabelSSD()(reference, shifted[:, :5], mask)


def test_springs_are_relaxed_under_the_affine_and_any_rigid_motion():
    points = _world((6, 7, 8))
    rotation = torch.from_numpy(np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0])
    rotation *= torch.sign(torch.det(rotation))
    v = points @ rotation.T - points + torch.tensor([5.0, -3.0, 2.0], dtype=torch.float64)
    spring = SpringRegulariser(STEP, connectivity=26)
    # zero up to float32 rounding: displacements of up to ~30 mm are off by ~2e-6 mm, a strain of <= 1e-6 on
    # springs of 2-7 mm, so a mean squared strain far below 1e-10 (2e-15 seen)
    assert float(spring(v.float())) == pytest.approx(0.0, abs=1e-10)
    scaling = torch.diag(torch.tensor([1.2, 0.9, 1.1], dtype=torch.float64))
    with_affine = SpringRegulariser(STEP, scaling, connectivity=26)  # rest lengths after the affine
    # float32 lengths of the same vector, computed twice, may differ in the last bit: a strain of ~1e-8
    assert float(with_affine(torch.zeros(6, 7, 8, 3))) == pytest.approx(0.0, abs=1e-12)


def test_spring_energy_of_a_uniform_stretch_is_the_mean_squared_strain():
    stretch = 1.1
    points = _world((5, 6, 7))
    v = points * torch.tensor([stretch - 1.0, 0.0, 0.0], dtype=torch.float64)  # x -> 1.1 x
    spring = SpringRegulariser(STEP, connectivity=6)
    # 6-connectivity: x-springs strain 0.1, y and z springs unstrained; mean over all springs
    n_x, n_y, n_z = 5 * 6 * 6, 5 * 5 * 7, 4 * 6 * 7
    expected = (stretch - 1.0) ** 2 * n_x / (n_x + n_y + n_z)
    assert float(spring(v.float())) == pytest.approx(expected, rel=1e-4)
    assert len(neighbour_offsets(26)) == 13
    with pytest.raises(ValueError, match="6 or 26"):
        neighbour_offsets(18)


@pytest.mark.slow
def test_spring_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    v = torch.from_numpy(rng.normal(0, 0.5, (4, 5, 6, 3)))
    spring = SpringRegulariser(STEP, connectivity=26).double()
    spring.rest_vectors = spring.rest_vectors.double()
    spring.original_lengths = spring.original_lengths.double()
    assert torch.autograd.gradcheck(spring, (v.requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_jacobian_of_a_linear_displacement_is_exact():
    b = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, 0.1], [0.2, 0.0, -0.1]], dtype=torch.float64)
    a = torch.diag(torch.tensor([1.1, 0.95, 1.0], dtype=torch.float64))
    v = _world((4, 5, 6)) @ b.T
    jacobian = jacobian_of_displacement(v, STEP, a)
    assert jacobian.shape == (4, 5, 6, 3, 3)
    assert torch.allclose(jacobian, (a + b).expand_as(jacobian), atol=1e-12)


def test_folding_penalty_is_zero_for_mild_deformation_and_pushes_a_fold_open():
    points = _world((6, 6, 6))
    penalty = FoldingPenalty(STEP.float(), threshold=0.3)
    mild = 1.5 * torch.sin(points / 15.0)  # det stays near 1
    assert float(penalty(mild.float())) == 0.0  # exact: no determinant nears the threshold, every term is 0
    folded = points * torch.tensor([-1.5, 0.0, 0.0], dtype=torch.float64)  # x -> -0.5 x: det = -0.5
    v = folded.float().requires_grad_(True)
    energy = penalty(v)
    assert float(energy.detach()) == pytest.approx(((0.3 + 0.5) / 0.3) ** 2, rel=1e-5)
    energy.backward()
    with torch.no_grad():
        assert float(penalty(v - 0.5 * v.grad / v.grad.abs().max())) < float(energy)  # a step opens the fold
    with pytest.raises(ValueError, match="threshold"):
        FoldingPenalty(STEP.float(), threshold=1.5)
