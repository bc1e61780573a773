"""The SCU side of C-GET and C-MOVE (PS3.4 C.4.2-C.4.3, PS3.7 9.1.3-9.1.4).

``assoc.get(query)`` receives the C-STORE sub-operations on the same association (the SCP
role for the storage classes was negotiated through role selection); ``assoc.move(query,
destination, receiver=scp)`` has them sent to a receiver on the same loop (a
:class:`~aiodimse.StorageServer`) and ends when the final response is in *and* every
completed instance is stored there, matching instances to the move by Move Originator AE
Title / Message ID (0000,1030)/(0000,1031). Both are :class:`Operation` objects: iterate
them for each instance as it is committed, await them for a :class:`RetrieveResult`.

The query is a pydicom Dataset, a mapping of keywords (or tags) to values, or a light
:class:`~aiodimse.query.Identifier` (what ``aiodimse get`` / ``move`` build from ``-k``
keys), which is encoded without pydicom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ..config import MAX_INFLATED_IDENTIFIER
from ..dicomfile import decode_dataset, encode_dataset
from ..dimse.commands import CGetRQ, CMoveRQ, Message, Priority
from ..dimse.status import StatusCategory, status_info
from ..errors import IncompleteRetrieval, NegotiationError, StatusError, check_ae_title
from ..query import Identifier, model_uid, to_dataset
from ..results import Progress, RetrieveResult, StoredInstance
from ..sinks import MemorySink, MoveReceiver, MoveTracker, Sink, StorageHandler
from ..transport.exchange import Exchange, Outgoing
from ..uids import transfer_syntax
from .operation import Operation, OperationCore
from .services import context_for, failure_error, result_detail

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import (is_dataset() checks at run time).
    from pydicom import Dataset

__all__ = ["Retrieval", "RetrieveQuery", "RetrieveUser", "StoreDiversion"]

log = logging.getLogger("aiodimse.retrieve")

#: A C-GET or C-MOVE in progress: iterate it for the instances, await it for the result.
Retrieval = Operation[StoredInstance, RetrieveResult]

#: What ``get`` and ``move`` take as the query: a light Identifier (encoded without
#: pydicom; an Identifier is also a Mapping), a pydicom Dataset, or keywords (or tags) to
#: values.
RetrieveQuery: TypeAlias = "Identifier | Dataset | Mapping[str, Any]"

#: ``divert(handler)``: while the context is open, the C-STORE requests the peer sends on
#: this association go to ``handler`` (the C-GET's receiver) instead of the server's.
StoreDiversion = Callable[[object], contextlib.AbstractAsyncContextManager[None]]


def _identifier(query: RetrieveQuery) -> Identifier | Dataset:
    """The identifier to send: a light Identifier as it is, anything else as a Dataset
    (ValueError names a bad keyword now, before anything is sent)."""
    return query if isinstance(query, Identifier) else to_dataset(query)


def _encode(identifier: Identifier | Dataset, syntax: str) -> bytes:
    """The identifier in the context's transfer syntax: a light one without pydicom, unless
    the encoder refuses the syntax (deflated), then like a Dataset."""
    if isinstance(identifier, Identifier):
        ts = transfer_syntax(syntax)
        data = identifier.encode(ts) if ts is not None else None
        if data is not None:
            return data
        identifier = identifier.to_dataset()
    return encode_dataset(identifier, syntax)


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
        self.listeners.append(self.queue.put_nowait)


async def _forward(
    core: OperationCore[RetrieveResult],
    queue: asyncio.Queue[StoredInstance | None],
    into: list[StoredInstance],
) -> None:
    """Each instance as it is committed: kept for the result, handed to the iterator."""
    while (item := await queue.get()) is not None:
        into.append(item)
        await core.emit(item)


class RetrieveUser:
    """``get`` and ``move`` over one exchange."""

    def __init__(self, exchange: Exchange, divert_stores: StoreDiversion) -> None:
        self.exchange = exchange
        self._divert_stores = divert_stores
        self._get_lock = asyncio.Lock()

    def _result(
        self,
        core: OperationCore[RetrieveResult],
        message: Message,
        data: bytes | None,
        context_ts: str,
    ) -> RetrieveResult:
        service = core.service
        remaining, completed, failed, warning = _counts(message)
        info = status_info(int(getattr(message, "status", 0)), service)
        result = RetrieveResult(info, completed, failed, warning, remaining)
        if data:
            try:
                ident = decode_dataset(data, context_ts, max_inflated_size=MAX_INFLATED_IDENTIFIER)
                failed_uids = ident.get("FailedSOPInstanceUIDList", [])
                if isinstance(failed_uids, str):
                    failed_uids = [failed_uids]
                result.failed_instances = [str(u) for u in failed_uids if u]
            except Exception as exc:  # a broken identifier must not hide the result
                log.warning("cannot read the final %s identifier: %s", service, exc)
        return result

    @staticmethod
    def _pending(
        core: OperationCore[RetrieveResult], on_progress: Callable[[Progress], Any] | None
    ) -> Callable[[Message, bytes | None], Any]:
        async def pending(message: Message, data: bytes | None) -> None:
            remaining, completed, failed, warning = _counts(message)
            info = status_info(int(getattr(message, "status", 0)), core.service)
            progress = Progress(info, remaining, completed, failed, warning)
            core.progress = progress
            if on_progress is not None:
                on_progress(progress)

        return pending

    def _check_scp_role(self) -> None:
        """C-GET receives its instances as C-STORE requests on this same association, so
        we need the SCP role for storage classes (PS3.4 C.4.3.1, PS3.7 D.3.3.4)."""
        link = self.exchange.link
        negotiated = link.negotiated
        assert negotiated is not None  # context_for() has checked
        if any(c.scp and c.accepted for c in negotiated.contexts):
            return
        need = (
            "C-GET receives the instances on this association as C-STORE requests, which"
            " needs the SCP role for their storage classes"
        )
        ui = link.request.user_information if link.request is not None else None
        asked = [r for r in (ui.role_selections if ui else ()) if r.scp_role]
        if link.is_requestor and not asked:
            raise NegotiationError(
                f"{need}; this association did not propose that role"
                " (connect with contexts=aiodimse.contexts.for_get())"
            )
        raise NegotiationError(
            f"{need}; it was proposed for {len(asked)} storage class(es) and"
            f" {link.peer_ae or 'the peer'} granted it for none"
        )

    # -- C-GET ----------------------------------------------------------------------------

    def get(
        self,
        query: RetrieveQuery,
        *,
        model: str = "study",
        receiver: Sink | None = None,
        priority: int = Priority.MEDIUM,
        on_progress: Callable[[Progress], Any] | None = None,
        check: bool = True,
    ) -> Retrieval:
        """C-GET: the instances arrive as C-STORE sub-operations on this same association.

        Each is written to ``receiver`` (a sink, e.g. a DirectorySink) or kept in memory
        (``StoredInstance.data``). The association must have been negotiated with the SCP
        role for the storage classes (``contexts=aiodimse.contexts.for_get()``). ``query``:
        an :class:`~aiodimse.query.Identifier`, a Dataset, or keywords to values.
        """
        exchange = self.exchange
        sop_class = model_uid(model, "get")
        identifier = _identifier(query)
        context = context_for(exchange.link.negotiated, sop_class)
        self._check_scp_role()
        assert context.transfer_syntax is not None
        syntax = context.transfer_syntax

        async def run(core: OperationCore[RetrieveResult]) -> RetrieveResult:
            handler = _GetReceiver(receiver)
            instances: list[StoredInstance] = []
            async with self._get_lock, self._divert_stores(handler):
                forwarder = asyncio.get_running_loop().create_task(
                    _forward(core, handler.queue, instances)
                )

                async def start() -> Outgoing:
                    return await exchange.invoke(
                        context,
                        lambda mid: CGetRQ(
                            message_id=mid, affected_sop_class_uid=sop_class, priority=priority
                        ),
                        _encode(identifier, syntax),
                        on_message_id=core.sending_now,
                    )

                try:
                    message, data = await core.drive(start, self._pending(core, on_progress))
                finally:
                    # Stores already committed are in the queue; let them out, then stop.
                    handler.queue.put_nowait(None)
                    await _settle(forwarder)
            result = self._result(core, message, data, syntax)
            result.instances = instances
            return _finish(core, result, message, check, f"C-GET from {exchange.link.peer_ae}")

        return Operation(OperationCore(exchange, "C-GET", run, RetrieveResult))

    # -- C-MOVE ---------------------------------------------------------------------------

    def move(
        self,
        query: RetrieveQuery,
        destination: str,
        *,
        model: str = "study",
        receiver: MoveReceiver | None = None,
        priority: int = Priority.MEDIUM,
        on_progress: Callable[[Progress], Any] | None = None,
        check: bool = True,
        arrival_timeout: float = 30.0,
    ) -> Retrieval:
        """C-MOVE to ``destination``. With ``receiver=`` (a StorageServer on this loop that
        the SCP knows as ``destination``), the result lists the instances it received for
        this move, iterating yields each as it is stored, and the operation ends only once
        every completed sub-operation has been stored (or ``arrival_timeout`` seconds
        after the final response). ``query``: an :class:`~aiodimse.query.Identifier`, a
        Dataset, or keywords to values; the receiver matches misnamed sub-operations
        against its UIDs."""
        check_ae_title(destination, "move destination")
        exchange = self.exchange
        link = exchange.link
        sop_class = model_uid(model, "move")
        identifier = _identifier(query)
        context = context_for(link.negotiated, sop_class)
        assert context.transfer_syntax is not None
        syntax = context.transfer_syntax

        async def run(core: OperationCore[RetrieveResult]) -> RetrieveResult:
            tracker: MoveTracker | None = None
            arrived: asyncio.Queue[StoredInstance | None] = asyncio.Queue()
            instances: list[StoredInstance] = []
            forwarder = asyncio.get_running_loop().create_task(_forward(core, arrived, instances))

            def register(mid: int) -> None:
                nonlocal tracker
                core.sending_now(mid)
                if receiver is not None:
                    tracker = receiver.expect_move(link.local_ae, mid, identifier)
                    tracker.on_instance = arrived.put_nowait

            def taken(mid: int) -> bool:
                # The receiver tells moves apart by Move Originator AE Title and Message ID
                # (PS3.7 9.3.1.1): another association from our AE title may be using this
                # ID for a move into the same server right now.
                return receiver is not None and receiver.expects_move(link.local_ae, mid)

            async def start() -> Outgoing:
                return await exchange.invoke(
                    context,
                    lambda mid: CMoveRQ(
                        message_id=mid,
                        affected_sop_class_uid=sop_class,
                        move_destination=destination,
                        priority=priority,
                    ),
                    _encode(identifier, syntax),
                    on_message_id=register,
                    avoid_message_id=taken,
                )

            try:
                message, data = await core.drive(start, self._pending(core, on_progress))
                result = self._result(core, message, data, syntax)
                if tracker is not None:
                    expected = result.completed + result.warning
                    await tracker.wait_for(expected, arrival_timeout)
                    result.undelivered = max(0, expected - len(tracker.instances))
            finally:
                if tracker is not None:
                    tracker.close()
                arrived.put_nowait(None)
                await _settle(forwarder)
            result.instances = instances
            return _finish(
                core, result, message, check, f"C-MOVE to {destination} via {link.peer_ae}"
            )

        return Operation(OperationCore(exchange, "C-MOVE", run, RetrieveResult))


async def _settle(task: asyncio.Task[None]) -> None:
    """Let the forwarder hand out what has arrived; if we are being cancelled, stop it."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise


def _finish(
    core: OperationCore[RetrieveResult],
    result: RetrieveResult,
    message: Message,
    check: bool,
    what: str,
) -> RetrieveResult:
    core.result = result
    incomplete = _incomplete(result, message, core.service)
    log.log(logging.WARNING if incomplete else logging.INFO, "%s: %s", what, result)
    if check:
        error = failure_error(result, message, core.service)
        if error is not None:
            raise error
        if incomplete is not None:
            raise incomplete
    return result


def _incomplete(result: RetrieveResult, message: Message, service: str) -> StatusError | None:
    """The error for a retrieval that ended without a failure status but did not bring
    everything (sub-operations failed, or reported instances never arrived)."""
    if result.status.category not in (StatusCategory.SUCCESS, StatusCategory.WARNING):
        return None
    if not result.failed and not result.undelivered:
        return None
    detail = result_detail(result, message)
    error = IncompleteRetrieval(result.status.code, result.status.name, detail, service)
    error.result = result
    return error
