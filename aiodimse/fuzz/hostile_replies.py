"""The hostile SCP's answers to DIMSE requests: right ones, and each wrong one a case can
choose (statuses, message IDs, truncation, endless pendings, unrequested sub-operations,
oversize PDUs, a release or an abort instead of a response, silence).

:class:`Replies` is the half of :class:`~aiodimse.fuzz.hostile_case.Case` that speaks
DIMSE; the case owns the connection, the association state and the judgment.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Any, TypeAlias

from ..dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Response,
    encode_command,
)
from ..pdu import AAssociateRQ, AReleaseRQ
from ..uids import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from .hostile_wire import encode_identifier, message_pdus, padded_command

__all__ = ["Operation", "Replies"]

#: A request that starts an operation (C-CANCEL-RQ does not).
Operation: TypeAlias = CEchoRQ | CStoreRQ | CFindRQ | CGetRQ | CMoveRQ

_UNKNOWN_STATUSES = (0x0123, 0x5A5A, 0x7FFF, 0xD0D0, 0x0200)
_FAILURES = {
    "C-STORE": (0xA700, 0xA900, 0xC000, 0x0122),
    "C-FIND": (0xA700, 0xA900, 0xC000),
    "C-GET": (0xA701, 0xA702, 0xA900, 0xC000),
    "C-MOVE": (0xA701, 0xA702, 0xA801, 0xC000),
    "C-ECHO": (0x0110, 0x0211),
}
_PENDING_INTERVAL = 0.02


class Replies:
    """DIMSE answers; ``_req_<behaviour>`` answers a case's first request its way."""

    seed: int
    index: int
    rng: random.Random
    variant: str
    deadline: float
    rq: AAssociateRQ | None
    usable: dict[int, str]
    scu_max_pdu: int
    outstanding: dict[int, Operation]
    substore: tuple[CGetRQ, int] | None
    pending_task: asyncio.Task[None] | None
    sent_release_rq: bool

    async def send(self, data: bytes) -> bool:
        raise NotImplementedError

    async def _abort(self) -> bool:
        raise NotImplementedError

    def _ts(self, cid: int) -> str:
        return self.usable.get(cid, IMPLICIT_VR_LITTLE_ENDIAN)

    def _identifier(self, cid: int, pad_to: int = 0) -> bytes:
        return encode_identifier(
            self._ts(cid),
            (
                (0x00080052, "CS", "STUDY"),
                (0x00100020, "LO", "HOSTILE"),
                (0x0020000D, "UI", f"2.25.{self.seed}{self.index:06d}"),
            ),
            pad_to=pad_to,
        )

    async def _respond(
        self,
        cid: int,
        rsp: Response,
        *,
        dataset: bytes | None = None,
        final_for: int | None = None,
        command: bytes | None = None,
    ) -> bool:
        if final_for is not None:
            self.outstanding.pop(final_for, None)
        cmd = command if command is not None else encode_command(rsp)
        return await self._send_message(cid, cmd, dataset)

    async def _send_message(self, cid: int, command: bytes, dataset: bytes | None) -> bool:
        for pdu in message_pdus(cid, command, dataset, self.scu_max_pdu):
            if not await self.send(pdu):
                return False
        return True

    def _final(self, msg: Operation, status: int) -> Response:
        """The final response to ``msg`` with ``status``, otherwise right (PS3.7 9.3)."""
        mid = msg.message_id
        if isinstance(msg, CStoreRQ):
            return CStoreRSP(
                message_id_being_responded_to=mid,
                status=status,
                affected_sop_class_uid=msg.affected_sop_class_uid,
                affected_sop_instance_uid=msg.affected_sop_instance_uid,
            )
        if isinstance(msg, CFindRQ):
            return CFindRSP(
                message_id_being_responded_to=mid,
                status=status,
                affected_sop_class_uid=msg.affected_sop_class_uid,
            )
        if isinstance(msg, (CGetRQ, CMoveRQ)):
            answer = CGetRSP if isinstance(msg, CGetRQ) else CMoveRSP
            return answer(
                message_id_being_responded_to=mid,
                status=status,
                affected_sop_class_uid=msg.affected_sop_class_uid,
                number_of_remaining_suboperations=0,
                number_of_completed_suboperations=0,
                number_of_failed_suboperations=0,
                number_of_warning_suboperations=0,
            )
        sop = msg.affected_sop_class_uid if isinstance(msg, CEchoRQ) else VERIFICATION_SOP_CLASS
        return CEchoRSP(
            message_id_being_responded_to=mid, status=status, affected_sop_class_uid=sop
        )

    async def _answer(self, msg: Operation, cid: int) -> None:
        """What a plain SCP answers: success; a C-FIND gets one match first."""
        if isinstance(msg, CFindRQ):
            pending = CFindRSP(
                message_id_being_responded_to=msg.message_id,
                status=0xFF00,
                affected_sop_class_uid=msg.affected_sop_class_uid,
                has_dataset=True,
            )
            if not await self._respond(cid, pending, dataset=self._identifier(cid)):
                return
        await self._respond(cid, self._final(msg, 0x0000), final_for=msg.message_id)

    async def _req_status_unknown(self, msg: Operation, cid: int) -> None:
        status = self.rng.choice(_UNKNOWN_STATUSES)
        self.variant = f"status=0x{status:04X}"
        await self._respond(cid, self._final(msg, status), final_for=msg.message_id)

    async def _req_status_failure(self, msg: Operation, cid: int) -> None:
        status = self.rng.choice(_FAILURES.get(msg.service, (0xC000,)))
        self.variant = f"status=0x{status:04X}"
        await self._respond(cid, self._final(msg, status), final_for=msg.message_id)

    async def _req_wrong_message_id(self, msg: Operation, cid: int) -> None:
        rsp = self._final(msg, 0x0000)
        wrong = (msg.message_id + self.rng.choice((1, 2, 0x8000))) & 0xFFFF
        self.variant = f"message_id_being_responded_to={wrong} (request {msg.message_id})"
        cmd = encode_command(_with(rsp, message_id_being_responded_to=wrong))
        await self._respond(cid, rsp, command=cmd, final_for=msg.message_id)

    async def _req_wrong_sop_instance(self, msg: Operation, cid: int) -> None:
        rsp = self._final(msg, 0x0000)
        if isinstance(msg, CStoreRQ):
            uid = msg.affected_sop_instance_uid
            wrong = (uid[:60] + ".99") if not uid.endswith(".99") else uid[:-3] + ".98"
            self.variant = f"affected_sop_instance_uid={wrong}"
            cmd = encode_command(_with(rsp, affected_sop_instance_uid=wrong))
        else:
            self.variant = "affected_sop_class_uid=1.2.840.10008.5.1.4.1.1.7 (wrong class)"
            cmd = encode_command(_with(rsp, affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.7"))
        await self._respond(cid, rsp, command=cmd, final_for=msg.message_id)

    async def _req_truncated_response(self, msg: Operation, cid: int) -> None:
        pdus = message_pdus(cid, encode_command(self._final(msg, 0)), None, self.scu_max_pdu)
        whole = pdus[0]
        cut = self.rng.choice((8, 12, len(whole) // 2, len(whole) - 1))
        self.variant = f"{cut} of {len(whole)} bytes, then silence"
        await self.send(whole[:cut])

    async def _req_endless_pending(self, msg: Operation, cid: int) -> None:
        self.variant = f"pending every {_PENDING_INTERVAL}s until the case timeout"
        self.pending_task = asyncio.create_task(self._pendings(msg, cid))

    async def _pendings(self, msg: Operation, cid: int) -> None:
        count = 0
        while time.monotonic() < self.deadline - 0.2:
            if isinstance(msg, (CGetRQ, CMoveRQ)):
                cls = CGetRSP if isinstance(msg, CGetRQ) else CMoveRSP
                ok = await self._respond(
                    cid,
                    cls(
                        message_id_being_responded_to=msg.message_id,
                        status=0xFF00,
                        affected_sop_class_uid=msg.affected_sop_class_uid,
                        number_of_remaining_suboperations=1000,
                        number_of_completed_suboperations=0,
                        number_of_failed_suboperations=0,
                        number_of_warning_suboperations=0,
                    ),
                )
            elif isinstance(msg, CFindRQ):
                pending = CFindRSP(
                    message_id_being_responded_to=msg.message_id,
                    status=0xFF00,
                    affected_sop_class_uid=msg.affected_sop_class_uid,
                    has_dataset=True,
                )
                ok = await self._respond(cid, pending, dataset=self._identifier(cid))
            else:
                ok = await self._respond(cid, self._final(msg, 0xFF00))
            if not ok:
                return
            count += 1
            await asyncio.sleep(_PENDING_INTERVAL)
        self.variant += f" ({count} sent)"
        await self._abort()

    async def _req_unrequested_substore(self, msg: Operation, cid: int) -> None:
        # A C-STORE-RQ the SCU never asked for: a SOP class it did not propose, on a
        # context where it was not granted the SCP role (PS3.7 D.3.3.4, PS3.4 C.4.3).
        assert self.rq is not None
        ui = self.rq.user_information
        scp_classes = {r.sop_class_uid for r in ui.role_selections if r.scp_role} if ui else set()
        target = next(
            (
                pc.context_id
                for pc in self.rq.presentation_contexts
                if pc.abstract_syntax not in scp_classes and pc.context_id in self.usable
            ),
            cid,
        )
        sop_class = "1.2.840.10008.5.1.4.1.1.481.99"  # no such storage class
        uid = f"2.25.{self.seed}{self.index:06d}1"
        self.variant = f"C-STORE-RQ of {sop_class} on context {target}"
        store = CStoreRQ(
            message_id=0xBEEF, affected_sop_class_uid=sop_class, affected_sop_instance_uid=uid
        )
        data = encode_identifier(
            self._ts(target),
            ((0x00080016, "UI", sop_class), (0x00080018, "UI", uid), (0x00100020, "LO", "X")),
        )
        if isinstance(msg, CGetRQ):
            self.substore = (msg, cid)
        await self._send_message(target, encode_command(store), data)
        if not isinstance(msg, CGetRQ):
            await self._answer(msg, cid)

    async def _req_oversize_pdata(self, msg: Operation, cid: int) -> None:
        rsp = self._final(msg, 0x0000)
        if self.scu_max_pdu == 0:
            self.variant = "the SCU announced no limit: a normal response"
            await self._respond(cid, rsp, final_for=msg.message_id)
            return
        size = self.scu_max_pdu + self.rng.choice((2, 1024, 65536))
        self.variant = (
            f"one P-DATA-TF of {size + 6} bytes; the SCU's Maximum Length is {self.scu_max_pdu}"
        )
        await self._respond(cid, rsp, command=padded_command(rsp, size), final_for=msg.message_id)

    async def _req_release_while_waiting(self, msg: Operation, cid: int) -> None:
        self.sent_release_rq = True
        await self.send(AReleaseRQ().encode())

    async def _req_abort_after_request(self, msg: Operation, cid: int) -> None:
        await self._abort()

    async def _req_silence(self, msg: Operation, cid: int) -> None:
        self.variant = "the request is never answered"


def _with(rsp: Response, **changes: Any) -> Response:
    out: Response = replace(rsp, **changes)
    return out
