"""Reading and writing NIfTI, NRRD and MHA/MHD images through SimpleITK."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.io.nifti_check import check_geometry, read_to_end
from sirtreg.itk_bridge import grid_from_sitk, to_sitk, volume_from_sitk
from sirtreg.output_folder import replacing, save_figure

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def has_image_suffix(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def require_file(path: str | os.PathLike[str]) -> Path:
    """The path as a Path, or InputError if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    return path


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def read_sitk_image(path: Path, *, planar: bool = False) -> tuple[sitk.Image, np.ndarray]:
    """Read a 3D scalar image file, refusing 2D, 4D and vector images, and cut or ambiguous NIfTI files; with
    ``planar``, one 2D image (a planar scintigraphy view) instead, returned as a volume of one slice.

    Returns the image and the flat (z, y, x) indices of voxels the file holds as NaN or infinite, which
    SimpleITK's NIfTI reader turns into 0 (empty for other formats, where SimpleITK keeps them).
    """
    contents = read_to_end(path) if _is_nifti(path) else None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise InputError(f"cannot read {path.name} as an image: {first}") from None
    dimension = image.GetDimension()
    size = "x".join(str(n) for n in image.GetSize())
    if planar:
        if dimension == 2:
            image = sitk.JoinSeries(image)
            dimension = 3
        elif dimension == 3 and image.GetSize()[2] != 1:
            raise InputError(f"{path.name} has {image.GetSize()[2]} slices ({size}); a planar view is one image")
    elif dimension == 2 or (dimension == 3 and min(image.GetSize()) == 1):
        raise InputError(f"{path.name} is a 2D image ({size}); a 3D volume is needed")
    if dimension != 3:
        raise InputError(f"{path.name} is a {dimension}D image ({size}); a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; a scalar image is needed"
        )
    if contents is None:
        return image, np.zeros(0, dtype=np.int64)
    check_geometry(contents.header, path.name, spacing_mm=image.GetSpacing(), origin_mm=image.GetOrigin(),
                   direction=image.GetDirection())
    return image, contents.nonfinite_indices


def read_volume_file(path: Path, *, modality: str = "", planar: bool = False) -> Volume:
    """A scalar Volume from a NIfTI, NRRD or MHA file (``planar``: one 2D image, see :func:`read_sitk_image`);
    NaN and infinite voxels are kept as NaN (with a warning)."""
    image, nonfinite = read_sitk_image(path, planar=planar)
    volume = volume_from_sitk(image, modality=modality)
    array = volume.array
    if nonfinite.size:
        array = array.astype(np.float32 if array.dtype.itemsize <= 4 else np.float64)
        array.reshape(-1)[nonfinite] = np.nan
    if array.dtype.kind == "f" and (count := int(np.count_nonzero(~np.isfinite(array)))):
        log.warning("%s holds %d NaN or infinite voxels", path.name, count)
    return volume.with_array(array) if array is not volume.array else volume


def read_label_file(path: Path, *, labels: dict[int, str] | None = None, planar: bool = False) -> LabelVolume:
    """A LabelVolume from a NIfTI, NRRD or MHA label map (whole numbers only; ``planar``: on one 2D image)."""
    image, nonfinite = read_sitk_image(path, planar=planar)
    array = sitk.GetArrayFromImage(image)
    if nonfinite.size or (np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array))):
        raise InputError(f"{path.name} holds NaN or infinite values; a label map must hold whole numbers")
    if np.issubdtype(array.dtype, np.floating) and np.any(array != np.round(array)):
        raise InputError(f"{path.name} holds fractional values; a label map must hold whole numbers")
    volume = volume_from_sitk(image)
    return LabelVolume(np.round(array).astype(np.int32) if np.issubdtype(array.dtype, np.floating) else array,
                       volume.grid, labels=labels or {})


SPACING_RANGE_MM = (0.05, 50.0)
"""Voxel sizes (mm) of any CT, MR, SPECT or PET scan; outside it, a header in other units or a damaged one."""


def check_plausible_grid(grid: Grid, name: str) -> None:
    """Refuse a voxel size outside :data:`SPACING_RANGE_MM` (e.g. a header in metres or micrometres)."""
    low, high = SPACING_RANGE_MM
    if any(not low <= size <= high for size in grid.spacing_mm):
        raise InputError(f"{name} has voxels of {' x '.join(f'{s:g}' for s in grid.spacing_mm)} mm, outside the "
                         f"{low:g}-{high:g} mm of any scan: check the units of its header")


def prepare_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Check that ``path`` may be written (parent created); refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _image_suffix(path: Path) -> str:
    suffix = next((s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise InputError(f"unknown image format for {path.name}; use one of {', '.join(IMAGE_SUFFIXES)}")
    return suffix


def _write_sitk_atomically(image: sitk.Image, path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Write under a temporary name beside ``path``, then rename; nothing is left behind on failure."""
    suffix = _image_suffix(Path(path))
    with replacing(path, overwrite=overwrite, suffix=suffix) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=suffix in (".nii.gz", ".nrrd", ".mha"))
    path = Path(path)
    log.debug("wrote %s", path.name)
    return path


def check_output_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse a path that is a file, or a non-empty folder unless ``overwrite``; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{path} is not empty; choose a new folder or pass --overwrite")
    return path


def prepare_output_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """:func:`check_output_folder`, then create the folder."""
    path = check_output_folder(path, overwrite=overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_png(figure: Any, path: str | os.PathLike[str], *, overwrite: bool = False, dpi: int = 120) -> Path:
    """Save a matplotlib ``figure`` as a PNG at ``path``, atomically; refuse another suffix or an existing file."""
    return save_figure(figure, path, overwrite=overwrite, dpi=dpi)


def write_volume_file(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a Volume or LabelVolume to NIfTI, NRRD or MHA (by suffix), atomically."""
    return _write_sitk_atomically(to_sitk(volume), path, overwrite=overwrite)


def write_displacement_file(field: DisplacementField, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a displacement field as an ITK vector image (float32, LPS mm), readable by SimpleITK, ANTs and Slicer."""
    image = sitk.GetImageFromArray(field.array.astype(np.float32), isVector=True)
    image.SetSpacing(field.grid.spacing_mm)
    image.SetOrigin(field.grid.origin_mm)
    image.SetDirection(field.grid.direction)
    return _write_sitk_atomically(image, path, overwrite=overwrite)


def read_displacement_file(path: str | os.PathLike[str]) -> DisplacementField:
    """Read an ITK displacement field (3 components, LPS mm)."""
    path = require_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"cannot read {path.name} as a displacement field") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(f"{path.name} is not a 3D displacement field with 3 components per voxel")
    return DisplacementField(sitk.GetArrayFromImage(image), grid_from_sitk(image))
