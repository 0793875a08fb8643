"""Transforms from reference space to floating space (LPS mm).

A transform T maps a point x of the reference to the point T(x) of the floating
image that shows the same tissue (the ITK and NiftyReg convention): warping a
floating image onto the reference samples it at T(x).

- :class:`AffineTransform`: T(x) = A (x - c) + c + t, 12 parameters (A, t) about a
  fixed centre c (usually the reference centre) -- exactly ITK's AffineTransform.
- :class:`sirtreg.geometry.DisplacementField`: T(x) = x + u(x) on a reference grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, displacement_on
from sirtreg.io import prepare_output
from sirtreg.output_folder import replacing


@dataclass(frozen=True, eq=False)
class AffineTransform:
    """T(x) = matrix @ (x - centre_mm) + centre_mm + translation_mm, all in LPS mm."""

    matrix: np.ndarray
    translation_mm: np.ndarray
    centre_mm: np.ndarray

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=float).reshape(3, 3)
        translation = np.asarray(self.translation_mm, dtype=float).reshape(3)
        centre = np.asarray(self.centre_mm, dtype=float).reshape(3)
        if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(translation)) and np.all(np.isfinite(centre))):
            raise InputError("affine transform parameters must be finite")
        if np.linalg.det(matrix) <= 0:
            raise InputError("affine matrix must have a positive determinant (no reflection, no collapse)")
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "translation_mm", translation)
        object.__setattr__(self, "centre_mm", centre)

    @classmethod
    def identity(cls, centre_mm: Any = (0.0, 0.0, 0.0)) -> AffineTransform:
        return cls(np.eye(3), np.zeros(3), np.asarray(centre_mm, dtype=float))

    @classmethod
    def from_parameters(cls, parameters: Any, centre_mm: Any) -> AffineTransform:
        """From 12 numbers: the 3x3 matrix row by row, then the translation (mm)."""
        values = np.asarray(parameters, dtype=float).reshape(-1)
        if values.size != 12:
            raise InputError(f"an affine transform has 12 parameters, got {values.size}")
        return cls(values[:9].reshape(3, 3), values[9:], np.asarray(centre_mm, dtype=float))

    @property
    def parameters(self) -> np.ndarray:
        """The 12 parameters: matrix row by row, then translation (mm)."""
        return np.concatenate([self.matrix.ravel(), self.translation_mm])

    @property
    def homogeneous(self) -> np.ndarray:
        """4x4 matrix acting on homogeneous LPS points."""
        out = np.eye(4)
        out[:3, :3] = self.matrix
        out[:3, 3] = self.centre_mm + self.translation_mm - self.matrix @ self.centre_mm
        return out

    def transform_points(self, points_mm: Any) -> np.ndarray:
        """T(p) for LPS points (..., 3) in mm."""
        points = np.asarray(points_mm, dtype=float)
        return (points - self.centre_mm) @ self.matrix.T + self.centre_mm + self.translation_mm

    def inverse(self) -> AffineTransform:
        """T^-1, about the same centre."""
        inverse_matrix = np.linalg.inv(self.matrix)
        return AffineTransform(inverse_matrix, -inverse_matrix @ self.translation_mm, self.centre_mm)

    def then(self, other: AffineTransform) -> AffineTransform:
        """The composition x -> other(self(x)), about this transform's centre."""
        homogeneous = other.homogeneous @ self.homogeneous
        matrix = homogeneous[:3, :3]
        offset = homogeneous[:3, 3]
        translation = offset + matrix @ self.centre_mm - self.centre_mm
        return AffineTransform(matrix, translation, self.centre_mm)

    def inverse_transform_points(self, points_mm: Any) -> np.ndarray:
        """T^-1(y) for floating LPS points (..., 3), exact."""
        return self.inverse().transform_points(points_mm)

    def displacement_on(self, grid: Grid) -> DisplacementField:
        """The paper's initial displacement field: u(x) = T(x) - x at the voxel centres of ``grid``."""
        return displacement_on(self, grid)

    def to_sitk(self) -> sitk.AffineTransform:
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(tuple(self.matrix.ravel()))
        transform.SetCenter(tuple(self.centre_mm))
        transform.SetTranslation(tuple(self.translation_mm))
        return transform

    @classmethod
    def from_sitk(cls, transform: sitk.Transform) -> AffineTransform:
        """From any SimpleITK 3D matrix-offset transform (affine, rigid, similarity, translation-free)."""
        return cls(np.asarray(transform.GetMatrix()).reshape(3, 3), np.asarray(transform.GetTranslation()),
                   np.asarray(transform.GetCenter()))


def compose_displacements(first: DisplacementField, second: DisplacementField) -> DisplacementField:
    """x -> second(first(x)) on ``first``'s grid: u(x) = u1(x) + u2(x + u1(x))."""
    moved = first.mapped_grid_points()
    return DisplacementField(first.array + second.displacement_at(moved), first.grid)


def write_affine(transform: AffineTransform, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Save as an ITK transform file (.tfm or .txt), readable by SimpleITK, ANTs and 3D Slicer."""
    path = prepare_output(path, overwrite=overwrite)
    if path.suffix.lower() not in (".tfm", ".txt"):
        raise InputError(f"an affine transform is saved as .tfm or .txt, not {path.name}")
    with replacing(path, overwrite=True, suffix=path.suffix) as temporary:  # SimpleITK writes by suffix
        sitk.WriteTransform(transform.to_sitk(), str(temporary))
    return path


def read_affine(path: str | os.PathLike[str]) -> AffineTransform:
    """Read an ITK affine (or rigid/similarity) transform file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"{path.name} is not an ITK transform file") from None
    if isinstance(transform, sitk.CompositeTransform) or transform.GetDimension() != 3:
        raise InputError(f"{path.name} does not hold a single 3D linear transform")
    transform = transform.Downcast()
    if not all(hasattr(transform, name) for name in ("GetMatrix", "GetTranslation", "GetCenter")):
        raise InputError(f"{path.name} holds a {transform.GetName()}, not a linear transform")
    return AffineTransform.from_sitk(transform)
