"""The SCU side of DIMSE-C: coroutines that invoke operations on the peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydicom import Dataset

from . import uids
from .dicomfile import (
    Part10Info,
    convert_dataset_bytes,
    dataset_bytes,
    decode_dataset,
    encode_dataset,
    read_part10,
)
from .dimse.commands import CEchoRQ, CFindRQ, CStoreRQ, Message, Priority
from .dimse.status import StatusCategory, StatusInfo, is_pending, status_info
from .errors import NegotiationError, StatusError, TransferSyntaxError
from .link import AssociationLink, FileRegion, _Outgoing
from .query import model_uid, to_dataset
from .ul.negotiation import NegotiatedContext

if TYPE_CHECKING:
    from .retrieve import Progress, Retrieval
    from .storage import Sink, StorageServer

__all__ = ["MultiResponse", "ServiceUser"]

log = logging.getLogger("aiodimse.scu")


T = TypeVar("T")

StoreSource = str | os.PathLike[str] | Dataset


class ServiceUser(AssociationLink):
    """``echo``, ``store``, ``find`` (and ``get``/``move`` in retrieve.py) as coroutines."""

    # -- contexts ------------------------------------------------------------------------

    def context_for(
        self, sop_class_uid: str, transfer_syntax: str | None = None, *, role: str = "scu"
    ) -> NegotiatedContext:
        """An accepted presentation context for ``sop_class_uid`` on which we may act as
        ``role``; the one with ``transfer_syntax`` if there is one. NegotiationError says
        what happened to it otherwise."""
        if self.negotiated is None:
            raise NegotiationError("the association is not established")
        found = self.negotiated.find(sop_class_uid, transfer_syntax=transfer_syntax, role=role)
        if found is not None:
            return found
        name = uids.uid_name(sop_class_uid)
        tried = [c for c in self.negotiated.contexts if c.abstract_syntax == sop_class_uid]
        if not tried:
            why = "it was not proposed"
        elif any(c.accepted for c in tried):
            why = f"the {role.upper()} role was not granted for it"
        else:
            why = "the peer rejected it: " + ", ".join(
                sorted({c.result.name.lower().replace("_", "-") for c in tried})
            )
        raise NegotiationError(f"no presentation context for {name} ({sop_class_uid}): {why}")

    # -- C-ECHO ---------------------------------------------------------------------------

    async def echo(self, *, check: bool = True) -> StatusInfo:
        """C-ECHO (PS3.7 9.1.5): the Verification status."""
        context = self.context_for(uids.VERIFICATION_SOP_CLASS)
        op = await self._invoke(context, lambda mid: CEchoRQ(message_id=mid))
        rsp, _ = await self._final_response(op)
        return _checked(rsp, "C-ECHO", check)

    async def _final_response(self, op: _Outgoing) -> tuple[Message, bytes | None]:
        """The response of a single-response operation. If the caller is cancelled while
        waiting (``asyncio.timeout``...), the operation is abandoned rather than left
        outstanding, so that the next operation is not blocked behind it."""
        try:
            return await self._response(op)
        except asyncio.CancelledError:
            self._abandon(op)
            raise

    # -- C-STORE --------------------------------------------------------------------------

    async def store(
        self,
        source: StoreSource,
        *,
        priority: int = Priority.MEDIUM,
        move_originator: tuple[str, int] | None = None,
        check: bool = True,
    ) -> StatusInfo:
        """C-STORE (PS3.7 9.1.1) of a Part 10 file or a pydicom Dataset.

        A file whose transfer syntax was accepted is sent as it is, never decoded;
        otherwise it is converted when pydicom can, or TransferSyntaxError names both
        syntaxes. Raises StatusError on a failure status unless ``check=False``.
        """
        context, sop_class, sop_instance, data = self._prepare_store(source)
        op = await self._invoke(
            context,
            lambda mid: CStoreRQ(
                message_id=mid,
                affected_sop_class_uid=sop_class,
                affected_sop_instance_uid=sop_instance,
                priority=priority,
                move_originator_ae_title=move_originator[0] if move_originator else None,
                move_originator_message_id=move_originator[1] if move_originator else None,
            ),
            data,
        )
        rsp, _ = await self._final_response(op)
        return _checked(rsp, "C-STORE", check, sop_instance)

    def _prepare_store(
        self, source: StoreSource
    ) -> tuple[NegotiatedContext, str, str, bytes | memoryview | FileRegion]:
        if isinstance(source, Dataset):
            sop_class = str(source.SOPClassUID)
            sop_instance = str(source.SOPInstanceUID)
            meta = getattr(source, "file_meta", None)
            native = str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else None
            context = self.context_for(sop_class, native)
            assert context.transfer_syntax is not None
            return context, sop_class, sop_instance, encode_dataset(source, context.transfer_syntax)
        info = read_part10(source)
        context = self.context_for(info.sop_class_uid, info.transfer_syntax_uid)
        assert context.transfer_syntax is not None
        if context.transfer_syntax == info.transfer_syntax_uid:
            return context, info.sop_class_uid, info.sop_instance_uid, self._file_data(info)
        try:
            data = convert_dataset_bytes(
                dataset_bytes(source, info), info.transfer_syntax_uid, context.transfer_syntax
            )
        except TransferSyntaxError as exc:
            raise TransferSyntaxError(
                f"{os.fspath(source)}: the peer accepted {uids.uid_name(info.sop_class_uid)} only"
                f" in {_ts_names(self, info.sop_class_uid)}, and the file is"
                f" {uids.uid_name(info.transfer_syntax_uid)}: {exc}"
            ) from None
        return context, info.sop_class_uid, info.sop_instance_uid, data

    def _file_data(self, info: Part10Info) -> FileRegion:
        # PS3.5 A.5: a deflated bit stream of odd length is followed by one NUL byte. Files
        # that lack it are sent with it (peers refuse odd-length fragments).
        pad = bool(info.dataset_length & 1) and _is_deflated(info.transfer_syntax_uid)
        return FileRegion(info.path, info.dataset_offset, info.dataset_length, pad)

    # -- C-FIND ---------------------------------------------------------------------------

    def find(
        self,
        query: Dataset | Mapping[str, Any],
        *,
        model: str = "study",
        priority: int = Priority.MEDIUM,
    ) -> MultiResponse[Dataset]:
        """C-FIND (PS3.7 9.1.2): an async iterator of the matching identifiers.

        ``async for match in assoc.find({"QueryRetrieveLevel": "STUDY", "PatientID": "X"})``.
        Stopping early (``break`` inside ``async with assoc.find(...) as matches``, or the
        iterator being closed or garbage collected) sends C-CANCEL-RQ. The final status is
        ``.status`` afterwards; a failure status raises StatusError at the end.
        """
        sop_class = model_uid(model, "find")
        identifier = to_dataset(query)
        context = self.context_for(sop_class)

        async def start() -> _Outgoing:
            assert context.transfer_syntax is not None
            data = encode_dataset(identifier, context.transfer_syntax)
            return await self._invoke(
                context,
                lambda mid: CFindRQ(
                    message_id=mid, affected_sop_class_uid=sop_class, priority=priority
                ),
                data,
            )

        def pending(message: Message, data: bytes | None) -> Dataset:
            if data is None:
                return Dataset()
            assert context.transfer_syntax is not None
            return decode_dataset(data, context.transfer_syntax)

        return MultiResponse(self, "C-FIND", start, pending)

    # -- C-GET / C-MOVE (retrieve.py) ------------------------------------------------------

    def get(
        self,
        query: Dataset | Mapping[str, Any],
        *,
        model: str = "study",
        sink: Sink | None = None,
        priority: int = Priority.MEDIUM,
        on_progress: Callable[[Progress], Any] | None = None,
        check: bool = True,
    ) -> Retrieval:
        """C-GET (PS3.7 9.1.3): the instances come back on this association.

        ``result = await assoc.get(query, sink=DirectorySink(d))`` or
        ``async for instance in assoc.get(query): ...`` (each a StoredInstance). Needs the
        SCP role for the storage classes: connect with ``contexts.for_get()``.
        """
        from .retrieve import get

        return get(
            self,  # type: ignore[arg-type]
            query,
            model=model,
            sink=sink,
            priority=priority,
            on_progress=on_progress,
            check=check,
        )

    def move(
        self,
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
        """C-MOVE (PS3.7 9.1.4) to ``destination``.

        ``result = await assoc.move(query, "ME", receive=scp)`` with ``scp`` a
        StorageServer on this loop: returns when the final response is in and every
        completed instance is stored there (``result.instances``). ``async for progress in
        assoc.move(...)`` yields each pending response's counts.
        """
        from .retrieve import move

        return move(
            self,  # type: ignore[arg-type]
            query,
            destination,
            model=model,
            receive=receive,
            priority=priority,
            on_progress=on_progress,
            check=check,
            arrival_timeout=arrival_timeout,
        )


def _is_deflated(transfer_syntax: str) -> bool:
    ts = uids.transfer_syntax(transfer_syntax)
    return ts is not None and ts.is_deflated


def _ts_names(assoc: AssociationLink, sop_class: str) -> str:
    assert assoc.negotiated is not None
    names = {
        uids.uid_name(c.transfer_syntax)
        for c in assoc.negotiated.contexts
        if c.accepted and c.abstract_syntax == sop_class and c.transfer_syntax
    }
    return ", ".join(sorted(names)) or "no transfer syntax"


def _checked(message: Message, service: str, check: bool, what: str | None = None) -> StatusInfo:
    code = int(getattr(message, "status", 0))
    info = status_info(code, service)
    if check and info.category in (StatusCategory.FAILURE, StatusCategory.CANCEL):
        detail = getattr(message, "error_comment", None) or ""
        if what:
            detail = f"{what}: {detail}" if detail else what
        raise StatusError(code, info.name, detail, service)
    return info


class MultiResponse(Generic[T]):
    """An operation with pending responses (C-FIND, C-GET, C-MOVE) as an async iterator.

    Each pending response becomes one item; the final response sets :attr:`status` (and
    :attr:`final`, the final response message). Closing it early sends C-CANCEL-RQ and
    waits for the final response, so the association is left clean for the next request.
    """

    def __init__(
        self,
        assoc: AssociationLink,
        service: str,
        start: Callable[[], Awaitable[_Outgoing]],
        pending: Callable[[Message, bytes | None], T | None],
        final: Callable[[Message, bytes | None], None] | None = None,
    ) -> None:
        self._assoc = assoc
        self.service = service
        self._start = start
        self._pending = pending
        self._on_final = final
        self._op: _Outgoing | None = None
        self._done = False
        self.status: StatusInfo | None = None
        self.final: Message | None = None
        self.cancelled = False

    def __aiter__(self) -> MultiResponse[T]:
        return self

    async def __aenter__(self) -> MultiResponse[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> T:
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._op is None:
                self._op = await self._start()
            try:
                message, data = await self._assoc._response(self._op)
            except asyncio.CancelledError:
                # Our task is being cancelled: cancel the operation on the peer too, and
                # let a background task collect its final response.
                self._assoc._spawn(self.aclose())
                raise
            except BaseException:
                self._done = True
                raise
            code = int(getattr(message, "status", 0))
            if is_pending(code):
                item = self._pending(message, data)
                if item is None:
                    continue
                return item
            self._finish(message, data)
            if self.status is not None and self.status.category is StatusCategory.FAILURE:
                detail = getattr(message, "error_comment", None) or ""
                raise StatusError(code, self.status.name, detail, self.service)
            raise StopAsyncIteration

    def _finish(self, message: Message, data: bytes | None) -> None:
        self._done = True
        self.final = message
        code = int(getattr(message, "status", 0))
        self.status = status_info(code, self.service)
        self.cancelled = self.status.category is StatusCategory.CANCEL
        if self._on_final is not None:
            self._on_final(message, data)

    async def aclose(self) -> None:
        """Stop early: C-CANCEL-RQ, then wait for (and keep) the final response."""
        if self._done or self._op is None:
            self._done = True
            return
        op = self._op
        if not self._assoc.is_established:
            self._done = True
            return
        await self._assoc.cancel(op)
        while not self._done:
            message, data = await self._assoc._response(op)
            if not is_pending(int(getattr(message, "status", 0))):
                self._finish(message, data)
            else:
                self._pending(message, data)

    async def collect(self) -> list[T]:
        """Every item, then the final status (convenience for small results)."""
        return [item async for item in self]

    def __del__(self) -> None:
        # Dropped without being exhausted or closed (a bare ``break``): cancel in the
        # background so that the association does not stay busy with it.
        if self._done or self._op is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone
            self._assoc._spawn(self.aclose())
