"""A registration on disk: ITK affine, ITK displacement field and a JSON record.

Folder layout (every file readable by SimpleITK, ANTs and 3D Slicer):

- ``affine.tfm``: the affine stage, reference -> floating (ITK convention);
- ``displacement.nii.gz``: the whole transform as a displacement field in LPS mm
  (only after a non-rigid stage);
- ``registration.json``: settings, losses and timings per pyramid level;
- ``sirtreg-manifest.json`` (at the root of the output folder holding it): every file with its
  checksum, so that a folder cut by an interrupt or mixed with another registration is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sirtreg.errors import InputError
from sirtreg.geometry import Transform
from sirtreg.io import read_displacement, write_displacement
from sirtreg.output_folder import verify_folder, write_atomically
from sirtreg.register.result import RegistrationResult
from sirtreg.register.transforms import read_affine, write_affine

AFFINE_FILE = "affine.tfm"
DISPLACEMENT_FILE = "displacement.nii.gz"
RECORD_FILE = "registration.json"


def write_registration(result: RegistrationResult, outdir: str | os.PathLike[str], *,
                       extra: dict[str, Any] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write the transform files and the JSON record into ``outdir``; returns the paths by name."""
    outdir = Path(outdir)
    written = {"affine": write_affine(result.affine, outdir / AFFINE_FILE, overwrite=overwrite)}
    if result.displacement is not None:
        written["displacement"] = write_displacement(result.displacement, outdir / DISPLACEMENT_FILE,
                                                     overwrite=overwrite)
    written["record"] = write_atomically(outdir / RECORD_FILE, json.dumps({**result.summary(), **(extra or {})},
                                                                          indent=2), overwrite=overwrite)
    return written


def read_transform(folder: str | os.PathLike[str]) -> Transform:
    """The transform of a registration folder: the displacement field if present, else the affine.

    The folder must be complete and unaltered (:func:`~sirtreg.output_folder.verify_folder`): a folder
    left by an interrupted command, or holding files of another registration, is refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no registration folder at {folder}")
    verify_folder(folder, what="registration folder")
    if not (folder / RECORD_FILE).is_file():
        raise InputError(f"{folder} is not a registration folder: it has no {RECORD_FILE}")
    if (folder / DISPLACEMENT_FILE).exists():
        return read_displacement(folder / DISPLACEMENT_FILE)
    if (folder / AFFINE_FILE).exists():
        return read_affine(folder / AFFINE_FILE)
    raise InputError(f"{folder} holds no {AFFINE_FILE} or {DISPLACEMENT_FILE}")
