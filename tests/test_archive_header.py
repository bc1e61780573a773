"""The archive's header reader: its own walk of the element headers gives the same index
record as pydicom reading the same header, and hands every file it cannot be sure of to
pydicom."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence

from aiodimse import uids
from aiodimse.archive import header
from aiodimse.archive.index import RECORD_TAGS, Record
from aiodimse.dicomfile import read_part10
from aiodimse.testing.synthetic import SUPPORTED_TRANSFER_SYNTAXES, make_ct_instance


def _pydicom_record(path: str | Path) -> Record | str:
    """The record from pydicom's reading of the header (groups up to 0020), or the name of
    what it raised."""
    try:
        info = read_part10(path)
        syntax = uids.transfer_syntax(info.transfer_syntax_uid)
        assert syntax is None or not syntax.is_deflated
        implicit = syntax is not None and syntax.is_implicit_vr
        little = syntax is None or syntax.is_little_endian
        with open(path, "rb") as fp:
            fp.seek(info.dataset_offset)
            ds = read_dataset(fp, implicit, little, stop_when=lambda tag, vr, n: tag.group > 0x20)
        return Record.from_header(ds, info.transfer_syntax_uid)
    except Exception as exc:
        return type(exc).__name__


def _record(path: str | Path) -> Record | str:
    try:
        return Record.from_header(*header.read_header(path, RECORD_TAGS))
    except Exception as exc:
        return type(exc).__name__


def _plain_files() -> list[str]:
    """pydicom's test files (those it ships: nothing is downloaded) that are Part 10 and
    not Deflated."""
    shipped = Path(pydicom.data.__file__).parent / "test_files"
    found = []
    for path in sorted(str(p) for p in shipped.glob("*.dcm")):
        try:
            info = read_part10(path)
        except Exception:
            continue
        syntax = uids.transfer_syntax(info.transfer_syntax_uid)
        if syntax is None or not syntax.is_deflated:
            found.append(path)
    return found


PLAIN_FILES = _plain_files()


def _without_pydicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Dataset:
        raise AssertionError("pydicom read the header")

    monkeypatch.setattr(header, "read_dataset", refuse)


def test_the_test_files_are_there() -> None:
    assert len(PLAIN_FILES) > 40


# (SC_rgb_jpeg.dcm says explicit VR and is implicit: pydicom warns and reads it anyway)
@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")
@pytest.mark.parametrize("path", PLAIN_FILES, ids=lambda p: Path(p).name)
def test_same_record_as_pydicom(path: str) -> None:
    assert _record(path) == _pydicom_record(path)


NATIVE = [s for s in SUPPORTED_TRANSFER_SYNTAXES if s != pydicom.uid.DeflatedExplicitVRLittleEndian]


@pytest.mark.parametrize("syntax", NATIVE, ids=str)
def test_usual_instances_are_read_without_pydicom_reader(
    tmp_path: Path, syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Implicit, explicit, big endian, with sequences of undefined length nested in items
    of undefined length: the walk reads them itself."""
    ds = make_ct_instance(seed="header-walk", rows=4, cols=4, transfer_syntax=syntax)
    inner = Dataset()
    inner.CodeMeaning = "nested"
    inner.is_undefined_length_sequence_item = True
    item = Dataset()
    item.CodeValue = "X"
    item.ConceptCodeSequence = Sequence([inner])
    item["ConceptCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.ProcedureCodeSequence = Sequence([item, Dataset()])
    ds["ProcedureCodeSequence"].is_undefined_length = True
    ds.ReferencedImageSequence = Sequence([])  # empty, defined length
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.read_bytes().count(b"\xff\xff\xff\xff") == 4  # the undefined lengths
    expected = _pydicom_record(path)
    _without_pydicom_reader(monkeypatch)
    assert _record(path) == expected
    assert isinstance(expected, Record) and expected.study_uid == ds.StudyInstanceUID


def _write_with_long_header(path: Path) -> Dataset:
    ds = make_ct_instance(seed="long-header", rows=4, cols=4)
    ds.add_new(0x00091010, "LO", "private")  # a private block before (0010,xxxx)
    ds.add_new(0x00091001, "UT", "x" * (header.HEADER_BYTES + 10))
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_a_header_longer_than_what_is_read_goes_to_pydicom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.dcm"
    ds = _write_with_long_header(path)
    record = _record(path)
    assert isinstance(record, Record) and record.patient_id == ds.PatientID
    _without_pydicom_reader(monkeypatch)
    assert _record(path) == "AssertionError"  # (pydicom was asked)


@pytest.mark.filterwarnings("ignore::UserWarning")  # (damaged character set names)
def test_damaged_headers_give_what_pydicom_gives(tmp_path: Path) -> None:
    """Bytes changed at random in the first 3,000 bytes of the data set, sometimes cut
    short: the record, or the error, is pydicom's each time."""
    rnd = random.Random("damaged-headers")
    sources = PLAIN_FILES[:25]
    target = tmp_path / "damaged.dcm"
    for _ in range(600):
        source = rnd.choice(sources)
        data = bytearray(Path(source).read_bytes())
        offset = read_part10(source).dataset_offset
        span = min(len(data) - offset, 3000)
        for _ in range(rnd.randint(1, 4)):
            data[offset + rnd.randrange(span)] = rnd.randrange(256)
        if rnd.random() < 0.3:
            data = data[: offset + rnd.randrange(span)]
        target.write_bytes(data)
        assert _record(target) == _pydicom_record(target), source


def _sequence_instance(path: Path, syntax: str = pydicom.uid.ExplicitVRLittleEndian) -> Dataset:
    """A CT with a sequence of undefined length in group 0008 (and its items too)."""
    ds = make_ct_instance(seed="header-damage", rows=4, cols=4, transfer_syntax=syntax)
    item = Dataset()
    item.CodeValue = "ABC"
    item.CodeMeaning = "meaning"
    item.is_undefined_length_sequence_item = True
    ds.ProcedureCodeSequence = Sequence([item])
    ds["ProcedureCodeSequence"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.mark.parametrize("vr", [b"XX", b"\x00Q", b"O\xff"])
def test_an_unknown_vr_in_an_item_is_pydicoms_to_judge(tmp_path: Path, vr: bytes) -> None:
    path = tmp_path / "bad-vr.dcm"
    _sequence_instance(path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"\x08\x00\x00\x01SH")  # (0008,0100) Code Value, inside the item
    raw[at + 4 : at + 6] = vr
    path.write_bytes(raw)
    assert _record(path) == _pydicom_record(path)


def test_a_value_cut_short_is_pydicoms_to_judge(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    _sequence_instance(path)
    raw = path.read_bytes()
    at = raw.index(b"\x10\x00\x20\x00LO")  # (0010,0020) Patient ID
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    for cut in (1, 2):
        path.write_bytes(raw[: at + 8 + length - cut])
        assert _record(path) == _pydicom_record(path)


def _elements(count: int) -> bytes:
    """``count`` private LO elements of group 0019 (explicit VR little endian)."""
    out = bytearray(b"\x19\x00\x10\x00LO\x08\x00CREATOR ")
    for k in range(count):
        out += (0x00191000 + k).to_bytes(4, "little")[2:] + (0x1000 + k).to_bytes(2, "little")
        out += b"LO\x04\x00abcd"
    return bytes(out)


def test_what_was_read_ending_before_group_0021_is_not_a_header() -> None:
    """Only a whole data set may end before group 0021: a first part of one that ends on
    an element's end is handed to pydicom (None)."""
    data = _elements(10) + b"\x20\x00\x0d\x00UI\x04\x001.2\x00"
    wanted = {0x0020000D}
    whole = header._walk_header(data, True, False, True, wanted)
    assert whole is not None and [int(t) for t in whole] == [0x0020000D]
    assert header._walk_header(data[:-12], False, False, True, wanted) is None
    assert header._walk_header(data[:-12], True, False, True, wanted) == {}


def test_un_of_undefined_length_is_pydicoms_to_judge() -> None:
    """PS3.5 6.2.2: the items of a UN of undefined length are implicit VR. Read as explicit
    VR, these bytes would pass as (0008,0100) SH "AB"; the walk hands them over instead."""
    item_start = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # (undefined length)
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sequence_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    inside = b"\x08\x00\x00\x01SH\x02\x00AB"
    un = b"\x19\x00\x01\x10UN\x00\x00\xff\xff\xff\xff" + item_start + inside + item_end
    un += sequence_end
    study = b"\x20\x00\x0d\x00UI\x04\x001.2\x00"
    # At the top level, and inside an item of a sequence of undefined length.
    nested = b"\x08\x00\x10\x11SQ\x00\x00\xff\xff\xff\xff" + item_start + un + item_end
    nested += sequence_end
    for data in (_elements(1) + un + study, nested + _elements(1) + study):
        assert header._walk_header(data, True, False, True, {0x0020000D}) is None
        as_sequence = data.replace(b"UN\x00\x00\xff", b"SQ\x00\x00\xff")
        found = header._walk_header(as_sequence, True, False, True, {0x0020000D})
        assert found is not None and [int(t) for t in found] == [0x0020000D]


def test_what_the_walk_cannot_be_sure_of_is_pydicoms() -> None:
    study = b"\x20\x00\x0d\x00UI\x04\x001.2\x00"
    wanted = {0x0020000D}
    assert header._walk_header(study[:-1], True, False, True, wanted) is None  # value cut
    assert header._walk_header(study + b"\x21\x00", True, False, True, wanted) is None
    item = b"\xfe\xff\x00\xe0\x04\x00\x00\x00abcd"  # an item where an element should be
    assert header._walk_header(item + study, True, False, True, wanted) is None  # (no VR)
    assert header._walk_header(item + study, True, True, True, wanted) == {}  # (group FFFE)


def test_a_specific_character_set_pydicom_refuses_is_pydicoms_to_judge(tmp_path: Path) -> None:
    """pydicom's reader converts (0008,0005) as it reads and refuses a value it cannot
    take (one that starts with a null, which the index's own reading would strip; one
    of another VR): the walk gives the same answer, not a record."""
    ds = make_ct_instance(seed="charset", rows=4, cols=4)
    ds.SpecificCharacterSet = "ISO_IR 100"
    path = tmp_path / "charset.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    assert isinstance(_record(path), Record)
    at = raw.index(b"\x08\x00\x05\x00CS")
    damaged = (
        raw.replace(b"ISO_IR 100", b"\x00SO_IR 100", 1),
        raw[: at + 4] + b"SS" + raw[at + 6 :],  # (another VR)
    )
    for data in damaged:
        path.write_bytes(data)
        expected = _pydicom_record(path)
        assert _record(path) == expected and not isinstance(expected, Record)
