"""A tiny fine-tuning run on synthetic CT and MR volumes: the loss falls and resuming is exact."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import write_image
from sirtreg.segment.training import TrainingCase, _patch, _prepare, dice_loss, read_manifest, train
from sirtreg.segment.weights import load_network

PATCH = (54, 54, 54)  # (z, y, x): two levels of 27, output 28^3


def _case(modality: str, shift: int) -> TrainingCase:
    """A 3 mm body (ellipse) with a brighter 'liver' block on the patient's right."""
    grid = Grid((60, 50, 40), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    z, y, x = np.mgrid[:40, :50, :60]
    body = ((x - 30) / 27) ** 2 + ((y - 25) / 22) ** 2 < 1
    liver = (x > 8 + shift) & (x < 28 + shift) & (y > 12) & (y < 36) & (z > 8) & (z < 32)
    if modality == "ct":
        image = np.where(body, 30.0, -1000.0) + np.where(liver, 90.0, 0.0)
    else:
        image = np.where(body, 300.0, 5.0) + np.where(liver, -150.0, 0.0)
    return TrainingCase(Volume(image.astype(np.float32), grid), LabelVolume.from_mask(liver, grid, "liver"), modality)


def _held_out_loss(checkpoint, cases) -> float:
    """Dice loss of a checkpoint on fixed patches centred on each liver (no augmentation)."""
    net = load_network("liver", weights=checkpoint, device="cpu")
    losses = []
    for case in cases:
        prepared = _prepare(case)
        patch = torch.from_numpy(_patch(prepared, prepared.liver_voxels.mean(axis=0).astype(int), PATCH))[None]
        with torch.no_grad():
            probability = net(patch[:, :1])
        crop = (slice(None), slice(None), *(slice(13, 41),) * 3)
        losses.append(float(dice_loss(probability, patch[:, 1:2][crop], patch[:, 2:3][crop])))
    return float(np.mean(losses))


@pytest.mark.slow
def test_loss_falls_and_resume_is_exact(tmp_path):
    cases = [_case("ct", 0), _case("mr", 3)]
    options = {"batch_size": 1, "learning_rate": 1e-2, "input_shape": PATCH, "pretrained": False, "seed": 3}
    split = train(cases, steps=4, checkpoint_dir=tmp_path / "split", checkpoint_every=2, **options)
    early = tmp_path / "early.pt"
    shutil.copy(split.checkpoint, early)
    resumed = train(cases, steps=10, checkpoint_dir=tmp_path / "split", **options)
    assert resumed.steps == 10 and resumed.checkpoint.is_file()
    assert _held_out_loss(resumed.checkpoint, cases) < _held_out_loss(early, cases) - 0.02

    straight = train(cases, steps=5, checkpoint_dir=tmp_path / "straight", **options)
    np.testing.assert_allclose(resumed.losses[:5], straight.losses, rtol=1e-4)


def test_manifest_is_read_relative_to_itself(tmp_path):
    case = _case("mr", 0)
    write_image(case.image, tmp_path / "mr.nii.gz")
    write_image(LabelVolume(case.liver.array * 5, case.liver.grid), tmp_path / "labels.nii.gz")
    manifest = tmp_path / "cases.yaml"
    manifest.write_text(yaml.safe_dump([{"image": "mr.nii.gz", "labels": "labels.nii.gz", "modality": "mr", "liver_label": 5}]))
    (loaded,) = read_manifest(manifest)
    assert loaded.modality == "mr" and np.count_nonzero(loaded.liver.array) == np.count_nonzero(case.liver.array)
    manifest.write_text("- {image: mr.nii.gz}\n")
    with pytest.raises(InputError, match="needs 'image', 'labels' and 'modality'"):
        read_manifest(manifest)
