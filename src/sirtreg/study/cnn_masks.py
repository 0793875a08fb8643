"""CNN liver masks for a study: the images whose manifest says ``cnn_liver: compute``, segmented once.

Before a study's registrations start, every image they need with ``compute`` is
segmented by the liver CNN (:func:`sirtreg.segment.segment_liver`) on the
study's Dask workers, and the mask is written to a cache folder beside the
results table (``<table stem>_cnn_livers/<patient>/<image>_liver_cnn.nii.gz``,
under a temporary name, then renamed). A mask already in the cache is not
computed again, so a resumed or repeated study reuses them; delete the folder to
recompute. The cohort is then the same one with those files as its CNN masks.

The masks come from the published network, or from fine-tuned weights (a
checkpoint of :func:`finetune_cnn`, which trains on the manual contours of the
train split). ``weights.json`` in the cache folder records which (the SHA-256 of
the network's parameters), and a study with other weights is refused rather than
mixing masks of two networks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sirtreg.errors import InputError
from sirtreg.io import read_image, read_labels, write_image
from sirtreg.output_folder import write_atomically
from sirtreg.progress import Progress, no_progress
from sirtreg.study.manifest import COMPUTE, Cohort, FloatingImage, Patient, ReferenceImage

log = logging.getLogger(__name__)

REFERENCE_ID = "reference"
STAMP = "weights.json"
PUBLISHED = "published"


def cnn_mask_folder(results_path: Path) -> Path:
    """Where the CNN masks of the study writing ``results_path`` are cached."""
    return results_path.with_name(f"{results_path.stem}_cnn_livers")


def _images(patient: Patient) -> list[tuple[str, ReferenceImage | FloatingImage, str]]:
    """(id, image, modality) of the patient's reference (id "reference", a CT) and floating images."""
    return [(REFERENCE_ID, patient.reference, "CT"), *((image.id, image, image.modality) for image in patient.floating)]


def _mask_path(folder: Path, patient: str, image_id: str) -> Path:
    return folder / patient / f"{image_id}_liver_cnn.nii.gz"


def _segment_on_worker(image: Path, modality: str, out_path: Path, device: str, weights: Path | None) -> Path:
    """Segment one image's liver with one torch thread and write the mask; returns its path."""
    from sirtreg.segment import segment_liver

    torch.set_num_threads(1)
    volume = read_image(image, modality=modality)
    mask = segment_liver(volume, modality=modality.lower(), device=device, weights=weights)
    return write_image(mask, out_path)


def require_weights_file(weights: str | os.PathLike[str]) -> None:
    """Refuse fine-tuned CNN weights that are no file (InputError)."""
    if not Path(weights).is_file():
        raise InputError(f"CNN weights {weights}: no such file")


def _weights_id(weights: Path | None) -> str:
    """"published", or the SHA-256 of a fine-tuned network's parameters (names and float32 values, in
    order), so a full training checkpoint and the same model saved alone have one id."""
    if weights is None:
        return PUBLISHED
    require_weights_file(weights)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = state.get("model", state)
        digest = hashlib.sha256()
        for name, tensor in model.items():
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    except Exception as exc:  # noqa: BLE001 - any unpickling or content error means a bad file
        raise InputError(f"CNN weights {weights} cannot be read as a network's weights: {exc}") from None
    return digest.hexdigest()


def check_mask_weights(folder: Path, weights: Path | None) -> None:
    """Refuse a mask cache made with other weights; stamp a new one with these (see the module docstring).

    A folder without a stamp but with masks holds masks of the published network (made before stamps)."""
    wanted = _weights_id(weights)
    stamp = folder / STAMP
    if stamp.is_file():
        made_with = json.loads(stamp.read_text(encoding="utf-8"))["weights"]
    elif folder.is_dir() and any(folder.iterdir()):
        made_with = PUBLISHED  # a cache from before stamps: the published network
    else:
        write_atomically(stamp, json.dumps({"weights": wanted, "file": weights.name if weights else None}) + "\n")
        return
    if made_with != wanted:
        describe = {PUBLISHED: "the published network"}
        raise InputError(f"the CNN masks cached in {folder} were made with "
                         f"{describe.get(made_with, 'weights of SHA-256 ' + made_with[:12])}, not with "
                         f"{describe.get(wanted, weights.name if weights else wanted)}: write the results "
                         "table elsewhere, or delete that folder to segment again")


def _with_masks(patient: Patient, folder: Path) -> Patient:
    """The patient with every ``compute`` replaced by its cached mask path."""
    reference = patient.reference
    if reference.cnn_liver == COMPUTE:
        reference = replace(reference, cnn_liver=_mask_path(folder, patient.id, REFERENCE_ID))
    floating = tuple(replace(image, cnn_liver=_mask_path(folder, patient.id, image.id))
                     if image.cnn_liver == COMPUTE else image for image in patient.floating)
    return replace(patient, reference=reference, floating=floating)


