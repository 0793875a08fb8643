"""De-identification of the DICOM files our writers make (basic confidentiality profile, UIDs retained)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import (
    Deidentification,
    deidentify,
    write_dicom_nm,
    write_dicom_seg,
    write_dicom_series,
    write_rt_dose,
    write_rtstruct,
)
from sirtreg.io.deidentify import _DUMMIES, _DUMMY_ALWAYS, EMPTIED, METHOD_CODES, REMOVED

HOSPITAL = {  # what a hospital's series holds besides pixels and geometry
    "PatientName": "Zyxwvut^Qwertyuiop", "PatientID": "PID8675309X", "PatientBirthDate": "19370412",
    "PatientSex": "F", "PatientAge": "082Y", "PatientWeight": "61.5", "AccessionNumber": "ACC5551212",
    "StudyDate": "20190317", "StudyTime": "101500", "StudyID": "STUDY77421", "StudyDescription": "SIRT of Zyxwvut",
    "ReferringPhysicianName": "Hippocrates^Kos", "InstitutionName": "Saint Elsewhere Hospital",
    "OperatorsName": "Galen^Pergamon",
}
TEXTS = ("Zyxwvut", "Qwertyuiop", "PID8675309X", "OTHER31337", "ACC5551212", "STUDY77421", "Hippocrates",
         "Elsewhere", "Galen", "Secret")  # identifying texts of HOSPITAL and of the nested and private items
DATES = ("19370412", "20190317")


def make_hospital(dataset: Dataset) -> None:
    """Give ``dataset`` the identifiers of HOSPITAL, a nested sequence of other IDs and a private attribute."""
    for keyword, value in HOSPITAL.items():
        setattr(dataset, keyword, value)
    other = Dataset()
    other.PatientID, other.TypeOfPatientID = "OTHER31337", "TEXT"
    dataset.OtherPatientIDsSequence = [other]
    block = dataset.private_block(0x0011, "SOME VENDOR", create=True)
    block.add_new(0x01, "LO", "Secret^Note")


def texts(dataset: Dataset) -> Iterator[tuple[str, str, str]]:
    """(keyword, VR, text) of every element, in every nested sequence, pixels left out."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                yield from texts(item)
        elif not isinstance(element.value, bytes):
            yield element.keyword, element.VR, str(element.value)


def identifiers_in(dataset: Dataset) -> list[str]:
    """The identifying texts found in ``dataset`` (dates anywhere but in UIDs, which are random digits)."""
    found = []
    for keyword, vr, text in texts(dataset):
        found += [t for t in TEXTS if t.lower() in text.lower()]
        found += [f"{keyword}={text}" for d in DATES if vr != "UI" and d in text]
    return found


def check_deidentified(dataset: Dataset, pseudonym: str) -> None:
    assert identifiers_in(dataset) == []
    assert (str(dataset.PatientName), dataset.PatientID) == (pseudonym, pseudonym)
    assert dataset.PatientBirthDate == "" and dataset.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in dataset.DeidentificationMethodCodeSequence] == [c for c, _ in METHOD_CODES]
    assert not any(element.tag.is_private for element in dataset.iterall())
    dates = {text for _, vr, text in texts(dataset) if vr in ("DA", "DT", "TM")}
    assert dates <= {"", "19000101", "000000"}, dates


@pytest.fixture()
def hospital_ct(tmp_path: Path) -> tuple[Path, Dataset]:
    """A small CT series as a hospital sends it: (folder, header of its first file)."""
    grid = Grid((6, 5, 4), (2.0, 2.0, 3.0), (-10.0, 20.0, 30.0))
    array = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)
    folder = write_dicom_series(Volume(array, grid, "CT"), tmp_path / "ct")
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        make_hospital(dataset)
        dataset.save_as(path)
    return folder, pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)


