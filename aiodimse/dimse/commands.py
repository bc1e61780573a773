"""DIMSE-C command sets (PS3.7 9.3 and Annex E): frozen messages and their group 0000 codec.

A command set is always encoded in implicit VR little endian (PS3.7 6.3.1), as group 0000
elements in ascending order, the Command Group Length (0000,0000) first. This codec is
hand-written with :mod:`struct`: it runs for every message on the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar, Final, TypeAlias

from ..errors import DIMSEError
from ..uids import VERIFICATION_SOP_CLASS

__all__ = [
    "DATASET_PRESENT",
    "MESSAGE_TYPES",
    "NO_DATASET",
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "CommandField",
    "Message",
    "Priority",
    "Request",
    "Response",
    "decode_command",
    "encode_command",
]


class CommandField(IntEnum):
    """PS3.7 E.1: values of Command Field (0000,0100) for the DIMSE-C services."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


class Priority(IntEnum):
    """PS3.7 E.1: Priority (0000,0700)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


# PS3.7 E.1: Command Data Set Type (0000,0800). 0x0101 means "no data set"; any other
# value means one follows. We send 0x0001, as DCMTK (DIMSE_DATASET_PRESENT) and
# pynetdicom do, so that peers that compare against a specific value are satisfied.
NO_DATASET: Final = 0x0101
DATASET_PRESENT: Final = 0x0001

# -- messages (PS3.7 Tables 9.3-1 to 9.3-14) -----------------------------------------------
#
# Fields that a table marks optional (U) or conditional (C) are None when absent. The
# codec does not police values (priorities, UID grammar, AE title length): a message that
# is structurally encodable can be built and sent, so that peers can be tested with wrong
# values. The layers above validate what they accept.


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRQ:
    """C-ECHO-RQ (PS3.7 Table 9.3-12)."""

    command_field: ClassVar[CommandField] = CommandField.C_ECHO_RQ
    service: ClassVar[str] = "C-ECHO"
    is_request: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRSP:
    """C-ECHO-RSP (PS3.7 Table 9.3-13)."""

    command_field: ClassVar[CommandField] = CommandField.C_ECHO_RSP
    service: ClassVar[str] = "C-ECHO"
    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = None
    has_dataset: bool = False
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRQ:
    """C-STORE-RQ (PS3.7 Table 9.3-1)."""

    command_field: ClassVar[CommandField] = CommandField.C_STORE_RQ
    service: ClassVar[str] = "C-STORE"
    is_request: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRSP:
    """C-STORE-RSP (PS3.7 Table 9.3-2)."""

    command_field: ClassVar[CommandField] = CommandField.C_STORE_RSP
    service: ClassVar[str] = "C-STORE"
    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    has_dataset: bool = False
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRQ:
    """C-FIND-RQ (PS3.7 Table 9.3-3); the identifier is the data set."""

    command_field: ClassVar[CommandField] = CommandField.C_FIND_RQ
    service: ClassVar[str] = "C-FIND"
    is_request: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRSP:
    """C-FIND-RSP (PS3.7 Table 9.3-4); pending responses carry a match (set has_dataset)."""

    command_field: ClassVar[CommandField] = CommandField.C_FIND_RSP
    service: ClassVar[str] = "C-FIND"
    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = None
    has_dataset: bool = False
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRQ:
    """C-GET-RQ (PS3.7 Table 9.3-6)."""

    command_field: ClassVar[CommandField] = CommandField.C_GET_RQ
    service: ClassVar[str] = "C-GET"
    is_request: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRSP:
    """C-GET-RSP (PS3.7 Table 9.3-7); the data set, if any, lists failed SOP instances."""

    command_field: ClassVar[CommandField] = CommandField.C_GET_RSP
    service: ClassVar[str] = "C-GET"
    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRQ:
    """C-MOVE-RQ (PS3.7 Table 9.3-9)."""

    command_field: ClassVar[CommandField] = CommandField.C_MOVE_RQ
    service: ClassVar[str] = "C-MOVE"
    is_request: ClassVar[bool] = True

    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRSP:
    """C-MOVE-RSP (PS3.7 Table 9.3-10); the data set, if any, lists failed SOP instances."""

    command_field: ClassVar[CommandField] = CommandField.C_MOVE_RSP
    service: ClassVar[str] = "C-MOVE"
    is_request: ClassVar[bool] = False

    message_id_being_responded_to: int
    status: int = 0x0000
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False
    error_comment: str | None = None
    offending_element: tuple[int, ...] | None = None
    error_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CCancelRQ:
    """C-CANCEL-RQ (PS3.7 Table 9.3-5/9.3-8/9.3-11): cancels a FIND, GET or MOVE."""

    command_field: ClassVar[CommandField] = CommandField.C_CANCEL_RQ
    service: ClassVar[str] = "C-CANCEL"
    is_request: ClassVar[bool] = True

    message_id_being_responded_to: int
    has_dataset: bool = False


Request: TypeAlias = CEchoRQ | CStoreRQ | CFindRQ | CGetRQ | CMoveRQ | CCancelRQ
Response: TypeAlias = CEchoRSP | CStoreRSP | CFindRSP | CGetRSP | CMoveRSP
Message: TypeAlias = Request | Response

MESSAGE_TYPES: Final[dict[int, type[Message]]] = {
    cls.command_field: cls
    for cls in (
        CEchoRQ,
        CEchoRSP,
        CStoreRQ,
        CStoreRSP,
        CFindRQ,
        CFindRSP,
        CGetRQ,
        CGetRSP,
        CMoveRQ,
        CMoveRSP,
        CCancelRQ,
    )
}

# -- element layout ----------------------------------------------------------------------

# Kinds of value (the VRs of PS3.7 Annex E).
_UI, _US, _AE, _LO, _AT = range(5)

# attribute -> (element number in group 0000, kind); PS3.7 Table E.1-1.
_ELEMENTS: Final[dict[str, tuple[int, int]]] = {
    "affected_sop_class_uid": (0x0002, _UI),
    "message_id": (0x0110, _US),
    "message_id_being_responded_to": (0x0120, _US),
    "move_destination": (0x0600, _AE),
    "priority": (0x0700, _US),
    "status": (0x0900, _US),
    "offending_element": (0x0901, _AT),
    "error_comment": (0x0902, _LO),
    "error_id": (0x0903, _US),
    "affected_sop_instance_uid": (0x1000, _UI),
    "number_of_remaining_suboperations": (0x1020, _US),
    "number_of_completed_suboperations": (0x1021, _US),
    "number_of_failed_suboperations": (0x1022, _US),
    "number_of_warning_suboperations": (0x1023, _US),
    "move_originator_ae_title": (0x1030, _AE),
    "move_originator_message_id": (0x1031, _US),
}
_COMMAND_FIELD: Final = 0x0100
_DATA_SET_TYPE: Final = 0x0800

# Per message type: its fields in ascending element order as (attribute, element, kind,
# required). The Command Field and Data Set Type are written from the class and from
# has_dataset; they have no entry here.
_Spec = tuple[tuple[str, int, int, bool], ...]


def _spec(cls: type[Message], required: tuple[str, ...]) -> _Spec:
    names = [f.name for f in fields(cls) if f.name != "has_dataset"]
    rows = [(n, *_ELEMENTS[n], n in required) for n in names]
    rows.sort(key=lambda row: row[1])
    return tuple(rows)


_RSP_REQUIRED: Final = ("message_id_being_responded_to", "status")
_SPECS: Final[dict[type[Message], _Spec]] = {
    CEchoRQ: _spec(CEchoRQ, ("message_id", "affected_sop_class_uid")),
    CEchoRSP: _spec(CEchoRSP, _RSP_REQUIRED),
    CStoreRQ: _spec(
        CStoreRQ,
        ("message_id", "affected_sop_class_uid", "affected_sop_instance_uid", "priority"),
    ),
    CStoreRSP: _spec(CStoreRSP, _RSP_REQUIRED),
    CFindRQ: _spec(CFindRQ, ("message_id", "affected_sop_class_uid", "priority")),
    CFindRSP: _spec(CFindRSP, _RSP_REQUIRED),
    CGetRQ: _spec(CGetRQ, ("message_id", "affected_sop_class_uid", "priority")),
    CGetRSP: _spec(CGetRSP, _RSP_REQUIRED),
    CMoveRQ: _spec(
        CMoveRQ, ("message_id", "affected_sop_class_uid", "priority", "move_destination")
    ),
    CMoveRSP: _spec(CMoveRSP, _RSP_REQUIRED),
    CCancelRQ: _spec(CCancelRQ, ("message_id_being_responded_to",)),
}

# -- encoding ------------------------------------------------------------------------------

_HEADER: Final = struct.Struct("<HHI")  # implicit VR: group, element, 32-bit length
_US_ELEMENT: Final = struct.Struct("<HHIH")
_UL_ELEMENT: Final = struct.Struct("<HHII")
_pack_header = _HEADER.pack
_pack_us = _US_ELEMENT.pack


def _text(value: str, pad: bytes, what: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise DIMSEError(f"{what} {value!r} is not ASCII (PS3.7 6.3.1)") from None
    if len(raw) & 1:
        raw += pad
    return raw


def _encode_element(elem: int, kind: int, value: object, attr: str) -> bytes:
    if kind == _US:
        if not isinstance(value, int):
            raise DIMSEError(f"{attr} must be an int, not {type(value).__name__}")
        if not 0 <= value <= 0xFFFF:
            raise DIMSEError(f"{attr}={value} does not fit an US value")
        return _pack_us(0, elem, 2, value)
    if kind == _UI:
        # PS3.5 9.1: UIDs are padded to even length with a single NUL.
        raw = _text(_as_str(value, attr), b"\x00", attr)
    elif kind == _AE:
        raw = _text(_as_str(value, attr), b" ", attr)  # PS3.5 6.2: AE padded with space
    elif kind == _LO:
        raw = _as_str(value, attr).encode("ascii", "replace")
        if len(raw) & 1:
            raw += b" "
    else:  # _AT, PS3.5 6.2: each tag as two 16-bit little endian values (group, element)
        if not isinstance(value, tuple):
            raise DIMSEError(f"{attr} must be a tuple of tags")
        if not value:
            return b""
        try:
            raw = b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in value)
        except (struct.error, TypeError):
            raise DIMSEError(f"{attr}={value!r} holds a value that is not a tag") from None
    return _pack_header(0, elem, len(raw)) + raw


def _as_str(value: object, attr: str) -> str:
    if not isinstance(value, str):
        raise DIMSEError(f"{attr} must be a str, not {type(value).__name__}")
    return value


def encode_command(msg: Message) -> bytes:
    """The command set of ``msg``: group 0000, implicit VR little endian, length first."""
    spec = _SPECS.get(type(msg))
    if spec is None:
        raise DIMSEError(f"not a DIMSE-C message: {type(msg).__name__}")
    parts: list[bytes] = []
    append = parts.append
    command_done = dst_done = False
    for attr, elem, kind, _required in spec:
        # Command Field (0100) and Data Set Type (0800) go where ascending order puts them.
        if not command_done and elem > _COMMAND_FIELD:
            append(_pack_us(0, _COMMAND_FIELD, 2, msg.command_field))
            command_done = True
        if not dst_done and elem > _DATA_SET_TYPE:
            append(
                _pack_us(0, _DATA_SET_TYPE, 2, DATASET_PRESENT if msg.has_dataset else NO_DATASET)
            )
            dst_done = True
        value = getattr(msg, attr)
        if value is not None:
            append(_encode_element(elem, kind, value, attr))
    if not command_done:
        append(_pack_us(0, _COMMAND_FIELD, 2, msg.command_field))
    if not dst_done:
        append(_pack_us(0, _DATA_SET_TYPE, 2, DATASET_PRESENT if msg.has_dataset else NO_DATASET))
    body = b"".join(parts)
    # PS3.7 E.1: (0000,0000) UL, the number of bytes that follow it in the group.
    return _UL_ELEMENT.pack(0, 0, 4, len(body)) + body


# -- decoding ------------------------------------------------------------------------------

_unpack_header = _HEADER.unpack_from
_unpack_us = struct.Struct("<H").unpack
_unpack_ul = struct.Struct("<I").unpack
_PRIORITIES: Final = {int(p): p for p in Priority}
_PRIORITY_ELEMENT: Final = 0x0700


def _decode_us(raw: bytes, attr: str) -> int:
    if len(raw) != 2:
        raise DIMSEError(f"{attr}: US value of length {len(raw)} (must be 2)")
    value: int = _unpack_us(raw)[0]
    return value


def _decode_value(raw: bytes, kind: int, attr: str) -> int | str | tuple[int, ...] | None:
    if kind == _US:
        return _decode_us(raw, attr)
    if kind in (_UI, _AE):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise DIMSEError(f"{attr}: value is not ASCII") from None
        # Trim the padding (NUL for UI, space for AE; tolerate either) - PS3.5 6.2, 9.1.
        return text.strip("\x00 ")
    if kind == _LO:
        return raw.decode("ascii", "replace").strip("\x00 ")
    # _AT
    if len(raw) % 4:
        raise DIMSEError(f"{attr}: AT value of length {len(raw)} (must be a multiple of 4)")
    if not raw:
        return None
    words = struct.unpack(f"<{len(raw) // 2}H", raw)
    return tuple((words[i] << 16) | words[i + 1] for i in range(0, len(words), 2))


def _skip_trailing_elements(buf: bytes, start: int, size: int) -> int:
    """Check that ``buf[start:size]`` is whole elements of groups after 0000; return start."""
    offset = start
    while offset < size:
        if size - offset < 8:
            raise DIMSEError(f"command set truncated in an element header at byte {offset}")
        group, elem, length = _unpack_header(buf, offset)
        offset += 8
        if group == 0x0000 or length > size - offset:
            raise DIMSEError(f"element ({group:04X},{elem:04X}) in a command set")
        offset += length
    return start


def decode_command(data: bytes | bytearray | memoryview) -> Message:
    """Parse a complete command set. Raises only :class:`~aiodimse.errors.DIMSEError`.

    Unknown group 0000 elements are skipped, and so are elements of later groups that
    follow the end of the group as its Command Group Length gives it (status detail some
    peers append). Any other element of another group, a duplicate,
    a truncated element, a wrong Command Group Length, an unknown Command Field, a value
    of the wrong length for its VR or a missing required field is an error.
    """
    buf = data if type(data) is bytes else bytes(data)
    size = len(buf)
    elements: dict[int, bytes] = {}
    offset = 0
    group_length: tuple[int, int] | None = None  # (declared value, offset where it counts)
    while offset < size:
        if size - offset < 8:
            raise DIMSEError(f"command set truncated in an element header at byte {offset}")
        group, elem, length = _unpack_header(buf, offset)
        offset += 8
        if group != 0x0000:
            # PS3.7 6.3.1: the command set holds group 0000 elements only.
            if group_length is None or group_length[0] != offset - 8 - group_length[1]:
                raise DIMSEError(f"element ({group:04X},{elem:04X}) in a command set")
            # DCMTK-based peers (Orthanc 1.10's C-GET SCP) append status detail such as
            # (0008,0058) after the group; the Command Group Length (PS3.7 E.1) says where
            # the command ends, so well-formed elements after it are skipped.
            size = _skip_trailing_elements(buf, offset - 8, size)
            break
        if length > size - offset:
            raise DIMSEError(
                f"element (0000,{elem:04X}) claims {length} bytes, {size - offset} remain"
            )
        if elem in elements:
            raise DIMSEError(f"element (0000,{elem:04X}) appears twice")
        raw = buf[offset : offset + length]
        offset += length
        elements[elem] = raw
        if elem == 0x0000:
            if length != 4:
                raise DIMSEError(f"Command Group Length of length {length} (must be 4)")
            group_length = (_unpack_ul(raw)[0], offset)
    if group_length is not None and group_length[0] != size - group_length[1]:
        raise DIMSEError(
            f"Command Group Length says {group_length[0]} bytes, "
            f"the group holds {size - group_length[1]}"
        )

    raw_field = elements.get(_COMMAND_FIELD)
    if raw_field is None:
        raise DIMSEError("command set without Command Field (0000,0100)")
    field = _decode_us(raw_field, "command_field")
    cls = MESSAGE_TYPES.get(field)
    if cls is None:
        raise DIMSEError(f"unknown Command Field 0x{field:04X}")

    raw_dst = elements.get(_DATA_SET_TYPE)
    if raw_dst is None:
        raise DIMSEError(f"{cls.__name__} without Command Data Set Type (0000,0800)")
    kwargs: dict[str, Any] = {"has_dataset": _decode_us(raw_dst, "has_dataset") != NO_DATASET}
    for attr, elem, kind, required in _SPECS[cls]:
        found = elements.get(elem)
        if found is None or (not found and kind in (_US, _AT) and not required):
            # Absent, or empty where empty means absent (a zero-length optional number).
            if required:
                raise DIMSEError(f"{cls.__name__} without {attr} (0000,{elem:04X})")
            continue
        if kind == _US and len(found) == 2:  # the common case, inline
            number: int = _unpack_us(found)[0]
            if elem == _PRIORITY_ELEMENT and number in _PRIORITIES:
                kwargs[attr] = _PRIORITIES[number]  # an unknown priority stays an int
            else:
                kwargs[attr] = number
        else:
            kwargs[attr] = _decode_value(found, kind, attr)
    return cls(**kwargs)
