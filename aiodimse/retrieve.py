"""C-GET and C-MOVE, both sides, on one event loop (PS3.4 C.4.2-C.4.3, PS3.7 9.1.3-9.1.4).

SCU: ``assoc.get(query)`` receives the C-STORE sub-operations on the same association
(SCP role negotiated through role selection); ``assoc.move(query, destination, receive=scp)``
has them sent to a :class:`~aiodimse.storage.StorageServer` running on the same loop and
returns when the final response is in *and* every completed instance is stored, matching
instances to the move by Move Originator AE Title / Message ID (0000,1030)/(0000,1031).

SCP: the handler's ``on_get`` / ``on_move`` says which instances (Part 10 file paths,
pydicom Datasets, or index records with ``.path`` and ``.sop_instance_uid``, such as a
:class:`~aiodimse.storage.StoredInstance`, so that a file that turns out to be unreadable
is still named); this module runs the sub-operations with honest pending counts, honours
C-CANCEL, and ends with the Failed SOP Instance UID List when anything failed. A
sub-operation that fails on our side (unreadable file, no transfer syntax the peer
accepts) fails alone; only the loss of an association stops the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom import Dataset

from . import uids
from .dicomfile import NotDicomError, decode_dataset, encode_dataset, read_part10
from .dimse.commands import CGetRQ, CGetRSP, CMoveRQ, CMoveRSP, Message, Priority
from .dimse.status import (
    CANCEL,
    PENDING,
    SUCCESS,
    StatusCategory,
    StatusInfo,
    is_pending,
    status_info,
)
from .errors import AiodimseError, AssociationError, NegotiationError, StatusError
from .link import MemoryTarget, _Incoming, _Outgoing
from .query import model_uid, to_dataset
from .scp import RetrieveRequest
from .storage import MemorySink, StorageHandler, StoredInstance
from .ul.negotiation import ContextRequest

if TYPE_CHECKING:
    from .association import Association
    from .storage import Sink, StorageServer

__all__ = ["Progress", "Retrieval", "RetrieveResult", "serve_retrieve"]

log = logging.getLogger("aiodimse.retrieve")

MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
SUBOPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC001
#: Failed SOP Instance UID List (0008,0058), in the final response's identifier.
FAILED_SOP_INSTANCE_UID_LIST = 0x00080058


@dataclass(frozen=True, slots=True)
class Progress:
    """The sub-operation counts of one C-GET/C-MOVE response."""

    status: StatusInfo
    remaining: int | None
    completed: int
    failed: int
    warning: int


@dataclass
class RetrieveResult:
    """How a C-GET or C-MOVE ended."""

    status: StatusInfo
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    failed_instances: list[str] = field(default_factory=list)
    #: Instances received for this retrieval (C-GET always; C-MOVE with ``receive=``).
    instances: list[StoredInstance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Success, with every sub-operation completed."""
        return self.status.category is StatusCategory.SUCCESS and not self.failed

    def __str__(self) -> str:
        return (
            f"{self.status}: {self.completed} completed, {self.failed} failed, "
            f"{self.warning} warning"
        )


def _counts(message: Message) -> tuple[int | None, int, int, int]:
    return (
        getattr(message, "number_of_remaining_suboperations", None),
        getattr(message, "number_of_completed_suboperations", None) or 0,
        getattr(message, "number_of_failed_suboperations", None) or 0,
        getattr(message, "number_of_warning_suboperations", None) or 0,
    )


class _GetReceiver(StorageHandler):
    """Takes the C-STORE sub-operations of the C-GET in progress on an association: into
    the caller's sink, or kept in memory."""

    def __init__(self, sink: Sink | None) -> None:
        super().__init__(sink if sink is not None else MemorySink())
        self.queue: asyncio.Queue[StoredInstance | None] = asyncio.Queue()
        self.instances: list[StoredInstance] = []
        self.listeners.append(self._keep)

    def _keep(self, instance: StoredInstance) -> None:
        self.instances.append(instance)
        self.queue.put_nowait(instance)


