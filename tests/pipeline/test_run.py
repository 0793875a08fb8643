"""sirtreg run on the digital patient: results, report, DICOM outputs, refusals and interrupted runs.

One run registers the contrast CT with the real liver+landmarks preset and is checked against
the phantom's truth; the other runs use a quick affine-only preset (few iterations), since they
test the plumbing, not the registration.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.errors import FlaggedLiverError, InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import (
    Segmentation,
    orient_like,
    read_dicom_seg,
    read_image,
    read_labels,
    read_rt_dose,
    read_rtstruct,
    write_dicom_nm,
    write_dicom_seg,
    write_dicom_series,
    write_image,
    write_rtstruct,
    write_segmentation,
)
from sirtreg.io.contours import read_contour
from sirtreg.metrics import dice
from sirtreg.output_folder import OutputFolder
from sirtreg.pipeline import (
    ContourInput,
    FloatingInput,
    Plan,
    ReferenceInput,
    RunResult,
    RunTools,
    RunWeights,
    SpectInput,
    preset_settings,
    run_plan,
    write_plan,
)
from sirtreg.pipeline.carried import REFERENCE_SOURCE, ScanImage
from sirtreg.pipeline.run_doses import run_lung_shunt

ACTIVITY_GBQ = 2.0
IDS = {"contrast_ct": "ct", "mr_t1": "mr"}


@pytest.fixture(scope="module")
def patient(fast_patient_folder: tuple[Path, dict]) -> tuple[Path, dict]:
    """The seed-0 digital patient at the fast resolution: its folder (shared, read-only) and manifest."""
    return fast_patient_folder


def _plan(patient: tuple[Path, dict], *, floating: tuple[str, ...] = ("contrast_ct",), livers: bool = True,
          reference_image: Path | None = None, spect_image: Path | None = None) -> Plan:
    """A plan of the phantom's files: every contour given (livers optional), default guidance."""
    folder, manifest = patient

    def contour(scan: dict, key: str) -> ContourInput:
        return ContourInput(folder / scan[key])

    ref = manifest["reference"]
    reference = ReferenceInput(reference_image or folder / ref["image"], liver=contour(ref, "liver") if livers else None,
                               lesions=contour(ref, "lesions"), landmarks=contour(ref, "landmark_map"))
    spect = SpectInput(spect_image or folder / manifest["spect"]["image"], activity_gbq=ACTIVITY_GBQ, isotope="Y-90",
                       lung_shunt_fraction=manifest["spect"]["lung_shunt_fraction"])
    scans = {scan["name"]: scan for scan in manifest["floating"]}
    entries = tuple(FloatingInput(id=IDS[name], modality=scans[name]["modality"], image=folder / scans[name]["image"],
                                  liver=contour(scans[name], "liver") if livers else None,
                                  lesions=contour(scans[name], "lesions"),
                                  landmarks=contour(scans[name], "landmark_map"))
                    for name in floating)
    return Plan(reference=reference, spect=spect, floating=entries)


def _contour(contour: ContourInput) -> tuple[Path, tuple[str, ...]]:
    """The path and segments of a plan's contour, as read_contour takes them."""
    return contour.path, contour.segments


def _quick_settings(guidance, weights, device):
    """The preset, affine only with few iterations: fast, for tests of everything but accuracy."""
    settings = preset_settings(guidance, weights, device)
    return replace(settings, affine=replace(settings.affine, iterations=(15, 10)),
                   nonrigid=replace(settings.nonrigid, image_weight=0.0, label_weight=0.0))


QUICK = RunTools(settings=_quick_settings)


@pytest.fixture()
def quick() -> RunTools:
    """The run's tools with the quick settings."""
    return QUICK


@pytest.fixture(scope="module")
def full_run(patient, tmp_path_factory):
    """The contrast CT registered with the real (liver+landmarks) preset; (plan, result)."""
    plan = _plan(patient)
    steps = []
    result = run_plan(plan, tmp_path_factory.mktemp("runs") / "out", progress=lambda s, f: steps.append(f))
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)
    return plan, result


def test_without_a_lung_shunt_in_the_plan_it_is_measured_on_the_spect_ct(patient, caplog):
    folder, manifest = patient
    given = _plan(patient)
    plan = replace(given, spect=replace(given.spect, lung_shunt_fraction=None))
    ref = manifest["reference"]
    reference = ScanImage(REFERENCE_SOURCE, read_image(folder / ref["image"]), "CT",
                          liver=read_labels(folder / ref["liver"]), lesions=None, landmarks=None)
    spect = read_image(folder / manifest["spect"]["image"])
    truth = manifest["spect"]["lung_shunt_fraction"]
    fraction, source = run_lung_shunt(plan, reference, spect)
    assert fraction == pytest.approx(truth, abs=0.005)
    assert "measured on the SPECT/CT" in source and "lungs found in the MAA CT" in source
    typed, beside = run_lung_shunt(given, reference, spect)  # the plan's is used, the measure shown beside it
    assert typed == truth and beside.startswith("given in the plan; beside it, lung shunt fraction 4.")
    # a CT with no air in it: 0, said in the report and warned about
    solid = replace(reference, volume=reference.volume.with_array(np.full(reference.volume.shape, 40.0, np.float32)))
    with caplog.at_level(logging.WARNING):
        assert run_lung_shunt(plan, solid, spect)[0] == 0.0
    assert "0 assumed" in caplog.text


# --- the full run ---------------------------------------------------------------------------
@pytest.mark.slow
def test_results_hold_per_lesion_doses(full_run, patient):
    _, manifest = patient
    _, result = full_run
    document = json.loads((result.out_dir / "results.json").read_text())
    rows = {(row["source"], row["structure"]): row for row in document["doses"]}
    lesions = list(manifest["labels"]["lesions"].values())
    assert ("MAA CT", "liver") in rows
    for name in lesions:
        registered, drawn = rows[("ct", f"ct/{name}")], rows[("MAA CT", f"MAA CT/{name}")]
        assert registered["error"] == "" and registered["mean_gy"] > 0
        assert 0 <= registered["V70_percent"] <= 100 and 0 <= registered["V100_percent"] <= registered["V70_percent"]
        # the lesion carried from the CT gets about the dose of the same lesion drawn on the MAA CT
        assert registered["mean_gy"] == pytest.approx(drawn["mean_gy"], rel=0.25), name
    assert document["registrations"][0]["guidance"] == "liver+landmarks"
    quality = document["registrations"][0]["quality"]
    assert quality["after"]["liver_dsc"] > max(0.9, quality["before"]["liver_dsc"])
    assert document["dose"]["administered_activity_gbq"] == ACTIVITY_GBQ
    with open(result.out_dir / "doses.csv", newline="") as handle:
        assert {row["structure"] for row in csv.DictReader(handle)} == {r[1] for r in rows}
    with open(result.out_dir / "registrations.csv", newline="") as handle:
        assert [row["floating"] for row in csv.DictReader(handle)] == ["ct"]


