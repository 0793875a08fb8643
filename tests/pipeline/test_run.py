"""sirtreg run on the digital patient: results, report, DICOM outputs, refusals and interrupted runs.

One run registers the contrast CT with the real liver+landmarks preset and is checked against
the phantom's truth; the other runs use a quick affine-only preset (few iterations), since they
test the plumbing, not the registration.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.errors import InputError, OutputExistsError
from sirtreg.io import (
    Segmentation,
    orient_like,
    read_dicom_seg,
    read_image,
    read_labels,
    read_rt_dose,
    write_dicom_nm,
    write_dicom_series,
    write_image,
    write_rtstruct,
)
from sirtreg.metrics import dice
from sirtreg.phantom import write_patient
from sirtreg.pipeline import (
    ContourInput,
    FloatingInput,
    Plan,
    ReferenceInput,
    SpectInput,
    run_plan,
    write_plan,
)
from sirtreg.pipeline import run as run_module
from sirtreg.register import preset

ACTIVITY_GBQ = 2.0
IDS = {"contrast_ct": "ct", "mr_t1": "mr"}


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The seed-0 digital patient at the fast resolution: its folder and manifest."""
    folder = tmp_path_factory.mktemp("patient")
    return folder, write_patient(folder, seed=0, resolution="fast")


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


def _quick_preset(guidance, **weights):
    """The preset, affine only with few iterations: fast, for tests of everything but accuracy."""
    settings = preset(guidance, **weights)
    return replace(settings, affine=replace(settings.affine, iterations=(15, 10)),
                   nonrigid=replace(settings.nonrigid, image_weight=0.0, label_weight=0.0))


@pytest.fixture()
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "preset", _quick_preset)


@pytest.fixture(scope="module")
def full_run(patient, tmp_path_factory):
    """The contrast CT registered with the real (liver+landmarks) preset; (plan, result)."""
    plan = _plan(patient)
    steps = []
    result = run_plan(plan, tmp_path_factory.mktemp("runs") / "out", progress=lambda s, f: steps.append(f))
    assert steps == sorted(steps) and steps[-1] == pytest.approx(1.0)
    return plan, result


# --- the full run ---------------------------------------------------------------------------
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


