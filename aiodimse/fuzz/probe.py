"""What the known-answer checks of ``aiodimse conformance`` share: the target, raw
associations, DIMSE messages over raw P-DATA, answers described in the standard's words,
and the form of a check.

Each check opens its own connection(s), sends one thing the standard gives a definite
answer to, and judges what came back. Every wait is bounded by the probe's timeout:
anything other than the expected answer ends the check with a verdict, never a hang.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.dataset import Dataset

from .. import uids
from ..dicomfile import decode_dataset
from ..dimse.commands import (
    Message,
    decode_command,
    encode_command,
)
from ..enums import SOURCE_NAMES, AbortSource
from ..errors import AiodimseError
from ..pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    UserItem,
)
from ..ul.negotiation import ContextRequest, build_request
from .session import CLOSED, TIMEOUT, RawSession, Received

__all__ = [
    "BASELINE",
    "CT",
    "ENDS",
    "MR",
    "UNKNOWN_UID",
    "VERIFY",
    "Check",
    "CheckFunction",
    "DimseMessage",
    "Established",
    "Messages",
    "Outcome",
    "Probe",
    "Stop",
    "Verdict",
    "abort_outcome",
    "baseline_of",
    "decode_identifier",
    "describe",
    "established_then",
    "message_pdata",
    "raw_command",
    "registry",
    "summary",
]

#: Our Maximum Length in every association a check opens (the max-length check uses less).
PROBE_MAX_PDU = 65536


class Verdict(StrEnum):
    """The outcome of one check."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Outcome:
    """What a check concluded: its verdict, what came back, and why in a sentence."""

    verdict: Verdict
    got: str
    why: str = ""


class Stop(Exception):
    """Ends a check early with this outcome (e.g. the peer does not offer the service)."""

    def __init__(self, verdict: Verdict, got: str, why: str = "") -> None:
        super().__init__(got)
        self.outcome = Outcome(verdict, got, why)


def describe(item: Received | str, timeout: float | None = None) -> str:
    """One PDU (or the end of the stream) in the standard's words."""
    if item == CLOSED:
        return "connection closed without a PDU"
    if item == TIMEOUT or isinstance(item, str):
        return f"no answer within {timeout:g} s" if timeout else "no answer"
    pdu = item.pdu
    if pdu is None:
        return f"undecodable PDU type 0x{item.pdu_type:02X} ({item.error})"
    if isinstance(pdu, AAssociateRJ):
        result = "permanent" if pdu.result == 1 else "transient"
        source = SOURCE_NAMES.get(pdu.source, f"source {int(pdu.source)}")
        return (
            f"A-ASSOCIATE-RJ ({result}, source {int(pdu.source)} {source}, "
            f"reason {pdu.reason} {pdu.reason_name})"
        )
    if isinstance(pdu, AAbort):
        source = {0: "service-user", 2: "service-provider"}.get(pdu.source, "reserved")
        return f"A-ABORT (source {int(pdu.source)} {source}, reason {pdu.reason} {pdu.reason_name})"
    if isinstance(pdu, AAssociateAC):
        accepted = sum(1 for c in pdu.presentation_contexts if c.accepted)
        return f"A-ASSOCIATE-AC ({accepted}/{len(pdu.presentation_contexts)} contexts accepted)"
    if isinstance(pdu, PDataTF):
        return f"P-DATA-TF ({len(item.raw) - 6} bytes)"
    return "A-RELEASE-RP" if isinstance(pdu, AReleaseRP) else "A-RELEASE-RQ"


# -- DIMSE over raw P-DATA -----------------------------------------------------------------


