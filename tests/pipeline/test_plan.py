"""Patient plan: reading, round trip, default guidance, and every refusal listed in one error."""

from __future__ import annotations

import re
import shutil
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import (
    Segmentation,
    write_dicom_nm,
    write_dicom_seg,
    write_dicom_series,
    write_image,
    write_segmentation,
)
from sirtreg.pipeline import (
    ContourInput,
    FloatingInput,
    Plan,
    ReferenceInput,
    RunWeights,
    SpectInput,
    check_plan,
    read_plan,
    write_plan,
)

MAA_GRID = Grid((5, 4, 3), (4.0, 4.0, 5.0), (-10.0, -8.0, 0.0))
SPECT_GRID = Grid((3, 3, 3), (8.0, 8.0, 8.0), (-12.0, -10.0, -2.0))
CT_GRID = Grid((6, 5, 4), (2.0, 2.0, 3.0), (100.0, 50.0, -20.0))
MR_GRID = Grid((4, 4, 4), (3.0, 3.0, 3.0), (0.0, 0.0, 0.0))
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def _labels(grid: Grid, values: dict[int, str]) -> LabelVolume:
    """A label map holding each value at one voxel, named."""
    array = np.zeros(grid.shape, np.uint8)
    array.flat[: len(values)] = list(values)
    return LabelVolume(array, grid, labels=values)


def _ct(grid: Grid, folder: Path, description: str = "") -> Path:
    return write_dicom_series(Volume(np.zeros(grid.shape, np.int16), grid, "CT"), folder,
                              series_description=description)


