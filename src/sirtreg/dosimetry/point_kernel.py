"""Dose-point kernels of beta emitters in water: the energy that one decay deposits in spherical shells around
it, made by this project's electron Monte Carlo (:mod:`.electron_transport`) from the ICRP-107 electrons of the
nuclide (:mod:`.decay_data`).

The kernels the program uses are made once and shipped with it (``data/point_kernel_<nuclide>.csv``);
``python benchmarks/voxel_kernel.py --write`` makes them again (``--histories``, ``--seed``). Shell radii are in
g/cm^2 of water: a water-like tissue of density ``rho`` (g/mL) has the same kernel at radii divided by ``rho``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from sirtreg.dosimetry.decay_data import electron_emissions
from sirtreg.dosimetry.electron_transport import CUTOFF_MEV, DELTA_CUT_MEV, WaterTables, radial_energy_deposition
from sirtreg.errors import InputError

#: shell width (g/cm^2) of the kernels
SHELL_G_PER_CM2 = 0.005
#: the nuclides whose kernels are shipped
SHIPPED = ("Y-90", "Ho-166")


@dataclass(frozen=True)
class PointKernel:
    """Energy per decay (MeV) deposited in shells ``[i, i + 1) * shell_g_per_cm2`` around a point source in water.

    ``emitted_mev_per_decay``: the electrons' kinetic energy per decay; the shells hold all of it but what leaves
    as bremsstrahlung. ``histories``: electrons simulated.
    """

    nuclide: str
    shell_g_per_cm2: float
    energy_mev_per_decay: np.ndarray
    emitted_mev_per_decay: float
    histories: int

    @property
    def absorbed_fraction(self) -> float:
        """Share of the emitted electron energy that the shells hold."""
        return float(self.energy_mev_per_decay.sum()) / self.emitted_mev_per_decay

    def radius_holding(self, fraction: float) -> float:
        """The radius (g/cm^2) inside which ``fraction`` of the absorbed energy lies (0.9: the X90)."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.energy_mev_per_decay)])
        radii = np.arange(cumulative.size) * self.shell_g_per_cm2
        return float(np.interp(fraction * cumulative[-1], cumulative, radii))

    def to_csv(self) -> str:
        header = (f"# {self.nuclide} dose-point kernel in water; sirtreg electron Monte Carlo, {self.histories} "
                  f"electrons\n# emitted_mev_per_decay={self.emitted_mev_per_decay:.6f}\n"
                  "outer_radius_g_per_cm2,energy_mev_per_decay\n")
        radii = (np.arange(self.energy_mev_per_decay.size) + 1) * self.shell_g_per_cm2
        return header + "".join(f"{r:.4f},{e:.6e}\n" for r, e in zip(radii, self.energy_mev_per_decay))

    @classmethod
    def from_csv(cls, text: str) -> PointKernel:
        lines = text.splitlines()
        nuclide = lines[0].split()[1]
        histories = int(lines[0].rsplit(",", 1)[1].split()[0])
        emitted = float(lines[1].split("=", 1)[1])
        table = np.loadtxt(io.StringIO("\n".join(lines[3:])), delimiter=",", ndmin=2)
        return cls(nuclide, float(table[0, 0]), table[:, 1], emitted, histories)


def simulate_point_kernel(
    nuclide: str,
    *,
    histories: int = 1_000_000,
    seed: int = 90,
    batch: int = 100_000,
    progress: Callable[[float], None] | None = None,
) -> PointKernel:
    """Simulate the kernel of ``nuclide`` with ``histories`` electrons drawn from its ICRP-107 emissions.

    Lines under the Monte Carlo's cutoff (most Auger electrons) deposit their energy in the first shell.
    ``progress`` is called with the fraction of electrons done.
    """
    if histories < 1000:
        raise InputError(f"a kernel needs at least 1000 electrons, got {histories}")
    emissions = electron_emissions(nuclide)
    tables = WaterTables.build(cut_mev=DELTA_CUT_MEV)
    transported = emissions.line_energy_mev >= CUTOFF_MEV
    lines_mev, lines_yield = emissions.line_energy_mev[transported], emissions.line_yield[transported]
    electrons_per_decay = emissions.beta_yield + float(lines_yield.sum())
    largest = max(float(emissions.beta_energy_mev[-1]), float(lines_mev.max(initial=0.0)))
    shells = int(np.ceil(1.05 * float(tables.csda_range(np.array(largest))) / SHELL_G_PER_CM2)) + 1
    rng = np.random.default_rng(seed)
    scored = np.zeros(shells)
    done = 0
    while done < histories:
        n = min(batch, histories - done)
        is_line = rng.random(n) < float(lines_yield.sum()) / electrons_per_decay
        energy = emissions.sample_betas(n, rng)
        if lines_mev.size and is_line.any():
            energy[is_line] = rng.choice(lines_mev, size=int(is_line.sum()), p=lines_yield / lines_yield.sum())
        scored += radial_energy_deposition(energy, bin_g_per_cm2=SHELL_G_PER_CM2, bins=shells, rng=rng,
                                           tables=tables)
        done += n
        if progress is not None:
            progress(done / histories)
    per_decay = scored * electrons_per_decay / histories
    per_decay[0] += float(np.sum(emissions.line_energy_mev[~transported] * emissions.line_yield[~transported]))
    return PointKernel(nuclide, SHELL_G_PER_CM2, per_decay, emissions.mean_energy_per_decay_mev, histories)


def shipped_point_kernel(nuclide: str) -> PointKernel:
    """The kernel shipped for ``nuclide`` (one of :data:`SHIPPED`)."""
    if nuclide not in SHIPPED:
        raise InputError(f"no dose-point kernel for {nuclide!r}; kernels exist for {', '.join(SHIPPED)}")
    name = f"point_kernel_{nuclide.lower().replace('-', '')}.csv"
    return PointKernel.from_csv((resources.files("sirtreg.dosimetry") / "data" / name).read_text())
