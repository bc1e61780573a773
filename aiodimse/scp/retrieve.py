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
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pydicom import Dataset

from .. import uids
from ..contexts import for_instances
from ..dicomfile import NotDicomError, encode_dataset, read_part10
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
from ..ul.negotiation import ContextRequest
from .hooks import aiter_results, call_hook, handler_hook

__all__ = ["OpenAssociation", "Provider", "Storer", "serve_retrieve"]

log = logging.getLogger("aiodimse.retrieve")


class Storer(Protocol):
    """What sends the sub-operations: an association (ours, for C-GET; the sub-association
    to the destination, for C-MOVE)."""

    async def store(
        self, source: Any, *, move_originator: tuple[str, int] | None = ..., check: bool = ...
    ) -> StatusInfo: ...

    async def release(self) -> None: ...


#: ``open(host, port, called_ae, contexts)``: the sub-association to a C-MOVE destination.
OpenAssociation = Callable[[str, int, str, Sequence[ContextRequest]], Awaitable[Storer]]


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
            ds = Dataset()
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
    completed = failed = warning = 0
    failed_uids: list[str] = []

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
                    if sub is None:
                        raise  # our own association is gone: nothing more can be sent
                    log.warning("#%d %s destination lost: %s", provider.id, service, exc)
                    failed += len(found) - index
                    failed_uids.extend(_uids_of(found[index:]))
                    break
                # No context for this instance's SOP class / transfer syntax: it alone fails.
                _sub_failed(provider, service, item, exc)
                failed += 1
                failed_uids.extend(_uids_of([item]))
            except Exception as exc:
                # This instance cannot be sent (unreadable file, no transfer syntax the
                # peer accepts, a broken data set): it fails alone, the others go on.
                _sub_failed(provider, service, item, exc)
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
        provider.id,
        service,
        request.query_level.strip().upper() or "?",
        provider.peer_ae,
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


def _sub_failed(provider: Provider, service: str, item: Any, exc: BaseException) -> None:
    what = _uid_of(item) or (item if not isinstance(item, Dataset) else "a data set")
    log.warning("#%d %s sub-operation for %s failed: %s", provider.id, service, what, exc)


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
    return await opener(address[0], address[1], ae.strip(), contexts)