class Retrieval:
    """A C-GET or C-MOVE in progress: ``await`` it for the :class:`RetrieveResult`, or
    ``async for`` over it for what arrives (C-GET: each received instance; C-MOVE: each
    :class:`Progress`). Closing it early (``aclose()``, leaving ``async with``, or the task
    being cancelled) sends C-CANCEL-RQ; the result then has the Cancel status and the counts
    so far. A request still waiting for a slot of the operations window is withdrawn
    instead: never sent, its result is Cancel with nothing done."""

    def __init__(
        self,
        assoc: Association,
        service: str,
        run: Callable[[Retrieval], Any],
    ) -> None:
        self._assoc = assoc
        self.service = service
        self._run = run
        self._task: asyncio.Task[RetrieveResult] | None = None
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._op: _Outgoing | None = None
        self._cancel_sent = False
        #: Set once the request has a Message ID: from then on it is (being) sent, and
        #: only a C-CANCEL-RQ can stop it.
        self._sending = False
        self._running = False
        #: Stopped before anything was sent: the request is withdrawn, never sent.
        self._withdrawn = False
        self._cancel_requested = False
        self.progress: Progress | None = None
        self.result: RetrieveResult | None = None

    def _start(self) -> asyncio.Task[RetrieveResult]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._main())
            self._task.add_done_callback(lambda _t: self._items.put_nowait(_END))
        return self._task

    async def _main(self) -> RetrieveResult:
        self._running = True
        try:
            if not self._withdrawn:
                result: RetrieveResult = await self._run(self)
                return result
        except asyncio.CancelledError:
            if not self._withdrawn:
                raise
        # Withdrawn while waiting for a slot of the operations window (or before that):
        # nothing reached the peer, so nothing was done.
        self.result = RetrieveResult(status_info(CANCEL, self.service))
        return self.result

    def __await__(self) -> Generator[Any, None, RetrieveResult]:
        return self._wait().__await__()

    async def _wait(self) -> RetrieveResult:
        task = self._start()
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.shield(self._cancel_and_wait())
            raise

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        task = self._start()
        try:
            while True:
                item = await self._items.get()
                if item is _END:
                    break
                yield item
            await task  # re-raise what ended it
        finally:
            if not task.done():
                await asyncio.shield(self._cancel_and_wait())

    async def __aenter__(self) -> Retrieval:
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        task = self._start()
        if not task.done():
            await self._cancel_and_wait()

    async def aclose(self) -> RetrieveResult | None:
        """Cancel (C-CANCEL-RQ) and wait for the final response."""
        if self._task is None:
            return None
        if not self._task.done():
            await self._cancel_and_wait()
        return self.result

    async def _cancel_and_wait(self) -> None:
        task = self._start()
        if not task.done():
            if not self._sending:
                # Not sent yet (waiting for a window slot): withdraw it. Cancelling the
                # task is safe only here, before any byte of the request is written.
                self._withdrawn = True
                if self._running:
                    task.cancel()
            else:
                self._cancel_requested = True
                await self._send_cancel()
        # Wait for the final response without taking on the task's outcome (an error is
        # the awaiting caller's to see), nor hiding our own cancellation.
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning

    async def _send_cancel(self) -> None:
        """C-CANCEL-RQ (PS3.7 9.3.2.3 / 9.3.3.3), once, if the request is out."""
        if self._op is None or self._cancel_sent:
            return  # not yet: sent as soon as the request is (see _drive)
        self._cancel_sent = True
        try:
            await self._assoc.cancel(self._op)
        except AiodimseError as exc:
            log.debug("C-CANCEL not sent: %s", exc)

    def _emit(self, item: Any) -> None:
        self._items.put_nowait(item)


_END = object()


