"""Conversion between sirtreg volumes and SimpleITK images (same LPS convention)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from sirtreg.geometry import Grid, LabelVolume, Volume


def grid_from_sitk(image: sitk.Image) -> Grid:
    """The grid of a 3D SimpleITK image."""
    return Grid(
        size=image.GetSize(),
        spacing_mm=image.GetSpacing(),
        origin_mm=image.GetOrigin(),
        direction=image.GetDirection(),
    )


def apply_grid(image: sitk.Image, grid: Grid) -> sitk.Image:
    """Set spacing, origin and direction of ``image`` from ``grid`` (in place) and return it."""
    image.SetSpacing(grid.spacing_mm)
    image.SetOrigin(grid.origin_mm)
    image.SetDirection(grid.direction)
    return image


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image holding a copy of the volume's voxels and its geometry."""
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return apply_grid(sitk.GetImageFromArray(np.ascontiguousarray(array)), volume.grid)


def volume_from_sitk(image: sitk.Image, *, modality: str = "", labels: dict[int, str] | None = None) -> Volume:
    """A Volume (or a LabelVolume when ``labels`` is given) from a 3D scalar SimpleITK image."""
    grid = grid_from_sitk(image)
    array = sitk.GetArrayFromImage(image)
    if labels is not None:
        return LabelVolume(array, grid, modality, labels=labels)
    return Volume(array, grid, modality)
