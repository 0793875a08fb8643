"""Registration and segmentation quality metrics, all spacing-aware."""

from sirtreg.metrics.overlap import dice

__all__ = ["dice"]
