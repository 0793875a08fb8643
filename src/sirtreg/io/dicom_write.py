"""Writing volumes as DICOM: CT/MR series (one file per slice) and NM multi-frame files.

Voxels are stored as 16-bit integers with a RescaleSlope/Intercept chosen so
that they read back within half a rescale step (exactly for whole numbers
that fit). Files carry new UIDs and anonymous patient placeholders unless
others are given (a :class:`~sirtreg.io.deidentify.Deidentification` is applied
last); outputs are written under a temporary name and renamed.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid, Volume
from sirtreg.io.deidentify import Deidentification
from sirtreg.io.images import prepare_output
from sirtreg.output_folder import replacing

log = logging.getLogger(__name__)

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
}
ANONYMOUS_NAME = "Anonymous"
ANONYMOUS_ID = "ANON"


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters."""
    return format_number_as_ds(float(value))


def _ds_list(values: np.ndarray) -> list[str]:
    return [_ds(v) for v in np.asarray(values, dtype=float).reshape(-1)]


def _right_handed(volume: Volume) -> Volume:
    """The volume with its slice order reversed when its axes are left-handed (same voxels in space).

    DICOM places slices along row x column cosines, so a left-handed grid
    cannot be written as it is.
    """
    grid = volume.grid
    if np.linalg.det(grid.direction_matrix) > 0:
        return volume
    direction = grid.direction_matrix.copy()
    direction[:, 2] *= -1
    flipped = Grid(grid.size, grid.spacing_mm, tuple(grid.index_to_world([0, 0, grid.size[2] - 1])),
                   tuple(direction.reshape(-1)))
    log.debug("left-handed grid: slices written in reverse order")
    return volume.on_grid(volume.array[::-1].copy(), flipped)


def _quantise(array: np.ndarray, *, dtype: type[np.integer]) -> tuple[np.ndarray, float, float]:
    """Stored integers, slope and intercept with ``array ~= stored * slope + intercept``.

    Whole numbers that fit ``dtype`` are kept exactly (slope 1, intercept 0);
    other values are spread over the full integer range, so the error is at
    most slope / 2 (plus the 16-character rounding of the slope).
    """
    if not np.all(np.isfinite(array)):
        raise InputError("the image holds NaN or infinite values; DICOM cannot store them")
    info = np.iinfo(dtype)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(array == np.round(array)))
    if whole and info.min <= lo and hi <= info.max:
        return array.astype(dtype), 1.0, 0.0
    bottom = 0.0 if info.min == 0 and lo >= 0 else lo
    slope = float(_ds((hi - bottom) / (info.max - info.min) * (1 + 1e-9))) if hi > bottom else 1.0
    intercept = float(_ds(bottom - info.min * slope))
    stored = np.clip(np.round((array.astype(np.float64) - intercept) / slope), info.min, info.max)
    return stored.astype(dtype), slope, intercept


