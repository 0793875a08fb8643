"""The digital SIRT patient: a seeded abdomen phantom with known truth and known deformations.

:func:`make_patient` renders one patient in memory; :func:`write_patient`
writes its folder of NIfTI files with a ``patient.json`` manifest. See
:mod:`sirtreg.phantom.patient` for the scans and
:mod:`sirtreg.phantom.deformation` for the transform convention.
"""

from sirtreg.phantom.anatomy import ORGAN_LABELS, Anatomy
from sirtreg.phantom.deformation import Breathing, draw_breathing
from sirtreg.phantom.drawing import draw_anatomy
from sirtreg.phantom.patient import (
    DISPLACEMENT_CONVENTION,
    MANIFEST_NAME,
    RESOLUTIONS,
    Patient,
    Scan,
    Spect,
    make_patient,
    write_patient,
)

__all__ = [
    "DISPLACEMENT_CONVENTION",
    "MANIFEST_NAME",
    "ORGAN_LABELS",
    "RESOLUTIONS",
    "Anatomy",
    "Breathing",
    "Patient",
    "Scan",
    "Spect",
    "draw_anatomy",
    "draw_breathing",
    "make_patient",
    "write_patient",
]
