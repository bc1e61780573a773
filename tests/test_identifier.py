"""The light query identifier (``aiodimse.query.Identifier``): built from ``-k`` keys without
pydicom, it must mean the same query as :func:`build_query` and encode to the same bytes as
pydicom would; anything it cannot express goes the pydicom way."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from _retrieve_support import FileArchive, originals, received, study_uid
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue

import aiodimse
from aiodimse import uids
from aiodimse.archive.encode import encode_identifier as archive_encoder
from aiodimse.dicomfile import encode_dataset
from aiodimse.query import (
    QUERY_KEYS,
    Identifier,
    build_identifier,
    build_query,
    encode_identifier,
    to_dataset,
)
from aiodimse.sinks import DirectorySink, MoveTracker
from aiodimse.testing.synthetic import make_study, write_study
from aiodimse.ul.negotiation import ContextRequest

LOCAL = "127.0.0.1"
#: The native syntaxes the pure encoder writes (the encapsulated ones are explicit VR LE).
SYNTAXES = (
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
)

#: (keys, level): queries of every kind the light form takes.
QUERIES: list[tuple[list[str], str | None]] = [
    (["StudyInstanceUID=1.2.3"], None),  # odd length UI: NUL padded
    (["StudyInstanceUID=1.2.34"], "STUDY"),  # even length
    (["PatientID=ABC"], "PATIENT"),  # odd length LO: space padded
    (["PatientID=AB"], "PATIENT"),
    (["StudyInstanceUID=1.2.3", "SeriesInstanceUID=1.2.3.4"], "SERIES"),
    (["StudyInstanceUID=1.2.3", "SeriesInstanceUID=1.2.3.4", "SOPInstanceUID=9.8"], "IMAGE"),
    (["StudyInstanceUID=1.2.3\\1.2.44\\1.5"], "STUDY"),  # a UID list
    # Return keys (no value, or an empty one), given out of tag order.
    (["StudyDate", "PatientName=", "AccessionNumber", "StudyInstanceUID"], None),
    (["PatientName=DOE^JOHN", "PatientBirthDate=19700101-19801231", "PatientSex=M"], None),
    (["PatientName=DOE*", "StudyDate=20240101-", "StudyTime=1200-1300"], "STUDY"),
    (["ModalitiesInStudy=CT\\MR", "StudyDescription= odd text ", "StudyID=X"], None),
    (["ReferringPhysicianName=A^B=C^D", "InstitutionName=a=b"], None),  # '=' in values
    (["Modality=CT", "SeriesNumber=5", "SeriesDescription=AX"], "SERIES"),
    (["InstanceNumber=+07", "SOPClassUID=1.2.840.10008.5.1.4.1.1.2"], "IMAGE"),
    (["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances=12"], None),
    (["NumberOfSeriesRelatedInstances=-0", "SeriesNumber=1\\2"], "SERIES"),
    (["QueryRetrieveLevel=series", "SeriesInstanceUID=1.2"], None),  # level from -k
    (["QueryRetrieveLevel=IMAGE"], "PATIENT"),  # --level wins
    (["PatientID=A", "PatientID=BCD"], "PATIENT"),  # the last one wins
    ([" PatientID =X"], "PATIENT"),  # the keyword is stripped, the value is not
    (["SpecificCharacterSet=ISO_IR 100", "PatientName=DOE"], None),
    (["SpecificCharacterSet=ISO_IR 192", "PatientName=DOE^J"], None),
    (["SpecificCharacterSet=GB18030", "StudyDescription=X"], None),
    (["RetrieveAETitle= AE ", "InstanceAvailability=ONLINE"], None),
    (["StudyInstanceUID=\\1.2"], None),
    (["PatientID=x\\", "IssuerOfPatientID=~!@#$%&*()_+{}|:<>?`-[];',./"], "PATIENT"),
    ([], None),
    ([], "IMAGE"),
]


def _light(keys: list[str], level: str | None) -> Identifier:
    built = build_identifier(keys, level)
    assert isinstance(built, Identifier), (keys, level)
    return built


@pytest.mark.parametrize("keyword", sorted(QUERY_KEYS))
def test_the_table_agrees_with_pydicoms_dictionary(keyword: str) -> None:
    tag, vr = QUERY_KEYS[keyword]
    assert tag_for_keyword(keyword) == tag
    assert keyword_for_tag(tag) == keyword
    assert dictionary_VR(tag) == vr


def test_the_table_has_the_usual_keys() -> None:
    usual = {
        "QueryRetrieveLevel",
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "StudyDescription",
        "ModalitiesInStudy",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "InstanceNumber",
        "ReferringPhysicianName",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
        "SpecificCharacterSet",
    }
    assert usual <= set(QUERY_KEYS)


@pytest.mark.parametrize(("keys", "level"), QUERIES)
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_same_bytes_as_pydicom(keys: list[str], level: str | None, syntax: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom writes these without a word, as we do
        expected = encode_dataset(build_query(keys, level), syntax)
    light = _light(keys, level)
    ts = uids.transfer_syntax(syntax)
    assert ts is not None
    assert light.encode(ts) == expected
    # The pydicom fallback of the light form is the same query too.
    assert encode_dataset(light.to_dataset(), syntax) == expected


@pytest.mark.parametrize(("keys", "level"), QUERIES)
def test_same_query_as_build_query(keys: list[str], level: str | None) -> None:
    ds = build_query(keys, level)
    light = _light(keys, level)
    tags = [tag for tag, _, _ in light.elements]
    assert tags == sorted(int(t) for t in ds.keys())  # noqa: SIM118
    assert tags == sorted(tags)
    for tag, vr, text in light.elements:
        element = ds[tag]
        assert vr == element.VR
        value = element.value
        if value is None or value == "":
            assert text is None
        elif isinstance(value, MultiValue):
            assert text == "\\".join(str(v) for v in value)
        else:
            assert text == str(value)


@pytest.mark.parametrize(
    "keys",
    [
        ["PatientComments=x"],  # a keyword outside the table
        ["0010,0020=X"],  # a tag given as hex
        ["(0020,000D)=1.2.3"],
        ["00100020=X"],
        ["ReferencedSeriesSequence"],  # a sequence
        ["PatientName=MÜLLER"],  # not ASCII
        ["PatientID=a\tb"],  # a control character
        ["StudyInstanceUID= 1.2.3"],  # pydicom strips the space of a UID
        ["SeriesNumber= 5"],  # pydicom converts an IS
        ["SeriesNumber=1.0"],
        ["SpecificCharacterSet=ISO 2022 IR 87"],  # code extensions
        ["SpecificCharacterSet=ISO_IR 100\\ISO_IR 192"],
    ],
)
def test_anything_else_goes_the_pydicom_way(keys: list[str]) -> None:
    built = build_identifier(keys, "STUDY")
    assert isinstance(built, Dataset)
    assert built == build_query(keys, "STUDY")


def test_a_lower_case_level_goes_the_pydicom_way() -> None:
    """build_query warns of it (a CS value): the same happens, as before."""
    with pytest.warns(UserWarning, match="study"):
        built = build_identifier(["StudyInstanceUID=1.2.3"], "study")
    assert isinstance(built, Dataset)
    assert built.QueryRetrieveLevel == "STUDY"


@pytest.mark.parametrize(
    ("keys", "level"),
    [
        (["NoSuchKeyword=1"], None),
        (["=1"], None),
        (["QueryRetrieveLevel=WARD"], None),
        (["QueryRetrieveLevel"], None),
        ([], "FRAME"),
        (["SeriesNumber=abc"], None),  # not an IS: pydicom says so
    ],
)
def test_the_same_errors_as_build_query(keys: list[str], level: str | None) -> None:
    with pytest.raises(ValueError) as expected:
        build_query(keys, level)
    with pytest.raises(ValueError) as got:
        build_identifier(keys, level)
    assert str(got.value) == str(expected.value)


def test_an_identifier_is_an_immutable_mapping_by_keyword() -> None:
    light = _light(["StudyInstanceUID=1.2.3", "StudyDate"], None)
    assert dict(light) == {
        "StudyDate": None,
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": "1.2.3",
    }
    assert light.get("SeriesInstanceUID") is None
    with pytest.raises(AttributeError):
        light._elements = ()  # type: ignore[misc]
    other = Identifier([(0x00100020, "LO", "A"), (0x00091001, "LO", ""), (0x00080052, "CS", "X")])
    assert other.elements == (
        (0x00080052, "CS", "X"),
        (0x00091001, "LO", None),
        (0x00100020, "LO", "A"),
    )
    assert list(other) == ["QueryRetrieveLevel", "00091001", "PatientID"]
    # A mapping, it also makes a Dataset the old way (a C-FIND of it, say).
    assert to_dataset(light) == build_query(["StudyInstanceUID=1.2.3", "StudyDate"])


def test_the_encoder_refuses_deflate_and_over_long_values() -> None:
    deflated = uids.transfer_syntax(uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    explicit = uids.transfer_syntax(uids.EXPLICIT_VR_LITTLE_ENDIAN)
    implicit = uids.transfer_syntax(uids.IMPLICIT_VR_LITTLE_ENDIAN)
    assert deflated is not None and explicit is not None and implicit is not None
    light = _light(["StudyInstanceUID=1.2.3"], None)
    assert light.encode(deflated) is None
    long = [(0x00100020, "LO", "x" * 0x10000)]
    assert encode_identifier(long, False, explicit) is None
    assert encode_identifier(long, False, implicit) is not None  # 32-bit lengths
    # The archive's name for it is the same function.
    assert archive_encoder is encode_identifier


def test_a_move_tracker_wants_the_same_uids_from_either_form() -> None:
    keys = ["StudyInstanceUID=1.2.3\\1.2.4", "SeriesInstanceUID=5.6", "SOPInstanceUID"]
    light = _light(keys, "IMAGE")
    from_light = MoveTracker(("ME", 1), lambda _: None, light)
    from_dataset = MoveTracker(("ME", 1), lambda _: None, build_query(keys, "IMAGE"))
    assert from_light.wanted == from_dataset.wanted
    assert from_light.wanted == {
        "StudyInstanceUID": frozenset({"1.2.3", "1.2.4"}),
        "SeriesInstanceUID": frozenset({"5.6"}),
    }


# -- on the wire ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    root = tmp_path_factory.mktemp("two")
    return [
        write_study(root / f"s{i}", make_study(2, rows=8, cols=8, seed=f"ident-{i}"))
        for i in range(2)
    ]


@pytest.mark.parametrize(
    "syntax", [uids.EXPLICIT_VR_LITTLE_ENDIAN, uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN]
)
async def test_move_and_get_with_an_identifier(
    two_studies: list[list[Path]], tmp_path: Path, syntax: str
) -> None:
    """The SCP gets the query build_query would have sent, in the negotiated syntax (the
    deflated one through the pydicom fallback), and the right study arrives."""
    archive = FileArchive([p for s in two_studies for p in s])
    wanted = two_studies[1]
    keys = [f"StudyInstanceUID={study_uid(wanted[0])}"]
    query = _light(keys, None)
    move_model = ContextRequest(uids.STUDY_ROOT_QR_MOVE, (syntax,))
    async with (
        aiodimse.StorageServer(DirectorySink(tmp_path / "dest"), LOCAL, 0, ae_title="DEST") as scp,
        aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", destinations={"DEST": (LOCAL, scp.port)}
        ) as qr,
    ):
        async with aiodimse.connect(LOCAL, qr.port, called_ae="QR", contexts=[move_model]) as assoc:
            result = await assoc.move(query, "DEST", receiver=scp)
        assert result.ok and result.completed == 2
        assert received(tmp_path / "dest") == originals(wanted)
        get_model = ContextRequest(uids.STUDY_ROOT_QR_GET, (syntax,))
        proposal = [get_model, *aiodimse.contexts.for_get(models=())]
        async with aiodimse.connect(LOCAL, qr.port, called_ae="QR", contexts=proposal) as assoc:
            got = await assoc.get(query, receiver=DirectorySink(tmp_path / "got"))
        assert got.ok and got.completed == 2
        assert received(tmp_path / "got") == originals(wanted)
    expected = build_query(keys)
    assert [r.identifier for r in archive.requests] == [expected, expected]
    assert [r.transfer_syntax for r in archive.requests] == [syntax, syntax]