def test_a_second_run_into_the_folder_is_refused(full_run):
    plan, result = full_run
    before = (result.out_dir / "results.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="not empty"):
        run_plan(plan, result.out_dir)
    assert (result.out_dir / "results.json").stat().st_mtime_ns == before


# --- plumbing, with the quick preset --------------------------------------------------------
def test_dicom_outputs_reference_the_maa_ct(patient, tmp_path, quick):
    folder, manifest = patient
    maa_ct = write_dicom_series(read_image(folder / manifest["reference"]["image"], modality="CT"),
                                tmp_path / "maa_ct", series_description="MAA CT")
    header = pydicom.dcmread(next(maa_ct.iterdir()), stop_before_pixels=True)
    spect = read_image(folder / manifest["spect"]["image"])
    write_dicom_nm(spect, tmp_path / "spect.dcm", frame_of_reference_uid=header.FrameOfReferenceUID)
    plan = _plan(patient, floating=("contrast_ct", "mr_t1"), reference_image=maa_ct,
                 spect_image=tmp_path / "spect.dcm")
    result = run_plan(plan, tmp_path / "out")
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


def test_missing_liver_contours_are_segmented(patient, tmp_path, monkeypatch, quick):
    folder, manifest = patient
    truth = {scan["modality"] + str(scan["grid"]["size"]): read_labels(folder / scan["liver"], labels={1: "liver"})
             for scan in (manifest["reference"], *manifest["floating"])}
    calls = []

    def fake_segment_liver(volume, *, modality, device, progress):
        calls.append(modality)
        progress("network", 0.5)
        return truth[volume.modality + str(list(volume.grid.size))]

    monkeypatch.setattr(run_module, "segment_liver", fake_segment_liver)
    result = run_plan(_plan(patient, livers=False), tmp_path / "out")
    assert calls == ["ct", "ct"]
    assert result.results["reference"]["liver"] == "CNN"
    registration = result.results["registrations"][0]
    assert registration["liver"] == "CNN" and registration["quality"] == {}  # no truth: no quality metrics
    assert (result.out_dir / "floating" / "ct" / "liver_cnn.nii.gz").is_file()

    # one scan listed twice (two guidance presets to compare) is segmented once
    calls.clear()
    plan = _plan(patient, livers=False)
    twice = (replace(plan.floating[0], guidance="liver"), replace(plan.floating[0], id="ct-again", guidance="image"))
    result = run_plan(replace(plan, floating=twice), tmp_path / "twice")
    assert calls == ["ct", "ct"]
    assert [row["liver"] for row in result.results["registrations"]] == ["CNN", "CNN"]


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
    read = run_module._read_contour(entry.lesions, read_image(ct), "lesions")
    assert list(read.labels.values()) == list(names.values())
    np.testing.assert_array_equal(read.array > 0, orient_like(lesions, read.grid).array > 0)
    result = run_plan(replace(plan, floating=(entry,)), tmp_path / "out")
    rows = {(row["source"], row["structure"]): row for row in result.doses}
    for name in names.values():
        assert rows[("ct", f"ct/{name}")]["error"] == "" and rows[("ct", f"ct/{name}")]["mean_gy"] > 0
    assert (result.out_dir / "floating" / "ct" / "registered_lesions.nii.gz").is_file()


def test_an_interrupted_run_leaves_no_output(patient, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        assert (tmp_path / ".out.partial" / "dose.nii.gz").is_file()  # interrupted with files half-way
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "write_html", interrupt)
    plan = _plan(patient, floating=())
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("an earlier run")
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path / "out", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out" / "old.txt").is_file()


def test_overwrite_replaces_the_whole_folder(patient, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("an earlier run")
    (tmp_path / ".out.partial").mkdir()  # left by a killed run
    (tmp_path / ".out.partial" / "dose.nii.gz").write_text("half")
    result = run_plan(_plan(patient, floating=()), tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "old.txt").exists() and result.report.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# --- refusals before any work ---------------------------------------------------------------
@pytest.fixture()
def no_reading(monkeypatch):
    """Fail the test if a run reads its images (so the refusal came before any long work)."""
    def read(*args, **kwargs):
        raise AssertionError("the run started reading images")

    monkeypatch.setattr(run_module, "_read_inputs", read)


def test_an_empty_liver_contour_is_refused_before_registration(patient, tmp_path, monkeypatch):
    folder, manifest = patient
    liver = read_labels(folder / manifest["floating"][0]["liver"])
    write_image(liver.with_array(np.zeros_like(liver.array)), tmp_path / "empty_liver.nii.gz")
    plan = _plan(patient)
    entry = replace(plan.floating[0], liver=ContourInput(tmp_path / "empty_liver.nii.gz"))

    def register(*args, **kwargs):
        raise AssertionError("the run started registering")

    monkeypatch.setattr(run_module, "register", register)
    with pytest.raises(InputError, match="floating ct, liver: the liver contour is empty"):
        run_plan(replace(plan, floating=(entry,)), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_liver.nii.gz"]


@pytest.mark.parametrize(("device", "message"), [("tpu", "device must be"), ("cuda", "no CUDA GPU")])
def test_unknown_or_missing_devices_are_refused(patient, tmp_path, no_reading, device, message):
    if device == "cuda" and run_module.torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(InputError, match=message):
        run_plan(_plan(patient), tmp_path / "out", device=device)


def test_an_output_folder_holding_inputs_is_refused(patient, no_reading):
    folder, _ = patient
    with pytest.raises(OutputExistsError, match="holds the input"):
        run_plan(_plan(patient), folder, overwrite=True)
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        run_plan(_plan(patient, reference_image=folder), folder / "out")


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