async def _drive(
    retrieval: Retrieval,
    start: Callable[[Callable[[int], None]], Any],
    on_progress: Callable[[Progress], Any] | None,
    emit_progress: bool,
) -> tuple[RetrieveResult, Message]:
    """Send the request and read responses until the final one.

    ``start(sending)`` invokes the request and calls ``sending(message_id)`` once the
    request has its Message ID, right before it goes out.
    """
    assoc = retrieval._assoc

    def sending(_mid: int) -> None:
        retrieval._sending = True

    op: _Outgoing = await start(sending)
    retrieval._op = op
    if retrieval._cancel_requested:
        await retrieval._send_cancel()  # asked for while the request was being sent
    service = retrieval.service
    try:
        while True:
            message, data = await assoc._response(op)
            code = int(getattr(message, "status", 0))
            remaining, completed, failed, warning = _counts(message)
            info = status_info(code, service)
            if is_pending(code):
                progress = Progress(info, remaining, completed, failed, warning)
                retrieval.progress = progress
                if on_progress is not None:
                    on_progress(progress)
                if emit_progress:
                    retrieval._emit(progress)
                continue
            result = RetrieveResult(info, completed, failed, warning, remaining)
            if data:
                assert op.context.transfer_syntax is not None
                try:
                    ident = decode_dataset(data, op.context.transfer_syntax)
                    failed_uids = ident.get("FailedSOPInstanceUIDList", [])
                    if isinstance(failed_uids, str):
                        failed_uids = [failed_uids]
                    result.failed_instances = [str(u) for u in failed_uids if u]
                except Exception as exc:  # a broken identifier must not hide the result
                    log.warning("cannot read the final %s identifier: %s", service, exc)
            retrieval.result = result
            return result, message
    except BaseException:
        _give_up(retrieval, op)
        raise


def _give_up(retrieval: Retrieval, op: _Outgoing) -> None:
    """Nobody will read the rest of the responses (a progress callback raised, the task
    was cancelled): ask the peer to stop (C-CANCEL) and let the final response complete
    the operation in the background, so that its window slot is not held forever."""
    assoc = retrieval._assoc
    if assoc._outgoing.get(op.message_id) is not op:
        return  # complete already
    assoc._abandon(op)
    if assoc._outgoing.get(op.message_id) is op and assoc.is_established:
        assoc._spawn(retrieval._send_cancel())


def _check_scp_role(assoc: Association) -> None:
    """C-GET receives its instances as C-STORE requests on this same association, so we
    need the SCP role for storage classes (PS3.4 C.4.3.1, PS3.7 D.3.3.4); say so in words."""
    negotiated = assoc.negotiated
    assert negotiated is not None  # context_for() has checked
    if any(c.scp and c.accepted for c in negotiated.contexts):
        return
    need = (
        "C-GET receives the instances on this association as C-STORE requests, which needs"
        " the SCP role for their storage classes"
    )
    ui = assoc.request.user_information if assoc.request is not None else None
    asked = [r for r in (ui.role_selections if ui else ()) if r.scp_role]
    if assoc._fsm.is_requestor and not asked:
        raise NegotiationError(
            f"{need}; this association did not propose that role"
            " (connect with contexts=aiodimse.contexts.for_get())"
        )
    raise NegotiationError(
        f"{need}; it was proposed for {len(asked)} storage class(es) and"
        f" {assoc.peer_ae or 'the peer'} granted it for none"
    )


def _raise_on_failure(result: RetrieveResult, message: Message, service: str) -> None:
    """A Failure status raises StatusError (the result stays on ``Retrieval.result``)."""
    if result.status.category is StatusCategory.FAILURE:
        parts = [str(getattr(message, "error_comment", None) or "").strip()]
        if result.completed or result.failed or result.warning:
            parts.append(
                f"{result.completed} completed, {result.failed} failed, {result.warning} warning"
            )
        if result.failed_instances:
            shown = ", ".join(result.failed_instances[:3])
            more = len(result.failed_instances) - 3
            parts.append(f"failed: {shown}" + (f" and {more} more" if more > 0 else ""))
        detail = "; ".join(p for p in parts if p)
        raise StatusError(result.status.code, result.status.name, detail, service)


# ---------------------------------------------------------------------------------------
# SCU


