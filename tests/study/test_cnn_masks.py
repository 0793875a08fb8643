"""CNN liver masks in studies: fine-tuning on the train split, the weights stamp of the mask cache, the DSC of
the masks (Fig. 5), and image-based methods that see no mask at all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume
from sirtreg.io import read_labels, write_image
from sirtreg.register import quick_settings
from sirtreg.report.study_figures import plot_cnn_dsc
from sirtreg.study import (
    COMPUTE,
    IMAGE_AFFINE,
    LIVER_AFFINE,
    Cohort,
    Task,
    finetune_cnn,
    read_manifest,
    run_registration_task,
    training_cases,
)
from sirtreg.study.cnn_masks import (
    STAMP,
    check_mask_weights,
    cnn_mask_dsc,
    compute_cnn_masks,
)

FAST = quick_settings()


@pytest.fixture(scope="module")
def cohort(phantom_cohort):
    """Two fast phantom patients: one in the train split, one in the test split."""
    return read_manifest(phantom_cohort[0])


def _with_cnn_livers(cohort: Cohort, folder) -> Cohort:
    """The cohort with a wrong 'CNN mask' for every image: a 30 mm cube in a corner of its grid."""
    patients = []
    for patient in cohort.patients:
        images = []
        for image in (patient.reference, *patient.floating):
            manual = read_labels(image.liver)
            cube = np.zeros(manual.array.shape, np.uint8)
            size = [max(2, int(30 / s)) for s in manual.grid.spacing_mm[::-1]]
            cube[:size[0], :size[1], :size[2]] = 1
            path = write_image(LabelVolume(cube, manual.grid, labels={1: "liver"}),
                               folder / f"{patient.id}_{getattr(image, 'id', 'reference')}.nii.gz")
            images.append(replace(image, cnn_liver=path))
        patients.append(replace(patient, reference=images[0], floating=tuple(images[1:])))
    return replace(cohort, patients=tuple(patients))


@pytest.mark.slow
def test_image_based_methods_are_guided_by_no_liver_mask(cohort, tmp_path):
    """As in the paper, image-based registration is guided by no segmentation: on the whole reference a wrong CNN
    mask changes nothing for it; on the default liver region the reference's guiding mask sets the region alone
    (a 30 mm cube in a corner: registration in the wrong place); the floating mask is never read. A wrong mask
    misleads the CNN-based affine."""
    wrong = _with_cnn_livers(cohort, tmp_path)
    patient = cohort.patients[0]
    task = Task(patient=patient.id, floating="contrast_ct", method=IMAGE_AFFINE)
    whole = replace(FAST, working_region="whole")
    plain, misled = (run_registration_task(c, task, settings=whole) for c in (cohort, wrong))
    assert plain["status"] == misled["status"] == "ok"
    assert plain["guidance_liver"] == misled["guidance_liver"] == "none"
    assert plain["rmsd_mm"] == misled["rmsd_mm"]  # exact: the same computation twice, the mask never read
    floating_only = replace(wrong, patients=(replace(wrong.patients[0], reference=patient.reference),
                                             *wrong.patients[1:]))
    region, region_misled = (run_registration_task(c, task, settings=FAST) for c in (cohort, floating_only))
    assert region["rmsd_mm"] == region_misled["rmsd_mm"]  # the floating image's mask is never read
    cornered = run_registration_task(wrong, task, settings=FAST)
    assert cornered["rmsd_mm"] != region["rmsd_mm"]
    liver_task = replace(task, method=LIVER_AFFINE)
    manual, cnn = (run_registration_task(c, liver_task, settings=FAST) for c in (cohort, wrong))
    assert (manual["guidance_liver"], cnn["guidance_liver"]) == ("manual", "cnn")
    assert cnn["rmsd_mm"] > manual["rmsd_mm"] + 5


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.full((2, 3), value), "conv.bias": torch.zeros(2)}


def test_the_mask_cache_is_stamped_and_refuses_masks_of_other_weights(tmp_path):
    checkpoint, model_only, other = tmp_path / "checkpoint.pt", tmp_path / "model.pt", tmp_path / "other.pt"
    torch.save({"model": _state(1.0), "optimizer": {"lr": 1e-4}, "losses": [0.5]}, checkpoint)
    torch.save(_state(1.0), model_only)
    torch.save(_state(2.0), other)
    folder = tmp_path / "masks"
    check_mask_weights(folder, checkpoint)  # a new cache: stamped with these weights
    assert (folder / STAMP).is_file()
    check_mask_weights(folder, model_only)  # the same network saved alone: the same weights
    with pytest.raises(InputError, match="were made with weights of SHA-256 .* not with other.pt"):
        check_mask_weights(folder, other)
    with pytest.raises(InputError, match="not with the published network"):
        check_mask_weights(folder, None)
    legacy = tmp_path / "legacy"  # masks from before stamps: the published network's
    (legacy / "P01").mkdir(parents=True)
    (legacy / "P01" / "reference_liver_cnn.nii.gz").write_bytes(b"")
    check_mask_weights(legacy, None)
    with pytest.raises(InputError, match="made with the published network, not with model.pt"):
        check_mask_weights(legacy, model_only)


def test_bad_weights_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        check_mask_weights(tmp_path / "masks", tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a network")
    with pytest.raises(InputError, match="cannot be read as a network's weights"):
        check_mask_weights(tmp_path / "masks", garbage)
    assert not (tmp_path / "masks").exists()


def test_masks_are_computed_with_the_fine_tuned_weights(cohort, tmp_path, monkeypatch):
    import sirtreg.segment

    weights = tmp_path / "tuned.pt"
    torch.save(_state(3.0), weights)
    seen = []

    def fake_segment_liver(volume, *, modality, device, weights):
        seen.append(weights)
        return LabelVolume(np.ones(volume.array.shape, np.uint8), volume.grid, labels={1: "liver"})

    monkeypatch.setattr(sirtreg.segment, "segment_liver", fake_segment_liver)
    patient = cohort.patients[0]
    computing = Cohort(patients=(replace(patient, reference=replace(patient.reference, cnn_liver=COMPUTE)),))

    def submit(function, *args, pure):
        return lambda: function(*args)

    folder = tmp_path / "masks"
    _, failures = compute_cnn_masks(computing, [patient.id], folder, submit, lambda fs: [f() for f in fs],
                                    weights=weights)
    assert failures == {} and seen == [weights]
    with pytest.raises(InputError, match="not with the published network"):
        compute_cnn_masks(computing, [patient.id], folder, submit, lambda fs: [f() for f in fs])


def test_fine_tuning_learns_the_train_split_only(cohort, tmp_path, monkeypatch):
    import sirtreg.segment

    train = [p for p in cohort.patients if p.split == "train"]
    cases = training_cases(cohort)
    assert len(cases) == sum(1 + len(p.floating) for p in train)
    manual = [read_labels(image.liver) for p in train for image in (p.reference, *p.floating)]
    assert [case.liver.array.sum() for case in cases] == [m.array.sum() for m in manual]
    assert [case.modality for case in cases] == ["ct"] + [i.modality.lower() for i in train[0].floating]
    captured = {}

    def fake_train(cases, **options):
        captured.update(options, cases=cases)
        return "result"

    monkeypatch.setattr(sirtreg.segment, "train", fake_train)
    assert finetune_cnn(cohort, tmp_path / "cnn", steps=7, device="cpu") == "result"
    assert (len(captured["cases"]), captured["steps"], captured["checkpoint_dir"]) == (len(cases), 7, tmp_path / "cnn")
    only_test = replace(cohort, patients=tuple(p for p in cohort.patients if p.split == "test"))
    with pytest.raises(InputError, match="no patients in the 'train' split"):
        training_cases(only_test)


def test_cnn_mask_dsc_against_known_overlaps(cohort, tmp_path):
    """The manual contour as 'CNN mask' has DSC 1; an eroded one 2|E| / (|E| + |M|)."""
    patient = cohort.patients[0]
    folder = tmp_path / "masks"
    reference = read_labels(patient.reference.liver)
    write_image(reference, folder / patient.id / "reference_liver_cnn.nii.gz")
    floating = patient.floating[0]
    manual = read_labels(floating.liver)
    eroded = ndimage.binary_erosion(manual.array > 0, iterations=2)
    write_image(LabelVolume(eroded.astype(np.uint8), manual.grid, labels={1: "liver"}),
                folder / patient.id / f"{floating.id}_liver_cnn.nii.gz")
    mr = patient.floating[1]  # on an oblique grid: a mask written from a resampling differs in the last digits
    mr_manual = read_labels(mr.liver)
    nudged = replace(mr_manual.grid, origin_mm=tuple(o + 2e-4 for o in mr_manual.grid.origin_mm))
    write_image(LabelVolume(mr_manual.array, nudged, labels={1: "liver"}), folder / patient.id / f"{mr.id}_liver_cnn.nii.gz")
    rows = cnn_mask_dsc(cohort, folder)
    assert [(r["image"], r["modality"], r["split"]) for r in rows] == [
        ("reference", "CT", patient.split), (floating.id, floating.modality, patient.split),
        (mr.id, "MR", patient.split)]
    assert rows[0]["dsc"] == pytest.approx(1.0) and rows[2]["dsc"] == pytest.approx(1.0)
    expected = 2 * eroded.sum() / (eroded.sum() + (manual.array > 0).sum())
    assert rows[1]["dsc"] == pytest.approx(expected) and rows[1]["dsc"] < 0.95
    shifted = replace(mr_manual.grid, origin_mm=tuple(o + 2.0 for o in mr_manual.grid.origin_mm))
    write_image(LabelVolume(mr_manual.array, shifted, labels={1: "liver"}),
                folder / patient.id / f"{mr.id}_liver_cnn.nii.gz", overwrite=True)
    with pytest.raises(InputError, match="not on the grid of the manual contour"):
        cnn_mask_dsc(cohort, folder)
    png = plot_cnn_dsc(rows, tmp_path / "dsc.png")
    assert png.stat().st_size > 1000
    with pytest.raises(InputError, match="no CNN liver mask"):
        plot_cnn_dsc([], tmp_path / "empty.png")
