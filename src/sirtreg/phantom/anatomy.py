"""Implicit anatomy of the digital SIRT patient, in the reference (MAA CT) frame.

The abdomen is a set of implicit shapes (see :mod:`sirtreg.phantom.shapes`) in
LPS millimetres: x to the patient's left, y posterior, z superior; the origin
lies on the body axis. :func:`~sirtreg.phantom.drawing.draw_anatomy` draws one patient from a random
generator; :meth:`Anatomy.evaluate` paints the organ label map, the lesion
label map and a few continuous fields at the anatomy-space points of any scan,
so every scan is rendered exactly on its own grid, with or without a
deformation, and without resampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sirtreg.phantom.points import Box, ScanPoints, box_shape
from sirtreg.phantom.shapes import Ellipsoid, SineField, Tube, smooth_intersection, smooth_subtraction, smooth_union

ORGAN_LABELS: dict[int, str] = {
    1: "skin", 2: "subcutaneous fat", 3: "muscle", 4: "visceral fat", 5: "bowel", 6: "gas",
    7: "lung", 8: "cortical bone", 9: "bone marrow", 10: "spinal canal", 11: "intervertebral disc",
    12: "heart", 13: "aorta", 14: "inferior vena cava", 15: "portal vein", 16: "hepatic veins",
    17: "liver", 18: "liver lesion", 19: "spleen", 20: "right kidney", 21: "left kidney",
    22: "stomach", 23: "gallbladder", 24: "clip",
}
LABEL = {name: value for value, name in ORGAN_LABELS.items()}
LIVER_TISSUE = (LABEL["liver"], LABEL["liver lesion"], LABEL["portal vein"], LABEL["hepatic veins"])
CLIP_RADIUS_MM = 1.5
CLIP_HALF_LENGTH_MM = 4.0
_FAR_MM = 1e4


@dataclass(frozen=True)
class Body:
    """Torso cross-section: superellipse half-axes and wall layers (mm)."""

    half_width_mm: float
    anterior_mm: float
    posterior_mm: float
    fat_mm: float
    muscle_mm: float

    def depth(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth (mm) under the skin along the ray from the body axis; negative outside."""
        u = np.abs(x) / np.float32(self.half_width_mm)
        anterior = y < 0
        v = np.abs(y) / np.where(anterior, np.float32(self.anterior_mm), np.float32(self.posterior_mm))
        u2, v2 = u * u, v * v
        # ellipse in front, flattened (power 4) behind; both meet smoothly at y = 0
        r = np.where(anterior, np.sqrt(u2 + v2), np.sqrt(np.sqrt(u2 * u2 + v2 * v2)))
        rho = np.sqrt(x * x + y * y)
        return rho / (r + np.float32(1e-6)) - rho

    def wall_mm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Skin + fat thickness (first) and fat + muscle wall thickness (second), mm."""
        rho = np.sqrt(x * x + y * y) + np.float32(1e-3)
        front = np.maximum(-y / rho, 0)
        back = np.maximum(y / rho, 0)
        fat = np.float32(self.fat_mm) * (0.75 + 0.55 * front - 0.35 * back)
        muscle = np.float32(self.muscle_mm) * (1.0 + 0.5 * np.abs(x) / rho - 0.3 * front)
        return fat, fat + muscle


@dataclass(frozen=True)
class Diaphragm:
    """Two domes; height z_d(x, y) in mm is their smooth maximum."""

    right_mm: np.ndarray  # (x, y, z) of the right dome's top
    left_mm: np.ndarray

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        domes = []
        for top in (self.right_mm, self.left_mm):
            dx = (x - np.float32(top[0])) / np.float32(125)
            dy = (y - np.float32(top[1])) / np.float32(100)
            domes.append(np.float32(top[2]) - 60 * dx * dx - 35 * dy * dy - 8 * np.maximum(dy, 0))
        return smooth_intersection(domes[0], domes[1], k_mm=20)


@dataclass(frozen=True)
class Lesion:
    """One liver lesion: a lobulated ellipsoid with a surface perturbation."""

    name: str
    main: Ellipsoid
    satellite: Ellipsoid
    radius_mm: float
    ripple: SineField

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        d = smooth_union(self.main.sdf(x, y, z), self.satellite.sdf(x, y, z), k_mm=0.3 * self.radius_mm)
        return d + self.ripple(x, y, z)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        lo1, hi1 = self.main.bounds_mm()
        lo2, hi2 = self.satellite.bounds_mm()
        pad = 0.25 * self.radius_mm
        return np.minimum(lo1, lo2) - pad, np.maximum(hi1, hi2) + pad


@dataclass(frozen=True, eq=False)
class TissueMaps:
    """What the anatomy holds at each voxel of one scan, arrays (z, y, x).

    organs : uint8 :data:`ORGAN_LABELS`; lesions : uint8 lesion number (0 = none);
    lesion_depth : float32 depth inside a lesion, 0 at its surface to 1 deep inside;
    liver : bool liver mask (parenchyma, lesions and intrahepatic vessels);
    clip_distance_mm : float32 distance to the clip surface (large far away);
    necrotic_lesion : number of the lesion with a necrotic core (depth > 0.5), 0 if none.
    """

    organs: np.ndarray
    lesions: np.ndarray
    lesion_depth: np.ndarray
    liver: np.ndarray
    clip_distance_mm: np.ndarray
    necrotic_lesion: int


@dataclass(frozen=True)
class Anatomy:
    """One drawn patient: every organ's shape in the reference frame (LPS mm)."""

    body: Body
    diaphragm: Diaphragm
    spine_xy_mm: np.ndarray
    vertebra_pitch_mm: float
    vertebra_phase_mm: float
    rib_phase_mm: float
    liver_blobs: tuple[Ellipsoid, ...]
    liver_inferior: np.ndarray  # z = c0 + c1 * y + c2 * x
    liver_ripple: SineField
    spleen: tuple[Ellipsoid, ...]
    kidneys: tuple[Ellipsoid, Ellipsoid]
    kidney_hila: tuple[Ellipsoid, Ellipsoid]
    stomach: Ellipsoid
    gallbladder: Ellipsoid
    heart: Ellipsoid
    aorta_xy_mm: np.ndarray
    ivc_xy_mm: np.ndarray
    portal_trunk: Tube
    portal_branches: tuple[Tube, ...]
    hepatic_veins: tuple[Tube, ...]
    lesions: tuple[Lesion, ...]
    necrotic_lesion: int  # number of the lesion with a necrotic core, 0 if none
    clip: Tube
    bowel: SineField
    bowel_gas: SineField

    # --- implicit organs (signed distance in mm) ------------------------------
    def liver_sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, inner: np.ndarray | None = None,
                  dome: np.ndarray | None = None) -> np.ndarray:
        """Signed distance (mm) of the liver; ``inner`` (depth inside the body wall) and
        ``dome`` (diaphragm height) may be passed when already known."""
        d = self.liver_blobs[0].sdf(x, y, z)
        for blob in self.liver_blobs[1:]:
            d = smooth_union(d, blob.sdf(x, y, z), k_mm=22)
        c0, c1, c2 = (np.float32(c) for c in self.liver_inferior)
        d = smooth_intersection(d, (c0 + c1 * y + c2 * x) - z, k_mm=12)
        if dome is None:
            dome = self.diaphragm.height(x, y)
        d = smooth_intersection(d, z - (dome - 4), k_mm=6)
        if inner is None:
            inner = self._inner(x, y)
        d = smooth_intersection(d, 3 - inner, k_mm=8)
        d = smooth_subtraction(d, self.kidneys[0].sdf(x, y, z) - 4, k_mm=8)
        d = smooth_subtraction(d, self.gallbladder.sdf(x, y, z) - 1, k_mm=4)
        d = smooth_subtraction(d, self.stomach.sdf(x, y, z) - 4, k_mm=8)
        sx, sy = (np.float32(c) for c in self.spine_xy_mm)
        d = smooth_subtraction(d, np.sqrt((x - sx) ** 2 + (y - sy) ** 2) - 34, k_mm=10)
        return d + self.liver_ripple(x, y, z)

    def liver_bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.min([b.bounds_mm()[0] for b in self.liver_blobs], axis=0) - 6
        hi = np.max([b.bounds_mm()[1] for b in self.liver_blobs], axis=0) + 6
        return lo, hi

    def _inner(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.body.depth(x, y) - self.body.wall_mm(x, y)[1]

    def clip_center_mm(self) -> np.ndarray:
        return (self.clip.start_mm + self.clip.end_mm) / 2

    # --- painting --------------------------------------------------------------
    def evaluate(self, points: ScanPoints, *, clip_dilation_mm: float = 0.0) -> TissueMaps:
        """Paint every structure at the anatomy points of a scan.

        ``clip_dilation_mm`` grows the clip's label (not its distance map) so
        that a clip thinner than a voxel still owns at least one voxel.
        """
        shape = points.grid.shape
        organs = np.zeros(shape, np.uint8)
        lesions = np.zeros(shape, np.uint8)
        lesion_depth = np.zeros(shape, np.float32)
        liver = np.zeros(shape, bool)
        clip_distance = np.full(shape, _FAR_MM, np.float32)

        def paint(box: Box, inside: np.ndarray, label: str) -> None:
            target = organs[box]
            target[np.broadcast_to(inside, target.shape)] = LABEL[label]

        def region(lo, hi) -> tuple[Box | None, tuple[np.ndarray, ...]]:
            box = points.box(np.asarray(lo, float), np.asarray(hi, float))
            return box, (points.take(box) if box is not None else (None, None, None))

        x, y, z = points.x, points.y, points.z
        body = self.body
        depth = np.broadcast_to(body.depth(x, y), shape)
        skin_fat, wall = (np.broadcast_to(w, shape) for w in body.wall_mm(x, y))
        inner = depth - wall
        organs[depth > 0] = LABEL["skin"]
        organs[depth > 2] = LABEL["subcutaneous fat"]
        organs[depth > skin_fat] = LABEL["muscle"]
        organs[inner > 0] = LABEL["visceral fat"]
        zd = np.broadcast_to(self.diaphragm.height(x, y), shape)

        # bowel loops fill the lower cavity
        box, (bx, by, bz) = region((-_FAR_MM, -_FAR_MM, -_FAR_MM), (_FAR_MM, _FAR_MM, -5))
        if box is not None:
            cavity = np.broadcast_to(inner[box] > 2, box_shape(box))
            sel = np.nonzero(cavity)
            px, py, pz = (np.broadcast_to(a, box_shape(box))[sel] for a in (bx, by, bz))
            loops = np.abs(self.bowel(px, py, pz)) < 0.5 + np.clip((-5 - pz) / 60, 0, 0.25)
            gas = loops & (self.bowel_gas(px, py, pz) > 1.25)
            values = np.where(gas, LABEL["gas"], np.where(loops, LABEL["bowel"], LABEL["visceral fat"]))
            organs[box][sel] = values.astype(np.uint8)

        # lungs above the diaphragm, beside the mediastinum
        thorax = (inner > 0) & (z > zd + 2)
        mediastinum = ((x - 8) / 34) ** 2 + ((y - np.float32(self.spine_xy_mm[1] - 55)) / 60) ** 2 < 1
        organs[thorax & ~mediastinum] = LABEL["lung"]
        organs[(inner > 0) & (z > zd - 3) & (z <= zd + 2)] = LABEL["muscle"]
        self._paint_ribs(organs, x, y, z, depth, wall)

        # mediastinum, great vessels, spine, back muscles
        heart = self.heart
        box, (hx, hy, hz) = region(*heart.bounds_mm())
        if box is not None:
            inside = smooth_intersection(heart.sdf(hx, hy, hz), (zd[box] + 3) - hz, k_mm=8) < 0
            paint(box, inside, "heart")
        self._paint_spine(organs, points, paint, region)

        # abdominal organs
        box, (px, py, pz) = region(*_union_bounds(self.spleen))
        if box is not None:
            d = self.spleen[0].sdf(px, py, pz)
            for part in self.spleen[1:]:
                d = smooth_union(d, part.sdf(px, py, pz), k_mm=15)
            d = smooth_intersection(d, pz - (zd[box] - 4), k_mm=6)
            d = smooth_subtraction(d, self.stomach.sdf(px, py, pz) - 3, k_mm=6)
            d = smooth_intersection(d, 2 - inner[box], k_mm=6)
            paint(box, d < 0, "spleen")
        for kidney, hilum, label in zip(self.kidneys, self.kidney_hila, ("right kidney", "left kidney")):
            box, (px, py, pz) = region(*kidney.bounds_mm())
            if box is not None:
                d = smooth_subtraction(kidney.sdf(px, py, pz), hilum.sdf(px, py, pz), k_mm=4)
                paint(box, d < 0, label)
        stomach = self.stomach
        box, (px, py, pz) = region(*stomach.bounds_mm())
        if box is not None:
            d = smooth_intersection(stomach.sdf(px, py, pz), pz - (zd[box] - 4), k_mm=6)
            paint(box, d < 0, "stomach")
            paint(box, (d < -4) & (py < np.float32(stomach.center_mm[1] - 0.4 * stomach.radii_mm[1])), "gas")
        box, (px, py, pz) = region(*self.gallbladder.bounds_mm())
        if box is not None:
            paint(box, self.gallbladder.sdf(px, py, pz) < 0, "gallbladder")

        # the liver with its vessels, lesions and the clip
        box, (px, py, pz) = region(*self.liver_bounds_mm())
        if box is not None:
            inside = np.broadcast_to(self.liver_sdf(px, py, pz, inner[box], zd[box]) < 0, box_shape(box))
            liver[box] = inside
            paint(box, inside, "liver")
        for vessel in self.hepatic_veins:
            self._paint_tube(vessel, "hepatic veins", organs, liver, region, inside_liver=True)
        for vessel in self.portal_branches:
            self._paint_tube(vessel, "portal vein", organs, liver, region, inside_liver=True)
        self._paint_tube(self.portal_trunk, "portal vein", organs, liver, region, inside_liver=False)
        ax, ay = self.aorta_xy_mm
        box, (px, py, pz) = region((ax - 13, ay - 13, -_FAR_MM), (ax + 13, ay + 13, _FAR_MM))
        if box is not None:
            inside = np.broadcast_to((px - np.float32(ax)) ** 2 + (py - np.float32(ay)) ** 2 < 12.0**2, box_shape(box))
            paint(box, inside, "aorta")
            liver[box] &= ~inside
        ix, iy = self.ivc_xy_mm
        box, (px, py, pz) = region((ix - 16, iy - 13, -_FAR_MM), (ix + 16, iy + 13, _FAR_MM))
        if box is not None:
            inside = (((px - np.float32(ix)) / 15) ** 2 + ((py - np.float32(iy)) / 11) ** 2 < 1) & (
                pz < zd[box] + 10)
            inside = np.broadcast_to(inside, box_shape(box))
            paint(box, inside, "inferior vena cava")
            liver[box] &= ~inside
        for number, lesion in enumerate(self.lesions, start=1):
            box, (px, py, pz) = region(*lesion.bounds_mm())
            if box is None:
                continue
            d = lesion.sdf(px, py, pz)
            inside = np.broadcast_to((d < 0), box_shape(box)) & liver[box]
            paint(box, inside, "liver lesion")
            lesions[box][inside] = number
            lesion_depth[box][inside] = np.clip(-np.broadcast_to(d, box_shape(box))[inside] / lesion.radius_mm, 0, 1)
        lo, hi = self.clip.bounds_mm()
        box, (px, py, pz) = region(lo - 12, hi + 12)
        if box is not None:
            d = np.broadcast_to(self.clip.sdf(px, py, pz), box_shape(box))
            clip_distance[box] = d
            paint(box, d < clip_dilation_mm, "clip")
        return TissueMaps(organs, lesions, lesion_depth, liver, clip_distance, self.necrotic_lesion)

    def _paint_tube(self, vessel: Tube, label: str, organs: np.ndarray, liver: np.ndarray,
                    region: Callable, *, inside_liver: bool) -> None:
        box, (px, py, pz) = region(*vessel.bounds_mm())
        if box is None:
            return
        inside = np.broadcast_to(vessel.sdf(px, py, pz) < 0, box_shape(box))
        if inside_liver:
            inside = inside & liver[box]
        organs[box][inside] = LABEL[label]

    def _paint_ribs(self, organs: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                    depth: np.ndarray, wall: np.ndarray) -> None:
        """Ribs: bands in the body wall that descend toward the front, above the costal margin."""
        rho = np.sqrt(x * x + y * y) + np.float32(1e-3)
        front = -y / rho  # 1 in front, -1 at the back
        pitch = np.float32(32)
        phase = (z + np.float32(self.rib_phase_mm) + 45 * (front + 1)) / pitch
        offset = (phase - np.floor(phase) - np.float32(0.5)) * pitch  # mm from the rib's centre line
        radial = depth - (wall - 3)
        shape_ = (radial / np.float32(5.0)) ** 2 + (offset / np.float32(6.5)) ** 2
        costal_margin = -45 - 30 * (1 - front) / 2 + 25 * np.maximum(front, 0)
        allowed = (z > costal_margin) & (front < 0.8) & (np.abs(x) > 30)
        rib = np.broadcast_to((shape_ < 1) & allowed, organs.shape)
        marrow = np.broadcast_to((shape_ < 0.35) & allowed, organs.shape)
        organs[rib] = LABEL["cortical bone"]
        organs[marrow] = LABEL["bone marrow"]

    def _paint_spine(self, organs: np.ndarray, points: ScanPoints, paint: Callable, region: Callable) -> None:
        """Paraspinal and psoas muscles, vertebral bodies with discs, canal and posterior arch."""
        sx, sy = (float(c) for c in self.spine_xy_mm)
        f = np.float32
        box, (px, py, pz) = region((sx - 75, sy - 40, -_FAR_MM), (sx + 75, sy + 110, _FAR_MM))
        if box is None:
            return
        dx, dy = px - f(sx), py - f(sy)
        back = ((np.abs(dx) - 30) / 26) ** 2 + ((dy - 50) / 22) ** 2 < 1
        psoas_r = np.clip(8 + 0.22 * (-50 - pz), 0, 22)
        psoas = ((np.abs(dx) - 38) ** 2 + (dy + 2) ** 2 < psoas_r**2) & (pz < -50)
        paint(box, back | psoas, "muscle")
        phase = (pz + f(self.vertebra_phase_mm)) / f(self.vertebra_pitch_mm)
        disc = (phase - np.floor(phase)) < f(8.0 / self.vertebra_pitch_mm)
        body_r = (dx / 23) ** 2 + (dy / 17) ** 2
        canal_r2 = dx**2 + (dy - 27) ** 2
        arch = (canal_r2 < 18**2) & (dy > 22)
        spinous = (np.abs(dx) < 3.5) & (dy > 30) & (dy < 68)
        within = phase - np.floor(phase)
        transverse = (np.abs(dx) < 40) & (np.abs(dy - 22) < 4) & (within > 0.45) & (within < 0.7)
        bone = (body_r < 1) | ((arch | spinous | transverse) & ~disc)
        paint(box, bone, "cortical bone")
        paint(box, (body_r < 0.72) & ~disc, "bone marrow")
        paint(box, (body_r < 1) & disc, "intervertebral disc")
        paint(box, canal_r2 < 10**2, "spinal canal")


def _union_bounds(parts: tuple[Ellipsoid, ...]) -> tuple[np.ndarray, np.ndarray]:
    return (np.min([p.bounds_mm()[0] for p in parts], axis=0), np.max([p.bounds_mm()[1] for p in parts], axis=0))
