"""DICOM RT Dose: absorbed dose maps (Gy) as one multi-frame file that treatment-planning systems and viewers read.

The dose is stored as uint32 with a DoseGridScaling of at most max / (2^32 - 1),
so it reads back within half a scaling step (about 1e-10 of the maximum).
Frames are stacked along the normal of the rows and columns
(GridFrameOffsetVector relative to the first frame), so oblique grids are
kept; a left-handed grid is written with its slices in reverse order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from sirtreg.errors import DicomSeriesError, InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.io.deidentify import Deidentification
from sirtreg.io.dicom_seg import ReferenceSeries, read_series_headers, referable
from sirtreg.io.dicom_series import read_dicom_object
from sirtreg.io.dicom_write import (
    ANONYMOUS_ID,
    ANONYMOUS_NAME,
    _ds,
    _ds_list,
    _file_dataset,
    _right_handed,
    save_dataset,
)
from sirtreg.io.images import prepare_output, require_file

log = logging.getLogger(__name__)

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
DOSE_SUMMATION_TYPES = frozenset({"PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "FRACTION", "BEAM", "BRACHY",
                                  "FRACTION_SESSION", "BEAM_SESSION", "BRACHY_SESSION", "CONTROL_POINT", "RECORD"})
_UINT32_MAX = float(np.iinfo(np.uint32).max)
_COPIED_KEYWORDS = ("SpecificCharacterSet", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "StudyDescription")
_COSINE_TOLERANCE = 1e-4


def _check_dose(dose: Volume) -> None:
    units = str(dose.meta.get("units", "Gy"))
    if units.lower() != "gy":
        raise InputError(f"an RT Dose holds absorbed dose in Gy; this image is in {units!r}")
    array = dose.array
    if not np.all(np.isfinite(array)):
        raise InputError(f"the dose map holds {np.count_nonzero(~np.isfinite(array))} NaN or infinite voxels")
    if array.size and array.min() < 0:
        raise InputError(f"the dose map holds negative doses (down to {float(array.min()):.4g} Gy); "
                         "an absorbed dose is >= 0: clip or fix it first")


def _quantise(array: np.ndarray) -> tuple[np.ndarray, float]:
    """uint32 values and DoseGridScaling (Gy per step) with ``array ~= stored * scaling``."""
    peak = float(array.max()) if array.size else 0.0
    scaling = float(_ds(peak / _UINT32_MAX * (1 + 1e-9))) if peak > 0 else 1.0
    stored = np.clip(np.round(array.astype(np.float64) / scaling), 0, _UINT32_MAX)
    return stored.astype(np.uint32), scaling


def _resolve(explicit: str | None, header: Dataset | None, keyword: str, what: str) -> str | None:
    """The explicit value, else the reference's; refuses when both are given and differ."""
    copied = str(header.get(keyword, "")) if header is not None else ""
    if explicit and copied and explicit != copied:
        raise InputError(f"the {what} given ({explicit}) differs from the referenced series' ({copied})")
    return explicit or copied or None


