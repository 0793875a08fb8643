"""Registration: transforms, loss terms, the engine, the paper's guidance presets, and the guided registration
(:func:`register_guided`) through which every command registers.

The engine (:func:`register`) loads PyTorch, so it is imported at its first use: a command can read its
inputs, check them and build the reference's channels (:class:`ReferenceChannels`) while PyTorch loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sirtreg.register.config import AffineSettings, NonRigidSettings, RegistrationSettings, preset, quick_settings
from sirtreg.register.guidance import guidance_labels
from sirtreg.register.guided import Annotated, GuidedReference, guided_labels, register_guided
from sirtreg.register.pyramid import ReferenceChannels
from sirtreg.register.quality import RegistrationQuality, liver_dsc, registration_quality
from sirtreg.register.result import LevelRecord, RegistrationResult
from sirtreg.register.storage import read_transform, write_registration
from sirtreg.register.transforms import AffineTransform, compose_displacements, read_affine, write_affine
from sirtreg.register.warp import map_floating_points, map_reference_points, mapped_points, warp

__all__ = [
    "AffineSettings",
    "AffineTransform",
    "Annotated",
    "GuidedReference",
    "LevelRecord",
    "NonRigidSettings",
    "ReferenceChannels",
    "RegistrationQuality",
    "RegistrationResult",
    "RegistrationSettings",
    "compose_displacements",
    "guidance_labels",
    "guided_labels",
    "liver_dsc",
    "map_floating_points",
    "map_reference_points",
    "mapped_points",
    "preset",
    "quick_settings",
    "read_affine",
    "read_transform",
    "register",
    "register_guided",
    "registration_quality",
    "warp",
    "write_affine",
    "write_registration",
]

if TYPE_CHECKING:
    from sirtreg.register.engine import register


def __getattr__(name: str) -> Any:
    """``register``, imported (with PyTorch) when first asked for."""
    if name == "register":
        from sirtreg.register.engine import register

        globals()["register"] = register
        return register
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