def needed_masks(cohort: Cohort, patients: Iterable[str], folder: Path
                 ) -> list[tuple[str, ReferenceImage | FloatingImage, str, Path]]:
    """(patient, image, modality, mask path) of every ``compute`` image of ``patients`` whose mask is not cached yet."""
    wanted = set(patients)
    needed = []
    for patient in cohort.patients:
        if patient.id not in wanted:
            continue
        for image_id, image, modality in _images(patient):
            path = _mask_path(folder, patient.id, image_id)
            if image.cnn_liver == COMPUTE and not path.is_file():
                needed.append((patient.id, image, modality, path))
    return needed


def compute_cnn_masks(cohort: Cohort, patients: Iterable[str], folder: Path, submit: Callable[..., Any],
                      gather: Callable[[list[Any]], list[Any]], *, device: str = "cpu",
                      weights: Path | None = None, progress: Progress | None = None
                      ) -> tuple[Cohort, dict[str, str]]:
    """Segment what ``patients`` need (see the module docstring) with ``submit``/``gather`` (a Dask client's).

    ``weights``: fine-tuned weights (a :func:`finetune_cnn` checkpoint) instead of the published ones.

    Returns the cohort with cached mask paths in place of ``compute`` and, per patient
    whose segmentation failed, the error text (its registrations cannot run).
    """
    report = progress or no_progress
    patients = list(patients)
    if any(image.cnn_liver == COMPUTE for patient in cohort.patients if patient.id in patients
           for _, image, _ in _images(patient)):
        check_mask_weights(folder, weights)
    needed = needed_masks(cohort, patients, folder)
    failures: dict[str, str] = {}
    if needed:
        log.info("segmenting %d liver(s) with the CNN for the study", len(needed))
        report(f"CNN livers: {len(needed)} to segment", 0.0)
        futures = [submit(_segment_on_worker, image.image, modality, path, device, weights, pure=False)
                   for _, image, modality, path in needed]
        for (patient, *_), outcome in zip(needed, gather(futures), strict=True):
            if isinstance(outcome, BaseException):
                failures.setdefault(patient, f"CNN liver segmentation failed: {type(outcome).__name__}: {outcome}")
                log.warning("patient %s: CNN liver segmentation failed: %s", patient, outcome)
        report("CNN livers done", 1.0)
    return replace(cohort, patients=tuple(_with_masks(p, folder) for p in cohort.patients)), failures


def training_cases(cohort: Cohort, *, split: str = "train") -> list[Any]:
    """Every image of the ``split`` patients (reference and floating) with its manual liver contour, as
    :class:`sirtreg.segment.TrainingCase` objects (read into memory)."""
    from sirtreg.segment.training import TrainingCase

    cases = []
    for patient in cohort.patients:
        if patient.split != split:
            continue
        for _, image, modality in _images(patient):
            cases.append(TrainingCase(read_image(image.image, modality=modality), read_labels(image.liver),
                                      modality.lower()))
    if not cases:
        raise InputError(f"the cohort has no patients in the {split!r} split to fine-tune on")
    return cases


def finetune_cnn(cohort: Cohort, checkpoint_dir: str | os.PathLike[str], *, steps: int, split: str = "train",
                 batch_size: int = 2, device: str | None = None, progress: Progress | None = None) -> Any:
    """Fine-tune the published liver CNN on the manual contours of the ``split`` patients; returns the
    :class:`sirtreg.segment.TrainingResult` (its ``checkpoint`` is the weights file for the study's masks).

    The test split is never seen, so CNN-guided results on it stay a fair test. A checkpoint in
    ``checkpoint_dir`` is resumed (see :func:`sirtreg.segment.train`).
    """
    from sirtreg.segment import train

    cases = training_cases(cohort, split=split)
    log.info("fine-tuning the liver CNN on %d images of the %s split for %d steps", len(cases), split, steps)
    return train(cases, steps=steps, checkpoint_dir=checkpoint_dir, batch_size=batch_size, device=device,
                 progress=progress)


def cnn_mask_dsc(cohort: Cohort, folder: Path) -> list[dict[str, Any]]:
    """The DSC of every cached CNN mask in ``folder`` against its manual liver contour (the paper's Fig. 5).

    Returns one row per mask found: ``patient``, ``image`` (``reference`` or the floating id),
    ``modality`` (the reference is CT), ``split`` and ``dsc``. Images without a cached mask are left out.
    """
    from sirtreg.metrics import dice

    rows = []
    for patient in cohort.patients:
        for image_id, image, modality in _images(patient):
            path = _mask_path(folder, patient.id, image_id)
            if not path.is_file():
                continue
            mask, manual = read_labels(path), read_labels(image.liver)
            if not mask.grid.same_as(manual.grid):
                raise InputError(f"{path}: not on the grid of the manual contour {image.liver}")
            rows.append({"patient": patient.id, "image": image_id, "modality": modality, "split": patient.split,
                         "dsc": dice(mask.array > 0, manual.array > 0)})
    return rows
