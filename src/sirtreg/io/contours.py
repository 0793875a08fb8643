"""Contour files of any supported kind, read on the voxels of their image.

A contour is a label map (NIfTI, NRRD, MHA) on the voxels of its image (the same voxel
centres, in any axis order), a 3D Slicer ``.seg.nrrd`` on those voxels, a DICOM SEG or an
RTSTRUCT that references the image's series. :func:`read_contour` tells them apart,
chooses the segments asked for and places the result on the image's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io import read_labels  # defined in the package (io/__init__), which never imports this module
from sirtreg.io.images import has_image_suffix
from sirtreg.io.reorient import orient_like
from sirtreg.io.slicer import is_segmentation_file, read_segmentation


def is_label_value(segment: str) -> bool:
    """Whether ``segment`` (of :attr:`ContourInput.segments`) is a label value: digits only, e.g. "5"."""
    return segment.isascii() and segment.isdigit()


def describe_values(values: Sequence[Any], *, most: int = 20) -> str:
    """``values`` as "1, 5, 6", the first ``most`` and a count if there are more; "none" if empty."""
    shown = ", ".join(str(v) for v in values[:most])
    return (f"{shown}, ... ({len(values)} in all)" if len(values) > most else shown) or "none"


def is_rtstruct(path: Path) -> bool:
    """Whether ``path`` is a DICOM RTSTRUCT file (read without pixels); False for folders, images and SEGs."""
    if path.is_dir() or has_image_suffix(path) or is_segmentation_file(path):
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except (InvalidDicomError, OSError):
        return False  # the caller reports unreadable files
    return str(header.get("Modality", "")).upper() == "RTSTRUCT"


def selected_segments(labels: LabelVolume, segments: Sequence[str], path: Path, *, by_value: bool = False
                      ) -> LabelVolume:
    """Only the segments chosen (all if none), values kept: by name where the file names its labels, by label
    value (digits, e.g. "5") in a plain label map, which names none (``by_value``)."""
    if not segments:
        return labels
    if not by_value:
        values = {value for value, name in labels.labels.items() if name in segments}
        missing = [name for name in segments if name not in labels.labels.values()]
        if missing:
            raise InputError(f"{path.name} holds no segment {', '.join(map(repr, missing))}; it holds "
                             f"{describe_values([repr(name) for name in labels.labels.values()])}")
    else:
        names = [segment for segment in segments if not is_label_value(segment)]
        if names:
            raise InputError(f"{path.name} is a label map without segment names: choose its segments by label "
                             f"value (e.g. segments: [5]), not by name ({', '.join(map(repr, names))})")
        present = labels.present_labels()
        values = {int(segment) for segment in segments}
        missing = sorted(values - set(present))
        if missing:
            raise InputError(f"{path.name} holds no label {', '.join(map(str, missing))}; it holds labels "
                             f"{describe_values(present)}")
    array = np.where(np.isin(labels.array, list(values)), labels.array, 0).astype(labels.array.dtype)
    return LabelVolume(array, labels.grid, labels={v: n for v, n in labels.labels.items() if v in values})


def _require_one_liver(path: Path, held: Sequence[str | int]) -> None:
    """Refuse a liver contour file that holds several segments (names) or labels (values) of which none is
    chosen: the liver is one of them."""
    if len(held) > 1:
        kind = "labels" if isinstance(held[0], int) else "segments"
        shown = [value if isinstance(value, int) else repr(value) for value in held]
        raise InputError(f"{path.name} holds {len(held)} {kind} ({describe_values(shown)}); choose the liver's "
                         f"with 'segments' in the plan, e.g. {{path: {path.name}, segments: [{held[0]}]}}")


def read_contour(path: Path, segments: Sequence[str], image: Volume, role: str) -> LabelVolume:
    """A contour file on the voxels of ``image``: a label map, a Slicer segmentation, a DICOM SEG or an RTSTRUCT.

    ``segments`` chooses segments by name (SEG, RTSTRUCT, ``.seg.nrrd``) or label value (digits, in a plain
    label map); none: all. ``role`` is "liver", "lesions" or "landmarks": a liver contour of several segments
    or labels must choose the liver's, and comes back as one mask; other segments must not overlap.
    """
    if is_segmentation_file(path):
        segmentation = read_segmentation(path)
        names = list(segments) or segmentation.names
        missing = [name for name in names if name not in segmentation.names]
        if missing:
            raise InputError(f"{path.name} holds no segment {', '.join(map(repr, missing))}; it holds "
                             f"{describe_values([repr(name) for name in segmentation.names])}")
        masks = {name: segmentation.mask(name) for name in names}
        array = np.zeros(segmentation.grid.shape, np.uint16)
        for value, (name, mask) in enumerate(masks.items(), start=1):
            if role != "liver" and np.any(array[mask]):
                raise InputError(f"{path.name}: segment {name!r} overlaps another; {role} segments must not overlap")
            array[mask] = value
        labels = LabelVolume(array, segmentation.grid, labels=dict(enumerate(names, start=1)))
        held: Sequence[str | int] = segmentation.names
    elif has_image_suffix(path):
        plain = selected_segments(read_labels(path), segments, path, by_value=True)
        held = plain.present_labels()
        labels = LabelVolume(plain.array, plain.grid, labels={v: f"{role.rstrip('s')} {v}" for v in held})
    elif is_rtstruct(path):
        from sirtreg.io.rtstruct import read_rtstruct  # the DICOM readers load at first use (see sirtreg.io)

        labels = read_rtstruct(path, image, rois=segments, allow_overlap=role == "liver")
        held = list(labels.labels.values())
    else:
        from sirtreg.io.dicom_seg import read_dicom_seg

        labels = selected_segments(read_dicom_seg(path, reference=image), segments, path)
        held = list(labels.labels.values())
    if role == "liver" and not segments:
        _require_one_liver(path, held)
    labels = orient_like(labels, image.grid)
    if role == "liver":
        return LabelVolume.from_mask(labels.array > 0, image.grid, name="liver")
    return labels
