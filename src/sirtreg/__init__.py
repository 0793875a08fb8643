"""sirtreg: multi-modality liver registration and lesion dosimetry for SIRT."""

from sirtreg.errors import (
    GeometryMismatchError,
    InputError,
    OutputExistsError,
    SirtregError,
)
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.named_points import Landmarks
from sirtreg.resample import crop_to_mask, resample, sample_at

__version__ = "0.1.0"

__all__ = [
    "GeometryMismatchError",
    "Grid",
    "InputError",
    "LabelVolume",
    "Landmarks",
    "OutputExistsError",
    "SirtregError",
    "Volume",
    "__version__",
    "crop_to_mask",
    "resample",
    "sample_at",
]
