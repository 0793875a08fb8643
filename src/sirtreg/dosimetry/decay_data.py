"""The electrons a beta emitter gives off per decay, from the ICRP Publication 107 decay data (the
``icrp107-database`` package): the beta spectrum and the discrete lines (conversion and Auger electrons).

Photons are not read: the dose-point kernels of :mod:`.point_kernel` are electron kernels (Y-90's photons carry
under 0.01 % of its decay energy; Ho-166's 80.6 keV gamma and X-rays about 4 %, mostly absorbed centimetres away).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from sirtreg.errors import InputError


@dataclass(frozen=True)
class ElectronEmissions:
    """Electrons per decay of one nuclide.

    ``beta_energy_mev``/``beta_density_per_mev``: the beta spectrum (density normalised to 1 over energy);
    ``beta_yield``: betas per decay; ``line_energy_mev``/``line_yield``: discrete electrons and their yields.
    """

    nuclide: str
    beta_energy_mev: np.ndarray
    beta_density_per_mev: np.ndarray
    beta_yield: float
    line_energy_mev: np.ndarray
    line_yield: np.ndarray

    @property
    def beta_mean_mev(self) -> float:
        """Mean beta energy (MeV) of the spectrum as drawn (linear between its points: the ICRP-107 mean differs
        by about 0.1 %)."""
        e0, e1 = self.beta_energy_mev[:-1], self.beta_energy_mev[1:]
        p0, p1 = self.beta_density_per_mev[:-1], self.beta_density_per_mev[1:]
        return float(np.sum((e1 - e0) / 6.0 * (p0 * (2.0 * e0 + e1) + p1 * (e0 + 2.0 * e1))))

    @property
    def mean_energy_per_decay_mev(self) -> float:
        """Kinetic energy of all electrons per decay (MeV)."""
        return self.beta_yield * self.beta_mean_mev + float(np.sum(self.line_energy_mev * self.line_yield))

    def sample_betas(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) beta energies (MeV) drawn from the spectrum (inverse of its piecewise-linear CDF)."""
        grid = np.linspace(self.beta_energy_mev[0], self.beta_energy_mev[-1], 20000)
        density = np.interp(grid, self.beta_energy_mev, self.beta_density_per_mev)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
        return np.interp(rng.random(n), cdf / cdf[-1], grid)


def electron_emissions(nuclide: str) -> ElectronEmissions:
    """The ICRP-107 electrons of ``nuclide`` ("Y-90", "Ho-166", ...); InputError for one the data lack."""
    path = resources.files("icrp107_database") / "icrp107" / f"{nuclide}.json"
    if not path.is_file():
        raise InputError(f"no ICRP-107 decay data for {nuclide!r}")
    with path.open("rb") as handle:
        emissions = json.loads(json.load(handle))["emissions"]
    spectrum = np.asarray(emissions["b-spectra"], dtype=np.float64)
    betas = np.asarray(emissions["beta-"], dtype=np.float64).reshape(-1, 2)
    if spectrum.size == 0 or betas.size == 0:
        raise InputError(f"{nuclide} is not a beta-minus emitter in the ICRP-107 data")
    energy, density = spectrum[:, 0], spectrum[:, 1]
    density = density / float(np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(energy)))
    lines = np.concatenate([np.asarray(emissions[kind], dtype=np.float64).reshape(-1, 2)
                            for kind in ("IE", "auger")])
    return ElectronEmissions(nuclide, energy, density, float(betas[:, 1].sum()), lines[:, 0], lines[:, 1])