def get(
    assoc: Association,
    query: Dataset | Mapping[str, Any],
    *,
    model: str = "study",
    sink: Sink | None = None,
    priority: int = Priority.MEDIUM,
    on_progress: Callable[[Progress], Any] | None = None,
    check: bool = True,
) -> Retrieval:
    """C-GET: the instances arrive as C-STORE sub-operations on this same association.

    Each is written to ``sink`` (e.g. a DirectorySink) or kept in memory
    (``StoredInstance.data``). The association must have been negotiated with the SCP role
    for the storage classes (``contexts=aiodimse.contexts.for_get()``).
    """
    sop_class = model_uid(model, "get")
    identifier = to_dataset(query)
    context = assoc.context_for(sop_class)
    _check_scp_role(assoc)

    async def run(retrieval: Retrieval) -> RetrieveResult:
        receiver = _GetReceiver(sink)
        async with assoc._get_lock:
            assoc._get_receiver = receiver

            async def forward() -> None:
                while (item := await receiver.queue.get()) is not None:
                    retrieval._emit(item)

            forwarder = asyncio.get_running_loop().create_task(forward())

            async def start(sending: Callable[[int], None]) -> _Outgoing:
                assert context.transfer_syntax is not None
                return await assoc._invoke(
                    context,
                    lambda mid: CGetRQ(
                        message_id=mid, affected_sop_class_uid=sop_class, priority=priority
                    ),
                    encode_dataset(identifier, context.transfer_syntax),
                    on_message_id=sending,
                )

            try:
                result, message = await _drive(retrieval, start, on_progress, False)
            finally:
                # Stores already committed are in the queue; let them out, then stop.
                receiver.queue.put_nowait(None)
                await forwarder
                assoc._get_receiver = None
        result.instances = receiver.instances
        log.info("C-GET from %s: %s", assoc.peer_ae, result)
        if check:
            _raise_on_failure(result, message, "C-GET")
        return result

    return Retrieval(assoc, "C-GET", run)


def move(
    assoc: Association,
    query: Dataset | Mapping[str, Any],
    destination: str,
    *,
    model: str = "study",
    receive: StorageServer | None = None,
    priority: int = Priority.MEDIUM,
    on_progress: Callable[[Progress], Any] | None = None,
    check: bool = True,
    arrival_timeout: float = 30.0,
) -> Retrieval:
    """C-MOVE to ``destination``. With ``receive=`` (a StorageServer on this loop that the
    SCP knows as ``destination``), the result lists the instances it received for this
    move, and the call returns only once every completed sub-operation has been stored."""
    if not destination.strip() or len(destination) > 16:
        raise ValueError(f"move destination {destination!r} must be 1 to 16 characters")
    sop_class = model_uid(model, "move")
    identifier = to_dataset(query)
    context = assoc.context_for(sop_class)

    async def run(retrieval: Retrieval) -> RetrieveResult:
        tracker: _MoveTracker | None = None

        async def start(sending: Callable[[int], None]) -> _Outgoing:
            nonlocal tracker

            def register(mid: int) -> None:
                nonlocal tracker
                sending(mid)
                if receive is not None:
                    tracker = _MoveTracker.register(receive, assoc.local_ae, mid)

            def taken(mid: int) -> bool:
                # The receiver tells moves apart by Move Originator AE Title and Message ID
                # (PS3.7 9.3.1.1): another association from our AE title may be using this
                # ID for a move into the same server right now.
                return receive is not None and _MoveTracker.key_for(assoc.local_ae, mid) in (
                    _registry(receive)
                )

            assert context.transfer_syntax is not None
            return await assoc._invoke(
                context,
                lambda mid: CMoveRQ(
                    message_id=mid,
                    affected_sop_class_uid=sop_class,
                    move_destination=destination,
                    priority=priority,
                ),
                encode_dataset(identifier, context.transfer_syntax),
                on_message_id=register,
                avoid_message_id=taken,
            )

        try:
            result, message = await _drive(retrieval, start, on_progress, True)
            if tracker is not None:
                expected = result.completed + result.warning
                await tracker.wait_for(expected, arrival_timeout)
                result.instances = list(tracker.instances)
        finally:
            if tracker is not None:
                tracker.unregister()
        log.info("C-MOVE to %s via %s: %s", destination, assoc.peer_ae, result)
        if check:
            _raise_on_failure(result, message, "C-MOVE")
        return result

    return Retrieval(assoc, "C-MOVE", run)


