"""The SCP side of DIMSE-C: the requests the peer invokes, handed to a user handler.

A handler is a plain object; aiodimse calls the hooks it has and offers the matching
services (Verification is always offered). ``docs/handlers.md`` lists every hook; in short:

``async on_echo(request) -> int | None``
    C-ECHO; without it, Success.
``open_store(request) -> StoreWriter | None`` (synchronous: called as the command arrives)
    a writer that receives the C-STORE data set fragments as they arrive (``DirectorySink``
    provides one), so large instances stream to disk.
``async stored(request, status, writer) -> None``
    told how each store through a writer ended (after its response status is known).
``async on_store(request) -> int | None``
    C-STORE when no writer took the data set: ``request.dataset`` (decoded on demand) or
    ``request.dataset_bytes`` (as received).
``on_find(request)`` -> async iterator (or iterable) of identifier Datasets
    C-FIND; each yielded Dataset becomes a Pending response (bytes are sent as they are:
    an identifier already encoded in ``request.transfer_syntax``).
``on_get(request)`` / ``on_move(request)`` -> the instances to send (paths or Datasets)
    C-GET / C-MOVE; aiodimse runs the sub-operations (see :mod:`.retrieve`).
``resolve_destination(ae) -> (host, port) | None`` (synchronous)
    where a C-MOVE destination is; the server's ``destinations`` table otherwise.
``async on_user_identity(identity, association) -> bool | bytes | None``
    PS3.7 D.3.3.7 credentials (see :class:`aiodimse.Server`).

Return a status code (or None for Success). Raise :class:`~aiodimse.errors.StatusError` to
answer a specific failure; any other exception is logged and answered with the service's
generic failure status, and the association carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import MAX_INFLATED_IDENTIFIER
from ..dicomfile import decode_dataset, empty_dataset, encode_dataset
from ..dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
)
from ..dimse.status import (
    CANCEL,
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    PENDING,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    UNABLE_TO_PROCESS,
    is_completed,
    status_info,
)
from ..errors import AssociationError, StatusError, store_error_status
from ..requests import FindRequest, Request, StoreRequest
from ..transport.exchange import Exchange, Incoming
from ..transport.targets import DataTarget, MemoryTarget, NullTarget
from ..ul.negotiation import NegotiatedContext
from .hooks import aiter_results, call_hook, handler_hook
from .retrieve import SUB_OPERATION_WINDOW, OpenAssociation, serve_retrieve

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import (is_dataset() checks at run time).
    from pydicom import Dataset

__all__ = ["ServiceProvider"]

log = logging.getLogger("aiodimse.scp")

#: C-FIND matches sent between two turns of the event loop.
_YIELD_EVERY = 8


class ServiceProvider:
    """Performs the requests that arrive on one association with ``handler``'s hooks."""

    def __init__(
        self,
        exchange: Exchange,
        owner: object,
        *,
        handler: object | None = None,
        destinations: Mapping[str, tuple[str, int]] | None = None,
        open_association: OpenAssociation | None = None,
        sub_operation_window: int = SUB_OPERATION_WINDOW,
        move_window: int = 1,
    ) -> None:
        self.exchange = exchange
        #: What requests name as their ``association`` (the public Association).
        self.owner = owner
        self.handler = handler
        self.destinations: Mapping[str, tuple[str, int]] = destinations or {}
        self.open_association = open_association
        #: Most C-STORE sub-operations outstanding per C-GET / C-MOVE (see :mod:`.retrieve`).
        self.sub_operation_window = sub_operation_window
        #: The window a C-MOVE proposes on its sub-association (1: none is proposed).
        self.move_window = move_window
        #: While a C-GET we invoked is in progress, its C-STORE sub-operations go here.
        self._diverted: object | None = None
        exchange.performer = self

    @property
    def id(self) -> int:
        return self.exchange.link.id

    @property
    def peer_ae(self) -> str:
        return self.exchange.link.peer_ae

    @contextlib.asynccontextmanager
    async def divert_stores(self, handler: object) -> AsyncIterator[None]:
        """C-STORE requests go to ``handler`` while the context is open (a C-GET's
        receiver: the sub-operations arrive on the association that sent the C-GET)."""
        self._diverted = handler
        try:
            yield
        finally:
            self._diverted = None

    def _store_handler(self) -> object | None:
        return self._diverted if self._diverted is not None else self.handler

    # -- answering -------------------------------------------------------------------------

    async def answer(self, inc: Incoming, response: Any, dataset: bytes | None = None) -> None:
        """Send a response to ``inc`` on its presentation context."""
        await self.exchange.respond(inc, response, dataset)

    @property
    def can_respond(self) -> bool:
        """Whether a response can still be sent on this association."""
        return self.exchange.can_respond

    async def run_handler(
        self,
        call: Awaitable[Any] | Any,
        failure: int | Callable[[Exception], int],
        service: str,
        inc: Incoming,
    ) -> tuple[int, str | None]:
        """Await a handler's result: (status, error comment)."""
        try:
            result = await call_hook(call)
            status = SUCCESS if result is None else int(result)
        except Exception as exc:
            return self.handler_failed(exc, failure, service, inc)
        return status, None

    def handler_failed(
        self,
        exc: Exception,
        failure: int | Callable[[Exception], int],
        service: str,
        inc: Incoming,
    ) -> tuple[int, str | None]:
        """The (status, comment) answering a handler that raised: a StatusError's own
        status, else ``failure`` (or ``failure(exc)``), logged at WARNING with the
        association and Message ID.
        Re-raises only when the association is gone and nobody can be answered."""
        if isinstance(exc, StatusError):
            return exc.status, exc.detail or None
        if isinstance(exc, AssociationError) and not self.can_respond:
            raise exc  # our association ended: there is nobody to answer
        log.warning(
            "#%d %s message %d from %s: the handler failed: %s: %s",
            self.id,
            service,
            inc.message_id,
            self.peer_ae,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        status = failure(exc) if callable(failure) else failure
        return status, f"{type(exc).__name__}: {exc}"[:64]

    def decode_identifier(self, inc: Incoming) -> Dataset:
        """The request's identifier (empty when it carried none), every element decoded
        (so that a bad one fails here, not in a handler); raises if undecodable."""
        target = inc.take_target()
        data = target.getvalue() if isinstance(target, MemoryTarget) else None
        if target is not None:
            target.discard()
        if data is None:
            return empty_dataset()
        assert inc.context.transfer_syntax is not None
        identifier = decode_dataset(
            data, inc.context.transfer_syntax, max_inflated_size=MAX_INFLATED_IDENTIFIER
        )
        for _ in identifier.iterall():
            pass  # pydicom converts lazily: an unknown VR or bad value raises now
        return identifier

    # -- Performer ---------------------------------------------------------------------------

    def open_target(self, inc: Incoming) -> DataTarget:
        message = inc.message
        if isinstance(message, CStoreRQ):
            opener = handler_hook(self._store_handler(), "open_store")
            if opener is not None:
                request = StoreRequest(self.owner, inc.context, message, inc)
                try:
                    writer = opener(request)
                except StatusError as exc:
                    log.warning("#%d refusing C-STORE: %s", self.id, exc)
                    inc.error = exc
                    return NullTarget()
                except Exception as exc:
                    log.error("#%d cannot open a store writer: %s", self.id, exc)
                    inc.error = exc
                    return NullTarget()
                if writer is not None:
                    return writer  # type: ignore[no-any-return]
        return MemoryTarget(self.exchange.max_in_memory)

    async def perform(self, inc: Incoming) -> None:
        message = inc.message
        context = inc.context
        if not context.scp:
            log.warning(
                "#%d %s on context %d where we are not the SCP",
                self.id,
                type(message).__name__,
                context.context_id,
            )
        if isinstance(message, CStoreRQ):
            await self._serve_store(inc, message)
        elif isinstance(message, CEchoRQ):
            await self._serve_echo(inc, message)
        elif isinstance(message, CFindRQ):
            await self._serve_find(inc, message)
        elif isinstance(message, (CGetRQ, CMoveRQ)):
            await serve_retrieve(self, inc, message)
        else:  # pragma: no cover - the command codec knows no other requests
            log.warning("#%d unsupported request %s", self.id, type(message).__name__)

    # -- C-ECHO ---------------------------------------------------------------------------

    async def _serve_echo(self, inc: Incoming, message: CEchoRQ) -> None:
        handler = handler_hook(self.handler, "on_echo")
        status, comment = SUCCESS, None
        if handler is not None:
            request = Request(self.owner, inc.context, message, inc)
            status, comment = await self.run_handler(
                handler(request), PROCESSING_FAILURE, "C-ECHO", inc
            )
        await self.answer(
            inc,
            CEchoRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                status=status,
                error_comment=comment,
            ),
        )

    # -- C-STORE --------------------------------------------------------------------------

    async def _serve_store(self, inc: Incoming, message: CStoreRQ) -> None:
        target = inc.take_target()
        status: int = OUT_OF_RESOURCES
        comment: str | None = None
        if not message.has_dataset:
            # PS3.7 9.3.1.1: a C-STORE-RQ always carries the data set to store.
            status, comment = CANNOT_UNDERSTAND, "C-STORE-RQ without a data set"
        elif message.affected_sop_class_uid != inc.context.abstract_syntax:
            # PS3.7 9.1.1.1.2: the SOP class must be the context's abstract syntax.
            status = DATASET_DOES_NOT_MATCH
            comment = "SOP Class UID does not match the presentation context"
            if target is not None:
                target.discard()
        elif isinstance(inc.error, StatusError):
            status, comment = inc.error.status, inc.error.detail or None
        elif inc.error is not None:
            status = store_error_status(inc.error)
            comment = f"cannot store: {inc.error}"[:64]
        elif target is not None and not isinstance(target, (MemoryTarget, NullTarget)):
            try:
                status, comment = await self.run_handler(
                    target.commit(),  # type: ignore[attr-defined]
                    store_error_status,
                    "C-STORE",
                    inc,
                )
            finally:
                if not is_completed(status):
                    target.discard()
            await self._notify_store(inc, message, status, target)
        else:
            handler = handler_hook(self._store_handler(), "on_store")
            if handler is None:
                status, comment = SOP_CLASS_NOT_SUPPORTED, "this SCP stores nothing"
            else:
                request = StoreRequest(
                    self.owner,
                    inc.context,
                    message,
                    inc,
                    target if isinstance(target, MemoryTarget) else None,
                )
                status, comment = await self.run_handler(
                    handler(request), PROCESSING_FAILURE, "C-STORE", inc
                )
            if target is not None:
                target.discard()
        log.log(
            logging.INFO if status == SUCCESS else logging.WARNING,
            "#%d C-STORE %s from %s: %s%s",
            self.id,
            message.affected_sop_instance_uid,
            self.peer_ae,
            status_info(status, "C-STORE"),
            f" ({comment})" if comment else "",
        )
        await self.answer(
            inc,
            CStoreRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                affected_sop_instance_uid=message.affected_sop_instance_uid,
                status=status,
                error_comment=comment,
            ),
        )

    async def _notify_store(
        self, inc: Incoming, message: CStoreRQ, status: int, writer: object
    ) -> None:
        """Tell the handler's ``stored(request, status, writer)`` hook how a store ended."""
        notify = handler_hook(self._store_handler(), "stored")
        if notify is not None:
            request = StoreRequest(self.owner, inc.context, message, inc)
            try:
                await call_hook(notify(request, status, writer))
            except Exception:
                # The instance is stored (or not) whatever a listener thinks of it: the
                # status stands and the association carries on.
                log.exception("#%d C-STORE listener failed", self.id)

    # -- C-FIND ---------------------------------------------------------------------------

    async def _serve_find(self, inc: Incoming, message: CFindRQ) -> None:
        handler = handler_hook(self.handler, "on_find")
        context: NegotiatedContext = inc.context
        status: int = SUCCESS
        comment: str | None = None
        sent = 0
        identifier: Dataset | None
        try:
            identifier = self.decode_identifier(inc)
        except Exception as exc:
            identifier = None
            status, comment = CANNOT_UNDERSTAND, f"cannot decode the identifier: {exc}"[:64]
        if identifier is not None and handler is None:
            status, comment = SOP_CLASS_NOT_SUPPORTED, "this SCP does not support C-FIND"
        elif identifier is not None:
            request = FindRequest(self.owner, context, message, inc, identifier)
            assert context.transfer_syntax is not None
            syntax = context.transfer_syntax
            try:
                async for match in aiter_results(handler(request)):
                    if inc.cancelled.is_set():
                        status = CANCEL
                        break
                    await self.answer(
                        inc,
                        CFindRSP(
                            message_id_being_responded_to=message.message_id,
                            affected_sop_class_uid=message.affected_sop_class_uid,
                            status=PENDING,
                            has_dataset=True,
                        ),
                        bytes(match)
                        if isinstance(match, (bytes, bytearray))
                        else encode_dataset(match, syntax),
                    )
                    sent += 1
                    if not sent % _YIELD_EVERY:
                        # Let the loop read what the peer sent meanwhile (a C-CANCEL-RQ,
                        # PS3.7 9.1.2.1.1): a handler that never awaits would otherwise send
                        # every match before the cancel is seen, and hold up the others.
                        await asyncio.sleep(0)
                else:
                    if inc.cancelled.is_set():
                        status = CANCEL
            except Exception as exc:
                status, comment = self.handler_failed(exc, UNABLE_TO_PROCESS, "C-FIND", inc)
        log.info(
            "#%d C-FIND %s level from %s: %d matches, %s",
            self.id,
            _level_of(identifier),
            self.peer_ae,
            sent,
            status_info(status, "C-FIND").name,
        )
        await self.answer(
            inc,
            CFindRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                status=status,
                error_comment=comment,
            ),
        )


def _level_of(identifier: Dataset | None) -> str:
    """The Query/Retrieve Level of an identifier for a log line, "?" if it has none."""
    try:
        return str(identifier.get("QueryRetrieveLevel", "?")).strip() if identifier else "?"
    except Exception:
        return "?"
