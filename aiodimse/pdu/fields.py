"""Shared pieces of the PDU codec: header layouts, AE title and UID fields, items (PS3.8 9.3.1)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..enums import (
    ItemType,
)
from ..errors import (
    InvalidPDUParameterValue,
)

#: PS3.7 Annex A.2.1: the only application context name DICOM defines.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

PDU_HEADER = struct.Struct(">BBL")  # PDU-type, reserved, PDU-length (PS3.8 9.3.1)
ITEM_HEADER = struct.Struct(">BBH")  # item-type, reserved, item-length
ASSOC_FIXED = struct.Struct(">HH16s16s32s")  # protocol version, reserved, called, calling, reserved
PDV_HEADER = struct.Struct(">LBB")  # item-length, presentation-context-ID, message control header
U16 = struct.Struct(">H")
U32 = struct.Struct(">L")
PDATA_PDV_HEADER = struct.Struct(">BBLLBB")  # P-DATA-TF header + one PDV item header

#: Upper bound of a non-P-DATA PDU accepted by default (an A-ASSOCIATE-RQ with every storage
#: class and many transfer syntaxes is far below this).
DEFAULT_MAX_ASSOCIATION_PDU = 1 << 20


# ---------------------------------------------------------------------------------------
# small encoding helpers


def encode_ae(title: str) -> bytes:
    """An AE title field: 16 bytes, padded with spaces (PS3.8 9.3.2)."""
    raw = title.encode("ascii", "replace")
    if len(raw) > 16:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    return raw.ljust(16, b" ")


def decode_ae(raw: bytes) -> str:
    # PS3.8 9.3.2: leading and trailing spaces are not significant; trailing ones are padding.
    return raw.decode("latin-1").rstrip(" \x00")


def uid_bytes(uid: str) -> bytes:
    return uid.encode("ascii", "replace")


def decode_uid(raw: bytes | memoryview) -> str:
    # PS3.8 Annex F: UIDs in PDUs are not padded, but some implementations add a trailing NUL.
    return bytes(raw).decode("latin-1").rstrip("\x00 ")


KNOWN_ITEMS = frozenset(int(t) for t in ItemType)


def encode_item(item_type: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} body of {len(body)} bytes exceeds 65535")
    return ITEM_HEADER.pack(item_type, 0, len(body)) + body


def length_value(value: bytes) -> bytes:
    """A 2-byte big-endian length followed by the value (role selection, extended negotiation)."""
    return U16.pack(len(value)) + value


class Cursor:
    """Reads length-prefixed fields from a buffer, raising PDUError rather than IndexError."""

    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes | memoryview, what: str, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise InvalidPDUParameterValue(
                f"{self.what}: needs {n} bytes at offset {self.pos}, "
                f"only {self.end - self.pos} left"
            )
        start = self.pos
        self.pos += n
        return memoryview(self.data)[start : self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        b = self.take(2)
        return (b[0] << 8) | b[1]

    def lv(self) -> memoryview:
        return self.take(self.u16())


def iter_items(data: bytes | memoryview, what: str) -> Iterator[tuple[int, memoryview]]:
    """Split a variable field into (item-type, item body) pairs (PS3.8 9.3.2.x headers)."""
    cur = Cursor(data, what)
    while cur.remaining():
        if cur.remaining() < 4:
            raise InvalidPDUParameterValue(f"{what}: {cur.remaining()} trailing bytes, not an item")
        item_type, _reserved, length = ITEM_HEADER.unpack(cur.take(4))
        yield item_type, cur.take(length)
