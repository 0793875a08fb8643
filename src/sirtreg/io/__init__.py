"""Readers and writers: NIfTI/NRRD/MHA, DICOM series and multi-frame files, SEG, RTSTRUCT, RT Dose, Slicer files.

The DICOM readers and writers are imported at their first use (highdicom and pydicom's imaging parts take
a fifth of a second to load), so a command that reads and writes NIfTI files never loads them. (The
de-identification names are imported at once, the submodule ``deidentify`` would otherwise shadow the
function of that name; that module loads pydicom only when it de-identifies a dataset.)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io.deidentify import DEFAULT_PSEUDONYM, Deidentification, deidentification_for, deidentify
from sirtreg.io.images import (
    check_output_folder,
    check_plausible_grid,
    has_image_suffix,
    prepare_output,
    prepare_output_folder,
    read_displacement_file,
    read_label_file,
    read_volume_file,
    require_file,
    write_displacement_file,
    write_volume_file,
)
from sirtreg.io.reorient import orient_like
from sirtreg.io.slicer import (
    Segment,
    Segmentation,
    is_segmentation_file,
    read_segmentation,
    write_segmentation,
)

_DICOM = {  # name -> the module that defines it, imported at first use
    **dict.fromkeys(("SeriesInfo", "list_series"), "sirtreg.io.dicom_series"),
    "read_dicom": "sirtreg.io.dicom",
    **dict.fromkeys(("read_dicom_seg", "write_dicom_seg"), "sirtreg.io.dicom_seg"),
    **dict.fromkeys(("write_dicom_nm", "write_dicom_series"), "sirtreg.io.dicom_write"),
    **dict.fromkeys(("read_rt_dose", "write_rt_dose"), "sirtreg.io.rt_dose"),
    **dict.fromkeys(("read_rtstruct", "write_rtstruct"), "sirtreg.io.rtstruct"),
}

if TYPE_CHECKING:
    from sirtreg.io.dicom import read_dicom
    from sirtreg.io.dicom_seg import read_dicom_seg, write_dicom_seg
    from sirtreg.io.dicom_series import SeriesInfo, list_series
    from sirtreg.io.dicom_write import write_dicom_nm, write_dicom_series
    from sirtreg.io.rt_dose import read_rt_dose, write_rt_dose
    from sirtreg.io.rtstruct import read_rtstruct, write_rtstruct


def __getattr__(name: str) -> Any:
    """The DICOM readers and writers, imported at first use."""
    if name not in _DICOM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_DICOM[name]), name)
    globals()[name] = value
    return value


def read_image(path: str | os.PathLike[str], *, modality: str = "", series: str | None = None) -> Volume:
    """Read a 3D scalar image: NIfTI, NRRD, MHA, a DICOM folder, or a DICOM file.

    A DICOM file that is one slice brings in its series from the same folder;
    a multi-frame file (NM, PT) is read on its own. ``series`` selects a
    series in a folder by UID or description; ``modality`` overrides the
    modality stored in the file, if any.
    """
    path = require_file(path)
    if is_segmentation_file(path):
        raise InputError(f"{path.name} is a segmentation, not an image; read it with read_labels or read_segmentation")
    if path.is_dir() or not has_image_suffix(path):
        from sirtreg.io.dicom import read_dicom

        volume = read_dicom(path, series=series, modality=modality)
    else:
        volume = read_volume_file(path, modality=modality)
    check_plausible_grid(volume.grid, path.name)
    return volume


def read_planar_view(path: str | os.PathLike[str], *, view: str = "anterior") -> Volume:
    """Read one planar scintigraphy view (counts) as a volume of one slice: a NIfTI, NRRD or MHA file of one 2D
    image, or a DICOM NM planar file (of that view, or holding both views, :mod:`sirtreg.io.planar_dicom`)."""
    path = require_file(path)
    if path.is_dir():
        raise InputError(f"{path.name} is a folder: give the planar view's file")
    if not has_image_suffix(path):
        from sirtreg.io.planar_dicom import read_planar_dicom

        return read_planar_dicom(path, view)
    return read_volume_file(path, modality="NM", planar=True)


def read_planar_regions(path: str | os.PathLike[str]) -> LabelVolume:
    """Read the regions drawn on a planar view: a label map of one 2D image (NIfTI, NRRD or MHA)."""
    path = require_file(path)
    if path.is_dir() or not has_image_suffix(path) or is_segmentation_file(path):
        raise InputError(f"{path.name}: the regions of a planar view are read from a NIfTI, NRRD or MHA label map")
    return read_label_file(path, planar=True)


def read_labels(path: str | os.PathLike[str], *, labels: dict[int, str] | None = None) -> LabelVolume:
    """Read a 3D integer label map (NIfTI, NRRD, MHA) or a 3D Slicer ``.seg.nrrd`` (named labels).

    ``labels`` (value -> name) replaces the names stored in the file, if any.

    A segmentation whose segments overlap is refused: read it with
    :func:`read_segmentation` instead.
    """
    path = require_file(path)
    if is_segmentation_file(path):
        try:
            volume = read_segmentation(path).to_label_volume()
        except InputError as exc:
            raise InputError(f"{path.name}: {exc}") from None
        volume = volume if labels is None else LabelVolume(volume.array, volume.grid, labels=labels)
    elif has_image_suffix(path):
        volume = read_label_file(path, labels=labels)
    else:
        raise InputError(f"unrecognised label map format: {path.name}")
    check_plausible_grid(volume.grid, path.name)
    return volume


def write_image(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a Volume or LabelVolume; the format follows the suffix. Never overwrites unless asked."""
    return write_volume_file(volume, path, overwrite=overwrite)


read_displacement = read_displacement_file
write_displacement = write_displacement_file

__all__ = [
    "DEFAULT_PSEUDONYM",
    "Deidentification",
    "Segment",
    "Segmentation",
    "SeriesInfo",
    "check_output_folder",
    "deidentification_for",
    "deidentify",
    "list_series",
    "orient_like",
    "prepare_output",
    "prepare_output_folder",
    "read_dicom",
    "read_dicom_seg",
    "read_displacement",
    "read_image",
    "read_labels",
    "read_planar_regions",
    "read_planar_view",
    "read_rt_dose",
    "read_rtstruct",
    "read_segmentation",
    "write_dicom_nm",
    "write_dicom_seg",
    "write_dicom_series",
    "write_displacement",
    "write_image",
    "write_rt_dose",
    "write_rtstruct",
    "write_segmentation",
]