def _rtstruct(path: Path, series_folder: Path, names: list[str], *, frame_uid: str | None = None) -> Path:
    """A minimal RTSTRUCT (header only, no contour data) referencing the series in ``series_folder``.

    With ``frame_uid``, it references that frame of reference and no series instead.
    """
    source = pydicom.dcmread(next(series_folder.iterdir()), stop_before_pixels=True)
    frame_uid = frame_uid or source.FrameOfReferenceUID
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = RTSTRUCT_CLASS, generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_CLASS, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTSTRUCT", source.StudyInstanceUID, generate_uid()
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    study = Dataset()
    study.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    if frame_uid == source.FrameOfReferenceUID:
        frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    rois = []
    for number, name in enumerate(names, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        rois.append(roi)
    ds.StructureSetROISequence = rois
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of one patient, and some wrong ones under other/ (written once: they are only read)."""
    folder = tmp_path_factory.mktemp("patient")
    maa_ct = _ct(MAA_GRID, folder / "maa" / "ct", "MAA CT")
    frame = pydicom.dcmread(next(maa_ct.iterdir()), stop_before_pixels=True).FrameOfReferenceUID
    write_dicom_nm(Volume(np.ones(SPECT_GRID.shape, np.float32), SPECT_GRID), folder / "maa" / "spect.dcm",
                   frame_of_reference_uid=frame)
    write_image(_labels(MAA_GRID, {1: "liver", 2: "hilum", 3: "dome"}), folder / "maa" / "landmarks.nii.gz")
    liver = np.zeros(MAA_GRID.shape, bool)
    liver[1, 1:3, 1:4] = True
    write_segmentation(Segmentation.from_masks(MAA_GRID, {"liver": liver}), folder / "maa" / "liver.seg.nrrd")

    ct = _ct(CT_GRID, folder / "diag" / "ct", "CT portal")
    write_dicom_seg(_labels(CT_GRID, {1: "lesion 1", 2: "lesion 2"}), ct, folder / "diag" / "ct_lesions.dcm")
    landmarks = _labels(CT_GRID, {2: "hilum", 3: "dome"})  # stored with the y axis reversed: the same voxels
    flipped = Grid(CT_GRID.size, CT_GRID.spacing_mm, tuple(CT_GRID.index_to_world([0, CT_GRID.size[1] - 1, 0])),
                   (1, 0, 0, 0, -1, 0, 0, 0, 1))
    write_image(LabelVolume(landmarks.array[:, ::-1].copy(), flipped), folder / "diag" / "ct_landmarks.nii.gz")
    _rtstruct(folder / "diag" / "ct_rtstruct.dcm", ct, ["Liver", "Lesion 1"])
    write_image(Volume(np.zeros(MR_GRID.shape, np.float32), MR_GRID, "MR"), folder / "diag" / "mr.nii.gz")
    write_image(_labels(MR_GRID, {1: "lesion"}), folder / "diag" / "mr_lesions.nii.gz")
    organs = _labels(MR_GRID, {1: "spleen", 5: "liver", 6: "stomach"}).array  # as TotalSegmentator's: no names
    write_image(LabelVolume(organs, MR_GRID), folder / "diag" / "mr_organs.nii.gz")

    other = folder / "other"
    write_dicom_nm(Volume(np.ones(SPECT_GRID.shape, np.float32), SPECT_GRID), other / "spect_other_frame.dcm")
    write_image(Volume(np.ones(SPECT_GRID.shape, np.float32), SPECT_GRID), other / "spect.nii.gz")
    far = Grid(SPECT_GRID.size, SPECT_GRID.spacing_mm, (500.0, 500.0, 500.0))
    write_image(Volume(np.ones(far.shape, np.float32), far), other / "far_spect.nii.gz")
    write_image(Volume(np.zeros(MAA_GRID.shape, np.float32), MAA_GRID), other / "maa_ct.nii.gz")
    write_dicom_seg(_labels(MAA_GRID, {1: "lesion"}), maa_ct, other / "seg_on_maa.dcm")
    _rtstruct(other / "rtstruct_on_maa.dcm", maa_ct, ["Liver"])
    _rtstruct(other / "rtstruct_other_frame.dcm", ct, ["Liver"], frame_uid=generate_uid())
    sitk.WriteImage(sitk.Image(4, 4, sitk.sitkFloat32), str(other / "slice.nii.gz"))
    coarse = Grid((3, 3, 2), (4.0, 4.0, 6.0), CT_GRID.origin_mm)
    write_image(_labels(coarse, {2: "hilum", 3: "dome"}), other / "coarse_landmarks.nii.gz")
    shifted = Grid(CT_GRID.size, CT_GRID.spacing_mm, tuple(np.add(CT_GRID.origin_mm, (1.0, 0.0, 0.0))))
    write_image(_labels(shifted, {2: "hilum", 3: "dome"}), other / "shifted_landmarks.nii.gz")
    (other / "two_series").mkdir()
    for name in ("CT arterial", "CT portal"):
        for file in _ct(CT_GRID, other / name, name).iterdir():
            shutil.move(file, other / "two_series" / f"{name[3:]}_{file.name}")
    (other / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def document() -> dict:
    """A valid plan: ct1 with landmarks on both sides (default guidance liver+landmarks), mr1 image-guided."""
    return {
        "format": "sirtreg-plan", "version": 1,
        "reference": {"image": "maa/ct", "landmarks": "maa/landmarks.nii.gz",
                      "liver": {"path": "maa/liver.seg.nrrd", "segments": ["liver"]}},
        "spect": {"image": "maa/spect.dcm", "activity_gbq": 1.8, "isotope": "Y-90", "lung_shunt_fraction": 0.04},
        "floating": [
            {"id": "ct1", "modality": "CT", "role": "portal venous CT", "image": "diag/ct",
             "liver": {"path": "diag/ct_rtstruct.dcm", "segments": ["Liver"]},
             "lesions": "diag/ct_lesions.dcm", "landmarks": "diag/ct_landmarks.nii.gz"},
            {"id": "mr1", "modality": "MR", "image": "diag/mr.nii.gz", "lesions": "diag/mr_lesions.nii.gz",
             "guidance": "image"},
        ],
    }


def _save(folder: Path, document) -> Path:
    """The document as a plan in ``folder`` (the patient's, so relative paths resolve), under a new name."""
    path = folder / f"plan-{uuid.uuid4().hex}.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def _problems(error: pytest.ExceptionInfo) -> list[str]:
    """The problem lines of a plan InputError, after checking that the header counts them."""
    header, *lines = str(error.value).splitlines()
    count = int(re.search(r"(\d+) problems? in the plan", header).group(1))
    assert count == len(lines), str(error.value)
    return [line.strip() for line in lines]


def _refused(folder: Path, document) -> list[str]:
    with pytest.raises(InputError) as error:
        read_plan(_save(folder, document))
    return _problems(error)


# --- valid plans --------------------------------------------------------------------------
def test_valid_plan_reads_with_absolute_paths(inputs, document):
    plan = read_plan(_save(inputs, document))
    assert plan.reference == ReferenceInput(
        image=inputs / "maa" / "ct", landmarks=ContourInput(inputs / "maa" / "landmarks.nii.gz"),
        liver=ContourInput(inputs / "maa" / "liver.seg.nrrd", ("liver",)))
    assert plan.spect == SpectInput(image=inputs / "maa" / "spect.dcm", activity_gbq=1.8, isotope="Y-90",
                                    lung_shunt_fraction=0.04)
    ct1, mr1 = plan.floating
    assert (ct1.id, ct1.modality, ct1.role, ct1.guidance) == ("ct1", "CT", "portal venous CT", None)
    assert ct1.liver == ContourInput(inputs / "diag" / "ct_rtstruct.dcm", ("Liver",))
    assert ct1.lesions.path == inputs / "diag" / "ct_lesions.dcm" and ct1.lesions.segments == ()
    assert (mr1.id, mr1.modality, mr1.guidance, mr1.landmarks) == ("mr1", "MR", "image", None)
    check_plan(plan)  # a plan that reads passes its checks


def test_plan_round_trips_through_yaml(inputs, document, tmp_path):
    plan = read_plan(_save(inputs, document))
    path = write_plan(plan, tmp_path / "copy" / "plan.yaml")
    assert sorted(p.name for p in path.parent.iterdir()) == ["plan.yaml"]  # no temporary left behind
    assert read_plan(path) == plan
    written = yaml.safe_load(path.read_text())
    assert written["format"] == "sirtreg-plan" and written["version"] == 1
    assert not Path(written["reference"]["image"]).is_absolute()
    assert (path.parent / written["reference"]["image"]).resolve() == (inputs / "maa" / "ct").resolve()
    assert plan.to_dict(relative_to=inputs)["floating"][0] == document["floating"][0]
    assert plan.to_dict(relative_to=inputs)["reference"] == document["reference"]
    with pytest.raises(OutputExistsError):
        write_plan(plan, path)
    assert read_plan(write_plan(plan, path, overwrite=True)) == plan


def test_weights_are_read_per_modality_and_guidance_with_the_engines_for_the_rest(inputs, document, tmp_path):
    document["weights"] = {"MR": {"image": {"wI": 0.5}, "liver": {"affine_only": True}},
                           "CT": {"liver+landmarks": {"wS": 2, "rigidity": 3}}}
    plan = read_plan(_save(inputs, document))
    assert plan.weights == {("MR", "image"): RunWeights(0.5, 0.0, 1.0), ("MR", "liver"): RunWeights(0.0, 0.0, 1.0),
                            ("CT", "liver+landmarks"): RunWeights(1.0, 2.0, 3.0)}
    ct1, mr1 = plan.floating  # guidance: liver+landmarks (by default) and image
    assert plan.weights_for(ct1) == RunWeights(1.0, 2.0, 3.0, source="the plan")
    assert plan.weights_for(mr1).describe() == "wI 0.5, wS 0, rigidity 1 (from the plan)"
    assert plan.weights[("MR", "liver")].describe() == "affine only: wI 0, wS 0, rigidity 1 (from the plan)"
    engine = plan.weights_for(replace(ct1, guidance="liver"))
    assert engine == RunWeights(1.0, 1.0, 1.0, source="the engine's defaults")
    assert read_plan(write_plan(plan, tmp_path / "plan.yaml")) == plan
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["weights"]["MR"]["liver"] == {
        "wI": 0.0, "wS": 0.0, "rigidity": 1.0}


def test_a_plan_asks_for_voxel_s_values_and_keeps_asking(inputs, document, tmp_path):
    assert read_plan(_save(inputs, document)).spect.voxel_s_values is False  # by default
    document["spect"]["voxel_s_values"] = True
    plan = read_plan(_save(inputs, document))
    assert plan.spect.voxel_s_values is True
    assert read_plan(write_plan(plan, tmp_path / "plan.yaml")) == plan
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["spect"]["voxel_s_values"] is True


@pytest.mark.parametrize("action", ["report", "image", "stop"])
def test_what_to_do_with_a_flagged_cnn_liver_is_read_and_written(inputs, document, tmp_path, action):
    assert read_plan(_save(inputs, document)).flagged_cnn_liver == "report"  # by default
    document["flagged_cnn_liver"] = action
    plan = read_plan(_save(inputs, document))
    assert plan.flagged_cnn_liver == action
    assert read_plan(write_plan(plan, tmp_path / "plan.yaml")) == plan
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text()).get("flagged_cnn_liver", "report") == action


def test_activity_in_mbq_becomes_gbq_and_isotope_names_are_canonical(inputs, document):
    del document["spect"]["activity_gbq"]
    document["spect"].update(activity_mbq=1800, isotope="ho166")
    plan = read_plan(_save(inputs, document))
    assert plan.spect.activity_gbq == pytest.approx(1.8) and plan.spect.isotope == "Ho-166"


def test_single_dicom_file_brings_in_its_series_and_nifti_spect_overlapping_nifti_ct_passes(inputs, document):
    document["reference"] = {"image": "other/maa_ct.nii.gz"}
    document["spect"]["image"] = "other/spect.nii.gz"
    document["floating"][0]["image"] = "diag/ct/00002.dcm"
    plan = read_plan(_save(inputs, document))
    assert plan.floating[0].image.name == "00002.dcm"


def test_series_chosen_by_description_or_uid(inputs, document):
    document["floating"][0].update(image="other/two_series", series="CT arterial")
    del document["floating"][0]["lesions"], document["floating"][0]["liver"]  # drawn on diag/ct
    assert read_plan(_save(inputs, document)).floating[0].series == "CT arterial"
    uid = pydicom.dcmread(next((inputs / "other" / "two_series").glob("portal_*")), stop_before_pixels=True)
    document["floating"][0]["series"] = str(uid.SeriesInstanceUID)
    read_plan(_save(inputs, document))


# --- default guidance ---------------------------------------------------------------------
@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: None, "liver+landmarks"),  # landmarks on both sides
    (lambda d: d["floating"][0].pop("landmarks"), "liver"),  # none on the floating image
    (lambda d: d["reference"].pop("landmarks"), "liver"),  # none on the reference
    (lambda d: d["floating"][0].update(guidance="image"), "image"),  # a choice is kept
])
def test_default_guidance(inputs, document, edit: Callable[[dict], object], expected: str):
    edit(document)
    plan = read_plan(_save(inputs, document))
    assert plan.guidance(plan.floating[0]) == expected
    assert plan.guidance(plan.floating[1]) == "image"


