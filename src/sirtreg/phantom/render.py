"""Rendering tissue maps as scans: low-dose CT, contrast CT, MR T1 and MAA SPECT.

Each renderer turns the :class:`~sirtreg.phantom.anatomy.TissueMaps` of one
grid into voxel values: a per-tissue look-up, lesion appearance, partial-volume
blur and the modality's noise (correlated Gaussian for CT, Rician with a
multiplicative bias field for MR, Poisson counts after a 12 mm blur for SPECT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sirtreg.geometry import Grid, Volume
from sirtreg.phantom.anatomy import LABEL, ORGAN_LABELS, TissueMaps

_N_LABELS = max(ORGAN_LABELS) + 1
_NECROSIS_DEPTH = 0.5
_CLIP_HU = 3000.0

# Hounsfield units of each tissue, without and with portal-venous contrast
_CT_HU = {
    "air": -1000, "skin": 40, "subcutaneous fat": -105, "muscle": 52, "visceral fat": -95, "bowel": 28, "gas": -950,
    "lung": -860, "cortical bone": 900, "bone marrow": 230, "spinal canal": 12, "intervertebral disc": 85,
    "heart": 42, "aorta": 42, "inferior vena cava": 40, "portal vein": 40, "hepatic veins": 40,
    "liver": 60, "liver lesion": 40, "spleen": 47, "right kidney": 32, "left kidney": 32, "stomach": 30,
    "gallbladder": 8, "clip": 1000,
}
_CONTRAST_HU = {
    **_CT_HU, "skin": 60, "muscle": 62, "bowel": 70, "heart": 160, "aorta": 175, "inferior vena cava": 150,
    "portal vein": 180, "hepatic veins": 165, "liver": 110, "spleen": 120, "right kidney": 190,
    "left kidney": 190, "stomach": 60,
}
# MR T1 gradient echo (arbitrary units): fat bright, liver medium-bright, fluid and vessels dark
_MR_T1 = {
    "air": 0, "skin": 420, "subcutaneous fat": 900, "muscle": 270, "visceral fat": 860, "bowel": 300, "gas": 0,
    "lung": 10, "cortical bone": 30, "bone marrow": 520, "spinal canal": 90, "intervertebral disc": 230,
    "heart": 180, "aorta": 120, "inferior vena cava": 140, "portal vein": 150, "hepatic veins": 140,
    "liver": 470, "liver lesion": 200, "spleen": 320, "right kidney": 300, "left kidney": 300, "stomach": 110,
    "gallbladder": 70, "clip": 0,
}


def _table(values: dict[str, float]) -> np.ndarray:
    table = np.full(_N_LABELS, values["air"], np.float32)
    for name, value in values.items():
        if name != "air":
            table[LABEL[name]] = value
    return table


@dataclass(frozen=True)
class Appearance:
    """Per-patient intensities: liver and lesion HU, lesion enhancement pattern, MR lesion signal."""

    liver_hu: float
    lesion_hu: tuple[float, ...]
    rim_enhancing: tuple[bool, ...]
    mr_lesion: tuple[float, ...]


def draw_appearance(rng: np.random.Generator, *, n_lesions: int) -> Appearance:
    return Appearance(
        liver_hu=float(rng.uniform(55, 65)),
        lesion_hu=tuple(float(v) for v in rng.uniform(35, 45, n_lesions)),
        rim_enhancing=tuple(bool(v) for v in rng.random(n_lesions) < 0.5),
        mr_lesion=tuple(float(v) for v in rng.uniform(150, 240, n_lesions)),
    )


def _kernel_norm(sigma: float) -> float:
    """Root of the sum of squared weights of a sampled, normalised 1D Gaussian (as scipy builds it)."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt(np.sum(w**2)))


