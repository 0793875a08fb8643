"""The checks of a plan's files before any long work (:func:`check_plan`), from their headers: every image
and contour exists and is of a kind sirtreg reads, the SPECT and every contour lie on or reference their image,
liver contours of several segments choose one, and liver+landmarks guidance has landmarks on both sides (see
:mod:`sirtreg.pipeline.plan` for the rules)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nrrd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, nonzero_values
from sirtreg.io import SeriesInfo, is_segmentation_file, list_series, read_labels
from sirtreg.io.contours import describe_values, is_label_value
from sirtreg.io.dicom_seg import series_grid
from sirtreg.io.dicom_series import NON_IMAGE_MODALITIES, select_series
from sirtreg.io.images import has_image_suffix
from sirtreg.pipeline.plan import CONTOUR_ROLES, ContourInput, FloatingInput, Plan, ReferenceInput
from sirtreg.yaml_input import refusal

log = logging.getLogger(__name__)

_GRID_TOLERANCE_MM = 1e-3  # as sirtreg.io.orient_like, which places a label map on its image's voxels


# --- what the checks look at ------------------------------------------------------------
@dataclass(frozen=True)
class Scan:
    """One image of a plan as the checks see it (also for an entry whose other fields have problems)."""

    where: str
    image: Path
    series: str | None = None
    contours: Mapping[str, ContourInput] = field(default_factory=dict)  # role -> contour
    guidance: str | None = None


@dataclass(frozen=True)
class _ImageFacts:
    """Geometry of an image from its headers, and its DICOM UIDs (empty for other files)."""

    grid: Grid
    series_uid: str = ""
    frame_uid: str = ""


@dataclass(frozen=True)
class _ContourFacts:
    """What a contour file's header tells: its kind, grid (label maps), references and segment names."""

    kind: str
    grid: Grid | None = None
    series_uids: tuple[str, ...] = ()
    frame_uids: tuple[str, ...] = ()
    names: tuple[str, ...] | None = None  # None: a plain label map, without names


def scans_of(plan: Plan) -> tuple[Scan, Scan, list[Scan]]:
    def contours(entry: ReferenceInput | FloatingInput) -> dict[str, ContourInput]:
        return {role: getattr(entry, role) for role in CONTOUR_ROLES if getattr(entry, role) is not None}

    reference = Scan("reference", plan.reference.image, plan.reference.series, contours(plan.reference))
    spect = Scan("spect", plan.spect.image, plan.spect.series)
    floating = [Scan(f"floating {entry.id}", entry.image, entry.series, contours(entry), entry.guidance)
                for entry in plan.floating]
    return reference, spect, floating


# --- reading headers --------------------------------------------------------------------
def _file_grid(path: Path) -> Grid:
    """The grid of a NIfTI, NRRD or MHA file (or a ``.seg.nrrd``) from its header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise InputError(f"cannot read {path.name} as an image: {first}") from None
    if reader.GetDimension() != 3 or min(reader.GetSize()) == 1:
        size = "x".join(str(n) for n in reader.GetSize())
        raise InputError(f"{path.name} is not a 3D volume ({size} voxels)")
    return Grid(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _dicom_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
        raise InputError(f"cannot read {path.name}: not a DICOM file, nor NIfTI, NRRD or MHA by its name") from None


def _series_facts(info: SeriesInfo) -> _ImageFacts:
    """Grid and UIDs of a DICOM series, from its headers."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in info.files]
    return _ImageFacts(series_grid(headers), str(headers[0].get("SeriesInstanceUID", "")),
                       str(headers[0].get("FrameOfReferenceUID", "")))


def _file_facts(path: Path) -> _ImageFacts:
    """Grid (and UIDs for DICOM) of an image file: NIfTI, NRRD, MHA, or a DICOM file that brings in its series."""
    if is_segmentation_file(path):
        raise InputError(f"{path.name} is a segmentation, not an image")
    if has_image_suffix(path):
        return _ImageFacts(_file_grid(path))
    header = _dicom_header(path)
    modality = str(header.get("Modality", ""))
    if modality.upper() in NON_IMAGE_MODALITIES:
        raise InputError(f"{path.name} is a DICOM {modality}, not an image")
    uid = str(header.get("SeriesInstanceUID", ""))
    return _series_facts(select_series(list_series(path.parent), uid, where=str(path.parent)))


def _segment_names(path: Path) -> tuple[str, ...]:
    """Segment names in the header of a 3D Slicer segmentation (the name, else the ID)."""
    try:
        header = nrrd.read_header(str(path))
    except (nrrd.NRRDError, OSError) as exc:
        raise InputError(f"cannot read {path.name} as a segmentation: {exc}") from None
    names, index = [], 0
    while f"Segment{index}_ID" in header or f"Segment{index}_Name" in header:
        names.append(str(header.get(f"Segment{index}_Name", header.get(f"Segment{index}_ID"))))
        index += 1
    return tuple(names)