@pytest.mark.slow
def test_registered_lesions_overlap_the_reference_lesions(full_run, patient):
    folder, manifest = patient
    _, result = full_run
    reference = read_labels(folder / manifest["reference"]["lesions"])
    registered = read_labels(result.out_dir / "floating" / "ct" / "registered_lesions.nii.gz")
    assert registered.grid.same_as(reference.grid)
    rows = {row["structure"]: row for row in result.doses}
    for value in reference.present_labels():
        score = dice(reference.array == value, registered.array == value)
        assert score > 0.7, f"lesion {value}: DSC {score:.2f}"
        assert rows[f"ct/lesion {value}"]["dsc_to_maa_ct_lesion"] == pytest.approx(score)


@pytest.mark.slow
def test_outputs_lie_on_the_maa_ct_and_spect_grids(full_run, patient):
    folder, manifest = patient
    _, result = full_run
    maa_ct = read_image(folder / manifest["reference"]["image"])
    for name in ("registered_image", "registered_liver", "registered_landmarks"):
        assert read_image(result.out_dir / "floating" / "ct" / f"{name}.nii.gz").grid.same_as(maa_ct.grid)
    dose = read_image(result.out_dir / "dose.nii.gz")
    assert dose.grid.same_as(read_image(folder / manifest["spect"]["image"]).grid)
    assert (result.out_dir / "floating" / "ct" / "transform" / "displacement.nii.gz").is_file()
    assert not (result.out_dir / "dicom").exists()  # the MAA CT is not DICOM
    assert not list(result.out_dir.parent.glob(".*"))  # no partial or old folder left beside it


@pytest.mark.slow
def test_report_is_self_contained_and_holds_the_lesion_table(full_run, patient):
    folder, _ = patient
    _, result = full_run
    text = result.report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "file:" not in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "ct/lesion 1" in text and "V70 (%)" in text and "DVH" in text
    assert "liver+landmarks" in text and "registration quality" in text
    assert str(folder) not in text  # no input paths (they may name the patient)


@pytest.mark.slow
def test_a_second_run_into_the_folder_is_refused(full_run):
    plan, result = full_run
    before = (result.out_dir / "results.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="not empty"):
        run_plan(plan, result.out_dir)
    assert (result.out_dir / "results.json").stat().st_mtime_ns == before


# --- plumbing, with the quick preset --------------------------------------------------------
@pytest.mark.slow
def test_dicom_outputs_reference_the_maa_ct(patient, tmp_path, quick):
    folder, manifest = patient
    maa_ct = write_dicom_series(read_image(folder / manifest["reference"]["image"], modality="CT"),
                                tmp_path / "maa_ct", series_description="MAA CT")
    header = pydicom.dcmread(next(maa_ct.iterdir()), stop_before_pixels=True)
    spect = read_image(folder / manifest["spect"]["image"])
    write_dicom_nm(spect, tmp_path / "spect.dcm", frame_of_reference_uid=header.FrameOfReferenceUID)
    plan = _plan(patient, floating=("contrast_ct", "mr_t1"), reference_image=maa_ct,
                 spect_image=tmp_path / "spect.dcm")
    result = run_plan(plan, tmp_path / "out", tools=quick)
    dicom = result.out_dir / "dicom"

    seg_path = dicom / "floating" / "ct" / "lesions_seg.dcm"
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_path))
    lesions = list(manifest["labels"]["lesions"].values())
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == [f"ct/{n}" for n in lesions]
    assert seg.FrameOfReferenceUID == header.FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [header.SeriesInstanceUID]
    on_ct = read_dicom_seg(seg_path, reference=maa_ct)
    registered = read_labels(result.out_dir / "floating" / "ct" / "registered_lesions.nii.gz")
    np.testing.assert_array_equal(on_ct.array > 0, registered.array > 0)
    # the same lesions as an RTSTRUCT: traced at the voxel edges, they give back the same voxels
    traced = read_rtstruct(dicom / "floating" / "ct" / "lesions_rtstruct.dcm", read_image(maa_ct))
    assert list(traced.labels.values()) == [f"ct/{n}" for n in lesions]
    np.testing.assert_array_equal(traced.array > 0, registered.array > 0)

    dose = read_rt_dose(dicom / "rt_dose.dcm")
    assert dose.grid.same_as(spect.grid, tolerance_mm=1e-2)
    assert dose.meta["FrameOfReferenceUID"] == header.FrameOfReferenceUID
    np.testing.assert_allclose(dose.array, read_image(result.out_dir / "dose.nii.gz").array,
                               atol=1e-6 * float(dose.array.max()))

    series = read_image(dicom / "floating" / "mr" / "registered")
    assert series.modality == "MR" and series.grid.same_as(read_image(maa_ct).grid, tolerance_mm=1e-2)
    assert series.meta["FrameOfReferenceUID"] == header.FrameOfReferenceUID
    assert series.meta["StudyInstanceUID"] == header.StudyInstanceUID
    sources = {row["source"] for row in result.doses}
    assert sources == {"MAA CT", "ct", "mr"}  # lesions of each floating image are kept apart


