"""Reading DICOM image series (CT, MR, PT: one file per slice) and multi-frame files (NM, PT, enhanced).

Headers are read with pydicom (pixels skipped) to find the series
(:mod:`sirtreg.io.dicom_series`) and to build the geometry. Pixels are decoded by pydicom,
or by SimpleITK where pydicom lacks a decoder for the transfer syntax. Every
slice (a file, or a frame of a multi-frame file) is placed by its
ImagePositionPatient along the slice normal (row x column cosines), and the
series is refused when it is truncated, mixed or irregular.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from sirtreg.errors import DicomSeriesError, InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.io.dicom_series import (
    DUPLICATE_MM,
    SeriesInfo,
    folder_files,
    frame_count,
    group_series,
    is_multi_frame,
    no_images_error,
    read_header,
    scan_headers,
    select_series,
)

log = logging.getLogger(__name__)

_COSINE_TOLERANCE = 1e-4
_GAP_FACTOR = 1.5


@dataclass(frozen=True)
class _Slice:
    """One 2D slice: a single-frame file (frame None) or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    position_mm: np.ndarray
    row_cosines: np.ndarray
    column_cosines: np.ndarray
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns) as in DICOM
    slope: float
    intercept: float


# --- header scanning --------------------------------------------------------------


# --- slices from headers ------------------------------------------------------------
def _floats(value: object, n: int, what: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=float)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.size != n or not np.all(np.isfinite(array)):
        raise DicomSeriesError(f"{path.name} has no valid {what}")
    return array