class _MoveTracker:
    """Collects, on a StorageServer, the instances that belong to one C-MOVE."""

    def __init__(self, server: StorageServer, ae: str, message_id: int) -> None:
        self.server = server
        self.key = self.key_for(ae, message_id)
        self.instances: list[StoredInstance] = []
        self._changed = asyncio.Event()

    @staticmethod
    def key_for(ae: str, message_id: int) -> tuple[str, int]:
        return (ae.strip(), message_id)

    @classmethod
    def register(cls, server: StorageServer, ae: str, message_id: int) -> _MoveTracker:
        tracker = cls(server, ae, message_id)
        registry = _registry(server)
        registry[tracker.key] = tracker
        return tracker

    def unregister(self) -> None:
        registry = _registry(self.server)
        if registry.get(self.key) is self:
            del registry[self.key]

    def add(self, instance: StoredInstance) -> None:
        self.instances.append(instance)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.instances) < count:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "C-MOVE reported %d completed sub-operations but %d arrived here",
                    count,
                    len(self.instances),
                )
                return
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


def _registry(server: StorageServer) -> dict[tuple[str, int], _MoveTracker]:
    registry: dict[tuple[str, int], _MoveTracker] | None = getattr(server, "_move_trackers", None)
    if registry is None:
        registry = {}
        server._move_trackers = registry  # type: ignore[attr-defined]

        def route(instance: StoredInstance) -> None:
            ae = (instance.move_originator_ae_title or "").strip()
            mid = instance.move_originator_message_id
            tracker = registry.get((ae, mid)) if mid is not None else None
            if tracker is None and mid is None and len(registry) == 1:
                # The SCP did not say which move this is for; with one move in flight,
                # it can only be that one.
                tracker = next(iter(registry.values()))
            if tracker is not None:
                tracker.add(instance)

        server.add_listener(route)
    return registry


# ---------------------------------------------------------------------------------------
# SCP


