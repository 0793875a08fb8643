"""The paper's liver U-Net (and the same group's lesion U-Net): weights, inference, fine-tuning.

Library code never prints; progress goes through ``progress(step, fraction)``
callbacks and logging. Weights are fetched at first use into the user cache
(see :mod:`sirtreg.segment.weights`).
"""

from sirtreg.segment.inference import segment_lesions, segment_liver
from sirtreg.segment.network import LESION_SPEC, LIVER_SPEC, UNet3D, UNetSpec
from sirtreg.segment.training import TrainingCase, TrainingResult, read_manifest, train
from sirtreg.segment.weights import (
    ModelFetchError,
    ModelIntegrityError,
    ModelRecord,
    fetch_models,
    list_models,
    load_network,
    models_dir,
    remove_models,
)

__all__ = [
    "LESION_SPEC",
    "LIVER_SPEC",
    "ModelFetchError",
    "ModelIntegrityError",
    "ModelRecord",
    "TrainingCase",
    "TrainingResult",
    "UNet3D",
    "UNetSpec",
    "fetch_models",
    "list_models",
    "load_network",
    "models_dir",
    "read_manifest",
    "remove_models",
    "segment_lesions",
    "segment_liver",
    "train",
]
