"""One association over one transport connection: bytes <-> the PS3.8 state machine.

This is the only module that touches sockets. :class:`Link` feeds received bytes to the
PDU reader and the state machine, carries out the machine's outputs (PDUs to send, ARTIM,
closing), runs establishment and release, bounds every wait with a timer, and writes
P-DATA-TF PDUs with flow control. What the P-DATA carries goes to its
:class:`Upper` (the DIMSE exchange); the link knows nothing of operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl as _ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..config import DEFAULT_MAX_PDU, Timeouts
from ..enums import AbortReason, AbortSource
from ..errors import (
    AiodimseError,
    AssociationAborted,
    AssociationRejected,
    AssociationTimeout,
    ConnectionLost,
    DIMSEError,
    PDUError,
)
from ..pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUReader,
    decode_pdu,
    pdu_summary,
)
from ..tls import tls_reason
from ..ul.fsm import (
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
from ..ul.negotiation import NO_REASON_GIVEN, Negotiated, requestor_result
from .reasons import connect_error, lost_message, peer_name
from .watchdog import Watchdog

__all__ = ["Link", "Upper"]

log = logging.getLogger("aiodimse.association")

#: Bytes read from the socket at a time. asyncio's selector transport reads up to 256 KiB
#: into a new buffer each time; glibc serves buffers that large from mmap or the top of
#: the heap and gives them back to the kernel once freed, so receiving a large data set
#: faulted in fresh pages on every read (~160 page faults per 512 KiB instance, none at
#: 32 KiB, where freed buffers are reused).
READ_SIZE = 32 * 1024

_ids = itertools.count(1)


class Upper(Protocol):
    """What the link hands the DIMSE layer (implemented by the exchange)."""

    def established(self, negotiated: Negotiated) -> None:
        """The association is established (either side)."""

    def receive(self, pdu: PDataTF) -> None:
        """A P-DATA-TF PDU arrived in Sta6+; raises DIMSEError for a bad PDV sequence."""

    @property
    def busy(self) -> bool:
        """Anything outstanding or being received (the idle timer waits for it)."""

    @property
    def mid_message(self) -> bool:
        """A DIMSE message has started arriving and is not complete."""

    def closed(self, reason: AiodimseError) -> None:
        """The association has ended: fail whatever waits."""


class Link(asyncio.Protocol):
    """One association over one transport connection, either side (see module docstring).

    It is the connection's asyncio protocol (``connection_made``, ``data_received``...).

    Hooks for the layers above: ``upper`` receives P-DATA and lifecycle events;
    ``acceptor`` decides on an A-ASSOCIATE-RQ (acceptor side; it calls :meth:`accept` or
    :meth:`reject`); ``on_connected``, ``on_established`` and the close callbacks let a
    server count its connections and associations.
    """

    def __init__(
        self,
        *,
        local_ae: str,
        timeouts: Timeouts | None = None,
        max_pdu: int = DEFAULT_MAX_PDU,
    ) -> None:
        self.id = next(_ids)
        self.loop = asyncio.get_running_loop()
        self.timeouts = timeouts or Timeouts()
        self.local_ae = local_ae
        self.max_pdu = max_pdu
        self.peer_ae = ""
        self.peer_address: tuple[str, int] | None = None
        #: On a TLS connection (PS3.15 B.9): the protocol version, and the peer's certificate
        #: as ssl.SSLSocket.getpeercert() gives it (None when the peer sent none).
        self.tls_version: str | None = None
        self.peer_certificate: dict[str, Any] | None = None
        self.negotiated: Negotiated | None = None
        self.request: AAssociateRQ | None = None
        self.upper: Upper | None = None
        self.acceptor: Callable[[AAssociateRQ], Coroutine[Any, Any, None]] | None = None
        self.on_connected: Callable[[], None] | None = None
        self.on_established: Callable[[], None] | None = None
        self._close_callbacks: list[Callable[[], None]] = []
        self._fsm = StateMachine()
        # A peer may send up to the Maximum Length we advertised; 0 means "no limit", which
        # we still cap so that a lying header cannot make us allocate gigabytes.
        self._reader = PDUReader(max_pdata_length=max_pdu or (64 << 20))
        self._transport: asyncio.Transport | None = None
        self._artim: asyncio.TimerHandle | None = None
        self._watchdog = Watchdog(self)
        self._established: asyncio.Future[Negotiated] = self.loop.create_future()
        self._closed: asyncio.Future[None] = self.loop.create_future()
        self._end_reason: AiodimseError | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reading_paused = False
        self.releasing = False
        self._released_by_peer = False

    # -- properties ----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._fsm.state

    @property
    def is_requestor(self) -> bool:
        return bool(self._fsm.is_requestor)

    @property
    def is_established(self) -> bool:
        """True while DIMSE messages may be exchanged (Sta6)."""
        return self._fsm.state == State.STA6

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    @property
    def can_send(self) -> bool:
        """Whether a DIMSE message can still be sent (Sta6, or Sta8 answering a release)."""
        return self._fsm.state in (State.STA6, State.STA8) and self._transport is not None

    @property
    def end_reason(self) -> AiodimseError | None:
        """Why the association ended abnormally (None while open or after a clean release)."""
        return self._end_reason

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks running on behalf of this association (cancelled when it ends)."""
        return frozenset(self._tasks)

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    async def wait_closed(self) -> None:
        """Wait until the transport connection is closed, however the association ended."""
        await asyncio.shield(self._closed)

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the association has ended."""
        self._close_callbacks.append(callback)

    def protocol(self) -> asyncio.Protocol:
        """The asyncio protocol that feeds this link (for a server's protocol factory)."""
        return self

    def peer_name(self) -> str:
        return peer_name(self.peer_ae, self.peer_address)

    def closed_error(self) -> AiodimseError:
        """The error for an attempt to use the association after it ended."""
        if self._end_reason is not None:
            return self._end_reason
        if self._released_by_peer:
            return ConnectionLost(f"association released by {self.peer_ae or 'the peer'}")
        return ConnectionLost("the association is closed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} {self.local_ae}<->{self.peer_ae} {self.state}>"

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Without this every DIMSE message can wait for a delayed ACK (~40-200 ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1 << 20)
        if hasattr(transport, "max_size"):  # asyncio's selector transports (not TLS, uvloop)
            transport.max_size = READ_SIZE
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_address = (str(peer[0]), int(peer[1]))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            self.peer_certificate = ssl_object.getpeercert() or None
        if self.on_connected is not None:
            self.on_connected()
        if self._fsm.is_requestor:
            self._handle(Event.EVT2)
        else:
            self._handle(Event.EVT5)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            # Once the association has ended (an A-ABORT, say), what else came in the same
            # chunk has nowhere to go: PS3.8 Sta1 takes no PDU.
            while self._transport is not None and not self._closed.done():
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
            self.abort_now(f"internal error: {exc!r}")
        self._watchdog.received(bool(reader.buffered))

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, _ssl.SSLError):
            # PS3.15 B.9: a TLS alert or a bad record from the peer; say so, and why.
            where = f" with {self.peer_name()}" if self.peer_address or self.peer_ae else ""
            self._set_end(ConnectionLost(f"TLS failed{where}: {tls_reason(exc)}"))
        transport, self._transport = self._transport, None
        if transport is not None and self._fsm.state != State.STA1:
            with contextlib.suppress(AiodimseError):
                self._handle(Event.EVT17)
        self._wake_drain(exc or ConnectionLost("connection closed"))
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
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

    def pause_reading(self) -> None:
        """Stop reading the socket (the consumer of responses is behind)."""
        if not self.reading_paused and self._transport is not None:
            self.reading_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self._transport is not None:
            self._transport.resume_reading()

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
            upper = self.upper
            if upper is None:  # pragma: no cover - the table only indicates P-DATA in Sta6+
                raise DIMSEError("P-DATA before the association was established")
            assert isinstance(out.pdu, PDataTF)
            upper.receive(out.pdu)
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_ACCEPT:
            assert isinstance(out.pdu, AAssociateAC)
            assert self.request is not None
            self._established_with(requestor_result(self.request, out.pdu))
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_REJECT:
            assert isinstance(out.pdu, AAssociateRJ)
            rj = out.pdu
            self._set_end(AssociationRejected(rj.result, rj.source, rj.reason))
        elif primitive is Primitive.A_ASSOCIATE_INDICATION:
            assert isinstance(out.pdu, AAssociateRQ)
            self.request = out.pdu
            self.peer_ae = out.pdu.calling_ae_title
            if self.acceptor is None:
                self.reject(None)
            else:
                self.spawn(self.acceptor(out.pdu))
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

    def _lost_message(self) -> str:
        tls_refused = self.tls_version is not None and self.negotiated is None
        return lost_message(
            self.peer_ae, self.peer_address, tls_refused=tls_refused and self.is_requestor
        )

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

    def _finish(self) -> None:
        """Transport closed / machine back in Sta1: fail what waits, stop what runs."""
        if self._closed.done():
            return
        self._stop_artim()
        self._watchdog.stop()
        reason = self.closed_error()
        if not self._established.done():
            self._established.set_exception(reason)
            self._established.exception()
        if self.upper is not None:
            self.upper.closed(reason)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._wake_drain(reason)
        self._closed.set_result(None)
        for callback in self._close_callbacks:
            callback()

    # -- establishment ----------------------------------------------------------------------

    async def request_association(
        self,
        host: str,
        port: int,
        rq: AAssociateRQ,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Negotiated:
        """Requestor: connect, send the RQ, wait for AC/RJ (PS3.8 AE-1, AE-2, AE-3/4)."""
        self.request = rq
        self.peer_ae = rq.called_ae_title
        self._handle(Event.EVT1, rq)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    self.protocol,
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
            raise connect_error(exc, host, port, self.timeouts.connect, tls=ssl is not None) from (
                exc if ssl is not None else None
            )
        try:
            return await asyncio.wait_for(asyncio.shield(self._established), self.timeouts.acse)
        except TimeoutError:
            self.abort_now()
            raise AssociationTimeout(
                f"{host}:{port} did not answer the association request within "
                f"{self.timeouts.acse} s"
            ) from None

    def _established_with(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        if self.upper is not None:
            self.upper.established(negotiated)
        if self.on_established is not None:
            self.on_established()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("#%d negotiated with %s:\n%s", self.id, self.peer_ae, negotiated.describe())
        if not self._established.done():
            self._established.set_result(negotiated)
        self.touch()

    def accept(self, ac: AAssociateAC, negotiated: Negotiated) -> None:
        """Acceptor: answer the A-ASSOCIATE indication with this AC (PS3.8 AE-7)."""
        if self._fsm.state != State.STA3:
            return  # the peer went away while we were deciding
        self._handle(Event.EVT7, ac)
        self._established_with(negotiated)

    def reject(self, rj: AAssociateRJ | None) -> None:
        """Acceptor: answer the A-ASSOCIATE indication with this RJ (PS3.8 AE-8)."""
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
            self.abort_now()
            await self.wait_closed()
            return
        self.releasing = True
        self._handle(Event.EVT11)
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), self.timeouts.acse)
        except TimeoutError:
            log.warning("#%d %s did not confirm the release; aborting", self.id, self.peer_ae)
            self.abort_now()
            await self.wait_closed()

    async def abort(self) -> None:
        """Abort the association (A-ABORT, service-user source) and close the connection."""
        self.abort_now()
        await self.wait_closed()

    def abort_now(self, detail: str = "", reason: AiodimseError | None = None) -> None:
        """Abort without waiting (A-ABORT, service-user source); ``detail`` says why, and
        ``reason`` is what users of the association are told (an AssociationAborted by
        default)."""
        if self._closed.done():
            return
        self._set_end(
            reason
            or AssociationAborted(
                AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED, detail, local=True
            )
        )
        if self._fsm.allows(Event.EVT15) and self._fsm.state != State.STA13:
            self._handle(Event.EVT15)
        # AA-1 waits for the peer to close; we have nothing more to say, so close now.
        if self._transport is not None:
            if self._write_paused:
                # The peer is not reading: close() would wait for it to take what is
                # buffered, forever. Drop the buffer and the connection.
                self._transport.abort()
            else:
                self._transport.close()
        elif self._fsm.state != State.STA1:
            self._finish()

    # -- activity -------------------------------------------------------------------------

    def touch(self) -> None:
        """Note activity (for the idle timeout)."""
        self._watchdog.touch()

    @property
    def receive_buffered(self) -> bool:
        """Bytes of a PDU not yet complete are waiting in the receive buffer."""
        return bool(self._reader.buffered)

    # -- tasks ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this association: cancelled when it ends; an
        unexpected exception in it aborts the association."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("#%d internal error: %r", self.id, exc, exc_info=exc)
            self.abort_now(f"internal error: {exc!r}")

    # -- sending P-DATA ------------------------------------------------------------------

    def check_sendable(self) -> None:
        """Raise the association's end reason if no message can be sent any more."""
        if not self.can_send:
            raise self.closed_error()

    def send_pdata(self, buffers: bytes | bytearray | list[bytes | memoryview]) -> None:
        """Write laid-out P-DATA-TF PDUs: the whole batch is one P-DATA request primitive
        (Evt9), one state check and one write."""
        self.check_sendable()
        self._handle(Event.EVT9, buffers)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark. A peer
        that reads nothing for the DIMSE timeout is not waited for any longer: the
        association is aborted (it would otherwise hold its buffers forever)."""
        if self._transport is None:
            raise self.closed_error()
        if not self._write_paused:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        timeout = self.timeouts.dimse
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            detail = f"{self.peer_name()} read nothing we sent for {timeout} s"
            log.warning("#%d %s; aborting", self.id, detail)
            error = AssociationTimeout(f"{detail}; association aborted")
            self.abort_now(detail, error)
            raise error from None