# --- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("segments", [[5], ["5"]])
def test_a_liver_is_chosen_by_label_value_in_a_plain_label_map(inputs, document, segments, tmp_path):
    """A map of several organs (e.g. TotalSegmentator's, liver = 5) is a liver contour once its value is chosen;
    lesions of several labels need no choice. The value round-trips as a number."""
    document["floating"][1].update(liver={"path": "diag/mr_organs.nii.gz", "segments": segments},
                                   lesions="diag/mr_organs.nii.gz")
    plan = read_plan(_save(inputs, document))
    mr1 = plan.floating[1]
    assert mr1.liver == ContourInput(inputs / "diag" / "mr_organs.nii.gz", ("5",))
    assert mr1.lesions == ContourInput(inputs / "diag" / "mr_organs.nii.gz")
    written = write_plan(plan, inputs / f"written-{uuid.uuid4().hex}.yaml")
    assert yaml.safe_load(written.read_text())["floating"][1]["liver"]["segments"] == [5]
    assert read_plan(written) == plan


def test_plan_activities_far_from_usual_ones_are_read_with_a_warning(inputs, document, caplog):
    document["spect"]["activity_gbq"] = 25
    with caplog.at_level("WARNING", logger="sirtreg"):
        assert read_plan(_save(inputs, document)).spect.activity_gbq == 25.0
    assert "spect, activity_gbq: an activity of 25 GBq is more than 20 GBq: did you mean MBq?" in caplog.messages
    caplog.clear()
    del document["spect"]["activity_gbq"]
    document["spect"]["activity_mbq"] = 2
    with caplog.at_level("WARNING", logger="sirtreg"):
        assert read_plan(_save(inputs, document)).spect.activity_gbq == pytest.approx(0.002)
    assert caplog.messages == ["spect, activity_mbq: 2 MBq is less than 0.01 GBq, less than any treatment; "
                               "did you mean GBq?"]


