"""Registration accuracy, runtime and peak memory: our three presets beside itk-elastix and ANTsPy.

Usage: python benchmarks/registration.py [--data DIR] [--pairs NAME ...] [--methods NAME ...] [--threads N]

Needs the peers: ``.venv/bin/pip install -e ".[benchmark]"`` (itk-elastix, antspyx).

Pairs, each with known truth (floating labels are the reference labels moved by
the known deformation):

- ``phantom-ct`` / ``phantom-mr``: the seed-0 digital patient, contrast CT and
  MR registered to the MAA CT (landmarks: its lesions and clip).
- ``real-ct`` / ``real-mr``: the real abdominal CT of ``totalsegmentator/example_ct``
  with three hypodense lesions painted into its liver, against itself moved by
  a known smooth deformation (small affine + sine waves of 80-160 mm, up to
  about 12 mm) on another grid; ``real-mr`` also remaps the floating
  intensities non-monotonically (fat bright, water dark), adds a bias field and
  noise, like a T1 MR.

Every method runs in a fresh process (so peak resident memory is its own, imports
included) on ``--threads`` threads, and returns its reference->floating
displacement field; one evaluation code then computes liver DSC and MSD, landmark
MCD, RMSD and the percentage of liver voxels with Jacobian <= 0 for all methods.
Peers run on the whole images with their usual settings (elastix: default affine
and B-spline maps with Mattes mutual information; ANTs: ``SyN`` with Mattes MI);
ours work on the liver plus a 20 mm margin, which is part of the method.
Runtime is the registration alone: modules imported, images in memory, field out.
Timings depend on the machine and on what else runs on it: run it on an idle one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from memory import peak_memory_mb

if TYPE_CHECKING:
    from sirtreg.geometry import DisplacementField, LabelVolume, Volume

PAIRS = ("phantom-ct", "phantom-mr", "real-ct", "real-mr")
METHODS = ("unregistered", "truth", "elastix", "ants", "ours image", "ours liver", "ours liver+landmarks")
PEERS = ("elastix", "ants")


# --- pairs -----------------------------------------------------------------------
@dataclass
class Pair:
    """Images and truth of one benchmark pair (all on their own grids)."""

    name: str
    reference: Volume
    floating: Volume
    reference_liver: LabelVolume  # value 1
    floating_liver: LabelVolume
    reference_landmarks: LabelVolume  # one value per landmark
    floating_landmarks: LabelVolume
    truth: DisplacementField  # reference -> floating


def phantom_pair(name: str):
    from sirtreg.phantom import make_patient

    patient = make_patient(0, resolution="full")
    scan = {"phantom-ct": patient.floating[0], "phantom-mr": patient.floating[1]}[name]
    reference = patient.reference
    return Pair(name, reference.image, scan.image, reference.liver, scan.liver, reference.landmark_map,
                scan.landmark_map, scan.displacement)


def _sphere_centres(liver: np.ndarray, grid, rng: np.random.Generator, *, n: int, depth_mm: float,
                    apart_mm: float) -> np.ndarray:
    """``n`` points (LPS mm) at least ``depth_mm`` inside the liver and ``apart_mm`` from each other."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(liver, sampling=grid.spacing_mm[::-1])
    k, j, i = np.nonzero(depth >= depth_mm)
    candidates = grid.index_to_world(np.stack([i, j, k], axis=1))
    chosen: list[np.ndarray] = []
    for index in rng.permutation(len(candidates)):
        point = candidates[index]
        if all(np.linalg.norm(point - other) >= apart_mm for other in chosen):
            chosen.append(point)
        if len(chosen) == n:
            return np.array(chosen)
    raise RuntimeError("the liver is too small for the benchmark lesions")


