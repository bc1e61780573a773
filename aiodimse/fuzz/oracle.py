"""What came back after each step, and the judgement of it.

The judge only flags what PS3.8 / PS3.7 really mandate, and accepts every answer the
standard leaves open (an A-ABORT, an A-ASSOCIATE-RJ or a plain close of the connection
where each is allowed). It reads the peer's answers with the acceptor's side of
aiodimse's own PS3.8 state machine (:mod:`aiodimse.ul.fsm`): a PDU the acceptor sends
must be the output of a local primitive its state allows (Table 9-10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dimse.commands import decode_command
from ..dimse.status import status_info
from ..errors import AiodimseError
from ..pdu import AAbort, AAssociateAC, AAssociateRJ, PDataTF
from ..ul.fsm import Event, StateMachine
from .cases import Step, context_transfer_syntax
from .session import CLOSED, TIMEOUT, Received

__all__ = ["Answer", "Association", "Problem", "StepRecord", "judge"]

_NAMES = {
    1: "A-ASSOCIATE-RQ",
    2: "A-ASSOCIATE-AC",
    3: "A-ASSOCIATE-RJ",
    4: "P-DATA-TF",
    5: "A-RELEASE-RQ",
    6: "A-RELEASE-RP",
    7: "A-ABORT",
}

_RESPONSE_NAMES = {
    0x8001: "C-STORE-RSP",
    0x8010: "C-GET-RSP",
    0x8020: "C-FIND-RSP",
    0x8021: "C-MOVE-RSP",
    0x8030: "C-ECHO-RSP",
}
_RESPONSE_OF = {"C-ECHO": 0x8030, "C-STORE": 0x8001, "C-FIND": 0x8020}


@dataclass(frozen=True)
class Answer:
    """One thing that came back: a PDU (with what matters of it), a close or a timeout."""

    what: str
    at: float
    source: int | None = None  # A-ABORT / A-ASSOCIATE-RJ
    reason: int | None = None
    result: int | None = None  # A-ASSOCIATE-RJ
    command: int | None = None  # a DIMSE message completed by this P-DATA-TF
    status: int | None = None
    responded_to: int | None = None
    contexts: tuple[tuple[int, int, str | None], ...] = ()  # A-ASSOCIATE-AC: (id, result, ts)

    @property
    def is_pdu(self) -> bool:
        return self.what not in (CLOSED, TIMEOUT, "refused", "send-failed")

    def summary(self) -> str:
        if self.what == "A-ABORT":
            return f"A-ABORT source {self.source} reason {self.reason}"
        if self.what == "A-ASSOCIATE-RJ":
            return f"A-ASSOCIATE-RJ result {self.result} source {self.source} reason {self.reason}"
        if self.command is not None:
            name = _RESPONSE_NAMES.get(self.command, f"command 0x{self.command:04X}")
            status = "" if self.status is None else f" 0x{self.status:04X}"
            return f"{name}{status}"
        return self.what

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"what": self.what, "at": round(self.at, 4)}
        for name in ("source", "reason", "result", "command", "status", "responded_to"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass
class StepRecord:
    """A step as it ran: whether it was sent, the answer expected, what came back."""

    step: Step
    sent: bool
    expected: str | None
    answers: list[Answer] = field(default_factory=list)
    completed: bool = False

    def came_back(self) -> str:
        return ", ".join(a.summary() for a in self.answers) or "nothing"


@dataclass
class Association:
    """What the answers so far say about the association (the requestor's view)."""

    accepted: bool = False
    ended: bool = False
    closed: bool = False
    contexts: dict[int, tuple[int, str | None]] = field(default_factory=dict)
    _commands: dict[int, bytearray] = field(default_factory=dict)

    def expectation(self, step: Step) -> str | None:
        """The answer a conforming peer owes after ``step`` now, or None."""
        if self.closed or self.ended or step.expect is None:
            return None
        if step.expect == "assoc":
            return "assoc" if not self.accepted else None
        if not self.accepted:
            return None
        if step.expect == "dimse":
            ctx = self.contexts.get(step.context_id or -1)
            # Only a request on a context accepted with the syntax it was encoded in.
            if ctx is None or ctx[0] != 0 or ctx[1] != context_transfer_syntax(ctx_id(step)):
                return None
        return step.expect

    def absorb(self, item: Received | str, at: float) -> Answer:
        """Record one received item, return it as an :class:`Answer`."""
        if isinstance(item, str):
            if item == CLOSED:
                self.closed = True
            return Answer(item, at)
        name = _NAMES.get(item.pdu_type, f"PDU 0x{item.pdu_type:02X}")
        pdu = item.pdu
        if isinstance(pdu, AAbort):
            self.ended = True
            return Answer(name, item.at, source=int(pdu.source), reason=int(pdu.reason))
        if isinstance(pdu, AAssociateRJ):
            self.ended = True
            return Answer(
                name, item.at, source=int(pdu.source), reason=pdu.reason, result=int(pdu.result)
            )
        if isinstance(pdu, AAssociateAC):
            self.accepted = True
            for c in pdu.presentation_contexts:
                self.contexts[c.context_id] = (int(c.result), c.transfer_syntax)
            return Answer(
                name,
                item.at,
                contexts=tuple(
                    (c.context_id, int(c.result), c.transfer_syntax)
                    for c in pdu.presentation_contexts
                ),
            )
        if item.pdu_type in (6, 7):
            self.ended = True
        if isinstance(pdu, PDataTF):
            return self._pdata(pdu, name, item.at)
        if pdu is None and item.pdu_type == 7:
            return Answer(name, item.at, source=item.raw[8], reason=item.raw[9])
        return Answer(name, item.at)

    def _pdata(self, pdu: PDataTF, name: str, at: float) -> Answer:
        done: Answer | None = None
        for pdv in pdu.items:
            if not pdv.control & 1:
                continue
            buf = self._commands.setdefault(pdv.context_id, bytearray())
            buf += bytes(pdv.data)
            if pdv.control & 2:
                del self._commands[pdv.context_id]
                try:
                    msg = decode_command(bytes(buf))
                except (AiodimseError, ValueError):
                    done = Answer(name, at, command=-1)
                    continue
                done = Answer(
                    name,
                    at,
                    command=int(msg.command_field),
                    status=getattr(msg, "status", None),
                    responded_to=getattr(msg, "message_id_being_responded_to", None),
                )
        return done or Answer(name, at)


def ctx_id(step: Step) -> int:
    return step.context_id or 0


def completes(expected: str, answer: Answer, step: Step) -> bool:
    """Whether ``answer`` fulfils what was expected after ``step``."""
    if answer.what in (CLOSED, "A-ABORT"):
        return True
    if expected == "assoc":
        return answer.what in ("A-ASSOCIATE-AC", "A-ASSOCIATE-RJ")
    if expected == "release":
        return answer.what == "A-RELEASE-RP"
    if expected == "dimse":
        return (
            answer.command is not None
            and answer.responded_to == step.message_id
            and (answer.status is None or answer.status not in (0xFF00, 0xFF01))
        )
    return False


@dataclass(frozen=True)
class Problem:
    """One thing the oracles flag in a case: its kind, the step it belongs to, what came
    back, a sentence, and the clause it breaks."""

    kind: str
    step: str
    came_back: str
    detail: str
    clause: str

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.kind, self.step, self.came_back)