def write_rt_dose(dose: Volume, path: str | os.PathLike[str], *, frame_of_reference_uid: str | None = None,
                  study_instance_uid: str | None = None, reference: ReferenceSeries | None = None,
                  series: str | None = None, patient_name: str | None = None, patient_id: str | None = None,
                  series_description: str = "sirtreg absorbed dose", dose_summation_type: str = "PLAN",
                  deidentification: Deidentification | None = None, overwrite: bool = False) -> Path:
    """Write an absorbed-dose map as a DICOM RT Dose file (DoseUnits GY, DoseType PHYSICAL).

    Parameters
    ----------
    dose : absorbed dose (z, y, x) in Gy, finite and >= 0; any grid with orthonormal axes.
    path : the file to write.
    frame_of_reference_uid : FrameOfReferenceUID of the images the dose lies on (e.g. the MAA
        SPECT/CT); taken from ``reference`` when not given. One of the two is required.
    study_instance_uid : StudyInstanceUID; taken from ``reference``, else a new one.
    reference : the series the dose belongs to (a folder of DICOM files, or its datasets): gives the
        frame of reference, the study and the patient.
    series : SeriesInstanceUID or description selecting the series in a folder that holds several.
    patient_name, patient_id : replace those of ``reference`` (default: copied; anonymous without it).
    series_description : SeriesDescription of the RT Dose.
    dose_summation_type : DoseSummationType; "PLAN" for a predictive (MAA) dose. No RT Plan is referenced.
    deidentification : applied last, to what is copied from ``reference`` too (its pseudonym replaces
        ``patient_name`` and ``patient_id``).
    overwrite : replace an existing file.

    Returns
    -------
    The path written.
    """
    path = prepare_output(path, overwrite=overwrite)
    _check_dose(dose)
    summation = dose_summation_type.upper()
    if summation not in DOSE_SUMMATION_TYPES:
        raise InputError(f"unknown DoseSummationType {dose_summation_type!r}; "
                         f"one of {', '.join(sorted(DOSE_SUMMATION_TYPES))}")
    headers = read_series_headers(reference, series=series) if reference is not None else []
    header = headers[0] if headers else None
    frame_uid = _resolve(frame_of_reference_uid, header, "FrameOfReferenceUID", "frame of reference")
    if frame_uid is None:
        raise InputError("an RT Dose must name the frame of reference of the images it lies on: "
                         "pass frame_of_reference_uid or the referenced series")
    study_uid = _resolve(study_instance_uid, header, "StudyInstanceUID", "study")
    if study_uid is None and headers:  # the study UID a SEG or RTSTRUCT written on that series gets too
        try:
            study_uid = str(referable(headers, quiet=True)[0].StudyInstanceUID)
            log.info("the referenced series has no StudyInstanceUID; the RT Dose gets the derived %s", study_uid)
        except InputError:
            study_uid = None
    dose = _right_handed(dose)
    grid = dose.grid
    stored, scaling = _quantise(dose.array)
    if patient_name is None:
        patient_name = str(header.get("PatientName", "")) if header is not None else ANONYMOUS_NAME
    if patient_id is None:
        patient_id = str(header.get("PatientID", "")) if header is not None else ANONYMOUS_ID
    ds = _file_dataset(RT_DOSE_STORAGE, modality="RTDOSE", study_uid=study_uid or generate_uid(),
                       series_uid=generate_uid(), frame_uid=frame_uid, series_description=series_description,
                       patient_name=patient_name, patient_id=patient_id)
    if header is not None:
        for keyword in (k for k in _COPIED_KEYWORDS if k in header):
            setattr(ds, keyword, header[keyword].value)
    ds.InstanceNumber = 1
    ds.OperatorsName = ""  # Type 2 of the RT Series module
    ds.ImagePositionPatient = _ds_list(grid.origin_mm)
    ds.ImageOrientationPatient = _ds_list(np.concatenate([grid.direction_matrix[:, 0], grid.direction_matrix[:, 1]]))
    ds.PixelSpacing = _ds_list(np.array([grid.spacing_mm[1], grid.spacing_mm[0]]))
    ds.SliceThickness = _ds(grid.spacing_mm[2])
    ds.NumberOfFrames = grid.size[2]
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.GridFrameOffsetVector = _ds_list(np.arange(grid.size[2]) * grid.spacing_mm[2])
    ds.Rows, ds.Columns = grid.size[1], grid.size[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", summation
    ds.DoseGridScaling = _ds(scaling)
    ds.PixelData = np.ascontiguousarray(stored).astype("<u4").tobytes()
    save_dataset(ds, path, deidentification=deidentification)
    log.info("wrote RT Dose %s (max %.4g Gy, scaling %.6g Gy)", grid.describe(), float(stored.max()) * scaling, scaling)
    return path


def _floats(ds: Dataset, keyword: str, n: int, name: str) -> np.ndarray:
    try:
        values = np.asarray([float(v) for v in ds[keyword].value], dtype=float)
    except (KeyError, TypeError, ValueError):
        values = np.zeros(0)
    if values.size != n or not np.all(np.isfinite(values)):
        raise DicomSeriesError(f"{name} has no valid {keyword}")
    return values


def _dose_grid(ds: Dataset, name: str) -> Grid:
    """The grid of an RT Dose: frames at GridFrameOffsetVector along the normal of rows x columns."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames < 2:
        raise DicomSeriesError(f"{name} holds a single dose plane; a 3D dose grid needs at least 2 frames")
    cosines = _floats(ds, "ImageOrientationPatient", 6, name)
    row, column = cosines[:3] / np.linalg.norm(cosines[:3]), cosines[3:] / np.linalg.norm(cosines[3:])
    position = _floats(ds, "ImagePositionPatient", 3, name)
    offsets = _floats(ds, "GridFrameOffsetVector", n_frames, name)
    if offsets[0] != 0:  # absolute z positions, allowed for axial dose grids only
        if not np.allclose(cosines, [1, 0, 0, 0, 1, 0], atol=_COSINE_TOLERANCE):
            raise DicomSeriesError(f"{name} has absolute GridFrameOffsetVector values on a non-axial grid")
        offsets = offsets - position[2]
    steps = np.diff(offsets)
    step = float((offsets[-1] - offsets[0]) / (n_frames - 1))
    if step == 0 or np.max(np.abs(steps - step)) > max(1e-3, 1e-3 * abs(step)):
        raise DicomSeriesError(f"{name} has irregular frame offsets ({steps.min():.4g} to {steps.max():.4g} mm)")
    normal = np.cross(row, column)
    spacing = _floats(ds, "PixelSpacing", 2, name)
    return Grid(size=(int(ds.Columns), int(ds.Rows), n_frames), spacing_mm=(spacing[1], spacing[0], abs(step)),
                origin_mm=tuple(position + offsets[0] * normal),
                direction=tuple(np.column_stack([row, column, normal * np.sign(step)]).reshape(-1)))


def read_rt_dose(path: str | os.PathLike[str]) -> Volume:
    """Read a DICOM RT Dose file as absorbed dose in Gy.

    Parameters
    ----------
    path : an RT Dose file with DoseUnits GY (relative doses are refused).

    Returns
    -------
    Volume (z, y, x) of float32 Gy, modality "RTDOSE"; ``meta`` holds the frame of reference, study and
    series UIDs, the dose type and summation type.
    """
    path = require_file(path)
    ds = read_dicom_object(path, modality="RTDOSE", what="an RT Dose")
    if str(ds.get("DoseUnits", "")).upper() != "GY":
        raise InputError(f"{path.name} holds dose in {ds.get('DoseUnits', 'no')!r} units; "
                         "absolute dose in GY is needed")
    grid = _dose_grid(ds, path.name)
    pixels = ds.pixel_array.reshape(grid.shape)
    array = (pixels.astype(np.float64) * float(ds.get("DoseGridScaling", 1.0) or 1.0)).astype(np.float32)
    meta = {
        "quantity": "absorbed dose",
        "units": "Gy",
        "FrameOfReferenceUID": str(ds.get("FrameOfReferenceUID", "")),
        "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
        "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "")),
        "DoseType": str(ds.get("DoseType", "")),
        "DoseSummationType": str(ds.get("DoseSummationType", "")),
    }
    volume = Volume(array, grid, "RTDOSE", {k: v for k, v in meta.items() if v})
    log.info("read RT Dose %s (max %.4g Gy)", grid.describe(), float(array.max()) if array.size else 0.0)
    return volume