def test_the_tables_name_known_attributes():
    keywords = [*REMOVED, *EMPTIED, *_DUMMY_ALWAYS, *(k for d in _DUMMIES.values() for k in d)]
    assert [k for k in keywords if tag_for_keyword(k) is None] == []
    assert not set(REMOVED) & set(EMPTIED)


def test_a_dataset_loses_its_identifiers_and_keeps_its_uids():
    dataset = Dataset()
    dataset.Modality, dataset.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID = "1.2.3", "1.2.3.4", "1.2.5"
    dataset.SeriesDescription = "sirtreg ct registered to MAA CT"
    make_hospital(dataset)
    assert sorted(set(identifiers_in(dataset)) & set(TEXTS)) == sorted(TEXTS)  # the check finds them all
    deidentify(dataset, pseudonym="S-017")
    check_deidentified(dataset, "S-017")
    assert (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.FrameOfReferenceUID) == (
        "1.2.3", "1.2.3.4", "1.2.5")
    assert dataset.SeriesDescription == "sirtreg ct registered to MAA CT"  # ours: kept (clean descriptors)
    assert "PatientAge" not in dataset and "StudyDescription" not in dataset and "InstitutionName" not in dataset
    assert dataset.AccessionNumber == "" and dataset.LongitudinalTemporalInformationModified == "REMOVED"


@pytest.mark.parametrize("pseudonym", ["", "Doe^John", "A\\B", "x" * 65, " leading space", 17])
def test_bad_pseudonyms_are_refused(pseudonym):
    with pytest.raises(InputError, match="pseudonym"):
        Deidentification(pseudonym)


def test_every_writer_deidentifies_what_it_copies(hospital_ct, tmp_path):
    folder, header = hospital_ct
    grid = Grid((6, 5, 4), (2.0, 2.0, 3.0), (-10.0, 20.0, 30.0))
    labels = LabelVolume(np.zeros(grid.shape, np.uint8), grid, labels={1: "liver", 2: "lesion 1"})
    labels.array[1:3, 1:4, 1:4] = 1
    labels.array[2, 2, 2] = 2
    dose = Volume(np.full(grid.shape, 3.0, np.float32), grid, "", {"units": "Gy"})
    how = Deidentification("S-017")
    written = [
        write_dicom_seg(labels, folder, tmp_path / "seg.dcm", deidentification=how),
        write_rtstruct(labels, folder, tmp_path / "rtstruct.dcm", deidentification=how),
        write_rt_dose(dose, tmp_path / "dose.dcm", reference=folder, deidentification=how),
        write_dicom_nm(dose, tmp_path / "nm.dcm", frame_of_reference_uid=header.FrameOfReferenceUID,
                       patient_name=HOSPITAL["PatientName"], patient_id=HOSPITAL["PatientID"], deidentification=how),
        *sorted(write_dicom_series(dose, tmp_path / "series", frame_of_reference_uid=header.FrameOfReferenceUID,
                                   patient_name=HOSPITAL["PatientName"], patient_id=HOSPITAL["PatientID"],
                                   deidentification=how).iterdir()),
    ]
    for path in written:
        dataset = pydicom.dcmread(path)
        check_deidentified(dataset, "S-017")
        frames = dataset.get("ReferencedFrameOfReferenceSequence") or [dataset]  # an RTSTRUCT's are nested
        assert frames[0].FrameOfReferenceUID == header.FrameOfReferenceUID, path.name
        for text in TEXTS:
            assert text.encode() not in path.read_bytes(), (path.name, text)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.ContentDate == "19000101"  # type 1 in a SEG: a dummy, not the real date
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [header.SeriesInstanceUID]
    assert seg.StudyInstanceUID == header.StudyInstanceUID
    assert pydicom.dcmread(tmp_path / "dose.dcm").StudyInstanceUID == header.StudyInstanceUID

    plain = write_dicom_seg(labels, folder, tmp_path / "plain_seg.dcm")  # without: copied as they are
    assert {"Zyxwvut", "PID8675309X", "OTHER31337"} <= set(identifiers_in(pydicom.dcmread(plain)))
