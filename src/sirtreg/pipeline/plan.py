"""The plan of one patient: a YAML file naming every input of ``sirtreg run``.

A plan names the reference (the MAA CT, to which everything is registered), the
99mTc-MAA SPECT with the activity to administer, and any number of floating
images (diagnostic CT or MR), each with optional contours and a guidance choice.

Example (relative paths resolve against the folder of the plan)::

    format: sirtreg-plan            # optional; if given, exactly this
    version: 1                      # optional; if given, 1
    reference:                      # the MAA CT
      image: maa/ct                 # a DICOM folder, a DICOM file, or NIfTI / NRRD / MHA
      series: CT 3mm                # optional: SeriesInstanceUID or SeriesDescription (exact, else a part
                                    #   of it) choosing one series in a DICOM folder that holds several
      liver: maa/liver.seg.nrrd     # optional contours; without a liver contour the CNN segments the liver
      landmarks: maa/landmarks.nii.gz
      lesions: maa/lesions_seg.dcm  # optional: lesions drawn on the MAA CT itself
    spect:                          # the MAA SPECT, in the frame of reference of the MAA CT
      image: maa/spect.dcm
      series: SPECT AC              # optional, as for the reference
      activity_gbq: 1.8             # activity to administer, > 0 and <= 100 GBq (a warning above 20 GBq or
                                    #   below 10 MBq); the unit is in the key (or activity_mbq: 1800)
      isotope: Y-90                 # Y-90 or Ho-166
      lung_shunt_fraction: 0.04     # optional, in [0, 1)
    floating:                       # any number of images, none included
      - id: ct1                     # unique; letters, digits, '.', '_' and '-' (it names the outputs)
        modality: CT                # CT | MR
        role: portal venous CT      # optional free text
        image: diagnostic/dicom     # a folder of several series ...
        series: "1.2.826.0.1.3680043.8.498.17"  # ... so one is chosen by UID
        liver:                      # a contour is a path, or a mapping of a path and segments
          path: diagnostic/rtstruct.dcm
          segments: [Liver]         # segment (SEG, .seg.nrrd) or ROI (RTSTRUCT) names, exact; default: all
        lesions:
          path: diagnostic/rtstruct.dcm
          segments: [Lesion 1, Lesion 2]
        landmarks: diagnostic/landmarks_seg.dcm
        guidance: liver+landmarks   # image | liver | liver+landmarks; default: liver+landmarks where the
                                    #   reference and this image both have landmarks, else liver
      - id: mr1
        modality: MR
        image: diagnostic/mr.nii.gz
        liver:                      # a label map of several organs (e.g. TotalSegmentator's): the liver by
          path: diagnostic/mr_organs.nii.gz   #   its label value
          segments: [5]
        lesions: diagnostic/mr_lesions.nii.gz
    weights:                        # optional: non-rigid weights per floating modality and guidance (see
      MR:                           #   sirtreg.pipeline.weights; default: the engine's)
        liver: {affine_only: true}
    flagged_cnn_liver: report       # optional: report | image | stop; what to do with a CNN liver that its
                                    #   checks flag (see sirtreg.segment.liver_check): register as planned and
                                    #   report it (default), register with image guidance instead, or stop

A contour is a label map (NIfTI, NRRD, MHA) on the voxels of its image (the same
voxel centres, in any axis order), a 3D Slicer ``.seg.nrrd`` on those voxels, a
DICOM SEG or an RTSTRUCT that references the image's series. ``segments`` chooses
by name in a SEG, an RTSTRUCT or a ``.seg.nrrd``, and by label value (a whole number
> 0, or its digits as text) in a plain label map, which names none. A liver contour
whose file holds several labels or segments must choose the liver's with
``segments``; lesion and landmark files hold one lesion or landmark per label.

:func:`read_plan` reads a plan and checks it before any long work; it refuses it
with one :class:`~sirtreg.errors.InputError` that lists every problem, one per
line, each naming the input and the field: unknown keys (with the nearest known
one), repeated and missing keys; files beyond the bounds of
:class:`~sirtreg.yaml_input.Loader` (1 MiB, 100 aliases, 32 levels: no "billion
laughs"); activities without their unit in the key, not a finite number, not > 0 or
above 100 GBq; unknown isotopes; lung shunt fractions that are not finite numbers in
[0, 1) (``.nan`` and ``.inf`` are refused wherever a number is read); bad ids,
modalities and guidance; ``liver+landmarks`` without landmarks on both sides; weights that are not
numbers >= 0, ``affine_only`` beside wI or wS, wS > 0 for image guidance;
missing files and folders; a ``series`` that matches no series or several (or a
DICOM folder of several series and no ``series``); images that are not images;
a SPECT in another DICOM frame of reference than the MAA CT, or (where either is
not DICOM) one that does not overlap it in space; a DICOM SEG or RTSTRUCT that
references another series or frame of reference than its image; a label map on
other voxels than its image; segments that the contour file does not hold
(names in a file without names, label values it does not hold); a liver contour
holding several labels or segments of which none is chosen. Headers only are read
(pydicom without pixels, SimpleITK image information), but for the voxels of plain
label maps given as a liver or with chosen segments, to know their label values.
:func:`check_plan` runs the same checks on a :class:`Plan` made in code.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nrrd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sirtreg.dosimetry.isotopes import get_isotope, require_activity_gbq
from sirtreg.errors import InputError
from sirtreg.geometry import Grid
from sirtreg.io import SeriesInfo, is_segmentation_file, list_series, read_labels
from sirtreg.io.dicom import NON_IMAGE_MODALITIES, select_series
from sirtreg.io.dicom_seg import series_grid
from sirtreg.io.contours import describe_values, is_label_value
from sirtreg.io.images import has_image_suffix
from sirtreg.pipeline.weights import RunWeights, default_weights, plan_weights_document, read_plan_weights
from sirtreg.register.config import GUIDANCES
from sirtreg.yaml_input import (
    ID_PATTERN,
    MODALITIES,
    Reader,
    describe,
    entry_label,
    load_yaml,
    refusal,
    relative,
    write_yaml,
)

log = logging.getLogger(__name__)

FORMAT = "sirtreg-plan"
VERSION = 1
CONTOUR_ROLES = ("liver", "lesions", "landmarks")
ACTIVITY_KEYS = {"activity_gbq": ("GBq", 1.0), "activity_mbq": ("MBq", 1e-3)}  # key -> unit, GBq per unit
_GRID_TOLERANCE_MM = 1e-3  # as sirtreg.io.orient_like, which places a label map on its image's voxels

# Keys of each mapping: True if required.
_TOP_KEYS = {"format": False, "version": False, "reference": True, "spect": True, "floating": False,
             "weights": False, "flagged_cnn_liver": False}
# what a run does with a CNN liver that its checks flag: register as planned, fall back to image guidance, stop
FLAGGED_LIVER_ACTIONS = ("report", "image", "stop")
_REFERENCE_KEYS = {"image": True, "series": False, "liver": False, "lesions": False, "landmarks": False}
_SPECT_KEYS = {"image": True, "series": False, "activity_gbq": False, "activity_mbq": False, "isotope": True,
               "lung_shunt_fraction": False}
_FLOATING_KEYS = {"id": True, "modality": True, "role": False, "image": True, "series": False, "liver": False,
                  "lesions": False, "landmarks": False, "guidance": False}
_CONTOUR_KEYS = {"path": True, "segments": False}


# --- the plan ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ContourInput:
    """A contour file attached to an image.

    Parameters
    ----------
    path : a label map (NIfTI, NRRD, MHA) or a 3D Slicer ``.seg.nrrd`` on the voxels of the image,
        or a DICOM SEG or RTSTRUCT file that references the image's series.
    segments : the segments to take; empty: all. Exact names of the segments (SEG, ``.seg.nrrd``) or ROIs
        (RTSTRUCT); label values (whole numbers > 0, kept as their digits, e.g. "5") in a plain label map.
    """

    path: Path
    segments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.segments, str) or not all(_is_segment(s) for s in self.segments):
            raise InputError(f"segments must be a list of names or label values (whole numbers > 0), "
                             f"got {self.segments!r}")
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "segments", tuple(str(s) for s in self.segments))


def _is_segment(value: Any) -> bool:
    """A segment name (non-empty text) or a label value (a whole number > 0, not a boolean)."""
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ReferenceInput:
    """The reference (MAA CT) and its optional contours; without a liver contour the CNN segments it.

    ``series`` chooses one series (SeriesInstanceUID or SeriesDescription) in a DICOM folder of several.
    """

    image: Path
    series: str | None = None
    liver: ContourInput | None = None
    lesions: ContourInput | None = None
    landmarks: ContourInput | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))


@dataclass(frozen=True)
class SpectInput:
    """The MAA SPECT and the treatment it plans.

    Parameters
    ----------
    image : the SPECT, in the frame of reference of the MAA CT.
    activity_gbq : activity to administer, GBq, > 0 and at most 100 GBq.
    isotope : "Y-90" or "Ho-166" (other spellings such as "y90" become these).
    series : chooses one series in a DICOM folder of several.
    lung_shunt_fraction : fraction of the activity shunted to the lungs, in [0, 1); None if unknown.
    """

    image: Path
    activity_gbq: float
    isotope: str
    series: str | None = None
    lung_shunt_fraction: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        object.__setattr__(self, "activity_gbq", require_activity_gbq(self.activity_gbq, what="the SPECT activity"))
        object.__setattr__(self, "isotope", get_isotope(self.isotope).name)
        fraction = self.lung_shunt_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0 <= fraction < 1):
            raise InputError(f"the lung shunt fraction must be a number in [0, 1), got {fraction!r}")
        if fraction is not None:
            object.__setattr__(self, "lung_shunt_fraction", float(fraction))


@dataclass(frozen=True)
class FloatingInput:
    """A diagnostic CT or MR to register to the reference, with its optional contours.

    Parameters
    ----------
    id : unique in the plan; letters, digits, '.', '_' and '-'.
    modality : "CT" or "MR".
    image : the image file or DICOM folder.
    series : chooses one series in a DICOM folder of several.
    role : free text ("portal venous CT", "PET/MR", ...).
    liver, lesions, landmarks : contours drawn on this image; without a liver contour the CNN segments it.
    guidance : "image", "liver" or "liver+landmarks"; None: the default (see :meth:`Plan.guidance`).
    """

    id: str
    modality: str
    image: Path
    series: str | None = None
    role: str = ""
    liver: ContourInput | None = None
    lesions: ContourInput | None = None
    landmarks: ContourInput | None = None
    guidance: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ID_PATTERN.fullmatch(self.id):
            raise InputError(f"a floating id may hold only letters, digits, '.', '_' and '-', got {self.id!r}")
        if self.modality not in MODALITIES:
            raise InputError(f"floating {self.id}: modality must be one of {', '.join(MODALITIES)}, "
                             f"got {self.modality!r}")
        if self.guidance is not None and self.guidance not in GUIDANCES:
            raise InputError(f"floating {self.id}: guidance must be one of {', '.join(GUIDANCES)}, "
                             f"got {self.guidance!r}")
        object.__setattr__(self, "image", Path(self.image))


@dataclass(frozen=True)
class Plan:
    """Every input of one patient: the reference, the SPECT, the floating images, the non-rigid weights per
    (floating modality, guidance) where not the engine's (see :func:`read_plan`, :mod:`sirtreg.pipeline.weights`),
    and what to do with a flagged CNN liver (one of :data:`FLAGGED_LIVER_ACTIONS`)."""

    reference: ReferenceInput
    spect: SpectInput
    floating: tuple[FloatingInput, ...] = ()
    weights: Mapping[tuple[str, str], RunWeights] = field(default_factory=dict)
    flagged_cnn_liver: str = "report"

    def __post_init__(self) -> None:
        floating = tuple(self.floating)
        ids = [image.id for image in floating]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise InputError(f"floating ids must be unique; repeated: {', '.join(repeated)}")
        object.__setattr__(self, "floating", floating)
        for key, weights in self.weights.items():
            if (not isinstance(key, tuple) or len(key) != 2 or key[0] not in MODALITIES or key[1] not in GUIDANCES
                    or not isinstance(weights, RunWeights)):
                raise InputError(f"plan weights map (modality, guidance) to RunWeights, got {key!r}: {weights!r}")
            weights.settings(key[1])  # refuses wS > 0 with image guidance
        object.__setattr__(self, "weights", dict(self.weights))
        if self.flagged_cnn_liver not in FLAGGED_LIVER_ACTIONS:
            raise InputError(f"flagged_cnn_liver must be one of {', '.join(FLAGGED_LIVER_ACTIONS)}, "
                             f"got {self.flagged_cnn_liver!r}")

    def weights_for(self, floating: FloatingInput, guidance: str | None = None) -> RunWeights:
        """The non-rigid weights of a floating image registered with ``guidance`` (default: its own, see
        :meth:`guidance`): the plan's for its modality and that guidance, else the engine's."""
        guidance = guidance or self.guidance(floating)
        return self.weights.get((floating.modality, guidance)) or default_weights(guidance)

    def guidance(self, floating: FloatingInput) -> str:
        """The guidance of a floating image: its own, else liver+landmarks where it and the reference have
        landmarks, else liver."""
        if floating.guidance is not None:
            return floating.guidance
        both = self.reference.landmarks is not None and floating.landmarks is not None
        return "liver+landmarks" if both else "liver"

    def to_dict(self, *, relative_to: str | os.PathLike[str] | None = None,
                withhold_paths: bool = False) -> dict[str, Any]:
        """The plan as the YAML mapping of the module docstring.

        Parameters
        ----------
        relative_to : folder to write paths relative to (where the plan file goes); None: paths as they are.
        withhold_paths : write what each file is ("DICOM folder", "NIfTI file", ...) instead of its path,
            whose folder and file names often hold the patient's name or ID (de-identified outputs).
        """
        folder = None if relative_to is None else Path(os.path.abspath(relative_to))

        def text(path: Path) -> str:
            if withhold_paths:
                return withheld(path)
            return str(path) if folder is None else relative(Path(os.path.abspath(path)), folder)

        def image(entry: ReferenceInput | SpectInput | FloatingInput) -> dict[str, Any]:
            fields: dict[str, Any] = {"image": text(entry.image)}
            if entry.series is not None:
                fields["series"] = entry.series
            for role in CONTOUR_ROLES:
                contour = getattr(entry, role, None)
                if contour is not None:
                    segments = [int(s) if is_label_value(s) and str(int(s)) == s else s for s in contour.segments]
                    fields[role] = (text(contour.path) if not contour.segments
                                    else {"path": text(contour.path), "segments": segments})
            return fields

        spect = {**image(self.spect), "activity_gbq": self.spect.activity_gbq, "isotope": self.spect.isotope}
        if self.spect.lung_shunt_fraction is not None:
            spect["lung_shunt_fraction"] = self.spect.lung_shunt_fraction
        floating = []
        for entry in self.floating:
            fields: dict[str, Any] = {"id": entry.id, "modality": entry.modality}
            if entry.role:
                fields["role"] = entry.role
            fields.update(image(entry))
            if entry.guidance is not None:
                fields["guidance"] = entry.guidance
            floating.append(fields)
        document = {"format": FORMAT, "version": VERSION, "reference": image(self.reference), "spect": spect,
                    "floating": floating}
        if self.weights:
            document["weights"] = plan_weights_document(self.weights)
        if self.flagged_cnn_liver != "report":
            document["flagged_cnn_liver"] = self.flagged_cnn_liver
        return document


_FILE_KINDS = ((".seg.nrrd", "3D Slicer segmentation"), (".nii.gz", "NIfTI file"), (".nii", "NIfTI file"),
               (".nrrd", "NRRD file"), (".nhdr", "NRRD file"), (".mha", "MetaImage file"), (".mhd", "MetaImage file"),
               (".dcm", "DICOM file"))


def withheld(path: str | os.PathLike[str]) -> str:
    """What ``path`` is, without any of its names (which may hold the patient's name or ID), e.g. "<DICOM folder>"."""
    path = Path(path)
    if path.is_dir():
        return "<DICOM folder>"
    name = path.name.lower()
    return f"<{next((kind for suffix, kind in _FILE_KINDS if name.endswith(suffix)), 'file')}>"


# --- what the checks look at ------------------------------------------------------------
@dataclass(frozen=True)
class _Scan:
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


def _scans(plan: Plan) -> tuple[_Scan, _Scan, list[_Scan]]:
    def contours(entry: ReferenceInput | FloatingInput) -> dict[str, ContourInput]:
        return {role: getattr(entry, role) for role in CONTOUR_ROLES if getattr(entry, role) is not None}

    reference = _Scan("reference", plan.reference.image, plan.reference.series, contours(plan.reference))
    spect = _Scan("spect", plan.spect.image, plan.spect.series)
    floating = [_Scan(f"floating {entry.id}", entry.image, entry.series, contours(entry), entry.guidance)
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
    array = read_labels(path).array
    if np.issubdtype(array.dtype, np.integer) and array.size and 0 <= array.min() and array.max() < 1 << 16:
        return tuple(int(v) for v in np.flatnonzero(np.bincount(array.ravel())) if v != 0)
    return tuple(int(v) for v in np.unique(array) if v != 0)


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
class _Checker:
    """Checks the files of a plan from their headers, adding one line per problem to ``problems``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self._contours: dict[Path, _ContourFacts | None] = {}
        self._values: dict[Path, tuple[int, ...] | None] = {}  # label values of plain label maps

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def check(self, reference: _Scan | None, spect: _Scan | None, floating: Sequence[_Scan]) -> None:
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

    def image_and_contours(self, scan: _Scan) -> _ImageFacts | None:
        facts = self.image(scan)
        for role, contour in scan.contours.items():
            self.contour(f"{scan.where}, {role}", role, contour, facts)
        return facts

    def image(self, scan: _Scan) -> _ImageFacts | None:
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
    _Checker(problems).check(*_scans(plan))
    if problems:
        raise refusal(problems, what="plan")


# --- reading ----------------------------------------------------------------------------
class _PlanReader(Reader):
    """Parses a plan document, collecting every problem; keeps what the file checks need of each image."""

    def file(self, where: str, value: Any) -> Path | None:
        """An absolute path (a relative one against the plan's folder); whether it exists is checked later."""
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"must be a path, got {describe(value)}")
            return None
        return Path(os.path.abspath(self.folder / Path(value).expanduser()))

    def series(self, where: str, value: Any) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.problem(where, f"must be a SeriesInstanceUID or SeriesDescription as text (quote it), "
                     f"got {describe(value)}")
        return None

    def contour(self, where: str, value: Any) -> ContourInput | None:
        if not isinstance(value, dict):
            path = self.file(where, value)
            return None if path is None else ContourInput(path)
        fields = self.fields(where, value, _CONTOUR_KEYS) or {}
        path = self.get(where, fields, "path", self.file)
        segments = self.get(where, fields, "segments", self.segments, default=())
        return None if path is None or segments is None else ContourInput(path, segments)

    def segments(self, where: str, value: Any) -> tuple[str, ...] | None:
        """Segment names, or label values (whole numbers > 0, or their digits as text) of a plain label map."""
        if isinstance(value, list) and value and all(_is_segment(segment) for segment in value):
            return tuple(str(segment) for segment in value)
        self.problem(where, f"must be a non-empty list of segment names or label values (whole numbers > 0), "
                     f"got {describe(value)}")
        return None

    def contours(self, where: str, fields: dict[str, Any]) -> dict[str, ContourInput]:
        parsed = {role: self.get(where, fields, role, self.contour) for role in CONTOUR_ROLES}
        return {role: contour for role, contour in parsed.items() if contour is not None}

    def plan(self, document: Any) -> tuple[Plan | None, tuple[_Scan | None, _Scan | None, list[_Scan]]]:
        """The plan if the document has no problem, and what the file checks need in any case."""
        top = self.fields("plan", document, _TOP_KEYS)
        if top is None:
            return None, (None, None, [])
        if "format" in top and top["format"] != FORMAT:
            self.problem("plan, format", f"must be {FORMAT!r}, got {describe(top['format'])}")
        if "version" in top and top["version"] != VERSION:
            self.problem("plan, version", f"must be {VERSION}, got {describe(top['version'])}")
        reference, reference_scan = self.reference(top["reference"]) if "reference" in top else (None, None)
        spect, spect_scan = self.spect(top["spect"]) if "spect" in top else (None, None)
        floating, floating_scans = self.floating_list(top.get("floating", []))
        weights = read_plan_weights(self, top["weights"]) if "weights" in top else {}
        flagged = self.get("plan", top, "flagged_cnn_liver",
                           lambda at, value: self.choice(at, value, FLAGGED_LIVER_ACTIONS), default="report")
        scans = (reference_scan, spect_scan, floating_scans)
        if self.problems or reference is None or spect is None or floating is None or flagged is None:
            return None, scans
        return Plan(reference=reference, spect=spect, floating=floating, weights=weights,
                    flagged_cnn_liver=flagged), scans

    def reference(self, entry: Any) -> tuple[ReferenceInput | None, _Scan | None]:
        start, where = len(self.problems), "reference"
        fields = self.fields(where, entry, _REFERENCE_KEYS)
        if fields is None:
            return None, None
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        contours = self.contours(where, fields)
        scan = None if image is None else _Scan(where, image, series, contours)
        if len(self.problems) > start:
            return None, scan
        return ReferenceInput(image=image, series=series, **contours), scan

    def spect(self, entry: Any) -> tuple[SpectInput | None, _Scan | None]:
        start, where = len(self.problems), "spect"
        unitless = [key for key in entry if isinstance(key, str) and key.startswith("activity")
                    and key not in ACTIVITY_KEYS] if isinstance(entry, dict) else []
        for key in unitless:
            self.problem(f"{where}, {key}", "an activity needs its unit in the key: write activity_gbq (GBq) or "
                         "activity_mbq (MBq)")
        fields = self.fields(where, {k: v for k, v in entry.items() if k not in unitless}
                             if isinstance(entry, dict) else entry, _SPECT_KEYS)
        if fields is None:
            return None, None
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        scan = None if image is None else _Scan(where, image, series)
        given = [key for key in ACTIVITY_KEYS if key in fields]
        activity_gbq = None
        if len(given) > 1:
            self.problem(where, f"give the activity once, not as {' and '.join(given)}")
        elif given:
            unit, gbq_per_unit = ACTIVITY_KEYS[given[0]]
            activity_gbq = self.get(where, fields, given[0],
                                    lambda at, value: self.activity(at, value, unit=unit, gbq_per_unit=gbq_per_unit))
        elif not unitless:
            self.problem(where, f"missing the activity: {' or '.join(map(repr, ACTIVITY_KEYS))}")
        isotope = self.get(where, fields, "isotope", self.isotope)
        fraction = self.get(where, fields, "lung_shunt_fraction", self.fraction)
        if len(self.problems) > start:
            return None, scan
        return SpectInput(image=image, activity_gbq=activity_gbq, isotope=isotope, series=series,
                          lung_shunt_fraction=fraction), scan

    def floating_list(self, entries: Any) -> tuple[tuple[FloatingInput, ...] | None, list[_Scan]]:
        if not isinstance(entries, list):
            self.problem("plan, floating", f"must be a list of images, got {describe(entries)}")
            return None, []
        parsed = [self.floating(number, entry) for number, entry in enumerate(entries, start=1)]
        ids = [entry.get("id") for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
        for repeated in sorted({i for i in ids if ids.count(i) > 1}):
            self.problem(f"floating {repeated}", "this id is used more than once")
        images = tuple(image for image, _ in parsed if image is not None)
        scans = [scan for _, scan in parsed if scan is not None]
        return (images if len(images) == len(entries) else None), scans

    def floating(self, number: int, entry: Any) -> tuple[FloatingInput | None, _Scan | None]:
        start = len(self.problems)
        where = entry_label("floating", entry, number)
        fields = self.fields(where, entry, _FLOATING_KEYS)
        if fields is None:
            return None, None
        image_id = self.get(where, fields, "id", self.identifier)
        modality = self.get(where, fields, "modality", lambda at, value: self.choice(at, value, MODALITIES))
        role = self.get(where, fields, "role", self.text, default="")
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        contours = self.contours(where, fields)
        guidance = self.get(where, fields, "guidance", lambda at, value: self.choice(at, value, GUIDANCES))
        scan = None if image is None else _Scan(where, image, series, contours, guidance)
        if len(self.problems) > start:
            return None, scan
        return FloatingInput(id=image_id, modality=modality, image=image, series=series, role=role,
                             guidance=guidance, **contours), scan


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a patient plan (format in the module docstring) and check its inputs.

    Parameters
    ----------
    path : the YAML plan; relative paths in it resolve against its folder.

    Returns
    -------
    The plan, with absolute paths.

    Raises one :class:`~sirtreg.errors.InputError` listing every problem of the document and of
    its files (the checks of :func:`check_plan`), one per line, each naming the input and the field.
    """
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise InputError(f"no such plan: {path}")
    document, repeated = load_yaml(path, what="plan")
    reader = _PlanReader(path.parent)
    reader.problems.extend(repeated)
    plan, scans = reader.plan(document)
    _Checker(reader.problems).check(*scans)
    if reader.problems or plan is None:
        raise refusal(reader.problems, what="plan", prefix=f"{path.name}: ")
    for floating in plan.floating:
        how = "chosen" if floating.guidance is not None else "by default"
        log.info("floating %s: %s guidance (%s), %s", floating.id, plan.guidance(floating), how,
                 plan.weights_for(floating).describe())
    log.info("plan %s: %s %.4g GBq, %d floating images", path.name, plan.spect.isotope, plan.spect.activity_gbq,
             len(plan.floating))
    return plan


# --- writing ----------------------------------------------------------------------------
def write_plan(plan: Plan, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``plan`` as a YAML file that :func:`read_plan` reads back; paths relative to its folder.

    Written under a temporary name, then renamed. Refuses an existing file unless ``overwrite``
    (:class:`~sirtreg.errors.OutputExistsError`).
    """
    path = Path(os.path.abspath(path))
    path = write_yaml(plan.to_dict(relative_to=path.parent), path, overwrite=overwrite)
    log.info("wrote plan %s (%d floating images)", path, len(plan.floating))
    return path
