"""Whether a Part 10 file's data set is whole, without decoding it (PS3.5 7.1, 7.5).

A copy cut short (``head -c 3000 ct.dcm``) still has a valid preamble and file meta; only
walking its element headers to the end shows that its last element is missing bytes.
"""

from __future__ import annotations

import io
import mmap
import os
import zlib
from typing import BinaryIO

from .dicomfile import (
    ITEM_END_TAG,
    ITEM_TAG,
    LONG_VRS,
    SEQUENCE_END_TAG,
    UNDEFINED_LENGTH,
    ElementHeaders,
    NotDicomError,
    Part10Info,
    PathLike,
)
from .uids import transfer_syntax

__all__ = ["TruncatedDatasetError", "check_complete"]


class TruncatedDatasetError(NotDicomError):
    """A Part 10 file whose data set ends before its last element does (a cut-short copy)."""


#: The element numbers of group FFFE: item, item delimiter, sequence delimiter.
_DELIMITERS = frozenset(tag & 0xFFFF for tag in (ITEM_TAG, ITEM_END_TAG, SEQUENCE_END_TAG))


def check_complete(path: PathLike, info: Part10Info) -> None:
    """Walk the data set's element headers (PS3.5 7.1, 7.5) without decoding any value,
    and raise :class:`TruncatedDatasetError` if an element, item or sequence runs past the
    end of the file. A deflated data set is inflated (and thrown away) to check that its
    stream is whole."""
    ts = transfer_syntax(info.transfer_syntax_uid)
    name = os.fspath(path)
    explicit = ts is None or not ts.is_implicit_vr
    order = "<" if ts is None or ts.is_little_endian else ">"
    content = info.content
    if content is not None:  # read whole already (read_part10(..., whole=True))
        if ts is not None and ts.is_deflated:
            _check_deflated(io.BytesIO(content[info.dataset_offset :]), name)
        elif len(content) > info.dataset_offset:
            _walk(content, name, info.dataset_offset, len(content), explicit, order)
        return
    with open(name, "rb") as fp:
        if ts is not None and ts.is_deflated:
            fp.seek(info.dataset_offset)
            _check_deflated(fp, name)
            return
        size = os.fstat(fp.fileno()).st_size
        if size <= info.dataset_offset:
            return  # an empty data set
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as view:
            _walk(view, name, info.dataset_offset, size, explicit, order)


def _check_deflated(fp: BinaryIO, name: str) -> None:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    while chunk := fp.read(1 << 20):
        try:
            inflater.decompress(chunk, 1 << 20)
            # (zlib may keep a byte in unconsumed_tail once the stream has ended)
            while inflater.unconsumed_tail and not inflater.eof:
                inflater.decompress(inflater.unconsumed_tail, 1 << 20)
        except zlib.error as exc:
            raise TruncatedDatasetError(f"{name}: the deflated data set is broken: {exc}") from None
        if inflater.eof:
            return
    raise TruncatedDatasetError(f"{name}: the deflated data set ends early")


def _walk(
    data: mmap.mmap | bytes, name: str, pos: int, end: int, explicit: bool, order: str
) -> None:
    """Element headers in order from ``pos``; values skipped. Sequences and encapsulated
    pixel data of undefined length are followed item by item (a stack of what is open)."""
    headers = ElementHeaders.of(order == "<")
    header, implicit, long_length = headers.explicit, headers.implicit, headers.long_length
    long_vrs = LONG_VRS
    # What is open: "S" a sequence (items until a sequence delimiter), "I" an item of
    # undefined length (elements until an item delimiter).
    stack: list[str] = []
    group = element = -1
    cut = False
    while stack or pos < end:
        if pos + 8 > end:
            cut = True
            break
        if stack and stack[-1] == "S":
            group, element, length = implicit(data, pos)
            tag = (group << 16) | element
            pos += 8
            if tag == SEQUENCE_END_TAG:
                stack.pop()
            elif tag != ITEM_TAG:
                raise TruncatedDatasetError(
                    f"{name}: expected an item at byte {pos - 8}, found ({group:04X},{element:04X})"
                )
            elif length == UNDEFINED_LENGTH:
                stack.append("I")
            else:
                pos += length
            continue
        if explicit:
            group, element, vr, length = header(data, pos)
            pos += 8
            if group == 0xFFFE and element in _DELIMITERS:
                length = implicit(data, pos - 8)[2]  # an item or delimiter has no VR
            elif vr in long_vrs:
                if pos + 4 > end:
                    cut = True
                    break
                (length,) = long_length(data, pos)
                pos += 4
            else:
                pos += length  # most elements: a 16-bit length, never undefined
                continue
        else:
            group, element, length = implicit(data, pos)
            pos += 8
        if group == 0xFFFE and element == ITEM_END_TAG & 0xFFFF and stack:
            stack.pop()  # the end of an item of undefined length
        elif length == UNDEFINED_LENGTH:
            stack.append("S")  # a sequence, or encapsulated pixel data: items follow
        else:
            pos += length
    if pos <= end and not stack and not cut:
        return
    where = f"in ({group:04X},{element:04X})" if group >= 0 else "before its first element"
    short = f", {pos - end} bytes short" if pos > end else ""
    raise TruncatedDatasetError(f"{name}: the data set ends early, {where}{short}")
