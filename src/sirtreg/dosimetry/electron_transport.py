"""Electrons in water: stopping power, CSDA range, transport mean free path and a condensed-history Monte Carlo
that scores the dose-point kernel of an electron source.

Lengths are in g/cm^2 of water (cm at 1 g/mL); a water-like tissue of density ``rho`` scales them by ``1 / rho``.

Physics (class II condensed history, as in EGS and PENELOPE, simplified):

- Collisions that give an atomic electron less than :data:`DELTA_CUT_MEV` are a continuous loss: the restricted
  collision stopping power of the Bethe formula for electrons (ICRU Report 37) with the mean excitation energy of
  water, I = 75 eV, and the Sternheimer density-effect correction with the parameters of Sternheimer, Berger and
  Seltzer (At Data Nucl Data Tables 1984;30:261) for liquid water. Harder collisions are drawn one by one from
  the Moller cross section, each ending a step: the electron loses the energy it gives, and the knock-on electron
  is followed (binary kinematics for both directions). This is the energy-loss straggling that shapes a kernel's
  tail. The transport cross section then counts the scattering on atomic electrons through the soft collisions'
  angles only, so that no deflection is counted twice.
- The radiative stopping power of the non-relativistic Bethe-Heitler limit (scaled cross section 16/3, about
  10 % low at 1-2 MeV, where it is 1 % of the loss) takes energy away as bremsstrahlung, which is not followed.
- Angular deflections: the first transport cross section of screened Rutherford scattering on H and O (Moliere's
  screening, the McKinley-Feshbach spin factor) gives the transport mean free path ``lambda_1``; each step deflects
  the electron by an angle drawn from a screened-Rutherford-shaped law whose mean ``1 - cos`` is
  ``1 - exp(-s / lambda_1)`` (Goudsmit-Saunderson's first moment, exact for any step), at a random point of the
  step (the random hinge of PENELOPE, Salvat et al.), where the step's energy loss is scored.
- Electrons below :data:`CUTOFF_MEV` deposit their energy where they are (residual range under 9 um).

The checks in the tests: the stopping power and CSDA range against the NIST ESTAR values for water, the kernel's
energy balance, and Y-90 voxel S values against those of a published Geant4 kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ELECTRON_REST_MEV = 0.51099895
#: classical electron radius (cm)
ELECTRON_RADIUS_CM = 2.8179403262e-13
FINE_STRUCTURE = 1.0 / 137.035999
BOHR_RADIUS_CM = 5.29177210903e-9
#: hbar * c (MeV cm)
HBAR_C_MEV_CM = 197.3269804e-13
AVOGADRO = 6.02214076e23
#: water: atoms per gram and atomic numbers (H2O, 18.015 g/mol)
WATER_ATOMS_PER_G = ((1, 2 * AVOGADRO / 18.015), (8, AVOGADRO / 18.015))
WATER_Z_OVER_A = 10.0 / 18.015
WATER_I_MEV = 75.0e-6
#: Sternheimer density-effect parameters of liquid water: -C, x0, x1, a, m
WATER_STERNHEIMER = (3.5017, 0.2400, 2.8004, 0.09116, 3.4773)
#: electrons below this kinetic energy (MeV) stop where they are
CUTOFF_MEV = 0.02
#: collisions that give an atomic electron more than this (MeV) make a knock-on electron that is followed
DELTA_CUT_MEV = 0.02
#: the largest kinetic energy (MeV) the tables cover
MAX_ENERGY_MEV = 4.0


def _beta_squared(energy_mev: np.ndarray) -> np.ndarray:
    gamma = 1.0 + energy_mev / ELECTRON_REST_MEV
    return 1.0 - 1.0 / gamma**2


def _density_effect(energy_mev: np.ndarray) -> np.ndarray:
    c_bar, x0, x1, a, m = WATER_STERNHEIMER
    gamma = 1.0 + energy_mev / ELECTRON_REST_MEV
    x = np.log10(np.sqrt(gamma**2 - 1.0))
    middle = 4.6052 * x - c_bar + a * np.clip(x1 - x, 0.0, None) ** m
    return np.where(x < x0, 0.0, middle)


def collision_stopping_power(energy_mev: np.ndarray | float) -> np.ndarray:
    """Mass collision stopping power of water (MeV cm^2/g) for electrons of kinetic energy ``energy_mev`` (MeV)."""
    energy = np.asarray(energy_mev, dtype=np.float64)
    tau = energy / ELECTRON_REST_MEV
    beta2 = _beta_squared(energy)
    f_minus = 1.0 - beta2 + (tau**2 / 8.0 - (2.0 * tau + 1.0) * math.log(2.0)) / (tau + 1.0) ** 2
    log_term = np.log(tau**2 * (tau + 2.0) / (2.0 * (WATER_I_MEV / ELECTRON_REST_MEV) ** 2))
    k = 2.0 * math.pi * ELECTRON_RADIUS_CM**2 * ELECTRON_REST_MEV * AVOGADRO * WATER_Z_OVER_A
    return k / beta2 * (log_term + f_minus - _density_effect(energy))


def _stopping_constant() -> float:
    """``2 pi r_e^2 m c^2 N_A Z/A`` of water (MeV cm^2/g)."""
    return 2.0 * math.pi * ELECTRON_RADIUS_CM**2 * ELECTRON_REST_MEV * AVOGADRO * WATER_Z_OVER_A


def restricted_stopping_power(energy_mev: np.ndarray | float, cut_mev: float = DELTA_CUT_MEV) -> np.ndarray:
    """Collision stopping power of water (MeV cm^2/g) from energy transfers below ``cut_mev`` (ICRU Report 37's
    restricted Moller formula); the whole collision stopping power below ``2 cut_mev``."""
    energy = np.asarray(energy_mev, dtype=np.float64)
    tau = energy / ELECTRON_REST_MEV
    cut = np.minimum(cut_mev / ELECTRON_REST_MEV, tau / 2.0)
    beta2 = _beta_squared(energy)
    f_minus = (-1.0 - beta2 + np.log((tau - cut) * cut) + tau / (tau - cut)
               + (cut**2 / 2.0 + (2.0 * tau + 1.0) * np.log(1.0 - cut / tau)) / (tau + 1.0) ** 2)
    log_term = np.log(2.0 * (tau + 2.0) / (WATER_I_MEV / ELECTRON_REST_MEV) ** 2)
    return _stopping_constant() / beta2 * (log_term + f_minus - _density_effect(energy))


def hard_collision_cross_section(energy_mev: np.ndarray | float, cut_mev: float = DELTA_CUT_MEV) -> np.ndarray:
    """Macroscopic Moller cross section of water (cm^2/g) for energy transfers from ``cut_mev`` to half the
    kinetic energy (0 below ``2 cut_mev``)."""
    energy = np.asarray(energy_mev, dtype=np.float64)
    tau = energy / ELECTRON_REST_MEV
    low = np.minimum(cut_mev / np.maximum(energy, 1e-30), 0.5)
    c = (tau / (tau + 1.0)) ** 2
    b = (2.0 * tau + 1.0) / (tau + 1.0) ** 2
    integral = (1.0 / low - 2.0) + (2.0 - 1.0 / (1.0 - low)) + (0.5 - low) * c - b * np.log((1.0 - low) / low)
    return np.where(low < 0.5, _stopping_constant() / (_beta_squared(energy) * energy) * integral, 0.0)


def sample_moller(energy_mev: np.ndarray, rng: np.random.Generator, cut_mev: float = DELTA_CUT_MEV) -> np.ndarray:
    """Energies (MeV) given to knock-on electrons in hard collisions of electrons of ``energy_mev`` (each above
    ``2 cut_mev``), drawn from the Moller cross section by rejection from ``1 / eps^2``."""
    tau = energy_mev / ELECTRON_REST_MEV
    low = cut_mev / energy_mev
    c = (tau / (tau + 1.0)) ** 2
    b = (2.0 * tau + 1.0) / (tau + 1.0) ** 2
    fraction = np.empty_like(energy_mev)
    todo = np.arange(energy_mev.size)
    while todo.size:
        eps = low[todo] / (1.0 - rng.random(todo.size) * (1.0 - 2.0 * low[todo]))
        shape = 1.0 + (eps / (1.0 - eps)) ** 2 + c[todo] * eps**2 - b[todo] * eps / (1.0 - eps)
        accepted = rng.random(todo.size) * (2.0 + c[todo] / 4.0) < shape
        fraction[todo[accepted]] = eps[accepted]
        todo = todo[~accepted]
    return fraction * energy_mev


def radiative_stopping_power(energy_mev: np.ndarray | float) -> np.ndarray:
    """Mass radiative stopping power of water (MeV cm^2/g), non-relativistic Bethe-Heitler limit."""
    energy = np.asarray(energy_mev, dtype=np.float64)
    z_squares_per_g = sum(z * (z + 1) * atoms for z, atoms in WATER_ATOMS_PER_G)
    return z_squares_per_g * FINE_STRUCTURE * ELECTRON_RADIUS_CM**2 * (energy + ELECTRON_REST_MEV) * 16.0 / 3.0


def _transport_cross_section_per_g(energy_mev: float, cut_mev: float | None = None) -> float:
    """Macroscopic first transport cross section of water (cm^2/g) at ``energy_mev``: 1 / lambda_1.

    Screened Rutherford scattering on the nucleus (Z^2) and the atomic electrons (Z); with ``cut_mev``, the
    scattering on electrons only through the angles of collisions softer than the cut (the hard ones deflect the
    electron themselves, :func:`radial_energy_deposition`)."""
    beta2 = float(_beta_squared(np.array(energy_mev)))
    pc = math.sqrt(energy_mev * (energy_mev + 2.0 * ELECTRON_REST_MEV))
    u = np.geomspace(1e-9, 2.0, 4000)
    soft = np.ones_like(u)
    if cut_mev is not None and energy_mev > 2.0 * cut_mev:
        left = energy_mev - cut_mev  # the primary's kinetic energy after a collision that gives the cut
        cos_cut = math.sqrt(left * (energy_mev + 2.0 * ELECTRON_REST_MEV)
                            / (energy_mev * (left + 2.0 * ELECTRON_REST_MEV)))
        soft = (u <= 1.0 - cos_cut).astype(np.float64)
    total = 0.0
    for z, atoms_per_g in WATER_ATOMS_PER_G:
        screening_radius = 0.88534 * BOHR_RADIUS_CM * z ** (-1.0 / 3.0)
        eta = 0.25 * (HBAR_C_MEV_CM / (pc * screening_radius)) ** 2 * (
            1.13 + 3.76 * (FINE_STRUCTURE * z) ** 2 / beta2)
        half_angle_sin = np.sqrt(u / 2.0)
        spin = 1.0 - beta2 * u / 2.0 + math.pi * FINE_STRUCTURE * z * math.sqrt(beta2) * half_angle_sin * (
            1.0 - half_angle_sin)
        integrand = u * spin / (u + 2.0 * eta) ** 2 * (z * z + z * soft)
        integral = float(np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(u)))
        strength = ELECTRON_RADIUS_CM**2 * ELECTRON_REST_MEV**2 / (beta2 * pc**2)
        total += atoms_per_g * 2.0 * math.pi * strength * integral
    return total


@dataclass(frozen=True)
class WaterTables:
    """Range and transport mean free path of electrons in water on a log energy grid (MeV, g/cm^2).

    The range is the path over which the stopping power ``S`` slows an electron down: with ``cut_mev`` None, the
    whole collision and radiative stopping power (the CSDA range); else the restricted collision stopping power
    below ``cut_mev`` and the radiative one (the range between hard collisions' losses), and the transport mean
    free path of the soft collisions' angles.
    """

    energy_mev: np.ndarray
    range_g_per_cm2: np.ndarray
    transport_mfp_g_per_cm2: np.ndarray

    @classmethod
    def build(cls, points: int = 400, cut_mev: float | None = None) -> WaterTables:
        energy = np.geomspace(1e-3, MAX_ENERGY_MEV, points)
        fine = np.geomspace(1e-4, MAX_ENERGY_MEV, 20 * points)
        collision = collision_stopping_power(fine) if cut_mev is None else restricted_stopping_power(fine, cut_mev)
        inverse = 1.0 / (collision + radiative_stopping_power(fine))
        # the range below 0.1 keV is taken as E / S there (under 0.01 um)
        cumulative = np.concatenate([[fine[0] * inverse[0]],
                                     fine[0] * inverse[0] + np.cumsum(0.5 * (inverse[1:] + inverse[:-1]) *
                                                                      np.diff(fine))])
        ranges = np.interp(np.log(energy), np.log(fine), cumulative)
        mfp = np.array([1.0 / _transport_cross_section_per_g(float(e), cut_mev) for e in energy])
        return cls(energy, ranges, mfp)

    def csda_range(self, energy_mev: np.ndarray) -> np.ndarray:
        """Range (g/cm^2) of electrons of ``energy_mev`` (the CSDA range when built without a cut)."""
        return np.exp(np.interp(np.log(energy_mev), np.log(self.energy_mev), np.log(self.range_g_per_cm2)))

    def energy_at_range(self, range_g_per_cm2: np.ndarray) -> np.ndarray:
        """The kinetic energy (MeV) whose CSDA range is ``range_g_per_cm2`` (the inverse of :meth:`csda_range`)."""
        return np.exp(np.interp(np.log(np.maximum(range_g_per_cm2, 1e-30)), np.log(self.range_g_per_cm2),
                                np.log(self.energy_mev)))

    def transport_mfp(self, energy_mev: np.ndarray) -> np.ndarray:
        """First transport mean free path ``lambda_1`` (g/cm^2) at ``energy_mev``."""
        return np.exp(np.interp(np.log(energy_mev), np.log(self.energy_mev), np.log(self.transport_mfp_g_per_cm2)))


# <1 - cos> of the screened Rutherford law p(u) ~ 1 / (u + 2A)^2, u = 1 - cos in [0, 2], against its screening A
_SCREENING = np.geomspace(1e-8, 1e4, 2000)
_MEAN_DEFLECTION = 2.0 * _SCREENING * ((1.0 + _SCREENING) * np.log1p(1.0 / _SCREENING) - 1.0)


def sample_deflection(mean_one_minus_cos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cosines of deflection angles from screened-Rutherford laws with the given means of ``1 - cos`` (each in
    [0, 1); 1 is isotropic)."""
    target = np.clip(mean_one_minus_cos, _MEAN_DEFLECTION[0], _MEAN_DEFLECTION[-1])
    screening = np.exp(np.interp(target, _MEAN_DEFLECTION, np.log(_SCREENING)))
    xi = rng.random(target.shape)
    return 1.0 - 2.0 * screening * xi / (1.0 + screening - xi)


def _rotate(direction: np.ndarray, cos_theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) turned by polar angles with ``cos_theta`` and azimuths ``phi``."""
    sin_theta = np.sqrt(np.clip(1.0 - cos_theta**2, 0.0, None))
    # an orthonormal pair perpendicular to each direction
    helper = np.where(np.abs(direction[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    first = np.cross(direction, helper)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second = np.cross(direction, first)
    turned = (cos_theta[:, None] * direction + (sin_theta * np.cos(phi))[:, None] * first
              + (sin_theta * np.sin(phi))[:, None] * second)
    return turned / np.linalg.norm(turned, axis=1, keepdims=True)


def _isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    cos_theta = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * math.pi * rng.random(n)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=1)


def radial_energy_deposition(
    initial_energy_mev: np.ndarray,
    *,
    bin_g_per_cm2: float,
    bins: int,
    rng: np.random.Generator,
    tables: WaterTables | None = None,
    step_fraction: float = 0.04,
) -> np.ndarray:
    """Energy (MeV) deposited in spherical shells around a point source, summed over the electrons and the
    knock-on electrons they set moving.

    Parameters
    ----------
    initial_energy_mev : (n,) kinetic energies of the electrons, emitted isotropically from the origin.
    bin_g_per_cm2, bins : shell ``i`` spans radii ``[i, i + 1) * bin_g_per_cm2``; energy beyond the last shell is
        summed into it (the caller makes the shells reach past the largest range).
    tables : ranges built with ``cut_mev=DELTA_CUT_MEV`` (made when None).
    step_fraction : each step is this fraction of the electron's range, or shorter when a hard collision ends it.

    Returns (bins,) energies in MeV.
    """
    tables = tables or WaterTables.build(cut_mev=DELTA_CUT_MEV)
    energy = np.asarray(initial_energy_mev, dtype=np.float64).copy()
    position = np.zeros((energy.size, 3))
    direction = _isotropic(energy.size, rng)
    scored = np.zeros(bins)

    def score(where: np.ndarray, deposit_mev: np.ndarray) -> None:
        shell = np.minimum((np.linalg.norm(where, axis=1) / bin_g_per_cm2).astype(np.int64), bins - 1)
        scored[:] += np.bincount(shell, weights=deposit_mev, minlength=bins)

    while energy.size:
        stopping = energy < CUTOFF_MEV
        if stopping.any():
            score(position[stopping], energy[stopping])
            keep = ~stopping
            energy, position, direction = energy[keep], position[keep], direction[keep]
            if not energy.size:
                break
        residual = tables.csda_range(energy)
        # the step ends at the next hard collision when that comes first (its cross section hardly changes over a
        # step: above 2 * DELTA_CUT_MEV it is nearly k / (beta^2 DELTA_CUT_MEV))
        hard = hard_collision_cross_section(energy)
        distance = rng.exponential(1.0, energy.size) / np.where(hard > 0, hard, 1e-300)
        step = np.minimum(step_fraction * residual, distance)
        after = tables.energy_at_range(residual - step)
        hinge = rng.random(energy.size)[:, None]
        position += hinge * step[:, None] * direction
        middle = 0.5 * (energy + after)
        collision = restricted_stopping_power(middle)
        score(position, (energy - after) * collision / (collision + radiative_stopping_power(middle)))
        # the multiple scattering of the step, at the hinge
        mean_deflection = -np.expm1(-step / tables.transport_mfp(middle))
        direction = _rotate(direction, sample_deflection(mean_deflection, rng),
                            2.0 * math.pi * rng.random(energy.size))
        position += (1.0 - hinge) * step[:, None] * direction
        # the hard collisions that ended their steps
        hit = np.flatnonzero((distance < step_fraction * residual) & (after > 2.0 * DELTA_CUT_MEV))
        knocked_energy = sample_moller(after[hit], rng)
        before = after[hit]
        after[hit] = before - knocked_energy
        total = before + 2.0 * ELECTRON_REST_MEV
        cos_primary = np.sqrt(np.clip(after[hit] * total / (before * (after[hit] + 2.0 * ELECTRON_REST_MEV)), 0, 1))
        cos_knocked = np.sqrt(np.clip(knocked_energy * total / (before * (knocked_energy + 2.0 * ELECTRON_REST_MEV)),
                                      0, 1))
        azimuth = 2.0 * math.pi * rng.random(hit.size)
        knocked_direction = _rotate(direction[hit], cos_knocked, azimuth + math.pi)
        direction[hit] = _rotate(direction[hit], cos_primary, azimuth)
        energy = np.concatenate([after, knocked_energy])
        position = np.concatenate([position, position[hit]])
        direction = np.concatenate([direction, knocked_direction])
    return scored