# PS3.8 Table 9-10: the local primitive behind each PDU an acceptor sends.
_SEND_EVENT = {
    "A-ASSOCIATE-AC": Event.EVT7,
    "A-ASSOCIATE-RJ": Event.EVT8,
    "P-DATA-TF": Event.EVT9,
    "A-RELEASE-RQ": Event.EVT11,
    "A-RELEASE-RP": Event.EVT14,
}


def _acceptor_allows(machine: StateMachine, what: str) -> bool:
    """Whether an acceptor in the machine's state may send ``what`` (PS3.8 Table 9-10)."""
    if what == "A-ABORT":
        # AA-1 (Evt15), AA-7/AA-8 (answers to a bad PDU): only Sta13 after a normal end
        # has no way to send one except AA-7, which a received PDU triggers.
        return True
    event = _SEND_EVENT.get(what)
    return event is not None and machine.allows(event)


_PLACEHOLDER = object()


def judge(records: Sequence[StepRecord]) -> list[Problem]:
    """Everything PS3.8 / PS3.7 forbid in what came back over one case."""
    problems: list[Problem] = []
    problems += _hangs(records)
    problems += _after_end(records)
    problems += _association_answers(records)
    problems += _abort_reasons(records)
    problems += _dimse(records)
    return problems


def _hangs(records: Sequence[StepRecord]) -> list[Problem]:
    out = []
    for r in records:
        if (
            r.expected
            and r.sent
            and not r.completed
            and r.answers
            and r.answers[-1].what == TIMEOUT
        ):
            clause = {
                "assoc": "PS3.8 9.2 (AE-6/AE-7/AE-8: the acceptor answers an A-ASSOCIATE-RQ)",
                "release": "PS3.8 9.2 (AR-2/AR-4: an A-RELEASE-RQ gets an A-RELEASE-RP)",
                "dimse": "PS3.7 9.3 (a request gets a final response)",
            }[r.expected]
            out.append(
                Problem("hang", r.step.label, "timeout", f"no answer to {r.step.label}", clause)
            )
    return out


