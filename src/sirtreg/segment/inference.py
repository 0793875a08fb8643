"""Liver and lesion segmentation with the authors' trained networks.

The steps follow their ``cnn_liver_lesion_seg_CT_MR_main``: preprocessing
(:mod:`sirtreg.segment.preprocess`), the network over the image, a 0.5
threshold and, for the liver, an opening-like clean-up at 3 mm (erosion by
the 18-connected 3x3x3 structure, largest 6-connected component, dilation
by the same structure). Where the authors feed one field centred on a crop
of at most 489x408x408 mm, images larger than the field here are covered by
overlapping tiles whose probabilities are blended. Masks go back to the
input grid by one-hot resampling in world coordinates (the authors zoom the
binary mask linearly and keep everything > 0, which grows it by up to a
voxel).

Thin stacks (a departure from the authors, who pad every input with 0 to
the full field): an image of fewer slices than one cell of the network's
coarsest level (27 at 3 mm, 81 mm), e.g. a partial-liver MR slab, is
continued in z with empty slices (-0.5, the normalised minimum: air) over
the whole field, and padded as usual (0) in-plane. The authors' crop runs
from above the liver dome to the hips, so their inputs filled most of the
field in z and the network only ever saw thin bands of 0 above and below
the body. For a 20-slice image, 0-padding fills 142 of the 162 slices; the
per-sample normalisation layers then see mostly padding and the network
finds no liver (example MR: DSC 0 with 0-padding, 0.90 with air slices).
Stacks of normal height keep the authors' 0-padding: there, air slices
lower the DSC (example CT: 0.96 -> 0.85). A smaller input field (the
network takes any multiple of 27) does not help: with 0-padding it still
fails on the thin MR, and it lowers the DSC of whole-abdomen images.
"""

from __future__ import annotations

import logging
import math
import os
from itertools import product

import numpy as np
import torch
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.resample import resample
from sirtreg.segment.network import LESION_SPEC, LIVER_SPEC, UNet3D, UNetSpec
from sirtreg.segment.preprocess import (
    check_image,
    check_modality,
    prepare_lesion_input,
    prepare_liver_input,
)
from sirtreg.segment.weights import Progress, load_network, resolve_device

log = logging.getLogger(__name__)

THRESHOLD = 0.5
AIR = -0.5  # the normalised intensity of air (the minimum of both the CT and the MR mapping)


