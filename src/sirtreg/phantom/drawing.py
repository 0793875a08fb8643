"""Drawing one plausible digital patient: organ sizes and positions, lesions and a clip, from a random
generator (:func:`draw_anatomy`), and the volume of a drawn lesion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sirtreg.phantom.anatomy import CLIP_HALF_LENGTH_MM, CLIP_RADIUS_MM, Anatomy, Body, Diaphragm, Lesion
from sirtreg.phantom.shapes import Ellipsoid, Tube, ellipsoid, rotation, sine_field, tube

_MIN_LESION_ML = 8.0


def _jitter(rng: np.random.Generator, point, sd_mm: float) -> np.ndarray:
    return np.asarray(point, float) + rng.normal(0, sd_mm, 3)


def draw_anatomy(rng: np.random.Generator, *, n_lesions: int | None = None) -> Anatomy:
    """Draw one plausible patient: organ sizes and positions, lesions and clip."""
    body = Body(
        half_width_mm=rng.uniform(145, 170), anterior_mm=rng.uniform(105, 125),
        posterior_mm=rng.uniform(92, 105), fat_mm=rng.uniform(14, 30), muscle_mm=rng.uniform(10, 14),
    )
    spine = np.array([rng.normal(0, 2), body.posterior_mm - rng.uniform(82, 90)])
    diaphragm = Diaphragm(
        right_mm=np.array([-65 + rng.normal(0, 5), rng.normal(-5, 5), rng.uniform(50, 60)]),
        left_mm=np.array([65 + rng.normal(0, 5), rng.normal(-5, 5), rng.uniform(36, 46)]),
    )
    scale = rng.uniform(1.0, 1.12, 3)
    shift = rng.normal(0, 4, 3)

    def liver_blob(center, radii, angles=(0.0, 0.0, 0.0)) -> Ellipsoid:
        return ellipsoid(np.asarray(center) * scale + shift, np.asarray(radii) * scale * rng.uniform(0.95, 1.05, 3),
                         np.asarray(angles) + rng.normal(0, 3, 3))

    liver_blobs = (
        liver_blob((-62, 2, -4), (68, 84, 84), (0, 0, 8)),
        liver_blob((-18, -32, 10), (50, 56, 46)),
        liver_blob((22, -62, 10), (68, 28, 32), (0, -12, -18)),
    )
    liver_inferior = np.array([-78 + rng.normal(0, 5) + shift[2], -0.3, 0.35])
    kidney_radii = np.array([26.0, 21.0, 52.0])
    right_kidney = ellipsoid(_jitter(rng, (-70, spine[1] + 8, -88), 4), kidney_radii * rng.uniform(0.92, 1.08, 3),
                             (0, 15, 30))
    left_kidney = ellipsoid(_jitter(rng, (70, spine[1] + 8, -74), 4), kidney_radii * rng.uniform(0.92, 1.08, 3),
                            (0, -15, -30))
    hila = tuple(ellipsoid(k.center_mm + np.array([side * 24, -12, 0]), (10, 9, 20), (0, 0, side * 30))
                 for k, side in zip((right_kidney, left_kidney), (1, -1)))
    spleen_c = _jitter(rng, (92, 42, 18), 5)
    spleen = (ellipsoid(spleen_c, np.array([24, 58, 46]) * rng.uniform(0.85, 1.1, 3), (0, 0, -40)),
              ellipsoid(spleen_c + np.array([-12, 18, -14]), (18, 30, 30), (0, 0, -30)))
    stomach = ellipsoid(_jitter(rng, (60, -18, 0), 5), np.array([36, 30, 52]) * rng.uniform(0.9, 1.1, 3), (20, 25, 0))
    gallbladder = ellipsoid(np.array([-30, -66, -42]) * scale + shift,
                            np.array([15, 15, 36]) * rng.uniform(0.85, 1.1, 3), (-40, 0, 10))
    heart = ellipsoid(_jitter(rng, (15, -38, 108), 4), (68, 52, 58), (0, 0, -20))
    aorta = np.array([16 + rng.normal(0, 2), spine[1] - 30])
    ivc = np.array([-24 + rng.normal(0, 2), spine[1] - 28])

    def at(point) -> np.ndarray:
        return np.asarray(point, float) * scale + shift

    hilum = at((-28, -28, -18))
    right = at((-62, -16, -6))
    left = at((-4, -52, 2))
    portal_trunk = tube(np.array([2.0, spine[1] - 60, -62]), hilum, 7.5, 7.0)
    portal_branches = (
        tube(hilum, right, 6.0, 5.0), tube(right, at((-80, -60, 8)), 4.0, 2.5),
        tube(right, at((-98, 18, -22)), 4.0, 2.5), tube(right, at((-82, 4, 32)), 3.5, 2.0),
        tube(hilum, left, 5.0, 4.0), tube(left, at((38, -64, 10)), 3.5, 2.0), tube(left, at((14, -44, 28)), 3.0, 2.0),
    )
    hepatic_root = np.array([ivc[0], ivc[1] - 4, diaphragm.right_mm[2] - 12])
    hepatic_veins = (
        tube(hepatic_root, at((-104, -10, 12)), 5.0, 2.0),
        tube(hepatic_root, at((-46, -78, -12)), 4.5, 2.0),
        tube(hepatic_root, at((18, -62, 22)), 4.0, 2.0),
    )
    partial = Anatomy(
        body=body, diaphragm=diaphragm, spine_xy_mm=spine, vertebra_pitch_mm=rng.uniform(32, 36),
        vertebra_phase_mm=rng.uniform(0, 30), rib_phase_mm=rng.uniform(0, 32),
        liver_blobs=liver_blobs, liver_inferior=liver_inferior,
        liver_ripple=sine_field(rng, n_waves=8, wavelength_mm=(60, 140), rms=2.5),
        spleen=spleen, kidneys=(right_kidney, left_kidney), kidney_hila=hila, stomach=stomach,
        gallbladder=gallbladder, heart=heart, aorta_xy_mm=aorta, ivc_xy_mm=ivc,
        portal_trunk=portal_trunk, portal_branches=portal_branches, hepatic_veins=hepatic_veins,
        lesions=(), necrotic_lesion=0, clip=tube(np.zeros(3), np.ones(3), CLIP_RADIUS_MM),
        bowel=sine_field(rng, n_waves=10, wavelength_mm=(45, 90), rms=1.0),
        bowel_gas=sine_field(rng, n_waves=6, wavelength_mm=(25, 50), rms=1.0),
    )
    count = int(rng.integers(3, 6)) if n_lesions is None else n_lesions
    lesions, clip = _place_lesions_and_clip(partial, rng, count)
    radii = [lesion.radius_mm for lesion in lesions]
    necrotic = int(np.argmax(radii)) + 1 if max(radii) > 22 else 0
    return replace(partial, lesions=lesions, clip=clip, necrotic_lesion=necrotic)


def _candidates(anatomy: Anatomy, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = anatomy.liver_bounds_mm()
    p = rng.uniform(lo, hi, size=(n, 3)).astype(np.float32)
    d = anatomy.liver_sdf(p[:, 0], p[:, 1], p[:, 2])
    near_vessel = np.zeros(n, bool)
    for vessel in (anatomy.portal_trunk, *anatomy.portal_branches[:1], anatomy.portal_branches[4]):
        near_vessel |= vessel.sdf(p[:, 0], p[:, 1], p[:, 2]) < 6
    ivc = np.hypot(p[:, 0] - anatomy.ivc_xy_mm[0], p[:, 1] - anatomy.ivc_xy_mm[1]) < 20
    keep = ~near_vessel & ~ivc
    return p[keep].astype(float), d[keep].astype(float)


def _place_lesions_and_clip(anatomy: Anatomy, rng: np.random.Generator,
                            count: int) -> tuple[tuple[Lesion, ...], Tube]:
    """Lesions of about 8-110 mL deep enough in the liver not to cross its surface, then a clip."""
    points, depth = _candidates(anatomy, rng, 4000)
    ivc_gap = np.hypot(points[:, 0] - anatomy.ivc_xy_mm[0], points[:, 1] - anatomy.ivc_xy_mm[1]) - 16
    volumes_ml = np.exp(rng.uniform(np.log(10), np.log(110), count))
    volumes_ml[0] = max(volumes_ml[0], 30.0)  # at least one sizeable lesion
    lesions: list[Lesion] = []
    centers: list[tuple[np.ndarray, float]] = []
    for number, volume in enumerate(volumes_ml, start=1):
        radius = _radius_mm(volume)
        while True:
            score = np.minimum(-depth - (radius * 1.15 + 5), ivc_gap - radius * 1.3)
            for c, r in centers:
                score = np.minimum(score, np.linalg.norm(points - c, axis=1) - (radius + r + 10))
            if np.any(score > 0) or radius <= _radius_mm(_MIN_LESION_ML):
                break
            radius *= 0.95
        ok = np.flatnonzero(score > 0)
        center = points[rng.choice(ok)] if ok.size else points[int(np.argmax(score))]
        centers.append((center, radius))
        ratios = rng.uniform(0.8, 1.25, 3)
        ratios /= np.prod(ratios) ** (1 / 3)
        angles = tuple(rng.uniform(-90, 90, 3))
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        main = ellipsoid(center, radius * ratios, angles)
        satellite = ellipsoid(center + direction * 0.6 * radius, radius * rng.uniform(0.45, 0.6, 3), angles)
        ripple = sine_field(rng, n_waves=5, wavelength_mm=(0.8 * radius, 1.6 * radius), rms=0.05 * radius)
        lesions.append(Lesion(f"lesion {number}", main, satellite, float(radius), ripple))
    ok = -depth > 12
    for c, r in centers:
        ok &= np.linalg.norm(points - c, axis=1) > r * 1.4 + 15
    if not np.any(ok):
        ok = -depth > 6
    center = points[rng.choice(np.flatnonzero(ok))]
    axis = rotation(tuple(rng.uniform(-180, 180, 3))) @ np.array([0.0, 0.0, 1.0])
    clip = tube(center - axis * CLIP_HALF_LENGTH_MM, center + axis * CLIP_HALF_LENGTH_MM, CLIP_RADIUS_MM)
    return tuple(lesions), clip


def _radius_mm(volume_ml: float) -> float:
    """Radius (mm) of the main ellipsoid of a lesion of about ``volume_ml`` (its satellite adds the rest)."""
    return float((3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3) * 0.97)


def lesion_volume_ml(lesion: Lesion, anatomy: Anatomy, *, step_mm: float = 0.75) -> tuple[float, np.ndarray]:
    """Volume (mL) and centroid (LPS mm) of a lesion inside the liver, by fine sampling."""
    lo, hi = lesion.bounds_mm()
    axes = [np.arange(a, b + step_mm, step_mm, dtype=np.float32) for a, b in zip(lo, hi)]
    x, y, z = axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None]
    inside = (lesion.sdf(x, y, z) < 0) & (anatomy.liver_sdf(x, y, z) < 0)
    k, j, i = np.nonzero(inside)
    centroid = np.array([axes[0][i].mean(), axes[1][j].mean(), axes[2][k].mean()], dtype=float)
    return float(inside.sum()) * step_mm**3 / 1000, centroid
