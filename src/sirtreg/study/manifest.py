"""Cohort manifests: one YAML file listing every patient, image and annotation of a study.

A cohort is a list of patients. Each patient has one reference (the MAA CT, to
which everything is registered), the MAA SPECT with the administered activity,
and one or more floating images (diagnostic CT or MR) to register to the
reference. Landmark label maps hold one label value per landmark; landmarks are
paired across the images of a patient by label value. Every patient belongs to
the ``train`` or the ``test`` split.

Example (relative paths resolve against the folder of the manifest)::

    format: sirtreg-cohort        # optional; if given, exactly this
    version: 1                    # optional; if given, 1
    name: paper cohort            # optional free text
    patients:
      - id: P01                   # letters, digits, '.', '_', '-'; unique in the cohort
        split: train              # train | test
        reference:                # the MAA CT
          image: P01/maa_ct.nii.gz
          liver: P01/maa_ct_liver.nii.gz          # manual liver contour
          cnn_liver: compute                      # optional: a mask file, or "compute" (run the CNN)
          landmark_map: P01/maa_ct_landmarks.nii.gz
          lesions: P01/maa_ct_lesions.nii.gz
        spect:                    # the 99mTc-MAA SPECT
          image: P01/maa_spect.nii.gz
          activity_gbq: 1.8       # administered activity, GBq, > 0 and <= 100 (a warning above 20)
          isotope: Y-90           # Y-90 or Ho-166
          lung_shunt_fraction: 0.04               # optional, in [0, 1)
        floating:                 # at least one
          - id: ct1               # unique within the patient
            modality: CT          # CT | MR
            role: pre-treatment CT                # optional free text (PET/CT, PET/MR, radiology MR, ...)
            image: P01/ct1.nii.gz
            liver: P01/ct1_liver.nii.gz
            cnn_liver: P01/ct1_cnn_liver.nii.gz   # optional: a mask file or "compute"
            landmark_map: P01/ct1_landmarks.nii.gz
            lesions: P01/ct1_lesions.nii.gz       # optional
          - id: mr1
            modality: MR
            role: radiology MR
            image: P01/mr1.nii.gz
            liver: P01/mr1_liver.nii.gz
            landmark_map: P01/mr1_landmarks.nii.gz

An image may be a file (NIfTI, NRRD, MHA) or a DICOM folder. :func:`read_manifest`
checks the manifest and collects every problem before it refuses: files beyond the
bounds of :class:`~sirtreg.yaml_input.Loader` (1 MiB, 100 aliases, 32 levels: no
"billion laughs"), unknown keys (typos), repeated keys, missing fields and files, bad
ids, modalities, splits, activities (finite numbers of GBq, > 0 and at most 100 GBq,
a warning logged above 20 GBq or below 10 MBq; the unit must be in the name:
``activity_gbq``), isotopes, lung shunt fractions (finite, in [0, 1); ``.nan`` and
``.inf`` are refused wherever a number is read), repeated patient or floating ids,
and landmark labels that do not pair (the non-zero values of a floating landmark map
must be those of the reference landmark map). It does not check image geometry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sirtreg.dosimetry.isotopes import read_activity_gbq, read_isotope, require_activity_gbq
from sirtreg.errors import InputError
from sirtreg.io import read_labels
from sirtreg.yaml_input import (
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

FORMAT = "sirtreg-cohort"
VERSION = 1
SPLITS = ("train", "test")
COMPUTE = "compute"

# Keys of each mapping: True if required.
_TOP_KEYS = {"format": False, "version": False, "name": False, "patients": True}
_PATIENT_KEYS = {"id": True, "split": True, "reference": True, "spect": True, "floating": True}
_REFERENCE_KEYS = {"image": True, "liver": True, "cnn_liver": False, "landmark_map": True, "lesions": True}
_SPECT_KEYS = {"image": True, "activity_gbq": True, "isotope": True, "lung_shunt_fraction": False}
_FLOATING_KEYS = {"id": True, "modality": True, "role": False, "image": True, "liver": True, "cnn_liver": False,
                  "landmark_map": True, "lesions": False}


@dataclass(frozen=True)
class ReferenceImage:
    """The reference (MAA CT) of a patient and its annotations; absolute paths.

    ``cnn_liver`` is a CNN liver mask file, ``"compute"`` (segment it when needed) or None.
    """

    image: Path
    liver: Path
    landmark_map: Path
    lesions: Path
    cnn_liver: Path | Literal["compute"] | None = None


@dataclass(frozen=True)
class SpectImage:
    """The MAA SPECT, the administered activity (GBq, > 0 and at most 100) and its isotope ("Y-90" or "Ho-166");
    the lung shunt fraction, if known, is in [0, 1)."""

    image: Path
    activity_gbq: float
    isotope: str
    lung_shunt_fraction: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.activity_gbq, bool):
            raise InputError(f"the SPECT activity must be a number in GBq, got {self.activity_gbq!r}")
        object.__setattr__(self, "activity_gbq", require_activity_gbq(self.activity_gbq, what="the SPECT activity"))
        fraction = self.lung_shunt_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                     or not 0 <= fraction < 1):
            raise InputError(f"the lung shunt fraction must be a number in [0, 1), got {fraction!r}")


@dataclass(frozen=True)
class FloatingImage:
    """A diagnostic CT or MR to register to the reference, with its annotations; absolute paths.

    ``id`` is unique within its patient; ``role`` is free text ("pre-treatment CT", "PET/MR", ...).
    """

    id: str
    modality: str
    image: Path
    liver: Path
    landmark_map: Path
    role: str = ""
    lesions: Path | None = None
    cnn_liver: Path | Literal["compute"] | None = None


@dataclass(frozen=True)
class Patient:
    """One patient of a cohort: the reference, the SPECT and the floating images; ``split`` is train or test."""

    id: str
    split: str
    reference: ReferenceImage
    spect: SpectImage
    floating: tuple[FloatingImage, ...]


@dataclass(frozen=True)
class Cohort:
    """The patients of a study, in manifest order (see :func:`read_manifest`)."""

    patients: tuple[Patient, ...]
    name: str = ""

    def patient(self, patient_id: str) -> Patient:
        """The patient with this id; InputError if there is none."""
        for patient in self.patients:
            if patient.id == patient_id:
                return patient
        raise InputError(f"no patient {patient_id!r} in the cohort; known: {', '.join(p.id for p in self.patients)}")

    def registrations(self, *, split: str | None = None) -> tuple[tuple[Patient, FloatingImage], ...]:
        """Every (patient, floating image) pair in manifest order, of one split if ``split`` is given."""
        if split is not None and split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return tuple((patient, floating) for patient in self.patients if split in (None, patient.split)
                     for floating in patient.floating)

    def registration_counts(self, *, split: str | None = None) -> dict[str, int]:
        """Number of registrations per floating modality, e.g. ``{"CT": 49, "MR": 26}``."""
        modalities = [floating.modality for _, floating in self.registrations(split=split)]
        return {modality: modalities.count(modality) for modality in MODALITIES}


# --- reading -------------------------------------------------------------------------
class _ManifestReader(Reader):
    """Parses a manifest document, collecting every problem instead of stopping at the first."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._label_values: dict[Path, frozenset[int] | None] = {}

    def cnn_liver(self, where: str, value: Any) -> Path | Literal["compute"] | None:
        return COMPUTE if value == COMPUTE else self.path(where, value)

    def activity_gbq(self, where: str, value: Any) -> float | None:
        """A number of GBq: finite, > 0 and at most 100 GBq (see :func:`~sirtreg.dosimetry.isotopes.read_activity_gbq`)."""
        return None if self.number(where, value) is None else self.parsed(where, value, read_activity_gbq)

    def label_values(self, where: str, path: Path) -> frozenset[int] | None:
        """The non-zero values of a label map (read once per path), or None if it cannot be read."""
        if path not in self._label_values:
            try:
                self._label_values[path] = frozenset(read_labels(path).present_labels())
            except InputError as exc:
                self.problem(where, str(exc))
                self._label_values[path] = None
        return self._label_values[path]

    # --- the manifest, top down (an object is built only if its part adds no problem) ----------
    def cohort(self, document: Any) -> Cohort | None:
        top = self.fields("manifest", document, _TOP_KEYS)
        if top is None:
            return None
        if "format" in top and top["format"] != FORMAT:
            self.problem("manifest, format", f"must be {FORMAT!r}, got {describe(top['format'])}")
        if "version" in top and top["version"] != VERSION:
            self.problem("manifest, version", f"must be {VERSION}, got {describe(top['version'])}")
        name = self.get("manifest", top, "name", self.text, default="")
        entries = top.get("patients")
        if "patients" in top and (not isinstance(entries, list) or not entries):
            self.problem("manifest, patients", f"must be a non-empty list of patients, got {describe(entries)}")
            return None
        patients = [self.patient(number, entry) for number, entry in enumerate(entries or (), start=1)]
        for repeated in _repeated([entry.get("id") for entry in entries or () if isinstance(entry, dict)]):
            self.problem(f"patient {repeated}", "this patient id is used more than once")
        return None if self.problems else Cohort(patients=tuple(patients), name=name)

    def patient(self, number: int, entry: Any) -> Patient | None:
        start = len(self.problems)
        where = entry_label("patient", entry, number)
        fields = self.fields(where, entry, _PATIENT_KEYS)
        if fields is None:
            return None
        patient_id = self.get(where, fields, "id", self.identifier)
        split = self.get(where, fields, "split", lambda at, value: self.choice(at, value, SPLITS))
        reference = self.get(where, fields, "reference", self.reference)
        spect = self.get(where, fields, "spect", self.spect)
        landmarks = _reference_landmark_map(self.folder, fields.get("reference"))
        floating = self.get(where, fields, "floating", lambda at, value: self.floating_list(where, value, landmarks))
        if len(self.problems) > start:
            return None
        return Patient(id=patient_id, split=split, reference=reference, spect=spect, floating=floating)

    def reference(self, where: str, entry: Any) -> ReferenceImage | None:
        start = len(self.problems)
        fields = self.fields(where, entry, _REFERENCE_KEYS)
        if fields is None:
            return None
        paths = {key: self.get(where, fields, key, self.path) for key in ("image", "liver", "landmark_map", "lesions")}
        cnn_liver = self.get(where, fields, "cnn_liver", self.cnn_liver)
        return None if len(self.problems) > start else ReferenceImage(**paths, cnn_liver=cnn_liver)

    def spect(self, where: str, entry: Any) -> SpectImage | None:
        start = len(self.problems)
        keys = dict(_SPECT_KEYS)
        if isinstance(entry, dict):
            unitless = [k for k in entry if isinstance(k, str) and k.startswith("activity") and k != "activity_gbq"]
            for key in unitless:
                self.problem(f"{where}, {key}", "an activity needs its unit in the name: write activity_gbq (GBq)")
            entry = {k: v for k, v in entry.items() if k not in unitless}
            keys["activity_gbq"] = not unitless
        fields = self.fields(where, entry, keys)
        if fields is None:
            return None
        image = self.get(where, fields, "image", self.path)
        activity_gbq = self.get(where, fields, "activity_gbq", self.activity_gbq)
        isotope = self.get(where, fields, "isotope", lambda at, value: self.parsed(at, value, read_isotope))
        lung_shunt_fraction = self.get(where, fields, "lung_shunt_fraction", self.fraction)
        if len(self.problems) > start:
            return None
        return SpectImage(image=image, activity_gbq=activity_gbq, isotope=isotope,
                          lung_shunt_fraction=lung_shunt_fraction)

    def floating_list(self, where: str, entries: Any, landmarks: Path | None) -> tuple[FloatingImage, ...] | None:
        """The floating images; ``landmarks`` is the reference landmark map to pair with (None: not checked)."""
        start = len(self.problems)
        if not isinstance(entries, list) or not entries:
            self.problem(f"{where}, floating", f"must be a non-empty list of images, got {describe(entries)}")
            return None
        images = [self.floating(where, number, entry, landmarks) for number, entry in enumerate(entries, start=1)]
        for repeated in _repeated([entry.get("id") for entry in entries if isinstance(entry, dict)]):
            self.problem(f"{where}, floating {repeated}", "this floating id is used more than once in the patient")
        return None if len(self.problems) > start else tuple(images)

    def floating(self, patient_where: str, number: int, entry: Any, landmarks: Path | None) -> FloatingImage | None:
        start = len(self.problems)
        where = entry_label(f"{patient_where}, floating", entry, number)
        fields = self.fields(where, entry, _FLOATING_KEYS)
        if fields is None:
            return None
        image_id = self.get(where, fields, "id", self.identifier)
        modality = self.get(where, fields, "modality", lambda at, value: self.choice(at, value, MODALITIES))
        role = self.get(where, fields, "role", self.text, default="")
        paths = {key: self.get(where, fields, key, self.path) for key in ("image", "liver", "landmark_map", "lesions")}
        cnn_liver = self.get(where, fields, "cnn_liver", self.cnn_liver)
        if paths["landmark_map"] is not None and landmarks is not None:
            self.check_pairs(f"{where}, landmark_map", paths["landmark_map"],
                             f"{patient_where}, reference, landmark_map", landmarks)
        if len(self.problems) > start:
            return None
        return FloatingImage(id=image_id, modality=modality, role=role, **paths, cnn_liver=cnn_liver)

    def check_pairs(self, where: str, floating_map: Path, reference_where: str, reference_map: Path) -> None:
        """Report landmark label values found in only one of the two maps."""
        floating_values = self.label_values(where, floating_map)
        reference_values = self.label_values(reference_where, reference_map)
        if floating_values is None or reference_values is None or floating_values == reference_values:
            return
        sides = []
        if floating_values - reference_values:
            sides.append(f"{_values(floating_values - reference_values)} only in this map")
        if reference_values - floating_values:
            sides.append(f"{_values(reference_values - floating_values)} only in the reference map")
        self.problem(where, f"landmark labels do not pair with the reference: {'; '.join(sides)}")


