"""Registration studies: methods, one task, the resumable results table on Dask, summaries and grid search.

Registrations are affine only with one short pyramid level (a second each), on a
two-patient phantom cohort at fast resolution; most runs share one local Dask worker.
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume
from sirtreg.io import read_labels, write_image
from sirtreg.register import quick_settings
from sirtreg.study import (
    COLUMNS,
    COMPUTE,
    IMAGE_AFFINE,
    LIVER,
    LIVER_AFFINE,
    LIVER_LANDMARKS,
    PAPER_METHODS,
    Cohort,
    Method,
    Task,
    best_methods,
    engine_settings_id,
    grid_methods,
    grid_search,
    read_manifest,
    read_results,
    run_registration_task,
    run_study,
    study_tasks,
    summarise,
)

FAST = quick_settings()
VARYING = ("seconds", "finished_utc")


class Killed(Exception):
    """Stands for the study being killed."""


@pytest.fixture(scope="module")
def cohort_path(phantom_cohort):
    return phantom_cohort[0]


@pytest.fixture(scope="module")
def cohort(cohort_path):
    return read_manifest(cohort_path)


@pytest.fixture(scope="module")
def scheduler(dask_scheduler):
    """The address of the one-worker local Dask cluster shared by the study tests."""
    return dask_scheduler


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def resumed(cohort_path, scheduler, tmp_path_factory):
    """A study killed after two rows, then run again: its table, the lines at the kill and both progress logs."""
    path = tmp_path_factory.mktemp("study") / "results.csv"
    first, second = [], []

    def kill_after_two(step, fraction):
        first.append((step, fraction))
        if sum(": ok" in s for s, _ in first) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_study(cohort_path, [LIVER_AFFINE], path, settings=FAST, scheduler=scheduler, progress=kill_after_two)
    at_kill = _lines(path)
    rows = run_study(cohort_path, [LIVER_AFFINE], path, settings=FAST, scheduler=scheduler,
                     progress=lambda step, fraction: second.append((step, fraction)))
    return {"path": path, "rows": rows, "at_kill": at_kill, "first": first, "second": second}


# --- methods ---------------------------------------------------------------------------
def test_method_keys_are_stable_and_distinct():
    assert LIVER.key == "liver[wI=1.0,wS=1.0,rigidity=1.0]"
    same = Method(name="liver", guidance="liver", image_weight=1, label_weight=1, rigidity=1)
    assert same.key == LIVER.key and same == LIVER
    assert Method(name="a", guidance="liver", image_weight=-0.0, label_weight=0).key == "a[wI=0.0,wS=0.0,rigidity=1.0]"
    assert len({method.key for method in PAPER_METHODS}) == len(PAPER_METHODS) == 6
    assert [m.affine_only for m in PAPER_METHODS] == [True, True, False, False, False, False]


def test_method_settings_keep_the_base_pyramids():
    settings = replace(LIVER_LANDMARKS, image_weight=0.5, label_weight=2.0, rigidity=3.0).settings(FAST)
    assert settings.guidance == "liver+landmarks"
    assert (settings.nonrigid.image_weight, settings.nonrigid.label_weight, settings.nonrigid.rigidity) == (0.5, 2, 3)
    assert settings.affine == FAST.affine and settings.nonrigid.iterations == FAST.nonrigid.iterations


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "my method"}, "method name"),
    ({"name": ""}, "method name"),
    ({"guidance": "landmarks"}, "guidance must be one of"),
    ({"image_weight": math.nan}, "image_weight must be a finite number"),
    ({"label_weight": True}, "label_weight must be a finite number"),
    ({"rigidity": "1"}, "rigidity must be a finite number"),
    ({"rigidity": -1.0}, ">= 0"),
    ({"guidance": "image", "label_weight": 1.0}, "no label term"),
])
def test_method_refuses_bad_fields(fields, message):
    with pytest.raises(InputError, match=message):
        Method(**{"name": "m", "guidance": "liver", "image_weight": 1.0, "label_weight": 1.0, **fields})


def test_grid_methods_span_the_grid_in_order():
    methods = grid_methods({"image_weight": [0, 1], "label_weight": [0.5, 2]}, guidance="liver")
    assert [(m.image_weight, m.label_weight, m.rigidity) for m in methods] == [
        (0, 0.5, 1), (0, 2, 1), (1, 0.5, 1), (1, 2, 1)]
    assert {m.name for m in methods} == {"liver"}
    one_d = grid_methods({"image_weight": [0.25]}, guidance="image", name="image-1d")
    assert one_d == (Method(name="image-1d", guidance="image", image_weight=0.25, label_weight=0.0),)


@pytest.mark.parametrize(("grid", "message"), [
    ({"wI": [1.0]}, "unknown grid weight"),
    ({"image_weight": []}, "non-empty list"),
    ({"image_weight": "0.5"}, "non-empty list"),
    ({"image_weight": [-1.0]}, ">= 0"),
])
def test_grid_methods_refuse_bad_grids(grid, message):
    with pytest.raises(InputError, match=message):
        grid_methods(grid, guidance="liver")


# --- tasks -------------------------------------------------------------------------------
def test_study_tasks_cover_every_registration_and_method(cohort):
    tasks = study_tasks(cohort, [IMAGE_AFFINE, LIVER_AFFINE], split="train")
    train = next(p for p in cohort.patients if p.split == "train")
    assert [t.key for t in tasks] == [(train.id, f.id, m.key) for f in train.floating
                                      for m in (IMAGE_AFFINE, LIVER_AFFINE)]


@pytest.mark.parametrize(("methods", "split", "message"), [
    ([], None, "one or more methods"),
    (["liver"], None, "one or more methods"),
    ([LIVER, replace(LIVER)], None, "repeated"),
    ([LIVER], "test", "no registrations in the test split"),
])
def test_study_tasks_refuse(cohort, methods, split, message):
    train_only = Cohort(patients=tuple(p for p in cohort.patients if p.split == "train"))
    with pytest.raises(InputError, match=message):
        study_tasks(train_only, methods, split=split)


def test_one_task_with_cnn_masks_and_landmark_guidance(cohort):
    patient = cohort.patients[0]
    floating = patient.floating[1]
    with_masks = Cohort(patients=(replace(
        patient, reference=replace(patient.reference, cnn_liver=patient.reference.liver),
        floating=(replace(floating, cnn_liver=floating.liver),)),))
    row = run_registration_task(with_masks, Task(patient=patient.id, floating=floating.id, method=LIVER_LANDMARKS),
                                settings=FAST)
    assert row["status"] == "ok", row["error"]
    assert set(row) == set(COLUMNS)
    assert (row["guidance_liver"], row["modality"], row["split"], row["landmarks"]) == ("cnn", "MR", patient.split, 5)
    assert 0.8 < row["liver_dsc"] <= 1 and 0 < row["rmsd_mm"] < 10 and row["seconds"] > 0
    assert row["settings_id"] == engine_settings_id(FAST)


def test_one_task_image_guided_from_the_manifest_path(cohort_path, cohort):
    patient = cohort.patients[1]
    row = run_registration_task(str(cohort_path), Task(patient=patient.id, floating="contrast_ct",
                                                       method=IMAGE_AFFINE), settings=FAST)
    assert (row["status"], row["guidance_liver"], row["method"]) == ("ok", "none", IMAGE_AFFINE.key)


def test_a_task_that_cannot_run_is_a_failed_row(cohort):
    patient = cohort.patients[0]
    row = run_registration_task(cohort, Task(patient="P01", floating="pet", method=LIVER_AFFINE), settings=FAST)
    assert (row["status"], row["split"], row["modality"], row["rmsd_mm"]) == ("failed", patient.split, None, None)
    assert row["error"].startswith("InputError: patient P01 has no floating image 'pet'")


# --- studies -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_study_has_an_ok_row_for_every_task(resumed, cohort):
    rows = resumed["rows"]
    assert [(r["patient"], r["floating"], r["method"]) for r in rows] == [
        t.key for t in study_tasks(cohort, [LIVER_AFFINE])]
    assert {r["status"] for r in rows} == {"ok"}
    assert [r["modality"] for r in rows] == ["CT", "MR", "CT", "MR"]
    assert all(r["liver_dsc"] > 0.9 and 0 < r["rmsd_mm"] < 10 and r["landmarks"] == 5 for r in rows)
    table = read_results(resumed["path"])  # in the order the rows finished
    assert sorted(table, key=lambda r: (r["patient"], r["floating"])) == rows


@pytest.mark.slow
def test_a_restart_computes_only_what_the_kill_left(resumed):
    at_kill, now = resumed["at_kill"], _lines(resumed["path"])
    assert len(at_kill) == 1 + 2 and len(now) == 1 + 4
    assert now[:3] == at_kill  # the finished rows were kept, not computed again
    assert resumed["second"][0] == ("2 of 4 registrations already in results.csv", 0.5)
    assert [fraction for _, fraction in resumed["second"]] == [0.5, 0.75, 1.0, 1.0]


@pytest.mark.slow
def test_a_finished_study_starts_no_cluster(resumed, cohort_path):
    before = _lines(resumed["path"])
    steps = []
    rows = run_study(cohort_path, [LIVER_AFFINE], resumed["path"], settings=FAST, scheduler="tcp://127.0.0.1:1",
                     progress=lambda step, fraction: steps.append((step, fraction)))
    assert rows == resumed["rows"] and _lines(resumed["path"]) == before
    assert steps == [("4 of 4 registrations already in results.csv", 1.0), ("done", 1.0)]


@pytest.mark.slow
def test_two_local_workers_give_the_same_rows(resumed, cohort, tmp_path):
    rows = run_study(cohort, [LIVER_AFFINE], tmp_path / "two.csv", split="train", settings=FAST, workers=2)
    expected = [r for r in resumed["rows"] if r["split"] == "train"]
    assert len(rows) == 2
    assert [{k: v for k, v in r.items() if k not in VARYING} for r in rows] == [
        {k: v for k, v in r.items() if k not in VARYING} for r in expected]


@pytest.mark.slow
def test_a_failing_task_does_not_stop_the_others_and_is_retried(cohort, scheduler, tmp_path):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not an image")
    patient = next(p for p in cohort.patients if p.split == "train")
    broken = Cohort(patients=(replace(patient, floating=(replace(patient.floating[0], image=corrupt),
                                                         patient.floating[1])),))
    path = tmp_path / "results.csv"
    rows = run_study(broken, [LIVER_AFFINE], path, settings=FAST, scheduler=scheduler)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["error"].startswith("InputError: corrupt.nii.gz is damaged")
    fixed = Cohort(patients=(patient,))
    retried = run_study(fixed, [LIVER_AFFINE], path, settings=FAST, scheduler=scheduler)
    assert [r["status"] for r in retried] == ["ok", "ok"] and retried[1] == rows[1]
    assert sorted(line.split(",")[1] for line in _lines(path)[1:]) == ["contrast_ct", "contrast_ct", "mr_t1"]


@pytest.mark.slow
def test_a_line_cut_by_a_kill_is_ignored_and_its_task_run_again(resumed, cohort_path, scheduler, tmp_path, caplog):
    path = tmp_path / "results.csv"
    lines = _lines(resumed["path"])
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30], encoding="utf-8")
    rows = run_study(cohort_path, [LIVER_AFFINE], path, settings=FAST, scheduler=scheduler)
    assert "cut short" in caplog.text
    assert [{k: v for k, v in r.items() if k not in VARYING} for r in rows] == [
        {k: v for k, v in r.items() if k not in VARYING} for r in resumed["rows"]]
    assert _lines(path)[-2] == lines[-1][:30] and len(_lines(path)) == len(lines) + 1


@pytest.mark.parametrize("content", ["a,b,c\n1,2,3\n", "", ",".join(COLUMNS[:-1]) + "\n"])
def test_refuses_a_table_with_another_header(cohort_path, tmp_path, content):
    path = tmp_path / "results.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="not a sirtreg study table"):
        run_study(cohort_path, [LIVER_AFFINE], path, settings=FAST)
    assert path.read_text(encoding="utf-8") == content


def test_a_table_from_before_the_liver_checks_is_read_but_not_extended(cohort_path, tmp_path):
    earlier = [column for column in COLUMNS if column != "liver_flag"]
    row = {column: "" for column in earlier} | {
        "patient": "P01", "floating": "ct", "method": LIVER_AFFINE.key, "status": "ok", "rmsd_mm": "2.5",
        "settings_id": engine_settings_id(FAST)}
    path = tmp_path / "results.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerows([earlier, [row[column] for column in earlier]])
    [read] = read_results(path)
    assert read["liver_flag"] is None and read["rmsd_mm"] == 2.5 and read["status"] == "ok"
    content = path.read_text(encoding="utf-8")
    with pytest.raises(InputError, match="written before the CNN liver checks .* write new results to a new file"):
        run_study(cohort_path, [LIVER_AFFINE], path, settings=FAST)
    assert path.read_text(encoding="utf-8") == content


def test_a_cnn_mask_in_two_pieces_is_flagged_in_its_row(cohort, tmp_path):
    """The floating image's CNN mask (a file named by the manifest) is its manual liver cut in two by a 20 mm
    slab: the row of a liver-guided task says so; guided by the manual contours, nothing is flagged."""
    patient, floating = cohort.patients[0], cohort.patients[0].floating[0]
    liver = read_labels(floating.liver)
    k = np.nonzero(liver.array.any(axis=(1, 2)))[0]
    middle, half = (k[0] + k[-1]) // 2, max(1, round(10.0 / liver.grid.spacing_mm[2]))
    array = liver.array.copy()
    array[middle - half:middle + half] = 0
    mask = write_image(LabelVolume(array, liver.grid), tmp_path / "two_pieces.nii.gz")
    damaged = Cohort(patients=(replace(patient, floating=(replace(floating, cnn_liver=mask),)),))
    task = Task(patient=patient.id, floating=floating.id, method=LIVER_AFFINE)
    row = run_registration_task(damaged, task, settings=FAST)
    assert row["status"] == "ok" and row["guidance_liver"] == "mixed"
    assert row["liver_flag"] == "floating CNN liver: 2 pieces of >= 50 mL"
    assert run_registration_task(cohort, task, settings=FAST)["liver_flag"] is None


@pytest.mark.slow
def test_refuses_a_table_of_other_engine_settings(resumed, cohort_path, tmp_path):
    path = tmp_path / "results.csv"
    shutil.copy(resumed["path"], path)
    with pytest.raises(InputError, match="other engine settings"):
        run_study(cohort_path, [LIVER_AFFINE], path)


def test_refuses_a_table_with_a_bad_number_or_no_table(cohort_path, tmp_path):
    path = tmp_path / "results.csv"
    row = dict.fromkeys(COLUMNS, "") | {"patient": "P01", "rmsd_mm": "far"}
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(row[c] for c in COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2: rmsd_mm is 'far', not a number"):
        read_results(path)
    with pytest.raises(InputError, match="no such results table"):
        read_results(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="is a folder, not a results table"):
        run_study(cohort_path, [LIVER_AFFINE], tmp_path, settings=FAST)


def _computing(cohort, patient_index=0, *, reference=True):
    """The cohort's first patient alone, its first floating image (and its reference, unless ``reference`` is
    False) asking for CNN masks."""
    patient = cohort.patients[patient_index]
    maa_ct = replace(patient.reference, cnn_liver=COMPUTE) if reference else patient.reference
    return Cohort(patients=(replace(patient, reference=maa_ct,
                                    floating=(replace(patient.floating[0], cnn_liver=COMPUTE),)),))


def test_cnn_masks_are_computed_once_and_failures_kept(cohort, tmp_path, monkeypatch):
    """compute_cnn_masks segments each 'compute' image once into the cache, then reuses it; a failed
    segmentation is reported per patient."""
    import sirtreg.segment
    from sirtreg.io import read_labels
    from sirtreg.study.cnn_masks import compute_cnn_masks

    calls = []
    truths = [read_labels(image.liver) for image in (cohort.patients[0].reference, cohort.patients[0].floating[0])]

    def fake_segment_liver(volume, *, modality, device, weights):  # the manual contour stands for the CNN's
        assert weights is None
        calls.append(modality)
        return next(truth for truth in truths if truth.grid.same_as(volume.grid))

    def submit(function, *args, pure):  # in this process: Dask's submit and gather, without Dask
        def run():
            try:
                return function(*args)
            except Exception as exc:  # noqa: BLE001 - returned as Dask returns a failed future's exception
                return exc
        return run

    monkeypatch.setattr(sirtreg.segment, "segment_liver", fake_segment_liver)
    computing = _computing(cohort)
    folder = tmp_path / "masks"
    resolved, failures = compute_cnn_masks(computing, ["P01"], folder, submit, lambda futures: [f() for f in futures])
    assert failures == {} and calls == ["ct", computing.patients[0].floating[0].modality.lower()]
    patient = resolved.patients[0]
    assert patient.reference.cnn_liver == folder / "P01" / "reference_liver_cnn.nii.gz"
    assert read_labels(patient.reference.cnn_liver).array.any() and Path(patient.floating[0].cnn_liver).is_file()
    again, _ = compute_cnn_masks(computing, ["P01"], folder, submit, lambda futures: [f() for f in futures])
    assert len(calls) == 2 and again == resolved  # cached: nothing computed again

    def broken(volume, *, modality, device, weights):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sirtreg.segment, "segment_liver", broken)
    _, failures = compute_cnn_masks(computing, ["P01"], tmp_path / "other", submit,
                                    lambda futures: [f() for f in futures])
    assert failures == {"P01": "CNN liver segmentation failed: RuntimeError: out of memory"}


@pytest.mark.slow(seconds=30)
def test_a_study_computes_cnn_masks_on_its_workers(cohort, scheduler, tmp_path, trained_models):
    """run_study segments the 'compute' liver with the real CNN on a worker before registering, and guides with it
    (one image: segmenting both, and the cache, are tested above with a stand-in for the CNN)."""
    rows = run_study(_computing(cohort, reference=False), [LIVER_AFFINE], tmp_path / "results.csv", settings=FAST,
                     scheduler=scheduler)
    assert [row["status"] for row in rows] == ["ok"] and rows[0]["guidance_liver"] == "mixed"
    masks = sorted(path.name for path in (tmp_path / "results_cnn_livers" / "P01").iterdir())
    assert masks == ["contrast_ct_liver_cnn.nii.gz"]
    assert rows[0]["liver_dsc"] > 0.8  # evaluated against the manual contours


@pytest.mark.parametrize(("options", "message"), [
    ({"workers": 0}, "workers must be a whole number"),
    ({"workers": True}, "workers must be a whole number"),
    ({"scheduler": "localhost:8786"}, "scheduler must be a Dask scheduler address"),
    ({"scheduler": "tcp://127.0.0.1:8786", "workers": 2}, "not both"),
])
def test_refuses_bad_cluster_options(cohort_path, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        run_study(cohort_path, [LIVER_AFFINE], tmp_path / "results.csv", **options)
    assert not (tmp_path / "results.csv").exists()


# --- summaries and grid search -------------------------------------------------------------
def _row(method, *, patient="P01", floating="ct", modality="CT", split="train", rmsd_mm=1.0, status="ok"):
    ok = status == "ok"
    return dict.fromkeys(COLUMNS) | {
        "patient": patient, "floating": floating, "method": method.key, "modality": modality, "split": split,
        "method_name": method.name, "guidance": method.guidance, "image_weight": method.image_weight,
        "label_weight": method.label_weight, "rigidity": method.rigidity, "status": status,
        "rmsd_mm": rmsd_mm if ok else None, "liver_dsc": 0.9 if ok else None, "liver_msd_mm": 1.0 if ok else None,
        "mean_mcd_mm": 2.0 if ok else None, "seconds": 3.0 if ok else None, "settings_id": engine_settings_id(FAST)}


def test_summarise_gives_the_rrmsd_per_method_modality_and_split():
    rows = [_row(LIVER, rmsd_mm=3.0), _row(LIVER, patient="P02", rmsd_mm=4.0), _row(LIVER, patient="P03",
                                                                                    status="failed"),
            _row(LIVER, modality="MR", floating="mr", rmsd_mm=2.0), _row(LIVER, split="test", status="failed")]
    summary = summarise(rows)
    assert [(s["modality"], s["split"], s["n"], s["failed"]) for s in summary] == [
        ("CT", "train", 2, 1), ("MR", "train", 1, 0), ("CT", "test", 0, 1)]
    assert summary[0]["rrmsd_mm"] == pytest.approx(math.sqrt((9 + 16) / 2))
    # medians and root mean squares are computed (means of floats): compared within a relative 1e-9
    assert summary[0]["median_rmsd_mm"] == pytest.approx(3.5, rel=1e-9)
    assert summary[0]["median_dsc"] == pytest.approx(0.9, rel=1e-9)
    assert summary[1]["rrmsd_mm"] == pytest.approx(2.0, rel=1e-9)
    assert summary[2]["rrmsd_mm"] is None and summary[2]["median_dsc"] is None


def test_best_methods_take_the_lowest_rrmsd_of_complete_methods():
    a, b, c = grid_methods({"image_weight": [0, 1, 2]}, guidance="image")
    summary = summarise([_row(a, rmsd_mm=2.0), _row(b, rmsd_mm=2.0), _row(c, rmsd_mm=1.0),
                         _row(c, patient="P02", status="failed"),
                         _row(a, modality="MR", rmsd_mm=5.0), _row(b, modality="MR", rmsd_mm=4.0),
                         _row(c, modality="MR", rmsd_mm=3.0), _row(c, modality="MR", split="test", rmsd_mm=0.1)])
    assert best_methods(summary, [a, b, c]) == {"CT": a, "MR": c}  # c fails a CT; a and b tie: the first
    assert best_methods(summary, [a, b, c], split="test") == {"MR": c}
    assert best_methods(summarise([_row(a, status="failed")]), [a]) == {}


def test_grid_search_chooses_the_weights_of_lowest_rrmsd_per_modality(cohort, tmp_path):
    grid = {"image_weight": [0.0, 1.0], "label_weight": [0.5, 2.0]}
    methods = grid_methods(grid, guidance="liver")
    rmsd = {"CT": [4.0, 3.0, 1.5, 2.5], "MR": [2.0, 5.0, 4.0, 3.0]}  # best: (1, 0.5) for CT, (0, 0.5) for MR
    path = tmp_path / "grid.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        for patient, floating in cohort.registrations(split="train"):
            for method, value in zip(methods, rmsd[floating.modality], strict=True):
                writer.writerow(_row(method, patient=patient.id, floating=floating.id, modality=floating.modality,
                                     rmsd_mm=value))
    result = grid_search(cohort, grid, path, guidance="liver", settings=FAST)  # all in the table: nothing to run
    assert result.methods == methods
    assert result.best == {"CT": methods[2], "MR": methods[0]}
    assert (result.best["CT"].image_weight, result.best["CT"].label_weight) == (1.0, 0.5)
    # one row per method: its RRMSD is the root of a mean square, equal to the row's RMSD within rounding
    assert [s["rrmsd_mm"] for s in result.summary if s["modality"] == "CT"] == pytest.approx(rmsd["CT"], rel=1e-9)