def _sine_displacement(rng: np.random.Generator):
    """v(points) in mm: a small affine plus three smooth sine fields (one per axis)."""
    from scipy.spatial.transform import Rotation

    from sirtreg.phantom.shapes import sine_field

    matrix = Rotation.from_euler("xyz", rng.uniform(-3, 3, 3), degrees=True).as_matrix() - np.eye(3)
    shift = rng.uniform(-6, 6, 3)
    waves = [sine_field(rng, n_waves=4, wavelength_mm=(80.0, 160.0), rms=3.5) for _ in range(3)]

    def displacement(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        x, y, z = (points[..., c].astype(np.float32) for c in range(3))
        smooth = np.stack([wave(x, y, z) for wave in waves], axis=-1)
        return (points - centre) @ matrix.T + shift + smooth

    return displacement


def _mr_like(ct: np.ndarray, rng: np.random.Generator, grid) -> np.ndarray:
    """A T1-like MR from CT numbers: non-monotonic tissue mapping, bias field and noise."""
    hu = [-1000, -300, -120, -60, -10, 20, 45, 60, 80, 200, 600, 1500]
    mr = [0, 40, 820, 780, 180, 260, 420, 470, 380, 300, 120, 60]
    image = np.interp(ct, hu, mr).astype(np.float32)
    points = grid.world_coordinates()
    centre = grid.center_mm.astype(np.float32)
    bias = 1.0 + 0.15 * np.sin((points[..., 0] - centre[0]) / 150.0) * np.cos((points[..., 2] - centre[2]) / 200.0)
    return (image * bias + rng.normal(0, 15, image.shape)).astype(np.float32)


def real_pair(name: str, data: Path):
    from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
    from sirtreg.io import read_image, read_labels
    from sirtreg.resample import sample_at

    rng = np.random.default_rng(11)
    ct = read_image(data / "totalsegmentator" / "example_ct.nii.gz")
    organs = read_labels(data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz")
    grid = ct.grid
    liver = organs.array == 5
    centres = _sphere_centres(liver, grid, rng, n=3, depth_mm=16.0, apart_mm=45.0)
    points = grid.world_coordinates(np.float64)
    landmarks = np.zeros(grid.shape, np.uint8)
    image = ct.array.astype(np.float32).copy()
    for value, (centre, radius) in enumerate(zip(centres, (11.0, 9.0, 13.0)), start=1):
        distance = np.linalg.norm(points - centre, axis=-1)
        landmarks[distance <= radius] = value
        image -= 45.0 * np.clip(radius + 1.5 - distance, 0.0, 3.0) / 3.0  # hypodense, 3 mm soft edge
    reference = Volume(image, grid, modality="CT")
    reference_liver = LabelVolume(liver.astype(np.uint8), grid, labels={1: "liver"})
    names = {v: f"lesion {v}" for v in (1, 2, 3)}
    reference_landmarks = LabelVolume(landmarks, grid, labels=names)

    # the floating scan shows at y what the reference shows at S(y) = y + v(y), on a grid of its own
    displacement = _sine_displacement(rng)
    centre = grid.center_mm
    spacing = (2.5, 2.5, 4.0) if name == "real-mr" else (2.0, 2.0, 2.5)
    size = tuple(round(e / s) for e, s in zip(grid.extent_mm, spacing))
    floating_grid = Grid(size, spacing, tuple(np.asarray(grid.origin_mm) + rng.uniform(-5, 5, 3)), grid.direction)
    source = floating_grid.world_coordinates(np.float64)
    source = source + displacement(source, centre)
    floating_ct = sample_at(reference, source, fill_value=-1000.0).astype(np.float32)
    if name == "real-mr":
        floating_image = Volume(_mr_like(floating_ct, rng, floating_grid), floating_grid, modality="MR")
    else:
        floating_image = Volume(floating_ct + rng.normal(0, 12, floating_ct.shape).astype(np.float32),
                                floating_grid, modality="CT")

    def moved(labels):
        one_hot = [sample_at(Volume((labels.array == v).astype(np.float32), grid), source)
                   for v in labels.present_labels()]
        best = np.argmax(np.stack([np.full(floating_grid.shape, 0.5, np.float32), *one_hot]), axis=0)
        values = np.array([0, *labels.present_labels()], np.uint8)
        return LabelVolume(values[best], floating_grid, labels=dict(labels.labels))

    # truth T = S^-1 on the reference grid, by fixed-point iteration T(x) = x - v(T(x))
    target = grid.world_coordinates(np.float64)
    mapped = target.copy()
    for _ in range(30):
        mapped = target - displacement(mapped, centre)
    truth = DisplacementField((mapped - target).astype(np.float32), grid)
    return Pair(name, reference, floating_image, reference_liver, moved(reference_liver), reference_landmarks,
                moved(reference_landmarks), truth)


# --- methods (each in its own process) ---------------------------------------------
def _ours(pair: Pair, guidance: str):
    from sirtreg.register import guidance_labels, preset, register

    if guidance == "image":
        result = register(pair.reference, pair.floating, settings=preset("image"),
                          reference_labels=pair.reference_liver)
    else:
        landmarks = guidance == "liver+landmarks"
        reference_labels = guidance_labels(pair.reference_liver, pair.reference_landmarks if landmarks else None)
        floating_labels = guidance_labels(pair.floating_liver, pair.floating_landmarks if landmarks else None)
        result = register(pair.reference, pair.floating, settings=preset(guidance),
                          reference_labels=reference_labels, floating_labels=floating_labels)
    return result.displacement


def _itk_image(volume):
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.grid.spacing_mm])
    image.SetOrigin([float(o) for o in volume.grid.origin_mm])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.grid.direction_matrix)))
    return image


