"""A cohort of digital patients with its manifest, for studies with known answers.

:func:`write_phantom_cohort` writes one digital patient per folder with
:func:`sirtreg.phantom.write_patient` and a ``cohort.yaml`` manifest (see
:mod:`sirtreg.study.manifest`) listing them. Each phantom patient has one
reference (the MAA CT), the MAA SPECT and two floating images: a portal-venous
contrast CT and a T1 MR. The truth liver masks serve as manual liver contours.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sirtreg.errors import InputError
from sirtreg.io import prepare_output_folder
from sirtreg.phantom import RESOLUTIONS, write_patient
from sirtreg.progress import Progress, no_progress
from sirtreg.study.manifest import (
    COMPUTE,
    Cohort,
    FloatingImage,
    Patient,
    ReferenceImage,
    SpectImage,
    write_manifest,
)

log = logging.getLogger(__name__)

COHORT_MANIFEST_NAME = "cohort.yaml"
PHANTOM_ISOTOPE = "Y-90"
PHANTOM_ACTIVITY_GBQ = (1.0, 3.0)
_ROLES = {"contrast_ct": "portal-venous contrast CT", "mr_t1": "T1-weighted MR"}


def _check(*, patients: int, resolution: str, train_fraction: float, cnn_masks: str | None) -> None:
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise InputError(f"patients must be a whole number >= 1, got {patients!r}")
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if not 0 <= train_fraction <= 1:
        raise InputError(f"train_fraction must be in [0, 1], got {train_fraction!r}")
    if cnn_masks not in (None, COMPUTE):
        raise InputError(f"cnn_masks must be {COMPUTE!r} or None, got {cnn_masks!r}")


def _cohort_patient(folder: Path, manifest: dict[str, Any], *, patient_id: str, split: str, activity_gbq: float,
                    cnn_liver: Literal["compute"] | None) -> Patient:
    """The cohort entry of one phantom patient from the ``patient.json`` that :func:`write_patient` returned."""
    reference = manifest["reference"]
    floating = tuple(
        FloatingImage(id=scan["name"], modality=scan["modality"], role=_ROLES.get(scan["name"], ""),
                      image=folder / scan["image"], liver=folder / scan["liver"],
                      landmark_map=folder / scan["landmark_map"], lesions=folder / scan["lesions"],
                      cnn_liver=cnn_liver)
        for scan in manifest["floating"]
    )
    return Patient(
        id=patient_id,
        split=split,
        reference=ReferenceImage(image=folder / reference["image"], liver=folder / reference["liver"],
                                 landmark_map=folder / reference["landmark_map"],
                                 lesions=folder / reference["lesions"], cnn_liver=cnn_liver),
        spect=SpectImage(image=folder / manifest["spect"]["image"], activity_gbq=activity_gbq,
                         isotope=PHANTOM_ISOTOPE, lung_shunt_fraction=manifest["spect"]["lung_shunt_fraction"]),
        floating=floating,
    )


def write_phantom_cohort(
    out_dir: str | os.PathLike[str],
    *,
    patients: int = 20,
    resolution: str = "full",
    seed: int = 0,
    train_fraction: float = 0.5,
    cnn_masks: Literal["compute"] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write ``patients`` digital patients (folders P01, P02, ...) and their ``cohort.yaml``; returns its path.

    Patient ``i`` (from 0) draws its phantom seed and its Y-90 activity (uniform in
    1-3 GBq) from ``numpy.random.default_rng([seed, i])``, so a smaller cohort of the
    same ``seed`` holds the first patients of a larger one. ``round(train_fraction *
    patients)`` patients (halves up), drawn by ``seed``, form the train split; the
    others the test split. The lung shunt fraction is the phantom's truth.
    ``cnn_masks="compute"`` asks for CNN liver masks to be computed; otherwise the
    manifest has none. ``resolution`` is "full" or "fast" (see :func:`write_patient`).

    Refuses a non-empty ``out_dir`` unless ``overwrite`` (:class:`~sirtreg.errors.OutputExistsError`).
    ``progress(step, fraction)`` is called as the work advances.
    """
    _check(patients=patients, resolution=resolution, train_fraction=train_fraction, cnn_masks=cnn_masks)
    report = progress or no_progress
    out_dir = prepare_output_folder(Path(os.path.abspath(out_dir)), overwrite=overwrite)
    n_train = math.floor(train_fraction * patients + 0.5)
    train = set(np.random.default_rng(seed).permutation(patients)[:n_train].tolist())
    width = max(2, len(str(patients)))
    entries = []
    for index in range(patients):
        patient_id = f"P{index + 1:0{width}d}"
        rng = np.random.default_rng([seed, index])
        patient_seed = int(rng.integers(2**31))
        activity_gbq = round(float(rng.uniform(*PHANTOM_ACTIVITY_GBQ)), 2)
        start = 0.99 * index / patients
        manifest = write_patient(
            out_dir / patient_id, seed=patient_seed, resolution=resolution, overwrite=overwrite,
            progress=lambda step, fraction, i=patient_id, s=start: report(
                f"{i}: {step}", s + 0.99 * fraction / patients),
        )
        entries.append(_cohort_patient(out_dir / patient_id, manifest, patient_id=patient_id,
                                       split="train" if index in train else "test", activity_gbq=activity_gbq,
                                       cnn_liver=cnn_masks))
    report("manifest", 0.99)
    path = write_manifest(Cohort(patients=tuple(entries), name=f"phantom cohort (seed {seed})"),
                          out_dir / COHORT_MANIFEST_NAME, overwrite=overwrite)
    log.info("wrote a phantom cohort of %d patients (%d train, %d test) to %s", patients, n_train,
             patients - n_train, out_dir)
    report("done", 1.0)
    return path
