"""The dose-point kernels the program ships, made again, and checked against a published Geant4 kernel.

Usage:
    python benchmarks/voxel_kernel.py [--histories N] [--seed S] [--write] [--geant4-y90 FILE]

For Y-90 and Ho-166: the project's electron Monte Carlo (``sirtreg.dosimetry.point_kernel``) with ``--histories``
electrons each (default 1,000,000; about a minute each on one core). Printed: the time, the share of the emitted
electron energy absorbed (the rest leaves as bremsstrahlung), the X90 (the radius holding 90 % of it, mm), and
the voxel S values (mGy/(MBq s)) of the source voxel and its face, edge and corner neighbours for 4.8, 3.0 and
2.0 mm voxels of 1.0 g/mL, beside those of the shipped kernel. ``--write`` replaces the shipped kernels
(``src/sirtreg/dosimetry/data``).

``--geant4-y90``: a Y-90 kernel in water from Geant4, as a CSV with a comment line, a header line, and rows of
the shell's outer radius (cm) and the energy it absorbs per decay (MeV), in its first two columns: for example
``Taranis/Resources/DoseKernels/90Y_64.10H_beta.io_processed.csv`` of the Taranis radioembolization dosimetry
extension for 3D Slicer (github.com/4burakfe/SlicerRadioembolizationDosimetry; a Geant4 kernel of 0.1 mm shells).
Its voxel S values, from the same voxel integration, are printed beside ours with their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sirtreg.dosimetry.point_kernel import SHIPPED, PointKernel, shipped_point_kernel, simulate_point_kernel
from sirtreg.dosimetry.voxel_kernel import integrate_voxel_kernel

OFFSETS = {"self": (0, 0, 0), "face": (0, 0, 1), "edge": (0, 1, 1), "corner": (1, 1, 1)}
VOXELS_MM = (4.8, 3.0, 2.0)


def geant4_kernel(path: Path, emitted_mev: float) -> PointKernel:
    """A Geant4 kernel file (outer radius in cm, energy per decay in MeV) as a :class:`PointKernel`."""
    table = np.loadtxt(path, delimiter=",", skiprows=2, usecols=(0, 1))
    widths = np.diff(np.concatenate([[0.0], table[:, 0]]))
    if not np.allclose(widths, widths[0], rtol=1e-3):
        sys.exit(f"{path}: the shells must be of one width")
    return PointKernel("Y-90", float(widths[0]), table[:, 1], emitted_mev, 0)


def s_values(kernel: PointKernel, voxel_mm: float) -> dict[str, float]:
    voxels = integrate_voxel_kernel(kernel, (voxel_mm,) * 3, 1.0)
    return {name: voxels.s_value_mgy_per_mbq_s(offset) for name, offset in OFFSETS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=90)
    parser.add_argument("--write", action="store_true", help="replace the shipped kernels")
    parser.add_argument("--geant4-y90", type=Path, help="a Geant4 Y-90 kernel file to compare with")
    args = parser.parse_args()
    made = {}
    for nuclide in SHIPPED:
        start = time.perf_counter()
        kernel = simulate_point_kernel(nuclide, histories=args.histories, seed=args.seed)
        made[nuclide] = kernel
        print(f"{nuclide}: {args.histories} electrons in {time.perf_counter() - start:.0f} s; absorbed "
              f"{100 * kernel.absorbed_fraction:.2f} % of {kernel.emitted_mev_per_decay:.4f} MeV per decay; "
              f"X90 {10 * kernel.radius_holding(0.9):.2f} mm")
        shipped = shipped_point_kernel(nuclide) if not args.write else None
        for voxel_mm in VOXELS_MM:
            ours = s_values(kernel, voxel_mm)
            line = "  ".join(f"{name} {value:.4e}" for name, value in ours.items())
            print(f"  {voxel_mm} mm voxel S values (mGy/(MBq s)): {line}")
            if shipped is not None:
                before = s_values(shipped, voxel_mm)
                print("    shipped kernel: " + "  ".join(f"{n} x{ours[n] / v:.4f}" for n, v in before.items()))
    if args.geant4_y90:
        reference = geant4_kernel(args.geant4_y90, made["Y-90"].emitted_mev_per_decay)
        print(f"Geant4 Y-90 ({args.geant4_y90.name}): absorbed {100 * reference.absorbed_fraction:.2f} %, "
              f"X90 {10 * reference.radius_holding(0.9):.2f} mm")
        for voxel_mm in VOXELS_MM:
            theirs, ours = s_values(reference, voxel_mm), s_values(made["Y-90"], voxel_mm)
            print(f"  {voxel_mm} mm: " + "  ".join(
                f"{name} {theirs[name]:.4e} (ours x{ours[name] / theirs[name]:.3f})" for name in OFFSETS))
    if args.write:
        folder = Path(__file__).resolve().parent.parent / "src" / "sirtreg" / "dosimetry" / "data"
        for nuclide, kernel in made.items():
            path = folder / f"point_kernel_{nuclide.lower().replace('-', '')}.csv"
            path.write_text(kernel.to_csv())
            print(f"wrote {path.relative_to(folder.parent.parent.parent.parent)}")


if __name__ == "__main__":
    main()