@pytest.mark.parametrize(("text", "expected"), [
    (".nan", r"spect, activity_gbq: must be a finite number of GBq, got nan"),
    (".inf", r"spect, activity_gbq: must be a finite number of GBq, got inf"),
    ("-.inf", r"spect, activity_gbq: must be a finite number of GBq, got -inf"),
    ("1e3", r"spect, activity_gbq: must be a number of GBq, without unit"),  # YAML 1.1: text, not a number
])
def test_yaml_special_numbers_are_refused(inputs, document, text: str, expected: str):
    plan = yaml.safe_dump(document, sort_keys=False).replace("activity_gbq: 1.8", f"activity_gbq: {text}")
    problems = _refused(inputs, plan)
    assert len(problems) == 1 and re.match(expected, problems[0]), problems


def test_a_yaml_bomb_plan_is_refused_at_once(tmp_path):
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    with pytest.raises(InputError, match=r"^plan-\w+\.yaml is refused: aliases \(\*name\) add more than 10000 "
                       r"values once written out \(a 'billion laughs'\?\)$"):
        read_plan(_save(tmp_path, "\n".join([*levels, "reference: *a9", "spect: *a9"]) + "\n"))


def test_three_mistakes_are_listed_in_one_error(inputs, document):
    document["spect"]["image"] = "other/spect_other_frame.dcm"
    document["floating"][0]["lesions"] = "other/seg_on_maa.dcm"
    del document["spect"]["activity_gbq"]
    document["spect"]["activity"] = 2
    problems = _refused(inputs, document)
    assert len(problems) == 3, problems
    assert problems[0].startswith("spect, activity: an activity needs its unit in the key")
    assert re.match(r"spect, image: the SPECT lies in frame of reference [\d.]+, the MAA CT in [\d.]+", problems[1])
    assert re.match(r"floating ct1, lesions: the DICOM SEG seg_on_maa.dcm references series [\d.]+, not the series "
                    r"of its image", problems[2])


def _set(keys: tuple, value) -> Callable[[dict], None]:
    """An edit that sets document[keys[0]][keys[1]]... to ``value``."""
    def edit(document: dict) -> None:
        entry = document
        for key in keys[:-1]:
            entry = entry[key]
        entry[keys[-1]] = value
    return edit


def _delete(keys: tuple) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        entry = document
        for key in keys[:-1]:
            entry = entry[key]
        del entry[keys[-1]]
    return edit


