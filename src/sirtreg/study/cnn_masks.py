"""CNN liver masks for a study: the images whose manifest says ``cnn_liver: compute``, segmented once.

Before a study's registrations start, every image they need with ``compute`` is
segmented by the liver CNN (:func:`sirtreg.segment.segment_liver`) on the
study's Dask workers, and the mask is written to a cache folder beside the
results table (``<table stem>_cnn_livers/<patient>/<image>_liver_cnn.nii.gz``,
under a temporary name, then renamed). A mask already in the cache is not
computed again, so a resumed or repeated study reuses them; delete the folder to
recompute. The cohort is then the same one with those files as its CNN masks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sirtreg.io import read_image, write_image
from sirtreg.progress import Progress, no_progress
from sirtreg.study.manifest import COMPUTE, Cohort, FloatingImage, Patient, ReferenceImage

log = logging.getLogger(__name__)

REFERENCE_ID = "reference"


def cnn_mask_folder(results_path: Path) -> Path:
    """Where the CNN masks of the study writing ``results_path`` are cached."""
    return results_path.with_name(f"{results_path.stem}_cnn_livers")


def _mask_path(folder: Path, patient: str, image_id: str) -> Path:
    return folder / patient / f"{image_id}_liver_cnn.nii.gz"


def _segment_on_worker(image: Path, modality: str, out_path: Path, device: str) -> Path:
    """Segment one image's liver with one torch thread and write the mask; returns its path."""
    from sirtreg.segment import segment_liver

    torch.set_num_threads(1)
    volume = read_image(image, modality=modality)
    mask = segment_liver(volume, modality=modality.lower(), device=device)
    return write_image(mask, out_path)


def _with_masks(patient: Patient, folder: Path) -> Patient:
    """The patient with every ``compute`` replaced by its cached mask path."""
    reference = patient.reference
    if reference.cnn_liver == COMPUTE:
        reference = replace(reference, cnn_liver=_mask_path(folder, patient.id, REFERENCE_ID))
    floating = tuple(replace(image, cnn_liver=_mask_path(folder, patient.id, image.id))
                     if image.cnn_liver == COMPUTE else image for image in patient.floating)
    return replace(patient, reference=reference, floating=floating)


def needed_masks(cohort: Cohort, patients: Iterable[str], folder: Path
                 ) -> list[tuple[str, ReferenceImage | FloatingImage, Path]]:
    """(patient, image, mask path) of every ``compute`` image of ``patients`` whose mask is not cached yet."""
    wanted = set(patients)
    needed = []
    for patient in cohort.patients:
        if patient.id not in wanted:
            continue
        images: list[tuple[str, ReferenceImage | FloatingImage]] = [(REFERENCE_ID, patient.reference)]
        images += [(image.id, image) for image in patient.floating]
        for image_id, image in images:
            path = _mask_path(folder, patient.id, image_id)
            if image.cnn_liver == COMPUTE and not path.is_file():
                needed.append((patient.id, image, path))
    return needed


def compute_cnn_masks(cohort: Cohort, patients: Iterable[str], folder: Path, submit: Callable[..., Any],
                      gather: Callable[[list[Any]], list[Any]], *, device: str = "cpu",
                      progress: Progress | None = None) -> tuple[Cohort, dict[str, str]]:
    """Segment what ``patients`` need (see the module docstring) with ``submit``/``gather`` (a Dask client's).

    Returns the cohort with cached mask paths in place of ``compute`` and, per patient
    whose segmentation failed, the error text (its registrations cannot run).
    """
    report = progress or no_progress
    patients = list(patients)
    needed = needed_masks(cohort, patients, folder)
    failures: dict[str, str] = {}
    if needed:
        log.info("segmenting %d liver(s) with the CNN for the study", len(needed))
        report(f"CNN livers: {len(needed)} to segment", 0.0)
        futures = [submit(_segment_on_worker, image.image, getattr(image, "modality", "CT"), path, device,
                          pure=False) for _, image, path in needed]
        for (patient, _, path), outcome in zip(needed, gather(futures), strict=True):
            if isinstance(outcome, BaseException):
                failures.setdefault(patient, f"CNN liver segmentation failed: {type(outcome).__name__}: {outcome}")
                log.warning("patient %s: CNN liver segmentation failed: %s", patient, outcome)
        report("CNN livers done", 1.0)
    return replace(cohort, patients=tuple(_with_masks(p, folder) for p in cohort.patients)), failures
