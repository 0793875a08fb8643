"""The pairs of the registration benchmark: real CT subjects moved by known motions, and the digital patient.

Subjects (each a real abdominal CT with its liver; the benchmark reads them from folders given on the
command line and ships none of them):

- ``totalseg``: the example CT of TotalSegmentator (3 mm; its liver label is a TotalSegmentator
  prediction), Apache-2.0. Folder ``--data`` (``totalsegmentator/``).
- ``auer``: the CT-derived attenuation map of a Lu-177 DOTATATE patient (3.9 x 3.9 x 4.4 mm,
  Interfile) with its liver label; MIT. Folder ``--data`` (``auer_phantom/``).
- ``ircadb01``, ``ircadb17``: patients 1.1 and 1.17 of 3D-IRCADb-01 (IRCAD), portal-venous CT with
  manual liver and tumour contours, converted to NIfTI (CT in HU; label 1 liver, 2 tumour, 3 cyst).
  CC BY-NC-ND 4.0: non-commercial use, no redistribution of the data or of converted copies. IRCAD
  distributes the DICOM originals; the NIfTI files used here are those of public research repositories on
  GitHub (patient 1.1: qk1512/IPCV_1, patient 1.17: alireza-da/TraumaDetectionProject). Folder
  ``--public`` (``ircadb_1_1/nifti/ircadb1_01_{ct,label}.nii.gz``,
  ``ircadb_1_17/nifti/ircadb1_17_{ct,label}.nii.gz``).

Each subject's CT is cropped to the body and brought to at least 1.5 mm voxels (Gaussian anti-aliasing
first); the floating scans are rendered from all of it, and the reference (the MAA CT's role) is its
part around the liver +- 50 mm cranio-caudally. Where a subject
has no lesions (``totalseg``, ``auer``), six are painted into its liver (1-150 mL, two at the liver
edge; :func:`sirtreg.phantom.known_pair.paint_lesions`); IRCADb's real tumours (and cyst) of at least
0.3 mL are the landmarks there.

Four floating scans per subject, one per motion and modality (see ``VARIANTS``), each from its own
seed, drawn with :mod:`sirtreg.phantom.known_pair`:

- ``ct-slide``: CT, the liver sliding 10-20 mm against the body wall, small repositioning, local
  B-spline deformation of 3-6 mm;
- ``ct-cut``: CT, repositioning (up to 5 degrees, 30 mm), B-spline, the field of view cutting off the
  top 3-8 % of the liver;
- ``mr-slide``: MR-like (non-monotonic remapping, +-30 % bias field, Rician noise), sliding, B-spline;
- ``mr-thick``: MR-like on 5 mm slices, repositioning, sliding, B-spline, the field of view cutting off
  the bottom 3-8 % of the liver.

Plus the digital patient (seed 0, full resolution), its contrast CT and its MR (``phantom-ct``,
``phantom-mr``).

The halves were fixed before any tuning: the tuning half (``totalseg``, ``auer`` and the digital
patient, whose pairs chose the earlier defaults) and the reporting half (both IRCADb patients, real
tumours, never looked at while tuning).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.io import read_displacement, read_image, read_labels, write_displacement, write_image
from sirtreg.phantom.known_pair import draw_motion, make_known_pair, paint_lesions
from sirtreg.resample import resample

SUBJECTS = ("totalseg", "auer", "ircadb01", "ircadb17")
TUNING_SUBJECTS = ("totalseg", "auer", "phantom")
VARIANTS = ("ct-slide", "ct-cut", "mr-slide", "mr-thick")
PHANTOM_PAIRS = ("phantom-ct", "phantom-mr")
MIN_SPACING_MM = 1.5
Z_MARGIN_MM = 50.0
MIN_LESION_ML = 0.3
PAINTED_ML = (1.0, 4.0, 15.0, 40.0, 150.0, 8.0)
PAINTED_AT_EDGE = (False, True, False, True, False, False)


def all_pairs() -> list[str]:
    return [f"{s}/{v}" for s in SUBJECTS for v in VARIANTS] + list(PHANTOM_PAIRS)


def half_of(pair: str) -> str:
    subject = pair.split("/")[0].split("-")[0]
    return "tuning" if subject in TUNING_SUBJECTS else "reporting"


@dataclass
class Pair:
    """Images, labels and truth of one pair (each on its own grid). Lesions: one value per landmark."""

    name: str
    reference: Volume
    floating: Volume
    reference_liver: LabelVolume  # value 1
    floating_liver: LabelVolume
    reference_landmarks: LabelVolume
    floating_landmarks: LabelVolume
    truth: DisplacementField  # reference -> floating
    description: dict

    FILES = ("reference", "floating", "reference_liver", "floating_liver", "reference_landmarks",
             "floating_landmarks")

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.FILES:
            write_image(getattr(self, name), folder / f"{name}.nii.gz", overwrite=True)
        write_displacement(self.truth, folder / "truth.nii.gz", overwrite=True)
        (folder / "pair.json").write_text(json.dumps(self.description, indent=1))

    @classmethod
    def load(cls, name: str, folder: Path) -> Pair:
        volumes = {n: (read_labels if "liver" in n or "landmarks" in n else read_image)(folder / f"{n}.nii.gz")
                   for n in cls.FILES}
        return cls(name, truth=read_displacement(folder / "truth.nii.gz"),
                   description=json.loads((folder / "pair.json").read_text()), **volumes)


# --- subjects ---------------------------------------------------------------------
@dataclass
class Subject:
    name: str
    ct: Volume  # HU
    liver: LabelVolume  # value 1, lesions included
    lesions: LabelVolume | None  # one value per lesion, or None: painted


def _interfile(header: Path) -> Volume:
    """An Interfile volume (unsigned 16 bit, axial), as the Auer phantom stores it; orientation as stored."""
    fields = {}
    for line in header.read_text().splitlines():
        if ":=" in line:
            key, value = line.split(":=", 1)
            fields[key.strip().lstrip("!").lower()] = value.strip()
    size = (int(fields["matrix size [1]"]), int(fields["matrix size [2]"]), int(fields["number of slices"]))
    pixel = float(fields["scaling factor (mm/pixel) [1]"])
    spacing = (pixel, float(fields["scaling factor (mm/pixel) [2]"]), float(fields["slice thickness (pixels)"]))
    array = np.fromfile(header.with_name(fields["name of data file"]), "<u2").reshape(size[::-1])
    return Volume(array, Grid(size, spacing))


def _load_subject(name: str, data: Path, public: Path) -> Subject:
    if name == "totalseg":
        folder = data / "totalsegmentator"
        ct = read_image(folder / "example_ct.nii.gz")
        liver = read_labels(folder / "example_seg_fast_force_split.nii.gz").array == 5
        return Subject(name, ct, LabelVolume(liver.astype(np.uint8), ct.grid), None)
    if name == "auer":
        folder = data / "auer_phantom"
        attenuation = _interfile(folder / "patient15_LuDOTATATE_attn.h33")
        source = _interfile(folder / "patient15_LuDOTATATE_src.h33")
        # the map stores about 1000 x mu / mu_water: air 0, water 1000, so HU = value - 1000
        ct = attenuation.with_array(attenuation.array.astype(np.float32) - 1000.0)
        return Subject(name, ct, LabelVolume((source.array == 15000).astype(np.uint8), ct.grid), None)
    number = {"ircadb01": "1", "ircadb17": "17"}[name]
    folder = public / f"ircadb_1_{number}" / "nifti"
    ct = read_image(folder / f"ircadb1_{int(number):02d}_ct.nii.gz")
    label = read_labels(folder / f"ircadb1_{int(number):02d}_label.nii.gz").array
    components, count = ndimage.label(label >= 2)
    lesions = np.zeros(label.shape, np.uint8)
    voxel_ml = ct.grid.voxel_volume_ml
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
    for value, component in enumerate(np.flatnonzero(sizes * voxel_ml >= MIN_LESION_ML) + 1, start=1):
        lesions[components == component] = value
    return Subject(name, ct, LabelVolume((label > 0).astype(np.uint8), ct.grid), LabelVolume(lesions, ct.grid))


def subject_available(name: str, data: Path, public: Path) -> bool:
    paths = {"totalseg": data / "totalsegmentator" / "example_ct.nii.gz",
             "auer": data / "auer_phantom" / "patient15_LuDOTATATE_attn.h33",
             "ircadb01": public / "ircadb_1_1" / "nifti" / "ircadb1_01_ct.nii.gz",
             "ircadb17": public / "ircadb_1_17" / "nifti" / "ircadb1_17_ct.nii.gz"}
    return paths[name].is_file()


def _source_grid(ct: Volume) -> Grid:
    """The body's box in the subject's CT, at voxels of at least ``MIN_SPACING_MM``."""
    body = ndimage.binary_opening(ct.array > -500, iterations=2)
    k, j, i = np.nonzero(body)
    box = ct.grid.crop((i.min(), j.min(), k.min()), (i.max() + 1, j.max() + 1, k.max() + 1))
    return box.with_spacing(tuple(max(s, MIN_SPACING_MM) for s in box.spacing_mm))


def _to_grid(volume: Volume, grid: Grid) -> Volume:
    """Gaussian anti-aliasing (sigma = 0.4 x the new spacing where coarser), then linear resampling."""
    ratio = np.asarray(grid.spacing_mm) / np.asarray(volume.grid.spacing_mm)
    sigma = np.where(ratio > 1.0, 0.4 * ratio, 0.0)[::-1]
    smooth = ndimage.gaussian_filter(volume.array.astype(np.float32), sigma) if np.any(sigma) else volume.array
    return resample(volume.with_array(smooth.astype(np.float32)), grid, fill_value=-1024.0)


@dataclass
class PreparedSubject:
    """A subject's CT (HU) with its liver (1) and landmarks (one value per lesion), all on one grid, and the
    box (start, stop voxel indices) of the reference: the liver +- ``Z_MARGIN_MM`` cranio-caudally."""

    ct: Volume
    liver: LabelVolume
    lesions: LabelVolume
    reference_box: tuple[np.ndarray, np.ndarray]


def prepare_subject(name: str, data: Path, public: Path) -> PreparedSubject:
    subject = _load_subject(name, data, public)
    grid = _source_grid(subject.ct)
    ct = _to_grid(subject.ct, grid)
    liver = resample(subject.liver, grid, label_mode="one-hot")
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if subject.lesions is None:
        ct, lesions = paint_lesions(ct, liver.array > 0, rng, volumes_ml=PAINTED_ML, at_edge=PAINTED_AT_EDGE)
    else:
        lesions = resample(subject.lesions, grid, label_mode="one-hot")
    names = {v: f"lesion {v}" for v in lesions.present_labels()}
    z = np.nonzero(liver.array)[0]
    margin = int(np.ceil(Z_MARGIN_MM / grid.spacing_mm[2]))
    box = (np.array([0, 0, max(z.min() - margin, 0)]),
           np.array([*grid.size[:2], min(z.max() + margin + 1, grid.size[2])]))
    return PreparedSubject(ct.with_array(ct.array.astype(np.float32)),
                           LabelVolume((liver.array > 0).astype(np.uint8), grid, labels={1: "liver"}),
                           LabelVolume(lesions.array, grid, labels=names), box)


# --- pairs --------------------------------------------------------------------------
SLIDING = dict(sliding_mm=(10.0, 20.0), bspline_mm=(3.0, 6.0))
VARIANT_SETTINGS = {
    "ct-slide": dict(modality="CT", spacing_mm=(1.2, 1.2, 2.0), truncation="none",
                     motion=dict(rotation_deg=2.0, translation_mm=10.0, **SLIDING)),
    "ct-cut": dict(modality="CT", spacing_mm=(1.5, 1.5, 3.0), truncation="top",
                   motion=dict(rotation_deg=5.0, translation_mm=30.0, bspline_mm=(3.0, 6.0))),
    "mr-slide": dict(modality="MR", spacing_mm=(1.5, 1.5, 3.0), truncation="none",
                     motion=dict(rotation_deg=2.0, translation_mm=10.0, **SLIDING)),
    "mr-thick": dict(modality="MR", spacing_mm=(1.5, 1.5, 5.0), truncation="bottom",
                     motion=dict(rotation_deg=5.0, translation_mm=30.0, **SLIDING)),
}


def make_pair(name: str, data: Path, public: Path) -> Pair:
    if name in PHANTOM_PAIRS:
        return _phantom_pair(name)
    subject, variant = name.split("/")
    prepared = prepare_subject(subject, data, public)
    settings = VARIANT_SETTINGS[variant]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    motion = draw_motion(prepared.ct, prepared.liver.array > 0, rng, **settings["motion"])
    cut = float(rng.uniform(0.03, 0.08)) if settings["truncation"] != "none" else 0.0
    known = make_known_pair(prepared.ct, prepared.liver, prepared.lesions, motion, modality=settings["modality"],
                            spacing_mm=settings["spacing_mm"], rng=rng, truncation=settings["truncation"],
                            cut_fraction=cut, reference_box=prepared.reference_box)
    # as in the paper, the landmarks are those seen in both scans: a lesion the field of view cuts off
    # entirely is drawn on neither
    seen = np.isin(known.reference_lesions.array, known.floating_lesions.present_labels())
    reference_lesions = known.reference_lesions.with_array(np.where(seen, known.reference_lesions.array, 0))
    description = {"subject": subject, "variant": variant, **known.description,
                   "lesions_ml": {str(v): round(reference_lesions.volume_ml(v), 2)
                                  for v in reference_lesions.present_labels()}}
    return Pair(name, known.reference, known.floating, known.reference_liver, known.floating_liver,
                reference_lesions, known.floating_lesions, known.truth, description)


def _phantom_pair(name: str) -> Pair:
    from sirtreg.phantom import make_patient

    patient = make_patient(0, resolution="full")
    scan = {"phantom-ct": patient.floating[0], "phantom-mr": patient.floating[1]}[name]
    reference = patient.reference
    return Pair(name, reference.image, scan.image, reference.liver, scan.liver, reference.landmark_map,
                scan.landmark_map, scan.displacement, {"subject": "phantom", "variant": scan.name})


def cached_pair(name: str, data: Path, public: Path, work: Path) -> Pair:
    """The pair from ``work`` (made once, then read back: the same files for every method)."""
    folder = work / "pairs" / name.replace("/", "_")
    if not (folder / "pair.json").is_file():
        make_pair(name, data, public).save(folder)
    return Pair.load(name, folder)
