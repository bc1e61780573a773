"""The SCU side of DIMSE-C: C-ECHO, C-STORE and C-FIND invoked on the peer.

C-GET and C-MOVE are in :mod:`.retrieve`; everything here works through the association's
:class:`~aiodimse.transport.exchange.Exchange` (invoke a request, read its responses).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from .. import uids
from ..completeness import check_complete
from ..config import MAX_INFLATED_IDENTIFIER
from ..dicomfile import (
    Part10Info,
    convert_dataset_bytes,
    dataset_bytes,
    decode_dataset,
    empty_dataset,
    encode_dataset,
    is_dataset,
    read_part10,
)
from ..dimse.commands import CEchoRQ, CFindRQ, CStoreRQ, Message, Priority
from ..dimse.status import StatusCategory, StatusInfo, status_info
from ..errors import DIMSEError, NegotiationError, StatusError, TransferSyntaxError
from ..query import model_uid, to_dataset
from ..results import FindResult
from ..transport.exchange import Exchange, Outgoing
from ..transport.wire import FileRegion
from ..ul.negotiation import Negotiated, NegotiatedContext
from .operation import Operation, OperationCore

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import (is_dataset() checks at run time).
    from pydicom import Dataset

__all__ = [
    "Find",
    "ServiceUser",
    "StoreSource",
    "checked",
    "context_for",
    "failure_error",
    "result_detail",
]

StoreSource: TypeAlias = "str | os.PathLike[str] | Dataset"

#: A C-FIND in progress: iterate it for the matches, await it for a FindResult.
Find: TypeAlias = "Operation[Dataset, FindResult]"


def context_for(
    negotiated: Negotiated | None,
    sop_class_uid: str,
    transfer_syntax: str | None = None,
    *,
    role: str = "scu",
) -> NegotiatedContext:
    """An accepted presentation context for ``sop_class_uid`` on which we may act as
    ``role``; the one with ``transfer_syntax`` if there is one. NegotiationError says what
    happened to it otherwise."""
    if negotiated is None:
        raise NegotiationError("the association is not established")
    found = negotiated.find(sop_class_uid, transfer_syntax=transfer_syntax, role=role)
    if found is not None:
        return found
    name = uids.uid_name(sop_class_uid)
    tried = [c for c in negotiated.contexts if c.abstract_syntax == sop_class_uid]
    if not tried:
        why = "it was not proposed"
    elif any(c.accepted for c in tried):
        why = f"the {role.upper()} role was not granted for it"
    else:
        why = "the peer rejected it: " + ", ".join(
            sorted({c.result.name.lower().replace("_", "-") for c in tried})
        )
    raise NegotiationError(f"no presentation context for {name} ({sop_class_uid}): {why}")


#: Services answered by one response only: a pending status is not an answer to them.
SINGLE_RESPONSE = frozenset({"C-ECHO", "C-STORE"})


def checked(message: Message, service: str, check: bool, what: str | None = None) -> StatusInfo:
    """The status of a final response; StatusError for a failure or cancel if ``check``."""
    code = int(getattr(message, "status", 0))
    info = status_info(code, service)
    if check and info.category is StatusCategory.PENDING and service in SINGLE_RESPONSE:
        # PS3.4 B.2.3, PS3.7 9.1.5.1.4: C-STORE and C-ECHO have no pending status; such an
        # answer says nothing of the outcome, so it cannot count as done.
        raise StatusError(code, info.name, f"not a final {service} status", service)
    if check and info.category in (StatusCategory.FAILURE, StatusCategory.CANCEL):
        detail = getattr(message, "error_comment", None) or ""
        if what:
            detail = f"{what}: {detail}" if detail else what
        raise StatusError(code, info.name, detail, service)
    return info


def result_detail(result: Any, message: Message) -> str:
    """What an operation's end says, for an error message: the final response's comment,
    the sub-operation counts, the first failed instances, and (C-MOVE into a receiver)
    how many reported completed never arrived."""
    parts = [str(getattr(message, "error_comment", None) or "").strip()]
    completed = getattr(result, "completed", 0)
    failed = getattr(result, "failed", 0)
    warning = getattr(result, "warning", 0)
    if completed or failed or warning:
        parts.append(f"{completed} completed, {failed} failed, {warning} warning")
    failed_instances = getattr(result, "failed_instances", [])
    if failed_instances:
        shown = ", ".join(failed_instances[:3])
        more = len(failed_instances) - 3
        parts.append(f"failed: {shown}" + (f" and {more} more" if more > 0 else ""))
    undelivered = getattr(result, "undelivered", 0)
    if undelivered:
        parts.append(
            f"{undelivered} of {completed + warning} reported completed never arrived here"
            f" ({len(result.instances)} did)"
        )
    return "; ".join(p for p in parts if p)


def failure_error(result: Any, message: Message, service: str) -> StatusError | None:
    """The StatusError for a result whose status is a Failure (None otherwise), saying
    what the final response said (see :func:`result_detail`)."""
    if result.status.category is not StatusCategory.FAILURE:
        return None
    detail = result_detail(result, message)
    return StatusError(result.status.code, result.status.name, detail, service)


class ServiceUser:
    """``echo``, ``store``, ``find`` as coroutines over one exchange."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def context_for(
        self, sop_class_uid: str, transfer_syntax: str | None = None, *, role: str = "scu"
    ) -> NegotiatedContext:
        return context_for(self.exchange.link.negotiated, sop_class_uid, transfer_syntax, role=role)

    async def _final_response(self, op: Outgoing) -> tuple[Message, bytes | None]:
        """The response of a single-response operation. If the caller is cancelled while
        waiting (``asyncio.timeout``...), the operation is abandoned rather than left
        outstanding, so that the next operation is not blocked behind it."""
        try:
            return await self.exchange.response(op)
        except asyncio.CancelledError:
            self.exchange.abandon(op)
            raise

    # -- C-ECHO ---------------------------------------------------------------------------

    async def echo(self, *, check: bool = True) -> StatusInfo:
        """C-ECHO (PS3.7 9.1.5): the Verification status."""
        context = self.context_for(uids.VERIFICATION_SOP_CLASS)
        op = await self.exchange.invoke(context, lambda mid: CEchoRQ(message_id=mid))
        rsp, _ = await self._final_response(op)
        return checked(rsp, "C-ECHO", check)

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
        op = await self.exchange.invoke(
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
        answered = getattr(rsp, "affected_sop_instance_uid", None)
        if answered and answered.strip() != sop_instance:
            # PS3.7 9.3.1.2: when present, it is the instance of the request (U(=)); an
            # answer for another instance tells nothing of this one.
            raise DIMSEError(
                f"C-STORE of {sop_instance}: the response names SOP instance {answered[:64]}"
            )
        return checked(rsp, "C-STORE", check, sop_instance)

    def _prepare_store(
        self, source: StoreSource
    ) -> tuple[NegotiatedContext, str, str, bytes | memoryview | FileRegion]:
        if is_dataset(source):
            sop_class = str(source.SOPClassUID)
            sop_instance = str(source.SOPInstanceUID)
            meta = getattr(source, "file_meta", None)
            native = str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else None
            context = self.context_for(sop_class, native)
            assert context.transfer_syntax is not None
            return context, sop_class, sop_instance, encode_dataset(source, context.transfer_syntax)
        info = read_part10(source, whole=True)
        # A cut-short copy must not be sent as if it were whole (the SCP would store an
        # instance without its pixel data): walk its element headers first.
        check_complete(source, info)
        context = self.context_for(info.sop_class_uid, info.transfer_syntax_uid)
        assert context.transfer_syntax is not None
        if context.transfer_syntax == info.transfer_syntax_uid:
            return context, info.sop_class_uid, info.sop_instance_uid, _file_data(info)
        try:
            data = convert_dataset_bytes(
                dataset_bytes(source, info), info.transfer_syntax_uid, context.transfer_syntax
            )
        except TransferSyntaxError as exc:
            raise TransferSyntaxError(
                f"{os.fspath(source)}: the peer accepted {uids.uid_name(info.sop_class_uid)} only"
                f" in {self._ts_names(info.sop_class_uid)}, and the file is"
                f" {uids.uid_name(info.transfer_syntax_uid)}: {exc}"
            ) from None
        return context, info.sop_class_uid, info.sop_instance_uid, data

    def _ts_names(self, sop_class: str) -> str:
        negotiated = self.exchange.link.negotiated
        assert negotiated is not None
        names = {
            uids.uid_name(c.transfer_syntax)
            for c in negotiated.contexts
            if c.accepted and c.abstract_syntax == sop_class and c.transfer_syntax
        }
        return ", ".join(sorted(names)) or "no transfer syntax"

    # -- C-FIND ---------------------------------------------------------------------------

    def find(
        self,
        query: Dataset | Mapping[str, Any],
        *,
        model: str = "study",
        priority: int = Priority.MEDIUM,
        check: bool = True,
    ) -> Find:
        """C-FIND (PS3.7 9.1.2): ``async for match in assoc.find(q)`` for each identifier
        as it arrives, or ``result = await assoc.find(q)`` for all of them
        (``result.matches``). See :class:`~aiodimse.scu.operation.Operation`."""
        sop_class = model_uid(model, "find")
        identifier = to_dataset(query)
        context = self.context_for(sop_class)
        exchange = self.exchange

        async def run(core: OperationCore[FindResult]) -> FindResult:
            assert context.transfer_syntax is not None
            syntax = context.transfer_syntax
            count = 0

            async def start() -> Outgoing:
                return await exchange.invoke(
                    context,
                    lambda mid: CFindRQ(
                        message_id=mid, affected_sop_class_uid=sop_class, priority=priority
                    ),
                    encode_dataset(identifier, syntax),
                    on_message_id=core.sending_now,
                )

            async def pending(message: Message, data: bytes | None) -> None:
                nonlocal count
                count += 1
                match = (
                    empty_dataset()
                    if data is None
                    else decode_dataset(data, syntax, max_inflated_size=MAX_INFLATED_IDENTIFIER)
                )
                if not await core.emit(match):
                    core.unclaimed.append(match)

            message, _ = await core.drive(start, pending)
            info = status_info(int(getattr(message, "status", 0)), "C-FIND")
            result = FindResult(info, core.unclaimed, count)
            core.result = result
            if check:
                error = failure_error(result, message, "C-FIND")
                if error is not None:
                    raise error
            return result

        return Operation(OperationCore(exchange, "C-FIND", run, FindResult))


def _file_data(info: Part10Info) -> FileRegion | bytes | memoryview:
    # PS3.5 A.5: a deflated bit stream of odd length is followed by one NUL byte. Files
    # that lack it are sent with it (peers refuse odd-length fragments).
    ts = uids.transfer_syntax(info.transfer_syntax_uid)
    pad = bool(info.dataset_length & 1) and ts is not None and ts.is_deflated
    if info.content is not None:  # a small file, read whole: send what was checked
        data = memoryview(info.content)[info.dataset_offset :]
        return bytes(data) + b"\x00" if pad else data
    return FileRegion(info.path, info.dataset_offset, info.dataset_length, pad)