@pytest.mark.slow
def test_missing_liver_contours_are_segmented(patient, tmp_path, quick):
    folder, manifest = patient
    truth = {scan["modality"] + str(scan["grid"]["size"]): read_labels(folder / scan["liver"], labels={1: "liver"})
             for scan in (manifest["reference"], *manifest["floating"])}
    calls = []

    def fake_segment_liver(volume, *, modality, device, progress):
        calls.append(modality)
        progress("network", 0.5)
        return truth[volume.modality + str(list(volume.grid.size))]

    tools = replace(quick, segment_liver=fake_segment_liver)
    result = run_plan(_plan(patient, livers=False), tmp_path / "out", tools=tools)
    assert calls == ["ct", "ct"]
    assert result.results["reference"]["liver"] == "CNN"
    registration = result.results["registrations"][0]
    assert registration["liver"] == "CNN" and registration["quality"] == {}  # no truth: no quality metrics
    assert (result.out_dir / "floating" / "ct" / "liver_cnn.nii.gz").is_file()

    # one scan listed twice (two guidance presets to compare) is segmented once
    calls.clear()
    plan = _plan(patient, livers=False)
    twice = (replace(plan.floating[0], guidance="liver"), replace(plan.floating[0], id="ct-again", guidance="image"))
    result = run_plan(replace(plan, floating=twice), tmp_path / "twice", tools=tools)
    assert calls == ["ct", "ct"]
    assert [row["liver"] for row in result.results["registrations"]] == ["CNN", "CNN"]


def _split_in_two(liver: LabelVolume) -> LabelVolume:
    """The liver less a 20 mm slab across its middle (z): two large pieces of about its volume."""
    k = np.nonzero(liver.array.any(axis=(1, 2)))[0]
    middle, half = (k[0] + k[-1]) // 2, max(1, round(10.0 / liver.grid.spacing_mm[2]))
    array = liver.array.copy()
    array[middle - half:middle + half] = 0
    return LabelVolume(array, liver.grid, labels=liver.labels)