# The path of the acceptor's machine to Sta13 for each PDU that ends an association.
_ENDINGS = {
    "A-ASSOCIATE-RJ": (Event.EVT5, Event.EVT6, Event.EVT8),
    "A-RELEASE-RP": (Event.EVT5, Event.EVT6, Event.EVT7, Event.EVT12, Event.EVT14),
    "A-ABORT": (Event.EVT5, Event.EVT6, Event.EVT7, Event.EVT15),
}


def acceptor_after(ending: str) -> StateMachine:
    """The acceptor's PS3.8 machine after it sent ``ending`` (RJ, RP or A-ABORT)."""
    machine = StateMachine()
    for event in _ENDINGS[ending]:
        machine.handle(event, _PLACEHOLDER)
    return machine


def _after_end(records: Sequence[StepRecord]) -> list[Problem]:
    """PS3.8 Table 9-10: after A-ASSOCIATE-RJ, A-RELEASE-RP or A-ABORT the acceptor is in
    Sta13, where no local primitive sends a PDU; only AA-7 (an A-ABORT answering a PDU we
    sent) is left."""
    machine: StateMachine | None = None
    ended_by = ""
    for r in records:
        for a in r.answers:
            if not a.is_pdu:
                continue
            if machine is not None and not _acceptor_allows(machine, a.what):
                return [
                    Problem(
                        "conformance",
                        r.step.label,
                        f"{a.what} after {ended_by}",
                        f"the peer sent {a.summary()} after {ended_by} ({machine.state})",
                        "PS3.8 9.2 Table 9-10 (Sta13 allows only AA-6/AA-7)",
                    )
                ]
            if machine is None and a.what in _ENDINGS:
                machine, ended_by = acceptor_after(a.what), a.what
    return []


