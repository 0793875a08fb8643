"""DICOM RT Structure Sets (RTSTRUCT): contours read as label maps on the image they were drawn on, and written.

An RTSTRUCT stores each ROI as polygons in patient LPS mm, one per slice
plane. Reading puts each CLOSED_PLANAR contour on the slice plane of the
reference image it lies on (within half a slice) and marks the voxels whose
centres lie inside it; several contours of one ROI on one slice combine by
even-odd (exclusive or), so a contour inside another cuts a hole, as DICOM and
common tools do. A voxel centre on a contour line itself (within 1/100 voxel,
as in files that trace the centres of the boundary voxels) counts as inside
that contour. POINT contours (markers) enclose nothing: they are skipped with a
logged warning. ROIs become label values 1..N in the order read, named by
their ROI names.

Writing traces each label of a label map (or each segment of a segmentation,
where segments may overlap, as a liver and its lesions do) on each slice of
the referenced series at the 0.5 level (marching squares, through the
midpoints between voxel centres), so a read back gives the same voxels:
every voxel centre lies at least 0.35 voxel from the traced lines.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import contourpy
import numpy as np
from matplotlib.path import Path as Polygon
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from sirtreg import __version__
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io.deidentify import Deidentification
from sirtreg.io.dicom import slices_of
from sirtreg.io.dicom_seg import ReferenceSeries, _reference_facts, read_series_headers, referable, series_grid
from sirtreg.io.dicom_series import read_dicom_object
from sirtreg.io.dicom_write import save_dataset
from sirtreg.io.images import prepare_output, require_file
from sirtreg.io.reorient import orient_like
from sirtreg.io.slicer import Segmentation

log = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RTReferencedStudySequence cites, by custom
_CLOSED_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})  # both combine by exclusive or here
_PLACEMENT_TOLERANCE_MM = 1e-2  # label map onto the referenced series, as for SEG
_ON_LINE_VOXELS = 1e-2  # a voxel centre this close to a contour line (in voxels) lies on it
_NON_PLANAR_FRACTION = 0.1  # a contour is non-planar beyond this fraction of the slice spacing (at least 0.1 mm)
_OFF_PLANE_WARNING_FRACTION = 0.1  # contours further off their slice plane (in slices) are reported
_COLOURS = ((255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 255), (255, 255, 0), (0, 255, 200))


@dataclass
class _Roi:
    """One ROI of a structure set: its number, name, frame of reference and closed contour items (unparsed)."""

    number: int
    name: str
    frame_uid: str
    closed: list[Dataset] = field(default_factory=list)
    points: int = 0  # POINT contours skipped
    other_types: set[str] = field(default_factory=set)


# --- reading ----------------------------------------------------------------------------
def _referenced_frames_and_series(dataset: Dataset) -> tuple[list[str], list[str]]:
    """FrameOfReferenceUIDs and SeriesInstanceUIDs the structure set references."""
    frames, series = [], []
    for item in dataset.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in item:
            frames.append(str(item.FrameOfReferenceUID))
        for study in item.get("RTReferencedStudySequence", []):
            series += [str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])
                       if "SeriesInstanceUID" in s]
    return frames, series


def _contour_points(item: Dataset, roi: str, path: Path) -> np.ndarray:
    data = item.get("ContourData")
    values = np.asarray([float(v) for v in (data if data is not None else [])], dtype=float)
    if values.size == 0 or values.size % 3 or not np.all(np.isfinite(values)):
        raise InputError(f"{path.name}: a contour of ROI {roi!r} holds {values.size} numbers in ContourData, "
                         "not (x, y, z) triples")
    return values.reshape(-1, 3)


def _structures(dataset: Dataset, path: Path) -> list[_Roi]:
    """The ROIs of a structure set in file order, with their contours."""
    frames, _ = _referenced_frames_and_series(dataset)
    rois = []
    for item in dataset.get("StructureSetROISequence", []):
        frame = str(item.get("ReferencedFrameOfReferenceUID", "") or (frames[0] if len(frames) == 1 else ""))
        rois.append(_Roi(int(item.get("ROINumber", -1)), str(item.get("ROIName", "")), frame))
    if not rois:
        raise InputError(f"{path.name} is an RTSTRUCT without ROIs (no StructureSetROISequence)")
    by_number = {roi.number: roi for roi in rois}
    for item in dataset.get("ROIContourSequence", []):
        roi = by_number.get(int(item.get("ReferencedROINumber", -1)))
        if roi is None:
            continue
        for contour in item.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "")).upper()
            if kind == "POINT":
                roi.points += 1
            elif kind in _CLOSED_TYPES:
                roi.closed.append(contour)
            else:
                roi.other_types.add(kind or "(no type)")
    return rois


def _chosen(rois: list[_Roi], names: Sequence[str], path: Path) -> list[_Roi]:
    """The ROIs named ``names`` (exact, in that order), or all."""
    if not names:
        return rois
    held = [roi.name for roi in rois]
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise InputError(f"ROI {', '.join(map(repr, repeated))} is asked for more than once")
    missing = [n for n in names if n not in held]
    if missing:
        raise InputError(f"{path.name} holds no ROI {', '.join(map(repr, missing))}; it holds "
                         f"{', '.join(map(repr, held))}")
    ambiguous = [n for n in names if held.count(n) > 1]
    if ambiguous:
        raise InputError(f"{path.name} holds several ROIs named {', '.join(map(repr, ambiguous))}; "
                         "cannot tell which one is meant")
    return [next(roi for roi in rois if roi.name == n) for n in names]


def _contours(roi: _Roi, path: Path) -> list[np.ndarray]:
    """The closed contours (n, 3) in LPS mm of an ROI; refuses other kinds and ROIs without any."""
    if roi.other_types:
        raise InputError(f"{path.name}: ROI {roi.name!r} holds {', '.join(sorted(roi.other_types))} contours; only "
                         "CLOSED_PLANAR contours enclose a region")
    if not roi.closed:
        held = f"only {roi.points} POINT contour(s) (markers), no closed one" if roi.points else "no contour"
        raise InputError(f"{path.name}: ROI {roi.name!r} holds {held}; choose the ROIs to read by name")
    if roi.points:
        log.warning("%s: ROI %r: %d POINT contour(s) skipped; they enclose no voxel", path.name, roi.name, roi.points)
    return [_contour_points(item, roi.name, path) for item in roi.closed]


def _on_lines(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(row, column) of the integer points within ``_ON_LINE_VOXELS`` of a closed polygon (n, 2) of (column, row)."""
    start, stop = polygon, np.roll(polygon, -1, axis=0)
    found = []
    for along in (0, 1):  # walk each edge along its longer axis, one lattice line at a time
        across = 1 - along
        delta = stop - start
        steep = np.abs(delta[:, along]) >= np.abs(delta[:, across])
        if along == 1:
            steep &= np.abs(delta[:, along]) > np.abs(delta[:, across])  # ties walked once, along axis 0
        steep &= delta[:, along] != 0
        lo = np.ceil(np.minimum(start[steep, along], stop[steep, along]) - _ON_LINE_VOXELS)
        hi = np.floor(np.maximum(start[steep, along], stop[steep, along]) + _ON_LINE_VOXELS)
        counts = np.maximum(hi - lo + 1, 0).astype(int)
        edge = np.repeat(np.nonzero(steep)[0], counts)
        first = np.repeat(lo, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        position = first + offsets
        t = (position - start[edge, along]) / delta[edge, along]
        t = np.clip(t, 0.0, 1.0)
        other = start[edge, across] + t * delta[edge, across]
        exact = np.abs(other - np.round(other)) <= _ON_LINE_VOXELS
        exact &= np.abs(start[edge, along] + t * delta[edge, along] - position) <= _ON_LINE_VOXELS
        point = np.empty((int(exact.sum()), 2))
        point[:, along], point[:, across] = position[exact], np.round(other[exact])
        found.append(point)
    vertices = polygon[np.all(np.abs(polygon - np.round(polygon)) <= _ON_LINE_VOXELS, axis=1)]
    points = np.round(np.concatenate([*found, vertices])).astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] < shape[1]) & (points[:, 1] >= 0) & (points[:, 1] < shape[0])
    return points[inside][:, ::-1]