def _elastix(pair: Pair):
    import itk

    from sirtreg.geometry import DisplacementField

    reference, floating = _itk_image(pair.reference), _itk_image(pair.floating)
    parameters = itk.ParameterObject.New()
    for kind in ("affine", "bspline"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(kind, 3))
    # fixed = reference, moving = floating: elastix's transform maps reference points to floating points
    _, transform = itk.elastix_registration_method(reference, floating, parameter_object=parameters,
                                                   log_to_console=False)
    with tempfile.TemporaryDirectory() as folder:  # transformix writes a copy of the field there
        field = itk.transformix_deformation_field(floating, transform, output_directory=folder)
    return DisplacementField(np.asarray(itk.array_from_image(field), dtype=np.float32), pair.reference.grid)


def _ants_image(volume):
    import ants

    return ants.from_numpy(np.ascontiguousarray(volume.array.transpose(2, 1, 0), dtype=np.float32),
                           origin=[float(o) for o in volume.grid.origin_mm],
                           spacing=[float(s) for s in volume.grid.spacing_mm],
                           direction=np.asarray(volume.grid.direction_matrix))


def _ants(pair: Pair):
    import ants

    from sirtreg.io.images import read_displacement_file

    reference, floating = _ants_image(pair.reference), _ants_image(pair.floating)
    result = ants.registration(fixed=reference, moving=floating, type_of_transform="SyN",
                               aff_metric="mattes", syn_metric="mattes")
    with tempfile.TemporaryDirectory() as folder:
        composed = ants.apply_transforms(fixed=reference, moving=floating, transformlist=result["fwdtransforms"],
                                         compose=str(Path(folder) / "composed_"))
        field = read_displacement_file(composed)
    field.grid.require_same(pair.reference.grid, what="the ANTs field and the reference")
    return field


def _run_method(method: str, pair: Pair, threads: int, queue) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import importlib

    import torch

    torch.set_num_threads(threads)
    # imports are not registration time: itk takes about 10 s, ants 2 s, sirtreg.register 0.5 s
    importlib.import_module({"elastix": "itk", "ants": "ants"}.get(method, "sirtreg.register"))
    if method == "elastix":
        import itk

        itk.ParameterObject  # noqa: B018 - itk loads its modules lazily, at first use
    start = time.perf_counter()
    try:
        if method in PEERS:
            field = {"elastix": _elastix, "ants": _ants}[method](pair)
        else:
            field = _ours(pair, method.removeprefix("ours "))
        problem = ""
    except Exception as exc:  # noqa: BLE001 - a failing peer is a row in the table, not the end of the benchmark
        field, problem = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    queue.put({"field": field, "seconds": seconds, "problem": problem,
               "peak_mb": peak_memory_mb()})


