"""The SCP side of C-GET and C-MOVE (PS3.4 C.4.2-C.4.3, PS3.7 9.1.3-9.1.4).

The handler's ``on_get`` / ``on_move`` says which instances (Part 10 file paths, pydicom
Datasets, or index records with ``.path`` and ``.sop_instance_uid``, such as a
:class:`~aiodimse.StoredInstance`, so that a file that turns out to be unreadable is still
named); this module runs the sub-operations with honest pending counts, honours C-CANCEL,
and ends with the Failed SOP Instance UID List when anything failed. A sub-operation that
fails on our side (unreadable file, no transfer syntax the peer accepts) fails alone; only
the loss of an association stops the rest. C-GET sends on the association the request
came on; C-MOVE opens a sub-association to the destination through the provider's
``open_association`` hook (the association layer supplies it: this module never opens
connections itself).

Sub-operations are pipelined through the asynchronous operations window (PS3.7 D.3.3.3):
up to :data:`SUB_OPERATION_WINDOW` C-STOREs are outstanding at once, fewer if the peer
grants less. A C-GET uses what the requestor negotiated (its "performed" limit: it asked
for it). A C-MOVE proposes a window on its sub-association only when the server is told
to (``move_window``, off by default: some SCPs drop associations that offer one). A peer
that grants no window gets one sub-operation at a time. Counts only move when a
C-STORE-RSP arrives; after a C-CANCEL no sub-operation starts, and those outstanding are
awaited and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .. import uids
from ..contexts import for_instances
from ..dicomfile import NotDicomError, empty_dataset, encode_dataset, is_dataset, read_part10
from ..dimse.commands import CGetRQ, CGetRSP, CMoveRQ, CMoveRSP
from ..dimse.status import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SOP_CLASS_NOT_SUPPORTED,
    SUBOPERATIONS_COMPLETE_WITH_FAILURES,
    SUCCESS,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
    UNABLE_TO_PROCESS,
    StatusCategory,
    StatusInfo,
    is_pending,
)
from ..errors import AiodimseError, AssociationError, NegotiationError
from ..requests import RetrieveRequest
from ..transport.exchange import Incoming
from ..ul.negotiation import ContextRequest, Negotiated
from .hooks import aiter_results, call_hook, handler_hook

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import (is_dataset() checks at run time).
    from pydicom import Dataset

__all__ = [
    "SUB_OPERATION_WINDOW",
    "OpenAssociation",
    "Provider",
    "Storer",
    "serve_retrieve",
]

log = logging.getLogger("aiodimse.retrieve")

#: The most C-STORE sub-operations one C-GET or C-MOVE keeps outstanding, and the invoked
#: side of the window a C-MOVE proposes on its sub-association (PS3.7 D.3.3.3); the peer's
#: grant may lower it. 1 sends them one at a time and proposes no window.
SUB_OPERATION_WINDOW = 8


class Storer(Protocol):
    """What sends the sub-operations: an association (ours, for C-GET; the sub-association
    to the destination, for C-MOVE)."""

    async def store(
        self, source: Any, *, move_originator: tuple[str, int] | None = ..., check: bool = ...
    ) -> StatusInfo: ...

    async def release(self) -> None: ...

    @property
    def negotiated(self) -> Negotiated | None: ...


#: ``open(host, port, called_ae, contexts, async_window)``: the sub-association to a C-MOVE
#: destination, proposing the asynchronous operations window ``(invoked, performed)`` unless
#: it is None.
OpenAssociation = Callable[
    [str, int, str, Sequence[ContextRequest], tuple[int, int] | None], Awaitable[Storer]
]


class Provider(Protocol):
    """What the retrieve services use of the SCP side of an association."""

    @property
    def id(self) -> int: ...

    @property
    def peer_ae(self) -> str: ...

    @property
    def owner(self) -> Any: ...

    @property
    def handler(self) -> object | None: ...

    @property
    def destinations(self) -> Mapping[str, tuple[str, int]]: ...

    @property
    def open_association(self) -> OpenAssociation | None: ...

    @property
    def sub_operation_window(self) -> int: ...

    @property
    def move_window(self) -> int: ...

    async def answer(self, inc: Incoming, response: Any, dataset: bytes | None = None) -> None: ...

    def decode_identifier(self, inc: Incoming) -> Dataset: ...

    def handler_failed(
        self, exc: Exception, failure: int, service: str, inc: Incoming
    ) -> tuple[int, str | None]: ...


async def serve_retrieve(provider: Provider, inc: Incoming, message: CGetRQ | CMoveRQ) -> None:
    """Perform a C-GET or C-MOVE request with the handler's ``on_get`` / ``on_move``."""
    is_move = isinstance(message, CMoveRQ)
    service = "C-MOVE" if is_move else "C-GET"
    rsp_type: type[CGetRSP] | type[CMoveRSP] = CMoveRSP if is_move else CGetRSP
    context = inc.context

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
            ds = empty_dataset()
            ds.FailedSOPInstanceUIDList = list(failed_uids)
            assert context.transfer_syntax is not None
            identifier = encode_dataset(ds, context.transfer_syntax)
        final = not is_pending(status)
        await provider.answer(
            inc,
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
    handler = handler_hook(provider.handler, handler_name)
    if handler is None:
        await respond(
            SOP_CLASS_NOT_SUPPORTED, None, 0, 0, 0, comment=f"this SCP does not support {service}"
        )
        return
    try:
        identifier = provider.decode_identifier(inc)
    except Exception as exc:
        await respond(IDENTIFIER_DOES_NOT_MATCH, None, 0, 0, 0, comment=str(exc)[:64])
        return

    destination_address: tuple[str, int] | None = None
    if is_move:
        assert isinstance(message, CMoveRQ)
        destination_address = await _resolve_destination(provider, message.move_destination)
        if destination_address is None:
            log.warning(
                "#%d C-MOVE to unknown destination %r from %s",
                provider.id,
                message.move_destination,
                provider.peer_ae,
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
        provider.owner,
        context,
        message,
        inc,
        identifier,
        message.move_destination if isinstance(message, CMoveRQ) else None,
    )
    try:
        found = [item async for item in aiter_results(handler(request))]
    except Exception as exc:
        code, comment = provider.handler_failed(exc, UNABLE_TO_PROCESS, service, inc)
        await respond(code, None, 0, 0, 0, comment=comment)
        return

    total = len(found)
    log.debug(
        "#%d %s from %s: %d instance(s)%s",
        provider.id,
        service,
        provider.peer_ae,
        total,
        f" to {message.move_destination}" if isinstance(message, CMoveRQ) else "",
    )
    tally = _Tally(total)

    sub: Storer | None = None
    if total and isinstance(message, CMoveRQ) and not inc.cancelled.is_set():
        assert destination_address is not None
        try:
            sub = await _open_destination(
                provider, message.move_destination, destination_address, found
            )
        except AiodimseError as exc:
            log.warning("#%d cannot reach move destination: %s", provider.id, exc)
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
    storer: Storer = sub if sub is not None else provider.owner
    originator = (provider.peer_ae, message.message_id) if is_move else None
    limit = _outstanding_limit(storer, provider.sub_operation_window)

    async def send(item: Any) -> StatusInfo:
        return await storer.store(_source_of(item), move_originator=originator, check=False)

    # PS3.7 D.3.3.3: at most ``limit`` sub-operations outstanding; each is counted only
    # once its C-STORE-RSP (or its failure) is in.
    running: dict[asyncio.Task[StatusInfo], int] = {}
    started = 0
    cancelled = stopped = False
    try:
        while True:
            while not stopped and started < total and len(running) < limit:
                if inc.cancelled.is_set():
                    # PS3.4 C.4.2.3.1 / C.4.3.3.1: no sub-operation starts after C-CANCEL.
                    cancelled = stopped = True
                    break
                running[asyncio.create_task(send(found[started]))] = started
                started += 1
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=running.__getitem__):
                item = found[running.pop(task)]
                try:
                    status = task.result()
                except AssociationError as exc:
                    if not isinstance(exc, NegotiationError):
                        if sub is None:
                            raise  # our own association is gone: nothing more can be sent
                        if not stopped:
                            log.warning("#%d %s destination lost: %s", provider.id, service, exc)
                        stopped = True  # the outstanding ones fail as their answers come
                        tally.fail(item)
                        continue
                    # No context for this instance's SOP class / transfer syntax: it alone
                    # fails.
                    _sub_failed(provider, service, item, exc)
                    tally.fail(item)
                except Exception as exc:
                    # This instance cannot be sent (unreadable file, no transfer syntax the
                    # peer accepts, a broken data set): it fails alone, the others go on.
                    _sub_failed(provider, service, item, exc)
                    tally.fail(item)
                else:
                    tally.count(item, status)
            if tally.remaining and not stopped and not inc.cancelled.is_set():
                await respond(PENDING, *tally.counts)
        if stopped and not cancelled:
            # The destination was lost: what was never started fails too.
            for item in found[started:]:
                tally.fail(item)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if sub is not None:
            try:
                await sub.release()
            except AiodimseError:
                pass
    completed, failed, warning = tally.completed, tally.failed, tally.warning
    failed_uids = tally.failed_uids
    remaining = total - completed - failed - warning
    log.info(
        "#%d %s %s level from %s%s: %d completed, %d failed, %d warning%s"
        " (up to %d sub-operations outstanding)",
        provider.id,
        service,
        request.query_level.strip().upper() or "?",
        provider.peer_ae,
        f" to {message.move_destination.strip()}" if isinstance(message, CMoveRQ) else "",
        completed,
        failed,
        warning,
        f", cancelled with {remaining} remaining" if cancelled else "",
        limit,
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


class _Tally:
    """The sub-operation counts of one retrieve (PS3.4 C.4.2.1.4 / C.4.3.1.4)."""

    __slots__ = ("completed", "failed", "failed_uids", "total", "warning")

    def __init__(self, total: int) -> None:
        self.total = total
        self.completed = self.failed = self.warning = 0
        self.failed_uids: list[str] = []

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(remaining, completed, failed, warning), as a pending response gives them."""
        return self.remaining, self.completed, self.failed, self.warning

    def count(self, item: Any, status: StatusInfo) -> None:
        if status.category is StatusCategory.SUCCESS:
            self.completed += 1
        elif status.category is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.fail(item)

    def fail(self, item: Any) -> None:
        self.failed += 1
        self.failed_uids.extend(_uids_of([item]))


def _outstanding_limit(storer: Storer, window: int) -> int:
    """How many sub-operations may be outstanding on ``storer``: our own ``window``, lowered
    to what the peer lets us invoke (PS3.7 D.3.3.3; 0 there means no limit)."""
    negotiated = storer.negotiated
    granted = negotiated.max_invoked if negotiated is not None else 1
    return max(1, min(window, granted) if granted else window)


def _source_of(item: Any) -> Any:
    """What to C-STORE for a handler's item: a Dataset or a path (an index record's
    ``.path``)."""
    if is_dataset(item) or isinstance(item, (str, bytes, os.PathLike)):
        return item
    path = getattr(item, "path", None)
    if path is None:
        raise NotDicomError(f"{type(item).__name__} has no file to send")
    return path


def _uid_of(item: Any) -> str | None:
    """The SOP Instance UID of a handler's item, None if it cannot be known."""
    if is_dataset(item):
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


