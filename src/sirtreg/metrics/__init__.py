"""Registration and segmentation quality metrics, all in mm and spacing-aware."""

from sirtreg.metrics.jacobian import (
    JacobianStatistics,
    jacobian_determinant,
    jacobian_statistics,
)
from sirtreg.metrics.landmarks import mass_centre_distances_mm, rmsd_mm, rrmsd_mm
from sirtreg.metrics.overlap import dice
from sirtreg.metrics.surface import (
    hausdorff95_mm,
    mean_surface_distance_mm,
    surface_distances_mm,
)

__all__ = [
    "JacobianStatistics",
    "dice",
    "hausdorff95_mm",
    "jacobian_determinant",
    "jacobian_statistics",
    "mass_centre_distances_mm",
    "mean_surface_distance_mm",
    "rmsd_mm",
    "rrmsd_mm",
    "surface_distances_mm",
]
