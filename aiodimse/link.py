"""The asyncio glue: one transport connection <-> the PS3.8 state machine <-> DIMSE messages.

This is the only module that touches sockets. :class:`AssociationLink` feeds received
bytes to the PDU reader and the state machine, carries out the machine's outputs, sends
DIMSE messages as P-DATA-TF PDUs with flow control, routes responses to the operation
waiting for them (by Message ID Being Responded To) and hands requests to the service
layer (``scp.py``). Everything is on the event loop; there are no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import ssl as _ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .dimse.assembler import MessageAssembler
from .dimse.commands import CCancelRQ, Message, encode_command
from .dimse.status import is_pending
from .enums import AbortReason, AbortSource
from .errors import (
    AiodimseError,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    AssociationTimeout,
    ConnectionLost,
    DIMSEError,
    PDUError,
)
from .pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUReader,
    decode_pdu,
    encode_pdata_header,
    pdata_fragments,
    pdu_summary,
)
from .ul.fsm import (
    CloseTransport,
    Event,
    Indicate,
    Primitive,
    Send,
    SendAbort,
    SendReleaseRP,
    SendReleaseRQ,
    StartARTIM,
    State,
    StateMachine,
    StopARTIM,
)
from .ul.negotiation import Negotiated, NegotiatedContext

__all__ = ["AssociationLink", "DataTarget", "FileRegion", "MemoryTarget", "Timeouts"]

log = logging.getLogger("aiodimse.association")

#: Our default Maximum Length (PS3.8 D.1): large PDUs mean fewer headers and system calls.
DEFAULT_MAX_PDU = 262_144
#: Data sets received above this size go to a temporary file rather than memory.
DEFAULT_MAX_IN_MEMORY = 32 * 1024 * 1024
#: How many unread responses (C-FIND matches) may queue before we stop reading the socket.
_RESPONSE_QUEUE_HIGH = 256
_RESPONSE_QUEUE_LOW = 64
#: Bytes written per batch before awaiting the transport's drain.
_WRITE_BATCH = 4 * 1024 * 1024
#: PDV size when the peer sets no maximum length (PS3.8 D.1: 0 = unlimited).
_UNLIMITED_ROOM = 1024 * 1024 - 6

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every wait on the network is bounded; None disables one (not recommended).

    ``connect``: TCP (and TLS) connection set-up. ``acse``: association negotiation and
    release, and the ARTIM timer (PS3.8 9.1.5). ``dimse``: waiting for each DIMSE response
    message (and for each further fragment once a message has started). ``idle``: an
    association with no traffic and nothing outstanding for this long is released.
    """

    connect: float | None = 30.0
    acse: float | None = 30.0
    dimse: float | None = 60.0
    idle: float | None = None


class DataTarget(Protocol):
    """Where the fragments of a received data set go as they arrive."""

    def write(self, data: bytes | memoryview) -> None: ...

    def discard(self) -> None: ...


class MemoryTarget:
    """Collects a data set in memory, spilling to an anonymous temporary file past a limit."""

    __slots__ = ("_file", "_parts", "limit", "size")

    def __init__(self, limit: int = DEFAULT_MAX_IN_MEMORY) -> None:
        self._parts: list[bytes | memoryview] = []
        self._file: IO[bytes] | None = None
        self.size = 0
        self.limit = limit

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        if self.size > self.limit:
            self._file = tempfile.TemporaryFile()
            for part in self._parts:
                self._file.write(part)
            self._parts = []

    def getvalue(self) -> bytes:
        if self._file is not None:
            self._file.seek(0)
            return self._file.read()
        parts = self._parts
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def open(self) -> IO[bytes]:
        """The data set as a binary file object of its own (closing it leaves the data set
        readable): the spill file opened again, or an in-memory copy."""
        if self._file is not None:
            self._file.flush()
            fp = os.fdopen(os.dup(self._file.fileno()), "rb")
            fp.seek(0)
            return fp
        import io

        return io.BytesIO(self.getvalue())

    def discard(self) -> None:
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None


#: Hints for the TLS failures people meet most (OpenSSL reason codes).
_TLS_HINTS = {
    "WRONG_VERSION_NUMBER": "is the peer listening without TLS?",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate; we sent none",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer did not accept our certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no common TLS version or cipher suite, or no certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version that both sides allow",
}


