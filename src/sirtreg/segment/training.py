"""Fine-tuning the liver network on the user's CT/MR volumes with liver labels.

As the authors trained it (``train_liver_lesion_seg.py``): one network for
CT and MR (the modality only selects the intensity normalisation), soft Dice
loss per image counted only where the patch lies inside the image, Adam,
random left-right flips and Gaussian noise (sigma 0.01). Added here: small
random in-plane rotations and scalings and intensity scale/shift, and
sampling half of the patches centred on the liver. Checkpoints hold the
model, the optimiser and the random generators, so a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.resample import resample
from sirtreg.segment.network import LIVER_SPEC, UNet3D, output_shape
from sirtreg.segment.preprocess import check_image, check_modality, prepare_liver_input
from sirtreg.segment.weights import Progress, load_network, resolve_device

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainingCase:
    """One training image: a CT or MR ``image`` and its ``liver`` label map (non-zero = liver), same grid."""

    image: Volume
    liver: LabelVolume
    modality: str


@dataclass(frozen=True)
class TrainingResult:
    """Loss of every step since the start (resumed runs included) and the final checkpoint file."""

    losses: tuple[float, ...]
    steps: int
    checkpoint: Path


def read_manifest(path: str | os.PathLike[str]) -> list[TrainingCase]:
    """Cases from a YAML (or JSON) list of ``{image: FILE, labels: FILE, modality: ct|mr, liver_label: 5}``.

    Paths are relative to the manifest; ``liver_label`` defaults to 1.
    """
    from sirtreg.io import read_image, read_labels

    manifest = Path(path)
    try:
        entries = yaml.safe_load(manifest.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the training manifest {manifest}: {exc}") from None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{manifest} must hold a non-empty list of cases")
    cases = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not {"image", "labels", "modality"} <= set(entry):
            raise InputError(f"{manifest}: case {number} needs 'image', 'labels' and 'modality'")
        image = read_image(manifest.parent / entry["image"])
        labels = read_labels(manifest.parent / entry["labels"])
        liver = labels.array == int(entry.get("liver_label", 1))
        cases.append(TrainingCase(image, LabelVolume.from_mask(liver, labels.grid, "liver"), entry["modality"]))
    return cases


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # (z, y, x) normalised
    liver: np.ndarray  # (z, y, x) float 0/1
    liver_voxels: np.ndarray  # (N, 3) indices of liver voxels


def _prepare(case: TrainingCase) -> _Prepared:
    check_image(case.image)
    case.image.grid.require_same(case.liver.grid, what="a training image and its liver labels")
    prepared = prepare_liver_input(case.image, check_modality(case.modality), spacing_mm=LIVER_SPEC.spacing_mm)
    liver = LabelVolume((case.liver.array > 0).astype(np.uint8), case.liver.grid, labels={1: "liver"})
    if not liver.present_labels():
        raise InputError(f"a training case has an empty liver label ({case.image.describe()})")
    target = resample(liver, prepared.grid, label_mode="one-hot").array.astype(np.float32)
    return _Prepared(prepared.array, target, np.argwhere(target > 0))


def _patch(case: _Prepared, centre: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(3, *shape): image, liver and inside-the-image indicator around ``centre``, zero outside."""
    out = np.zeros((3, *shape), dtype=np.float32)
    start = centre - np.asarray(shape) // 2
    src = tuple(slice(max(s, 0), min(s + n, a)) for s, n, a in zip(start, shape, case.image.shape))
    dst = tuple(slice(r.start - s, r.stop - s) for r, s in zip(src, start))
    out[(0, *dst)] = case.image[src]
    out[(1, *dst)] = case.liver[src]
    out[(2, *dst)] = 1.0
    return out


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flip (x), in-plane rotation (+-10 deg) and scaling (0.9-1.1) of (N, 3, z, y, x) patches
    holding image, liver and inside-image channels; then image intensity scale/shift and noise."""
    n = batch.shape[0]
    u = torch.rand(n, 5, generator=generator)
    angle = (u[:, 0] - 0.5) * math.radians(20)
    scale = 0.9 + 0.2 * u[:, 1]
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 3, 4)
    theta[:, 0, 0] = torch.cos(angle) * scale * flip
    theta[:, 0, 1] = -torch.sin(angle) * scale
    theta[:, 1, 0] = torch.sin(angle) * scale * flip
    theta[:, 1, 1] = torch.cos(angle) * scale
    theta[:, 2, 2] = 1.0
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    image = F.grid_sample(batch[:, :1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    labels = F.grid_sample(batch[:, 1:], grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gain = (0.9 + 0.2 * u[:, 3]).view(n, 1, 1, 1, 1)
    shift = (0.1 * u[:, 4] - 0.05).view(n, 1, 1, 1, 1)
    noise = 0.01 * torch.randn(image.shape, generator=generator)
    return torch.cat([image * gain + shift + noise, labels], dim=1)


def dice_loss(probability: torch.Tensor, target: torch.Tensor, inside: torch.Tensor, smooth: float = 1e-7) -> torch.Tensor:
    """Mean over the batch of 1 - soft Dice per image, voxels outside the image left out; (N, 1, ...) tensors."""
    dims = tuple(range(1, probability.ndim))
    p, t = probability * inside, target * inside
    dice = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return (1 - dice).mean()


def train(
    cases: str | os.PathLike[str] | Sequence[TrainingCase],
    *,
    steps: int,
    checkpoint_dir: str | os.PathLike[str],
    resume: bool = True,
    progress: Progress | None = None,
    batch_size: int = 2,
    learning_rate: float = 1e-4,
    input_shape: tuple[int, int, int] = LIVER_SPEC.input_shape,
    pretrained: bool = True,
    checkpoint_every: int = 50,
    seed: int = 0,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TrainingResult:
    """Fine-tune the liver network for ``steps`` optimiser steps in total; returns the losses.

    ``cases`` is a manifest file (see :func:`read_manifest`) or TrainingCase
    objects; CT and MR may be mixed, each batch draws ``batch_size`` cases at
    random. ``input_shape`` (z, y, x) is the patch fed to the network (axes
    multiples of 27; the default is the trained field, smaller patches
    fit a CPU). Starts from the published weights (``pretrained``) or from
    a seeded random initialisation. With ``resume``, a checkpoint in
    ``checkpoint_dir`` is continued; one is written every
    ``checkpoint_every`` steps and at the end (``checkpoint.pt``: model,
    optimiser, random generators, losses).
    """
    if steps < 1 or batch_size < 1 or checkpoint_every < 1:
        raise InputError("steps, batch_size and checkpoint_every must be >= 1")
    out_shape = output_shape(LIVER_SPEC, input_shape)
    data = [_prepare(c) for c in (read_manifest(cases) if isinstance(cases, (str, os.PathLike)) else cases)]
    if not data:
        raise InputError("no training cases given")
    target_device = resolve_device(device)
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT

    generator = torch.Generator().manual_seed(seed)
    if pretrained:
        net = load_network("liver", device=target_device, cache_dir=cache_dir)
    else:
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global generator untouched
            torch.manual_seed(seed)
            net = UNet3D(LIVER_SPEC).to(target_device)
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    losses: list[float] = []
    if resume and path.is_file():
        state = torch.load(path, map_location=target_device, weights_only=True)
        if tuple(state["input_shape"]) != tuple(input_shape):
            raise InputError(f"{path} was trained on patches {tuple(state['input_shape'])}, not {tuple(input_shape)}")
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        losses = list(state["losses"])
        log.info("resuming from step %d of %s", len(losses), path)
    net.train()

    def save() -> None:
        state = {"model": net.state_dict(), "optimizer": optimiser.state_dict(), "generator": generator.get_state(),
                 "losses": losses, "input_shape": list(input_shape), "architecture": LIVER_SPEC.name}
        torch.save(state, folder / f".{CHECKPOINT}.tmp")
        os.replace(folder / f".{CHECKPOINT}.tmp", path)

    margin = [(i - o) // 2 for i, o in zip(input_shape, out_shape)]
    crop = tuple(slice(m, m + o) for m, o in zip(margin, out_shape))
    while len(losses) < steps:
        patches = []
        for _ in range(batch_size):
            case = data[int(torch.randint(len(data), (1,), generator=generator))]
            if bool(torch.rand(1, generator=generator) < 0.5):
                centre = case.liver_voxels[int(torch.randint(len(case.liver_voxels), (1,), generator=generator))]
            else:
                centre = np.array([int(torch.randint(n, (1,), generator=generator)) for n in case.image.shape])
            patches.append(_patch(case, centre, input_shape))
        batch = _augment(torch.from_numpy(np.stack(patches)), generator).to(target_device)
        probability = net(batch[:, :1].contiguous(memory_format=torch.channels_last_3d))
        target, inside = batch[:, 1:2][(slice(None), slice(None), *crop)], batch[:, 2:3][(slice(None), slice(None), *crop)]
        loss = dice_loss(probability, target, inside)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        log.debug("step %d: Dice loss %.4f", len(losses), losses[-1])
        if progress is not None:
            progress("train", len(losses) / steps)
        if len(losses) % checkpoint_every == 0 or len(losses) == steps:
            save()
    if not path.is_file():
        save()
    return TrainingResult(tuple(losses), len(losses), path)