def _orientation(item: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray]:
    cosines = _floats(item.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    row, column = cosines[:3], cosines[3:]
    return row / np.linalg.norm(row), column / np.linalg.norm(column)


def _sequence_item(dataset: Dataset, keyword: str) -> Dataset | None:
    sequence = dataset.get(keyword)
    return sequence[0] if sequence else None


def _functional(header: Dataset, frame: int, keyword: str) -> Dataset | None:
    """An item of a functional group of an enhanced multi-frame file (per-frame first, then shared)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        sequence = header.get(groups)
        if sequence and len(sequence) > index and keyword in sequence[index]:
            return _sequence_item(sequence[index], keyword)
    return None


def _rescale(item: Dataset | None) -> tuple[float, float] | None:
    if item is not None and item.get("RescaleSlope") is not None:
        return float(item.RescaleSlope), float(item.get("RescaleIntercept", 0.0) or 0.0)
    return None


def _single_frame_slice(path: Path, header: Dataset) -> _Slice:
    row, column = _orientation(header, path)
    slope, intercept = _rescale(header) or (1.0, 0.0)
    return _Slice(
        path, None,
        _floats(header.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
        row, column, int(header.Rows), int(header.Columns),
        tuple(_floats(header.get("PixelSpacing"), 2, "PixelSpacing", path)),  # type: ignore[arg-type]
        slope, intercept,
    )


def _enhanced_slices(path: Path, header: Dataset) -> list[_Slice]:
    slices = []
    for frame in range(frame_count(header)):
        position = _functional(header, frame, "PlanePositionSequence")
        orientation = _functional(header, frame, "PlaneOrientationSequence")
        measures = _functional(header, frame, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None:
            raise DicomSeriesError(
                f"{path.name} frame {frame + 1} lacks its plane position, orientation or pixel measures"
            )
        row, column = _orientation(orientation, path)
        slope, intercept = _rescale(_functional(header, frame, "PixelValueTransformationSequence")) or (1.0, 0.0)
        slices.append(_Slice(
            path, frame,
            _floats(position.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
            row, column, int(header.Rows), int(header.Columns),
            tuple(_floats(measures.get("PixelSpacing"), 2, "PixelSpacing", path)),  # type: ignore[arg-type]
            slope, intercept,
        ))
    return slices


def _multi_frame_rescale(header: Dataset) -> tuple[float, float]:
    top = _rescale(header)
    if top is not None:
        return top
    mapping = _sequence_item(header, "RealWorldValueMappingSequence")
    if mapping is not None and mapping.get("RealWorldValueSlope") is not None:
        return float(mapping.RealWorldValueSlope), float(mapping.get("RealWorldValueIntercept", 0.0) or 0.0)
    return 1.0, 0.0


def _stacked_slices(path: Path, header: Dataset) -> list[_Slice]:
    """Frames of an NM/PT multi-frame file: equally spaced along the normal from one position."""
    n_frames = frame_count(header)
    n_slices = header.get("NumberOfSlices")
    if n_slices is not None and int(n_slices) != n_frames:
        raise DicomSeriesError(
            f"{path.name} holds {n_frames} frames for {int(n_slices)} slices (several energy windows, "
            "detectors or time slots); only single reconstructed volumes are supported"
        )
    source = header if "ImagePositionPatient" in header else _sequence_item(header, "DetectorInformationSequence")
    if source is None or "ImagePositionPatient" not in source:
        raise DicomSeriesError(f"{path.name} has no ImagePositionPatient (top level or detector information)")
    row, column = _orientation(source, path)
    origin = _floats(source.get("ImagePositionPatient"), 3, "ImagePositionPatient", path)
    spacing = header.get("SpacingBetweenSlices") or header.get("SliceThickness")
    if spacing is None or float(spacing) == 0:
        raise DicomSeriesError(f"{path.name} has neither SpacingBetweenSlices nor SliceThickness")
    step = float(spacing) * np.cross(row, column)
    pixel_spacing = tuple(_floats(header.get("PixelSpacing"), 2, "PixelSpacing", path))
    slope, intercept = _multi_frame_rescale(header)
    return [
        _Slice(path, frame, origin + frame * step, row, column, int(header.Rows), int(header.Columns),
               pixel_spacing, slope, intercept)  # type: ignore[arg-type]
        for frame in range(n_frames)
    ]


def slices_of(path: Path, header: Dataset) -> list[_Slice]:
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise DicomSeriesError(f"{path.name} is a colour image; a greyscale volume is needed")
    if not is_multi_frame(header):
        return [_single_frame_slice(path, header)]
    if "PerFrameFunctionalGroupsSequence" in header:
        return _enhanced_slices(path, header)
    return _stacked_slices(path, header)


# --- geometry and checks -------------------------------------------------------------
def slice_geometry(slices: list[_Slice], what: str) -> tuple[list[_Slice], Grid]:
    """Slices sorted along their normal and the grid they span; refuses inconsistent stacks."""
    sizes = Counter((s.columns, s.rows) for s in slices)
    if len(sizes) > 1:
        detail = ", ".join(f"{c}x{r} ({n} slices)" for (c, r), n in sizes.most_common())
        raise DicomSeriesError(f"{what} mixes image sizes (columns x rows): {detail}; select one series")
    first = slices[0]
    same = [np.allclose(s.row_cosines, first.row_cosines, atol=_COSINE_TOLERANCE)
            and np.allclose(s.column_cosines, first.column_cosines, atol=_COSINE_TOLERANCE) for s in slices]
    if not all(same):
        raise DicomSeriesError(
            f"{what} mixes orientations: {sum(same)} slices like the first, {len(same) - sum(same)} others "
            "(a localizer in the series?); pass the files of one orientation"
        )
    if any(not np.allclose(s.pixel_spacing_mm, first.pixel_spacing_mm, atol=1e-4) for s in slices):
        raise DicomSeriesError(f"{what} mixes pixel spacings; select the files of one reconstruction")
    if len(slices) < 2:
        raise DicomSeriesError(f"{what} is a single slice, a 2D image; a 3D volume needs at least 2 slices")
    normal = np.cross(first.row_cosines, first.column_cosines)
    order = sorted(range(len(slices)), key=lambda i: float(slices[i].position_mm @ normal))
    ordered = [slices[i] for i in order]
    positions = np.array([s.position_mm for s in ordered])
    along = positions @ normal
    gaps = np.diff(along)
    duplicates = int(np.count_nonzero(gaps < DUPLICATE_MM))
    if duplicates:
        at = float(along[1:][gaps < DUPLICATE_MM][0])
        raise DicomSeriesError(
            f"{what} has {duplicates} duplicate slice positions (first at {at:.2f} mm along the slice normal): "
            "several acquisitions, echoes or time points in one series?; pass the files of one"
        )
    typical = float(np.median(gaps))
    if np.any(gaps > _GAP_FACTOR * typical):
        missing = int(sum(round(g / typical) - 1 for g in gaps[gaps > _GAP_FACTOR * typical]))
        i = int(np.argmax(gaps > _GAP_FACTOR * typical))
        raise DicomSeriesError(
            f"{what} is truncated: {missing} slice(s) missing, the first gap between {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm along the slice normal (after slice {i + 1} of {len(ordered)}); "
            f"{typical:.3g} mm spacing elsewhere"
        )
    spacing = float((along[-1] - along[0]) / (len(along) - 1))
    tolerance = max(0.01, 0.02 * spacing)
    if np.max(np.abs(along - (along[0] + spacing * np.arange(len(along))))) > tolerance:
        raise DicomSeriesError(
            f"{what} has non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm); resample it first"
        )
    in_plane = positions - positions[0] - np.outer(along - along[0], normal)
    shear = float(np.max(np.linalg.norm(in_plane, axis=1)))
    if shear > max(0.01, 0.01 * min(first.pixel_spacing_mm)):
        raise DicomSeriesError(
            f"{what}: slices are not stacked along their normal (offset up to {shear:.3g} mm, gantry tilt?); "
            "resample it first"
        )
    grid = Grid(
        size=(first.columns, first.rows, len(ordered)),
        spacing_mm=(first.pixel_spacing_mm[1], first.pixel_spacing_mm[0], spacing),
        origin_mm=tuple(positions[0]),
        direction=tuple(np.column_stack([first.row_cosines, first.column_cosines, normal]).reshape(-1)),
    )
    return ordered, grid


# --- pixels -----------------------------------------------------------------------
def _stored_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """Pixels (frames, rows, columns) of one file and whether the modality rescale is already applied."""
    dataset = pydicom.dcmread(path)
    try:
        array = dataset.pixel_array
        rescaled = False
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        log.debug("pydicom cannot decode a file (%s); using SimpleITK", exc)
        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError:
            raise DicomSeriesError(f"cannot decode the pixels of {path.name}") from None
        rescaled = True  # the GDCM reader applies RescaleSlope/Intercept itself
    return (array[None] if array.ndim == 2 else array), rescaled


def _pixels(ordered: list[_Slice], grid: Grid) -> np.ndarray:
    """Rescaled voxels (z, y, x): integers where every slice has slope 1 and a whole intercept, else float32."""
    stored: dict[Path, tuple[np.ndarray, bool]] = {}
    for item in ordered:
        if item.path not in stored:
            stored[item.path] = _stored_pixels(item.path)
    planes, whole = [], True
    for item in ordered:
        array, rescaled = stored[item.path]
        plane = array[item.frame or 0]
        slope, intercept = (1.0, 0.0) if rescaled else (item.slope, item.intercept)
        whole &= np.issubdtype(plane.dtype, np.integer) and slope == 1.0 and float(intercept).is_integer()
        planes.append((plane, slope, intercept))
    out = np.empty(grid.shape, dtype=np.int64 if whole else np.float32)
    for k, (plane, slope, intercept) in enumerate(planes):
        out[k] = plane.astype(np.int64) + int(intercept) if whole else plane.astype(np.float64) * slope + intercept
    if whole:
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if out.size and info.min <= out.min() and out.max() <= info.max:
                return out.astype(dtype)
    return out


# --- public reading ---------------------------------------------------------------
def _units(header: Dataset) -> str:
    modality = str(header.get("Modality", ""))
    if modality == "PT" and header.get("Units"):
        return str(header.Units)
    mapping = _sequence_item(header, "RealWorldValueMappingSequence")
    code = _sequence_item(mapping, "MeasurementUnitsCodeSequence") if mapping is not None else None
    if code is not None and code.get("CodeValue"):
        return str(code.CodeValue)
    if header.get("RescaleType"):
        return str(header.RescaleType)
    return "HU" if modality == "CT" else ""


def _decay_times(header: Dataset) -> dict[str, str]:
    """A PET's decay correction (START, ADMIN or NONE) and the times it needs, as ISO 8601 text: the series
    start (START's reference time) and the radiopharmaceutical's injection; empty where the header has none."""
    if str(header.get("Modality", "")) != "PT":
        return {}
    series_date = str(header.get("SeriesDate", ""))
    item = _sequence_item(header, "RadiopharmaceuticalInformationSequence")
    injected = str(item.get("RadiopharmaceuticalStartDateTime", "")) if item is not None else ""
    if not injected and item is not None and item.get("RadiopharmaceuticalStartTime") and series_date:
        injected = series_date + str(item.RadiopharmaceuticalStartTime)
    return {"decay_correction": str(header.get("DecayCorrection", "")),
            "series_start": _iso(series_date + str(header.get("SeriesTime", ""))) if series_date else "",
            "injection_time": _iso(injected)}


def _iso(text: str) -> str:
    """A DICOM DT (YYYYMMDDHHMMSS[.FFFFFF], an offset dropped) as ISO 8601 text; "" if it is not one."""
    digits = text.split("+")[0].split("-")[0].strip()
    try:
        moment = datetime.datetime.strptime(digits[:14].ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        return ""
    return moment.isoformat()


def _meta(header: Dataset) -> dict[str, str]:
    keys = ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "SeriesDescription", "Modality")
    meta = {key: str(header.get(key, "")) for key in keys}
    meta["units"] = _units(header)
    meta.update(_decay_times(header))
    return {key: value for key, value in meta.items() if value}


def _read_selected(info: SeriesInfo, headers: dict[Path, Dataset], *, modality: str) -> Volume:
    what = f"DICOM series {info.description!r}" if info.description else "DICOM series"
    multi = [p for p in info.files if is_multi_frame(headers[p])]
    if multi and len(info.files) > 1:
        raise DicomSeriesError(
            f"{what} holds {len(info.files)} files of which {len(multi)} multi-frame; pass one file"
        )
    slices = [s for path in info.files for s in slices_of(path, headers[path])]
    ordered, grid = slice_geometry(slices, what)
    header = headers[info.files[0]]
    volume = Volume(_pixels(ordered, grid), grid, modality or info.modality, _meta(header))
    log.info("read %s from %d files", volume.describe(), len(info.files))
    return volume


def _scan_source(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
                 ) -> tuple[list[tuple[Path, Dataset]], str]:
    """Headers of the DICOM images a source stands for, and how to name the source in messages."""
    if not isinstance(source, (str, os.PathLike)):
        paths = [Path(p) for p in source]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"no such file: {missing[0]}{more}")
        return scan_headers(paths), f"the {len(paths)} files given"
    path = Path(source)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    if path.is_dir():
        scanned = scan_headers(folder_files(path))
        if not scanned:
            raise no_images_error(path)
        return scanned, str(path)
    header = read_header(path)
    if header is None:
        raise InputError(f"cannot read {path.name}: not a DICOM image file, nor NIfTI, NRRD or MHA by its name")
    if is_multi_frame(header):
        return [(path, header)], path.name
    siblings = scan_headers(folder_files(path.parent))
    members = next(({p.name for p in s.files} for s in group_series(siblings) if path.name in {p.name for p in s.files}),
                   {path.name})
    return [(p, h) for p, h in siblings if p.name in members], str(path.parent)


def read_dicom(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               series: str | None = None, modality: str = "") -> Volume:
    """A Volume (z, y, x) from a DICOM folder, a list of files, or one file.

    A folder may hold several series: ``series`` selects one by
    SeriesInstanceUID, SeriesDescription (exact), SeriesNumber, else
    SeriesDescription (case-insensitive substring). One file that is a slice of a series brings in its series
    from the same folder; a multi-frame file (NM, PT, enhanced CT/MR) is read
    on its own. Voxel values have RescaleSlope/Intercept applied.
    ``modality`` overrides the header's modality when given.
    """
    scanned, where = _scan_source(source)
    info = select_series(group_series(scanned), series, where=where)
    return _read_selected(info, dict(scanned), modality=modality)