def _blur_with_noise(image: np.ndarray, *, sigma_voxels: tuple[float, float, float], noise_sd: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur of ``image`` plus correlated Gaussian noise of standard deviation ``noise_sd``.

    White noise is added before the blur and scaled so that it keeps ``noise_sd`` after it.
    """
    gain = np.prod([_kernel_norm(s) for s in sigma_voxels])
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd / gain)
    return ndimage.gaussian_filter(image, sigma_voxels, mode="nearest", truncate=4.0)


def _blur_sigma(grid: Grid, fwhm_mm: tuple[float, float, float]) -> tuple[float, float, float]:
    """Gaussian sigma in voxels (z, y, x) for a blur of the given FWHM (x, y, z) in mm."""
    sigma = [float(f / 2.3548 / s) for f, s in zip(fwhm_mm[::-1], grid.spacing_mm[::-1])]
    return sigma[0], sigma[1], sigma[2]


def render_ct(maps: TissueMaps, *, grid: Grid, appearance: Appearance, contrast: bool, noise_sd_hu: float,
              rng: np.random.Generator) -> Volume:
    """A CT in HU (int16 array (z, y, x)): non-contrast, or portal-venous phase when ``contrast``."""
    table = _table(_CONTRAST_HU if contrast else _CT_HU)
    if not contrast:
        table[LABEL["liver"]] = appearance.liver_hu
    image = table[maps.organs]
    where = np.nonzero(maps.lesions)
    numbers, depth = maps.lesions[where], maps.lesion_depth[where]
    values = np.zeros(depth.shape, np.float32)
    for number, hu in enumerate(appearance.lesion_hu, start=1):
        this = numbers == number
        if contrast and appearance.rim_enhancing[number - 1]:
            values[this] = np.where(depth[this] < 0.22, 125.0, hu + 15.0)
        else:
            values[this] = hu + 30.0 if contrast else hu
        if number == maps.necrotic_lesion:
            values[this & (depth > _NECROSIS_DEPTH)] = hu - 20.0
    image[where] = values
    near = np.nonzero(maps.clip_distance_mm < min(grid.spacing_mm))
    occupancy = np.clip(0.5 - maps.clip_distance_mm[near] / np.float32(min(grid.spacing_mm)), 0, 1)
    image[near] += occupancy * (np.float32(_CLIP_HU) - image[near])
    fwhm = tuple(1.6 * s for s in grid.spacing_mm[:2]) + (1.2 * grid.spacing_mm[2],)
    image = _blur_with_noise(image, sigma_voxels=_blur_sigma(grid, fwhm), noise_sd=noise_sd_hu, rng=rng)
    return Volume(np.clip(np.rint(image), -1024, 3071).astype(np.int16), grid, "CT")


def render_mr(maps: TissueMaps, *, grid: Grid, appearance: Appearance, noise_sd: float,
              rng: np.random.Generator) -> Volume:
    """An MR T1 (uint16 array (z, y, x)) with a smooth multiplicative bias field and Rician noise."""
    image = _table(_MR_T1)[maps.organs]
    where = np.nonzero(maps.lesions)
    numbers, depth = maps.lesions[where], maps.lesion_depth[where]
    values = np.take(np.asarray((0.0, *appearance.mr_lesion), np.float32), numbers)
    if maps.necrotic_lesion:
        values[(numbers == maps.necrotic_lesion) & (depth > _NECROSIS_DEPTH)] *= 0.5
    image[where] = values
    near = np.nonzero(maps.clip_distance_mm < 6.0)  # susceptibility blooming around the clip: a signal void
    image[near] *= np.clip((maps.clip_distance_mm[near] - 4.0) / 2.0, 0, 1)
    fwhm = tuple(1.4 * s for s in grid.spacing_mm[:2]) + (1.0 * grid.spacing_mm[2],)
    image = ndimage.gaussian_filter(image, _blur_sigma(grid, fwhm), mode="nearest")
    image *= _bias_field(grid, rng)
    noise = np.float32(noise_sd)
    real = image + noise * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = noise * rng.standard_normal(image.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    return Volume(np.clip(np.rint(magnitude), 0, 65535).astype(np.uint16), grid, "MR")


def _bias_field(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field of about +-20 %, a product of slow profiles along the image axes."""
    field = np.ones(grid.shape, np.float32)
    for axis, (n, s) in enumerate(zip(grid.shape, grid.spacing_mm[::-1])):
        t = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * np.float32(s)
        profile = np.exp(np.float32(rng.uniform(-0.12, 0.12)) * np.sin(t / np.float32(rng.uniform(120, 220))
                                                                         + np.float32(rng.uniform(0, 6.28))))
        shape = [1, 1, 1]
        shape[axis] = n
        field = field * profile.reshape(shape)
    return field


@dataclass(frozen=True, eq=False)
class SpectTruth:
    """The SPECT and what it was made from: counts, noise-free activity, ratios and shunt."""

    counts: Volume
    activity: Volume
    lung_shunt_fraction: float
    tumour_to_normal: tuple[float, ...]
    total_counts: int


def render_spect(maps: TissueMaps, *, activity_grid: Grid, grid: Grid, offset: tuple[int, int, int],
                 factor: int, lung_shunt_fraction: float, tumour_to_normal: tuple[float, ...],
                 total_counts: float, fwhm_mm: float, rng: np.random.Generator) -> SpectTruth:
    """A 99mTc-MAA SPECT (counts, float32 (z, y, x) on ``grid``).

    ``maps`` lie on ``activity_grid``, ``factor`` times finer than ``grid`` and
    covering its voxels from ``offset`` (i, j, k). Normal liver parenchyma has
    activity concentration 1, each lesion its tumour-to-normal ratio on average
    (a necrotic core holds a fifth of its rim), the lungs the lung shunt; the
    activity is blurred by a Gaussian of ``fwhm_mm``, binned and Poisson sampled.
    """
    activity = np.zeros(activity_grid.shape, np.float32)
    activity[maps.organs == LABEL["liver"]] = 1.0
    for number, ratio in enumerate(tumour_to_normal, start=1):
        inside = maps.lesions == number
        core = inside & (maps.lesion_depth > _NECROSIS_DEPTH)
        if number != maps.necrotic_lesion:
            core[:] = False
        n_inside, n_core = np.count_nonzero(inside), np.count_nonzero(core)
        rim_level = ratio * n_inside / max(n_inside - 0.8 * n_core, 1)
        activity[inside] = rim_level
        activity[core] = 0.2 * rim_level
    lungs = maps.organs == LABEL["lung"]
    liver_total = float(activity.sum(dtype=np.float64))
    activity[lungs] = lung_shunt_fraction / (1 - lung_shunt_fraction) * liver_total / max(np.count_nonzero(lungs), 1)
    sigma = tuple(fwhm_mm / 2.3548 / s for s in activity_grid.spacing_mm[::-1])
    blurred = ndimage.gaussian_filter(activity, sigma, mode="constant")
    nz, ny, nx = (n // factor for n in blurred.shape)
    binned = blurred.reshape(nz, factor, ny, factor, nx, factor).sum(axis=(1, 3, 5))
    expected = np.zeros(grid.shape, np.float64)
    i, j, k = offset
    expected[k:k + nz, j:j + ny, i:i + nx] = binned
    expected *= total_counts / expected.sum()
    counts = rng.poisson(expected).astype(np.float32)
    total = float(activity.sum(dtype=np.float64))
    ratios = tuple(float(activity[maps.lesions == n].mean()) for n in range(1, len(tumour_to_normal) + 1))
    return SpectTruth(
        counts=Volume(counts, grid, "NM"),
        activity=Volume(activity, activity_grid, "NM"),
        lung_shunt_fraction=float(activity[lungs].sum(dtype=np.float64) / total),
        tumour_to_normal=ratios,
        total_counts=int(counts.sum(dtype=np.float64)),
    )