def _file_dataset(sop_class: str, *, modality: str, study_uid: str, series_uid: str, frame_uid: str,
                  series_description: str, patient_name: str, patient_id: str,
                  now: datetime.datetime | None = None) -> FileDataset:
    """One file's dataset; ``now`` (default: this moment) dates it: give every file of a series the same, or a
    series written across a second boundary holds two series times (and splits where it has no UID)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    now = now or datetime.datetime.now()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality = modality
    ds.SeriesDescription = series_description
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate = ds.PatientSex = ds.ReferringPhysicianName = ds.AccessionNumber = ""
    ds.StudyID, ds.SeriesNumber = "1", 1
    ds.ContentDate = ds.SeriesDate = ds.StudyDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.SeriesTime = ds.StudyTime = now.strftime("%H%M%S")
    ds.Manufacturer = "sirtreg"
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _set_pixels(ds: Dataset, grid: Grid, stored: np.ndarray, slope: float, intercept: float) -> None:
    ds.Rows, ds.Columns = grid.size[1], grid.size[0]
    ds.PixelSpacing = _ds_list(np.array([grid.spacing_mm[1], grid.spacing_mm[0]]))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()


def _uids(frame_of_reference_uid: str | None, study_instance_uid: str | None) -> dict[str, str]:
    return {
        "study_uid": study_instance_uid or generate_uid(),
        "series_uid": generate_uid(),
        "frame_uid": frame_of_reference_uid or generate_uid(),
    }


def _replaceable(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{folder} exists; choose another name or pass overwrite")
    if not folder.is_dir() or any(not (p.is_file() and p.suffix == ".dcm") for p in folder.iterdir()):
        raise OutputExistsError(f"{folder} holds other things than DICOM files; not replacing it")


def write_dicom_series(volume: Volume, folder: str | os.PathLike[str], *, modality: str = "",
                       series_description: str = "", frame_of_reference_uid: str | None = None,
                       study_instance_uid: str | None = None, patient_name: str = ANONYMOUS_NAME,
                       patient_id: str = ANONYMOUS_ID, deidentification: Deidentification | None = None,
                       overwrite: bool = False) -> Path:
    """Write a volume as a CT or MR series, one int16 file per slice, into a new folder.

    ``modality`` defaults to the volume's ("CT" when it has none). CT values
    are HU. The folder is built under a temporary name and renamed; an
    existing folder of DICOM files is replaced only with ``overwrite``.
    ``deidentification``, if given, is applied to every file last (its
    pseudonym replaces ``patient_name`` and ``patient_id``).
    """
    modality = (modality or volume.modality or "CT").upper()
    if modality not in ("CT", "MR"):
        raise InputError(f"a DICOM series can be written as CT or MR, not {modality!r}")
    folder = Path(folder)
    _replaceable(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    volume = _right_handed(volume)
    grid = volume.grid
    stored, slope, intercept = _quantise(volume.array, dtype=np.int16)
    uids = _uids(frame_of_reference_uid, study_instance_uid)
    direction = grid.direction_matrix
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    written_at = datetime.datetime.now()  # one series date and time for every slice
    try:
        for k in range(grid.size[2]):
            ds = _file_dataset(SOP_CLASSES[modality], modality=modality, series_description=series_description,
                               patient_name=patient_name, patient_id=patient_id, now=written_at, **uids)
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = ds.PatientPosition = ds.Laterality = ""  # Type 2: unknown here
            position = grid.index_to_world([0, 0, k])
            ds.ImagePositionPatient = _ds_list(position)
            ds.ImageOrientationPatient = _ds_list(np.concatenate([direction[:, 0], direction[:, 1]]))
            ds.SliceThickness = ds.SpacingBetweenSlices = _ds(grid.spacing_mm[2])
            ds.SliceLocation = _ds(position @ direction[:, 2])
            if modality == "CT":
                ds.RescaleType = "HU"
                ds.KVP = ""
            else:
                ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
                ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "3D", "", "", ""
            _set_pixels(ds, grid, stored[k], slope, intercept)
            if deidentification is not None:
                deidentification.apply(ds)
            ds.save_as(staging / f"{k + 1:05d}.dcm", enforce_file_format=True)
        if folder.exists():  # swap in the new folder before deleting the old one
            previous = staging.with_name(staging.name + ".old")
            os.replace(folder, previous)
            os.replace(staging, folder)
            shutil.rmtree(previous)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("wrote %s %s as %d DICOM files (rescale slope %.6g)", modality, grid.describe(), grid.size[2], slope)
    return folder


def write_dicom_nm(volume: Volume, path: str | os.PathLike[str], *, series_description: str = "",
                   frame_of_reference_uid: str | None = None, study_instance_uid: str | None = None,
                   patient_name: str = ANONYMOUS_NAME, patient_id: str = ANONYMOUS_ID,
                   deidentification: Deidentification | None = None, overwrite: bool = False) -> Path:
    """Write a volume (e.g. SPECT counts) as one NM multi-frame file, uint16 with a rescale slope.

    Geometry goes into DetectorInformationSequence (position of the first
    frame, orientation) and SpacingBetweenSlices, as reconstructed NM
    tomography is stored; values read back within slope / 2.
    ``deidentification``, if given, is applied last.
    """
    path = prepare_output(path, overwrite=overwrite)
    volume = _right_handed(volume)
    grid = volume.grid
    stored, slope, intercept = _quantise(volume.array, dtype=np.uint16)
    ds = _file_dataset(SOP_CLASSES["NM"], modality="NM", series_description=series_description,
                       patient_name=patient_name, patient_id=patient_id,
                       **_uids(frame_of_reference_uid, study_instance_uid))
    ds.ImageType = ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = grid.size[2]
    ds.FrameIncrementPointer = 0x00540080  # SliceVector
    ds.SliceVector = list(range(1, grid.size[2] + 1))
    ds.NumberOfSlices = grid.size[2]
    detector = Dataset()
    detector.ImagePositionPatient = _ds_list(grid.origin_mm)
    detector.ImageOrientationPatient = _ds_list(
        np.concatenate([grid.direction_matrix[:, 0], grid.direction_matrix[:, 1]]))
    ds.DetectorInformationSequence = [detector]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(grid.spacing_mm[2])
    # the acquisition's attributes (Type 1 with their one-detector, one-window, one-rotation values; Type 2
    # empty): a reconstructed volume keeps no more of it
    ds.NumberOfDetectors = ds.NumberOfEnergyWindows = ds.NumberOfRotations = 1
    ds.Laterality = ds.CountsAccumulated = detector.CollimatorType = ""
    for keyword in ("PatientOrientationCodeSequence", "PatientGantryRelationshipCodeSequence",
                    "EnergyWindowInformationSequence", "RadiopharmaceuticalInformationSequence",
                    "RotationInformationSequence"):
        setattr(ds, keyword, [])
    _set_pixels(ds, grid, stored, slope, intercept)
    save_dataset(ds, path, deidentification=deidentification)
    log.info("wrote NM %s as one multi-frame file (rescale slope %.6g)", grid.describe(), slope)
    return path


def save_dataset(ds: Dataset, path: Path, *, deidentification: Deidentification | None = None,
                 enforce_file_format: bool = True) -> None:
    """De-identify ``ds`` if asked, then write it to ``path`` under a temporary name and rename it there."""
    if deidentification is not None:
        deidentification.apply(ds)
    with replacing(path, overwrite=True, suffix=path.suffix) as temporary:
        ds.save_as(temporary, enforce_file_format=enforce_file_format)