def _contour_facts(path: Path) -> _ContourFacts:
    if path.is_dir():
        raise InputError(f"{path} is a folder; a contour is one file: a label map, a .seg.nrrd, a DICOM SEG "
                         "or an RTSTRUCT")
    if is_segmentation_file(path):
        return _ContourFacts("3D Slicer segmentation", grid=_file_grid(path), names=_segment_names(path))
    if has_image_suffix(path):
        return _ContourFacts("label map", grid=_file_grid(path))
    header = _dicom_header(path)
    modality = str(header.get("Modality", ""))
    frame = str(header.get("FrameOfReferenceUID", ""))
    if modality == "SEG":
        return _ContourFacts(
            "DICOM SEG",
            series_uids=tuple(str(s.SeriesInstanceUID) for s in header.get("ReferencedSeriesSequence", [])
                              if "SeriesInstanceUID" in s),
            frame_uids=(frame,) if frame else (),
            names=tuple(str(s.get("SegmentLabel", "")) for s in header.get("SegmentSequence", [])))
    if modality == "RTSTRUCT":
        frames = header.get("ReferencedFrameOfReferenceSequence", [])
        return _ContourFacts(
            "RTSTRUCT",
            series_uids=tuple(str(series.SeriesInstanceUID) for item in frames
                              for study in item.get("RTReferencedStudySequence", [])
                              for series in study.get("RTReferencedSeriesSequence", [])
                              if "SeriesInstanceUID" in series),
            frame_uids=tuple(str(item.FrameOfReferenceUID) for item in frames if "FrameOfReferenceUID" in item),
            names=tuple(str(roi.get("ROIName", "")) for roi in header.get("StructureSetROISequence", [])))
    raise InputError(f"{path.name} is a DICOM {modality or 'file without modality'}; a contour is a label map, "
                     "a .seg.nrrd, a DICOM SEG or an RTSTRUCT")


def _label_values(path: Path) -> tuple[int, ...]:
    """The non-zero values of a plain label map (NIfTI, NRRD, MHA), ascending; reads its voxels."""
    return tuple(nonzero_values(read_labels(path).array))


def _same_voxels(a: Grid, b: Grid) -> bool:
    """True when both grids place the same voxel centres, in any axis order and sign (what orient_like accepts)."""
    cosines = np.abs(a.direction_matrix.T @ b.direction_matrix)  # [i, j]: |axis i of a . axis j of b|
    axes = np.argmax(cosines, axis=0)
    if sorted(axes) != [0, 1, 2] or not np.allclose(cosines[axes, [0, 1, 2]], 1.0, atol=1e-4):
        return False
    if [a.size[i] for i in axes] != list(b.size):
        return False
    corners_a, corners_b = (g.index_to_world(np.array(list(itertools.product(*[(0, n - 1) for n in g.size]))))
                            for g in (a, b))
    distances = np.linalg.norm(corners_a[:, None] - corners_b[None], axis=-1)
    return bool(np.all(distances.min(axis=0) <= _GRID_TOLERANCE_MM))