def _sub_failed(provider: Provider, service: str, item: Any, exc: BaseException) -> None:
    what = _uid_of(item) or (item if not is_dataset(item) else "a data set")
    log.warning("#%d %s sub-operation for %s failed: %s", provider.id, service, what, exc)


def _describe(item: Any) -> tuple[str, str] | None:
    """(SOP class, transfer syntax) of a file or dataset to send, None if unreadable."""
    if is_dataset(item):
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


async def _resolve_destination(provider: Provider, ae: str) -> tuple[str, int] | None:
    """Where the C-MOVE destination ``ae`` is: the handler's ``resolve_destination`` hook
    (sync or async) first, then the server's ``destinations`` table."""
    resolver = handler_hook(provider.handler, "resolve_destination")
    if resolver is not None:
        found = await call_hook(resolver(ae))
        if found is not None:
            return (str(found[0]), int(found[1]))
    key = ae.strip()
    for name, address in provider.destinations.items():
        if name.strip() == key:
            return address
    return None


async def _open_destination(
    provider: Provider, ae: str, address: tuple[str, int], items: Sequence[Any]
) -> Storer:
    """The sub-association to a C-MOVE destination, proposing what the items need."""
    opener = provider.open_association
    if opener is None:
        raise AssociationError("this association cannot open sub-associations")
    described = [d for d in (_describe(item) for item in items) if d is not None]
    contexts = for_instances(described) or [ContextRequest(uids.VERIFICATION_SOP_CLASS)]
    window = min(provider.move_window, provider.sub_operation_window)
    proposed = (window, 1) if window > 1 else None
    return await opener(address[0], address[1], ae.strip(), contexts, proposed)
