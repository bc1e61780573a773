"""One connection to the hostile SCP: read the SCU's A-ASSOCIATE-RQ, answer it with one
chosen behaviour, and record what the SCU does about it.

A case is deterministic from (seed, index): :func:`pick_behaviour` chooses the behaviour
and seeds the choices inside it. The SCU is judged conservatively: a *flag* is raised only
for what PS3.8/PS3.7 clearly forbid (data on a context that was not accepted, a P-DATA
larger than the Maximum Length we announced, new requests after our A-ABORT, more
outstanding operations than the SCU itself proposed, no close after our A-RELEASE-RP...).
Everything else the SCU does is recorded, not judged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..dimse.commands import (
    CCancelRQ,
    CGetRQ,
    CGetRSP,
    CStoreRSP,
    Message,
    Response,
    decode_command,
)
from ..enums import AbortSource, ContextResult
from ..errors import DIMSEError
from ..pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationContextAC,
    RawPDU,
    RoleSelection,
)
from ..uids import IMPLICIT_VR_LITTLE_ENDIAN
from .hostile_replies import Operation, Replies
from .hostile_wire import (
    UNKNOWN_TRANSFER_SYNTAX,
    build_ac,
    overrun_first_context,
    short_max_length_item,
    strip_application_context,
)
from .session import CLOSED, RawSession, Received

__all__ = ["BEHAVIOURS", "FAILED_BEHAVIOURS", "Case", "pick_behaviour"]


#: Every behaviour, in a fixed order (a case picks one from its seed).
BEHAVIOURS: tuple[str, ...] = (
    "conforming",
    "ac_bad_lengths",
    "ac_no_application_context",
    "ac_unproposed_context_id",
    "ac_unproposed_transfer_syntax",
    "ac_all_contexts_rejected",
    "ac_max_pdu_0",
    "ac_max_pdu_1",
    "ac_role_not_proposed",
    "ac_async_window_larger",
    "rj_odd_values",
    "ac_then_abort",
    "ac_then_close",
    "status_unknown",
    "status_failure",
    "wrong_message_id",
    "wrong_sop_instance",
    "truncated_response",
    "endless_pending",
    "unrequested_substore",
    "oversize_pdata",
    "release_while_waiting",
    "abort_after_request",
    "silence",
)

#: Behaviours after which the SCU must not report the operation as a success: the SCP
#: never answered it with a success for that very request.
FAILED_BEHAVIOURS = frozenset(BEHAVIOURS) - {
    "conforming",
    "ac_unproposed_context_id",
    "ac_max_pdu_0",
    "ac_role_not_proposed",
    "ac_async_window_larger",
    "unrequested_substore",
}


def pick_behaviour(seed: int, index: int) -> tuple[str, random.Random]:
    """The behaviour of case (seed, index) and the random source for its inner choices."""
    rng = random.Random(f"aiodimse-hostile:{seed}:{index}")
    return BEHAVIOURS[rng.randrange(len(BEHAVIOURS))], rng


@dataclass
class _Partial:
    command: bytearray = field(default_factory=bytearray)
    data: bytearray = field(default_factory=bytearray)
    message: Message | None = None


class Case(Replies):
    """One connection, one behaviour. :meth:`run` returns the case's event dict."""

    def __init__(
        self,
        session: RawSession,
        *,
        seed: int,
        index: int,
        ae_title: str,
        case_timeout: float,
    ) -> None:
        self.session = session
        self.seed = seed
        self.index = index
        self.ae_title = ae_title
        self.case_timeout = case_timeout
        self.behaviour, self.rng = pick_behaviour(seed, index)
        self.variant = ""
        self.started = time.monotonic()
        self.deadline = self.started + case_timeout
        self.exchange: list[dict[str, Any]] = []
        self.observed: list[str] = []
        self.flags: list[dict[str, str]] = []
        self.requests: list[str] = []
        self.end = ""
        self.rq: AAssociateRQ | None = None
        # The association as the SCU may legitimately use it.
        self.usable: dict[int, str] = {}  # context ID -> accepted transfer syntax
        self.misgranted: dict[int, str] = {}  # context ID -> why using it is wrong
        self.our_max_pdu = 16384
        self.scu_max_pdu = 0
        self.scu_window = 1  # PS3.7 D.3.3.3: without the sub-item, one outstanding operation
        self.associated = False  # the SCU received an A-ASSOCIATE-AC it may use
        # When it did not: the flag its P-DATA earns (code, clause, why).
        self.refusal: tuple[str, str, str] | None = None
        self.outstanding: dict[int, Operation] = {}
        self.partials: dict[int, _Partial] = {}
        self.first_request_done = False
        self.after_abort: int | None = None  # free operation slots when we sent A-ABORT
        self.new_requests_after_abort = 0
        self.pdata_after_abort = 0
        self.sent_release_rp = False
        self.sent_release_rq = False
        self.substore: tuple[CGetRQ, int] | None = None
        self.pending_task: asyncio.Task[None] | None = None

    # -- recording --------------------------------------------------------------------

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def flag(self, code: str, clause: str, detail: str) -> None:
        if not any(f["code"] == code for f in self.flags):
            self.flags.append({"code": code, "clause": clause, "detail": detail})

    def note(self, text: str) -> None:
        if not self.observed or self.observed[-1] != text:
            self.observed.append(text)

    async def send(self, data: bytes) -> bool:
        self.exchange.append({"dir": "out", "at": self._now(), "hex": data.hex()})
        return await self.session.send(data, timeout=max(self.deadline - time.monotonic(), 0.1))

    async def _receive(self, timeout: float) -> Received | str:
        item = await self.session.receive(max(timeout, 0.0))
        if isinstance(item, Received):
            self.exchange.append({"dir": "in", "at": self._now(), "hex": item.raw.hex()})
        return item

    def event(self) -> dict[str, Any]:
        rq = self.rq
        return {
            "index": self.index,
            "seed": self.seed,
            "behaviour": self.behaviour,
            "variant": self.variant,
            "calling_ae": rq.calling_ae_title if rq else None,
            "called_ae": rq.called_ae_title if rq else None,
            "requests": list(self.requests),
            "scu": list(self.observed),
            "end": self.end,
            "flags": list(self.flags),
            "time": round(time.monotonic() - self.started, 3),
        }

    # -- the case ---------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        try:
            await self._run()
        finally:
            if self.pending_task is not None:
                self.pending_task.cancel()
                try:
                    await self.pending_task
                except (asyncio.CancelledError, Exception):  # ended with the case
                    pass
            self.session.close()
        return self.event()

    async def _run(self) -> None:
        first = await self._receive(self.deadline - time.monotonic())
        if not isinstance(first, Received):
            self.end = "closed" if first == CLOSED else "hung"
            self.note(f"sent no A-ASSOCIATE-RQ ({first})")
            return
        if not isinstance(first.pdu, AAssociateRQ):
            self.note(f"opened with PDU 0x{first.pdu_type:02X} instead of an A-ASSOCIATE-RQ")
            self.end = "we_closed"
            return
        self.rq = first.pdu
        ui = self.rq.user_information
        if ui is not None:
            self.scu_max_pdu = ui.max_length or 0
            if ui.async_ops_window is not None:
                self.scu_window = ui.async_ops_window.max_operations_invoked
        self.our_max_pdu = self.rng.choice((16384, 4096, 32768, 65536))
        answer: Callable[[], Awaitable[bool]] = getattr(self, f"_assoc_{self.behaviour}", None) or (
            self._assoc_normal
        )
        if await answer():
            await self._converse()

    # -- association answers (return True to go on reading) ----------------------------

    def _accept_all(self, ac: AAssociateAC) -> None:
        for pc in ac.presentation_contexts:
            if pc.result == ContextResult.ACCEPTANCE and pc.transfer_syntax is not None:
                self.usable[pc.context_id] = pc.transfer_syntax
        self.associated = True

    async def _assoc_normal(self) -> bool:
        assert self.rq is not None
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu)
        self._accept_all(ac)
        return await self.send(ac.encode())

    async def _assoc_ac_bad_lengths(self) -> bool:
        assert self.rq is not None
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu)
        self.variant = self.rng.choice(("context_item_overruns_pdu", "max_length_item_2_bytes"))
        raw = ac.encode()
        if self.variant == "context_item_overruns_pdu" and ac.presentation_contexts:
            raw = overrun_first_context(raw, self.rng.choice((1, 64, 4000)))
        else:
            self.variant = "max_length_item_2_bytes"
            raw = short_max_length_item(raw)
        return await self._send_malformed_ac(raw)

    async def _assoc_ac_no_application_context(self) -> bool:
        assert self.rq is not None
        raw = strip_application_context(build_ac(self.rq, max_pdu=self.our_max_pdu).encode())
        return await self._send_malformed_ac(raw)

    async def _send_malformed_ac(self, raw: bytes) -> bool:
        # PS3.8 9.3.3 / Table 9-10 Sta5 Evt19 (AA-8): an invalid A-ASSOCIATE-AC is answered
        # by an A-ABORT; no context of it may be used.
        assert self.rq is not None
        self.refusal = (
            "used_malformed_ac",
            "PS3.8 9.3.3.2, Table 9-10 (Sta5 Evt19: AA-8)",
            f"our A-ASSOCIATE-AC was malformed ({self.behaviour} {self.variant}".strip() + ")",
        )
        return await self.send(raw)

    async def _assoc_ac_unproposed_context_id(self) -> bool:
        assert self.rq is not None
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu)
        proposed = {pc.context_id for pc in self.rq.presentation_contexts}
        contexts = list(ac.presentation_contexts)
        self.variant = self.rng.choice(("extra_context", "first_context_renumbered"))
        bogus = next((i for i in range(max(proposed, default=1) + 2, 256, 2)), 2)
        if self.variant == "first_context_renumbered" and contexts:
            first = contexts[0]
            bogus = 2 * (first.context_id // 2 + 1)  # an even ID: never a valid one
            contexts[0] = PresentationContextAC(bogus, first.result, first.transfer_syntax)
        else:
            self.variant = "extra_context"
            contexts.append(
                PresentationContextAC(bogus, ContextResult.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN)
            )
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu, contexts=contexts)
        self._accept_all(ac)
        self.usable.pop(bogus, None)
        self.misgranted[bogus] = "a context ID the SCU never proposed (PS3.8 9.3.3.2)"
        return await self.send(ac.encode())

    async def _assoc_ac_unproposed_transfer_syntax(self) -> bool:
        assert self.rq is not None
        contexts = [
            PresentationContextAC(pc.context_id, ContextResult.ACCEPTANCE, UNKNOWN_TRANSFER_SYNTAX)
            for pc in self.rq.presentation_contexts
        ]
        for pc in contexts:
            self.misgranted[pc.context_id] = (
                "accepted with a transfer syntax the SCU did not propose (PS3.8 9.3.3.2)"
            )
        self.associated = True
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu, contexts=contexts)
        return await self.send(ac.encode())

    async def _assoc_ac_all_contexts_rejected(self) -> bool:
        assert self.rq is not None
        results = (
            ContextResult.USER_REJECTION,
            ContextResult.NO_REASON,
            ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
            ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED,
        )
        contexts = [
            PresentationContextAC(pc.context_id, self.rng.choice(results), None)
            for pc in self.rq.presentation_contexts
        ]
        self.associated = True
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu, contexts=contexts, roles=())
        return await self.send(ac.encode())

    async def _assoc_ac_max_pdu_0(self) -> bool:
        self.our_max_pdu = 0  # PS3.8 D.1: 0 = no limit; legal, and a test of the SCU's sends
        return await self._assoc_normal()

    async def _assoc_ac_max_pdu_1(self) -> bool:
        self.our_max_pdu = 1  # no PDV fits in 1 byte: the SCU cannot send any P-DATA
        return await self._assoc_normal()

    async def _assoc_ac_role_not_proposed(self) -> bool:
        assert self.rq is not None
        ui = self.rq.user_information
        proposed = {r.sop_class_uid for r in ui.role_selections} if ui else set()
        granted = [
            RoleSelection(pc.abstract_syntax, True, True)
            for pc in self.rq.presentation_contexts
            if pc.abstract_syntax not in proposed
        ][:4]
        if ui:
            granted += [RoleSelection(r.sop_class_uid, True, True) for r in ui.role_selections]
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu, roles=granted)
        self._accept_all(ac)
        return await self.send(ac.encode())

    async def _assoc_ac_async_window_larger(self) -> bool:
        assert self.rq is not None
        window = self.rng.choice(((16, 16), (0, 0), (255, 255)))
        self.variant = f"window={window[0]}/{window[1]} (proposed {self.scu_window})"
        ac = build_ac(self.rq, max_pdu=self.our_max_pdu, async_window=window)
        self._accept_all(ac)
        return await self.send(ac.encode())

    async def _assoc_rj_odd_values(self) -> bool:
        result, source, reason = self.rng.choice(
            ((3, 1, 1), (1, 4, 1), (1, 1, 9), (2, 2, 7), (0, 0, 0), (255, 255, 255))
        )
        self.variant = f"result={result} source={source} reason={reason}"
        self.refusal = (
            "pdata_after_reject",
            "PS3.8 9.2 Table 9-10 (AE-4)",
            f"we answered A-ASSOCIATE-RJ ({self.variant})",
        )
        raw = RawPDU(0x03, bytes((0, result, source, reason))).encode()
        return await self.send(raw)

    async def _assoc_ac_then_abort(self) -> bool:
        if not await self._assoc_normal():
            return False
        return await self._abort()

    async def _assoc_ac_then_close(self) -> bool:
        await self._assoc_normal()
        self.session.close()
        self.end = "we_closed"
        return False

    # -- after the AC ------------------------------------------------------------------

    async def _abort(self) -> bool:
        free = 0 if self.scu_window == 0 else max(self.scu_window - len(self.outstanding), 0)
        self.after_abort = -1 if self.scu_window == 0 else free
        ok = await self.send(AAbort(AbortSource.SERVICE_USER).encode())
        # PS3.8 AA-1: the abort's sender waits (ARTIM) for the peer to close.
        self.deadline = min(self.deadline, time.monotonic() + self.case_timeout)
        return ok

    async def _converse(self) -> None:
        while True:
            item = await self._receive(self.deadline - time.monotonic())
            if item == CLOSED:
                self.end = self.end or "closed"
                self.note("closed the connection")
                break
            if not isinstance(item, Received):
                self._timed_out()
                break
            pdu = item.pdu
            if pdu is None:
                self.note(f"sent an undecodable PDU 0x{item.pdu_type:02X} ({item.error})")
                continue
            if isinstance(pdu, PDataTF):
                await self._on_pdata(pdu, len(item.raw) - 6)
            elif isinstance(pdu, AAbort):
                self.note(f"aborted (source {int(pdu.source)}, reason {int(pdu.reason)})")
                self.end = "aborted"
                break  # PS3.8 AA-3: the receiver of an A-ABORT closes the connection
            elif isinstance(pdu, AReleaseRQ):
                if await self._on_release_rq():
                    break
            elif isinstance(pdu, AReleaseRP):
                if self.sent_release_rq:
                    # PS3.8 AR-3: the release requestor closes the transport.
                    self.note("answered our A-RELEASE-RQ with A-RELEASE-RP")
                    self.end = "released"
                    break
                self.note("sent an A-RELEASE-RP nobody asked for")
            else:
                self.note(f"sent {type(pdu).__name__} on an association")

    def _timed_out(self) -> None:
        if self.sent_release_rp:
            # PS3.8 Table 9-10 Sta13 / AR-3: after the A-RELEASE-RP the requestor closes.
            self.flag(
                "no_close_after_release_rp",
                "PS3.8 9.2 AR-3",
                f"the connection was still open {self.case_timeout:g}s after our A-RELEASE-RP",
            )
        self.note("kept the connection open without closing until the case timeout")
        self.end = "hung"

    async def _on_release_rq(self) -> bool:
        if self.sent_release_rp:
            self.note("sent a second A-RELEASE-RQ")
            return False
        self.note("released")
        if not self.associated:
            self.note("sent A-RELEASE-RQ without an accepted association")
        self.end = "released"
        self.sent_release_rp = True
        await self.send(AReleaseRP().encode())
        self.deadline = time.monotonic() + self.case_timeout
        return False  # wait for the requestor to close (PS3.8 AR-3)

    async def _on_pdata(self, pdu: PDataTF, size: int) -> None:
        if self.after_abort is not None:
            self.pdata_after_abort += 1
            self.note("sent P-DATA after our A-ABORT")
        if self.sent_release_rp:
            # PS3.8 Table 9-10: once the A-RELEASE-RQ went out (Sta7) the requestor sends no
            # more P-DATA; after our A-RELEASE-RP it has nothing left to send but a close.
            self.flag(
                "pdata_after_release",
                "PS3.8 9.2 Table 9-10 (Sta7)",
                "P-DATA-TF after its own A-RELEASE-RQ",
            )
        if not self.associated:
            code, clause, why = self.refusal or (
                "pdata_without_association",
                "PS3.8 9.2 Table 9-10 (Sta5)",
                "no A-ASSOCIATE-AC was sent",
            )
            self.flag(code, clause, f"P-DATA-TF although {why}")
        elif self.our_max_pdu and size > self.our_max_pdu:
            self.flag(
                "pdata_over_max_length",
                "PS3.8 D.1",
                f"a P-DATA-TF of {size} bytes; our Maximum Length was {self.our_max_pdu}",
            )
        for pdv in pdu.items:
            cid = pdv.context_id
            if cid not in self.usable:
                why = self.misgranted.get(cid, "a context that was not accepted")
                if self.associated:
                    self.flag(
                        "pdata_on_unusable_context",
                        "PS3.8 9.3.5.1",
                        f"P-DATA on presentation context {cid}: {why}",
                    )
                else:
                    self.note(f"sent P-DATA on context {cid} without a usable A-ASSOCIATE-AC")
            await self._on_pdv(cid, pdv.is_command, pdv.is_last, bytes(pdv.data))

    async def _on_pdv(self, cid: int, is_command: bool, last: bool, data: bytes) -> None:
        part = self.partials.setdefault(cid, _Partial())
        if is_command:
            part.command += data
            if not last:
                return
            try:
                part.message = decode_command(bytes(part.command))
            except DIMSEError as exc:
                self.note(f"sent a command set we cannot decode ({exc})")
                self.partials.pop(cid, None)
                return
            part.command.clear()
            if part.message.has_dataset:
                return
        else:
            part.data += data
            if not last or part.message is None:
                if part.message is None and last:
                    self.note("sent a data set without a command")
                    self.partials.pop(cid, None)
                return
        msg, dataset = part.message, bytes(part.data)
        self.partials.pop(cid, None)
        if msg is not None:
            await self._on_message(msg, cid, dataset)

    async def _on_message(self, msg: Message, cid: int, dataset: bytes) -> None:
        if isinstance(msg, CCancelRQ):
            self.requests.append("C-CANCEL")
            self.note(f"sent C-CANCEL-RQ for message {msg.message_id_being_responded_to}")
            return
        if isinstance(msg, CStoreRSP):
            self.note(f"answered our C-STORE-RQ with status 0x{msg.status:04X}")
            if self.substore is not None:
                get, get_cid = self.substore
                self.substore = None
                ok = msg.status == 0x0000
                rsp = CGetRSP(
                    message_id_being_responded_to=get.message_id,
                    status=0x0000 if ok else 0xB000,
                    affected_sop_class_uid=get.affected_sop_class_uid,
                    number_of_remaining_suboperations=0,
                    number_of_completed_suboperations=int(ok),
                    number_of_failed_suboperations=int(not ok),
                    number_of_warning_suboperations=0,
                )
                await self._respond(get_cid, rsp, final_for=get.message_id)
            return
        if not msg.is_request:
            self.note(f"sent a {msg.service} response we did not ask for")
            return
        assert not isinstance(msg, Response)
        self.requests.append(msg.service)
        if self.after_abort is not None:
            self.new_requests_after_abort += 1
            if self.after_abort >= 0 and self.new_requests_after_abort > self.after_abort:
                self.flag(
                    "request_after_abort",
                    "PS3.8 9.2 AA-3",
                    f"{self.new_requests_after_abort} new request(s) after our A-ABORT with "
                    f"{self.after_abort} operation slot(s) free when it was sent",
                )
            return
        if self.scu_window and len(self.outstanding) >= self.scu_window:
            self.flag(
                "window_exceeded",
                "PS3.7 D.3.3.3",
                f"{len(self.outstanding) + 1} outstanding operations; the SCU proposed "
                f"{self.scu_window}",
            )
        self.outstanding[msg.message_id] = msg
        if self.first_request_done:
            await self._answer(msg, cid)
            return
        self.first_request_done = True
        hostile = getattr(self, f"_req_{self.behaviour}", None)
        if hostile is None:
            await self._answer(msg, cid)
        else:
            await hostile(msg, cid)
