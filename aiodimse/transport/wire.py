"""Outgoing P-DATA-TF PDUs laid out in contiguous buffers (pure: no event loop).

A data set is sent from memory or straight from a file (:class:`FileRegion`): each PDV
header is written in place and the data copied (or read, one vectored read per buffer)
right behind it, so the bytes are copied once on their way to the socket.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..pdu import encode_pdata_header

__all__ = ["UNLIMITED_ROOM", "WRITE_BATCH", "FileRegion", "WireData", "wire_images"]

#: Bytes written per batch before awaiting the transport's drain.
WRITE_BATCH = 4 * 1024 * 1024
#: PDV size when the peer sets no maximum length (PS3.8 D.1: 0 = unlimited).
UNLIMITED_ROOM = 1024 * 1024 - 6


@dataclass(frozen=True, slots=True)
class FileRegion:
    """A data set to send straight from a file: ``length`` bytes at ``offset``.

    ``pad`` adds one NUL after them (PS3.5 A.5: a deflated stream of odd length is padded).
    """

    path: str
    offset: int
    length: int
    pad: bool = False

    @property
    def size(self) -> int:
        return self.length + (1 if self.pad else 0)


#: A data set to send: a buffer, a file region, or an iterable of pieces.
WireData = bytes | bytearray | memoryview | FileRegion | Iterable[bytes | memoryview]


def wire_images(
    context_id: int,
    room: int,
    head: bytes,
    data: bytes | bytearray | memoryview | FileRegion,
    batch: int = WRITE_BATCH,
) -> Iterator[bytearray]:
    """The P-DATA-TF PDUs of a data set (preceded by the command's, ``head``), laid out in
    contiguous buffers of about ``batch`` bytes: each PDV header is written in place and
    the data copied (or read from the file, one vectored read per buffer) right behind it,
    so the data is copied once on its way to the socket and a batch needs one write."""
    total = data.size if isinstance(data, FileRegion) else len(data)
    fragments = max(1, -(-total // room))
    per_image = max(1, min(batch // room, _IOV_MAX))
    source = None if isinstance(data, FileRegion) else memoryview(data)
    fd = -1
    if isinstance(data, FileRegion):
        fd = os.open(data.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))  # closed below
    try:
        done = 0  # data bytes laid out so far
        fragment = 0
        while fragment < fragments:
            count = min(per_image, fragments - fragment)
            first = fragment == 0
            span = min(total - done, count * room)
            image = bytearray(span + 12 * count + (len(head) if first else 0))
            view = memoryview(image)
            pos = 0
            if first:
                view[: len(head)] = head
                pos = len(head)
            targets: list[memoryview] = []
            start = done
            for _ in range(count):
                size = min(room, total - done)
                last = fragment == fragments - 1
                view[pos : pos + 12] = encode_pdata_header(context_id, 0x02 if last else 0, size)
                pos += 12
                if source is not None:
                    view[pos : pos + size] = source[done : done + size]
                else:
                    targets.append(view[pos : pos + size])
                pos += size
                done += size
                fragment += 1
            if isinstance(data, FileRegion):
                _read_region(fd, targets, data, start)
            yield image
    finally:
        if fd >= 0:
            os.close(fd)


#: Buffers per vectored read (Linux IOV_MAX is 1024).
_IOV_MAX = 1024


def _read_region(fd: int, targets: list[memoryview], region: FileRegion, start: int) -> None:
    """Fill ``targets`` from ``region`` starting ``start`` bytes into it. The pad byte of a
    padded region lies past its length and stays 0 (the buffers start zeroed)."""
    wanted = max(0, min(sum(len(t) for t in targets), region.length - start))
    buffers: list[memoryview] = []
    left = wanted
    for target in targets:
        if left <= 0:
            break
        buffers.append(target[: min(len(target), left)])
        left -= len(buffers[-1])
    offset = region.offset + start
    while wanted:
        got = os.preadv(fd, buffers, offset)
        if got <= 0:
            raise OSError(f"{region.path}: the file ended {wanted} bytes early")
        wanted -= got
        offset += got
        # A short read: drop what was filled and go on with the rest.
        while got and buffers:
            if got >= len(buffers[0]):
                got -= len(buffers[0])
                buffers.pop(0)
            else:
                buffers[0] = buffers[0][got:]
                got = 0
