"""Registration: transforms, warping (and, to come, loss terms, engine and presets)."""

from sirtreg.register.transforms import (
    AffineTransform,
    compose_displacements,
    read_affine,
    write_affine,
)
from sirtreg.register.warp import map_floating_points, map_reference_points, warp

__all__ = [
    "AffineTransform",
    "compose_displacements",
    "map_floating_points",
    "map_reference_points",
    "read_affine",
    "warp",
    "write_affine",
]
