"""A guided registration: which label maps guide it and where on the reference it works, decided here alone.

The command line, the patient run, the study and the benchmarks register through :func:`register_guided`
with images and what is drawn on them (:class:`Annotated`); the settings say the guidance and the working
region. NumPy only until the engine runs, so that a command can build the labels and the reference's
channels (:meth:`GuidedReference.prepare`) while PyTorch loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.register.config import RegistrationSettings
from sirtreg.register.guidance import guidance_labels
from sirtreg.register.pyramid import ReferenceChannels

if TYPE_CHECKING:
    from sirtreg.register.result import RegistrationResult


@dataclass(frozen=True, eq=False)
class Annotated:
    """An image and what is drawn on it, on its grid: the liver mask (any non-zero value) and the landmark map
    (one value per landmark: lesions, clips; the same value for the same landmark on every scan)."""

    image: Volume
    liver: LabelVolume | None = None
    landmarks: LabelVolume | None = None


def _reference_kind(settings: RegistrationSettings) -> str | None:
    """The reference label map the settings need: "liver", "liver+landmarks" or None."""
    if settings.guidance == "image":
        return "liver" if settings.working_region == "liver" else None
    return settings.guidance


def _labels(side: Annotated, kind: str | None, settings: RegistrationSettings, name: str) -> LabelVolume | None:
    """The guidance label map of one side (see :func:`guidance_labels`), or None for ``kind`` None."""
    if kind is None:
        return None
    if side.liver is None:
        need = (f"{settings.guidance} guidance" if settings.guidance != "image"
                else "the working region 'liver' (of image guidance too, where it only sets the region)")
        raise InputError(f"{need} needs the {name}'s liver mask")
    if kind == "liver+landmarks" and side.landmarks is None:
        raise InputError(f"liver+landmarks guidance needs the {name}'s landmark map")
    return guidance_labels(side.liver, side.landmarks if kind == "liver+landmarks" else None)


class GuidedReference:
    """The reference of one or several registrations (a patient run registers every scan to one MAA CT): its
    label maps, built once per kind, and its pyramid channels (:class:`ReferenceChannels`), computed once per
    settings and kept for the next registration."""

    def __init__(self, reference: Annotated) -> None:
        self.annotated = reference
        self.channels = ReferenceChannels()
        self._labels: dict[str | None, LabelVolume | None] = {}

    def labels(self, settings: RegistrationSettings) -> LabelVolume | None:
        """The reference label map the engine gets: the guidance labels, for ``image`` guidance the liver alone
        (it sets the "liver" working region), None for ``image`` guidance on the whole image."""
        kind = _reference_kind(settings)
        if kind not in self._labels:
            self._labels[kind] = _labels(self.annotated, kind, settings, "reference")
        return self._labels[kind]

    def prepare(self, settings: RegistrationSettings) -> None:
        """Compute now the reference channels a registration with ``settings`` uses (NumPy and SimpleITK, which
        run beside other work; see :meth:`ReferenceChannels.prepare`)."""
        self.channels.prepare(self.annotated.image, self.labels(settings), settings)


def guided_labels(reference: GuidedReference, floating: Annotated,
                  settings: RegistrationSettings) -> tuple[LabelVolume | None, LabelVolume | None]:
    """The label maps the engine gets, (reference, floating): see :meth:`GuidedReference.labels`; the floating
    image's are its guidance labels, None for ``image`` guidance. InputError names what is missing."""
    kind = None if settings.guidance == "image" else settings.guidance
    return reference.labels(settings), _labels(floating, kind, settings, "floating image")


def register_guided(reference: GuidedReference | Annotated, floating: Annotated,
                    settings: RegistrationSettings | None = None, *,
                    progress: Callable[[str, float], None] | None = None) -> RegistrationResult:
    """Register ``floating`` to ``reference`` with the settings' guidance and working region (default: the
    ``liver`` preset); returns the reference->floating transform (see :func:`~sirtreg.register.engine.register`).

    ``image`` guidance reads no floating contour; on the "liver" working region (the default) it reads the
    reference liver for the region alone. ``liver`` guidance needs both livers; ``liver+landmarks`` both
    livers and both landmark maps. A :class:`GuidedReference` keeps what the next registration to the same
    reference can reuse.
    """
    from sirtreg.register.engine import register

    settings = settings or RegistrationSettings()
    shared = reference if isinstance(reference, GuidedReference) else GuidedReference(reference)
    reference_labels, floating_labels = guided_labels(shared, floating, settings)
    return register(shared.annotated.image, floating.image, settings=settings, reference_labels=reference_labels,
                    floating_labels=floating_labels, progress=progress, reference_channels=shared.channels)