def _edits(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        for one in edits:
            one(document)
    return edit


CT1, MR1 = ("floating", 0), ("floating", 1)
TWO_SERIES = _set((*CT1, "image"), "other/two_series")
ONE_PROBLEM = [  # (edit of the valid document, the one problem it makes)
    # files, folders and series
    pytest.param(_set(("spect", "image"), "maa/none.dcm"), r"spect, image: no such file or folder: .*none\.dcm",
                 id="missing file"),
    pytest.param(_set((*CT1, "image"), "diag/none"), r"floating ct1, image: no such file or folder", id="missing folder"),
    pytest.param(_set((*MR1, "lesions"), "diag/none.nii.gz"), r"floating mr1, lesions: no such file",
                 id="missing contour"),
    pytest.param(_edits(TWO_SERIES, _set((*CT1, "series"), "venous")),
                 r"floating ct1, series: no series matches 'venous' in .*two_series; found: CT 'CT arterial'",
                 id="series matching none"),
    pytest.param(_edits(TWO_SERIES, _set((*CT1, "series"), "CT")),
                 r"floating ct1, series: 'CT' matches 2 series in .*two_series; choose one by UID",
                 id="series matching several"),
    pytest.param(TWO_SERIES, r"floating ct1, image: .*two_series holds 2 series; choose one",
                 id="several series and no choice"),
    pytest.param(_set((*MR1, "series"), "MR"), r"floating mr1, series: chooses a series in a DICOM folder, but",
                 id="series for a file"),
    pytest.param(_set((*MR1, "image"), "other/notes.txt"), r"floating mr1, image: cannot read notes\.txt: not a DICOM",
                 id="not an image"),
    pytest.param(_set((*MR1, "image"), "other/slice.nii.gz"), r"floating mr1, image: slice\.nii\.gz is not a 3D volume",
                 id="2D image"),
    pytest.param(_set((*MR1, "lesions"), "other/notes.txt"), r"floating mr1, lesions: cannot read notes\.txt",
                 id="contour that is no file format"),
    pytest.param(_set((*MR1, "image"), "maa/liver.seg.nrrd"), r"floating mr1, image: liver\.seg\.nrrd is a segmentation",
                 id="segmentation as image"),
    pytest.param(_set(("reference", "image"), "diag/ct_lesions.dcm"), r"reference, image: ct_lesions\.dcm is a DICOM SEG",
                 id="DICOM SEG as image"),
    # keys and values
    pytest.param(_edits(_set((*CT1, "lesion"), "diag/ct_lesions.dcm"), _delete((*CT1, "lesions"))),
                 r"floating ct1: unknown key 'lesion'; did you mean 'lesions'\?", id="unknown key"),
    pytest.param(_set(("floting",), []), r"plan: unknown key 'floting'; did you mean 'floating'\?",
                 id="unknown top key"),
    pytest.param(_set(("reference", "liver", "segment"), ["liver"]), r"reference, liver: unknown key 'segment'; did",
                 id="unknown contour key"),
    pytest.param(_delete(("spect", "isotope")), r"spect: missing 'isotope'", id="missing key"),
    pytest.param(_edits(_delete(("spect", "activity_gbq")), _set(("spect", "activity"), 2)),
                 r"spect, activity: an activity needs its unit in the key: write activity_gbq", id="activity: 2"),
    pytest.param(_set(("spect", "activity_gbq"), "2 GBq"), r"spect, activity_gbq: must be a number of GBq, without unit",
                 id="activity_gbq: 2 GBq"),
    pytest.param(_set(("spect", "activity_gbq"), 0), r"spect, activity_gbq: must be a positive number of GBq, got 0",
                 id="zero activity"),
    pytest.param(_edits(_delete(("spect", "activity_gbq")), _set(("spect", "activity_mbq"), -5)),
                 r"spect, activity_mbq: must be a positive number of MBq, got -5", id="negative activity"),
    pytest.param(_set(("spect", "activity_gbq"), float("nan")), r"spect, activity_gbq: must be a finite number of GBq, "
                 r"got nan", id="NaN activity"),
    pytest.param(_set(("spect", "activity_gbq"), float("inf")), r"spect, activity_gbq: must be a finite number of GBq, "
                 r"got inf", id="infinite activity"),
    pytest.param(_set(("spect", "activity_gbq"), 1800), r"spect, activity_gbq: 1800 GBq is more than 100 GBq, far more "
                 r"than any treatment; did you mean MBq\?", id="activity in MBq given as GBq"),
    pytest.param(_edits(_delete(("spect", "activity_gbq")), _set(("spect", "activity_mbq"), 2e5)),
                 r"spect, activity_mbq: 200000.0 MBq is more than 100 GBq", id="activity above 100 GBq in MBq"),
    pytest.param(_set(("spect", "activity_gbq"), True), r"spect, activity_gbq: must be a number of GBq", id="yes"),
    pytest.param(_set(("spect", "lung_shunt_fraction"), float("nan")),
                 r"spect, lung_shunt_fraction: must be a finite number, got nan", id="NaN lung shunt fraction"),
    pytest.param(_set(("spect", "lung_shunt_fraction"), -0.1), r"spect, lung_shunt_fraction: must be in \[0, 1\)",
                 id="negative lung shunt fraction"),
    pytest.param(_set(("spect", "activity_mbq"), 1800), r"spect: give the activity once, not as activity_gbq and",
                 id="two activities"),
    pytest.param(_delete(("spect", "activity_gbq")), r"spect: missing the activity: 'activity_gbq' or 'activity_mbq'",
                 id="no activity"),
    pytest.param(_set(("spect", "isotope"), "I-131"), r"spect, isotope: unknown isotope 'I-131'", id="unknown isotope"),
    pytest.param(_set(("spect", "voxel_s_values"), "yes"), r"spect, voxel_s_values: must be true or false, got",
                 id="voxel S values not a boolean"),
    pytest.param(_set(("spect", "lung_shunt_fraction"), 1.2), r"spect, lung_shunt_fraction: must be in \[0, 1\)",
                 id="lung shunt fraction"),
    pytest.param(_set((*MR1, "guidance"), "cnn"), r"floating mr1, guidance: must be one of image, liver, liver\+",
                 id="bad guidance"),
    pytest.param(_set((*MR1, "modality"), "PET"), r"floating mr1, modality: must be one of CT, MR", id="bad modality"),
    pytest.param(_set((*MR1, "id"), "mr 1"), r"floating mr 1, id: 'mr 1' may hold only letters", id="bad id"),
    pytest.param(_set((*MR1, "id"), "ct1"), r"floating ct1: this id is used more than once", id="repeated id"),
    pytest.param(_set((*CT1, "series"), 1.5), r"floating ct1, series: must be a SeriesInstanceUID or Series",
                 id="series not text"),
    pytest.param(_set((*CT1, "liver", "segments"), []), r"floating ct1, liver, segments: must be a non-empty list",
                 id="empty segments"),
    pytest.param(_set(("format",), "sirtreg-cohort"), r"plan, format: must be 'sirtreg-plan'", id="wrong format"),
    pytest.param(_set(("floating",), {"id": "ct1"}), r"plan, floating: must be a list of images", id="floating not list"),
    # guidance and landmarks
    pytest.param(_set((*MR1, "guidance"), "liver+landmarks"),
                 r"floating mr1, guidance: liver\+landmarks needs landmarks on the reference and on this image; "
                 r"none on this image", id="landmarks missing on the floating image"),
    pytest.param(_edits(_delete(("reference", "landmarks")), _set((*CT1, "guidance"), "liver+landmarks")),
                 r"floating ct1, guidance: .* none on the reference: add them or choose liver",
                 id="landmarks missing on the reference"),
    # frames of reference, series and grids
    pytest.param(_set(("spect", "image"), "other/spect_other_frame.dcm"),
                 r"spect, image: the SPECT lies in frame of reference", id="SPECT in another frame of reference"),
    pytest.param(_edits(_set(("reference", "image"), "other/maa_ct.nii.gz"),
                        _set(("spect", "image"), "other/far_spect.nii.gz")),
                 r"spect, image: the SPECT \(3x3x3 voxels, 8x8x8 mm, LPS\) does not overlap the MAA CT",
                 id="SPECT not overlapping the MAA CT"),
    pytest.param(_set((*CT1, "lesions"), "other/seg_on_maa.dcm"),
                 r"floating ct1, lesions: the DICOM SEG seg_on_maa\.dcm references series", id="SEG of another series"),
    pytest.param(_set((*CT1, "liver", "path"), "other/rtstruct_on_maa.dcm"),
                 r"floating ct1, liver: the RTSTRUCT rtstruct_on_maa\.dcm references series",
                 id="RTSTRUCT of another series"),
    pytest.param(_set((*CT1, "liver", "path"), "other/rtstruct_other_frame.dcm"),
                 r"floating ct1, liver: the RTSTRUCT rtstruct_other_frame\.dcm lies in frame of reference [\d.]+, its "
                 r"image in [\d.]+: it was drawn on another scan", id="RTSTRUCT of another frame of reference"),
    pytest.param(_set((*CT1, "landmarks"), "other/coarse_landmarks.nii.gz"),
                 r"floating ct1, landmarks: coarse_landmarks\.nii\.gz \(3x3x2 voxels, 4x4x6 mm, LPS\) is not on the "
                 r"voxels of its image \(6x5x4 voxels", id="label map on other voxels"),
    pytest.param(_set((*CT1, "landmarks"), "other/shifted_landmarks.nii.gz"),
                 r"floating ct1, landmarks: shifted_landmarks\.nii\.gz \(6x5x4 voxels, 2x2x3 mm, LPS\) is not on the",
                 id="label map shifted by 1 mm"),
    pytest.param(_set((*CT1, "liver"), "maa/liver.seg.nrrd"),
                 r"floating ct1, liver: liver\.seg\.nrrd \(5x4x3 voxels.* is not on the voxels of its image",
                 id="seg.nrrd on other voxels"),
    pytest.param(_set((*CT1, "liver", "segments"), ["Liver", "Spleen"]),
                 r"floating ct1, liver: ct_rtstruct\.dcm holds no segment 'Spleen'; it holds 'Liver', 'Lesion 1'",
                 id="segment not in the file"),
    pytest.param(_set((*MR1, "lesions"), {"path": "diag/mr_lesions.nii.gz", "segments": ["a"]}),
                 r"floating mr1, lesions: mr_lesions\.nii\.gz is a label map without segment names: choose its "
                 r"segments by label value \(e\.g\. segments: \[5\]\), not by name \('a'\)",
                 id="segment names of a plain label map"),
    pytest.param(_set((*MR1, "liver"), "diag/mr_organs.nii.gz"),
                 r"floating mr1, liver: mr_organs\.nii\.gz holds 3 labels \(1, 5, 6\); choose the liver's with "
                 r"'segments', e\.g\. \{path: mr_organs\.nii\.gz, segments: \[1\]\}$", id="liver of several labels"),
    pytest.param(_set((*MR1, "liver"), {"path": "diag/mr_organs.nii.gz", "segments": [5, 7]}),
                 r"floating mr1, liver: mr_organs\.nii\.gz holds no label 7; it holds labels 1, 5, 6$",
                 id="label value not in the label map"),
    pytest.param(_set((*CT1, "liver"), "diag/ct_rtstruct.dcm"),
                 r"floating ct1, liver: ct_rtstruct\.dcm holds 2 segments \('Liver', 'Lesion 1'\); choose the "
                 r"liver's with 'segments'", id="liver of several named segments"),
    pytest.param(_set((*MR1, "liver"), {"path": "diag/mr_organs.nii.gz", "segments": [0]}),
                 r"floating mr1, liver, segments: must be a non-empty list of segment names or label values \(whole "
                 r"numbers > 0\), got \[0\]", id="label value 0"),
    pytest.param(_set((*MR1, "liver"), {"path": "diag/mr_organs.nii.gz", "segments": [True]}),
                 r"floating mr1, liver, segments: must be a non-empty list", id="boolean segment"),
    pytest.param(_set((*CT1, "lesions"), "diag/ct/00001.dcm"),
                 r"floating ct1, lesions: 00001\.dcm is a DICOM CT; a contour is a label map", id="not a contour"),
    pytest.param(_set((*CT1, "lesions"), "diag/ct"), r"floating ct1, lesions: .*ct is a folder", id="folder as contour"),
    # non-rigid weights
    pytest.param(_set(("weights",), {"MR": {"image": {"wS": 1}}}),
                 r"plan, weights, MR, image: image-based registration has no label term", id="wS with image guidance"),
    pytest.param(_set(("weights",), {"MR": {"liver": {"affine_only": True, "wI": 1}}}),
                 r"plan, weights, MR, liver: affine_only runs no non-rigid stage: leave out wI$", id="affine and wI"),
    pytest.param(_set(("weights",), {"CT": {"liver": {"rigidity": -1}}}),
                 r"plan, weights, CT, liver, rigidity: must be >= 0, got -1$", id="negative rigidity"),
    pytest.param(_set(("weights",), {"CT": {"liver": {"wI": "high"}}}),
                 r"plan, weights, CT, liver, wI: must be a finite number, got 'high'", id="weight not a number"),
    pytest.param(_set(("weights",), {"CT": {"liver": {"affine_only": "yes"}}}),
                 r"plan, weights, CT, liver, affine_only: must be true or false, got 'yes'", id="affine_only text"),
    pytest.param(_set(("weights",), {"PET": {"liver": {"wI": 1}}}),
                 r"plan, weights: unknown key 'PET'; known keys: CT, MR", id="unknown modality"),
    pytest.param(_set(("weights",), {"MR": {"cnn": {"wI": 1}}}),
                 r"plan, weights, MR: unknown key 'cnn'; known keys: image, liver, liver\+landmarks",
                 id="unknown guidance"),
    pytest.param(_set(("weights",), {"MR": {"liver": {"wi": 1}}}),
                 r"plan, weights, MR, liver: unknown key 'wi'; did you mean 'wI'\?", id="misspelt weight"),
    pytest.param(_set(("weights",), {"MR": [1]}),
                 r"plan, weights, MR: must be a mapping of image, liver, liver\+landmarks, got \[1\]",
                 id="weights not a mapping"),
    pytest.param(_set(("flagged_cnn_liver",), "fallback"),
                 r"plan, flagged_cnn_liver: must be one of report, image, stop, got 'fallback'",
                 id="unknown action for a flagged CNN liver"),
]


@pytest.mark.parametrize(("edit", "expected"), ONE_PROBLEM)
def test_each_refusal_alone(inputs, document, edit: Callable[[dict], None], expected: str):
    edit(document)
    problems = _refused(inputs, document)
    assert len(problems) == 1, problems
    assert re.match(expected, problems[0]), problems[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("reference: {image: a}\nreference: {image: b}\n", r"line 2: key 'reference' is repeated"),
    ("[1, 2]\n", r"plan: must be a mapping of format, version, reference, spect, floating, weights, "
                 r"flagged_cnn_liver, got \[1, 2\]"),
])
def test_refused_documents(inputs, text: str, expected: str):
    problems = _refused(inputs, text)
    assert re.match(expected, problems[0]), problems


