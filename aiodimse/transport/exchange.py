"""DIMSE messages over a link: the operations we invoked and the requests the peer invoked.

:class:`Exchange` reassembles P-DATA into DIMSE messages, routes each response to the
operation waiting for it (by Message ID Being Responded To), and hands each request to its
:class:`Performer` (the SCP services): first ``open_target`` when the command arrives (so a
data set can stream to disk), then ``perform`` as a task once the data set is in. It
enforces both sides of the asynchronous operations window (PS3.7 D.3.3.3) and keeps a slow
reader of responses from buffering without bound (the socket stops being read instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ..config import DEFAULT_MAX_IN_MEMORY
from ..dimse.assembler import MessageAssembler
from ..dimse.commands import CCancelRQ, CStoreRQ, Message, encode_command
from ..dimse.operations import OperationTable
from ..dimse.status import is_pending
from ..enums import AbortReason
from ..errors import AiodimseError, AssociationTimeout, DIMSEError, NegotiationError
from ..pdu import PDataTF, pdata_fragments
from ..ul.negotiation import Negotiated, NegotiatedContext
from .link import Link
from .targets import DataTarget, MemoryTarget, NullTarget
from .window import Window
from .wire import UNLIMITED_ROOM, WRITE_BATCH, FileRegion, WireData, wire_images

__all__ = ["Exchange", "Incoming", "Outgoing", "Performer"]

log = logging.getLogger("aiodimse.association")

#: How many unread responses (C-FIND matches) may queue before we stop reading the socket.
RESPONSE_QUEUE_HIGH = 256
RESPONSE_QUEUE_LOW = 64

Response = tuple[Message, bytes | None]


#: The smallest peer Maximum Length we can honour: a PDV item header (6 bytes) and an
#: even-sized fragment of 2.
MIN_PEER_MAX_PDU = 8


class Outgoing:
    """An operation we invoked, waiting for its response(s)."""

    __slots__ = ("abandoned", "context", "message_id", "pending", "queue", "service", "target")

    def __init__(self, message_id: int, context: NegotiatedContext, service: str) -> None:
        self.message_id = message_id
        self.context = context
        self.service = service
        self.queue: asyncio.Queue[Response | BaseException] = asyncio.Queue()
        self.target: MemoryTarget | None = None
        self.pending: Message | None = None  # a response whose data set is arriving
        #: Nobody waits for the responses any more (the caller was cancelled): the final
        #: one completes the operation and frees its window slot.
        self.abandoned = False


class Incoming:
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

    @property
    def message_id(self) -> int:
        return int(getattr(self.message, "message_id", -1))

    def take_target(self) -> DataTarget | None:
        """The received data set's target, now the caller's to commit or discard."""
        target, self.target = self.target, None
        return target


class Performer(Protocol):
    """Performs the requests the peer invokes (the SCP services)."""

    def open_target(self, request: Incoming) -> DataTarget:
        """Where the data set of ``request`` goes, called when its command arrives."""

    async def perform(self, request: Incoming) -> None:
        """Answer ``request`` (its data set, if any, is complete)."""


class Exchange:
    """The DIMSE layer of one association (see module docstring)."""

    def __init__(self, link: Link, *, max_in_memory: int = DEFAULT_MAX_IN_MEMORY) -> None:
        self.link = link
        self.max_in_memory = max_in_memory
        self.performer: Performer | None = None
        self._outgoing: OperationTable[Outgoing] = OperationTable()
        self._incoming: dict[int, Incoming] = {}
        self._receiving: Outgoing | Incoming | None = None
        self._assembler: MessageAssembler | None = None
        self._invoke_slots: Window | None = None
        self._perform_slots: Window | None = None
        self._send_lock = asyncio.Lock()
        link.upper = self

    # -- Upper: what the link tells us --------------------------------------------------

    def established(self, negotiated: Negotiated) -> None:
        accepted = {c.context_id for c in negotiated.contexts if c.accepted}
        self._assembler = MessageAssembler(accepted, self._on_command, self._on_data)
        self._invoke_slots = Window(negotiated.max_invoked or 0xFFFF)
        self._perform_slots = Window(negotiated.max_performed or 0xFFFF)

    def receive(self, pdu: PDataTF) -> None:
        assembler = self._assembler
        if assembler is None:  # pragma: no cover - P-DATA is only indicated in Sta6+
            raise DIMSEError("P-DATA before the association was established")
        for pdv in pdu.items:
            assembler.feed(pdv)

    @property
    def busy(self) -> bool:
        return bool(len(self._outgoing) or self._incoming or self._receiving is not None)

    @property
    def mid_message(self) -> bool:
        return self._assembler is not None and not self._assembler.idle

    def closed(self, reason: AiodimseError) -> None:
        for op in self._outgoing:
            op.queue.put_nowait(reason)
        for window in (self._invoke_slots, self._perform_slots):
            if window is not None:
                window.close(reason)
        receiving = self._receiving
        self._receiving = None
        if isinstance(receiving, Incoming) and receiving.target is not None:
            # A half-received data set must leave nothing behind.
            receiving.target.discard()
        for inc in self._incoming.values():
            inc.cancelled.set()
            if inc.target is not None and inc.task is None:
                inc.target.discard()

    # -- operations we invoke ---------------------------------------------------------------

    async def invoke(
        self,
        context: NegotiatedContext,
        build: Callable[[int], Message],
        dataset: WireData | None = None,
        *,
        on_message_id: Callable[[int], None] | None = None,
        avoid_message_id: Callable[[int], bool] | None = None,
    ) -> Outgoing:
        """Send a request and register it; its responses come from :meth:`response`.

        Waits for a free slot of the asynchronous operations window first (1 by default, so
        concurrent callers are serialized safely). ``avoid_message_id`` skips IDs the caller
        cannot use (a C-MOVE's Message ID must be unique where its sub-operations arrive).
        """
        link = self.link
        link.check_sendable()
        slots = self._invoke_slots
        assert slots is not None
        if slots.full and link.reading_paused:
            # Responses we hold unread may be what stands between us and a free slot (a
            # request made while iterating a C-FIND): read on, so its final response
            # arrives and frees the slot, rather than wait forever.
            link.resume_reading()
        await slots.acquire()
        mid = self._outgoing.allocate(avoid_message_id)
        message = build(mid)
        op = Outgoing(mid, context, getattr(message, "service", ""))
        self._outgoing.add(mid, op)
        try:
            if on_message_id is not None:
                on_message_id(mid)
            await self.send_message(context.context_id, message, dataset)
        except BaseException:
            self._complete(op)
            raise
        return op

    @property
    def outstanding(self) -> int:
        """How many operations we invoked have not had their final response."""
        return len(self._outgoing)

    def is_outstanding(self, op: Outgoing) -> bool:
        """Whether ``op``'s final response has not arrived yet."""
        return self._outgoing.get(op.message_id) is op

    def _complete(self, op: Outgoing) -> None:
        if self._outgoing.pop(op.message_id) is not None and self._invoke_slots:
            self._invoke_slots.release()

    def abandon(self, op: Outgoing) -> None:
        """The caller no longer waits for ``op`` (it was cancelled): complete it when its
        final response arrives (or now, if it already has), so that its slot of the
        asynchronous operations window is not held forever."""
        op.abandoned = True
        while not op.queue.empty():
            item = op.queue.get_nowait()
            if isinstance(item, BaseException) or not is_pending(getattr(item[0], "status", 0)):
                self._complete(op)
                return

    async def response(self, op: Outgoing) -> Response:
        """The next response of an operation; the op is complete after a non-pending one."""
        link = self.link
        try:
            if op.queue.empty():
                # (asyncio.timeout, not wait_for: no task made per response)
                async with asyncio.timeout(link.timeouts.dimse):
                    item = await op.queue.get()
            else:
                item = op.queue.get_nowait()
        except TimeoutError:
            self._complete(op)
            link.abort_now(f"no {op.service} response within {link.timeouts.dimse} s")
            raise AssociationTimeout(
                f"no {op.service} response from {link.peer_ae} within {link.timeouts.dimse} s;"
                " association aborted"
            ) from None
        if link.reading_paused and op.queue.qsize() <= RESPONSE_QUEUE_LOW:
            link.resume_reading()
        if isinstance(item, BaseException):
            self._complete(op)
            raise item
        message, _ = item
        if not is_pending(getattr(message, "status", 0)):
            self._complete(op)
        return item

    async def cancel(self, op: Outgoing) -> None:
        """Send C-CANCEL-RQ for an operation (PS3.7 9.3.2.3); its responses keep coming."""
        if op.message_id not in self._outgoing or not self.link.is_established:
            return
        await self.send_message(
            op.context.context_id, CCancelRQ(message_id_being_responded_to=op.message_id)
        )

    # -- requests the peer invokes ------------------------------------------------------------

    @property
    def can_respond(self) -> bool:
        """Whether a response can still be sent on this association."""
        return self.link.can_send

    async def respond(
        self, request: Incoming, message: Message, dataset: WireData | None = None
    ) -> None:
        """Send a response (or a sub-operation's message) on the request's context."""
        await self.send_message(request.context.context_id, message, dataset)

    # -- sending DIMSE messages --------------------------------------------------------------

    async def send_message(
        self, context_id: int, message: Message, dataset: WireData | None = None
    ) -> None:
        """Send one DIMSE message (command, then data set if any) as P-DATA-TF PDUs.

        Messages never interleave (one send lock per association). The data set may be a
        buffer, a :class:`FileRegion` (read straight into the outgoing PDUs, never held
        whole in memory) or an iterable of pieces. The PDUs are laid out in batches of a
        few MiB, each written with one call, then the transport is drained. A failure
        part-way through a message aborts the association: it cannot be reused.
        """
        link = self.link
        command = encode_command(message)
        async with self._send_lock:
            link.check_sendable()
            negotiated = link.negotiated
            max_pdu = negotiated.peer_max_pdu if negotiated else 0
            if max_pdu and max_pdu < MIN_PEER_MAX_PDU:
                # PS3.8 D.1: every P-DATA-TF we send fits the peer's Maximum Length; below
                # this a PDV cannot carry the two bytes of an even-sized fragment.
                raise NegotiationError(
                    f"the peer's Maximum Length ({max_pdu}) is too small to carry any"
                    " P-DATA-TF; nothing can be sent on this association"
                )
            started = False
            try:
                head = b"".join(pdata_fragments(context_id, True, command, max_pdu))
                if dataset is None:
                    link.send_pdata(head)
                    started = True
                    await link.drain()
                elif isinstance(dataset, (bytes, bytearray, memoryview, FileRegion)):
                    # Even-sized fragments: some peers refuse odd-length data set fragments.
                    room = (max_pdu - 6) & ~1 if max_pdu else UNLIMITED_ROOM
                    for image in wire_images(context_id, room, head, dataset):
                        link.send_pdata(image)
                        started = True
                        await link.drain()
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
                        if size >= WRITE_BATCH:
                            link.send_pdata(batch)
                            started = True
                            batch, size = [], 0
                            await link.drain()
                    batch.extend(
                        pdata_fragments(context_id, False, pending or b"", max_pdu, last=True)
                    )
                    link.send_pdata(batch)
                    started = True
                    await link.drain()
            except BaseException:
                if started and not link.is_closed:
                    # Half a message is on the wire: the association is unusable now.
                    link.abort_now("a message was interrupted part-way")
                raise
        link.touch()

    # -- receiving DIMSE messages ------------------------------------------------------------

    def _on_command(self, context_id: int, message: Message) -> None:
        negotiated = self.link.negotiated
        assert negotiated is not None
        if not message.is_request:
            responded = message.message_id_being_responded_to  # type: ignore[union-attr]
            op = self._outgoing.get(responded)
            if op is None:
                raise DIMSEError(
                    f"response to message {responded} which is not outstanding",
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
                    "#%d C-CANCEL for message %d",
                    self.link.id,
                    message.message_id_being_responded_to,
                )
                inc.cancelled.set()
            return
        context = negotiated.by_id(context_id)
        assert context is not None
        inc = Incoming(message, context)
        mid = inc.message_id
        if mid in self._incoming:
            raise DIMSEError(
                f"message ID {mid} reused while that request is still being performed",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        self._check_window(message, negotiated.max_performed)
        self._incoming[mid] = inc
        if message.has_dataset:
            # Its target is opened when the data set starts to arrive, not now: a request
            # costs no file descriptor until it is really being received.
            self._receiving = inc
        else:
            self._start(inc)

    def _check_window(self, message: Message, limit: int) -> None:
        """PS3.7 D.3.3.3: a peer may have at most ``limit`` operations outstanding on us
        (0 = no limit); one that invokes more is aborted. The C-STORE sub-operations of a
        C-GET we invoked belong to that C-GET and do not count (PS3.4 C.4.3.3)."""
        if not limit or self._is_sub_operation(message):
            return
        performing = sum(
            1 for i in self._incoming.values() if not self._is_sub_operation(i.message)
        )
        if performing >= limit:
            raise DIMSEError(
                f"{self.link.peer_ae or 'the peer'} invoked {performing + 1} operations at"
                f" once; the negotiated asynchronous operations window allows {limit}"
                " (PS3.7 D.3.3.3)",
                AbortReason.UNEXPECTED_PDU,
            )

    def _is_sub_operation(self, message: Message) -> bool:
        return isinstance(message, CStoreRQ) and any(op.service == "C-GET" for op in self._outgoing)

    def _on_data(self, context_id: int, data: memoryview | bytes, last: bool) -> None:
        receiving = self._receiving
        assert receiving is not None
        target = receiving.target
        if target is None:
            assert isinstance(receiving, Incoming)
            target = receiving.target = self._open_target(receiving)
        if data:
            try:
                target.write(data)
            except Exception as exc:
                if isinstance(receiving, Outgoing):
                    raise
                # Our side failed (disk full, permissions): answer the request with a
                # failure status once the data set is in, keep the association.
                log.error("#%d cannot store the incoming data set: %s", self.link.id, exc)
                receiving.error = exc
                target.discard()
                receiving.target = target = NullTarget()
        if not last:
            return
        self._receiving = None
        if isinstance(receiving, Outgoing):
            assert isinstance(target, MemoryTarget)
            assert receiving.pending is not None
            receiving.target = None
            message, receiving.pending = receiving.pending, None
            self._deliver(receiving, message, target.getvalue())
        else:
            self._start(receiving)

    def _deliver(self, op: Outgoing, message: Message, data: bytes | None) -> None:
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
            not self.link.reading_paused
            and op.queue.qsize() >= RESPONSE_QUEUE_HIGH
            and not (slots is not None and slots.waiting)
        ):
            # The consumer is slower than the peer: stop reading until it catches up.
            self.link.pause_reading()

    def _open_target(self, inc: Incoming) -> DataTarget:
        if self.performer is None:
            return MemoryTarget(self.max_in_memory)
        return self.performer.open_target(inc)

    def _start(self, inc: Incoming) -> None:
        inc.task = self.link.spawn(self._perform(inc))

    async def _perform(self, inc: Incoming) -> None:
        slots = self._perform_slots
        try:
            if self.performer is not None:
                if slots is not None:
                    await slots.acquire()
                try:
                    await self.performer.perform(inc)
                finally:
                    if slots is not None:
                        slots.release()
        except AiodimseError as exc:
            # The association ended under us; the response cannot be sent.
            log.debug(
                "#%d request %s not answered: %s", self.link.id, type(inc.message).__name__, exc
            )
        finally:
            if inc.target is not None:
                # Never taken by a service (the association ended, or we were cancelled
                # while waiting for a slot of the window): a partial file must not stay.
                inc.target.discard()
                inc.target = None
            self._incoming.pop(inc.message_id, None)
            self.link.touch()
