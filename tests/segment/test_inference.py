"""Tiling and clean-up with known answers; liver and lesion segmentation of real images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from sirtreg.geometry import LabelVolume
from sirtreg.io import read_image, read_labels
from sirtreg.segment.inference import (
    AIR,
    clean_liver_mask,
    predict,
    segment_lesions,
    segment_liver,
    thin_stack_slices,
)
from sirtreg.segment.network import LIVER_SPEC, centre_crop


class _CentreCrop(nn.Module):
    """A stand-in network whose output is the centre of its input: tiling must give the image back."""

    def __init__(self, input_shape, output_shape):
        super().__init__()
        self.spec = dataclasses.replace(LIVER_SPEC, input_shape=input_shape, output_shape=output_shape)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return centre_crop(x, self.spec.output_shape)


@pytest.mark.parametrize("shape", [(9, 12, 15), (40, 23, 31)])  # one window; overlapping windows
def test_tiling_reassembles_the_image(shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    net = _CentreCrop((26, 30, 36), (16, 20, 24))
    steps = []
    out = predict(net, image, progress=lambda step, fraction: steps.append(fraction))
    np.testing.assert_allclose(out, image, atol=1e-5)
    assert steps[-1] == 1.0


class _Recorder(_CentreCrop):
    """A centre-crop stand-in that keeps the windows it was given."""

    def __init__(self, input_shape, output_shape):
        super().__init__(input_shape, output_shape)
        self.windows = []

    def forward(self, x):
        self.windows.append(x[0, 0].cpu().numpy().copy())
        return super().forward(x)


def test_z_fill_continues_the_stack_inside_its_footprint():
    image = np.full((4, 6, 8), 0.3, dtype=np.float32)
    net = _Recorder((26, 30, 36), (16, 20, 24))
    np.testing.assert_allclose(predict(net, image, z_fill=AIR), image, atol=1e-6)
    (window,) = net.windows
    k, j, i = (np.flatnonzero((window == 0.3).any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    assert len(k) == 4 and len(j) == 6 and len(i) == 8
    footprint = window[:, j[0] : j[-1] + 1, i[0] : i[-1] + 1]
    assert np.all(footprint[: k[0]] == AIR) and np.all(footprint[k[-1] + 1 :] == AIR)
    outside = np.ones(window.shape, dtype=bool)
    outside[:, j[0] : j[-1] + 1, i[0] : i[-1] + 1] = False
    assert np.all(window[outside] == 0.0)  # in-plane padding stays the authors' 0
    net.windows.clear()
    predict(net, image)
    assert np.count_nonzero(net.windows[0] == AIR) == 0


def test_thin_stack_is_one_cell_of_the_coarsest_level():
    assert thin_stack_slices(LIVER_SPEC) == 27


def test_clean_up_keeps_the_largest_component():
    probability = np.zeros((20, 20, 20), dtype=np.float32)
    probability[2:10, 2:10, 2:10] = 0.9
    probability[14:18, 14:18, 14:18] = 0.8
    mask = clean_liver_mask(probability)
    assert mask[5, 5, 5] and not mask[15, 15, 15]
    assert not clean_liver_mask(probability * 0.5).any()


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
def test_liver_of_a_real_ct(shared_data, trained_models):
    """The TotalSegmentator example CT (3 mm): DSC >= 0.90 against its liver label (5)."""
    folder = shared_data / "totalsegmentator"
    image = read_image(folder / "example_ct.nii.gz")
    reference = read_labels(folder / "example_seg_fast_force_split.nii.gz")
    liver = segment_liver(image, modality="ct", device="cpu")
    assert liver.grid.same_as(image.grid) and liver.labels == {1: "liver"}
    assert _dice(liver.array == 1, reference.array == 5) >= 0.90
    assert liver.volume_ml(1) == pytest.approx(reference.volume_ml(5), rel=0.1)


@pytest.mark.slow
def test_liver_of_a_thin_real_mr(shared_data, trained_models):
    """The TotalSegmentator example MR: 20 slices of 3 mm through the liver (a thin stack, continued
    with air slices); DSC >= 0.85 against its liver label (5). With 0-padding no liver is found."""
    folder = shared_data / "totalsegmentator"
    image = read_image(folder / "example_mr_sm.nii.gz")
    reference = read_labels(folder / "example_seg_mr.nii.gz")
    liver = segment_liver(image, modality="mr", device="cpu")
    assert liver.grid.same_as(image.grid)
    assert _dice(liver.array == 1, reference.array == 5) >= 0.85


@pytest.mark.slow
def test_lesions_of_a_real_ct_stay_near_the_liver(shared_data, trained_models):
    """Smoke test of the lesion network on a small piece of the example CT (one window)."""
    folder = shared_data / "totalsegmentator"
    image = read_image(folder / "example_ct.nii.gz")
    labels = read_labels(folder / "example_seg_fast_force_split.nii.gz")
    k, j, i = np.nonzero(labels.array == 5)
    centre = np.array([i.mean(), j.mean(), k.mean()]).astype(int)
    start, stop = centre - (15, 14, 10), centre + (15, 14, 10)  # (i, j, k): one lesion-network window
    piece = image.crop(start, stop)
    liver = LabelVolume((labels.crop(start, stop).array == 5).astype(np.uint8), piece.grid, labels={1: "liver"})
    lesions = segment_lesions(piece, liver=liver, modality="ct", device="cpu")
    assert lesions.grid.same_as(piece.grid) and lesions.labels == {1: "lesion"}
    near_liver = ndimage.binary_dilation(liver.array.astype(bool), iterations=3)
    assert not (lesions.array.astype(bool) & ~near_liver).any()