def raw_command(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """A group 0000 command set from (element number, value) pairs, implicit VR LE, with
    its Command Group Length first (PS3.7 6.3.1, E.1): for messages our codec refuses to
    build (an unknown Command Field)."""
    body = b"".join(
        struct.pack("<HHI", 0, elem, len(value)) + value for elem, value in sorted(elements)
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def message_pdata(
    context_id: int, command: bytes, dataset: bytes | None = None, *, max_pdu: int = 0
) -> bytes:
    """P-DATA-TF PDUs carrying one DIMSE message (PS3.8 Annex E), each PDV fitting the
    peer's Maximum Length (0 = no limit)."""
    out: list[bytes] = []
    for payload, flag in ((command, 0x01), (dataset, 0x00)):
        if payload is None:
            continue
        room = max(max_pdu - 6, 1) if max_pdu else max(len(payload), 1)
        pieces = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
        for n, piece in enumerate(pieces):
            control = flag | (0x02 if n == len(pieces) - 1 else 0x00)
            out.append(PDataTF((PresentationDataValue(context_id, control, piece),)).encode())
    return b"".join(out)


@dataclass
class DimseMessage:
    """One whole DIMSE message received: its context, command (None when our codec
    refuses it: ``error`` says why) and data set bytes."""

    context_id: int
    command_bytes: bytes
    command: Message | None
    error: str | None
    dataset: bytes | None = None


@dataclass
class Messages:
    """Reassembles PDVs into DIMSE messages (PS3.8 Annex E) and keeps the size of every
    P-DATA-TF received, for the Maximum Length check."""

    pdata_sizes: list[int] = field(default_factory=list)
    _command: bytearray = field(default_factory=bytearray)
    _dataset: bytearray = field(default_factory=bytearray)
    _pending: DimseMessage | None = None

    def feed(self, item: Received) -> list[DimseMessage]:
        out: list[DimseMessage] = []
        pdu = item.pdu
        if not isinstance(pdu, PDataTF):
            return out
        self.pdata_sizes.append(len(item.raw) - 6)
        for pdv in pdu.items:
            if pdv.is_command:
                self._command += pdv.data
                if pdv.is_last:
                    raw = bytes(self._command)
                    self._command.clear()
                    try:
                        cmd: Message | None = decode_command(raw)
                        error = None
                    except AiodimseError as exc:
                        cmd, error = None, str(exc)
                    msg = DimseMessage(pdv.context_id, raw, cmd, error)
                    if cmd is not None and cmd.has_dataset:
                        self._pending = msg
                    else:
                        out.append(msg)
            else:
                self._dataset += pdv.data
                if pdv.is_last and self._pending is not None:
                    self._pending.dataset = bytes(self._dataset)
                    self._dataset.clear()
                    out.append(self._pending)
                    self._pending = None
        return out


# -- the target ----------------------------------------------------------------------------


@dataclass
class Established:
    """An association a check opened: the raw session, what we asked, what was agreed."""

    session: RawSession
    rq: AAssociateRQ
    ac: AAssociateAC
    messages: Messages = field(default_factory=Messages)
    #: Messages a P-DATA-TF completed beyond the one returned, in order.
    backlog: list[DimseMessage] = field(default_factory=list)

    def context_for(self, abstract_syntax: str) -> tuple[int, str] | None:
        """(context ID, transfer syntax) of the first accepted context for a syntax."""
        proposed = {c.context_id: c.abstract_syntax for c in self.rq.presentation_contexts}
        for c in self.ac.presentation_contexts:
            if c.accepted and proposed.get(c.context_id) == abstract_syntax and c.transfer_syntax:
                return c.context_id, c.transfer_syntax
        return None

    @property
    def peer_max_pdu(self) -> int:
        ui = self.ac.user_information
        return (ui.max_length or 0) if ui is not None else 0

    async def send_message(
        self, context_id: int, msg: Message | bytes, dataset: bytes | None = None
    ) -> bool:
        command = msg if isinstance(msg, bytes) else encode_command(msg)
        data = message_pdata(context_id, command, dataset, max_pdu=self.peer_max_pdu)
        return await self.session.send(data)

    async def next_message(self, timeout: float) -> DimseMessage | Received | str:
        """The next whole DIMSE message, or the first PDU that is not P-DATA, or the end."""
        while not self.backlog:
            item = await self.session.receive(timeout)
            if isinstance(item, str) or not isinstance(item.pdu, PDataTF):
                return item
            # One PDU may complete several messages: keep them in order.
            self.backlog.extend(self.messages.feed(item))
        return self.backlog.pop(0)

    async def release(self) -> None:
        """Best effort A-RELEASE, then close (the check's verdict is already known)."""
        await self.session.send(AReleaseRQ().encode())
        await self.session.receive(0.5)
        self.session.close()

    async def abort(self) -> None:
        """Send A-ABORT (service-user), then close."""
        await self.session.send(AAbort(AbortSource.SERVICE_USER).encode(), timeout=1.0)
        self.session.close()


@dataclass
class Probe:
    """The peer under test and the settings every check shares."""

    host: str
    port: int
    aec: str
    aet: str = "AIODIMSE"
    timeout: float = 5.0
    #: Abstract syntaxes the peer accepted in the baseline association (None: not probed).
    offered: frozenset[str] | None = None
    #: The baseline association (request, accept), or None with the answer in words.
    baseline: tuple[AAssociateRQ, AAssociateAC] | None = None
    baseline_answer: str = "not probed"

    async def learn(self) -> None:
        """Open the baseline association once: what the peer offers, how it answers."""
        try:
            assoc = await self.establish(BASELINE)
        except Stop as stop:
            self.baseline_answer = stop.outcome.got
            return
        await assoc.release()
        self.baseline = (assoc.rq, assoc.ac)
        self.baseline_answer = "A-ASSOCIATE-AC"
        proposed = {c.context_id: c.abstract_syntax for c in assoc.rq.presentation_contexts}
        self.offered = frozenset(
            proposed[c.context_id]
            for c in assoc.ac.presentation_contexts
            if c.accepted and c.context_id in proposed
        )

    def request(
        self,
        contexts: Sequence[ContextRequest],
        *,
        called: str | None = None,
        max_pdu: int = PROBE_MAX_PDU,
        async_window: tuple[int, int] | None = None,
        extra_items: Sequence[UserItem] = (),
    ) -> AAssociateRQ:
        return build_request(
            self.aet,
            self.aec if called is None else called,
            contexts,
            max_pdu=max_pdu,
            implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
            implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME,
            async_window=async_window,
            extra_items=extra_items,
        )

    async def open(self) -> RawSession:
        try:
            return await RawSession.open(self.host, self.port, timeout=self.timeout)
        except (OSError, TimeoutError) as exc:
            raise Stop(
                Verdict.INCONCLUSIVE, f"cannot connect: {exc.strerror or exc}", "no connection"
            ) from None

    async def exchange(self, data: bytes) -> tuple[RawSession, Received | str]:
        """Open a connection, send ``data``, return the session and the first answer."""
        session = await self.open()
        if not await session.send(data, timeout=self.timeout):
            return session, CLOSED
        return session, await session.receive(self.timeout)

    async def establish(self, contexts: Sequence[ContextRequest], **kwargs: object) -> Established:
        """An association with ``contexts``; Stop(inconclusive) if the peer does not accept."""
        rq = self.request(contexts, **kwargs)  # type: ignore[arg-type]
        session, answer = await self.exchange(rq.encode())
        if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateAC):
            return Established(session, rq, answer.pdu)
        session.close()
        raise Stop(
            Verdict.INCONCLUSIVE,
            describe(answer, self.timeout),
            "the peer refused the association this check needs",
        )

    def usable_syntax(self) -> str:
        """Verification if the peer offers it, else any syntax it offers (a check that only
        needs some accepted context)."""
        if not self.offered or uids.VERIFICATION_SOP_CLASS in self.offered:
            return uids.VERIFICATION_SOP_CLASS
        return sorted(self.offered)[0]

    def needs(self, *abstract_syntaxes: str) -> None:
        """Stop(n/a) unless the baseline association accepted one of these syntaxes."""
        if self.offered is not None and not self.offered.intersection(abstract_syntaxes):
            names = ", ".join(uids.uid_name(s) for s in abstract_syntaxes)
            raise Stop(
                Verdict.NOT_APPLICABLE, f"not offered: {names}", "the peer does not offer it"
            )


def decode_identifier(data: bytes, transfer_syntax: str) -> Dataset | None:
    try:
        return decode_dataset(data, transfer_syntax)
    except Exception:  # a peer's bad data set is a finding, not a crash
        return None


# -- the battery ---------------------------------------------------------------------------

CheckFunction = Callable[[Probe], Awaitable[Outcome]]


@dataclass(frozen=True)
class Check:
    """One known-answer check: what it sends, what the standard expects, from which clause."""

    id: str
    title: str
    clause: str
    sent: str
    expected: str
    run: CheckFunction


def registry(checks: list[Check]) -> Callable[..., Callable[[CheckFunction], CheckFunction]]:
    """A decorator ``@check(id, title, clause, sent, expected)`` that appends each check
    it marks to ``checks`` (a module's battery, in the order it is written)."""

    def check(
        id: str, title: str, clause: str, sent: str, expected: str
    ) -> Callable[[CheckFunction], CheckFunction]:
        def register(fn: CheckFunction) -> CheckFunction:
            checks.append(Check(id, title, clause, sent, expected, fn))
            return fn

        return register

    return check


VERIFY = [ContextRequest(uids.VERIFICATION_SOP_CLASS)]
#: The baseline proposal: what the battery learns the peer offers.
BASELINE = [
    ContextRequest(uids.VERIFICATION_SOP_CLASS),
    ContextRequest(uids.STUDY_ROOT_QR_FIND),
    ContextRequest(uids.PATIENT_ROOT_QR_FIND),
    ContextRequest(uids.STUDY_ROOT_QR_GET),
    ContextRequest(uids.STORAGE_SOP_CLASSES["CTImageStorage"]),
]
#: A syntactically valid UID that names nothing (PS3.5 9: the 2.25 root of UUID-derived UIDs).
UNKNOWN_UID = "2.25.299141766312598427155104337937063094873"
CT = uids.STORAGE_SOP_CLASSES["CTImageStorage"]
MR = uids.STORAGE_SOP_CLASSES["MRImageStorage"]


def abort_outcome(
    answer: Received | str,
    timeout: float,
    *,
    reason: int | None,
    source: int | None,
    action: str,
) -> Outcome:
    """Judge an answer that must be an A-ABORT (with this source and reason, if given)."""
    got = describe(answer, timeout)
    if isinstance(answer, Received) and isinstance(answer.pdu, AAbort):
        wrong = []
        if source is not None and answer.pdu.source != source:
            wrong.append(f"source {int(answer.pdu.source)}, not {source}")
        if reason is not None and answer.pdu.reason != reason:
            wrong.append(f"reason {int(answer.pdu.reason)}, not {reason}")
        if wrong:
            return Outcome(Verdict.FAIL, got, f"{action} and Table 9-26: {'; '.join(wrong)}")
        return Outcome(Verdict.PASS, got)
    if answer == CLOSED:
        return Outcome(Verdict.FAIL, got, f"{action}: an A-ABORT PDU is due before the close")
    if answer == TIMEOUT:
        return Outcome(Verdict.FAIL, got, f"{action}: the fault was ignored")
    return Outcome(Verdict.FAIL, got, f"{action}: the answer is an A-ABORT PDU")


#: Why a silent close of an established association is not an answer.
ENDS = "PS3.8 7.3 (an established association ends by A-RELEASE or A-ABORT)"


async def established_then(probe: Probe, data: bytes) -> Received | str:
    """Associate (Verification), send ``data`` in Sta6, return the peer's answer."""
    assoc = await probe.establish(VERIFY)
    try:
        if not await assoc.session.send(data):
            return CLOSED
        return await assoc.session.receive(probe.timeout)
    finally:
        assoc.session.close()


def baseline_of(probe: Probe) -> tuple[AAssociateRQ, AAssociateAC]:
    if probe.baseline is None:
        raise Stop(Verdict.INCONCLUSIVE, probe.baseline_answer, "the baseline association failed")
    return probe.baseline


def summary(msg: DimseMessage) -> str:
    if msg.command is None:
        return f"undecodable command ({msg.error})"
    status = getattr(msg.command, "status", None)
    name = type(msg.command).__name__
    return name if status is None else f"{name} status {status:04X}"
