"""What the command line costs beside the work itself: `sirtreg register` against its engine, `--help`, the demo.

Usage:
    python benchmarks/cli.py [--work DIR] [--skip-demo] [--demo-folder DIR ...] [--repeat N]

Part 1, a registration from the command line. The pair: the digital patient's MAA CT and contrast CT
(seed 0, "fast" resolution) resampled onto 128 x 128 x 128 grids of 1.5 mm around each liver, with
their livers, landmark maps and lesions (written into ``--work``/pair). Printed, as the median of
``--repeat`` runs:

- engine: the wall time of ``sirtreg.register.register`` alone (``liver+landmarks`` guidance, the CLI's
  settings), in a fresh process that has read its inputs, as a Python program calling the library gets it,
  and again with the command line's allocator setting (:mod:`sirtreg.allocator`), which makes it faster
  when fresh memory is dear: the CLI's cost is measured against the faster of the two;
- CLI: the wall time of ``sirtreg register ... --floating-lesions ...`` (a new process: imports, reading,
  the registration, warping the image, liver, landmarks and lesions, writing, the overlay PNG, exit). The
  command computes the reference's side of the pyramid while PyTorch loads, so the time its
  ``registration.json`` reports is less than the engine's alone and no measure of the command's cost;
- the CLI's cost beside each engine time, and ``sirtreg --help``.

Part 2, the demo (unless ``--skip-demo``): ``sirtreg demo`` on 2 threads in a new folder; its wall time,
the stage times of its run (``results.json``: CNN segmentations, registrations, carrying and writing of
each floating image, dose, tables, report) and the rest (the digital patient, start-up). Then, for this
demo and every ``--demo-folder`` (e.g. one written by an earlier version), the registration error of each
floating image against the digital patient's known deformation: the RMSD (mm) over the MAA CT liver
voxels of the distance between the registration's T(x) and the true T(x). Two versions agree when these
differ by less than 0.1 mm.

Time it on an idle machine: a second heavy process on 2 cores inflates PyTorch times many fold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import read_displacement, read_labels, write_image
from sirtreg.register.transforms import read_affine

PAIR_SHAPE = (128, 128, 128)
PAIR_SPACING_MM = 1.5
BIN = Path(sys.executable).parent
THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}

ENGINE_SCRIPT = """
import sys, time
if sys.argv[2] == "allocator":
    from sirtreg.allocator import reuse_freed_memory
    reuse_freed_memory()
from sirtreg.io import read_image, read_labels
from sirtreg.register import Annotated, preset, register_guided
folder = sys.argv[1]
sides = [Annotated(read_image(folder + f"/{side}.nii.gz"), read_labels(folder + f"/{side}_liver.nii.gz"),
                   read_labels(folder + f"/{side}_landmarks.nii.gz")) for side in ("reference", "floating")]
start = time.perf_counter()
register_guided(*sides, preset("liver+landmarks"))
print(time.perf_counter() - start)
"""


# --- part 1: one registration ----------------------------------------------------------------
def _around_liver(volume: Volume, liver: LabelVolume) -> Grid:
    """A 128^3 grid of 1.5 mm, axis-aligned like ``volume``, centred on the liver's mass centre."""
    half = (np.asarray(PAIR_SHAPE) - 1) / 2.0 * PAIR_SPACING_MM
    centre = liver.mass_centre_mm()
    origin = centre - volume.grid.direction_matrix @ half
    return Grid(PAIR_SHAPE, (PAIR_SPACING_MM,) * 3, tuple(origin), volume.grid.direction)


