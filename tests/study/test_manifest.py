"""Cohort manifest: reading, round trip, convenience iteration, and every refusal listed in one error."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import write_image
from sirtreg.study import COMPUTE, Cohort, FloatingImage, manifest, read_manifest, write_manifest

GRID = Grid((4, 4, 3), (2.0, 2.0, 3.0))


def _label_map(values: list[int]) -> LabelVolume:
    array = np.zeros(GRID.shape, np.uint8)
    array.flat[: len(values)] = values
    return LabelVolume(array, GRID)


def _write_images(folder: Path, name: str, *, landmarks: list[int]) -> dict[str, str]:
    """Image, liver, landmark and lesion maps of one scan; returns the manifest fields (relative paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(Volume(np.zeros(GRID.shape, np.float32), GRID), folder / f"{name}.nii.gz")
    write_image(_label_map([1, 1]), folder / f"{name}_liver.nii.gz")
    write_image(_label_map(landmarks), folder / f"{name}_landmarks.nii.gz")
    write_image(_label_map([1, 2]), folder / f"{name}_lesions.nii.gz")
    prefix = f"{folder.name}/{name}"
    return {"image": f"{prefix}.nii.gz", "liver": f"{prefix}_liver.nii.gz",
            "landmark_map": f"{prefix}_landmarks.nii.gz", "lesions": f"{prefix}_lesions.nii.gz"}


@pytest.fixture
def document(tmp_path: Path) -> dict:
    """A valid two-patient manifest (P01: CT + MR, train; P02: two CTs, test) with its files in ``tmp_path``."""
    write_image(Volume(np.ones(GRID.shape, np.float32), GRID), tmp_path / "P01" / "spect.nii.gz")
    write_image(Volume(np.ones(GRID.shape, np.float32), GRID), tmp_path / "P02" / "spect.nii.gz")
    p01 = {
        "id": "P01", "split": "train",
        "reference": _write_images(tmp_path / "P01", "maa_ct", landmarks=[1, 2, 3]),
        "spect": {"image": "P01/spect.nii.gz", "activity_gbq": 1.8, "isotope": "Y-90", "lung_shunt_fraction": 0.04},
        "floating": [
            {"id": "ct1", "modality": "CT", "role": "pre-treatment CT",
             **_write_images(tmp_path / "P01", "ct1", landmarks=[3, 2, 1])},
            {"id": "mr1", "modality": "MR", "role": "radiology MR", "cnn_liver": "compute",
             **_write_images(tmp_path / "P01", "mr1", landmarks=[1, 2, 3])},
        ],
    }
    ct2 = _write_images(tmp_path / "P02", "ct2", landmarks=[2, 1])
    del ct2["lesions"]
    p02 = {
        "id": "P02", "split": "test",
        "reference": {**_write_images(tmp_path / "P02", "maa_ct", landmarks=[1, 2]),
                      "cnn_liver": "P02/maa_ct_liver.nii.gz"},
        "spect": {"image": "P02/spect.nii.gz", "activity_gbq": 2, "isotope": "ho166"},
        "floating": [
            {"id": "ct1", "modality": "CT", **_write_images(tmp_path / "P02", "ct1", landmarks=[1, 2])},
            {"id": "ct2", "modality": "CT", **ct2},
        ],
    }
    return {"format": "sirtreg-cohort", "version": 1, "patients": [p01, p02]}


def _save(folder: Path, document) -> Path:
    path = folder / "cohort.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _problems(error: pytest.ExceptionInfo) -> list[str]:
    """The problem lines of a manifest InputError, after checking that the header counts them."""
    header, *lines = str(error.value).splitlines()
    count = int(re.search(r"(\d+) problems? in the cohort manifest", header).group(1))
    assert count == len(lines), str(error.value)
    return [line.strip() for line in lines]


# --- reading and round trip ----------------------------------------------------------------
def test_read_gives_absolute_paths_values_and_counts(tmp_path, document):
    cohort = read_manifest(_save(tmp_path, document))
    assert [p.id for p in cohort.patients] == ["P01", "P02"]
    p01, p02 = cohort.patients
    assert p01.reference.image == tmp_path / "P01" / "maa_ct.nii.gz"
    assert p01.reference.cnn_liver is None and p02.reference.cnn_liver == tmp_path / "P02" / "maa_ct_liver.nii.gz"
    assert (p01.spect.activity_gbq, p01.spect.isotope, p01.spect.lung_shunt_fraction) == (1.8, "Y-90", 0.04)
    assert (p02.spect.activity_gbq, p02.spect.isotope, p02.spect.lung_shunt_fraction) == (2.0, "Ho-166", None)
    assert p01.floating[1] == FloatingImage(
        id="mr1", modality="MR", role="radiology MR", image=tmp_path / "P01" / "mr1.nii.gz",
        liver=tmp_path / "P01" / "mr1_liver.nii.gz", landmark_map=tmp_path / "P01" / "mr1_landmarks.nii.gz",
        lesions=tmp_path / "P01" / "mr1_lesions.nii.gz", cnn_liver=COMPUTE)
    assert p02.floating[1].lesions is None and p02.floating[1].role == ""
    assert cohort.registration_counts() == {"CT": 3, "MR": 1}
    assert cohort.registration_counts(split="train") == {"CT": 1, "MR": 1}
    assert [(p.id, f.id) for p, f in cohort.registrations(split="test")] == [("P02", "ct1"), ("P02", "ct2")]
    assert len(cohort.registrations()) == 4
    assert cohort.patient("P02") is p02


def test_round_trip_in_another_folder(tmp_path, document):
    cohort = read_manifest(_save(tmp_path, document))
    copy_path = write_manifest(cohort, tmp_path / "elsewhere" / "copy.yaml")
    assert read_manifest(copy_path) == cohort
    written = yaml.safe_load(copy_path.read_text())
    assert written["patients"][0]["reference"]["image"] == "../P01/maa_ct.nii.gz"
    assert written["patients"][0]["floating"][1]["cnn_liver"] == "compute"
    assert not list((tmp_path / "elsewhere").glob(".*")), "temporary file left behind"


def test_round_trip_of_a_built_cohort_keeps_name_and_relative_paths(tmp_path, document):
    cohort = read_manifest(_save(tmp_path, document))
    named = Cohort(patients=cohort.patients, name="paper cohort")
    path = write_manifest(named, tmp_path / "named.yaml")
    assert read_manifest(path) == named
    written = yaml.safe_load(path.read_text())
    assert written["name"] == "paper cohort"
    assert written["patients"][1]["floating"][0]["image"] == "P02/ct1.nii.gz"
    assert "lesions" not in written["patients"][1]["floating"][1]
    assert "lung_shunt_fraction" not in written["patients"][1]["spect"]


def test_write_refuses_an_existing_file_unless_overwrite(tmp_path, document):
    path = _save(tmp_path, document)
    cohort = read_manifest(path)
    with pytest.raises(OutputExistsError, match="exists"):
        write_manifest(cohort, path)
    assert read_manifest(write_manifest(cohort, path, overwrite=True)) == cohort


def test_unknown_patient_and_split_are_refused(tmp_path, document):
    cohort = read_manifest(_save(tmp_path, document))
    with pytest.raises(InputError, match="no patient 'P03'.*known: P01, P02"):
        cohort.patient("P03")
    with pytest.raises(InputError, match="split must be one of train, test, got 'validation'"):
        cohort.registrations(split="validation")


# --- every problem in one error --------------------------------------------------------------
def test_three_mistakes_give_one_error_listing_all_three(tmp_path, document):
    write_image(_label_map([1, 2, 7]), tmp_path / "P01" / "mr1_landmarks.nii.gz", overwrite=True)
    document["patients"][0]["floating"][0]["image"] = "P01/missing.nii.gz"
    document["patients"][1]["split"] = "validation"
    with pytest.raises(InputError) as error:
        read_manifest(_save(tmp_path, document))
    assert str(error.value).startswith("cohort.yaml: 3 problems in the cohort manifest:")
    assert _problems(error) == [
        f"patient P01, floating ct1, image: no such file: {tmp_path / 'P01' / 'missing.nii.gz'}",
        ("patient P01, floating mr1, landmark_map: landmark labels do not pair with the reference: "
         "7 only in this map; 3 only in the reference map"),
        "patient P02, split: must be one of train, test, got 'validation'",
    ]


def _set(keys: tuple, value):
    """A change of the document: set the item at ``keys`` to ``value`` (delete it if value is ...)."""
    def change(document: dict) -> None:
        *parents, last = keys
        target = document
        for key in parents:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return change


def _rename(keys: tuple, new: str):
    def change(document: dict) -> None:
        *parents, last = keys
        target = document
        for key in parents:
            target = target[key]
        target[new] = target.pop(last)
    return change


P01, P02 = ("patients", 0), ("patients", 1)
CT1 = (*P01, "floating", 0)

REFUSALS = [
    ("missing file", _set((*P01, "reference", "landmark_map"), "P01/none.nii.gz"),
     [r"patient P01, reference, landmark_map: no such file: .*none\.nii\.gz"]),
    ("missing cnn mask", _set((*CT1, "cnn_liver"), "P01/cnn.nii.gz"),
     [r"patient P01, floating ct1, cnn_liver: no such file: .*cnn\.nii\.gz"]),
    ("path not text", _set((*P01, "spect", "image"), 5), [r"patient P01, spect, image: must be a path, got 5"]),
    ("unknown modality", _set((*CT1, "modality"), "PET"),
     [r"patient P01, floating ct1, modality: must be one of CT, MR, got 'PET'"]),
    ("bad split", _set((*P02, "split"), "validation"), [r"patient P02, split: must be one of train, test"]),
    ("missing split", _set((*P02, "split"), ...), [r"patient P02: missing 'split'"]),
    ("duplicate patient id", _set((*P02, "id"), "P01"), [r"patient P01: this patient id is used more than once"]),
    ("duplicate floating id", _set((*P02, "floating", 1, "id"), "ct1"),
     [r"patient P02, floating ct1: this floating id is used more than once in the patient"]),
    ("numeric id", _set((*P02, "id"), 2), [r"patient #2, id: must be text \(quote it"]),
    ("id with a space", _set((*CT1, "id"), "ct 1"),
     [r"patient P01, floating ct 1, id: 'ct 1' may hold only letters, digits"]),
    ("zero activity", _set((*P01, "spect", "activity_gbq"), 0),
     [r"patient P01, spect, activity_gbq: must be a positive number of GBq, got 0"]),
    ("negative activity", _set((*P01, "spect", "activity_gbq"), -1.5),
     [r"patient P01, spect, activity_gbq: must be a positive number of GBq, got -1.5"]),
    ("activity as text", _set((*P01, "spect", "activity_gbq"), "1.8 GBq"),
     [r"patient P01, spect, activity_gbq: must be a finite number, got '1.8 GBq'"]),
    ("unit-less activity", _rename((*P01, "spect", "activity_gbq"), "activity"),
     [r"patient P01, spect, activity: an activity needs its unit in the name: write activity_gbq"]),
    ("activity in MBq", _rename((*P01, "spect", "activity_gbq"), "activity_mbq"),
     [r"patient P01, spect, activity_mbq: an activity needs its unit in the name"]),
    ("missing activity", _set((*P01, "spect", "activity_gbq"), ...), [r"patient P01, spect: missing 'activity_gbq'"]),
    ("unknown isotope", _set((*P01, "spect", "isotope"), "I-131"),
     [r"patient P01, spect, isotope: unknown isotope 'I-131'"]),
    ("lung shunt of one", _set((*P01, "spect", "lung_shunt_fraction"), 1.0),
     [r"patient P01, spect, lung_shunt_fraction: must be in \[0, 1\), got 1.0"]),
    ("typo in an optional key", _rename((*CT1, "lesions"), "lession"),
     [r"patient P01, floating ct1: unknown key 'lession'; did you mean 'lesions'\?"]),
    ("typo in a required key", _rename((*P01, "reference"), "referance"),
     [r"patient P01: unknown key 'referance'; did you mean 'reference'\?", r"patient P01: missing 'reference'"]),
    ("unknown key", _set((*P01, "weight_kg"), 70), [r"patient P01: unknown key 'weight_kg'; known keys: id, split"]),
    ("missing floating field", _set((*CT1, "liver"), ...), [r"patient P01, floating ct1: missing 'liver'"]),
    ("no floating images", _set((*P02, "floating"), []),
     [r"patient P02, floating: must be a non-empty list of images, got \[\]"]),
    ("floating not a mapping", _set((*P02, "floating", 1), "ct2.nii.gz"),
     [r"patient P02, floating #2: must be a mapping of id, modality"]),
    ("no patients", _set(("patients",), []), [r"manifest, patients: must be a non-empty list of patients"]),
    ("wrong format", _set(("format",), "sirtreg-phantom"), [r"manifest, format: must be 'sirtreg-cohort'"]),
    ("wrong version", _set(("version",), 2), [r"manifest, version: must be 1, got 2"]),
]


@pytest.mark.parametrize(("change", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_mistake_is_named_with_patient_image_and_field(tmp_path, document, change, expected):
    change(document)
    with pytest.raises(InputError) as error:
        read_manifest(_save(tmp_path, document))
    problems = _problems(error)
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems):
        assert re.match(pattern, problem), problem


def test_unpaired_landmark_labels_are_listed_on_both_sides(tmp_path, document):
    write_image(_label_map([2, 4, 5]), tmp_path / "P02" / "ct2_landmarks.nii.gz", overwrite=True)
    with pytest.raises(InputError) as error:
        read_manifest(_save(tmp_path, document))
    assert _problems(error) == [("patient P02, floating ct2, landmark_map: landmark labels do not pair with the "
                                 "reference: 4, 5 only in this map; 1 only in the reference map")]


def test_an_unreadable_landmark_map_is_a_problem(tmp_path, document):
    (tmp_path / "P01" / "mr1_landmarks.nii.gz").write_text("not an image")
    with pytest.raises(InputError) as error:
        read_manifest(_save(tmp_path, document))
    [problem] = _problems(error)
    assert problem.startswith("patient P01, floating mr1, landmark_map: mr1_landmarks.nii.gz is damaged: Not a gzipped")


def test_a_repeated_key_is_a_problem_with_its_line(tmp_path, document):
    text = _save(tmp_path, document).read_text().replace("  split: test\n", "  split: test\n  split: train\n", 1)
    (tmp_path / "cohort.yaml").write_text(text)
    line = text.splitlines().index("  split: test") + 2
    with pytest.raises(InputError) as error:
        read_manifest(tmp_path / "cohort.yaml")
    assert _problems(error) == [f"line {line}: key 'split' is repeated"]


def test_a_manifest_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(InputError) as error:
        read_manifest(_save(tmp_path, ["P01", "P02"]))
    assert _problems(error) == ["manifest: must be a mapping of format, version, name, patients, got ['P01', 'P02']"]


def test_invalid_yaml_is_refused(tmp_path):
    (tmp_path / "cohort.yaml").write_text("patients: [\n  - id: P01\n")
    with pytest.raises(InputError, match=r"cohort\.yaml is not valid YAML"):
        read_manifest(tmp_path / "cohort.yaml")


def test_a_missing_manifest_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such cohort manifest"):
        read_manifest(tmp_path / "cohort.yaml")



def test_the_documented_example_reads(tmp_path):
    doc = manifest.__doc__
    text = textwrap.dedent(doc[doc.index("::\n\n") + 4:doc.index("\n\nAn image may be")])
    document = yaml.safe_load(text)
    for patient in document["patients"]:
        for entry in (patient["reference"], patient["spect"], *patient["floating"]):
            for key in ("image", "liver", "cnn_liver", "landmark_map", "lesions"):
                if entry.get(key, COMPUTE) != COMPUTE:
                    (tmp_path / entry[key]).parent.mkdir(exist_ok=True)
                    write_image(_label_map([1, 2]), tmp_path / entry[key], overwrite=True)
    (tmp_path / "cohort.yaml").write_text(text)
    cohort = read_manifest(tmp_path / "cohort.yaml")
    assert cohort.name == "paper cohort"
    assert cohort.registration_counts(split="train") == {"CT": 1, "MR": 1}
    assert cohort.patients[0].spect.activity_gbq == 1.8