async def serve_retrieve(assoc: Association, inc: _Incoming, message: CGetRQ | CMoveRQ) -> None:
    """Perform a C-GET or C-MOVE request with the handler's ``on_get`` / ``on_move``."""
    is_move = isinstance(message, CMoveRQ)
    service = "C-MOVE" if is_move else "C-GET"
    rsp_type: type[CGetRSP] | type[CMoveRSP] = CMoveRSP if is_move else CGetRSP
    context = inc.context
    target = inc.target
    inc.target = None
    data = target.getvalue() if isinstance(target, MemoryTarget) else None

    async def respond(
        status: int,
        remaining: int | None,
        completed: int,
        failed: int,
        warning: int,
        failed_uids: Sequence[str] = (),
        comment: str | None = None,
    ) -> None:
        identifier: bytes | None = None
        if failed_uids and not is_pending(status):
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = list(failed_uids)
            assert context.transfer_syntax is not None
            identifier = encode_dataset(ds, context.transfer_syntax)
        final = not is_pending(status)
        await assoc.send_message(
            context.context_id,
            rsp_type(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                status=status,
                number_of_remaining_suboperations=remaining if not final or remaining else None,
                number_of_completed_suboperations=completed,
                number_of_failed_suboperations=failed,
                number_of_warning_suboperations=warning,
                has_dataset=identifier is not None,
                error_comment=comment,
            ),
            identifier,
        )

    handler_name = "on_move" if is_move else "on_get"
    handler = getattr(assoc.handler, handler_name, None)
    if not callable(handler):
        await respond(0x0122, None, 0, 0, 0, comment=f"this SCP does not support {service}")
        return
    try:
        identifier = assoc.decode_identifier(data, context)
    except Exception as exc:
        await respond(IDENTIFIER_DOES_NOT_MATCH, None, 0, 0, 0, comment=str(exc)[:64])
        return

    destination_address: tuple[str, int] | None = None
    if is_move:
        assert isinstance(message, CMoveRQ)
        destination_address = _resolve_destination(assoc, message.move_destination)
        if destination_address is None:
            log.warning(
                "#%d C-MOVE to unknown destination %r from %s",
                assoc.id,
                message.move_destination,
                assoc.peer_ae,
            )
            await respond(
                MOVE_DESTINATION_UNKNOWN,
                None,
                0,
                0,
                0,
                comment=f"unknown destination {message.move_destination[:40]}",
            )
            return

    request = RetrieveRequest(
        assoc,
        context,
        message,
        inc,
        identifier,
        message.move_destination if isinstance(message, CMoveRQ) else None,
    )
    try:
        found = await _collect(handler(request))
    except StatusError as exc:
        await respond(exc.status, None, 0, 0, 0, comment=exc.detail or None)
        return
    except AiodimseError:
        raise
    except Exception as exc:
        log.exception("#%d %s handler failed", assoc.id, service)
        await respond(UNABLE_TO_PROCESS, None, 0, 0, 0, comment=f"{exc}"[:64])
        return

    total = len(found)
    log.debug(
        "#%d %s from %s: %d instance(s)%s",
        assoc.id,
        service,
        assoc.peer_ae,
        total,
        f" to {message.move_destination}" if isinstance(message, CMoveRQ) else "",
    )
    completed = failed = warning = 0
    failed_uids: list[str] = []

    sub: Association | None = None
    if total and isinstance(message, CMoveRQ) and not inc.cancelled.is_set():
        assert destination_address is not None
        try:
            sub = await _open_destination(
                assoc, message.move_destination, destination_address, found
            )
        except AiodimseError as exc:
            log.warning("#%d cannot reach move destination: %s", assoc.id, exc)
            await respond(
                UNABLE_TO_PERFORM_SUBOPERATIONS,
                0,
                0,
                total,
                0,
                _uids_of(found),
                comment=str(exc)[:64],
            )
            return
    storer: Association = sub if sub is not None else assoc
    originator = (assoc.peer_ae, message.message_id) if is_move else None
    cancelled = False
    try:
        for index, item in enumerate(found):
            if inc.cancelled.is_set():
                cancelled = True
                break
            try:
                status = await storer.store(
                    _source_of(item), move_originator=originator, check=False
                )
            except asyncio.CancelledError:
                raise
            except AssociationError as exc:
                if not isinstance(exc, NegotiationError):
                    if storer is assoc:
                        raise  # our own association is gone: nothing more can be sent
                    log.warning("#%d %s destination lost: %s", assoc.id, service, exc)
                    failed += len(found) - index
                    failed_uids.extend(_uids_of(found[index:]))
                    break
                # No context for this instance's SOP class / transfer syntax: it alone fails.
                _sub_failed(assoc, service, item, exc)
                failed += 1
                failed_uids.extend(_uids_of([item]))
            except Exception as exc:
                # This instance cannot be sent (unreadable file, no transfer syntax the
                # peer accepts, a broken data set): it fails alone, the others go on.
                _sub_failed(assoc, service, item, exc)
                failed += 1
                failed_uids.extend(_uids_of([item]))
            else:
                if status.category is StatusCategory.SUCCESS:
                    completed += 1
                elif status.category is StatusCategory.WARNING:
                    warning += 1
                else:
                    failed += 1
                    failed_uids.extend(_uids_of([item]))
            remaining = total - completed - failed - warning
            if remaining and not inc.cancelled.is_set():
                await respond(PENDING, remaining, completed, failed, warning)
    finally:
        if sub is not None:
            try:
                await sub.release()
            except AiodimseError:
                pass
    remaining = total - completed - failed - warning
    log.info(
        "#%d %s %s level from %s%s: %d completed, %d failed, %d warning%s",
        assoc.id,
        service,
        request.query_level.strip().upper() or "?",
        assoc.peer_ae,
        f" to {message.move_destination.strip()}" if isinstance(message, CMoveRQ) else "",
        completed,
        failed,
        warning,
        f", cancelled with {remaining} remaining" if cancelled else "",
    )
    if cancelled:
        # PS3.4 C.4.2.3.1 / C.4.3.3.1: Cancel with the counts so far; Remaining is what
        # was never started.
        await respond(CANCEL, remaining, completed, failed, warning, failed_uids)
    elif failed and not completed and not warning:
        # PS3.4 C.4.2.2.1 / C.4.3.2.1: Failure when every sub-operation was unsuccessful.
        await respond(
            UNABLE_TO_PERFORM_SUBOPERATIONS,
            0,
            completed,
            failed,
            warning,
            failed_uids,
            comment=f"all {failed} sub-operations failed",
        )
    elif failed or warning:
        await respond(
            SUBOPERATIONS_COMPLETE_WITH_FAILURES, 0, completed, failed, warning, failed_uids
        )
    else:
        await respond(SUCCESS, 0, completed, failed, warning)