def _reference_landmark_map(folder: Path, reference: Any) -> Path | None:
    """The reference landmark map if the entry names one that exists (its problems are reported elsewhere)."""
    value = reference.get("landmark_map") if isinstance(reference, dict) else None
    path = Path(os.path.abspath(folder / value)) if isinstance(value, str) and value.strip() else None
    return path if path is not None and path.exists() else None


def _values(values: frozenset[int]) -> str:
    return ", ".join(str(v) for v in sorted(values))


def _repeated(ids: list[Any]) -> list[Any]:
    """The hashable values that occur more than once, in order of first occurrence."""
    hashable = [i for i in ids if isinstance(i, (str, int))]
    return [i for n, i in enumerate(hashable) if hashable.count(i) > 1 and i not in hashable[:n]]


def read_manifest(path: str | os.PathLike[str]) -> Cohort:
    """Read and check a cohort manifest (format in the module docstring).

    Raises one :class:`InputError` listing every problem found, one per line,
    each naming the patient, the image and the field.
    """
    path = Path(os.path.abspath(path))
    document, repeated = load_yaml(path, what="cohort manifest")
    reader = _ManifestReader(path.parent)
    reader.problems.extend(repeated)
    cohort = reader.cohort(document)
    if reader.problems or cohort is None:
        raise refusal(reader.problems, what="cohort manifest", prefix=f"{path.name}: ")
    counts = cohort.registration_counts()
    log.info("cohort %s: %d patients, %s registrations", path.name, len(cohort.patients),
             " + ".join(f"{n} {modality}" for modality, n in counts.items()))
    return cohort