def write_pair(folder: Path) -> Path:
    """The 128^3, 1.5 mm CT pair of the digital patient (see the module docstring), written once."""
    from sirtreg.phantom import make_patient
    from sirtreg.resample import resample

    if (folder / "floating_lesions.nii.gz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    patient = make_patient(0, resolution="fast")
    scans = {"reference": patient.reference, "floating": patient.floating[0]}  # MAA CT, contrast CT
    for side, scan in scans.items():
        grid = _around_liver(scan.image, scan.liver)
        write_image(resample(scan.image, grid, fill_value=-1000.0), folder / f"{side}.nii.gz")
        for name in ("liver", "landmarks", "lesions"):
            labels = getattr(scan, name if name != "landmarks" else "landmark_map")
            write_image(resample(labels, grid, label_mode="nearest"), folder / f"{side}_{name}.nii.gz")
    return folder


def _wall(command: list[str], environment: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def registration_costs(work: Path, repeat: int) -> dict[str, float]:
    """Median engine times (library default, allocator setting), CLI wall time and `--help` time over ``repeat``
    runs (s), each run one of each, in turn."""
    pair = write_pair(work / "pair")
    environment = {**os.environ, **THREADS, "COLUMNS": "200"}
    times: dict[str, list[float]] = {"engine": [], "allocator": [], "cli": [], "help": []}
    for run in range(repeat):
        for mode in ("engine", "allocator"):
            output = _wall([sys.executable, "-c", ENGINE_SCRIPT, str(pair), mode], environment)[1]
            times[mode].append(float(output.split()[-1]))
        times["cli"].append(_wall([
            str(BIN / "sirtreg"), "register", "--reference", str(pair / "reference.nii.gz"),
            "--floating", str(pair / "floating.nii.gz"), "-o", str(work / f"register-{run}"), "--overwrite",
            "--guidance", "liver+landmarks", "--reference-liver", str(pair / "reference_liver.nii.gz"),
            "--floating-liver", str(pair / "floating_liver.nii.gz"),
            "--reference-landmarks", str(pair / "reference_landmarks.nii.gz"),
            "--floating-landmarks", str(pair / "floating_landmarks.nii.gz"),
            "--floating-lesions", str(pair / "floating_lesions.nii.gz")], environment)[0])
        times["help"].append(_wall([str(BIN / "sirtreg"), "--help"], environment)[0])
    return {name: statistics.median(values) for name, values in times.items()}


# --- part 2: the demo -----------------------------------------------------------------------
def _stage(name: str) -> str:
    return name.split(" ", 1)[0]


def demo_costs(folder: Path) -> tuple[float, dict[str, float]]:
    """Wall time of `sirtreg demo -o folder` (s) and its stage times."""
    environment = {**os.environ, **THREADS}
    seconds, _ = _wall([str(BIN / "sirtreg"), "demo", str(folder)], environment)
    results = json.loads((folder / "run" / "results.json").read_text())
    stages: dict[str, float] = {}
    for name, value in results["timings_s"].items():
        stages[_stage(name)] = stages.get(_stage(name), 0.0) + value
    stages["patient and start-up"] = seconds - results["seconds"]
    return seconds, stages


def registration_errors(demo: Path) -> dict[str, float]:
    """Per floating image of a demo folder: RMSD (mm) of T(x) - T_true(x) over the MAA CT liver voxels."""
    patient = json.loads((demo / "patient" / "patient.json").read_text())
    liver = read_labels(demo / "patient" / patient["reference"]["liver"])
    k, j, i = np.nonzero(liver.array)
    points = liver.grid.index_to_world(np.stack([i, j, k], axis=1))
    truths = {scan["modality"].lower(): read_displacement(demo / "patient" / scan["displacement"])
              for scan in patient["floating"]}
    errors = {}
    for folder in sorted((demo / "run" / "floating").iterdir()):
        transform_folder = folder / "transform"
        field = transform_folder / "displacement.nii.gz"
        transform = read_displacement(field) if field.exists() else read_affine(transform_folder / "affine.tfm")
        truth = truths[folder.name.split("-")[0]]
        distance = np.linalg.norm(transform.transform_points(points) - truth.transform_points(points), axis=1)
        errors[folder.name] = float(np.sqrt(np.mean(distance**2)))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmark-cli"), help="working folder (created)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of part 1, the median is shown")
    parser.add_argument("--skip-demo", action="store_true", help="part 1 only")
    parser.add_argument("--demo-folder", type=Path, action="append", default=[],
                        help="an earlier demo output to compare registration errors with (repeatable)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    costs = registration_costs(args.work, args.repeat)
    print(f"sirtreg register, {'x'.join(map(str, PAIR_SHAPE))} voxels of {PAIR_SPACING_MM} mm, liver+landmarks, "
          f"with lesions (median of {args.repeat}):")
    print(f"  CLI {costs['cli']:6.1f} s")
    print(f"  engine alone {costs['engine']:6.1f} s   difference {costs['cli'] - costs['engine']:5.1f} s")
    print(f"  engine alone, the CLI's allocator setting {costs['allocator']:6.1f} s   "
          f"difference {costs['cli'] - costs['allocator']:5.1f} s")
    fastest = min(costs["engine"], costs["allocator"])
    print(f"  the command's cost beside the faster engine: {costs['cli'] - fastest:.1f} s")
    print(f"sirtreg --help: {costs['help']:.2f} s")

    demos = list(args.demo_folder)
    if not args.skip_demo:
        folder = args.work / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        seconds, stages = demo_costs(folder)
        print(f"\nsirtreg demo: {seconds:.0f} s")
        for name, value in sorted(stages.items(), key=lambda item: -item[1]):
            print(f"  {name:22s} {value:6.1f} s")
        demos.insert(0, folder)
    if demos:
        errors = {demo: registration_errors(demo) for demo in demos}
        names = sorted({name for found in errors.values() for name in found})
        print("\nregistration error against the known deformation, RMSD over the MAA CT liver (mm):")
        print(f"  {'floating':14s}" + "".join(f" {str(i + 1):>8s}" for i in range(len(demos))))
        for name in names:
            print(f"  {name:14s}" + "".join(f" {errors[d].get(name, float('nan')):8.2f}" for d in demos))
        for index, demo in enumerate(demos, start=1):
            print(f"  {index}: {demo}")


if __name__ == "__main__":
    main()
