"""Stream framing (:class:`PDUReader`) and the fast P-DATA encoding of the send path."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..enums import (
    PDUType,
)
from ..errors import (
    PDUTooLarge,
)
from .fields import (
    DEFAULT_MAX_ASSOCIATION_PDU,
    PDATA_PDV_HEADER,
    PDU_HEADER,
)
from .pdus import (
    PDU,
    AAbort,
    AAssociateRJ,
    PDataTF,
    decode_pdu,
)

# ---------------------------------------------------------------------------------------
# stream framing


class PDUReader:
    """Frames a byte stream into whole PDUs, whatever the chunk sizes fed in.

    ``max_pdata_length`` bounds the PDU-length of a P-DATA-TF (our advertised Maximum
    Length, PS3.8 Annex D.1; 0 = fall back to ``max_other_length``) and
    ``max_other_length`` that of every other PDU. Both are checked from the 6-byte header,
    *before* the body is buffered, so a peer cannot make us allocate what it only claims
    to send.
    """

    __slots__ = ("_chunks", "_offset", "_size", "max_other_length", "max_pdata_length")

    def __init__(
        self, max_pdata_length: int = 0, max_other_length: int = DEFAULT_MAX_ASSOCIATION_PDU
    ) -> None:
        # Received chunks are kept as they came (no copy into a growing buffer): a PDU that
        # lies within one chunk is returned as a view of it, one that spans chunks is
        # joined once.
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already returned
        self._size = 0  # bytes received and not yet returned
        self.max_pdata_length = max_pdata_length
        self.max_other_length = max_other_length

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if data:
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self._size += len(data)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as PDUs."""
        return self._size

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == PDUType.P_DATA_TF and self.max_pdata_length:
            return self.max_pdata_length
        return self.max_other_length

    def _take(self, n: int) -> bytes | memoryview:
        """Remove and return the next ``n`` buffered bytes (``n <= self._size``)."""
        chunks = self._chunks
        first = chunks[0]
        off = self._offset
        self._size -= n
        if len(first) - off >= n:
            if off == 0 and len(first) == n:
                chunks.popleft()
                return first
            end = off + n
            if end == len(first):
                chunks.popleft()
                self._offset = 0
            else:
                self._offset = end
            return memoryview(first)[off:end]
        parts: list[bytes | memoryview] = []
        while n:
            chunk = chunks[0]
            avail = len(chunk) - off
            if avail <= n:
                parts.append(memoryview(chunk)[off:] if off else chunk)
                chunks.popleft()
                n -= avail
                off = 0
            else:
                parts.append(memoryview(chunk)[off : off + n])
                off += n
                n = 0
        self._offset = off
        return b"".join(parts)

    def _header(self) -> tuple[int, int]:
        first = self._chunks[0]
        if len(first) - self._offset >= 6:
            pdu_type, _reserved, length = PDU_HEADER.unpack_from(first, self._offset)
        else:
            head = bytearray()
            off = self._offset
            for chunk in self._chunks:
                head += chunk[off : off + 6 - len(head)]
                off = 0
                if len(head) >= 6:
                    break
            pdu_type, _reserved, length = PDU_HEADER.unpack(head)
        return pdu_type, length

    def next_raw(self) -> bytes | memoryview | None:
        """The next whole PDU (header included), or None if more bytes are needed.

        Raises PDUTooLarge as soon as a header declares more than the limit.
        """
        size = self._size
        if size < 6:
            return None
        first = self._chunks[0]
        off = self._offset
        if len(first) - off >= 6:
            pdu_type, _reserved, length = PDU_HEADER.unpack_from(first, off)
        else:
            pdu_type, length = self._header()
        if pdu_type == 0x04 and self.max_pdata_length:
            limit = self.max_pdata_length
        else:
            limit = self.max_other_length
        if length > limit:
            raise PDUTooLarge(
                f"PDU 0x{pdu_type:02X} declares {length} bytes, more than the limit of {limit}"
            )
        end = off + 6 + length
        if size < end - off:
            return None
        if end <= len(first):
            # The common case: the whole PDU lies in the first chunk.
            self._size = size - (end - off)
            if end == len(first):
                self._chunks.popleft()
                self._offset = 0
                return first if off == 0 else memoryview(first)[off:]
            self._offset = end
            return memoryview(first)[off:end]
        return self._take(6 + length)

    def next_pdu(self) -> PDU | None:
        """The next whole decoded PDU, or None if more bytes are needed."""
        raw = self.next_raw()
        return None if raw is None else decode_pdu(raw)

    def __iter__(self) -> Iterator[PDU]:
        while (pdu := self.next_pdu()) is not None:
            yield pdu


# ---------------------------------------------------------------------------------------
# fast P-DATA encoding for the send path


def encode_pdata_header(context_id: int, control: int, data_length: int) -> bytes:
    """The 12 bytes that precede one PDV's data when a P-DATA-TF carries exactly one PDV."""
    return PDATA_PDV_HEADER.pack(
        PDUType.P_DATA_TF, 0, data_length + 6, data_length + 2, context_id, control
    )


def pdata_fragments(
    context_id: int,
    is_command: bool,
    data: bytes | memoryview,
    max_pdu_length: int,
    *,
    last: bool = True,
) -> Iterator[bytes | memoryview]:
    """Fragment a command or data set into P-DATA-TF PDUs, yielded as buffers to write.

    Each PDU carries one PDV whose P-DATA-TF variable field never exceeds ``max_pdu_length``
    (the peer's Maximum Length; 0 = unlimited). The final fragment has the last bit set
    (PS3.8 Annex E.2) unless ``last`` is False, which lets a caller stream a large data set
    in pieces (each piece but the final one should then be a multiple of
    ``max_pdu_length - 6`` bytes so that no PDU is under-filled).
    """
    base = 0x01 if is_command else 0x00
    view = data if isinstance(data, memoryview) else memoryview(data)
    total = len(view)
    if max_pdu_length:
        room = max_pdu_length - 6
        if room < 1 and total:
            raise ValueError(f"maximum PDU length {max_pdu_length} leaves no room for data")
        if room > 1:
            room &= ~1  # even-sized fragments: some peers refuse odd-length ones
    else:
        room = total
    if total <= room:
        yield encode_pdata_header(context_id, base | (0x02 if last else 0), total)
        if total:
            yield view
        return
    pos = 0
    while pos < total:
        end = min(pos + room, total)
        flag = 0x02 if last and end == total else 0
        yield encode_pdata_header(context_id, base | flag, end - pos)
        yield view[pos:end]
        pos = end


def pdu_summary(pdu: PDU) -> str:
    """A one-line human description of a PDU for logs."""
    if isinstance(pdu, PDataTF):
        parts = [
            f"ctx {i.context_id} {'cmd' if i.is_command else 'data'}"
            f"{' last' if i.is_last else ''} {len(i.data)}B"
            for i in pdu.items
        ]
        return "P-DATA-TF [" + ", ".join(parts) + "]"
    if isinstance(pdu, AAssociateRJ):
        return f"A-ASSOCIATE-RJ {pdu.result.name} {pdu.source.name} {pdu.reason_name}"
    if isinstance(pdu, AAbort):
        return f"A-ABORT {pdu.source.name} {pdu.reason_name}"
    return PDUType(pdu.pdu_type).name.replace("_", "-")
