"""Assembling the digital SIRT patient: scans, truth in every space, and the patient folder.

One seed gives one patient: the anatomy, the breathing deformation of each
diagnostic scan, the grids, the appearance and every noise realisation are drawn
from ``numpy.random.default_rng(seed)`` in a fixed order, so the same seed gives
byte-identical files. The scans are

- ``maa_ct``: the reference, a low-dose non-contrast CT of the 99mTc-MAA SPECT/CT;
- ``maa_spect``: the 99mTc-MAA SPECT in the reference frame, on its own 4.4 mm grid;
- ``contrast_ct``: a portal-venous contrast CT, deformed by a known motion (breathing,
  the liver sliding 10-20 mm against the body, patient position);
- ``mr_t1``: a T1 MR on a slightly oblique grid, deformed by another known motion.

Every scan comes with its truth: liver mask, lesion label map ("lesion 1", ...),
landmark label map (the lesions and the clip, paired across spaces by value and
name), the organ label map and landmark positions (LPS mm). A floating scan also
has the displacement field of T, which maps reference points to its own points.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.io import write_displacement, write_image
from sirtreg.named_points import Landmarks
from sirtreg.output_folder import OutputFolder, write_atomically
from sirtreg.parallel import in_parallel
from sirtreg.phantom.anatomy import LABEL, ORGAN_LABELS, Anatomy, TissueMaps
from sirtreg.phantom.deformation import Breathing, draw_breathing, liver_sliding_weight
from sirtreg.phantom.drawing import draw_anatomy, lesion_volume_ml
from sirtreg.phantom.points import ScanPoints
from sirtreg.phantom.render import draw_appearance, render_ct, render_mr, render_spect
from sirtreg.phantom.shapes import rotation
from sirtreg.progress import Progress, no_progress

log = logging.getLogger(__name__)

RESOLUTIONS = ("full", "fast")
MANIFEST_NAME = "patient.json"
DISPLACEMENT_CONVENTION = (
    "T(x) = x + u(x) maps a point x of reference (MAA CT) space to floating space; "
    "u is stored in LPS mm on a reference-space grid; warping the floating image samples it at T(x)"
)
SPECT_FWHM_MM = 12.0
_SPECT_SPACING_MM = 4.4196


@dataclass(frozen=True)
class _Protocol:
    """Voxel spacing (x, y, z) in mm and size (x, y, z) of a scan at full resolution."""

    spacing_mm: tuple[float, float, float]
    size: tuple[int, int, int]


_PROTOCOLS = {
    "maa_ct": _Protocol((0.9765625, 0.9765625, 2.5), (384, 320, 104)),
    "contrast_ct": _Protocol((0.8, 0.8, 2.0), (460, 370, 120)),
    "mr_t1": _Protocol((1.5, 1.5, 4.0), (256, 208, 64)),
}


@dataclass(frozen=True, eq=False)
class Scan:
    """One rendered scan with its truth, all on ``image.grid``.

    ``displacement`` is None for the reference; for a floating scan it holds u of
    T(x) = x + u(x) (reference -> this scan) on a reference-space grid.
    """

    name: str
    image: Volume
    liver: LabelVolume
    lesions: LabelVolume
    landmark_map: LabelVolume
    organs: LabelVolume
    landmarks: Landmarks
    displacement: DisplacementField | None = None

    @property
    def modality(self) -> str:
        return self.image.modality


@dataclass(frozen=True, eq=False)
class Spect:
    """The MAA SPECT (counts) and its truth: the noise-free activity before blur, shunt and ratios."""

    image: Volume
    activity: Volume
    lung_shunt_fraction: float
    tumour_to_normal: Mapping[str, float]
    total_counts: int
    fwhm_mm: float


@dataclass(frozen=True, eq=False)
class Patient:
    """A complete digital patient in memory (see :func:`make_patient`)."""

    seed: int
    resolution: str
    anatomy: Anatomy
    reference: Scan
    spect: Spect
    floating: tuple[Scan, ...]
    deformations: Mapping[str, Breathing]
    lesion_volume_ml: Mapping[str, float]
    necrotic_lesion: str | None

    @property
    def scans(self) -> tuple[Scan, ...]:
        return (self.reference, *self.floating)


def _check_resolution(resolution: str) -> float:
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    return 1.0 if resolution == "full" else 2.0


def _centered_grid(center_mm: np.ndarray, *, spacing_mm, size, direction: np.ndarray | None = None) -> Grid:
    matrix = np.eye(3) if direction is None else direction
    half = (np.asarray(size, float) - 1) / 2 * np.asarray(spacing_mm, float)
    origin = np.asarray(center_mm, float) - matrix @ half
    return Grid(size=tuple(int(n) for n in size), spacing_mm=tuple(spacing_mm), origin_mm=tuple(origin),
                direction=tuple(matrix.ravel()))


def _protocol_grid(name: str, center_mm: np.ndarray, factor: float, direction: np.ndarray | None = None) -> Grid:
    protocol = _PROTOCOLS[name]
    size = [max(1, int(round(n / factor))) for n in protocol.size]
    return _centered_grid(center_mm, spacing_mm=[s * factor for s in protocol.spacing_mm], size=size,
                          direction=direction)


def _covering_grid(grid: Grid, spacing_mm: float) -> Grid:
    """An axis-aligned grid of ``spacing_mm`` voxels covering ``grid`` with one voxel to spare."""
    lo, hi = grid.bounds_mm()
    size = np.ceil((hi - lo) / spacing_mm).astype(int) + 3
    return _centered_grid((lo + hi) / 2, spacing_mm=(spacing_mm,) * 3, size=size)


def _half_diagonal_mm(grid: Grid) -> float:
    return 0.5 * float(np.linalg.norm(grid.spacing_mm))


def _tissue_maps(anatomy: Anatomy, grid: Grid, *, points_for: Callable[[Grid], ScanPoints],
                 clip_dilation_mm: float = 0.0, slab_voxels: int = 600_000) -> TissueMaps:
    """Evaluate the anatomy on ``grid`` slab by slab (a few slices at a time: small, fast temporaries; the
    slabs on several threads)."""
    nz, ny, nx = grid.shape
    step = max(1, slab_voxels // (ny * nx))
    out = TissueMaps(np.zeros(grid.shape, np.uint8), np.zeros(grid.shape, np.uint8), np.zeros(grid.shape, np.float32),
                     np.zeros(grid.shape, bool), np.zeros(grid.shape, np.float32), anatomy.necrotic_lesion)
    fields = ("organs", "lesions", "lesion_depth", "liver", "clip_distance_mm")

    def slab(k0: int, k1: int) -> None:
        part = anatomy.evaluate(points_for(grid.crop((0, 0, k0), (nx, ny, k1))), clip_dilation_mm=clip_dilation_mm)
        for name in fields:
            getattr(out, name)[k0:k1] = getattr(part, name)

    in_parallel([lambda k0=k0: slab(k0, min(nz, k0 + step)) for k0 in range(0, nz, step)])
    return out


def _truth(name: str, maps: TissueMaps, grid: Grid, image: Volume, landmarks: Landmarks,
           lesion_names: tuple[str, ...], displacement: DisplacementField | None) -> Scan:
    lesion_labels = {n: lesion_names[n - 1] for n in range(1, len(lesion_names) + 1)}
    landmark_map = maps.lesions.copy()
    clip_value = len(lesion_names) + 1
    landmark_map[maps.organs == LABEL["clip"]] = clip_value
    return Scan(
        name=name,
        image=image,
        liver=LabelVolume(maps.liver.astype(np.uint8), grid, labels={1: "liver"}),
        lesions=LabelVolume(maps.lesions, grid, labels=lesion_labels),
        landmark_map=LabelVolume(landmark_map, grid, labels={**lesion_labels, clip_value: "clip"}),
        organs=LabelVolume(maps.organs, grid, labels=ORGAN_LABELS),
        landmarks=landmarks,
        displacement=displacement,
    )


def make_patient(seed: int = 0, *, resolution: str = "full", progress: Progress | None = None) -> Patient:
    """Draw and render one digital patient in memory (no files written).

    ``resolution`` is "full" (realistic grids) or "fast" (twice the spacing, for tests);
    the anatomy, the deformations and the truth values do not depend on it.
    """
    factor = _check_resolution(resolution)
    report = progress or no_progress
    rng = np.random.default_rng(seed)
    report("anatomy", 0.0)
    anatomy = draw_anatomy(rng)
    lesion_names = tuple(lesion.name for lesion in anatomy.lesions)
    measured = [lesion_volume_ml(lesion, anatomy) for lesion in anatomy.lesions]
    landmark_names = (*lesion_names, "clip")
    reference_points = np.array([c for _, c in measured] + [anatomy.clip_center_mm()])

    body_center = np.array([0.0, (anatomy.body.posterior_mm - anatomy.body.anterior_mm) / 2, -15.0])
    reference_grid = _protocol_grid("maa_ct", body_center + rng.normal(0, 3, 3), factor)
    contrast_grid = _protocol_grid("contrast_ct", body_center + rng.normal(0, [4, 4, 12]), factor)
    mr_direction = rotation(tuple(rng.uniform(-5, 5, 2)) + (float(rng.uniform(-3, 3)),))
    mr_grid = _protocol_grid("mr_t1", body_center + rng.normal(0, [4, 4, 10]), factor, mr_direction)
    pivot = np.asarray(reference_grid.center_mm)
    sliding = liver_sliding_weight(anatomy.liver_sdf, bounds_mm=anatomy.liver_bounds_mm())
    deformations = {name: draw_breathing(rng, pivot_mm=pivot, liver_weight=sliding) for name in ("contrast_ct", "mr_t1")}
    appearance = draw_appearance(rng, n_lesions=len(lesion_names))
    tumour_to_normal = tuple(float(v) for v in rng.uniform(3, 8, len(lesion_names)))
    lung_shunt_fraction = float(rng.uniform(0.025, 0.075))
    total_counts = float(rng.uniform(2e6, 5e6))
    noise = {name: np.random.default_rng(s) for name, s in
             zip(("maa_ct", "contrast_ct", "mr_t1", "maa_spect"), rng.integers(0, 2**63, 4))}

    report("maa_ct", 0.05)
    maps = _tissue_maps(anatomy, reference_grid, points_for=ScanPoints.identity,
                        clip_dilation_mm=_half_diagonal_mm(reference_grid))
    image = render_ct(maps, grid=reference_grid, appearance=appearance, contrast=False, noise_sd_hu=16.0,
                      rng=noise["maa_ct"])
    reference_landmarks = Landmarks(landmark_names, reference_points)
    reference = _truth("maa_ct", maps, reference_grid, image, reference_landmarks, lesion_names, None)
    del maps

    report("maa_spect", 0.3)
    spect = _make_spect(anatomy, reference_grid, factor=1 if resolution == "fast" else 2,
                        lung_shunt_fraction=lung_shunt_fraction, tumour_to_normal=tumour_to_normal,
                        total_counts=total_counts, rng=noise["maa_spect"])

    floating = []
    displacement_grid = _covering_grid(reference_grid, 3.0 * factor)
    for name, grid, fraction in (("contrast_ct", contrast_grid, 0.4), ("mr_t1", mr_grid, 0.8)):
        report(name, fraction)
        breathing = deformations[name]
        maps = _tissue_maps(anatomy, grid, points_for=breathing.scan_points, clip_dilation_mm=_half_diagonal_mm(grid))
        if name == "contrast_ct":
            image = render_ct(maps, grid=grid, appearance=appearance, contrast=True, noise_sd_hu=11.0, rng=noise[name])
        else:
            image = render_mr(maps, grid=grid, appearance=appearance, noise_sd=12.0, rng=noise[name])
        landmarks = Landmarks(landmark_names, breathing.reference_to_floating(reference_points))
        floating.append(_truth(name, maps, grid, image, landmarks, lesion_names,
                               breathing.displacement_on(displacement_grid)))
        del maps
    report("done", 1.0)
    return Patient(
        seed=int(seed), resolution=resolution, anatomy=anatomy, reference=reference,
        spect=Spect(spect.counts, spect.activity, spect.lung_shunt_fraction,
                    dict(zip(lesion_names, spect.tumour_to_normal)), spect.total_counts, SPECT_FWHM_MM),
        floating=tuple(floating), deformations=deformations,
        lesion_volume_ml={n: v for n, (v, _) in zip(lesion_names, measured)},
        necrotic_lesion=lesion_names[anatomy.necrotic_lesion - 1] if anatomy.necrotic_lesion else None,
    )


def _make_spect(anatomy: Anatomy, reference_grid: Grid, *, factor: int, lung_shunt_fraction: float,
                tumour_to_normal: tuple[float, ...], total_counts: float, rng: np.random.Generator):
    """The SPECT on a 4.4 mm grid centred on the reference; activity on a grid ``factor`` times finer."""
    n_slices = int(np.ceil(reference_grid.extent_mm[2] / _SPECT_SPACING_MM)) + 2
    grid = _centered_grid(reference_grid.center_mm, spacing_mm=(_SPECT_SPACING_MM,) * 3, size=(128, 128, n_slices))
    body = anatomy.body
    margin = 3 * SPECT_FWHM_MM
    lo = np.array([-body.half_width_mm - margin, -body.anterior_mm - margin, -np.inf])
    hi = np.array([body.half_width_mm + margin, body.posterior_mm + margin, np.inf])
    start = np.maximum(np.floor(grid.world_to_index(np.maximum(lo, grid.bounds_mm()[0]))), 0).astype(int)
    stop = np.minimum(np.ceil(grid.world_to_index(np.minimum(hi, grid.bounds_mm()[1]))) + 1, grid.size).astype(int)
    spacing = _SPECT_SPACING_MM / factor
    origin = grid.index_to_world(start - 0.5 + 0.5 / factor)
    activity_grid = Grid(size=tuple(int(n) for n in (stop - start) * factor), spacing_mm=(spacing,) * 3,
                         origin_mm=tuple(origin))
    maps = _tissue_maps(anatomy, activity_grid, points_for=ScanPoints.identity)
    return render_spect(maps, activity_grid=activity_grid, grid=grid, offset=tuple(int(s) for s in start),
                        factor=factor, lung_shunt_fraction=lung_shunt_fraction, tumour_to_normal=tumour_to_normal,
                        total_counts=total_counts, fwhm_mm=SPECT_FWHM_MM, rng=rng)


# --- writing ------------------------------------------------------------------------
def _landmark_dict(landmarks: Landmarks) -> dict[str, list[float]]:
    return {name: [round(float(c), 4) for c in point] for name, point in zip(landmarks.names, landmarks.points_mm)}


def _write_scan(scan: Scan, out_dir: Path) -> dict[str, Any]:
    files = {
        "image": (scan.image, f"{scan.name}.nii.gz"),
        "liver": (scan.liver, f"{scan.name}_liver.nii.gz"),
        "lesions": (scan.lesions, f"{scan.name}_lesions.nii.gz"),
        "landmark_map": (scan.landmark_map, f"{scan.name}_landmarks.nii.gz"),
        "organs": (scan.organs, f"{scan.name}_organs.nii.gz"),
    }
    entry: dict[str, Any] = {"name": scan.name, "modality": scan.modality}
    jobs = [lambda volume=volume, filename=filename: write_image(volume, out_dir / filename)
            for volume, filename in files.values()]
    entry.update({key: filename for key, (_, filename) in files.items()})
    entry["landmarks_mm"] = _landmark_dict(scan.landmarks)
    entry["grid"] = scan.image.grid.to_dict()
    if scan.displacement is not None:
        filename = f"{scan.name}_displacement.nii.gz"
        jobs.append(lambda: write_displacement(scan.displacement, out_dir / filename))
        entry["displacement"] = filename
        entry["displacement_convention"] = DISPLACEMENT_CONVENTION
    in_parallel(jobs)  # compression runs without the GIL
    return entry


def write_patient(out_dir: str | os.PathLike[str], *, seed: int = 0, resolution: str = "full",
                  overwrite: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Render one patient and write its folder of NIfTI files and ``patient.json``; returns the manifest.

    Written as a unit (:class:`~sirtreg.output_folder.OutputFolder`): refuses a non-empty ``out_dir``
    unless ``overwrite`` (:class:`OutputExistsError`), and then replaces only an earlier sirtreg output.
    ``progress(step, fraction)`` is called as the work advances. Paths in the
    manifest are relative to ``out_dir``.
    """
    _check_resolution(resolution)
    with OutputFolder(out_dir, overwrite=overwrite, command="phantom") as output:
        out_dir = output.staging
        report = progress or no_progress
        patient = make_patient(seed, resolution=resolution, progress=lambda s, f: report(s, 0.85 * f))
        report("writing", 0.85)
        liver = patient.reference.liver
        liver_ml = float(np.count_nonzero(liver.array)) * liver.grid.voxel_volume_ml
        spect = patient.spect
        write_image(spect.image, out_dir / "maa_spect.nii.gz")
        write_image(spect.activity, out_dir / "maa_spect_activity.nii.gz")
        manifest: dict[str, Any] = {
            "format": "sirtreg-phantom",
            "version": 1,
            "seed": patient.seed,
            "resolution": resolution,
            "labels": {
                "organs": {str(k): v for k, v in ORGAN_LABELS.items()},
                "liver": {"1": "liver"},
                "lesions": {str(k): v for k, v in patient.reference.lesions.labels.items()},
                "landmarks": {str(k): v for k, v in patient.reference.landmark_map.labels.items()},
            },
            "reference": _write_scan(patient.reference, out_dir),
            "spect": {
                "name": "maa_spect",
                "modality": "NM",
                "image": "maa_spect.nii.gz",
                "units": "counts",
                "activity_truth": "maa_spect_activity.nii.gz",
                "lung_shunt_fraction": round(spect.lung_shunt_fraction, 6),
                "tumour_to_normal_ratio": {k: round(v, 4) for k, v in spect.tumour_to_normal.items()},
                "total_counts": spect.total_counts,
                "fwhm_mm": spect.fwhm_mm,
                "necrotic_lesion": patient.necrotic_lesion,
                "grid": spect.image.grid.to_dict(),
            },
            "floating": [_write_scan(scan, out_dir) for scan in patient.floating],
            "truth": {
                "liver_volume_ml": round(liver_ml, 3),
                "lesion_volume_ml": {k: round(v, 3) for k, v in patient.lesion_volume_ml.items()},
            },
        }
        write_atomically(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    log.info("wrote phantom patient (seed %d, %s resolution) to %s", seed, resolution, output.path)
    report("done", 1.0)
    return manifest