# --- writing -------------------------------------------------------------------------
def _image_entry(image: ReferenceImage | FloatingImage, folder: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": relative(image.image, folder), "liver": relative(image.liver, folder)}
    if image.cnn_liver is not None:
        entry["cnn_liver"] = COMPUTE if image.cnn_liver == COMPUTE else relative(Path(image.cnn_liver), folder)
    entry["landmark_map"] = relative(image.landmark_map, folder)
    if image.lesions is not None:
        entry["lesions"] = relative(image.lesions, folder)
    return entry


def _patient_entry(patient: Patient, folder: Path) -> dict[str, Any]:
    shunt = patient.spect.lung_shunt_fraction
    spect = {"image": relative(patient.spect.image, folder), "activity_gbq": patient.spect.activity_gbq,
             "isotope": patient.spect.isotope, **({"lung_shunt_fraction": shunt} if shunt is not None else {})}
    floating = [{"id": image.id, "modality": image.modality, **({"role": image.role} if image.role else {}),
                 **_image_entry(image, folder)} for image in patient.floating]
    return {"id": patient.id, "split": patient.split, "reference": _image_entry(patient.reference, folder),
            "spect": spect, "floating": floating}


def write_manifest(cohort: Cohort, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``cohort`` as a manifest that :func:`read_manifest` reads back; paths relative to its folder.

    Written under a temporary name, then renamed. Refuses an existing file unless ``overwrite``
    (:class:`~sirtreg.errors.OutputExistsError`).
    """
    path = Path(os.path.abspath(path))
    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if cohort.name:
        document["name"] = cohort.name
    document["patients"] = [_patient_entry(patient, path.parent) for patient in cohort.patients]
    path = write_yaml(document, path, overwrite=overwrite)
    log.info("wrote cohort manifest %s (%d patients)", path, len(cohort.patients))
    return path
