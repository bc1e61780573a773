"""A raw DICOM peer for probing another implementation: it sends exactly the bytes it is
given and records, PDU by PDU, what comes back and when.

Nothing here negotiates, validates or answers for the caller: the fuzzer and the
conformance checks decide what to send and judge what they see. Every read is bounded
in time and in size (a peer cannot make us buffer more than ``max_pdu_length``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ..errors import PDUError
from ..pdu import PDU, decode_pdu
from ..pdu.reader import PDUReader

__all__ = ["CLOSED", "TIMEOUT", "RawSession", "Received"]

#: What :meth:`RawSession.receive` returns when the peer closed the connection.
CLOSED = "closed"
#: What :meth:`RawSession.receive` returns when nothing came within the bound.
TIMEOUT = "timeout"

#: The largest PDU a probe accepts from the peer (A-ASSOCIATE-AC with many contexts,
#: P-DATA of a generous peer): beyond it the read stops with an error, not an allocation.
DEFAULT_MAX_RECEIVED = 1 << 24


@dataclass(frozen=True)
class Received:
    """One whole PDU from the peer: its raw bytes, the decoded PDU (None when our codec
    rejects it: ``error`` says why), and the seconds since the session started."""

    raw: bytes
    pdu: PDU | None
    error: str | None
    at: float

    @property
    def pdu_type(self) -> int:
        return self.raw[0]


class RawSession:
    """One TCP connection to the peer, driven step by step.

    ``async with await RawSession.open(host, port) as s: await s.send(b"..."); r = await
    s.receive(1.0)``. ``receive`` returns a :class:`Received`, ``CLOSED`` or ``TIMEOUT``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_received: int = DEFAULT_MAX_RECEIVED,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = PDUReader(max_other_length=max_received)
        self._started = time.monotonic()
        self._eof = False
        self.sent_bytes = 0

    @classmethod
    async def open(
        cls, host: str, port: int, *, timeout: float = 5.0, max_received: int = DEFAULT_MAX_RECEIVED
    ) -> RawSession:
        """Connect (bounded by ``timeout``); OSError or TimeoutError when it cannot."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        return cls(reader, writer, max_received)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def send(self, data: bytes, *, timeout: float = 5.0) -> bool:
        """Write ``data``; False if the connection is gone or the peer stopped reading
        (the write did not drain within ``timeout``)."""
        if self._writer.is_closing():
            return False
        try:
            self._writer.write(data)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except (OSError, TimeoutError):
            return False
        self.sent_bytes += len(data)
        return True

    async def receive(self, timeout: float) -> Received | str:
        """The next whole PDU from the peer, ``CLOSED`` or ``TIMEOUT``.

        A PDU that declares more than the size bound ends the read as ``CLOSED`` after
        recording nothing: the peer sent more than any PDU we accept.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = self._frames.next_raw()
            except PDUError:
                self.close()
                return CLOSED
            if raw is not None:
                data = bytes(raw)
                try:
                    pdu: PDU | None = decode_pdu(data)
                    error = None
                except PDUError as exc:
                    pdu, error = None, str(exc)
                return Received(data, pdu, error, self.elapsed)
            if self._eof:
                return CLOSED
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMEOUT
            try:
                async with asyncio.timeout(left):
                    chunk = await self._reader.read(1 << 16)
            except TimeoutError:
                return TIMEOUT
            except OSError:
                self._eof = True
                continue
            if not chunk:
                self._eof = True
            else:
                self._frames.feed(chunk)

    async def receive_all(self, timeout: float, *, limit: int = 1000) -> list[Received | str]:
        """Everything the peer sends until it closes, goes quiet for ``timeout``, or
        ``limit`` PDUs have come; the last entry is ``CLOSED`` or ``TIMEOUT`` unless the
        limit was reached."""
        out: list[Received | str] = []
        while len(out) < limit:
            item = await self.receive(timeout)
            out.append(item)
            if isinstance(item, str):
                break
        return out

    def half_close(self) -> None:
        """End our side of the stream (the peer reads EOF), keep reading theirs."""
        if self._writer.can_write_eof() and not self._writer.is_closing():
            try:
                self._writer.write_eof()
            except OSError:
                pass

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()

    async def __aenter__(self) -> RawSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
