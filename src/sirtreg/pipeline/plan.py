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
      voxel_s_values: true          # optional: the dose by voxel S values too, beside local deposition
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

:func:`~sirtreg.pipeline.plan_reader.read_plan` reads a plan and checks it before any long work; it refuses it
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
:func:`~sirtreg.pipeline.plan_checks.check_plan` runs the same checks on a :class:`Plan` made in code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sirtreg.dosimetry.isotopes import get_isotope, require_activity_gbq
from sirtreg.errors import InputError
from sirtreg.io.contours import is_label_value
from sirtreg.pipeline.weights import RunWeights, default_weights, plan_weights_document
from sirtreg.register.config import GUIDANCES
from sirtreg.yaml_input import ID_PATTERN, MODALITIES, relative, write_yaml

log = logging.getLogger(__name__)

FORMAT = "sirtreg-plan"
VERSION = 1
CONTOUR_ROLES = ("liver", "lesions", "landmarks")
# what a run does with a CNN liver that its checks flag: register as planned, fall back to image guidance, stop
FLAGGED_LIVER_ACTIONS = ("report", "image", "stop")
ACTIVITY_KEYS = {"activity_gbq": ("GBq", 1.0), "activity_mbq": ("MBq", 1e-3)}  # key -> unit, GBq per unit


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
        if isinstance(self.segments, str) or not all(is_segment(s) for s in self.segments):
            raise InputError(f"segments must be a list of names or label values (whole numbers > 0), "
                             f"got {self.segments!r}")
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "segments", tuple(str(s) for s in self.segments))


def is_segment(value: Any) -> bool:
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
    voxel_s_values : also the dose by voxel S values (:mod:`sirtreg.dosimetry.kernel_dose`).
    """

    image: Path
    activity_gbq: float
    isotope: str
    series: str | None = None
    lung_shunt_fraction: float | None = None
    voxel_s_values: bool = False

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
    (floating modality, guidance) where not the engine's (see :func:`~sirtreg.pipeline.plan_reader.read_plan`,
    :mod:`sirtreg.pipeline.weights`),
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
        if self.spect.voxel_s_values:
            spect["voxel_s_values"] = True
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


# --- writing ----------------------------------------------------------------------------
def write_plan(plan: Plan, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``plan`` as a YAML file that :func:`~sirtreg.pipeline.plan_reader.read_plan` reads back; paths
    relative to its folder.

    Written under a temporary name, then renamed. Refuses an existing file unless ``overwrite``
    (:class:`~sirtreg.errors.OutputExistsError`).
    """
    path = Path(os.path.abspath(path))
    path = write_yaml(plan.to_dict(relative_to=path.parent), path, overwrite=overwrite)
    log.info("wrote plan %s (%d floating images)", path, len(plan.floating))
    return path