def _tls_reason(exc: OSError) -> str:
    """Why a TLS handshake or connection failed, in words (not an OpenSSL error string)."""
    if isinstance(exc, _ssl.SSLCertVerificationError):
        return f"the peer's certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, _ssl.SSLError) and exc.reason:
        hint = _TLS_HINTS.get(exc.reason)
        return exc.reason.lower().replace("_", " ") + (f" ({hint})" if hint else "")
    if not exc.args:
        # asyncio's handshake saw the connection close: the peer gave up on the handshake.
        return (
            "the peer closed the connection during the handshake (it may not accept our"
            " client certificate, or we sent none, or it does not speak TLS)"
        )
    return str(exc)


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


def _wire_images(
    context_id: int,
    room: int,
    head: bytes,
    data: bytes | bytearray | memoryview | FileRegion,
    batch: int = _WRITE_BATCH,
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


class _Protocol(asyncio.Protocol):
    """Forwards transport callbacks to the link (kept apart so the link's API stays clean)."""

    __slots__ = ("link",)

    def __init__(self, link: AssociationLink) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link._connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.link._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._connection_lost(exc)

    def pause_writing(self) -> None:
        self.link._pause_writing()

    def resume_writing(self) -> None:
        self.link._resume_writing()


class _Outgoing:
    """An operation we invoked, waiting for its response(s)."""

    __slots__ = ("abandoned", "context", "message_id", "pending", "queue", "service", "target")

    def __init__(self, message_id: int, context: NegotiatedContext, service: str) -> None:
        self.message_id = message_id
        self.context = context
        self.service = service
        self.queue: asyncio.Queue[tuple[Message, bytes | None] | BaseException] = asyncio.Queue()
        self.target: MemoryTarget | None = None
        self.pending: Message | None = None  # a response whose data set is arriving
        #: Nobody waits for the responses any more (the caller was cancelled): the final
        #: one completes the operation and frees its window slot.
        self.abandoned = False


class _Incoming:
    """A request the peer invoked, being received or performed."""

    __slots__ = ("cancelled", "context", "error", "message", "target", "task")

    def __init__(self, message: Message, context: NegotiatedContext) -> None:
        self.message = message
        self.context = context
        self.target: DataTarget | None = None
        self.task: asyncio.Task[None] | None = None
        self.cancelled = asyncio.Event()
        #: Set when storing the data set failed locally (disk full...): answered with a
        #: failure status, the association goes on.
        self.error: BaseException | None = None


class _NullTarget:
    """Swallows the rest of a data set whose real target failed."""

    def write(self, data: bytes | memoryview) -> None:
        pass

    def discard(self) -> None:
        pass


class _Window:
    """A counting semaphore for the asynchronous operations window that fails its waiters
    when the association ends (a plain Semaphore would leave them waiting forever)."""

    __slots__ = ("_error", "_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[asyncio.Future[None]] = []
        self._error: BaseException | None = None

    @property
    def full(self) -> bool:
        return self._free <= 0

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    async def acquire(self) -> None:
        if self._error is not None:
            raise self._error
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not waiter.cancelled() and waiter.exception() is None:
                self.release()  # we were handed a slot just as we were cancelled
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def close(self, error: BaseException) -> None:
        self._error = error
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(error)


class AssociationLink:
    """One association over one transport connection, either side (see module docstring)."""

    def __init__(
        self,
        *,
        local_ae: str,
        timeouts: Timeouts | None = None,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
    ) -> None:
        self.id = next(_ids)
        self.loop = asyncio.get_running_loop()
        self.timeouts = timeouts or Timeouts()
        self.local_ae = local_ae
        self.max_pdu = max_pdu
        self.max_in_memory = max_in_memory
        self.peer_ae = ""
        self.peer_address: tuple[str, int] | None = None
        #: On a TLS connection (PS3.15 B.9): the protocol version, and the peer's certificate
        #: as ssl.SSLSocket.getpeercert() gives it (None when the peer sent none).
        self.tls_version: str | None = None
        self.peer_certificate: dict[str, Any] | None = None
        self.negotiated: Negotiated | None = None
        self.request: AAssociateRQ | None = None
        self._fsm = StateMachine()
        # A peer may send up to the Maximum Length we advertised; 0 means "no limit", which
        # we still cap so that a lying header cannot make us allocate gigabytes.
        self._reader = PDUReader(max_pdata_length=max_pdu or (64 << 20))
        self._assembler: MessageAssembler | None = None
        self._transport: asyncio.Transport | None = None
        self._artim: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        # A message (or PDU) partly received: the time of its last byte, and the timer that
        # gives up on it after the DIMSE timeout.
        self._stall: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._last_received = 0.0
        self._established: asyncio.Future[Negotiated] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._end_reason: AiodimseError | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._send_lock = asyncio.Lock()
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: dict[int, _Incoming] = {}
        self._receiving: _Outgoing | _Incoming | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._message_ids = itertools.cycle(range(1, 0x10000))
        self._invoke_slots: _Window | None = None
        self._perform_slots: _Window | None = None
        self._reading_paused = False
        self._releasing = False
        self._released_by_peer = False

    # -- properties ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._fsm.state

    @property
    def is_established(self) -> bool:
        """True while DIMSE messages may be exchanged (Sta6)."""
        return self._fsm.state == State.STA6

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def end_reason(self) -> AiodimseError | None:
        """Why the association ended abnormally (None while open or after a clean release)."""
        return self._end_reason

    async def wait_closed(self) -> None:
        """Wait until the transport connection is closed, however the association ended."""
        await asyncio.shield(self._closed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {self.local_ae}<->{self.peer_ae} {self.state}>"

    # -- transport callbacks ---------------------------------------------------------------

    def _connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Without this every DIMSE message can wait for a delayed ACK (~40-200 ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1 << 20)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_address = (str(peer[0]), int(peer[1]))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            self.peer_certificate = ssl_object.getpeercert() or None
        if self._fsm.is_requestor:
            self._handle(Event.EVT2)
        else:
            self._handle(Event.EVT5)

    def _data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while self._transport is not None:
                raw = reader.next_raw()
                if raw is None:
                    break
                pdu = decode_pdu(raw)
                if type(pdu) is not PDataTF and log.isEnabledFor(logging.DEBUG):
                    log.debug("#%d received %s", self.id, pdu_summary(pdu))
                self._handle(self._fsm.receive_pdu_type(pdu.pdu_type), pdu)
        except (PDUError, DIMSEError) as exc:
            self._protocol_error(exc)
        except Exception as exc:
            log.exception("#%d internal error while receiving", self.id)
            self._abort_now(f"internal error: {exc!r}")
        if self._idle is not None:
            self._touch()
        assembler = self._assembler
        if assembler is not None and (not assembler.idle or reader.buffered):
            self._watch_stall()

    def _connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, _ssl.SSLError):
            # PS3.15 B.9: a TLS alert or a bad record from the peer; say so, and why.
            where = f" with {self._peer_name()}" if self.peer_address or self.peer_ae else ""
            self._set_end(ConnectionLost(f"TLS failed{where}: {_tls_reason(exc)}"))
        transport, self._transport = self._transport, None
        if transport is not None and self._fsm.state != State.STA1:
            with contextlib.suppress(AiodimseError):
                self._handle(Event.EVT17)
        self._wake_drain(exc or ConnectionLost("connection closed"))
        self._finish()

    def _pause_writing(self) -> None:
        self._write_paused = True

    def _resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain(None)

    def _wake_drain(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    async def _drain(self) -> None:
        if self._transport is None:
            raise self._gone()
        if not self._write_paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- the state machine and its outputs --------------------------------------------------

    def _handle(self, event: Event, payload: object = None) -> None:
        transition = self._fsm.handle(event, payload)
        for out in transition.outputs:
            kind = type(out)
            if kind is Indicate:
                assert isinstance(out, Indicate)
                self._indicate(out)
            elif kind is Send:
                assert isinstance(out, Send)
                self._write_pdu(out.pdu)
            elif kind is SendAbort:
                assert isinstance(out, SendAbort)
                self._write_pdu(AAbort(out.source, out.reason))
            elif kind is SendReleaseRQ:
                self._write_pdu(AReleaseRQ())
            elif kind is SendReleaseRP:
                self._write_pdu(AReleaseRP())
            elif kind is StartARTIM:
                self._start_artim()
            elif kind is StopARTIM:
                self._stop_artim()
            elif kind is CloseTransport:
                self._close_transport()
            # ConnectTransport / AcceptTransport: the transport is opened by connect() or
            # was accepted by the server before the event was fed; nothing more to do.
        if transition.next_state == State.STA1:
            self._close_transport()
            self._finish()

    def _write_pdu(self, pdu: object) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if isinstance(pdu, (bytes, bytearray, memoryview)):
            transport.write(pdu)
        elif isinstance(pdu, list):
            transport.writelines(pdu)
        else:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("#%d sending %s", self.id, pdu_summary(pdu))  # type: ignore[arg-type]
            transport.write(pdu.encode())  # type: ignore[attr-defined]

    def _close_transport(self) -> None:
        self._stop_artim()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _start_artim(self) -> None:
        self._stop_artim()
        if self.timeouts.acse is not None:
            self._artim = self.loop.call_later(self.timeouts.acse, self._artim_expired)

    def _stop_artim(self) -> None:
        if self._artim is not None:
            self._artim.cancel()
            self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        if self._fsm.allows(Event.EVT18):
            self._handle(Event.EVT18)

    def _indicate(self, out: Indicate) -> None:
        primitive = out.primitive
        if primitive is Primitive.P_DATA_INDICATION:
            assembler = self._assembler
            if assembler is None:  # pragma: no cover - the table only indicates P-DATA in Sta6+
                raise DIMSEError("P-DATA before the association was established")
            for pdv in out.pdu.items:  # type: ignore[attr-defined]
                assembler.feed(pdv)
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_ACCEPT:
            assert isinstance(out.pdu, AAssociateAC)
            self._on_accepted(out.pdu)
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_REJECT:
            assert isinstance(out.pdu, AAssociateRJ)
            rj = out.pdu
            self._set_end(AssociationRejected(rj.result, rj.source, rj.reason))
        elif primitive is Primitive.A_ASSOCIATE_INDICATION:
            assert isinstance(out.pdu, AAssociateRQ)
            self.request = out.pdu
            self.peer_ae = out.pdu.calling_ae_title
            self._spawn(self._answer_association(out.pdu))
        elif primitive is Primitive.A_RELEASE_INDICATION:
            if self._fsm.state in (State.STA9, State.STA10):
                # Release collision (PS3.8 9.2.3 / AR-8): the requestor answers first.
                if self._fsm.state == State.STA9:
                    self._handle(Event.EVT14)
                return
            self._released_by_peer = True
            log.info("#%d %s asked to release the association", self.id, self.peer_ae)
            self._handle(Event.EVT14)
        elif primitive is Primitive.A_RELEASE_CONFIRM:
            if self._fsm.state == State.STA12:
                # Collision, acceptor side: our release is confirmed; now answer theirs.
                self._handle(Event.EVT14)
        elif primitive is Primitive.A_ABORT_INDICATION:
            abort = out.pdu
            assert isinstance(abort, AAbort)
            self._set_end(AssociationAborted(abort.source, abort.reason))
        elif primitive is Primitive.A_P_ABORT_INDICATION:
            if out.reason is not None:
                self._set_end(
                    AssociationAborted(AbortSource.SERVICE_PROVIDER, out.reason, local=True)
                )
            elif isinstance(out.pdu, AAbort):
                self._set_end(AssociationAborted(out.pdu.source, out.pdu.reason))
            else:
                self._set_end(ConnectionLost(self._lost_message()))

    def _peer_name(self) -> str:
        address = f"{self.peer_address[0]}:{self.peer_address[1]}" if self.peer_address else ""
        if self.peer_ae and address:
            return f"{self.peer_ae} at {address}"
        return self.peer_ae or address or "the peer"

    def _lost_message(self) -> str:
        if self.tls_version is not None and self.negotiated is None and self._fsm.is_requestor:
            # TLS 1.3 servers check the client certificate after our side of the handshake
            # has completed; many (asyncio's among them) then just close the connection.
            return (
                f"TLS failed: {self._peer_name()} closed the connection after the TLS handshake"
                " without answering the association request; it probably did not accept our"
                " client certificate (or we sent none)"
            )
        peer = self.peer_ae or (
            f"{self.peer_address[0]}:{self.peer_address[1]}" if self.peer_address else "the peer"
        )
        return f"connection to {peer} closed without a release or an abort"

    def _protocol_error(self, exc: PDUError | DIMSEError) -> None:
        """Bad data from the peer: A-ABORT with the reason, as PS3.8 AA-8 says."""
        log.warning(
            "#%d protocol error from %s: %s; aborting",
            self.id,
            self.peer_ae or self.peer_address,
            exc,
        )
        self._set_end(
            AssociationAborted(AbortSource.SERVICE_PROVIDER, exc.abort_reason, str(exc), True)
        )
        if self._fsm.allows(Event.EVT19):
            self._handle(Event.EVT19, exc.abort_reason)
        if self._fsm.state == State.STA13:
            # We will not read anything else from this peer: don't wait for ARTIM.
            self._close_transport()

    def _set_end(self, reason: AiodimseError) -> None:
        if self._end_reason is None:
            self._end_reason = reason
        if not self._established.done():
            self._established.set_exception(reason)
            self._established.exception()  # retrieved: never "exception was never retrieved"

    def _gone(self) -> AiodimseError:
        if self._end_reason is not None:
            return self._end_reason
        if self._released_by_peer:
            return ConnectionLost(f"association released by {self.peer_ae or 'the peer'}")
        return ConnectionLost("the association is closed")

    def _finish(self) -> None:
        """Transport closed / machine back in Sta1: fail what waits, stop what runs."""
        if self._closed.done():
            return
        self._stop_artim()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        reason = self._gone()
        if not self._established.done():
            self._established.set_exception(reason)
            self._established.exception()
        for op in self._outgoing.values():
            op.queue.put_nowait(reason)
        for window in (self._invoke_slots, self._perform_slots):
            if window is not None:
                window.close(reason)
        receiving = self._receiving
        self._receiving = None
        if isinstance(receiving, _Incoming) and receiving.target is not None:
            # A half-received data set must leave nothing behind.
            receiving.target.discard()
        for inc in self._incoming.values():
            inc.cancelled.set()
            if inc.target is not None and inc.task is None:
                inc.target.discard()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._wake_drain(reason)
        self._closed.set_result(None)
        self._on_closed()

    # -- establishment ----------------------------------------------------------------------

    async def _request_association(
        self,
        host: str,
        port: int,
        rq: AAssociateRQ,
        *,
        ssl: Any = None,
        server_hostname: str | None = None,
    ) -> Negotiated:
        """Requestor: connect, send the RQ, wait for AC/RJ (PS3.8 AE-1, AE-2, AE-3/4)."""
        self.request = rq
        self.peer_ae = rq.called_ae_title
        self._handle(Event.EVT1, rq)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Protocol(self),
                    host,
                    port,
                    ssl=ssl,
                    server_hostname=server_hostname if ssl else None,
                ),
                self.timeouts.connect,
            )
        except (OSError, TimeoutError) as exc:
            if self._fsm.allows(Event.EVT17):
                self._handle(Event.EVT17)
            self._finish()
            if isinstance(exc, TimeoutError):
                raise AssociationTimeout(
                    f"cannot connect to {host}:{port}: no answer within {self.timeouts.connect} s"
                ) from None
            if ssl is not None and (isinstance(exc, _ssl.SSLError) or not exc.args):
                # PS3.15 B.9: a failed handshake says so, and why (never a bare SSLError).
                raise AssociationError(
                    f"TLS handshake with {host}:{port} failed: {_tls_reason(exc)}"
                ) from exc
            if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
                why = exc.strerror or str(exc)
            else:
                why = os.strerror(exc.errno)
            raise AssociationError(f"cannot connect to {host}:{port}: {why}") from None
        try:
            return await asyncio.wait_for(asyncio.shield(self._established), self.timeouts.acse)
        except TimeoutError:
            self._abort_now()
            raise AssociationTimeout(
                f"{host}:{port} did not answer the association request within "
                f"{self.timeouts.acse} s"
            ) from None

    def _on_accepted(self, ac: AAssociateAC) -> None:
        from .ul.negotiation import requestor_result

        assert self.request is not None
        negotiated = requestor_result(self.request, ac)
        self._established_with(negotiated)

    def _established_with(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        accepted = {c.context_id for c in negotiated.contexts if c.accepted}
        self._assembler = MessageAssembler(accepted, self._on_command, self._on_data)
        self._invoke_slots = _Window(negotiated.max_invoked or 0xFFFF)
        self._perform_slots = _Window(negotiated.max_performed or 0xFFFF)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("#%d negotiated with %s:\n%s", self.id, self.peer_ae, negotiated.describe())
        if not self._established.done():
            self._established.set_result(negotiated)
        if self.timeouts.idle is not None:
            self._touch()

    async def _answer_association(self, rq: AAssociateRQ) -> None:
        """Acceptor: decide on an A-ASSOCIATE indication (implemented by the server side)."""
        self._reject(rq, None)

    def _accept(self, ac: AAssociateAC, negotiated: Negotiated) -> None:
        if self._fsm.state != State.STA3:
            return  # the peer went away while we were deciding
        self._handle(Event.EVT7, ac)
        self._established_with(negotiated)

    def _reject(self, rq: AAssociateRQ, rj: AAssociateRJ | None) -> None:
        from .ul.negotiation import NO_REASON_GIVEN

        if self._fsm.state != State.STA3:
            return
        self._handle(Event.EVT8, rj or NO_REASON_GIVEN.pdu())

    # -- release and abort -------------------------------------------------------------------

    async def release(self) -> None:
        """Release the association gracefully (A-RELEASE) and wait for the connection to close.

        Aborts instead if the peer does not confirm within the ACSE timeout.
        """
        if self._closed.done():
            return
        if self._fsm.state != State.STA6:
            self._abort_now()
            await self.wait_closed()
            return
        self._releasing = True
        self._handle(Event.EVT11)
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), self.timeouts.acse)
        except TimeoutError:
            log.warning("#%d %s did not confirm the release; aborting", self.id, self.peer_ae)
            self._abort_now()
            await self.wait_closed()

    async def abort(self) -> None:
        """Abort the association (A-ABORT, service-user source) and close the connection."""
        self._abort_now()
        await self.wait_closed()

    def _abort_now(self, detail: str = "") -> None:
        if self._closed.done():
            return
        self._set_end(
            AssociationAborted(
                AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED, detail, local=True
            )
        )
        if self._fsm.allows(Event.EVT15) and self._fsm.state != State.STA13:
            self._handle(Event.EVT15)
        # AA-1 waits for the peer to close; we have nothing more to say, so close now.
        if self._transport is not None:
            self._transport.close()
        elif self._fsm.state != State.STA1:
            self._finish()

    # -- idle timer -------------------------------------------------------------------------

    def _touch(self) -> None:
        """Note activity. The idle timer is re-armed lazily from the last activity time,
        so that this costs a clock read per received chunk, not a timer reschedule."""
        if self.timeouts.idle is None or self._closed.done():
            return
        self._last_activity = self.loop.time()
        if self._idle is None:
            self._idle = self.loop.call_later(self.timeouts.idle, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        idle = self.timeouts.idle
        if idle is None or self._closed.done():
            return
        left = self._last_activity + idle - self.loop.time()
        if left > 0:
            self._idle = self.loop.call_later(left, self._idle_expired)
            return
        if self._outgoing or self._incoming or self._receiving is not None:
            self._touch()
            return
        if self.is_established and not self._releasing:
            log.info("#%d idle for %s s: releasing", self.id, idle)
            self._spawn(self.release())

    # -- partly received messages -------------------------------------------------------------

    def _watch_stall(self) -> None:
        """A message has started arriving: each further piece must come within the DIMSE
        timeout, or the association is aborted (a silent peer must not hold it forever)."""
        self._last_received = self.loop.time()
        if self._stall is None and self.timeouts.dimse is not None and not self._closed.done():
            self._stall = self.loop.call_later(self.timeouts.dimse, self._stall_expired)

    def _stall_expired(self) -> None:
        self._stall = None
        timeout = self.timeouts.dimse
        assembler = self._assembler
        if timeout is None or self._closed.done() or assembler is None:
            return
        if assembler.idle and not self._reader.buffered:
            return  # the message was completed; the next one re-arms the timer
        if self._reading_paused:
            # We stopped reading ourselves (a slow consumer): not the peer's fault.
            self._watch_stall()
            return
        left = self._last_received + timeout - self.loop.time()
        if left > 0:
            self._stall = self.loop.call_later(left, self._stall_expired)
            return
        peer = self.peer_ae or "the peer"
        detail = f"{peer} sent part of a message, then nothing for {timeout} s"
        log.warning("#%d %s; aborting", self.id, detail)
        self._set_end(AssociationTimeout(f"{detail}; association aborted"))
        self._abort_now(detail)

    # -- tasks ------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("#%d internal error: %r", self.id, exc, exc_info=exc)
            self._abort_now(f"internal error: {exc!r}")

    def _on_closed(self) -> None:
        """Hook: the association has ended (servers use it to forget the association)."""

    # -- sending DIMSE messages --------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self._fsm.state not in (State.STA6, State.STA8) or self._transport is None:
            raise self._gone()

    async def send_message(
        self,
        context_id: int,
        message: Message,
        dataset: bytes | memoryview | FileRegion | Iterable[bytes | memoryview] | None = None,
    ) -> None:
        """Send one DIMSE message (command, then data set if any) as P-DATA-TF PDUs.

        Messages never interleave (one send lock per association). The data set may be a
        buffer, a :class:`FileRegion` (read straight into the outgoing PDUs, never held
        whole in memory) or an iterable of pieces. The PDUs are laid out in batches of a
        few MiB, each written with one call, then the transport is drained. A failure
        part-way through a message aborts the association: it cannot be reused.
        """
        command = encode_command(message)
        async with self._send_lock:
            self._check_sendable()
            max_pdu = self.negotiated.peer_max_pdu if self.negotiated else 0
            if max_pdu and max_pdu < 64:
                max_pdu = 64
            started = False
            try:
                head = b"".join(pdata_fragments(context_id, True, command, max_pdu))
                if dataset is None:
                    self._send_pdata(head)
                    started = True
                    await self._drain()
                elif isinstance(dataset, (bytes, bytearray, memoryview, FileRegion)):
                    # Even-sized fragments: some peers refuse odd-length data set fragments.
                    room = (max_pdu - 6) & ~1 if max_pdu else _UNLIMITED_ROOM
                    for image in _wire_images(context_id, room, head, dataset):
                        self._send_pdata(image)
                        started = True
                        await self._drain()
                else:
                    batch: list[bytes | memoryview] = [head]
                    size = 0
                    pending: bytes | memoryview | None = None
                    for piece in dataset:
                        if pending is not None:
                            batch.extend(
                                pdata_fragments(context_id, False, pending, max_pdu, last=False)
                            )
                            size += len(pending)
                        pending = piece
                        if size >= _WRITE_BATCH:
                            self._send_pdata(batch)
                            started = True
                            batch, size = [], 0
                            await self._drain()
                    batch.extend(
                        pdata_fragments(context_id, False, pending or b"", max_pdu, last=True)
                    )
                    self._send_pdata(batch)
                    started = True
                    await self._drain()
            except BaseException:
                if started and not self._closed.done():
                    # Half a message is on the wire: the association is unusable now.
                    self._abort_now("a message was interrupted part-way")
                raise
        if self._idle is not None:
            self._touch()

    def _send_pdata(self, buffers: bytes | bytearray | list[bytes | memoryview]) -> None:
        self._check_sendable()
        # The whole batch is one P-DATA request primitive (Evt9): one state check, one write.
        self._handle(Event.EVT9, buffers)

    # -- operations we invoke ---------------------------------------------------------------

    def _next_message_id(self, avoid: Callable[[int], bool] | None = None) -> int:
        for _ in range(0x10000):
            mid = next(self._message_ids)
            if mid not in self._outgoing and (avoid is None or not avoid(mid)):
                return mid
        raise AssociationError("no free message ID: 65535 operations outstanding")

    async def _invoke(
        self,
        context: NegotiatedContext,
        build: Callable[[int], Message],
        dataset: bytes | memoryview | FileRegion | Iterable[bytes | memoryview] | None = None,
        *,
        on_message_id: Callable[[int], None] | None = None,
        avoid_message_id: Callable[[int], bool] | None = None,
    ) -> _Outgoing:
        """Send a request and register it; responses arrive on the returned op's queue.

        Waits for a free slot of the asynchronous operations window first (1 by default, so
        concurrent callers are serialized safely). ``avoid_message_id`` skips IDs the caller
        cannot use (a C-MOVE's Message ID must be unique where its sub-operations arrive).
        """
        self._check_sendable()
        slots = self._invoke_slots
        assert slots is not None
        if slots.full and self._reading_paused:
            # Responses we hold unread may be what stands between us and a free slot (a
            # request made while iterating a C-FIND): read on, so its final response
            # arrives and frees the slot, rather than wait forever.
            self._resume_reading()
        await slots.acquire()
        mid = self._next_message_id(avoid_message_id)
        message = build(mid)
        op = _Outgoing(mid, context, getattr(message, "service", ""))
        self._outgoing[mid] = op
        try:
            if on_message_id is not None:
                on_message_id(mid)
            await self.send_message(context.context_id, message, dataset)
        except BaseException:
            self._complete(op)
            raise
        return op

    def _complete(self, op: _Outgoing) -> None:
        if self._outgoing.pop(op.message_id, None) is not None and self._invoke_slots:
            self._invoke_slots.release()

    def _abandon(self, op: _Outgoing) -> None:
        """The caller no longer waits for ``op`` (it was cancelled): complete it when its
        final response arrives (or now, if it already has), so that its slot of the
        asynchronous operations window is not held forever."""
        op.abandoned = True
        while not op.queue.empty():
            item = op.queue.get_nowait()
            if isinstance(item, BaseException) or not is_pending(getattr(item[0], "status", 0)):
                self._complete(op)
                return

    async def _response(self, op: _Outgoing) -> tuple[Message, bytes | None]:
        """The next response of an operation; the op is complete after a non-pending one."""
        try:
            if op.queue.empty():
                item = await asyncio.wait_for(op.queue.get(), self.timeouts.dimse)
            else:
                item = op.queue.get_nowait()
        except TimeoutError:
            self._complete(op)
            self._abort_now(f"no {op.service} response within {self.timeouts.dimse} s")
            raise AssociationTimeout(
                f"no {op.service} response from {self.peer_ae} within {self.timeouts.dimse} s;"
                " association aborted"
            ) from None
        except asyncio.CancelledError:
            raise
        if self._reading_paused and op.queue.qsize() <= _RESPONSE_QUEUE_LOW:
            self._resume_reading()
        if isinstance(item, BaseException):
            self._complete(op)
            raise item
        message, data = item
        if not is_pending(getattr(message, "status", 0)):
            self._complete(op)
        return message, data

    async def cancel(self, op: _Outgoing) -> None:
        """Send C-CANCEL-RQ for an operation (PS3.7 9.3.2.3); its responses keep coming."""
        if op.message_id not in self._outgoing or not self.is_established:
            return
        await self.send_message(
            op.context.context_id, CCancelRQ(message_id_being_responded_to=op.message_id)
        )

    # -- receiving DIMSE messages ------------------------------------------------------------

    def _on_command(self, context_id: int, message: Message) -> None:
        assert self.negotiated is not None
        if not message.is_request:
            op = self._outgoing.get(message.message_id_being_responded_to)  # type: ignore[union-attr]
            if op is None:
                raise DIMSEError(
                    f"response to message {message.message_id_being_responded_to} "  # type: ignore[union-attr]
                    "which is not outstanding",
                    AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
            if message.has_dataset:
                op.target = MemoryTarget(self.max_in_memory)
                op.pending = message
                self._receiving = op
            else:
                self._deliver(op, message, None)
            return
        if isinstance(message, CCancelRQ):
            inc = self._incoming.get(message.message_id_being_responded_to)
            if inc is not None:
                log.info(
                    "#%d C-CANCEL for message %d", self.id, message.message_id_being_responded_to
                )
                inc.cancelled.set()
            return
        context = self.negotiated.by_id(context_id)
        assert context is not None
        inc = _Incoming(message, context)
        mid = message.message_id  # type: ignore[union-attr]
        if mid in self._incoming:
            raise DIMSEError(
                f"message ID {mid} reused while that request is still being performed",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        self._incoming[mid] = inc
        if message.has_dataset:
            inc.target = self._open_target(inc)
            self._receiving = inc
        else:
            self._start_incoming(inc)

    def _on_data(self, context_id: int, data: memoryview | bytes, last: bool) -> None:
        receiving = self._receiving
        assert receiving is not None
        target = receiving.target
        assert target is not None
        if data:
            try:
                target.write(data)
            except Exception as exc:
                if isinstance(receiving, _Outgoing):
                    raise
                # Our side failed (disk full, permissions): answer the request with a
                # failure status once the data set is in, keep the association.
                log.error("#%d cannot store the incoming data set: %s", self.id, exc)
                receiving.error = exc
                target.discard()
                receiving.target = target = _NullTarget()
        if not last:
            return
        self._receiving = None
        if isinstance(receiving, _Outgoing):
            assert isinstance(target, MemoryTarget)
            assert receiving.pending is not None
            receiving.target = None
            message, receiving.pending = receiving.pending, None
            self._deliver(receiving, message, target.getvalue())
        else:
            self._start_incoming(receiving)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    def _deliver(self, op: _Outgoing, message: Message, data: bytes | None) -> None:
        if op.abandoned:
            if not is_pending(getattr(message, "status", 0)):
                self._complete(op)
            return
        op.queue.put_nowait((message, data))
        if not is_pending(getattr(message, "status", 0)):
            # The peer is done with the operation (PS3.7 D.3.3.3 counts operations whose
            # final response has not arrived): its window slot is free now, even if the
            # caller has not read every response yet.
            self._complete(op)
            return
        slots = self._invoke_slots
        if (
            not self._reading_paused
            and op.queue.qsize() >= _RESPONSE_QUEUE_HIGH
            and self._transport is not None
            and not (slots is not None and slots.waiting)
        ):
            # The consumer is slower than the peer: stop reading until it catches up.
            self._reading_paused = True
            self._transport.pause_reading()

    def _open_target(self, inc: _Incoming) -> DataTarget:
        """Where an incoming request's data set goes (the service layer may stream it)."""
        return MemoryTarget(self.max_in_memory)

    def _start_incoming(self, inc: _Incoming) -> None:
        inc.task = self._spawn(self._perform(inc))

    async def _perform(self, inc: _Incoming) -> None:
        """Run an incoming request (overridden by the service layer)."""
        self._incoming.pop(getattr(inc.message, "message_id", -1), None)

    def _incoming_done(self, inc: _Incoming) -> None:
        self._incoming.pop(getattr(inc.message, "message_id", -1), None)
        if self._idle is not None:
            self._touch()
