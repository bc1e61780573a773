"""Helpers for the association tests (aiodimse <-> aiodimse, aiodimse <-> DCMTK): test files,
byte-level comparison of stored instances, a C-FIND handler over stored files, dcmdump.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from _settings import require_dcmtk
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from aiodimse import uids
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.requests import FindRequest
from aiodimse.testing.peers import run_dcmtk
from aiodimse.ul.negotiation import ContextRequest

LOCAL = "127.0.0.1"

#: pydicom's small real files in (between them) every native transfer syntax.
PYDICOM_FILES = (
    "CT_small.dcm",  # explicit VR little endian
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
)


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is not available"
    return Path(str(path))


def pydicom_files() -> list[Path]:
    return [pydicom_file(n) for n in PYDICOM_FILES]


def data_set_of(path: Path) -> bytes:
    """The bytes after a Part 10 file's meta header (PS3.10 7.1), as stored."""
    return dataset_bytes(path, read_part10(path))


def wire_data_set(path: Path) -> bytes:
    """A file's data set as it must travel: PS3.5 A.5 pads an odd-length deflated bit
    stream with one NUL byte (some files, like pydicom's image_dfl.dcm, lack it)."""
    data = data_set_of(path)
    if len(data) & 1 and transfer_syntax_of(path) == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return data + b"\x00"
    return data


def transfer_syntax_of(path: Path) -> str:
    return read_part10(path).transfer_syntax_uid


def sop_instance_of(path: Path) -> str:
    return read_part10(path).sop_instance_uid


def exact_contexts(paths: Iterable[Path]) -> list[ContextRequest]:
    """Verification plus one context per (SOP class, file's own syntax), nothing else: an
    acceptor that takes them receives every file exactly as it is."""
    wanted: dict[tuple[str, str], None] = {}
    for path in paths:
        info = read_part10(path)
        wanted[(info.sop_class_uid, info.transfer_syntax_uid)] = None
    return [ContextRequest(uids.VERIFICATION_SOP_CLASS)] + [
        ContextRequest(sop_class, (ts,)) for sop_class, ts in wanted
    ]


def by_instance(paths: Iterable[Path]) -> dict[str, Path]:
    return {sop_instance_of(p): p for p in paths}


def assert_stored_exactly(stored: Path, original: Path) -> None:
    """Same transfer syntax and the same data set, byte for byte (as it must travel)."""
    assert transfer_syntax_of(stored) == transfer_syntax_of(original), stored
    assert data_set_of(stored) == wire_data_set(original), stored
    info = read_part10(stored)
    ref = read_part10(original)
    assert (info.sop_class_uid, info.sop_instance_uid) == (ref.sop_class_uid, ref.sop_instance_uid)


def _pixels_little_endian(ds: Dataset) -> bytes | None:
    if "PixelData" not in ds:
        return None
    data = bytes(ds.PixelData)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts == uids.EXPLICIT_VR_BIG_ENDIAN and ds["PixelData"].VR == "OW":
        swapped = bytearray(len(data))
        swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
        return bytes(swapped)
    return data


def assert_same_content(stored: Path, original: Path) -> None:
    """The same attributes and values (the encoding may differ: a converted instance)."""
    a, b = dcmread(stored), dcmread(original)
    assert _pixels_little_endian(a) == _pixels_little_endian(b), stored
    tags = {t for t in a.keys() if t.group > 0x0002 and t != 0x7FE00010}  # noqa: SIM118
    other = {t for t in b.keys() if t.group > 0x0002 and t != 0x7FE00010}  # noqa: SIM118
    assert tags == other, stored
    for tag in sorted(tags):
        assert a[tag].value == b[tag].value, (stored, tag)


def assert_dcmdump_reads(paths: Sequence[Path]) -> None:
    """DCMTK's dcmdump reads every file without complaint (one process for all)."""
    require_dcmtk("dcmdump")
    result = run_dcmtk("dcmdump", "-q", "+E", *paths, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for path in paths:
        assert sop_instance_of(path) in result.stdout


class StoredFiles:
    """A C-FIND handler over Part 10 files: single-value and wildcard matching on the keys
    that have a value, universal matching on the empty ones, the requested keys returned,
    one match per entity of the query level (PS3.4 C.2.2)."""

    LEVEL_KEYS: ClassVar[dict[str, str]] = {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }

    def __init__(self, paths: Iterable[Path] = ()) -> None:
        self.records: list[Dataset] = []
        self.requests: list[FindRequest] = []
        for path in paths:
            self.add(path)

    def add(self, path: Path) -> None:
        self.records.append(dcmread(path, stop_before_pixels=True))

    def match(self, identifier: Dataset) -> Iterator[Dataset]:
        level = str(identifier.get("QueryRetrieveLevel", "") or "")
        unique = self.LEVEL_KEYS.get(level)
        keys = [e.keyword for e in identifier if e.keyword and e.keyword != "QueryRetrieveLevel"]
        seen: set[str] = set()
        for record in self.records:
            if not all(_matches(identifier, record, k) for k in keys):
                continue
            if unique is not None:
                key = str(record.get(unique, ""))
                if key in seen:
                    continue
                seen.add(key)
            out = Dataset()
            out.QueryRetrieveLevel = level
            for k in keys:
                setattr(out, k, record.get(k, ""))
            if "SpecificCharacterSet" in record:
                out.SpecificCharacterSet = record.SpecificCharacterSet
            yield out

    async def on_find(self, request: FindRequest) -> Iterator[Dataset]:
        self.requests.append(request)
        return self.match(request.identifier)


def _matches(identifier: Dataset, record: Dataset, keyword: str) -> bool:
    wanted = identifier.get(keyword)
    if wanted is None or wanted == "" or (isinstance(wanted, list) and not wanted):
        return True  # universal matching (PS3.4 C.2.2.2.3)
    have = str(record.get(keyword, ""))
    text = str(wanted)
    if "*" in text or "?" in text:
        return fnmatch.fnmatchcase(have, text)  # wild card matching (PS3.4 C.2.2.2.4)
    return have == text  # single value matching (PS3.4 C.2.2.2.1)
