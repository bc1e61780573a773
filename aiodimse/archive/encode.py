"""Response identifiers encoded directly from their text values, without pydicom.

A C-FIND response identifier of the archive is a flat list of short text elements; writing
it element by element (PS3.5 7.1: tag, VR, length, value) is many times faster than
building a pydicom Dataset and writing that, and C-FIND throughput is mostly this cost.
Deflated and unknown transfer syntaxes are left to pydicom (the caller falls back).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from ..uids import TransferSyntax

__all__ = ["encode_identifier"]

# PS3.5 7.1.2: VRs with a 2-byte reserved field and a 32-bit length in explicit VR.
_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_UTF8_TERM: Final = "ISO_IR 192"  # PS3.3 C.12.1.1.2: UTF-8


def encode_identifier(
    values: Sequence[tuple[int, str, str | None]], utf8: bool, syntax: TransferSyntax
) -> bytes | None:
    """Encode (tag, VR, text or None) elements, sorted by tag, in ``syntax``; with ``utf8``
    the text is UTF-8 and Specific Character Set (0008,0005) says so. None when ``syntax``
    is deflated or encapsulated-only, or a value does not fit its VR's length field."""
    if syntax.is_deflated:
        return None
    implicit = syntax.is_implicit_vr
    order = "<" if syntax.is_little_endian else ">"
    short_header = struct.Struct(f"{order}HH2sH")
    long_header = struct.Struct(f"{order}HH2s2xI")
    implicit_header = struct.Struct(f"{order}HHI")
    out = bytearray()
    codec = "utf-8" if utf8 else "ascii"
    elements = values
    if utf8:
        elements = [(_SPECIFIC_CHARACTER_SET, "CS", _UTF8_TERM), *values]
    for tag, vr, text in elements:
        if text is None:
            raw = b""
        else:
            raw = text.encode(codec)
            if len(raw) & 1:
                raw += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: even length
        group, element = tag >> 16, tag & 0xFFFF
        if implicit:
            out += implicit_header.pack(group, element, len(raw))
        elif vr in _LONG_VRS:
            out += long_header.pack(group, element, vr.encode("ascii"), len(raw))
        else:
            if len(raw) > 0xFFFE:
                return None
            out += short_header.pack(group, element, vr.encode("ascii"), len(raw))
        out += raw
    return bytes(out)