def _starts(n: int, out: int, overlap: int) -> list[int]:
    """Output-window starts along one axis: one centred window (as the authors) or overlapping ones."""
    if n <= out:
        return [math.ceil((n - 1) / 2) - out // 2]
    count = math.ceil((n - out) / (out - overlap)) + 1
    return [round(t * (n - out) / (count - 1)) for t in range(count)]


def _ramp(out: int, overlap: int, tiled: bool) -> np.ndarray:
    if not tiled:
        return np.ones(out, dtype=np.float32)
    t = np.arange(out, dtype=np.float32)
    return np.clip(np.minimum(t + 1, out - t) / (overlap + 1), 1e-3, 1.0)


def predict(
    net: UNet3D,
    array: np.ndarray,
    *,
    overlap_fraction: float = 0.25,
    pad_value: float = 0.0,
    z_fill: float | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Probabilities (z, y, x) float32 for a normalised (z, y, x) image of any size.

    Windows of the network's trained input field, padded with ``pad_value``
    (0, as the authors); outputs of overlapping windows are blended with
    weights that fall off toward each window's border. ``z_fill``, when
    given, is the value of the window's slices beyond the image's first and
    last slice, inside the image's in-plane extent (as if the stack went on
    with slices of that value; ``pad_value`` stays around it in-plane): thin
    stacks are continued with air this way (see the module notes).
    """
    spec = net.spec
    device = next(net.parameters()).device
    margin = spec.margin
    overlaps = [int(o * overlap_fraction) for o in spec.output_shape]
    starts = [_starts(n, o, v) for n, o, v in zip(array.shape, spec.output_shape, overlaps)]
    ramps = [_ramp(o, v, len(s) > 1) for o, v, s in zip(spec.output_shape, overlaps, starts)]
    total = np.zeros(array.shape, dtype=np.float32)
    weight_sum = np.zeros(array.shape, dtype=np.float32)
    windows = list(product(*starts))
    if progress is not None:
        progress("network", 0.0)
    for done, start in enumerate(windows):
        window = np.full(spec.input_shape, pad_value, dtype=np.float32)
        src, dst, out_src, out_dst = [], [], [], []
        for s, m, size, o, n in zip(start, margin, spec.input_shape, spec.output_shape, array.shape):
            lo, hi = max(s - m, 0), min(s - m + size, n)
            src.append(slice(lo, hi))
            dst.append(slice(lo - (s - m), hi - (s - m)))
            lo, hi = max(s, 0), min(s + o, n)
            out_src.append(slice(lo - s, hi - s))
            out_dst.append(slice(lo, hi))
        window[tuple(dst)] = array[tuple(src)]
        if z_fill is not None:
            window[: dst[0].start, dst[1], dst[2]] = z_fill
            window[dst[0].stop :, dst[1], dst[2]] = z_fill
        tensor = torch.from_numpy(window)[None, None].to(device).contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            output = net(tensor)[0, 0].float().cpu().numpy()
        w = ramps[0][out_src[0], None, None] * ramps[1][None, out_src[1], None] * ramps[2][None, None, out_src[2]]
        total[tuple(out_dst)] += w * output[tuple(out_src)]
        weight_sum[tuple(out_dst)] += w
        if progress is not None:
            progress("network", (done + 1) / len(windows))
    return total / weight_sum


def thin_stack_slices(spec: UNetSpec) -> int:
    """Slices below which an image counts as a thin stack: one cell of the coarsest level (27 for the liver)."""
    return spec.factor ** (spec.levels - 1)


def clean_liver_mask(probability: np.ndarray, *, threshold: float = THRESHOLD) -> np.ndarray:
    """The authors' clean-up at 3 mm: threshold, erode (18-connected 3x3x3), keep the largest
    6-connected component, dilate (same structure). Returns a boolean mask (all False if nothing)."""
    structure = ndimage.generate_binary_structure(3, 2)
    eroded = ndimage.binary_erosion(probability > threshold, structure)
    labels, count = ndimage.label(eroded, ndimage.generate_binary_structure(3, 1))
    if count == 0:
        return np.zeros(probability.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_dilation(labels == int(np.argmax(sizes)), structure)


def segment_liver(
    volume: Volume,
    *,
    modality: str,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
) -> LabelVolume:
    """Liver mask (label 1, "liver") of a CT or MR volume, on the volume's own grid.

    Parameters
    ----------
    volume : a 3D CT (HU) or MR image, any orientation and spacing.
    modality : "ct" or "mr" (selects the intensity normalisation; one network for both).
    device : "cpu", "cuda" or None (CUDA when available).
    progress : called as ``progress(step, fraction)`` with steps "preprocess", "download",
        "verify", "convert" (these three at first use only), "network", "postprocess".
    cache_dir : model cache folder (default: the user cache, see :func:`~sirtreg.segment.weights.models_dir`).
    weights : fine-tuned weights (a checkpoint of :func:`~sirtreg.segment.training.train`) instead of the published ones.

    A thin stack (under 27 slices at 3 mm, e.g. a partial-liver MR slab) is
    continued in z with air slices instead of 0-padding (see the module notes).

    Raises InputError for a 2D image, an image without a body (e.g. all air), or no liver found.
    """
    check_image(volume)
    kind = check_modality(modality)
    target = resolve_device(device)
    if progress is not None:
        progress("preprocess", 0.0)
    prepared = prepare_liver_input(volume, kind, spacing_mm=LIVER_SPEC.spacing_mm)
    net = load_network("liver", device=target, cache_dir=cache_dir, progress=progress, weights=weights)
    log.info("liver network input: %s", prepared.grid.describe())
    thin = prepared.array.shape[0] < thin_stack_slices(net.spec)
    if thin:
        log.info("thin stack (%d slices at 3 mm): continued in z with air slices", prepared.array.shape[0])
    probability = predict(net, prepared.array, z_fill=AIR if thin else None, progress=progress)
    if progress is not None:
        progress("postprocess", 0.0)
    mask = clean_liver_mask(probability)
    if not mask.any():
        raise InputError(f"no liver found in the {kind.upper()} image ({volume.grid.describe()})")
    coarse = LabelVolume(mask.astype(np.uint8), prepared.grid, labels={1: "liver"})
    result = resample(coarse, volume.grid, label_mode="one-hot")
    if progress is not None:
        progress("postprocess", 1.0)
    return LabelVolume(result.array.astype(np.uint8), volume.grid, volume.modality, labels={1: "liver"})


def segment_lesions(
    volume: Volume,
    *,
    liver: LabelVolume,
    modality: str,
    liver_label: int | str | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LabelVolume:
    """Liver-lesion mask (label 1, "lesion") of a CT or MR volume, on the volume's own grid.

    Uses the authors' lesion network (``pyliverlesionseg`` 0.3, trained in
    2022 on CT and MR of liver patients with lesion contours, 1x1x3 mm,
    inputs masked to a dilated liver). It looks only inside ``liver`` (a
    label map on the same grid; ``liver_label`` selects one label, default
    every non-zero voxel), e.g. the output of :func:`segment_liver`. An
    empty result is a valid answer (no lesion found).
    """
    check_image(volume)
    kind = check_modality(modality)
    volume.grid.require_same(liver.grid, what="the image and the liver mask")
    mask = liver.array > 0 if liver_label is None else liver.mask(liver_label)
    target = resolve_device(device)
    if progress is not None:
        progress("preprocess", 0.0)
    prepared = prepare_lesion_input(volume, mask, kind, spacing_mm=LESION_SPEC.spacing_mm)
    net = load_network("lesion", device=target, cache_dir=cache_dir, progress=progress)
    probability = predict(net, prepared.array, progress=progress)
    lesions = LabelVolume((probability > THRESHOLD).astype(np.uint8), prepared.grid, labels={1: "lesion"})
    result = resample(lesions, volume.grid, label_mode="one-hot") if lesions.present_labels() else None
    array = np.zeros(volume.shape, np.uint8) if result is None else result.array.astype(np.uint8)
    if progress is not None:
        progress("postprocess", 1.0)
    return LabelVolume(array, volume.grid, volume.modality, labels={1: "lesion"})