# --- the checks -------------------------------------------------------------------------
class FileChecker:
    """Checks the files of a plan from their headers, adding one line per problem to ``problems``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self._contours: dict[Path, _ContourFacts | None] = {}
        self._values: dict[Path, tuple[int, ...] | None] = {}  # label values of plain label maps

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def check(self, reference: Scan | None, spect: Scan | None, floating: Sequence[Scan]) -> None:
        """Every image and contour, the SPECT against the MAA CT, and landmarks for liver+landmarks guidance."""
        reference_facts = self.image_and_contours(reference) if reference is not None else None
        spect_facts = self.image_and_contours(spect) if spect is not None else None
        self.same_space(spect_facts, reference_facts)
        for scan in floating:
            self.image_and_contours(scan)
            if scan.guidance == "liver+landmarks":
                sides = [side for side, entry in (("the reference", reference), ("this image", scan))
                         if entry is not None and "landmarks" not in entry.contours]
                if sides:
                    self.problem(f"{scan.where}, guidance", "liver+landmarks needs landmarks on the reference "
                                 f"and on this image; none on {' and '.join(sides)}: add them or choose liver")

    def image_and_contours(self, scan: Scan) -> _ImageFacts | None:
        facts = self.image(scan)
        for role, contour in scan.contours.items():
            self.contour(f"{scan.where}, {role}", role, contour, facts)
        return facts

    def image(self, scan: Scan) -> _ImageFacts | None:
        where, path = f"{scan.where}, image", scan.image
        if not path.exists():
            self.problem(where, f"no such file or folder: {path}")
            return None
        if not path.is_dir():
            if scan.series is not None:
                self.problem(f"{scan.where}, series", "chooses a series in a DICOM folder, but the image is the "
                             f"file {path.name}")
            try:
                return _file_facts(path)
            except InputError as exc:
                self.problem(where, str(exc))
                return None
        try:
            info = select_series(list_series(path), scan.series, where=str(path))
        except InputError as exc:
            self.problem(f"{scan.where}, series" if scan.series is not None else where, str(exc))
            return None
        try:
            return _series_facts(info)
        except InputError as exc:
            self.problem(where, str(exc))
            return None

    def contour(self, where: str, role: str, contour: ContourInput, image: _ImageFacts | None) -> None:
        path = contour.path
        if not path.exists():
            self.problem(where, f"no such file: {path}")
            return
        if path not in self._contours:  # one file may hold several roles: read and report it once
            try:
                self._contours[path] = _contour_facts(path)
            except InputError as exc:
                self.problem(where, str(exc))
                self._contours[path] = None
        facts = self._contours[path]
        if facts is None:
            return
        if facts.names is None:
            self.label_map_segments(where, role, contour)
        elif contour.segments:
            missing = [name for name in contour.segments if name not in facts.names]
            if missing:
                self.problem(where, f"{path.name} holds no segment {', '.join(map(repr, missing))}; it holds "
                             f"{describe_values([repr(name) for name in facts.names])}")
        elif role == "liver" and len(facts.names) > 1:
            self.problem(where, f"{path.name} holds {len(facts.names)} segments "
                         f"({describe_values([repr(name) for name in facts.names])}); choose the liver's with "
                         f"'segments', e.g. {{path: {path.name}, segments: [{facts.names[0]}]}}")
        if image is None:
            return
        if facts.grid is not None and not _same_voxels(facts.grid, image.grid):
            self.problem(where, f"{path.name} ({facts.grid.describe()}) is not on the voxels of its image "
                         f"({image.grid.describe()}); resample it onto the image (nearest neighbour) first")
        elif facts.series_uids and image.series_uid and image.series_uid not in facts.series_uids:
            self.problem(where, f"the {facts.kind} {path.name} references series {', '.join(facts.series_uids)}, "
                         f"not the series of its image ({image.series_uid}): it was drawn on another scan")
        elif facts.frame_uids and image.frame_uid and image.frame_uid not in facts.frame_uids:
            self.problem(where, f"the {facts.kind} {path.name} lies in frame of reference "
                         f"{', '.join(facts.frame_uids)}, its image in {image.frame_uid}: it was drawn on another scan")

    def label_map_segments(self, where: str, role: str, contour: ContourInput) -> None:
        """Segments of a plain label map are label values it holds; a liver one must hold one or choose."""
        path = contour.path
        names = [segment for segment in contour.segments if not is_label_value(segment)]
        if names:
            self.problem(where, f"{path.name} is a label map without segment names: choose its segments by label "
                         f"value (e.g. segments: [5]), not by name ({', '.join(map(repr, names))})")
            return
        if not contour.segments and role != "liver":
            return  # lesions, landmarks: one per label, all taken
        if path not in self._values:
            try:
                self._values[path] = _label_values(path)
            except InputError as exc:
                self.problem(where, str(exc))
                self._values[path] = None
        values = self._values[path]
        if values is None:
            return
        missing = [segment for segment in contour.segments if int(segment) not in values]
        if missing:
            self.problem(where, f"{path.name} holds no label {', '.join(missing)}; it holds labels "
                         f"{describe_values(values)}")
        elif not contour.segments and not values:
            self.problem(where, f"the liver contour is empty: {path.name} holds no label")
        elif not contour.segments and len(values) > 1:
            self.problem(where, f"{path.name} holds {len(values)} labels ({describe_values(values)}); choose the "
                         f"liver's with 'segments', e.g. {{path: {path.name}, segments: [{values[0]}]}}")

    def same_space(self, spect: _ImageFacts | None, reference: _ImageFacts | None) -> None:
        """The SPECT must share the MAA CT's frame of reference where both are DICOM, and overlap it in space."""
        if spect is None or reference is None:
            return
        if spect.frame_uid and reference.frame_uid and spect.frame_uid != reference.frame_uid:
            self.problem("spect, image", f"the SPECT lies in frame of reference {spect.frame_uid}, the MAA CT in "
                         f"{reference.frame_uid}: they are not of one SPECT/CT session")
        elif not spect.grid.overlaps(reference.grid):
            self.problem("spect, image", f"the SPECT ({spect.grid.describe()}) does not overlap the MAA CT "
                         f"({reference.grid.describe()}) in space")


def check_plan(plan: Plan) -> None:
    """Check the inputs of a plan from their headers, before any long work.

    Raises one :class:`~sirtreg.errors.InputError` listing every problem, one per line, each
    naming the input and the field: missing files, series that cannot be chosen, a SPECT that is
    not in the space of the MAA CT, contours of another scan or on other voxels, segments that are
    not there, and ``liver+landmarks`` guidance without landmarks on both sides (see the module
    docstring). :func:`read_plan` runs these checks too.
    """
    problems: list[str] = []
    FileChecker(problems).check(*scans_of(plan))
    if problems:
        raise refusal(problems, what="plan")


