"""The SCP side of DIMSE-C: requests the peer invokes, handed to a user handler.

A handler is a plain object; aiodimse looks for these methods and offers the matching
services (Verification is always offered):

``async on_echo(request) -> int | None``
    C-ECHO; the default answers Success.
``open_store(request) -> StoreWriter | None`` (optional, synchronous)
    called as soon as a C-STORE-RQ command arrives, before its data set: a writer that
    receives the data set fragments as they arrive (``DirectorySink`` provides one), so
    large instances stream to disk.
``async on_store(request) -> int | None``
    C-STORE when no writer took the data set: ``request.dataset`` (decoded on demand) or
    ``request.dataset_bytes`` (as received).
``on_find(request)`` -> async iterator (or iterable) of identifier Datasets
    C-FIND; each yielded Dataset becomes a Pending response (bytes are sent as they are:
    an identifier already encoded in ``request.transfer_syntax``).
``on_get(request)`` / ``on_move(request)`` -> the instances to send (paths or Datasets)
    C-GET / C-MOVE; aiodimse runs the sub-operations (see ``retrieve.py``).

Return a status code (or None for Success). Raise :class:`~aiodimse.errors.StatusError` to
answer a specific failure; any other exception is logged and answered with the service's
generic failure status, and the association carries on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Protocol

from pydicom import Dataset

from .dicomfile import decode_dataset, encode_dataset
from .dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    Message,
)
from .dimse.status import CANCEL, PENDING, SUCCESS, status_info
from .errors import AiodimseError, AssociationError, StatusError
from .link import AssociationLink, DataTarget, MemoryTarget, _Incoming, _NullTarget
from .ul.negotiation import NegotiatedContext

if TYPE_CHECKING:
    from .association import Association

__all__ = [
    "FindRequest",
    "Request",
    "RetrieveRequest",
    "ServiceProvider",
    "StoreRequest",
    "StoreWriter",
]

log = logging.getLogger("aiodimse.scp")

# Generic failure statuses when a handler raises (PS3.7 C.4 / PS3.4 B.2.3, C.4.1.1.4).
PROCESSING_FAILURE = 0x0110
UNABLE_TO_PROCESS = 0xC001
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000

#: C-FIND matches sent between two turns of the event loop.
_YIELD_EVERY = 8
UNRECOGNIZED_OPERATION = 0x0211


class StoreWriter(Protocol):
    """Receives one instance's data set as it arrives, then commits it (or discards it)."""

    def write(self, data: bytes | memoryview) -> None: ...

    async def commit(self) -> int | None: ...

    def discard(self) -> None: ...


@dataclass(eq=False)
class Request:
    """A request the peer invoked, as a handler sees it."""

    association: Association
    context: NegotiatedContext
    message: Message
    _incoming: _Incoming = field(repr=False)

    @property
    def message_id(self) -> int:
        return int(getattr(self.message, "message_id", 0))

    @property
    def sop_class_uid(self) -> str:
        return str(getattr(self.message, "affected_sop_class_uid", "") or "")

    @property
    def transfer_syntax(self) -> str:
        assert self.context.transfer_syntax is not None
        return self.context.transfer_syntax

    @property
    def calling_ae(self) -> str:
        return self.association.peer_ae

    @property
    def cancelled(self) -> bool:
        """True once the peer sent C-CANCEL-RQ for this request (or the association ended)."""
        return self._incoming.cancelled.is_set()

    async def wait_cancelled(self) -> None:
        await self._incoming.cancelled.wait()


@dataclass(eq=False)
class StoreRequest(Request):
    """A C-STORE-RQ. The data set is available once the handler's ``on_store`` runs."""

    _data: MemoryTarget | None = field(default=None, repr=False)

    @property
    def sop_instance_uid(self) -> str:
        return str(getattr(self.message, "affected_sop_instance_uid", ""))

    @property
    def move_originator_ae_title(self) -> str | None:
        value = getattr(self.message, "move_originator_ae_title", None)
        return None if value is None else str(value)

    @property
    def move_originator_message_id(self) -> int | None:
        value = getattr(self.message, "move_originator_message_id", None)
        return None if value is None else int(value)

    @property
    def dataset_bytes(self) -> bytes:
        """The data set exactly as received, in :attr:`transfer_syntax`."""
        if self._data is None:
            raise AiodimseError("the data set went to the handler's store writer")
        return self._data.getvalue()

    def open_dataset(self) -> IO[bytes]:
        """The data set as a binary file object (spilled to disk when large)."""
        if self._data is None:
            raise AiodimseError("the data set went to the handler's store writer")
        return self._data.open()

    @cached_property
    def dataset(self) -> Dataset:
        """The data set decoded by pydicom (costly for large instances; use bytes to move)."""
        return decode_dataset(self.dataset_bytes, self.transfer_syntax)