def _association_answers(records: Sequence[StepRecord]) -> list[Problem]:
    """The acceptor's own machine: an A-ASSOCIATE-AC only in Sta3, after one acceptable
    A-ASSOCIATE-RQ (PS3.8 Table 9-10 Evt6 -> AE-6, Evt7 -> AE-7)."""
    if not records:
        return []
    first = records[0].step
    out: list[Problem] = []
    acs = [(r, a) for r in records for a in r.answers if a.what == "A-ASSOCIATE-AC"]
    if not acs:
        return out
    if first.data[:1] != b"\x01":
        out.append(
            Problem(
                "conformance",
                first.label,
                "A-ASSOCIATE-AC",
                "A-ASSOCIATE-AC although the connection began with no A-ASSOCIATE-RQ",
                "PS3.8 9.2 Table 9-10 (Sta2: Evt10/Evt19 -> AA-1)",
            )
        )
    elif first.fault == "bad-version":
        out.append(
            Problem(
                "conformance",
                first.label,
                "A-ASSOCIATE-AC",
                "A-ASSOCIATE-AC to a protocol version without bit 0 (version 1)",
                "PS3.8 9.3.2 (Protocol-version) and 9.3.4 (reason 2, protocol version not "
                "supported)",
            )
        )
    elif first.fault == "malformed-rq":
        out.append(
            Problem(
                "conformance",
                first.label,
                "A-ASSOCIATE-AC",
                "A-ASSOCIATE-AC to an A-ASSOCIATE-RQ whose items overrun the PDU",
                "PS3.8 9.2 Table 9-10 (Sta2 Evt19 -> AA-1: A-ABORT) and 9.3.2",
            )
        )
    if len(acs) > 1:
        out.append(
            Problem(
                "conformance",
                acs[1][0].step.label,
                "second A-ASSOCIATE-AC",
                "two A-ASSOCIATE-AC on one connection",
                "PS3.8 9.2 Table 9-10 (Evt7 only in Sta3)",
            )
        )
    return out


def _abort_reasons(records: Sequence[StepRecord]) -> list[Problem]:
    """PS3.8 Table 9-26 / 9.3.1: the reason of a service-provider A-ABORT that answers a
    fault in Sta6 must match the fault (or be 0, reason-not-specified)."""
    accepted = False
    for i, r in enumerate(records):
        fault = r.step.fault
        if accepted and fault in ("unrecognized-pdu", "unexpected-pdu") and r.sent:
            allowed = {0, 1} if fault == "unrecognized-pdu" else {0, 2}
            for later in records[i:]:
                for a in later.answers:
                    if a.what in ("A-ASSOCIATE-RJ", "A-RELEASE-RP"):
                        return []
                    if a.what != "A-ABORT":
                        continue
                    if a.source == 2 and a.reason not in allowed:
                        want = (
                            "1 (unrecognized-PDU)"
                            if fault == "unrecognized-pdu"
                            else ("2 (unexpected-PDU)")
                        )
                        return [
                            Problem(
                                "conformance",
                                r.step.label,
                                a.summary(),
                                f"A-ABORT reason {a.reason} for an {fault}; PS3.8 wants {want}",
                                "PS3.8 9.3.8 Table 9-26 and 9.2 Table 9-10 (AA-8)",
                            )
                        ]
                    return []
            return []
        for a in r.answers:
            if a.what == "A-ASSOCIATE-AC":
                accepted = True
            elif a.what in ("A-ABORT", "A-ASSOCIATE-RJ", "A-RELEASE-RP"):
                return []
    return []


def _dimse(records: Sequence[StepRecord]) -> list[Problem]:
    """PS3.7 9.3: a response has the command field of its request's response; C-ECHO and
    C-STORE have no pending or cancel status (PS3.7 9.1.5, PS3.4 B.2.3)."""
    out: list[Problem] = []
    for r in records:
        step = r.step
        if r.expected != "dimse" or step.service is None:
            continue
        for a in r.answers:
            if a.command is None or a.responded_to != step.message_id:
                continue
            want = _RESPONSE_OF.get(step.service)
            if want is not None and a.command not in (want, -1):
                out.append(
                    Problem(
                        "dimse",
                        step.label,
                        a.summary(),
                        f"{a.summary()} answers a {step.service}-RQ",
                        "PS3.7 9.3 (the response's Command Field matches the request)",
                    )
                )
            elif (
                step.service in ("C-ECHO", "C-STORE")
                and a.status is not None
                and a.status in (0xFE00, 0xFF00, 0xFF01)
            ):
                info = status_info(a.status, step.service)
                out.append(
                    Problem(
                        "dimse",
                        step.label,
                        a.summary(),
                        f"{step.service}-RSP with status {info}",
                        "PS3.7 9.1.1.1.4 / 9.1.5.1.4 and PS3.4 B.2.3 (no pending or cancel)",
                    )
                )
    return out
