"""Tests of the UID tables and the PS3.5 9.1 UID grammar."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import UID

from aiodimse.uids import (
    COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    FIND_SOP_CLASSES,
    GET_SOP_CLASSES,
    HTJ2K,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE_8BIT,
    MOVE_SOP_CLASSES,
    NON_PATIENT_STORAGE_SOP_CLASSES,
    QUERY_RETRIEVE_SOP_CLASSES,
    RLE_LOSSLESS,
    STORAGE_SOP_CLASSES,
    STUDY_ROOT_QR_MOVE,
    TRANSFER_SYNTAXES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    generate_uid,
    is_storage_sop_class,
    is_valid_uid,
    transfer_syntax,
    uid_name,
)

# -- grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["0", "1.2", "1.2.840.10008.1.2.1", "2.25.0", "1.0.0", "9", "1." + "2" * 62],
)
def test_valid_uids(value: str) -> None:
    assert is_valid_uid(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "../../etc/x",
        "1..2",
        "01.2",
        "1.02",
        "1.2.",
        ".1.2",
        "1.2\n",
        "1.2\x00",
        " 1.2",
        "1.2 ",
        "1.a",
        "1/2",
        "1.2\\3",
        "\u0661.2",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to PS3.5
        "1." + "2" * 63,  # 65 characters
        "-1.2",
        "+1.2",
    ],
)
def test_invalid_uids(value: str) -> None:
    assert not is_valid_uid(value)


def _reference_is_valid(value: str) -> bool:
    """PS3.5 9.1 restated without a regular expression."""
    if not 1 <= len(value) <= 64:
        return False
    for part in value.split("."):
        if not part or any(c not in "0123456789" for c in part):
            return False
        if len(part) > 1 and part[0] == "0":
            return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="0123456789.a/ \n", max_size=70) | st.text(max_size=20))
def test_grammar_agrees_with_a_reference(value: str) -> None:
    assert is_valid_uid(value) == _reference_is_valid(value)


def test_generate_uid() -> None:
    made = {generate_uid() for _ in range(200)}
    assert len(made) == 200
    for uid in made:
        assert uid.startswith("2.25.")
        assert is_valid_uid(uid)
        assert int(uid[5:]) < 2**128  # PS3.5 B.2: the UUID as one integer


def test_implementation_identity() -> None:
    assert is_valid_uid(IMPLEMENTATION_CLASS_UID)
    assert IMPLEMENTATION_CLASS_UID.startswith("2.25.")
    assert IMPLEMENTATION_VERSION_NAME == "AIODIMSE_010"
    assert 1 <= len(IMPLEMENTATION_VERSION_NAME) <= 16


# -- transfer syntaxes -----------------------------------------------------------------------


@pytest.mark.parametrize("uid", list(TRANSFER_SYNTAXES))
def test_transfer_syntax_flags_agree_with_pydicom(uid: str) -> None:
    ts = TRANSFER_SYNTAXES[uid]
    ref = UID(uid)
    assert ref.is_transfer_syntax
    assert ts.uid == uid
    assert ts.is_implicit_vr == ref.is_implicit_VR
    assert ts.is_little_endian == ref.is_little_endian
    assert ts.is_deflated == ref.is_deflated
    assert ts.is_encapsulated == ref.is_encapsulated
    assert ts.name.lower().replace("&", "and") == ref.name.lower().replace("&", "and")
    assert transfer_syntax(uid) is ts


def test_transfer_syntax_table_covers_the_brief() -> None:
    for uid in (
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        JPEG_BASELINE_8BIT,
        RLE_LOSSLESS,
        HTJ2K,
    ):
        assert uid in TRANSFER_SYNTAXES
    assert transfer_syntax("1.2.3.4") is None
    assert UNCOMPRESSED_TRANSFER_SYNTAXES[0] == EXPLICIT_VR_LITTLE_ENDIAN
    assert set(UNCOMPRESSED_TRANSFER_SYNTAXES) == {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }


# -- SOP classes -----------------------------------------------------------------------------


def test_storage_table_agrees_with_pydicom_dictionary() -> None:
    assert len(STORAGE_SOP_CLASSES) >= 120
    assert len(set(STORAGE_SOP_CLASSES.values())) == len(STORAGE_SOP_CLASSES)
    for keyword, uid in {**STORAGE_SOP_CLASSES, **NON_PATIENT_STORAGE_SOP_CLASSES}.items():
        assert is_valid_uid(uid)
        ref = UID(uid)
        assert ref.keyword == keyword
        assert "Storage" in ref.name
        assert uid_name(uid) == ref.name
        assert is_storage_sop_class(uid)


@pytest.mark.parametrize(
    ("keyword", "uid"),
    [  # typed in from PS3.4 Table B.5-1
        ("CTImageStorage", "1.2.840.10008.5.1.4.1.1.2"),
        ("MRImageStorage", "1.2.840.10008.5.1.4.1.1.4"),
        ("ComputedRadiographyImageStorage", "1.2.840.10008.5.1.4.1.1.1"),
        ("DigitalXRayImageStorageForPresentation", "1.2.840.10008.5.1.4.1.1.1.1"),
        ("UltrasoundImageStorage", "1.2.840.10008.5.1.4.1.1.6.1"),
        ("SecondaryCaptureImageStorage", "1.2.840.10008.5.1.4.1.1.7"),
        ("NuclearMedicineImageStorage", "1.2.840.10008.5.1.4.1.1.20"),
        ("PositronEmissionTomographyImageStorage", "1.2.840.10008.5.1.4.1.1.128"),
        ("XRayAngiographicImageStorage", "1.2.840.10008.5.1.4.1.1.12.1"),
        ("EnhancedCTImageStorage", "1.2.840.10008.5.1.4.1.1.2.1"),
        ("SegmentationStorage", "1.2.840.10008.5.1.4.1.1.66.4"),
        ("RTPlanStorage", "1.2.840.10008.5.1.4.1.1.481.5"),
        ("RTStructureSetStorage", "1.2.840.10008.5.1.4.1.1.481.3"),
        ("BasicTextSRStorage", "1.2.840.10008.5.1.4.1.1.88.11"),
        ("KeyObjectSelectionDocumentStorage", "1.2.840.10008.5.1.4.1.1.88.59"),
        ("EncapsulatedPDFStorage", "1.2.840.10008.5.1.4.1.1.104.1"),
        ("TwelveLeadECGWaveformStorage", "1.2.840.10008.5.1.4.1.1.9.1.1"),
    ],
)
def test_common_storage_classes(keyword: str, uid: str) -> None:
    assert STORAGE_SOP_CLASSES[keyword] == uid


def test_non_storage_classes_are_not_storage() -> None:
    for uid in (VERIFICATION_SOP_CLASS, STUDY_ROOT_QR_MOVE, "1.2.840.10008.1.20.1"):
        assert not is_storage_sop_class(uid)
    assert "1.2.840.10008.1.3.10" not in STORAGE_SOP_CLASSES.values()  # DICOMDIR


def test_query_retrieve_models() -> None:
    # PS3.4 C.6: the information models and their UIDs
    assert FIND_SOP_CLASSES[:2] == ("1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1")
    assert MOVE_SOP_CLASSES[:2] == ("1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2")
    assert GET_SOP_CLASSES[:2] == ("1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3")
    assert COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET == "1.2.840.10008.5.1.4.1.2.4.3"
    for uid, name in QUERY_RETRIEVE_SOP_CLASSES.items():
        assert UID(uid).name.startswith(name)  # pydicom may append " (Retired)"


def test_uid_name() -> None:
    assert uid_name(VERIFICATION_SOP_CLASS) == "Verification SOP Class"
    assert uid_name(EXPLICIT_VR_LITTLE_ENDIAN) == "Explicit VR Little Endian"
    assert uid_name("1.2.840.10008.5.1.4.1.1.2") == "CT Image Storage"
    # not in our tables: pydicom's dictionary
    assert uid_name("1.2.840.10008.3.1.1.1") == "DICOM Application Context Name"
    # unknown: the UID itself
    assert uid_name("1.2.3.4.5") == "1.2.3.4.5"
    assert uid_name("") == ""