def _upper_half(liver: LabelVolume) -> LabelVolume:
    """The liver above its middle slice only (one piece, >= 600 mL): no affine can fit it to the whole liver."""
    k = np.nonzero(liver.array.any(axis=(1, 2)))[0]
    array = liver.array.copy()
    array[: (k[0] + k[-1]) // 2] = 0
    return LabelVolume(array, liver.grid, labels=liver.labels)


@pytest.mark.parametrize(("damage", "action"), [(_split_in_two, "report"), (_upper_half, "image"),
                                                (_split_in_two, "image")])
def test_a_flagged_cnn_liver_is_reported_and_the_plan_says_what_to_do(patient, tmp_path, quick,
                                                                      damage, action):
    """The contrast CT's CNN liver is damaged (two pieces, or half a liver that the affine stage cannot fit): the
    run flags it first thing in its report, and registers as planned ("report") or with image guidance."""
    folder, manifest = patient
    truth = {scan["modality"] + str(scan["grid"]["size"]): read_labels(folder / scan["liver"], labels={1: "liver"})
             for scan in (manifest["reference"], *manifest["floating"])}
    reference_key = "CT" + str(manifest["reference"]["grid"]["size"])

    def fake_segment_liver(volume, *, modality, device, progress):
        liver = truth[volume.modality + str(list(volume.grid.size))]
        return liver if str(list(volume.grid.size)) in reference_key else damage(liver)

    plan = replace(_plan(patient, livers=False), flagged_cnn_liver=action)
    result = run_plan(plan, tmp_path / "out", tools=replace(quick, segment_liver=fake_segment_liver))

    livers = result.results["cnn_livers"]
    scans = {check["image"]: check for check in livers["scans"]}
    assert not scans["MAA CT"]["flagged"]
    [registration] = livers["registrations"]
    assert registration["flagged"] and registration["planned_guidance"] == "liver+landmarks"
    if damage is _split_in_two:
        assert scans["ct"]["flagged"] and scans["ct"]["large_pieces"] == 2
        assert registration["reasons"] == ["ct CNN liver: 2 pieces of >= 50 mL"]
    else:
        assert not scans["ct"]["flagged"] and registration["affine_liver_dsc"] < 0.8
        assert "after the affine stage" in registration["reasons"][-1]
    used = "liver+landmarks" if action == "report" else "image"
    assert registration["guidance"] == used and result.results["registrations"][0]["guidance"] == used
    with open(result.out_dir / "registrations.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["planned_guidance"], row["guidance"]) == ("liver+landmarks", used)
    assert "ct CNN liver" in row["liver_flag"]
    first = re.search(r"<section>(.*?)</section>", result.report.read_text(), re.S).group(1)
    assert "Which numbers to trust" in first and "flagged CNN livers" in first
    assert ("registered with image guidance instead" in first) == (action == "image")


def test_a_flagged_cnn_liver_stops_the_run_when_the_plan_says_so(patient, tmp_path, quick):
    """A CNN liver of 300 mL (a partial slab, say) with flagged_cnn_liver: stop: no registration, no output."""
    folder, manifest = patient
    liver = read_labels(folder / manifest["reference"]["liver"], labels={1: "liver"})
    k = np.nonzero(liver.array.any(axis=(1, 2)))[0]
    array = liver.array.copy()
    top = k[0]  # the last slice kept: the first slices that hold 300 mL
    while np.count_nonzero(array[: top + 1]) * liver.grid.voxel_volume_ml < 300.0:
        top += 1
    array[top + 1:] = 0
    small = LabelVolume(array, liver.grid, labels=liver.labels)

    def fake_segment_liver(volume, *, modality, device, progress):
        return small

    tools = replace(quick, segment_liver=fake_segment_liver,
                    register=lambda *args, **kwargs: pytest.fail("registered"))
    plan = replace(_plan(patient, livers=False), flagged_cnn_liver="stop")
    with pytest.raises(FlaggedLiverError, match=r"MAA CT: the CNN liver is flagged \(volume 3\d\d mL, outside "
                                                 r"600-4000 mL\) and the plan says flagged_cnn_liver: stop"):
        run_plan(plan, tmp_path / "out", tools=tools)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_plans_weights_reach_the_engine_and_the_report(patient, tmp_path):
    """Affine only for CT with liver+landmarks guidance, set in the plan: no non-rigid stage is run, and the
    tables and the report say which weights were used and where they came from."""
    plan = replace(_plan(patient), weights={("CT", "liver+landmarks"): RunWeights(0.0, 0.0, 2.0)})
    result = run_plan(plan, tmp_path / "out")
    [registration] = result.results["registrations"]
    assert registration["nonrigid"] is False
    assert registration["registration"]["settings"]["nonrigid"]["rigidity"] == 2.0
    with open(result.out_dir / "registrations.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["image_weight"], row["label_weight"], row["rigidity"], row["weights_from"]) == (
        "0.0", "0.0", "2.0", "the plan")
    assert "affine only: wI 0, wS 0, rigidity 2 (from the plan)" in result.report.read_text()


def test_run_refuses_weights_from_a_table_without_the_modality(patient, tmp_path, write_tune_table):
    plan = write_plan(_plan(patient, floating=("contrast_ct", "mr_t1")), tmp_path / "plan.yaml")
    table = write_tune_table(tmp_path / "tune.csv", "liver+landmarks", {("CT", 1.0, 1.0): [2.0]})
    result = CliRunner().invoke(app, ["run", str(plan), "-o", str(tmp_path / "out"), "--weights-from", str(table)])
    assert result.exit_code == 2
    assert "floating mr: tune.csv chose no MR weights for liver+landmarks guidance (modalities it tuned: CT)" in (
        " ".join(result.stderr.split()))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_run_takes_the_weights_a_grid_search_chose(patient, tmp_path, write_tune_table):
    plan = write_plan(_plan(patient), tmp_path / "plan.yaml")
    table = write_tune_table(tmp_path / "tune.csv", "liver+landmarks",
                             {("CT", 1.0, 1.0): [3.0, 3.0], ("CT", 0.0, 0.0): [2.0, 2.5]})  # affine only wins
    result = CliRunner().invoke(app, ["run", str(plan), "-o", str(tmp_path / "out"), "--weights-from", str(table)])
    assert result.exit_code == 0, result.output
    chosen = "affine only: wI 0, wS 0, rigidity 1 (from tune.csv (grid search 'liver+landmarks', RRMSD 2.26 mm"
    assert f"ct: liver+landmarks guidance, {chosen}" in " ".join(result.stdout.split())
    with open(tmp_path / "out" / "registrations.csv", newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["nonrigid"] == "False" and row["weights_from"].startswith("tune.csv (grid search")


@pytest.mark.slow
def test_rtstruct_contours_are_read(patient, tmp_path, quick):
    """A floating CT as a DICOM series with its liver and lesions in one RTSTRUCT, overlapping as drawn."""
    folder, manifest = patient
    scan = next(s for s in manifest["floating"] if s["name"] == "contrast_ct")
    ct = write_dicom_series(read_image(folder / scan["image"], modality="CT"), tmp_path / "ct")
    liver, lesions = read_labels(folder / scan["liver"]), read_labels(folder / scan["lesions"])
    names = {int(v): name for v, name in manifest["labels"]["lesions"].items()}
    masks = {"Liver": liver.array > 0, **{name: lesions.array == v for v, name in names.items()}}
    rtstruct = write_rtstruct(Segmentation.from_masks(liver.grid, masks), ct, tmp_path / "rtstruct.dcm")
    plan = _plan(patient)
    entry = replace(plan.floating[0], image=ct, liver=ContourInput(rtstruct, ("Liver",)),
                    lesions=ContourInput(rtstruct, tuple(names.values())))
    read = read_contour(entry.lesions.path, entry.lesions.segments, read_image(ct), "lesions")
    assert list(read.labels.values()) == list(names.values())
    np.testing.assert_array_equal(read.array > 0, orient_like(lesions, read.grid).array > 0)
    result = run_plan(replace(plan, floating=(entry,)), tmp_path / "out", tools=quick)
    rows = {(row["source"], row["structure"]): row for row in result.doses}
    for name in names.values():
        assert rows[("ct", f"ct/{name}")]["error"] == "" and rows[("ct", f"ct/{name}")]["mean_gy"] > 0
    assert (result.out_dir / "floating" / "ct" / "registered_lesions.nii.gz").is_file()


# --- every input as DICOM, as a hospital sends it; de-identified outputs -----------------------
PATIENT_NAME, PATIENT_ID, BIRTH_DATE = "Zyxwvut^Qwertyuiop", "PID8675309X", "19370412"
HOSPITAL = {"PatientBirthDate": BIRTH_DATE, "PatientSex": "F", "PatientAge": "082Y", "AccessionNumber": "ACC5551212",
            "StudyDate": "20190317", "ReferringPhysicianName": "Hippocrates^Kos",
            "InstitutionName": "Saint Elsewhere Hospital", "StudyDescription": "SIRT work-up of Zyxwvut"}
NAME_TEXTS = ("Zyxwvut", "Qwertyuiop", PATIENT_ID, "ACC5551212", "Hippocrates", "Elsewhere")
DATE_TEXTS = (BIRTH_DATE, "20190317")  # not looked for in UIDs, whose random digits may hold them
PSEUDONYM = "S-017"


@dataclass(frozen=True)
class _Export:
    """The phantom as one hospital export folder of DICOM files, and a plan of it."""

    folder: Path
    plan: Plan
    maa_ct: pydicom.Dataset  # header of the MAA CT's first file


def _as_hospital(path: Path, target: Path) -> None:
    """Move a file we wrote to ``target``, with the patient's birth date, study and institution facts."""
    dataset = pydicom.dcmread(path)
    for keyword, value in HOSPITAL.items():
        setattr(dataset, keyword, value)
    dataset.save_as(target)
    path.unlink()


def _series_into(folder: Path, volume, prefix: str, **kwargs) -> pydicom.Dataset:
    """Write ``volume`` as the series ``prefix_*.dcm`` of hospital files in ``folder``; the header of its first file."""
    written = write_dicom_series(volume, folder.parent / f"{prefix}-alone", patient_name=PATIENT_NAME,
                                 patient_id=PATIENT_ID, **kwargs)
    for path in sorted(written.iterdir()):
        _as_hospital(path, folder / f"{prefix}_{path.name}")
    written.rmdir()
    return pydicom.dcmread(min(folder.glob(f"{prefix}_*.dcm")), stop_before_pixels=True)


@pytest.fixture(scope="module")
def dicom_export(patient, tmp_path_factory) -> _Export:
    """Every input as DICOM in ONE folder named after the patient: MAA CT, SPECT (NM), CT and MR series, and
    their contours as SEGs and RTSTRUCTs; series told apart by description or UID."""
    folder, manifest = patient
    export = tmp_path_factory.mktemp("pacs") / f"Zyxwvut_Qwertyuiop_{PATIENT_ID}"
    export.mkdir()
    lesion_names = {int(v): n for v, n in manifest["labels"]["lesions"].items()}
    landmark_names = {int(v): n for v, n in manifest["labels"]["landmarks"].items()}
    scans = {scan["name"]: scan for scan in (manifest["reference"], *manifest["floating"])}

    def labels(scan: str, key: str):
        return read_labels(folder / scans[scan][key])

    ref = manifest["reference"]["name"]
    maa = _series_into(export, read_image(folder / scans[ref]["image"], modality="CT"), "maa",
                       series_description="MAA low-dose CT")
    nm = write_dicom_nm(read_image(folder / manifest["spect"]["image"]), export.parent / "spect.dcm",
                        series_description="MAA SPECT", frame_of_reference_uid=maa.FrameOfReferenceUID,
                        study_instance_uid=maa.StudyInstanceUID, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    _as_hospital(nm, export / "spect.dcm")
    ct = _series_into(export, read_image(folder / scans["contrast_ct"]["image"], modality="CT"), "ct",
                      series_description="portal venous CT")
    mr = _series_into(export, read_image(folder / scans["mr_t1"]["image"], modality="MR"), "mr", modality="MR",
                      series_description="T1 MR")

    def seg(labels_, header, name, names=None):
        return write_dicom_seg(labels_, export, export / name, series=header.SeriesInstanceUID, segment_names=names)

    def rtstruct(labels_, header, name, names=None):
        return write_rtstruct(labels_, export, export / name, series=header.SeriesInstanceUID, roi_names=names)

    liver, lesions = labels("contrast_ct", "liver"), labels("contrast_ct", "lesions")
    present = [lesion_names[v] for v in lesions.present_labels()]
    masks = {"Liver": liver.array > 0, **{lesion_names[v]: lesions.array == v for v in lesions.present_labels()}}
    ct_rtstruct = write_rtstruct(Segmentation.from_masks(liver.grid, masks), export, export / "ct_rtstruct.dcm",
                                 series=ct.SeriesInstanceUID)  # liver and lesions overlap, as drawn
    reference = ReferenceInput(
        export, series="MAA low-dose CT", liver=ContourInput(seg(labels(ref, "liver"), maa, "maa_liver_seg.dcm")),
        lesions=ContourInput(rtstruct(labels(ref, "lesions"), maa, "maa_lesions_rtstruct.dcm", lesion_names)),
        landmarks=ContourInput(seg(labels(ref, "landmark_map"), maa, "maa_landmarks_seg.dcm", landmark_names)))
    spect = SpectInput(export, series="MAA SPECT", activity_gbq=ACTIVITY_GBQ, isotope="Y-90",
                       lung_shunt_fraction=manifest["spect"]["lung_shunt_fraction"])
    floating = (
        FloatingInput(id="ct", modality="CT", image=export, series=str(ct.SeriesInstanceUID),
                      liver=ContourInput(ct_rtstruct, ("Liver",)), lesions=ContourInput(ct_rtstruct, tuple(present)),
                      landmarks=ContourInput(seg(labels("contrast_ct", "landmark_map"), ct, "ct_landmarks_seg.dcm",
                                                 landmark_names))),
        FloatingInput(id="mr", modality="MR", image=export, series="T1 MR",
                      liver=ContourInput(seg(labels("mr_t1", "liver"), mr, "mr_liver_seg.dcm", {1: "Liver"})),
                      lesions=ContourInput(seg(labels("mr_t1", "lesions"), mr, "mr_lesions_seg.dcm", lesion_names)),
                      landmarks=ContourInput(rtstruct(labels("mr_t1", "landmark_map"), mr, "mr_landmarks_rtstruct.dcm",
                                                      landmark_names))),
    )
    return _Export(export, Plan(reference=reference, spect=spect, floating=floating), maa)


class _Messages(logging.Handler):
    """Keeps the text of every log record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def dicom_runs(dicom_export, tmp_path_factory) -> tuple[RunResult, RunResult, list[str]]:
    """The all-DICOM plan run plainly, and de-identified with its MR only (quick preset); and the de-identified
    run's log messages."""
    out = tmp_path_factory.mktemp("dicom_runs")
    logger, messages = logging.getLogger("sirtreg"), _Messages()
    level = logger.level
    plain = run_plan(dicom_export.plan, out / "plain", tools=QUICK)
    logger.addHandler(messages)
    logger.setLevel(logging.DEBUG)
    try:
        deidentified = run_plan(replace(dicom_export.plan, floating=dicom_export.plan.floating[1:]),
                                out / "deidentified", deidentify=True, pseudonym=PSEUDONYM, tools=QUICK)
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)
    return plain, deidentified, messages.messages


def _dicom_texts(dataset: pydicom.Dataset) -> list[tuple[str, str]]:
    """(VR, text) of every element, in every nested sequence and the file meta, pixels left out."""
    texts = []
    for element in [*getattr(dataset, "file_meta", []), *dataset]:
        if element.VR == "SQ":
            texts += [text for item in element.value for text in _dicom_texts(item)]
        elif not isinstance(element.value, bytes):
            texts.append((element.VR, str(element.value)))
    return texts


def _identifiers_in(folder: Path) -> dict[str, set[str]]:
    """The identifying texts in each file under ``folder``: in its bytes (.gz unpacked) and, for DICOM, in every
    element (read with pydicom)."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        hits = {text for text in NAME_TEXTS if text.encode() in data}
        if path.suffix == ".dcm":
            texts = _dicom_texts(pydicom.dcmread(path))
            hits |= {text for _, value in texts for text in NAME_TEXTS if text.lower() in value.lower()}
            hits |= {date for vr, value in texts for date in DATE_TEXTS if vr != "UI" and date in value}
        else:
            hits |= {date for date in DATE_TEXTS if date.encode() in data}
        if hits:
            found[path.relative_to(folder).as_posix()] = hits
    return found


def _check_dicom_outputs(result: RunResult, export: _Export) -> dict[str, pydicom.Dataset]:
    """Every DICOM output reads with pydicom (SEGs with highdicom too) and lies in the MAA CT's study and frame of
    reference, SEGs on its series; returns them by path relative to dicom/."""
    dicom, maa = result.out_dir / "dicom", export.maa_ct
    keys = [row["floating"] for row in result.results["registrations"]]
    datasets = {p.relative_to(dicom).as_posix(): pydicom.dcmread(p) for p in sorted(dicom.rglob("*.dcm"))}
    kinds = {name.rsplit("/", 1)[0] if "/registered/" in name else name for name in datasets}
    assert kinds == {"rt_dose.dcm", *(f"floating/{key}/{kind}" for key in keys
                                      for kind in ("lesions_seg.dcm", "lesions_rtstruct.dcm", "registered"))}
    for name, dataset in datasets.items():
        assert dataset.FrameOfReferenceUID == maa.FrameOfReferenceUID, name
        assert dataset.StudyInstanceUID == maa.StudyInstanceUID, name
    for key in keys:
        path = dicom / "floating" / key / "lesions_seg.dcm"
        seg = hd.seg.Segmentation.from_dataset(datasets[f"floating/{key}/lesions_seg.dcm"])
        assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [maa.SeriesInstanceUID]
        assert all(seg.get_segment_description(n).segment_label.startswith(f"{key}/") for n in seg.segment_numbers)
        on_ct = read_dicom_seg(path, reference=export.folder)  # the folder of several series: the MAA CT is chosen
        registered = read_labels(result.out_dir / "floating" / key / "registered_lesions.nii.gz")
        np.testing.assert_array_equal(on_ct.array > 0, orient_like(registered, on_ct.grid).array > 0)
        assert hd.seg.segread(path).SOPInstanceUID == seg.SOPInstanceUID
    maa_ct = read_image(export.folder, series=maa.SeriesInstanceUID)
    for key in keys:
        series = read_image(dicom / "floating" / key / "registered")
        assert series.modality == key.upper() and series.grid.same_as(maa_ct.grid, tolerance_mm=1e-2)
    dose = read_rt_dose(dicom / "rt_dose.dcm")
    assert dose.grid.same_as(read_image(export.folder, series="MAA SPECT").grid, tolerance_mm=1e-2)
    return datasets


@pytest.mark.slow
def test_a_plan_of_dicom_files_only_runs_end_to_end(dicom_runs, dicom_export):
    """MAA CT, SPECT, CT and MR series in one folder; contours as SEGs and RTSTRUCTs (liver, lesions, landmarks)."""
    plain, _, _ = dicom_runs
    assert {entry.image for entry in (dicom_export.plan.reference, dicom_export.plan.spect,
                                      *dicom_export.plan.floating)} == {dicom_export.folder}
    assert plain.results["reference"]["liver"] == "given"
    assert [(r["floating"], r["guidance"], r["liver"]) for r in plain.results["registrations"]] == [
        ("ct", "liver+landmarks", "given"), ("mr", "liver+landmarks", "given")]
    rows = {(row["source"], row["structure"]): row for row in plain.doses}
    assert {source for source, _ in rows} == {"MAA CT", "ct", "mr"}
    for (source, structure), row in rows.items():
        assert row["error"] == "" and row["mean_gy"] > 0, (source, structure)
    assert any(row["dsc_to_maa_ct_lesion"] for row in plain.doses if row["source"] == "ct")  # names matched
    datasets = _check_dicom_outputs(plain, dicom_export)
    assert str(datasets["rt_dose.dcm"].PatientName) == PATIENT_NAME  # not de-identified: copied from the MAA CT


@pytest.mark.slow
def test_deidentified_outputs_hold_no_identifier(dicom_runs, dicom_export):
    plain, deidentified, messages = dicom_runs
    assert _identifiers_in(deidentified.out_dir) == {}
    found = _identifiers_in(plain.out_dir)  # the same run without de-identification keeps them
    assert {"Zyxwvut", PATIENT_ID, BIRTH_DATE} <= found["dicom/rt_dose.dcm"]
    assert {"Zyxwvut", PATIENT_ID, BIRTH_DATE} <= found["dicom/floating/mr/lesions_seg.dcm"]
    assert {"Zyxwvut", PATIENT_ID} <= found["dicom/floating/mr/lesions_rtstruct.dcm"]
    assert {"Zyxwvut", PATIENT_ID} <= found["dicom/floating/mr/registered/00001.dcm"]
    assert {"Zyxwvut", PATIENT_ID} <= found["results.json"]  # the plan's paths name the patient
    assert messages and not [m for m in messages if any(t in m for t in (*NAME_TEXTS, *DATE_TEXTS))]

    for name, dataset in _check_dicom_outputs(deidentified, dicom_export).items():
        assert (str(dataset.PatientName), dataset.PatientID) == (PSEUDONYM, PSEUDONYM), name
        assert dataset.PatientIdentityRemoved == "YES" and dataset.PatientBirthDate == "", name
        assert dataset.DeidentificationMethodCodeSequence[0].CodeValue == "113100", name
    document = json.loads((deidentified.out_dir / "results.json").read_text())
    assert document["deidentified"]["pseudonym"] == PSEUDONYM and document["started_utc"] is None
    assert document["plan"]["reference"]["image"] == "<DICOM folder>"
    assert document["plan"]["floating"][0]["lesions"] == "<DICOM file>"
    same = [r for r in plain.doses if r["source"] != "ct"]  # the same images and registration, not de-identified
    assert [r["mean_gy"] for r in deidentified.doses] == pytest.approx([r["mean_gy"] for r in same])


@pytest.mark.slow
def test_a_pseudonym_without_deidentify_is_refused(dicom_export, tmp_path, no_reading):
    with pytest.raises(InputError, match="pseudonym"):
        run_plan(dicom_export.plan, tmp_path / "out", pseudonym=PSEUDONYM)
    with pytest.raises(InputError, match="pseudonym"):
        run_plan(dicom_export.plan, tmp_path / "out", deidentify=True, pseudonym="Doe^John")
    assert not (tmp_path / "out").exists()


@dataclass(frozen=True)
class _RealCT:
    """dcmqi's 3 real CT slices and liver SEG, with a lesion SEG and a SPECT (NM) we make in that CT's frame."""

    folder: Path
    liver_seg: Path
    lesion_seg: Path
    spect: Path
    header: pydicom.Dataset


def _real_ct(shared_data: Path, tmp_path: Path) -> _RealCT:
    dcmqi = shared_data / "dcmqi"
    folder, liver_seg = dcmqi / "ct-3slice", dcmqi / "liver.dcm"
    if not liver_seg.is_file() or not folder.is_dir():
        pytest.skip(f"the dcmqi SEG and CT are not in {shared_data}")
    grid = read_image(folder).grid
    header = pydicom.dcmread(min(folder.iterdir()), stop_before_pixels=True)
    liver = read_dicom_seg(liver_seg, reference=folder).array > 0
    _, yy, xx = np.indices(grid.shape)
    centre = [float(c[liver].mean()) for c in (yy, xx)]
    (sx, sy, sz), factor = grid.spacing_mm, 4
    lesion = liver & (np.hypot((yy - centre[0]) * sy, (xx - centre[1]) * sx) < 20)  # a cylinder of radius 20 mm
    lesion_seg = write_dicom_seg(LabelVolume.from_mask(lesion, grid, name="lesion 1"), folder,
                                 tmp_path / "lesion_seg.dcm")
    coarse = replace(grid, size=(grid.size[0] // factor, grid.size[1] // factor, grid.size[2]),
                     spacing_mm=(sx * factor, sy * factor, sz),
                     origin_mm=tuple(grid.index_to_world([(factor - 1) / 2, (factor - 1) / 2, 0])))
    uptake = 1.0 + 100.0 * liver + 300.0 * lesion  # counts on the CT's voxels, summed over 4 x 4 blocks
    counts = uptake.reshape(grid.shape[0], coarse.shape[1], factor, coarse.shape[2], factor).sum(axis=(2, 4))
    spect = write_dicom_nm(Volume(counts.astype(np.float32), coarse, "NM"), tmp_path / "spect.dcm",
                           frame_of_reference_uid=header.FrameOfReferenceUID,
                           study_instance_uid=header.StudyInstanceUID)
    return _RealCT(folder, liver_seg, lesion_seg, spect, header)


def test_a_real_dicom_seg_is_the_liver_contour_of_a_plan(shared_data, tmp_path):
    """dcmqi's liver SEG (written by another tool) is the MAA CT liver of a plan whose MAA CT is its 3 real slices;
    run de-identified. No floating image: the registration refuses a 3-slice image (see the next test)."""
    real = _real_ct(shared_data, tmp_path)
    plan = Plan(reference=ReferenceInput(real.folder, liver=ContourInput(real.liver_seg),
                                         lesions=ContourInput(real.lesion_seg)),
                spect=SpectInput(real.spect, activity_gbq=ACTIVITY_GBQ, isotope="Y-90"))
    result = run_plan(plan, tmp_path / "out", deidentify=True)

    liver = read_labels(result.out_dir / "maa_ct" / "liver.nii.gz")
    same = read_labels(real.liver_seg.parent / "liver_seg.nrrd")  # dcmqi's label map of the same liver
    assert np.count_nonzero(liver.array) == np.count_nonzero(same.array == 1)
    rows = {row["structure"]: row for row in result.doses}
    assert rows["MAA CT/lesion 1"]["mean_gy"] > rows["liver"]["mean_gy"] > 0
    dose = read_rt_dose(result.out_dir / "dicom" / "rt_dose.dcm")
    assert dose.meta["FrameOfReferenceUID"] == real.header.FrameOfReferenceUID
    assert dose.meta["StudyInstanceUID"] == real.header.StudyInstanceUID
    dataset = pydicom.dcmread(result.out_dir / "dicom" / "rt_dose.dcm")
    assert (str(dataset.PatientName), dataset.PatientID, dataset.PatientIdentityRemoved) == (
        "ANONYMOUS", "ANONYMOUS", "YES")
    identifiers = {str(real.header.get(k, "")) for k in ("PatientName", "PatientID", "PatientBirthDate",
                                                         "AccessionNumber", "StudyDate")} - {""}
    assert identifiers and not [text for _, text in _dicom_texts(dataset) if text in identifiers]
    name = str(real.header.PatientName).encode()
    for path in (p for p in result.out_dir.rglob("*") if p.is_file()):
        assert name not in (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes())
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(real.liver_seg))  # highdicom reads dcmqi's SEG too
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [real.header.SeriesInstanceUID]


def test_a_three_slice_floating_image_is_refused_before_registration(shared_data, tmp_path):
    """The dcmqi CT (3 real slices) as a floating image, its real SEG as the floating liver: the registration
    cannot smooth 3 slices to its 8 mm level, so the run refuses it by its thickness and writes nothing."""
    real = _real_ct(shared_data, tmp_path)
    plan = Plan(reference=ReferenceInput(real.folder, liver=ContourInput(real.liver_seg)),
                spect=SpectInput(real.spect, activity_gbq=ACTIVITY_GBQ, isotope="Y-90"),
                floating=(FloatingInput(id="ct", modality="CT", image=real.folder, liver=ContourInput(real.liver_seg),
                                        lesions=ContourInput(real.lesion_seg), guidance="liver"),))
    with pytest.raises(InputError, match=r"floating ct.*spans only .* mm along one axis.*at least 32 mm"):
        run_plan(plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_interrupted_run_leaves_no_output(patient, tmp_path):
    def interrupt(*args, **kwargs):
        assert (tmp_path / ".out.partial" / "dose.nii.gz").is_file()  # interrupted with files half-way
        raise KeyboardInterrupt

    tools = RunTools(write_html=interrupt)
    plan = _plan(patient, floating=())
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "out", tools=tools)
    assert list(tmp_path.iterdir()) == []
    _earlier_output(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "out", overwrite=True, tools=tools)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "old.txt").is_file()


def _earlier_output(folder: Path) -> None:
    """An earlier output of sirtreg in ``folder``: ``old.txt`` and its manifest."""
    with OutputFolder(folder, command="run") as output:
        (output.staging / "old.txt").write_text("an earlier run")


def test_overwrite_replaces_the_whole_folder(patient, tmp_path):
    _earlier_output(tmp_path / "out")
    (tmp_path / ".out.partial").mkdir()  # left by a killed run
    (tmp_path / ".out.partial" / "dose.nii.gz").write_text("half")
    result = run_plan(_plan(patient, floating=()), tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "old.txt").exists() and result.report.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_run_doses_by_voxel_s_values_where_the_plan_asks(patient, tmp_path):
    plan = _plan(patient, floating=())
    plan = replace(plan, spect=replace(plan.spect, voxel_s_values=True))
    result = run_plan(plan, tmp_path / "out")
    assert (tmp_path / "out" / "dose_vsv.nii.gz").is_file()
    with open(tmp_path / "out" / "doses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    liver = next(row for row in rows if row["role"] == "liver")
    # the energy of the liver's edge spreads out of it: a little less than local deposition's mean, not much
    assert 0.9 * float(liver["mean_gy"]) < float(liver["vsv_mean_gy"]) < float(liver["mean_gy"])
    assert all(row["vsv_mean_gy"] for row in rows)
    assert result.report.is_file()


# --- refusals before any work ---------------------------------------------------------------
@pytest.fixture()
def no_reading() -> RunTools:
    """Tools that fail the test if a run reads its images (so the refusal came before any long work)."""
    def read(*args, **kwargs):
        raise AssertionError("the run started reading images")

    return RunTools(read_inputs=read)


def test_an_empty_liver_contour_is_refused_before_registration(patient, tmp_path):
    folder, manifest = patient
    liver = read_labels(folder / manifest["floating"][0]["liver"])
    write_image(liver.with_array(np.zeros_like(liver.array)), tmp_path / "empty_liver.nii.gz")
    plan = _plan(patient)
    entry = replace(plan.floating[0], liver=ContourInput(tmp_path / "empty_liver.nii.gz"))

    def register(*args, **kwargs):
        raise AssertionError("the run started registering")

    with pytest.raises(InputError, match="floating ct, liver: the liver contour is empty"):
        run_plan(replace(plan, floating=(entry,)), tmp_path / "out", tools=RunTools(register=register))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_liver.nii.gz"]


@pytest.mark.parametrize(("device", "message"), [("tpu", "device must be"), ("cuda", "no CUDA GPU")])
def test_unknown_or_missing_devices_are_refused(patient, tmp_path, no_reading, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InputError, match=message):
        run_plan(_plan(patient), tmp_path / "out", device=device, tools=no_reading)


def test_an_output_folder_holding_inputs_is_refused(patient, no_reading):
    folder, _ = patient
    with pytest.raises(OutputExistsError, match="holds the input"):
        run_plan(_plan(patient), folder, overwrite=True, tools=no_reading)
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        run_plan(_plan(patient, reference_image=folder), folder / "out", tools=no_reading)


# --- the command line -----------------------------------------------------------------------
def test_cli_run_writes_the_report_and_refuses_a_second_run(patient, tmp_path):
    plan = write_plan(_plan(patient, floating=()), tmp_path / "plan.yaml")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(plan), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout and "absorbed dose" in result.stdout
    assert (tmp_path / "out" / "report.html").is_file()
    again = runner.invoke(app, ["run", str(plan), "-o", str(tmp_path / "out")])
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_cli_run_passes_deidentify_and_refuses_a_lone_pseudonym(patient, tmp_path, monkeypatch):
    plan = write_plan(_plan(patient, floating=()), tmp_path / "plan.yaml")
    calls = []

    def fake_run_plan(*args, **kwargs):
        calls.append(kwargs)
        raise InputError("stopped after the options were passed")

    monkeypatch.setattr("sirtreg.pipeline.run_plan", fake_run_plan)
    runner = CliRunner()
    out = str(tmp_path / "out")
    result = runner.invoke(app, ["run", str(plan), "-o", out, "--deidentify", "--pseudonym", "S-017"])
    assert result.exit_code == 2 and "stopped after" in result.stderr
    assert (calls[0]["deidentify"], calls[0]["pseudonym"]) == (True, "S-017")
    for options, message in ((["--pseudonym", "S-017"], "only with --deidentify"),
                             (["--deidentify", "--pseudonym", "Doe^John"], "pseudonym")):
        result = runner.invoke(app, ["run", str(plan), "-o", out, *options])
        assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(calls) == 1


# --- contours: segments by name or by label value ---------------------------------------
@pytest.fixture
def organs(tmp_path) -> tuple[Volume, Path]:
    """An image and a plain label map of three organs on its voxels (values 1, 5, 6, as TotalSegmentator's)."""
    grid = Grid((6, 5, 4), (2.0, 2.0, 3.0), (10.0, -5.0, 0.0))
    array = np.zeros(grid.shape, np.uint8)
    array[0, :2], array[1, 1:4], array[3, 2:] = 1, 5, 6
    return (Volume(np.zeros(grid.shape, np.float32), grid, "CT"),
            write_image(LabelVolume(array, grid), tmp_path / "organs.nii.gz"))


def test_a_liver_is_taken_by_label_value_from_a_plain_label_map(organs):
    image, path = organs
    array = read_labels(path).array
    liver = read_contour(*_contour(ContourInput(path, (5,))), image, "liver")
    assert np.array_equal(liver.array > 0, array == 5)
    lesions = read_contour(*_contour(ContourInput(path, ("5", "6"))), image, "lesions")
    assert lesions.labels == {5: "lesion 5", 6: "lesion 6"}
    assert np.array_equal(lesions.array, np.where(array > 1, array, 0))
    everything = read_contour(*_contour(ContourInput(path)), image, "lesions")  # one lesion per label: all taken
    assert sorted(everything.labels) == [1, 5, 6]


@pytest.mark.parametrize(("segments", "expected"), [
    ((), r"^organs\.nii\.gz holds 3 labels \(1, 5, 6\); choose the liver's with 'segments' in the plan, "
         r"e\.g\. \{path: organs\.nii\.gz, segments: \[1\]\}$"),
    ((7,), r"^organs\.nii\.gz holds no label 7; it holds labels 1, 5, 6$"),
    (("Liver",), r"^organs\.nii\.gz is a label map without segment names: choose its segments by label value"),
])
def test_a_liver_label_map_of_several_labels_needs_its_value(organs, segments, expected):
    image, path = organs
    with pytest.raises(InputError, match=expected):
        read_contour(*_contour(ContourInput(path, segments)), image, "liver")


def test_a_liver_segmentation_of_several_segments_needs_its_name(organs, tmp_path):
    image, path = organs
    array = read_labels(path).array
    masks = {"Liver": array == 5, "Spleen": array == 1}
    seg = write_segmentation(Segmentation.from_masks(image.grid, masks), tmp_path / "organs.seg.nrrd")
    with pytest.raises(InputError, match=r"organs\.seg\.nrrd holds 2 segments \('Liver', 'Spleen'\); choose the "):
        read_contour(*_contour(ContourInput(seg)), image, "liver")
    liver = read_contour(*_contour(ContourInput(seg, ("Liver",))), image, "liver")
    assert np.array_equal(liver.array > 0, array == 5)