def test_refused_files(tmp_path):
    with pytest.raises(InputError, match="no such plan"):
        read_plan(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="is not valid YAML"):
        read_plan(_save(tmp_path, "reference: [\n"))


# --- plans made in code -------------------------------------------------------------------
def test_check_plan_lists_every_problem_of_a_plan_made_in_code(inputs):
    ct1 = FloatingInput(id="ct1", modality="CT", image=inputs / "diag" / "ct",
                        lesions=ContourInput(inputs / "other" / "seg_on_maa.dcm"), guidance="liver+landmarks")
    plan = Plan(reference=ReferenceInput(image=inputs / "maa" / "ct"),
                spect=SpectInput(image=inputs / "maa" / "missing.dcm", activity_gbq=2, isotope="y90"),
                floating=(ct1,))
    with pytest.raises(InputError) as error:
        check_plan(plan)
    problems = _problems(error)
    assert len(problems) == 3, problems
    assert problems[0].startswith("spect, image: no such file or folder")
    assert problems[1].startswith("floating ct1, lesions: the DICOM SEG seg_on_maa.dcm references series")
    assert problems[2].startswith("floating ct1, guidance: liver+landmarks needs landmarks on the reference and on "
                                  "this image; none on the reference and this image")


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: SpectInput(image="s.dcm", activity_gbq=0, isotope="Y-90"), "must be a positive number of GBq"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=float("nan"), isotope="Y-90"), "must be a positive number"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=1, isotope="Tc-99m"), "unknown isotope"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=1, isotope="Y-90", lung_shunt_fraction=1.0), r"in \[0, 1\)"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=150, isotope="Y-90"), "more than any SIRT treatment"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=1, isotope="Y-90", lung_shunt_fraction=float("nan")),
     r"in \[0, 1\)"),
    (lambda: SpectInput(image="s.dcm", activity_gbq=1, isotope="Y-90", lung_shunt_fraction=False), r"in \[0, 1\)"),
    (lambda: ContourInput("c.nii.gz", segments=(0,)), "or label values"),
    (lambda: ContourInput("c.nii.gz", segments=(True,)), "or label values"),
    (lambda: FloatingInput(id="ct 1", modality="CT", image="c"), "may hold only letters"),
    (lambda: FloatingInput(id="ct1", modality="PET", image="c"), "modality must be one of CT, MR"),
    (lambda: FloatingInput(id="ct1", modality="CT", image="c", guidance="cnn"), "guidance must be one of"),
    (lambda: ContourInput("c.nii.gz", segments="liver"), "segments must be a list of names"),
    (lambda: Plan(ReferenceInput("r"), SpectInput("s", 1, "Y-90"),
                  (FloatingInput("a", "CT", "c"), FloatingInput("a", "MR", "m"))), "repeated: a"),
    (lambda: Plan(ReferenceInput("r"), SpectInput("s", 1, "Y-90"), weights={("MR", "image"): RunWeights(1, 1, 1)}),
     "image-based registration has no label term"),
    (lambda: Plan(ReferenceInput("r"), SpectInput("s", 1, "Y-90"), weights={("PET", "liver"): RunWeights(1, 1, 1)}),
     r"plan weights map \(modality, guidance\) to RunWeights, got \('PET', 'liver'\)"),
    (lambda: Plan(ReferenceInput("r"), SpectInput("s", 1, "Y-90"), flagged_cnn_liver="ignore"),
     "flagged_cnn_liver must be one of report, image, stop, got 'ignore'"),
])
def test_plan_objects_refuse_bad_values(make: Callable[[], object], expected: str):
    with pytest.raises(InputError, match=expected):
        make()


def test_plan_objects_normalise_their_values():
    spect = SpectInput(image="s.dcm", activity_gbq=2, isotope="ho-166")
    assert spect.image == Path("s.dcm") and spect.activity_gbq == 2.0 and spect.isotope == "Ho-166"
    plan = Plan(ReferenceInput("r"), spect, [FloatingInput("a", "CT", "c")])  # a list becomes a tuple
    assert plan.floating == (FloatingInput("a", "CT", Path("c")),)
    assert ContourInput("c.nii.gz", [5, "Liver"]).segments == ("5", "Liver")  # label values kept as their digits


def test_the_documented_example_has_no_problem_but_its_missing_files(tmp_path):
    from sirtreg.pipeline import plan as module

    example = module.__doc__.split("::\n\n", 1)[1].split("\n\nA contour", 1)[0]
    problems = _refused(tmp_path, textwrap.dedent(example))
    assert len(problems) == 12 and all(re.search(r": no such file", problem) for problem in problems), problems
