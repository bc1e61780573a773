"""What the archive reads of a stored instance: its header, groups up to 0020 (PS3.5 7.1).

The index needs some twenty text elements of each instance, all in groups 0008 to 0020.
:func:`read_header` walks the element headers of the file's first bytes itself and keeps
only those elements, raw (pydicom decodes them later, in the data set's character set). It
hands the file to pydicom instead when the walk cannot be sure: a Deflated data set, a
header longer than what was read, an element of undefined length other than a sequence, or
anything that does not parse.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Collection
from io import BytesIO
from typing import Final

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.values import convert_string

from .. import uids
from ..config import MAX_INFLATED_HEADER
from ..dicomfile import (
    ITEM_END_TAG,
    ITEM_TAG,
    LONG_VRS,
    SEQUENCE_END_TAG,
    UNDEFINED_LENGTH,
    ElementHeaders,
    NotDicomError,
    Part10Info,
    read_part10,
)

__all__ = ["HEADER_BYTES", "read_header"]

#: How much of a data set the walk reads: a usual header is a few KiB.
HEADER_BYTES: Final = 64 * 1024
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
#: PS3.5 6.2: the VRs with a 16-bit length (the others are dicomfile.LONG_VRS).
_SHORT_VRS: Final = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT"}
    | {b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)


def read_header(
    path: str | os.PathLike[str],
    tags: Collection[int],
    *,
    max_inflated: int = MAX_INFLATED_HEADER,
) -> tuple[Dataset, str]:
    """A Part 10 file's header, groups up to 0020 (the pixel data is never read), and its
    transfer syntax. The header holds at least the elements ``tags`` (all in groups up to
    0020) and Specific Character Set: the walk keeps only those, pydicom's reading (when
    the walk hands over, and for Deflated) all of it.

    InvalidDicomError if it is not a Part 10 file. A Deflated data set is inflated only as
    far as its header, at most ``max_inflated`` bytes (ValueError past it): pydicom would
    inflate all of it, and a small file can inflate to gigabytes."""
    try:
        info = read_part10(path, whole=True)  # (a small file: one read serves both)
    except NotDicomError as exc:
        raise InvalidDicomError(str(exc)) from None
    syntax = uids.transfer_syntax(info.transfer_syntax_uid)
    if syntax is not None and syntax.is_deflated:
        return _read_deflated_header(path, info, max_inflated), info.transfer_syntax_uid
    implicit = syntax is not None and syntax.is_implicit_vr
    little = syntax is None or syntax.is_little_endian
    wanted = {*tags, _SPECIFIC_CHARACTER_SET}
    start = info.dataset_offset
    if info.content is not None:
        head = info.content[start : start + HEADER_BYTES]
    else:
        with open(path, "rb") as fp:
            fp.seek(start)
            head = fp.read(HEADER_BYTES)
    elements = _walk_header(head, start + len(head) >= info.file_size, implicit, little, wanted)
    if elements is not None and _charset_readable(elements, little):
        return Dataset(elements), info.transfer_syntax_uid
    with open(path, "rb") as fp:  # pydicom reads it (and says what is wrong with it)
        fp.seek(start)
        ds = read_dataset(fp, implicit, little, stop_when=_after_group_0020)
    return ds, info.transfer_syntax_uid


def _charset_readable(elements: dict[BaseTag, DataElement | RawDataElement], little: bool) -> bool:
    """Whether pydicom's reader would take the Specific Character Set found: it converts
    the value as it reads, and refuses the data set when it cannot (a null in it, another
    VR than CS...)."""
    element = elements.get(BaseTag(_SPECIFIC_CHARACTER_SET))
    if element is None:
        return True
    if element.VR not in (None, "CS"):
        return False  # (pydicom would convert it as that VR: numbers, not names)
    try:
        convert_encodings(convert_string(element.value or b"", little))
    except Exception:
        return False  # pydicom's reader says what is wrong with it
    return True


def _after_group_0020(tag: BaseTag, vr: str | None, length: int) -> bool:
    return bool(tag.group > 0x0020)


def _walk_header(
    data: bytes, whole: bool, implicit: bool, little: bool, wanted: Collection[int]
) -> dict[BaseTag, DataElement | RawDataElement] | None:
    """The ``wanted`` top-level elements before group 0021, raw; None when the walk cannot
    tell (``data`` ends first and is not ``whole``, a value runs past it, an element of
    undefined length is not a sequence, a VR it does not know)."""
    layout = ElementHeaders.of(little)
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    pos, end = 0, len(data)
    while pos + 8 <= end:
        vr: bytes | None
        if implicit:
            group, element, length = layout.implicit(data, pos)
            vr, start = None, pos + 8
        else:
            group, element, raw_vr, length = layout.explicit(data, pos)
            vr, start = raw_vr, pos + 8
            if raw_vr in LONG_VRS:
                if pos + 12 > end:
                    return None
                (length,) = layout.long_length(data, pos + 8)
                start = pos + 12
            elif raw_vr not in _SHORT_VRS:
                return None  # not a VR this walk knows: pydicom will judge
        if group > 0x0020:
            return elements  # (an item tag, FFFE, ends it too: as in pydicom's reading)
        if length == UNDEFINED_LENGTH:
            if vr not in (None, b"SQ"):
                return None  # (UN of undefined length holds implicit VR items)
            after = _after_sequence(data, start, implicit, layout)
            if after is None:
                return None
            pos = after
            continue
        pos = start + length  # (past ``end``: the loop stops, and the last check fails)
        tag = (group << 16) | element
        if tag in wanted:
            key = BaseTag(tag)
            elements[key] = RawDataElement(
                key,
                None if vr is None else vr.decode("ascii"),
                length,
                data[start:pos],
                start,
                implicit,
                little,
            )
    # The data ended before group 0021: a whole data set without pixel data is fine.
    return elements if whole and pos == end else None


def _after_sequence(data: bytes, pos: int, implicit: bool, layout: ElementHeaders) -> int | None:
    """Where a sequence of undefined length whose first item starts at ``pos`` ends: after
    its Sequence Delimitation Item. None if ``data`` ends first or its items do not parse.
    Nested sequences and items of undefined length are followed (a stack)."""
    end = len(data)
    # What is open: "S" a sequence (items until a sequence delimiter), "I" an item of
    # undefined length (elements until an item delimiter).
    stack = ["S"]
    while stack:
        if pos + 8 > end:
            return None
        if stack[-1] == "S":
            group, element, length = layout.implicit(data, pos)
            pos += 8
            tag = (group << 16) | element
            if tag == SEQUENCE_END_TAG:
                stack.pop()
            elif tag != ITEM_TAG:
                return None
            elif length == UNDEFINED_LENGTH:
                stack.append("I")
            else:
                pos += length
            continue
        raw_vr = None
        if implicit:
            group, element, length = layout.implicit(data, pos)
            pos += 8
        else:
            group, element, raw_vr, length = layout.explicit(data, pos)
            pos += 8
            if group == 0xFFFE:
                pass  # (an item tag has no VR, and only its delimiter may end an item)
            elif raw_vr in LONG_VRS:
                if pos + 4 > end:
                    return None
                (length,) = layout.long_length(data, pos)
                pos += 4
            elif raw_vr not in _SHORT_VRS:
                return None
        if group == 0xFFFE:
            if (group << 16) | element != ITEM_END_TAG:
                return None
            stack.pop()
        elif length == UNDEFINED_LENGTH:
            if raw_vr == b"UN":
                return None  # (its items are implicit VR: see _walk_header)
            stack.append("S")
        else:
            pos += length
    return pos


def _read_deflated_header(
    path: str | os.PathLike[str], info: Part10Info, max_inflated: int
) -> Dataset:
    """Inflate a Deflated data set piece by piece until its header (groups up to 0020)
    has been read."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = bytearray()
    stopped: list[bool] = []

    def stop(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag.group > 0x0020:
            stopped.append(True)
            return True
        return False

    with open(path, "rb") as fp:
        fp.seek(info.dataset_offset)
        pending = b""
        while True:
            if not pending:
                pending = fp.read(1 << 16)
            room = max_inflated - len(inflated)
            if room <= 0:
                raise ValueError(
                    f"the Deflated header inflates beyond {max_inflated} bytes before group 0020"
                )
            # Grow geometrically: each try parses all that is inflated so far.
            inflated += inflater.decompress(pending, min(room, max(1 << 16, len(inflated))))
            pending = inflater.unconsumed_tail
            finished = inflater.eof or (not pending and fp.peek(1) == b"")
            stopped.clear()
            try:
                ds = read_dataset(BytesIO(bytes(inflated)), False, True, stop_when=stop)
            except Exception:
                if finished:
                    raise
                continue  # an element cut by the end of what is inflated so far
            if stopped or finished:
                return ds