def _resolve_destination(assoc: Association, ae: str) -> tuple[str, int] | None:
    resolver = getattr(assoc.handler, "resolve_destination", None)
    if callable(resolver):
        found = resolver(ae)
        if found is not None:
            return (str(found[0]), int(found[1]))
    server = getattr(assoc, "server", None)
    table: Mapping[str, tuple[str, int]] = getattr(server, "destinations", {}) or {}
    key = ae.strip()
    for name, address in table.items():
        if name.strip() == key:
            return address
    return None


async def _collect(result: Any) -> list[Any]:
    from .scp import _aiter

    return [item async for item in _aiter(result)]


def _source_of(item: Any) -> Any:
    """What to C-STORE for a handler's item: a Dataset or a path (an index record's
    ``.path``)."""
    if isinstance(item, (Dataset, str, bytes, os.PathLike)):
        return item
    path = getattr(item, "path", None)
    if path is None:
        raise NotDicomError(f"{type(item).__name__} has no file to send")
    return path


def _uid_of(item: Any) -> str | None:
    """The SOP Instance UID of a handler's item, None if it cannot be known."""
    if isinstance(item, Dataset):
        return str(item.get("SOPInstanceUID", "") or "") or None
    known = getattr(item, "sop_instance_uid", None)
    if known:
        return str(known)
    try:
        return read_part10(_source_of(item)).sop_instance_uid
    except (NotDicomError, OSError, TypeError, ValueError):
        return None


def _uids_of(items: Sequence[Any]) -> list[str]:
    return [uid for uid in map(_uid_of, items) if uid]


def _sub_failed(assoc: Association, service: str, item: Any, exc: BaseException) -> None:
    what = _uid_of(item) or (item if not isinstance(item, Dataset) else "a data set")
    log.warning("#%d %s sub-operation for %s failed: %s", assoc.id, service, what, exc)


def _describe(item: Any) -> tuple[str, str] | None:
    """(SOP class, transfer syntax) of a file or dataset to send, None if unreadable."""
    if isinstance(item, Dataset):
        sop_class = item.get("SOPClassUID")
        if not sop_class:
            return None
        meta = getattr(item, "file_meta", None)
        ts = str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else None
        return str(sop_class), ts or uids.EXPLICIT_VR_LITTLE_ENDIAN
    try:
        info = read_part10(os.fspath(_source_of(item)))
    except (NotDicomError, OSError, TypeError, ValueError):
        return None
    return info.sop_class_uid, info.transfer_syntax_uid


async def _open_destination(
    assoc: Association, ae: str, address: tuple[str, int], items: Sequence[Any]
) -> Association:
    """The sub-association to a C-MOVE destination, proposing what the items need."""
    from .association import connect
    from .contexts import for_instances

    described = [d for d in (_describe(item) for item in items) if d is not None]
    contexts = for_instances(described) or [ContextRequest(uids.VERIFICATION_SOP_CLASS)]
    server = getattr(assoc, "server", None)
    return await connect(
        address[0],
        address[1],
        calling_ae=assoc.local_ae,
        called_ae=ae.strip(),
        contexts=contexts,
        timeouts=assoc.timeouts,
        ssl=getattr(server, "ssl", None) if getattr(server, "move_over_tls", False) else None,
    )
