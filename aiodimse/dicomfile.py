"""DICOM Part 10 files without decoding the dataset, and dataset (re-)encoding per transfer syntax.

A storage SCP writes ``build_file_meta(...) + <received dataset bytes>`` to disk; an SCU
sends the bytes after the file meta (``read_part10`` + ``dataset_bytes``) as they are when
the file's transfer syntax was accepted. Only when the syntax must change is the dataset
decoded and re-encoded with pydicom (``convert_dataset_bytes``).
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, BinaryIO, Final, TypeGuard

from .errors import AiodimseError, TransferSyntaxError
from .uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    TransferSyntax,
    transfer_syntax,
    uid_name,
)

if TYPE_CHECKING:
    # pydicom costs ~0.3 s to import: only the functions that decode or encode a data set
    # import it, so that Part 10 reading, file meta and the network paths start fast.
    from pydicom.dataset import Dataset

__all__ = [
    "DICM_PREFIX",
    "ITEM_END_TAG",
    "ITEM_TAG",
    "LONG_VRS",
    "PREAMBLE_LENGTH",
    "SEQUENCE_END_TAG",
    "UNDEFINED_LENGTH",
    "ElementHeaders",
    "InvalidDatasetError",
    "MetaElement",
    "NotDicomError",
    "Part10Info",
    "build_file_meta",
    "convert_dataset_bytes",
    "dataset_bytes",
    "decode_dataset",
    "empty_dataset",
    "encode_dataset",
    "is_dataset",
    "open_dataset",
    "read_part10",
]

PathLike = str | os.PathLike[str]


def is_dataset(obj: object) -> TypeGuard[Dataset]:
    """``isinstance(obj, pydicom.Dataset)`` without importing pydicom: if pydicom is not
    loaded yet, nothing can be one of its data sets."""
    pydicom_dataset = sys.modules.get("pydicom.dataset")
    return pydicom_dataset is not None and isinstance(obj, pydicom_dataset.Dataset)


def empty_dataset() -> Dataset:
    """A new, empty pydicom Dataset (for code that must not import pydicom at start-up)."""
    # Deferred: pydicom takes ~0.3 s to import; only a path that builds a data set needs it.
    from pydicom.dataset import Dataset

    return Dataset()


PREAMBLE_LENGTH: Final = 128  # PS3.10 7.1
DICM_PREFIX: Final = b"DICM"
_META_START: Final = PREAMBLE_LENGTH + len(DICM_PREFIX)
_MAX_META_LENGTH: Final = 1 << 20  # a file meta group beyond 1 MiB is not a real one
_READ_AHEAD: Final = 4096  # one read covers the preamble and any usual file meta
#: Files up to this size are read whole by ``read_part10(..., whole=True)``: the one read
#: then serves the file meta, the completeness check and the send (a 9 KiB instance cost
#: three opens and an mmap before).
SMALL_FILE: Final = 64 * 1024

#: An explicit VR little endian element header with a 16-bit length (the file meta's,
#: read and written); a 32-bit length.
_SHORT_HEADER: Final = struct.Struct("<HH2sH")
_UINT32: Final = struct.Struct("<I")

#: PS3.5 7.1.2: explicit VRs with a 2-byte reserved field and a 32-bit length.
LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


#: PS3.5 7.5: the tags of group FFFE (item, item delimitation, sequence delimitation), and
#: the length that means "undefined: delimited".
ITEM_TAG: Final = 0xFFFEE000
ITEM_END_TAG: Final = 0xFFFEE00D
SEQUENCE_END_TAG: Final = 0xFFFEE0DD
UNDEFINED_LENGTH: Final = 0xFFFFFFFF


class ElementHeaders:
    """Unpackers of data element headers in one byte order (PS3.5 7.1.2): ``explicit``
    (tag, VR, 16-bit length), ``implicit`` (tag, 32-bit length; also items and
    delimiters) and ``long_length`` (the 32-bit length after a long explicit VR)."""

    __slots__ = ("explicit", "implicit", "long_length")

    def __init__(self, order: str) -> None:
        self.explicit = struct.Struct(order + "HH2sH").unpack_from
        self.implicit = struct.Struct(order + "HHL").unpack_from
        self.long_length = struct.Struct(order + "L").unpack_from

    @staticmethod
    def of(little_endian: bool) -> ElementHeaders:
        return LITTLE_ENDIAN_HEADERS if little_endian else BIG_ENDIAN_HEADERS


LITTLE_ENDIAN_HEADERS: Final = ElementHeaders("<")
BIG_ENDIAN_HEADERS: Final = ElementHeaders(">")


class NotDicomError(AiodimseError):
    """The file is not a DICOM Part 10 file (no preamble + "DICM", or a broken file meta)."""


class InvalidDatasetError(AiodimseError):
    """Dataset bytes that cannot be decoded in their transfer syntax."""


# -- reading Part 10 files -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetaElement:
    """One element of the file meta group (0002,xxxx), value as stored (padding included)."""

    tag: int
    vr: str
    value: bytes

    def text(self) -> str:
        """The value as text without its padding (for UI, AE, SH ... values)."""
        return self.value.decode("ascii", "replace").strip("\x00 ")


@dataclass(frozen=True, slots=True)
class Part10Info:
    """What :func:`read_part10` learned from a file's preamble and file meta (PS3.10 7.1)."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int  # byte offset of the first dataset byte in the file
    file_size: int
    meta: tuple[MetaElement, ...]
    #: The whole file as read, when ``read_part10(..., whole=True)`` found it small.
    content: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def dataset_length(self) -> int:
        """Bytes of dataset after the file meta (still deflated for a deflated syntax)."""
        return self.file_size - self.dataset_offset

    def meta_text(self, tag: int) -> str | None:
        """The text of meta element ``tag`` (e.g. 0x00020016), or None when absent."""
        for element in self.meta:
            if element.tag == tag:
                return element.text()
        return None

    @property
    def implementation_class_uid(self) -> str | None:
        return self.meta_text(0x00020012)

    @property
    def source_ae_title(self) -> str | None:
        return self.meta_text(0x00020016)