def _fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean slice (rows, columns): voxel centres inside or on a closed polygon (n, 2) of (column, row) indices."""
    mask = np.zeros(shape, dtype=bool)
    lo = np.maximum(np.floor(polygon.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(polygon.max(axis=0)).astype(int), np.array(shape[::-1]) - 1)
    if np.any(hi < lo):
        return mask
    columns, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    centres = np.column_stack([columns.ravel(), rows.ravel()])
    mask[rows.ravel(), columns.ravel()] = Polygon(polygon).contains_points(centres)
    on = _on_lines(polygon, shape)
    mask[on[:, 0], on[:, 1]] = True
    return mask


def _rasterise(roi: _Roi, contours: Sequence[np.ndarray], grid: Grid, path: Path) -> np.ndarray:
    """Boolean array (z, y, x): the voxels of ``grid`` whose centres lie inside ``contours`` (n, 3) of ``roi``."""
    direction, spacing = grid.direction_matrix, np.asarray(grid.spacing_mm)
    slices: dict[tuple[int, int], np.ndarray] = {}
    off_plane_mm, outside = 0.0, False
    for points in contours:
        centred = points - points.mean(axis=0)
        singular, axes = np.linalg.svd(centred, full_matrices=False)[1:] if len(points) >= 3 else (np.zeros(2), None)
        if axes is None or singular[1] <= 1e-6 * singular[0]:  # fewer than 3 points, or all on one line
            log.debug("%s: ROI %r: a contour of %d point(s) enclosing no area skipped", path.name, roi.name,
                      len(points))
            continue
        normal = axes[2]
        axis = int(np.argmax(np.abs(direction.T @ normal)))
        slice_mm = spacing[axis]
        deviation_mm = float(np.max(np.abs(centred @ normal)))
        if deviation_mm > max(0.1, _NON_PLANAR_FRACTION * slice_mm):
            raise InputError(f"{path.name}: a contour of ROI {roi.name!r} is not planar (points up to "
                             f"{deviation_mm:.3g} mm off its plane); CLOSED_PLANAR contours lie in one plane")
        index = grid.world_to_index(points)
        along = index[:, axis]
        plane = int(np.round(along.mean()))
        if plane < 0 or plane > grid.size[axis] - 1:
            beyond_mm = (-along.mean() if plane < 0 else along.mean() - (grid.size[axis] - 1)) * slice_mm
            raise InputError(f"{path.name}: a contour of ROI {roi.name!r} lies {beyond_mm:.3g} mm beyond the "
                             f"outermost slice of the reference ({grid.describe()}), off every slice plane; was it "
                             "drawn on another scan?")
        offset = float(np.max(np.abs(along - plane)))
        if offset > 0.5:
            tilt = float(np.degrees(np.arccos(min(1.0, abs(direction[:, axis] @ normal)))))
            raise InputError(f"{path.name}: a contour of ROI {roi.name!r} crosses the slice planes of the reference "
                             f"(tilted by {tilt:.2g} degrees against them); it was drawn on slices of another "
                             "orientation: resample the reference onto those first")
        if offset > _OFF_PLANE_WARNING_FRACTION:
            off_plane_mm = max(off_plane_mm, offset * slice_mm)
        columns, rows = sorted({0, 1, 2} - {axis})  # index axes of the slice's array columns and rows
        polygon = index[:, [columns, rows]]
        shape = (grid.size[rows], grid.size[columns])
        extent = np.array(shape[::-1]) - 0.5 + _ON_LINE_VOXELS  # voxel edges, where traced borders run
        outside |= bool(np.any(polygon < -0.5 - _ON_LINE_VOXELS) or np.any(polygon > extent))
        key = (axis, plane)
        slices[key] = slices.get(key, np.zeros(shape, dtype=bool)) ^ _fill(polygon, shape)
    mask = np.zeros(grid.shape, dtype=bool)
    for (axis, plane), region in slices.items():
        view = [slice(None)] * 3
        view[2 - axis] = plane  # type: ignore[call-overload]
        mask[tuple(view)] |= region
    if off_plane_mm:
        log.warning("%s: ROI %r: contours lie up to %.3g mm off the slice planes of the reference (drawn on another "
                    "series?); each was put on its nearest slice", path.name, roi.name, off_plane_mm)
    if outside:
        log.warning("%s: ROI %r reaches beyond the reference image; the part outside is dropped", path.name, roi.name)
    return mask


def read_rtstruct(path: str | os.PathLike[str], reference: Volume | str | os.PathLike[str], *,
                  rois: Sequence[str] = (), allow_overlap: bool = False) -> LabelVolume:
    """Read the ROIs of an RTSTRUCT as a label map on the voxels of the image they were drawn on.

    Parameters
    ----------
    path : the RTSTRUCT file.
    reference : the image the contours lie on: a Volume (read from DICOM, so that its frame of
        reference is known), or a folder of DICOM files holding the series the RTSTRUCT references.
        A Volume of another series in the same frame of reference is accepted when the contours
        lie on its slice planes.
    rois : exact ROI names to read, in the order of the label values; empty: every ROI, in file order.
    allow_overlap : let ROIs overlap, later ones taking the shared voxels; otherwise overlap is refused.

    Returns
    -------
    LabelVolume (z, y, x) on the grid of ``reference``, values 1..N named by the ROI names; ``meta`` holds
    the RTSTRUCT's series and study UIDs, the frame of reference and ``ReferencedSeriesInstanceUID``.

    Refuses (:class:`~sirtreg.errors.InputError`) other files than RTSTRUCTs, unknown or ambiguous ROI names,
    ROIs in another frame of reference than the reference, ROIs without a closed contour, contour types
    other than CLOSED_PLANAR and POINT, non-planar contours, contours beyond the outermost slices (by more
    than half a slice) or across slice planes, ROIs that enclose no voxel centre, and overlapping ROIs
    unless ``allow_overlap``.
    """
    path = require_file(path)
    dataset = read_dicom_object(path, modality="RTSTRUCT", what="an RTSTRUCT")
    chosen = _chosen(_structures(dataset, path), rois, path)
    referenced = _referenced_frames_and_series(dataset)[1]
    grid, series_uid, frame_uid = _reference_facts(reference, referenced, what=path.name)
    contours = []
    for roi in chosen:
        if frame_uid and roi.frame_uid and roi.frame_uid != frame_uid:
            raise InputError(f"{path.name}: ROI {roi.name!r} lies in frame of reference {roi.frame_uid}, the reference "
                             f"in {frame_uid}: it was drawn on another scan; carry it over by registration instead")
        contours.append(_contours(roi, path))
    if not frame_uid:
        log.info("the reference has no frame of reference UID: %s is placed by its coordinates only", path.name)
    elif series_uid and referenced and series_uid not in referenced:
        log.info("%s references series %s, the reference is series %s of the same frame of reference",
                 path.name, ", ".join(referenced), series_uid)
    array = np.zeros(grid.shape, dtype=np.uint8 if len(chosen) < 256 else np.uint16)
    for value, (roi, points) in enumerate(zip(chosen, contours, strict=True), start=1):
        mask = _rasterise(roi, points, grid, path)
        if not mask.any():
            raise InputError(f"{path.name}: ROI {roi.name!r} encloses no voxel centre of the reference "
                             f"({grid.describe()}); its contours are smaller than a voxel or outside the image")
        taken = array[mask]
        if not allow_overlap and taken.any():
            other = chosen[int(taken[taken > 0][0]) - 1].name
            raise InputError(f"{path.name}: ROIs {other!r} and {roi.name!r} overlap ({np.count_nonzero(taken)} "
                             "voxels); choose ROIs that do not overlap")
        array[mask] = value
    meta = {
        "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "")),
        "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": frame_uid or chosen[0].frame_uid,
        "ReferencedSeriesInstanceUID": "\\".join(referenced),
    }
    log.info("read RTSTRUCT %s: %d ROIs (%s) on %s", path.name, len(chosen), ", ".join(r.name for r in chosen),
             grid.describe())
    return LabelVolume(array, grid, meta={k: v for k, v in meta.items() if v},
                       labels={value: roi.name for value, roi in enumerate(chosen, start=1)})


# --- writing ----------------------------------------------------------------------------
def _ds_list(values: np.ndarray) -> list[str]:
    return [format_number_as_ds(float(v)) for v in np.asarray(values, dtype=float).reshape(-1)]


def _simplified(loop: np.ndarray) -> np.ndarray:
    """A closed loop (n, 2) without its repeated last point and without points on a straight line between others."""
    if len(loop) > 1 and np.allclose(loop[0], loop[-1]):
        loop = loop[:-1]
    before, after = np.roll(loop, 1, axis=0), np.roll(loop, -1, axis=0)
    turn = (loop - before)[:, 0] * (after - loop)[:, 1] - (loop - before)[:, 1] * (after - loop)[:, 0]
    keep = np.abs(turn) > 1e-9
    return loop[keep] if keep.sum() >= 3 else loop


def _trace(mask: np.ndarray) -> list[np.ndarray]:
    """Closed loops (n, 2) of (column, row) indices around the True pixels of a 2D mask, at the 0.5 level."""
    padded = np.pad(mask.astype(np.float64), 1)  # so that every loop closes inside the array
    generator = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    return [_simplified(np.asarray(loop) - 1.0) for loop in generator.lines(0.5) if len(loop) >= 4]


def _interpreted_type(name: str) -> str:
    lowered = name.lower()
    return "GTV" if any(w in lowered for w in ("lesion", "tumor", "tumour", "metasta")) else "ORGAN"


def _slice_images(headers: Sequence[Dataset], grid: Grid) -> dict[int, Dataset]:
    """Contour image items (SOP class, instance, frame) of each slice index k of ``grid``."""
    images = {}
    for n, header in enumerate(headers):
        name = getattr(header, "filename", None)
        for item in slices_of(Path(name) if isinstance(name, str) and name else Path(f"dataset {n + 1}"), header):
            image = Dataset()
            image.ReferencedSOPClassUID = header.SOPClassUID
            image.ReferencedSOPInstanceUID = header.SOPInstanceUID
            if item.frame is not None:
                image.ReferencedFrameNumber = item.frame + 1
            images[int(np.round(grid.world_to_index(item.position_mm)[2]))] = image
    return images


def _structure_set(headers: Sequence[Dataset], series_description: str, label: str) -> Dataset:
    """An RTSTRUCT dataset without ROIs: patient and study of ``headers``, new series and instance."""
    source = headers[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTSTRUCT_SOP_CLASS, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    if source.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, source.get(keyword, ""))
    if source.get("StudyDescription"):
        ds.StudyDescription = source.StudyDescription
    now = datetime.datetime.now()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 101
    ds.SeriesDescription, ds.OperatorsName = series_description, ""
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "sirtreg", "sirtreg", __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    return ds


def _named_masks(labels: LabelVolume | Segmentation, grid: Grid, roi_names: Mapping[int, str] | None
                 ) -> list[tuple[str, np.ndarray]]:
    """(ROI name, boolean array (z, y, x) on ``grid``) of every non-empty label value or segment."""
    def on_grid(volume: LabelVolume) -> LabelVolume:
        try:
            return orient_like(volume, grid, tolerance_mm=_PLACEMENT_TOLERANCE_MM)
        except GeometryMismatchError:
            raise GeometryMismatchError(
                f"the label map ({volume.grid.describe()}) is not on the grid of the referenced series "
                f"({grid.describe()}); resample it onto that series (nearest neighbour) first"
            ) from None

    if isinstance(labels, Segmentation):
        masks = [(s.name, on_grid(LabelVolume.from_mask(labels.layers[s.layer] == s.label_value, labels.grid)))
                 for s in labels.segments]
        return [(name, volume.array > 0) for name, volume in masks if volume.array.any()]
    labels = on_grid(labels)
    names = {**labels.labels, **dict(roi_names or {})}
    return [(names.get(v, f"label {v}"), labels.array == v) for v in labels.present_labels()]


def write_rtstruct(labels: LabelVolume | Segmentation, reference: ReferenceSeries, path: str | os.PathLike[str], *,
                   series: str | None = None, roi_names: Mapping[int, str] | None = None,
                   series_description: str = "sirtreg contours", structure_set_label: str = "sirtreg",
                   algorithm_name: str | None = None, patient_name: str | None = None,
                   patient_id: str | None = None, deidentification: Deidentification | None = None,
                   overwrite: bool = False) -> Path:
    """Write a label map, or segments that may overlap, as an RTSTRUCT of the DICOM series they lie on.

    Parameters
    ----------
    labels : label map (z, y, x), one ROI per label value present (ascending), or a
        :class:`~sirtreg.io.Segmentation`, one ROI per non-empty segment (in its order; segments may
        overlap, as a liver and its lesions do). On the grid of the referenced series; the same voxels
        stored in another axis order are reordered, anything else is refused (resample onto the series first).
    reference : the series the labels were drawn on: a folder of DICOM files, or its datasets (headers suffice).
    path : the RTSTRUCT file to write.
    series : SeriesInstanceUID or description selecting the series in a folder that holds several.
    roi_names : label value -> ROI name, replacing the names of a label map.
    series_description, structure_set_label : of the RTSTRUCT (the label is cut to 16 characters).
    algorithm_name : the program that made the labels (ROIs marked AUTOMATIC); None for manual contours.
    patient_name, patient_id : replace those copied from the referenced series.
    deidentification : applied last, to the patient and study attributes copied from the referenced series
        too (its pseudonym replaces ``patient_name`` and ``patient_id``).
    overwrite : replace an existing file.

    Returns
    -------
    The path written. ROIs are numbered 1..N; each slice of each ROI is traced at the 0.5 level between
    voxel centres (holes as inner contours), so :func:`read_rtstruct` gives back the same voxels.
    """
    path = prepare_output(path, overwrite=overwrite)
    headers = referable(read_series_headers(reference, series=series))
    grid = series_grid(headers)
    masks = _named_masks(labels, grid, roi_names)
    if not masks:
        raise InputError("the label map is empty: there is no ROI to write")
    images = _slice_images(headers, grid)
    frame_uid = str(headers[0].FrameOfReferenceUID)
    ds = _structure_set(headers, series_description, structure_set_label)
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""  # the Frame of Reference module
    if patient_name is not None:
        ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id

    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = headers[0].SeriesInstanceUID
    referenced_series.ContourImageSequence = [images[k] for k in sorted(images)]
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = _STUDY_SOP_CLASS, headers[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [referenced_series]
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    structures, contours, observations = [], [], []
    for number, (name, mask) in enumerate(masks, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame_uid, name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC" if algorithm_name else "MANUAL"
        if algorithm_name:
            roi.ROIGenerationDescription = algorithm_name[:64]
        structures.append(roi)
        items = []
        for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
            for loop in _trace(mask[k]):
                item = Dataset()
                item.ContourImageSequence = [images[int(k)]]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(loop)
                item.ContourNumber = len(items) + 1
                item.ContourData = _ds_list(grid.index_to_world(np.column_stack([loop, np.full(len(loop), k)])))
                items.append(item)
        contour = Dataset()
        contour.ROIDisplayColor = list(_COLOURS[(number - 1) % len(_COLOURS)])
        contour.ReferencedROINumber = number
        contour.ContourSequence = items
        contours.append(contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType, observation.ROIInterpreter = _interpreted_type(name), ""
        observations.append(observation)
    ds.StructureSetROISequence = structures
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    save_dataset(ds, path, deidentification=deidentification)
    log.info("wrote RTSTRUCT of %d ROIs on %s", len(masks), grid.describe())
    return path