def run_method(method: str, pair: Pair, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run_method, args=(method, pair, threads, queue))
    process.start()
    outcome = queue.get()
    process.join()
    return outcome


# --- evaluation --------------------------------------------------------------------
def evaluate(pair: Pair, field) -> dict:
    from sirtreg.geometry import DisplacementField
    from sirtreg.metrics import jacobian_statistics
    from sirtreg.register import registration_quality
    from sirtreg.resample import mask_box, resample

    if field is None:  # unregistered: the identity
        field = DisplacementField.zeros(pair.reference.grid.with_spacing((4.0,) * 3))
    quality = registration_quality(field, reference_liver=pair.reference_liver, floating_liver=pair.floating_liver,
                                   reference_landmarks=pair.reference_landmarks,
                                   floating_landmarks=pair.floating_landmarks)
    liver_on_field = resample(pair.reference_liver, field.grid).array > 0
    start, stop = mask_box(liver_on_field, field.grid, margin_mm=5.0)
    box = tuple(slice(a, b) for a, b in zip(start[::-1], stop[::-1]))
    liver_field = DisplacementField(field.array[box], field.grid.crop(start, stop))
    jacobian = jacobian_statistics(liver_field, liver_on_field[box])
    return {"dsc": quality.liver_dsc, "msd_mm": quality.liver_msd_mm,
            "mcd_mm": float(np.mean(list(quality.mcd_mm.values()))), "rmsd_mm": quality.rmsd_mm,
            "folding_percent": jacobian.percent_folding}


def _number(value: float, width: int, digits: int) -> str:
    """``value`` right-aligned in ``width`` characters, or "-" where there is none (NaN)."""
    return f"{'-':>{width}}" if np.isnan(value) else f"{value:{width}.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("SIRTREG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--pairs", nargs="+", choices=PAIRS, default=list(PAIRS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    header = (f"{'pair':<11} {'method':<21} {'time s':>7} {'x peer':>7} {'peak MB':>8} {'DSC':>6} {'MSD mm':>7} "
              f"{'MCD mm':>7} {'RMSD mm':>8} {'J<=0 %':>7}")
    print(f"{args.threads} thread(s). x peer = time of the faster peer / time of the method; MCD = mean over "
          "landmarks; J<=0 = % of liver voxels with Jacobian <= 0")
    print(header)
    print("-" * len(header))
    for name in args.pairs:
        if name.startswith("real") and not (args.data / "totalsegmentator" / "example_ct.nii.gz").is_file():
            print(f"{name:<11} skipped: no example CT under {args.data}")
            continue
        pair = phantom_pair(name) if name.startswith("phantom") else real_pair(name, args.data)
        fastest_peer = float("nan")
        for method in args.methods:
            if method in ("unregistered", "truth"):
                outcome = {"field": pair.truth if method == "truth" else None, "seconds": float("nan"),
                           "peak_mb": float("nan"), "problem": ""}
            else:
                outcome = run_method(method, pair, args.threads)
            if outcome["problem"]:
                print(f"{name:<11} {method:<21} failed: {outcome['problem']}", flush=True)
                continue
            scores = evaluate(pair, outcome["field"])
            if method in PEERS:
                fastest_peer = np.nanmin([fastest_peer, outcome["seconds"]])
            ratio = fastest_peer / outcome["seconds"] if method.startswith("ours") else float("nan")
            print(f"{name:<11} {method:<21} {_number(outcome['seconds'], 7, 1)} {_number(ratio, 7, 1)} "
                  f"{_number(outcome['peak_mb'], 8, 0)} "
                  f"{scores['dsc']:6.3f} {scores['msd_mm']:7.2f} {scores['mcd_mm']:7.2f} {scores['rmsd_mm']:8.2f} "
                  f"{scores['folding_percent']:7.2f}", flush=True)
        print()


if __name__ == "__main__":
    main()