class _Reader:
    """A file read ahead into a growing buffer, so that the file meta costs one read (or
    read whole: ``content``)."""

    def __init__(self, fp: BinaryIO, content: bytes | None = None) -> None:
        self.fp = fp
        self.content = content
        self.buf: bytes | bytearray = (
            content if content is not None else bytearray(fp.read(_META_START + _READ_AHEAD))
        )

    def ensure(self, end: int) -> bool:
        """Make bytes [0, end) available; False at end of file."""
        while len(self.buf) < end:
            if self.content is not None:
                return False  # all of it was read
            chunk = self.fp.read(max(_READ_AHEAD, end - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True


def read_part10(path: PathLike, *, whole: bool = False) -> Part10Info:
    """Read a file's preamble and file meta group, not its dataset.

    Only Part 10 files are accepted (128-byte preamble, "DICM", explicit VR little endian
    group 0002 with a Transfer Syntax UID and the Media Storage SOP Class/Instance UIDs):
    anything else raises :class:`NotDicomError`. A bare dataset without file meta cannot
    be sent without parsing it, which is not this function's job.

    With ``whole``, a file of at most :data:`SMALL_FILE` bytes is read in one go and kept
    as ``content`` (what is then checked and sent is exactly what was read).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fp:
            file_size = os.fstat(fp.fileno()).st_size
            content = fp.read(file_size) if whole and file_size <= SMALL_FILE else None
            reader = _Reader(fp, content)
            size = len(content) if content is not None else file_size
            return _parse_part10(name, reader, size)
    except IsADirectoryError:
        raise NotDicomError(f"{name}: is a directory") from None


def _parse_part10(name: str, reader: _Reader, file_size: int) -> Part10Info:
    buf = reader.buf
    if len(buf) < _META_START or buf[PREAMBLE_LENGTH:_META_START] != DICM_PREFIX:
        raise NotDicomError(f"{name}: no 'DICM' after a 128-byte preamble (PS3.10 7.1)")
    meta: list[MetaElement] = []
    values: dict[int, bytes] = {}
    pos = _META_START
    meta_end: int | None = None  # from (0002,0000) File Meta Information Group Length
    while True:
        if meta_end is not None and pos == meta_end and _is_deflated(values):
            # A deflated dataset starts right after the meta: its first bytes are not
            # element tags and must not be read as such.
            break
        if len(buf) < pos + 12:  # (the longest element header)
            reader.ensure(pos + 12)
            buf = reader.buf
            if len(buf) < pos + 4:
                break  # end of file (a file meta with an empty dataset)
        if buf[pos : pos + 2] != b"\x02\x00":
            break  # group 0002 (little endian) is over
        if len(buf) < pos + 8:
            raise NotDicomError(f"{name}: file meta truncated at byte {pos}")
        _, elem, vr, length = _SHORT_HEADER.unpack_from(buf, pos)
        if not (vr.isalpha() and vr.isupper()):
            raise NotDicomError(f"{name}: file meta is not explicit VR (PS3.10 7.1)")
        header = 8
        if vr in LONG_VRS:
            if len(buf) < pos + 12:
                raise NotDicomError(f"{name}: file meta truncated at byte {pos}")
            (length,) = _UINT32.unpack_from(buf, pos + 8)
            header = 12
        end = pos + header + length
        if length == 0xFFFFFFFF or end - _META_START > _MAX_META_LENGTH:
            raise NotDicomError(f"{name}: file meta element (0002,{elem:04X}) has a bad length")
        if len(buf) < end:
            if not reader.ensure(end):
                raise NotDicomError(f"{name}: file meta truncated in (0002,{elem:04X})")
            buf = reader.buf
        value = bytes(buf[pos + header : end])
        tag = 0x00020000 | elem
        meta.append(MetaElement(tag, vr.decode("ascii"), value))
        values[tag] = value
        if elem == 0x0000 and length == 4:
            meta_end = end + _UINT32.unpack(value)[0]
        pos = end

    def required(tag: int, what: str) -> str:
        raw = values.get(tag)
        text = raw.decode("ascii", "replace").strip("\x00 ") if raw is not None else ""
        if not text:
            raise NotDicomError(
                f"{name}: file meta has no {what} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            )
        return text

    transfer_syntax_uid = required(0x00020010, "Transfer Syntax UID")
    return Part10Info(
        path=name,
        sop_class_uid=required(0x00020002, "Media Storage SOP Class UID"),
        sop_instance_uid=required(0x00020003, "Media Storage SOP Instance UID"),
        transfer_syntax_uid=transfer_syntax_uid,
        dataset_offset=pos,
        file_size=file_size,
        meta=tuple(meta),
        content=reader.content,
    )


def _is_deflated(values: dict[int, bytes]) -> bool:
    raw = values.get(0x00020010)
    if raw is None:
        return False
    ts = transfer_syntax(raw.decode("ascii", "replace").strip("\x00 "))
    return ts is not None and ts.is_deflated


def open_dataset(path: PathLike, info: Part10Info) -> BinaryIO:
    """The file opened for reading, positioned at the first dataset byte."""
    fp = open(os.fspath(path), "rb")  # closed by the caller
    fp.seek(info.dataset_offset)
    return fp


def dataset_bytes(path: PathLike, info: Part10Info) -> bytes:
    """The dataset bytes of the file, as stored (deflated for a deflated syntax)."""
    if info.content is not None:  # read whole already (read_part10(..., whole=True))
        return info.content[info.dataset_offset :]
    with open_dataset(path, info) as fp:
        return fp.read()


# -- writing the file meta --------------------------------------------------------------

_PREAMBLE: Final = bytes(PREAMBLE_LENGTH) + DICM_PREFIX
# (0002,0001) File Meta Information Version: OB, value 00H 01H (PS3.10 Table 7.1-1).
_VERSION_ELEMENT: Final = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _meta_element(elem: int, vr: bytes, text: str, pad: bytes, what: str) -> bytes:
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not ASCII") from None
    if len(raw) & 1:
        raw += pad
    if len(raw) > 0xFFFF:
        raise ValueError(f"{what} is too long")
    return _SHORT_HEADER.pack(0x0002, elem, vr, len(raw)) + raw


def build_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    source_ae: str | None = None,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
) -> bytes:
    """Preamble, "DICM" and file meta group (PS3.10 7.1) to put before dataset bytes.

    The group is explicit VR little endian with its group length first; UIDs are padded
    with NUL, the version name and AE title with a space (PS3.5 6.2).
    """
    body = b"".join(
        (
            _VERSION_ELEMENT,
            _meta_element(0x0002, b"UI", sop_class_uid, b"\x00", "SOP Class UID"),
            _meta_element(0x0003, b"UI", sop_instance_uid, b"\x00", "SOP Instance UID"),
            _meta_element(0x0010, b"UI", transfer_syntax_uid, b"\x00", "Transfer Syntax UID"),
            _meta_element(
                0x0012, b"UI", implementation_class_uid, b"\x00", "Implementation Class UID"
            ),
            b""
            if implementation_version_name is None
            else _meta_element(
                0x0013, b"SH", implementation_version_name, b" ", "Implementation Version Name"
            ),
            b"" if source_ae is None else _meta_element(0x0016, b"AE", source_ae, b" ", "AE"),
        )
    )
    # (0002,0000) File Meta Information Group Length: UL, bytes after this element.
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + group_length + body


# -- encoding and decoding datasets ------------------------------------------------------

_PIXEL_DATA: Final = 0x7FE00010
_OTHER_PIXEL_DATA: Final = (0x7FE00008, 0x7FE00009)  # Float / Double Float Pixel Data
_ITEM_TAG_LE: Final = b"\xfe\xff\x00\xe0"
# Binary VRs whose values are multi-byte words that change with the byte order.
_SWAP_WIDTH: Final = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
_ARRAY_CODES: Final = {size: code for code in "QLIH" if (size := array(code).itemsize) in (2, 4, 8)}


def _ts_or_error(uid: str) -> TransferSyntax:
    ts = transfer_syntax(uid)
    if ts is None:
        raise TransferSyntaxError(f"unknown transfer syntax {uid}")
    return ts


def _source_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else None


def _pixel_data_encapsulated(ds: Dataset, source: str | None) -> bool | None:
    """None without pixel data, else whether (7FE0,0010) holds encapsulated fragments."""
    # Deferred: pydicom is slow to import and only data set encoding needs it.
    from pydicom.dataelem import DataElement, RawDataElement

    if _PIXEL_DATA not in ds:
        return False if any(tag in ds for tag in _OTHER_PIXEL_DATA) else None
    # get_item keeps a raw element raw (pydicom types it as DataElement)
    elem: object = ds.get_item(_PIXEL_DATA)
    if isinstance(elem, RawDataElement):
        return elem.length == 0xFFFFFFFF
    if not isinstance(elem, DataElement):
        return None
    if elem.is_undefined_length:
        return True
    # A dataset built in memory: encapsulated data starts with an Item tag (PS3.5 A.4),
    # and its dataset's syntax says so.
    source_ts = transfer_syntax(source) if source else None
    return (
        source_ts is not None
        and source_ts.is_encapsulated
        and isinstance(elem.value, bytes)
        and elem.value[:4] == _ITEM_TAG_LE
    )


def _syntax_name(uid: str | None) -> str:
    return "an unknown transfer syntax" if uid is None else f"{uid_name(uid)} ({uid})"


def encode_dataset(ds: Dataset, transfer_syntax_uid: str, *, deflate_level: int = 6) -> bytes:
    """Encode ``ds`` (without file meta) in ``transfer_syntax_uid``.

    Native syntaxes (implicit/explicit little endian, explicit big endian, deflated) accept
    any dataset with native pixel data. An encapsulated syntax accepts a dataset without
    pixel data, or one whose pixel data is already in that syntax. Pixel data is never
    transcoded: anything else raises :class:`~aiodimse.errors.TransferSyntaxError`.
    """
    # Deferred: pydicom is slow to import and only data set encoding needs it.
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    target = _ts_or_error(transfer_syntax_uid)
    source = _source_syntax(ds)
    encapsulated = _pixel_data_encapsulated(ds, source)
    if target.is_encapsulated:
        if encapsulated is False or (encapsulated and source != target.uid):
            what, why = (
                ("native", "compression")
                if encapsulated is False
                else ("encapsulated", "transcoding")
            )
            raise TransferSyntaxError(
                f"cannot encode {what} pixel data in {_syntax_name(source)} as "
                f"{_syntax_name(target.uid)}: {why} is not supported"
            )
        if encapsulated:
            elem = ds[_PIXEL_DATA]  # PS3.5 A.4: encapsulated pixel data has undefined length
            elem.is_undefined_length = True
    elif encapsulated:
        raise TransferSyntaxError(
            f"cannot encode pixel data compressed in {_syntax_name(source)} as "
            f"{_syntax_name(target.uid)}: decompression is not supported"
        )

    # (iterating a Dataset yields elements, converting raw ones; keys() yields tags)
    if any(tag.group <= 0x0002 for tag in ds.keys()):  # noqa: SIM118
        # PS3.7 / PS3.10: command and file meta groups never belong in the dataset.
        ds = _without_low_groups(ds)

    source_little = _source_little_endian(ds, source)
    little = target.is_little_endian
    if source_little != little:
        ds = _byteswapped_copy(ds, source_little)
    fp = DicomBytesIO()
    fp.is_implicit_VR = target.is_implicit_vr
    fp.is_little_endian = little
    try:
        write_dataset(fp, ds)
    except (ValueError, TypeError, NotImplementedError, struct.error, OverflowError) as exc:
        raise TransferSyntaxError(
            f"cannot encode the dataset as {_syntax_name(target.uid)}: {exc}"
        ) from exc
    data = fp.getvalue()
    if target.is_deflated:
        # PS3.5 A.5: raw deflate (RFC 1951, no zlib header), padded to even length.
        compressor = zlib.compressobj(deflate_level, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
        if len(data) & 1:
            data += b"\x00"
    return data


def _source_little_endian(ds: Dataset, source: str | None) -> bool:
    little = ds.original_encoding[1]
    if little is not None:
        return little
    source_ts = transfer_syntax(source) if source else None
    # A dataset built in memory holds its binary values in this machine's byte order.
    return source_ts.is_little_endian if source_ts is not None else sys.byteorder == "little"


def _without_low_groups(ds: Dataset) -> Dataset:
    # Deferred: pydicom is slow to import and only data set encoding needs it.
    from pydicom.dataset import Dataset

    out = Dataset({tag: ds.get_item(tag) for tag in ds.keys() if tag.group > 0x0002})  # noqa: SIM118
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out


def _swap(value: bytes, width: int) -> bytes:
    code = _ARRAY_CODES.get(width)
    if code is None or len(value) % width:
        return value
    words = array(code, value)
    words.byteswap()
    return words.tobytes()


def _byteswapped_copy(ds: Dataset, source_little: bool) -> Dataset:
    """A copy of ``ds`` whose OW/OL/OF/OD/OV values are in the other byte order."""
    # Deferred: pydicom is slow to import and only data set encoding needs it.
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset
    from pydicom.filewriter import correct_ambiguous_vr
    from pydicom.sequence import Sequence

    out = Dataset()
    for elem in ds:  # iteration converts raw elements with their own encoding
        value = elem.value
        if elem.VR == "SQ":
            value = Sequence([_byteswapped_copy(item, source_little) for item in value])
        out.add(
            DataElement(
                elem.tag,
                elem.VR,
                value,
                is_undefined_length=elem.is_undefined_length,
                already_converted=True,
            )
        )
    # Resolve ambiguous VRs ("OB or OW", "US or SS") in the source byte order first, so
    # that the words below are swapped with their real width.
    correct_ambiguous_vr(out, source_little)
    for elem in out:
        width = _SWAP_WIDTH.get(elem.VR)
        if width and isinstance(elem.value, bytes) and not elem.is_undefined_length:
            elem.value = _swap(elem.value, width)
    return out


def decode_dataset(
    data: bytes | bytearray | memoryview,
    transfer_syntax_uid: str,
    *,
    max_inflated_size: int | None = None,
) -> Dataset:
    """Decode dataset bytes (no file meta) in ``transfer_syntax_uid``; inflates deflated data.

    The result's ``file_meta.TransferSyntaxUID`` records the syntax it came in, so that
    :func:`encode_dataset` knows what its pixel data is. An unknown syntax is read as
    explicit VR little endian, as PS3.5 A.4 has every encapsulated syntax do.
    """
    # Deferred: pydicom is slow to import and only data set decoding needs it.
    from pydicom.dataset import FileMetaDataset
    from pydicom.filereader import read_dataset
    from pydicom.uid import UID

    ts = transfer_syntax(transfer_syntax_uid) or TransferSyntax(
        transfer_syntax_uid, transfer_syntax_uid, is_encapsulated=True
    )
    raw = bytes(data)
    if ts.is_deflated:
        raw = _inflate(raw, max_inflated_size)
    try:
        ds = read_dataset(BytesIO(raw), ts.is_implicit_vr, ts.is_little_endian)
    except Exception as exc:  # pydicom signals bad data with many exception types
        raise InvalidDatasetError(
            f"cannot decode the dataset as {_syntax_name(transfer_syntax_uid)}: {exc}"
        ) from exc
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    return ds


def _inflate(data: bytes, max_size: int | None) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        if max_size is None:
            out = inflater.decompress(data)
        else:
            out = inflater.decompress(data, max_size)
            if inflater.unconsumed_tail and not inflater.eof:
                raise InvalidDatasetError(f"deflated dataset inflates beyond {max_size} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise InvalidDatasetError(f"deflated dataset is corrupt: {exc}") from exc
    if not inflater.eof:
        raise InvalidDatasetError("deflated dataset is truncated")
    return out


def convert_dataset_bytes(data: bytes | bytearray | memoryview, from_ts: str, to_ts: str) -> bytes:
    """Re-encode dataset bytes from one transfer syntax to another (decode + encode).

    Works among the native syntaxes (implicit/explicit little endian, explicit big endian,
    deflated), and for datasets without pixel data into or out of encapsulated ones;
    otherwise raises :class:`~aiodimse.errors.TransferSyntaxError`.
    """
    if from_ts == to_ts:
        return bytes(data)
    _ts_or_error(to_ts)
    return encode_dataset(decode_dataset(data, from_ts), to_ts)
