"""Registration: transforms, loss terms, the engine and the paper's guidance presets."""

from sirtreg.register.config import AffineSettings, NonRigidSettings, RegistrationSettings, preset
from sirtreg.register.engine import ReferenceChannels, guidance_labels, register
from sirtreg.register.quality import RegistrationQuality, registration_quality
from sirtreg.register.result import LevelRecord, RegistrationResult
from sirtreg.register.storage import read_transform, write_registration
from sirtreg.register.transforms import AffineTransform, compose_displacements, read_affine, write_affine
from sirtreg.register.warp import map_floating_points, map_reference_points, mapped_points, warp

__all__ = [
    "AffineSettings",
    "AffineTransform",
    "LevelRecord",
    "NonRigidSettings",
    "ReferenceChannels",
    "RegistrationQuality",
    "RegistrationResult",
    "RegistrationSettings",
    "compose_displacements",
    "guidance_labels",
    "map_floating_points",
    "map_reference_points",
    "mapped_points",
    "preset",
    "read_affine",
    "read_transform",
    "register",
    "registration_quality",
    "warp",
    "write_affine",
    "write_registration",
]
