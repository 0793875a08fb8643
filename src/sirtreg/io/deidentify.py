"""De-identification of the DICOM files sirtreg writes: the basic application-level confidentiality profile.

DICOM PS3.15 Annex E, Table E.1-1, applied to the attributes our writers copy from the series they
reference (the patient, general study and patient study modules, which highdicom copies whole into a
SEG) or write themselves, in every nested sequence, with two options of the profile:

* Retain UIDs (113110): study, series, SOP instance and frame of reference UIDs are kept, so the
  outputs still reference the MAA CT series and lie in its frame of reference (a PACS or viewer
  overlays them). Whoever holds the original series can therefore link the outputs to it; UIDs
  carry no name, ID or date.
* Clean Descriptors (113105): the only descriptions kept are those sirtreg writes itself (series
  descriptions such as "sirtreg lesions of ct1", segment labels and ROI names, which are the
  structure names of the plan's contours); descriptions copied from the inputs (StudyDescription)
  are removed.

Patient name and ID become a pseudonym (the same text for both, "ANONYMOUS" by default), never
derived from the real ones; birth date, sex, accession number, study ID and referring physician are
emptied (type 2 attributes kept, zero length); other identifying attributes (other IDs and names,
age, size, weight, address, institution, physicians, operators, clinical-trial attributes, private
attributes) are removed. Every date and time is emptied or removed (no longitudinal temporal
information is retained), except where the IOD requires one (a SEG's ContentDate and ContentTime),
which get the dummy 19000101 000000. Every other person name (PN) anywhere is emptied.
PatientIdentityRemoved is YES, DeidentificationMethod and its code sequence say what was done, and
LongitudinalTemporalInformationModified is REMOVED.

Not covered: identifiers burnt into pixels (our outputs are computed maps, none are copied) and
identifiers the user puts into names sirtreg writes (floating ids, contour segment names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sirtreg.errors import InputError

if TYPE_CHECKING:  # pydicom loads when a dataset is de-identified, not with sirtreg.io
    from pydicom.dataset import Dataset

DEFAULT_PSEUDONYM = "ANONYMOUS"
METHOD = "DICOM PS3.15 E.1 basic profile: retain UIDs, clean descriptors"  # LO, at most 64 characters
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"), ("113105", "Clean Descriptors Option"),
                ("113110", "Retain UIDs Option"))  # DCM codes of CID 7050
_PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")  # valid as PN and LO: no '^', '=' or '\'

# Table E.1-1, basic profile: X (remove). X/Z and X/Z/D are removed where our IODs do not require them.
REMOVED = frozenset({
    # patient
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "BranchOfService", "CountryOfResidence",
    "CurrentPatientLocation", "EthnicGroup", "IssuerOfAdmissionIDSequence", "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "LastMenstrualDate", "MedicalAlerts", "MedicalRecordLocator",
    "MilitaryRank", "Occupation", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAddress", "PatientAge", "PatientBirthName", "PatientBirthTime", "PatientComments",
    "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence", "PatientMotherBirthName",
    "PatientPrimaryLanguageCodeSequence", "PatientPrimaryLanguageModifierCodeSequence",
    "PatientReligiousPreference", "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelecomInformation",
    "PatientTelephoneNumbers", "PatientTransportArrangements", "PatientWeight", "PregnancyStatus",
    "ReferencedPatientPhotoSequence", "ReferencedPatientSequence", "RegionOfResidence", "ResponsibleOrganization",
    "ResponsiblePerson", "ResponsiblePersonRole", "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus",
    "SpecialNeeds",
    # clinical trial subject, study and series (the modules go as a whole)
    "ClinicalTrialCoordinatingCenterName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSeriesDescription", "ClinicalTrialSeriesID", "ClinicalTrialSiteID", "ClinicalTrialSiteName",
    "ClinicalTrialSponsorName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointDescription", "ClinicalTrialTimePointID",
    # study, request and procedure
    "ConsultingPhysicianIdentificationSequence", "ConsultingPhysicianName", "IssuerOfAccessionNumberSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "PhysiciansReadingStudyIdentificationSequence", "ReasonForStudy", "ReasonForTheRequestedProcedure",
    "ReferencedStudySequence", "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence",
    "ReferringPhysicianTelephoneNumbers", "RequestAttributesSequence", "RequestedProcedureDescription",
    "RequestedProcedureID", "RequestingPhysician", "RequestingService", "StudyComments", "StudyDescription",
    "ProcedureCodeSequence", "ReferencedPerformedProcedureStepSequence", "PerformedLocation",
    "PerformedProcedureStepDescription", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedStationAETitle", "PerformedStationName", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "ProtocolName",
    # series, equipment and instance
    "AcquisitionComments", "AcquisitionDate", "AcquisitionDateTime", "AcquisitionTime",
    "ContentCreatorIdentificationCodeSequence", "DerivationDescription", "ImageComments", "InstanceCreationDate",
    "InstanceCreationTime", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionName",
    "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence", "OperatorIdentificationSequence",
    "OperatorsName", "SeriesDate", "SeriesTime", "StationName", "TimezoneOffsetFromUTC",
})
# Table E.1-1, basic profile: Z (zero length). Type 2 attributes of the patient and general study modules.
EMPTIED = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
           "AccessionNumber")
# Z/D where the IOD requires a value (type 1): a dummy of the right VR.
_DUMMIES: Mapping[str, Mapping[str, str]] = {"SEG": {"ContentDate": "19000101", "ContentTime": "000000"}}
_DUMMY_ALWAYS = {"DeviceSerialNumber": "0"}  # X/Z/D; type 1 in the SEG's enhanced general equipment
_EMPTIED_BY_VR = frozenset({"PN", "DA", "DT", "TM"})  # any other person name, date or time


def _clean(dataset: Dataset, dummies: Mapping[str, str]) -> None:
    """Apply the table to ``dataset`` and, recursively, to the items of its sequences."""
    for element in list(dataset):
        keyword = element.keyword
        if keyword in REMOVED:
            del dataset[element.tag]
        elif keyword in dummies:
            element.value = dummies[keyword]
        elif keyword in EMPTIED or element.VR in _EMPTIED_BY_VR:
            element.value = ""
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, dummies)


@dataclass(frozen=True)
class Deidentification:
    """How to de-identify the DICOM files a writer makes (see the module docstring).

    Parameters
    ----------
    pseudonym : PatientName and PatientID of the outputs: 1 to 64 letters, digits, spaces, '.', '_' or
        '-', starting with a letter or digit. Choose it (e.g. a study subject number); never derive it
        from the real ID by a plain hash, which anyone holding the ID can recompute.
    """

    pseudonym: str = DEFAULT_PSEUDONYM

    def __post_init__(self) -> None:
        if not isinstance(self.pseudonym, str) or not _PSEUDONYM.fullmatch(self.pseudonym):
            raise InputError(f"a pseudonym is 1 to 64 letters, digits, spaces, '.', '_' or '-' (starting with a "
                             f"letter or digit), got {self.pseudonym!r}")

    def apply(self, dataset: Dataset) -> Dataset:
        """De-identify ``dataset`` in place (private attributes removed too); returns it."""
        from pydicom.dataset import Dataset

        dataset.remove_private_tags()
        _clean(dataset, {**_DUMMY_ALWAYS, **_DUMMIES.get(str(dataset.get("Modality", "")).upper(), {})})
        for keyword in EMPTIED:
            setattr(dataset, keyword, "")
        dataset.PatientName = dataset.PatientID = self.pseudonym
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = METHOD
        codes = []
        for value, meaning in METHOD_CODES:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
            codes.append(code)
        dataset.DeidentificationMethodCodeSequence = codes
        dataset.LongitudinalTemporalInformationModified = "REMOVED"
        return dataset


def deidentify(dataset: Dataset, *, pseudonym: str = DEFAULT_PSEUDONYM) -> Dataset:
    """De-identify ``dataset`` in place with :class:`Deidentification`; returns it."""
    return Deidentification(pseudonym).apply(dataset)


def deidentification_for(deidentify: bool, pseudonym: str | None = None) -> Deidentification | None:
    """The :class:`Deidentification` a run asks for (``pseudonym`` default "ANONYMOUS"), or None without
    ``deidentify``; refuses a pseudonym without ``deidentify`` and a bad pseudonym (InputError)."""
    if not deidentify:
        if pseudonym is not None:
            raise InputError("a pseudonym is used only with --deidentify (deidentify=True)")
        return None
    return Deidentification(DEFAULT_PSEUDONYM if pseudonym is None else pseudonym)
