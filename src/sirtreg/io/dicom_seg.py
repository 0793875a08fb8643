"""DICOM Segmentation (SEG) objects: label maps written on, and read back onto, the CT series they were drawn on.

A SEG is written with highdicom as a BINARY segmentation, one segment per
label value, and references the source series instance by instance, so that
PACS and viewers overlay it on that series. Label values are renumbered to
segment numbers 1..N in ascending order; the label names become the segment
labels. Reading maps segment numbers to label values and segment labels to
names, on the grid of the referenced series when it is given.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from sirtreg import __version__
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io.deidentify import Deidentification
from sirtreg.io.dicom import slice_geometry, slices_of
from sirtreg.io.dicom_series import SeriesInfo, list_series, read_dicom_object, select_series
from sirtreg.io.dicom_write import SOP_CLASSES, save_dataset
from sirtreg.io.images import prepare_output, require_file
from sirtreg.io.reorient import orient_like

log = logging.getLogger(__name__)

ReferenceSeries = str | os.PathLike[str] | Sequence[Dataset]
_PLACEMENT_TOLERANCE_MM = 1e-2  # SEG plane positions are often stored with 7 significant digits
_IMAGE_STORAGE = {**SOP_CLASSES, "PT": "1.2.840.10008.5.1.4.1.1.128"}  # SOP class of an image by its modality


# --- the referenced series ------------------------------------------------------------
def _headers(info: SeriesInfo) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in info.files]


def read_series_headers(reference: ReferenceSeries, *, series: str | None = None) -> list[Dataset]:
    """Headers (pixels skipped) of one DICOM image series.

    Parameters
    ----------
    reference : a folder of DICOM files, or the datasets of one series already read.
    series : SeriesInstanceUID or description selecting a series in a folder that holds several.
    """
    if isinstance(reference, (str, os.PathLike)):
        folder = Path(reference)
        if not folder.is_dir():
            raise InputError(f"a referenced series is a folder of DICOM files; {folder} is not a folder")
        return _headers(select_series(list_series(folder), series, where=str(folder)))
    headers = list(reference)
    uids = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if not headers or len(uids) != 1:
        raise InputError(
            f"the referenced datasets must be one series; got {len(headers)} datasets of {len(uids)} series")
    return headers


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _filled_instance(header: Dataset, filled: dict[str, str]) -> Dataset:
    """``header``, or a copy with its empty SOPClassUID and SOPInstanceUID filled in (noted in ``filled``)."""
    meta = getattr(header, "file_meta", None) or Dataset()
    changes = {}
    if not _text(header, "SOPClassUID"):
        modality = _text(header, "Modality").upper()
        if _text(meta, "MediaStorageSOPClassUID"):
            changes["SOPClassUID"], filled["SOPClassUID"] = _text(meta, "MediaStorageSOPClassUID"), "file meta"
        elif modality in _IMAGE_STORAGE:
            changes["SOPClassUID"], filled["SOPClassUID"] = _IMAGE_STORAGE[modality], f"{modality} Image Storage"
        else:
            raise InputError(
                f"the referenced series has no SOPClassUID and its modality {modality or 'none'!r} does not say "
                f"which (known: {', '.join(sorted(_IMAGE_STORAGE))}); fix its headers first")
    if not _text(header, "SOPInstanceUID"):
        if _text(meta, "MediaStorageSOPInstanceUID"):
            changes["SOPInstanceUID"] = _text(meta, "MediaStorageSOPInstanceUID")
            filled.setdefault("SOPInstanceUID", "file meta")
        else:
            changes["SOPInstanceUID"] = generate_uid()
            filled["SOPInstanceUID"] = "new UIDs: the references to its slices will not resolve in a PACS"
    if not changes:
        return header
    header = copy.deepcopy(header)
    for keyword, value in changes.items():
        setattr(header, keyword, value)
    return header


def referable(headers: Sequence[Dataset], *, quiet: bool = False) -> list[Dataset]:
    """The headers of one series as a derived object (SEG, RTSTRUCT, RT Dose) can reference them.

    Empty SOPClassUID and SOPInstanceUID are taken from the file meta information, else the SOP class
    from the modality (CT, MR, NM, PT) and a new instance UID; empty SeriesInstanceUID and
    StudyInstanceUID are derived from the instance UIDs, so every object written on that series
    names the same ones. Headers that need none of this are returned as they are, others as copies;
    a warning says what was filled in unless ``quiet``. Refuses an empty SOP class of another modality.
    """
    filled: dict[str, str] = {}
    originals = {id(h) for h in headers}
    repaired = [_filled_instance(h, filled) for h in headers]
    instances = sorted(str(h.SOPInstanceUID) for h in repaired)
    for keyword in ("SeriesInstanceUID", "StudyInstanceUID"):
        if repaired and not _text(repaired[0], keyword):
            derived = generate_uid(entropy_srcs=[keyword, *instances])
            filled[keyword] = f"derived {derived}"
            repaired = [copy.deepcopy(h) if id(h) in originals else h for h in repaired]
            for header in repaired:
                setattr(header, keyword, derived)
    if filled and not quiet:
        log.warning("the referenced series has empty %s; filled in (%s)", ", ".join(filled),
                    "; ".join(f"{k}: {v}" for k, v in filled.items()))
    return repaired


def series_grid(headers: Sequence[Dataset]) -> Grid:
    """The voxel grid of one series (the grid :func:`sirtreg.io.read_dicom` gives), from its headers."""
    slices = []
    for n, header in enumerate(headers):
        name = getattr(header, "filename", None)
        slices += slices_of(Path(name) if isinstance(name, str) and name else Path(f"dataset {n + 1}"), header)
    description = str(headers[0].get("SeriesDescription", ""))
    return slice_geometry(slices, f"DICOM series {description!r}" if description else "DICOM series")[1]


# --- writing --------------------------------------------------------------------------
def _property(name: str) -> tuple[Code, Code]:
    """Segmented property category and type of a structure, by its name."""
    lowered = name.lower()
    if "liver" in lowered and "perfus" not in lowered:
        return codes.SCT.AnatomicalStructure, codes.SCT.Liver
    if any(word in lowered for word in ("lesion", "tumor", "tumour", "metasta")):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    return codes.SCT.Tissue, codes.SCT.Tissue


def _segment_description(number: int, name: str, algorithm_name: str | None) -> hd.seg.SegmentDescription:
    category, kind = _property(name)
    algorithm = None
    if algorithm_name:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=__version__)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type="AUTOMATIC" if algorithm else "MANUAL",
        algorithm_identification=algorithm,
    )


def _highdicom_volume(array: np.ndarray, grid: Grid, frame_of_reference_uid: str) -> hd.Volume:
    """A highdicom Volume of ``array`` (z, y, x); its affine maps (slice, row, column) indices to LPS mm."""
    affine = grid.index_to_world_matrix
    affine[:3, :3] = affine[:3, 2::-1].copy()
    return hd.Volume(array, affine, coordinate_system="PATIENT", frame_of_reference_uid=frame_of_reference_uid)


def _segmentation(headers: list[Dataset], segments: np.ndarray, grid: Grid,
                  descriptions: list[hd.seg.SegmentDescription], series_description: str) -> hd.seg.Segmentation:
    """The SEG dataset of segment numbers ``segments`` (z, y, x) on ``grid``, derived from ``headers``."""
    if "SpecificCharacterSet" in headers[0] and not headers[0].SpecificCharacterSet:
        first = copy.deepcopy(headers[0])  # highdicom copies the first one's character set and refuses an empty one
        del first.SpecificCharacterSet
        headers = [first, *headers[1:]]
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=_highdicom_volume(segments, grid, str(headers[0].FrameOfReferenceUID)),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="sirtreg",
        manufacturer_model_name="sirtreg",
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        content_label="SEGMENTATION",
    )


def write_dicom_seg(labels: LabelVolume, reference: ReferenceSeries, path: str | os.PathLike[str], *,
                    series: str | None = None, segment_names: Mapping[int, str] | None = None,
                    series_description: str = "sirtreg segmentation", algorithm_name: str | None = None,
                    patient_name: str | None = None, patient_id: str | None = None,
                    deidentification: Deidentification | None = None, overwrite: bool = False) -> Path:
    """Write a label map as a DICOM SEG (BINARY, one segment per label value) of the series it lies on.

    Parameters
    ----------
    labels : label map (z, y, x) on the grid of the referenced series; the same voxels stored in
        another axis order are reordered, anything else is refused (resample it onto the series first).
    reference : the series the labels were drawn on: a folder of DICOM files, or its datasets
        (headers suffice). Empty SOP class, instance, series and study UIDs are filled in with a
        warning (see :func:`referable`).
    path : the SEG file to write.
    series : SeriesInstanceUID or description selecting the series in a folder that holds several.
    segment_names : label value -> segment label, replacing the names of ``labels``.
    series_description : SeriesDescription of the SEG.
    algorithm_name, patient_name, patient_id, deidentification, overwrite : as for
        :func:`~sirtreg.io.rtstruct.write_rtstruct` (segments, not ROIs, marked AUTOMATIC).

    Returns
    -------
    The path written. Label values present in ``labels`` become segments 1..N in ascending order.
    """
    path = prepare_output(path, overwrite=overwrite)
    headers = referable(read_series_headers(reference, series=series))
    grid = series_grid(headers)
    try:
        labels = orient_like(labels, grid, tolerance_mm=_PLACEMENT_TOLERANCE_MM)
    except GeometryMismatchError:
        raise GeometryMismatchError(
            f"the label map ({labels.grid.describe()}) is not on the grid of the referenced series "
            f"({grid.describe()}); resample it onto that series (nearest neighbour) first"
        ) from None
    values = labels.present_labels()
    if not values:
        raise InputError("the label map is empty: there is no segment to write")
    names = {**labels.labels, **dict(segment_names or {})}
    segments = np.zeros(labels.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):
        segments[labels.array == value] = number
    with warnings.catch_warnings():  # highdicom warns about one-component names, common in real data
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        segmentation = _segmentation(headers, segments, grid, [
            _segment_description(n, names.get(v, f"label {v}"), algorithm_name) for n, v in enumerate(values, start=1)
        ], series_description)
    if patient_name is not None:
        segmentation.PatientName = patient_name
    if patient_id is not None:
        segmentation.PatientID = patient_id
    save_dataset(segmentation, path, deidentification=deidentification, enforce_file_format=False)
    log.info("wrote DICOM SEG of %d segments on %s", len(values), grid.describe())
    return path


# --- reading --------------------------------------------------------------------------
def _grid_of(volume: hd.Volume) -> Grid:
    """Our grid of a highdicom Volume (whose affine maps (slice, row, column) indices)."""
    matrix = volume.affine[:3, 2::-1]  # columns for the (x, y, z) index axes
    spacing = np.linalg.norm(matrix, axis=0)
    return Grid(size=tuple(volume.spatial_shape[::-1]), spacing_mm=tuple(spacing),
                origin_mm=tuple(volume.affine[:3, 3]), direction=tuple((matrix / spacing).reshape(-1)))


def _referenced_series(dataset: Dataset) -> list[str]:
    return [str(item.SeriesInstanceUID) for item in dataset.get("ReferencedSeriesSequence", [])
            if "SeriesInstanceUID" in item]


def _if_referenced(info: SeriesInfo, referenced: list[str]) -> list[Dataset] | None:
    """The headers of ``info`` if it is one of the series ``referenced``, else None."""
    if info.problem:
        return None
    if info.uid:
        return _headers(info) if info.uid in referenced else None
    try:  # objects written on a series without UID cite the UIDs that `referable` derives
        headers = referable(_headers(info), quiet=True)
    except InputError:
        return None
    return headers if str(headers[0].SeriesInstanceUID) in referenced else None


def _reference_facts(reference: Volume | str | os.PathLike[str], referenced: list[str], *, what: str = "the SEG"
                     ) -> tuple[Grid, str, str]:
    """Grid, SeriesInstanceUID and FrameOfReferenceUID (empty when unknown) of the reference.

    In a folder, the series ``referenced`` (by ``what``) is chosen; a folder that holds others only is refused.
    """
    if isinstance(reference, Volume):
        return (reference.grid, str(reference.meta.get("SeriesInstanceUID", "")),
                str(reference.meta.get("FrameOfReferenceUID", "")))
    folder = Path(reference)
    found = list_series(folder) if folder.is_dir() else []
    headers = next((h for info in found if referenced and (h := _if_referenced(info, referenced)) is not None), None)
    if headers is None and referenced and found:
        listing = "; ".join(s.summary() for s in found)
        raise InputError(f"{folder} does not hold the series {what} references ({', '.join(referenced)}); "
                         f"found: {listing}")
    if headers is None:
        headers = read_series_headers(folder)
    return (series_grid(headers), str(headers[0].get("SeriesInstanceUID", "")),
            str(headers[0].get("FrameOfReferenceUID", "")))


def _place(labels: LabelVolume, grid: Grid, what: str) -> LabelVolume:
    """``labels`` pasted onto ``grid``, whose voxels must include all of its voxels (no resampling)."""
    far = np.asarray(labels.grid.size, dtype=float) - 1.0
    index = grid.world_to_index(labels.grid.index_to_world(np.array([np.zeros(3), far])))
    rounded = np.round(index)
    start, stop = rounded.min(axis=0).astype(int), rounded.max(axis=0).astype(int) + 1
    off_grid = np.max(np.abs(index - rounded) * np.asarray(grid.spacing_mm)) > _PLACEMENT_TOLERANCE_MM
    if off_grid or np.any(start < 0) or np.any(stop > np.asarray(grid.size)):
        raise GeometryMismatchError(
            f"{what} ({labels.grid.describe()}) does not lie on the voxels of the reference ({grid.describe()})"
        )
    placed = orient_like(labels, grid.crop(start, stop), tolerance_mm=_PLACEMENT_TOLERANCE_MM)
    array = np.zeros(grid.shape, dtype=placed.array.dtype)
    (i0, j0, k0), (i1, j1, k1) = start, stop
    array[k0:k1, j0:j1, i0:i1] = placed.array
    return placed.on_grid(array, grid)


def read_dicom_seg(path: str | os.PathLike[str], *, reference: Volume | str | os.PathLike[str] | None = None
                   ) -> LabelVolume:
    """Read a DICOM SEG as a label map: segment numbers are the label values, segment labels the names.

    Parameters
    ----------
    path : the SEG file (BINARY or LABELMAP segments that do not overlap).
    reference : the series the SEG was drawn on, a Volume or a folder of DICOM files. The SEG must
        reference that series (and frame of reference) and its frames must lie on its voxels; the
        label map then has the reference grid. Without it, the grid spans the SEG's own frames
        (slices without any segment may be missing at either end).

    Returns
    -------
    LabelVolume (z, y, x); ``meta`` holds the SEG's series, study and frame of reference UIDs and
    ``ReferencedSeriesInstanceUID``.
    """
    path = require_file(path)
    dataset = read_dicom_object(path, modality="SEG", what="a DICOM SEG")
    segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    if segmentation.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL:
        raise InputError(f"{path.name} is a FRACTIONAL segmentation (probabilities); a label map needs BINARY")
    try:
        volume = segmentation.get_volume(combine_segments=True)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"cannot read {path.name} as one label map: {exc}") from None
    names = {n: str(segmentation.get_segment_description(n).segment_label) for n in segmentation.segment_numbers}
    referenced = _referenced_series(dataset)
    meta = {
        "SeriesInstanceUID": str(dataset.SeriesInstanceUID),
        "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": str(dataset.get("FrameOfReferenceUID", "")),
        "ReferencedSeriesInstanceUID": "\\".join(referenced),
    }
    labels = LabelVolume(volume.array, _grid_of(volume), meta={k: v for k, v in meta.items() if v}, labels=names)
    log.info("read DICOM SEG %s: %d segments (%s)", path.name, len(names), ", ".join(names.values()))
    if reference is None:
        return labels
    grid, series_uid, frame_uid = _reference_facts(reference, referenced)
    if frame_uid and meta["FrameOfReferenceUID"] and frame_uid != meta["FrameOfReferenceUID"]:
        raise InputError(f"{path.name} lies in frame of reference {meta['FrameOfReferenceUID']}, the reference in "
                         f"{frame_uid}: it was drawn on another scan; carry it over by registration instead")
    if series_uid and referenced and series_uid not in referenced:
        raise InputError(f"{path.name} references series {', '.join(referenced)}, not the reference series "
                         f"{series_uid}; read it with the series it was drawn on, or carry it over by registration")
    if not series_uid:
        log.info("the reference has no series UID: %s is placed by geometry only", path.name)
    return _place(labels, grid, path.name)