@dataclass(eq=False)
class FindRequest(Request):
    """A C-FIND-RQ with its decoded identifier."""

    identifier: Dataset = field(default_factory=Dataset)

    @property
    def query_level(self) -> str:
        return str(self.identifier.get("QueryRetrieveLevel", "") or "")


@dataclass(eq=False)
class RetrieveRequest(FindRequest):
    """A C-GET-RQ or C-MOVE-RQ; ``destination`` is the Move Destination AE (C-MOVE only)."""

    destination: str | None = None


def _call(handler: object, name: str) -> Any:
    method = getattr(handler, name, None)
    return method if callable(method) else None


class ServiceProvider(AssociationLink):
    """Dispatches the peer's requests to ``self.handler``."""

    handler: object | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: While a C-GET we invoked is in progress, its C-STORE sub-operations go here.
        self._get_receiver: object | None = None
        self._get_lock = asyncio.Lock()

    def _store_handler(self) -> object | None:
        return self._get_receiver if self._get_receiver is not None else self.handler

    # -- data set targets ---------------------------------------------------------------

    def _open_target(self, inc: _Incoming) -> DataTarget:
        message = inc.message
        if isinstance(message, CStoreRQ):
            opener = _call(self._store_handler(), "open_store")
            if opener is not None:
                request = StoreRequest(self._as_association(), inc.context, message, inc)
                try:
                    writer = opener(request)
                except StatusError as exc:
                    log.warning("#%d refusing C-STORE: %s", self.id, exc)
                    inc.error = exc
                    return _NullTarget()
                except Exception as exc:
                    log.error("#%d cannot open a store writer: %s", self.id, exc)
                    inc.error = exc
                    return _NullTarget()
                if writer is not None:
                    return writer  # type: ignore[no-any-return]
        return MemoryTarget(self.max_in_memory)

    def _as_association(self) -> Association:
        return self  # type: ignore[return-value]

    def _answerable(self) -> bool:
        """Whether a response can still be sent on this association."""
        try:
            self._check_sendable()
        except AiodimseError:
            return False
        return True

    # -- performing ----------------------------------------------------------------------

    async def _perform(self, inc: _Incoming) -> None:
        slots = self._perform_slots
        try:
            if slots is not None:
                await slots.acquire()
            try:
                await self._dispatch(inc)
            finally:
                if slots is not None:
                    slots.release()
        except AiodimseError as exc:
            # The association ended under us; the response cannot be sent.
            log.debug("#%d request %s not answered: %s", self.id, type(inc.message).__name__, exc)
        finally:
            if inc.target is not None:
                # Never taken by a service (the association ended, or we were cancelled
                # while waiting for a slot of the window): a partial file must not stay.
                inc.target.discard()
                inc.target = None
            self._incoming_done(inc)

    async def _dispatch(self, inc: _Incoming) -> None:
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
            from .retrieve import serve_retrieve

            await serve_retrieve(self._as_association(), inc, message)
        else:  # pragma: no cover - the command codec knows no other requests
            log.warning("#%d unsupported request %s", self.id, type(message).__name__)

    async def _serve_echo(self, inc: _Incoming, message: CEchoRQ) -> None:
        handler = _call(self.handler, "on_echo")
        status, comment = SUCCESS, None
        if handler is not None:
            request = Request(self._as_association(), inc.context, message, inc)
            status, comment = await self._run_handler(
                handler(request), PROCESSING_FAILURE, "C-ECHO"
            )
        await self.send_message(
            inc.context.context_id,
            CEchoRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                status=status,
                error_comment=comment,
            ),
        )

    async def _serve_store(self, inc: _Incoming, message: CStoreRQ) -> None:
        target = inc.target
        inc.target = None
        status: int = OUT_OF_RESOURCES
        comment: str | None = None
        if not message.has_dataset:
            # PS3.7 9.3.1.1: a C-STORE-RQ always carries the data set to store.
            status, comment = CANNOT_UNDERSTAND, "C-STORE-RQ without a data set"
        elif message.affected_sop_class_uid != inc.context.abstract_syntax:
            # PS3.7 9.1.1.1.2: the SOP class must be the context's abstract syntax.
            status, comment = 0xA900, "SOP Class UID does not match the presentation context"
            if target is not None:
                target.discard()
        elif isinstance(inc.error, StatusError):
            status, comment = inc.error.status, inc.error.detail or None
        elif inc.error is not None:
            status, comment = OUT_OF_RESOURCES, f"cannot store: {inc.error}"[:64]
        elif target is not None and not isinstance(target, (MemoryTarget, _NullTarget)):
            try:
                status, comment = await self._run_handler(
                    target.commit(),  # type: ignore[attr-defined]
                    OUT_OF_RESOURCES,
                    "C-STORE",
                )
            finally:
                if status not in (SUCCESS,) and not 0xB000 <= status <= 0xBFFF:
                    target.discard()
            await self._notify_store(inc, message, status, target)
        else:
            handler = _call(self._store_handler(), "on_store")
            if handler is None:
                status, comment = SOP_CLASS_NOT_SUPPORTED, "this SCP stores nothing"
            else:
                request = StoreRequest(
                    self._as_association(),
                    inc.context,
                    message,
                    inc,
                    target if isinstance(target, MemoryTarget) else None,
                )
                status, comment = await self._run_handler(
                    handler(request), PROCESSING_FAILURE, "C-STORE"
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
        await self.send_message(
            inc.context.context_id,
            CStoreRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                affected_sop_instance_uid=message.affected_sop_instance_uid,
                status=status,
                error_comment=comment,
            ),
        )

    async def _notify_store(
        self, inc: _Incoming, message: CStoreRQ, status: int, writer: object
    ) -> None:
        """Tell the handler's ``stored(request, status, writer)`` hook how a store ended."""
        notify = _call(self._store_handler(), "stored")
        if notify is not None:
            request = StoreRequest(self._as_association(), inc.context, message, inc)
            try:
                result = notify(request, status, writer)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # The instance is stored (or not) whatever a listener thinks of it: the
                # status stands and the association carries on.
                log.exception("#%d C-STORE listener failed", self.id)

    async def _run_handler(
        self, call: Awaitable[Any] | Any, failure: int, service: str
    ) -> tuple[int, str | None]:
        """Await a handler's result: (status, error comment)."""
        try:
            result = await call if inspect.isawaitable(call) else call
            status = SUCCESS if result is None else int(result)
        except StatusError as exc:
            return exc.status, exc.detail or None
        except Exception as exc:
            if isinstance(exc, AssociationError) and not self._answerable():
                raise  # our association ended: there is nobody to answer
            log.exception("#%d %s handler failed", self.id, service)
            return failure, f"{type(exc).__name__}: {exc}"[:64]
        return status, None

    def decode_identifier(self, data: bytes | None, context: NegotiatedContext) -> Dataset:
        if data is None:
            return Dataset()
        assert context.transfer_syntax is not None
        return decode_dataset(data, context.transfer_syntax)

    async def _serve_find(self, inc: _Incoming, message: CFindRQ) -> None:
        handler = _call(self.handler, "on_find")
        context = inc.context
        target = inc.target
        inc.target = None
        data = target.getvalue() if isinstance(target, MemoryTarget) else None
        status: int = SUCCESS
        comment: str | None = None
        sent = 0
        try:
            identifier = self.decode_identifier(data, context)
        except Exception as exc:
            identifier = None
            status, comment = 0xC000, f"cannot decode the identifier: {exc}"[:64]
        if identifier is not None and handler is None:
            status, comment = SOP_CLASS_NOT_SUPPORTED, "this SCP does not support C-FIND"
        elif identifier is not None:
            request = FindRequest(self._as_association(), context, message, inc, identifier)
            try:
                async for match in _aiter(handler(request)):
                    if inc.cancelled.is_set():
                        status = CANCEL
                        break
                    assert context.transfer_syntax is not None
                    await self.send_message(
                        context.context_id,
                        CFindRSP(
                            message_id_being_responded_to=message.message_id,
                            affected_sop_class_uid=message.affected_sop_class_uid,
                            status=PENDING,
                            has_dataset=True,
                        ),
                        bytes(match)
                        if isinstance(match, (bytes, bytearray))
                        else encode_dataset(match, context.transfer_syntax),
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
            except StatusError as exc:
                status, comment = exc.status, exc.detail or None
            except Exception as exc:
                if isinstance(exc, AssociationError) and not self._answerable():
                    raise  # our association ended: there is nobody to answer
                log.exception("#%d C-FIND handler failed", self.id)
                status, comment = UNABLE_TO_PROCESS, f"{type(exc).__name__}: {exc}"[:64]
        log.info(
            "#%d C-FIND %s level from %s: %d matches, %s",
            self.id,
            str(identifier.get("QueryRetrieveLevel", "?")).strip() if identifier else "?",
            self.peer_ae,
            sent,
            status_info(status, "C-FIND").name,
        )
        await self.send_message(
            context.context_id,
            CFindRSP(
                message_id_being_responded_to=message.message_id,
                affected_sop_class_uid=message.affected_sop_class_uid,
                status=status,
                error_comment=comment,
            ),
        )


async def _aiter(result: Any) -> AsyncIterator[Any]:
    """Iterate what a handler returned: an async iterator, an awaitable, or an iterable."""
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return
    if hasattr(result, "__aiter__"):
        agen = result
        try:
            async for item in agen:
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    if isinstance(result, Iterable):
        for item in result:
            yield item
        return
    raise TypeError(f"handler returned {type(result).__name__}, not an iterable")
