"""The DICOM Upper Layer state machine of PS3.8 section 9.2, without any I/O.

The machine is fed events (Evt1-Evt19: local primitives, received PDUs, transport and timer
indications) and answers with the outputs the I/O layer must carry out, in order: open,
accept or close the transport, send a PDU, start or stop ARTIM, hand a primitive to the
local user. It never touches a socket, a clock or an event loop.

PS3.8 Table 9-10 is kept as one piece of data, :data:`TABLE_9_10`, laid out like the
standard (one row per event, one column per state); :data:`TRANSITIONS` is the same table
as a ``{(state, event): action}`` dict. Actions AE-1 ... AA-8 (Tables 9-6 to 9-9) are small
named functions.

PDU objects are opaque here: they are stored and forwarded, never decoded. The only field
ever read is ``source`` of a received A-ABORT PDU (AA-3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Final, NamedTuple, TypeAlias

from ..enums import AbortReason, AbortSource
from ..errors import AiodimseError

__all__ = [
    "ACTIONS",
    "TABLE_9_10",
    "TRANSITIONS",
    "AcceptTransport",
    "Action",
    "CloseTransport",
    "ConnectTransport",
    "Event",
    "Indicate",
    "Output",
    "Primitive",
    "ProtocolStateError",
    "Send",
    "SendAbort",
    "SendReleaseRP",
    "SendReleaseRQ",
    "StartARTIM",
    "State",
    "StateMachine",
    "StopARTIM",
    "Transition",
    "event_for_pdu_type",
]


# -- states and events -----------------------------------------------------------------


class State(IntEnum):
    """PS3.8 9.2.1 (Tables 9-1 to 9-5): the states of the Upper Layer state machine."""

    STA1 = 1
    STA2 = 2
    STA3 = 3
    STA4 = 4
    STA5 = 5
    STA6 = 6
    STA7 = 7
    STA8 = 8
    STA9 = 9
    STA10 = 10
    STA11 = 11
    STA12 = 12
    STA13 = 13

    @property
    def description(self) -> str:
        """The standard's definition of the state."""
        return _STATE_DESCRIPTIONS[self]

    def __str__(self) -> str:
        return f"Sta{self.value}"


_STATE_DESCRIPTIONS: Final[dict[State, str]] = {
    # PS3.8 Table 9-1: no association
    State.STA1: "Idle",
    # Table 9-2: association establishment
    State.STA2: "Transport connection open (Awaiting A-ASSOCIATE-RQ PDU)",
    State.STA3: "Awaiting local A-ASSOCIATE response primitive (from local user)",
    State.STA4: "Awaiting transport connection opening to complete (from local transport service)",
    State.STA5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    # Table 9-3: data transfer
    State.STA6: "Association established and ready for data transfer",
    # Table 9-4: association release
    State.STA7: "Awaiting A-RELEASE-RP PDU",
    State.STA8: "Awaiting local A-RELEASE response primitive (from local user)",
    State.STA9: "Release collision requestor side; awaiting A-RELEASE response (from local user)",
    State.STA10: "Release collision acceptor side; awaiting A-RELEASE-RP PDU",
    State.STA11: "Release collision requestor side; awaiting A-RELEASE-RP PDU",
    State.STA12: (
        "Release collision acceptor side; awaiting A-RELEASE response primitive (from local user)"
    ),
    # Table 9-5: waiting for transport connection close
    State.STA13: "Awaiting Transport Connection Close Indication (Association no longer exists)",
}


class Event(IntEnum):
    """PS3.8 Table 9-10 (rows): the events that drive the state machine."""

    EVT1 = 1
    EVT2 = 2
    EVT3 = 3
    EVT4 = 4
    EVT5 = 5
    EVT6 = 6
    EVT7 = 7
    EVT8 = 8
    EVT9 = 9
    EVT10 = 10
    EVT11 = 11
    EVT12 = 12
    EVT13 = 13
    EVT14 = 14
    EVT15 = 15
    EVT16 = 16
    EVT17 = 17
    EVT18 = 18
    EVT19 = 19

    @property
    def description(self) -> str:
        """The standard's name of the event."""
        return _EVENT_DESCRIPTIONS[self]

    def __str__(self) -> str:
        return f"Evt{self.value}"


_EVENT_DESCRIPTIONS: Final[dict[Event, str]] = {
    Event.EVT1: "A-ASSOCIATE request (local user)",
    Event.EVT2: "Transport connection confirmation (local transport service)",
    Event.EVT3: "A-ASSOCIATE-AC PDU (received on transport connection)",
    Event.EVT4: "A-ASSOCIATE-RJ PDU (received on transport connection)",
    Event.EVT5: "Transport connection indication (local transport service)",
    Event.EVT6: "A-ASSOCIATE-RQ PDU (received on transport connection)",
    Event.EVT7: "A-ASSOCIATE response primitive (accept)",
    Event.EVT8: "A-ASSOCIATE response primitive (reject)",
    Event.EVT9: "P-DATA request primitive",
    Event.EVT10: "P-DATA-TF PDU (received on transport connection)",
    Event.EVT11: "A-RELEASE request primitive",
    Event.EVT12: "A-RELEASE-RQ PDU (received on open transport connection)",
    Event.EVT13: "A-RELEASE-RP PDU (received on transport connection)",
    Event.EVT14: "A-RELEASE response primitive",
    Event.EVT15: "A-ABORT request primitive",
    Event.EVT16: "A-ABORT PDU (received on open transport connection)",
    Event.EVT17: "Transport connection closed indication (local transport service)",
    Event.EVT18: "ARTIM timer expired (Association reject/release timer)",
    Event.EVT19: "Unrecognized or invalid PDU received",
}

# PS3.8 9.3.1: PDU-type -> the event its arrival raises. Anything else is Evt19.
_PDU_TYPE_EVENTS: Final[dict[int, Event]] = {
    0x01: Event.EVT6,  # A-ASSOCIATE-RQ
    0x02: Event.EVT3,  # A-ASSOCIATE-AC
    0x03: Event.EVT4,  # A-ASSOCIATE-RJ
    0x04: Event.EVT10,  # P-DATA-TF
    0x05: Event.EVT12,  # A-RELEASE-RQ
    0x06: Event.EVT13,  # A-RELEASE-RP
    0x07: Event.EVT16,  # A-ABORT
}


def event_for_pdu_type(pdu_type: int) -> Event:
    """The event raised by receiving a PDU of this PDU-type (Evt19 if the type is unknown)."""
    return _PDU_TYPE_EVENTS.get(pdu_type, Event.EVT19)


class Primitive(Enum):
    """The service primitives the machine hands to the local user (PS3.8 section 7)."""

    A_ASSOCIATE_INDICATION = "A-ASSOCIATE indication"
    A_ASSOCIATE_CONFIRM_ACCEPT = "A-ASSOCIATE confirmation (accept)"
    A_ASSOCIATE_CONFIRM_REJECT = "A-ASSOCIATE confirmation (reject)"
    P_DATA_INDICATION = "P-DATA indication"
    A_RELEASE_INDICATION = "A-RELEASE indication"
    A_RELEASE_CONFIRM = "A-RELEASE confirmation"
    A_ABORT_INDICATION = "A-ABORT indication"
    A_P_ABORT_INDICATION = "A-P-ABORT indication"


# -- outputs: what the I/O layer must do, in order --------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectTransport:
    """Issue a TRANSPORT CONNECT request to the peer (AE-1)."""


@dataclass(frozen=True, slots=True)
class AcceptTransport:
    """Issue the transport connection response: accept the incoming connection (AE-5)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send a PDU the local user supplied with its primitive (RQ, AC, RJ, P-DATA-TF)."""

    pdu: object


@dataclass(frozen=True, slots=True)
class SendReleaseRQ:
    """Send an A-RELEASE-RQ PDU (AR-1)."""


@dataclass(frozen=True, slots=True)
class SendReleaseRP:
    """Send an A-RELEASE-RP PDU (AR-4, AR-9)."""


@dataclass(frozen=True, slots=True)
class SendAbort:
    """Send an A-ABORT PDU with this source and reason (PS3.8 Table 9-26; AA-1, AA-7, AA-8)."""

    source: AbortSource
    reason: AbortReason


@dataclass(frozen=True, slots=True)
class Indicate:
    """Hand a primitive to the local user, with the PDU that carried it (None if no PDU did).

    ``reason`` is the provider reason of an A-P-ABORT this machine raised itself (AA-8).
    """

    primitive: Primitive
    pdu: object | None = None
    reason: AbortReason | None = None


@dataclass(frozen=True, slots=True)
class StartARTIM:
    """Start the ARTIM timer, or restart it if it is running (PS3.8 9.1.5)."""


@dataclass(frozen=True, slots=True)
class StopARTIM:
    """Stop the ARTIM timer if it is running."""


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Close the transport connection (PS3.8 9.1.4)."""


Output: TypeAlias = (
    ConnectTransport
    | AcceptTransport
    | Send
    | SendReleaseRQ
    | SendReleaseRP
    | SendAbort
    | Indicate
    | StartARTIM
    | StopARTIM
    | CloseTransport
)
Outputs: TypeAlias = tuple[Output, ...]

# The outputs without parameters are values; sharing one instance costs nothing per event.
_CONNECT: Final = ConnectTransport()
_ACCEPT: Final = AcceptTransport()
_SEND_RELEASE_RQ: Final = SendReleaseRQ()
_SEND_RELEASE_RP: Final = SendReleaseRP()
_START_ARTIM: Final = StartARTIM()
_STOP_ARTIM: Final = StopARTIM()
_CLOSE: Final = CloseTransport()


# -- errors and results ------------------------------------------------------------------


class ProtocolStateError(AiodimseError):
    """An event arrived in a state where PS3.8 Table 9-10 has no action for it.

    For a local primitive this is a programming error of the caller (e.g. P-DATA after
    A-RELEASE); for a transport event it means the I/O layer fed an impossible sequence
    (e.g. a PDU in Sta1, where there is no transport connection).
    """

    def __init__(self, state: State, event: Event) -> None:
        self.state = state
        self.event = event
        super().__init__(
            f"{event} ({event.description}) is not allowed in {state} ({state.description}):"
            " PS3.8 Table 9-10 has no action for it"
        )


class Transition(NamedTuple):
    """The result of one event: where the machine was, what it did, where it is now."""

    previous_state: State
    event: Event
    action: str
    next_state: State
    outputs: Outputs


ActionFunction: TypeAlias = Callable[["StateMachine", Event, object], tuple[State, Outputs]]


@dataclass(frozen=True, slots=True)
class Action:
    """One action of PS3.8 Tables 9-6 to 9-9: its name, the standard's definition, its code.

    ``next_states`` lists the states the standard says the action leads to (two for AE-6
    and AR-8, which branch).
    """

    name: str
    description: str
    next_states: tuple[State, ...]
    function: ActionFunction = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.name


# -- actions (PS3.8 9.2.2) ------------------------------------------------------------------

_STA1: Final = State.STA1
_STA2: Final = State.STA2
_STA3: Final = State.STA3
_STA4: Final = State.STA4
_STA5: Final = State.STA5
_STA6: Final = State.STA6
_STA7: Final = State.STA7
_STA8: Final = State.STA8
_STA9: Final = State.STA9
_STA10: Final = State.STA10
_STA11: Final = State.STA11
_STA12: Final = State.STA12
_STA13: Final = State.STA13


def _no_pdu(event: Event) -> ValueError:
    """A local primitive that sends a PDU is meaningless without it."""
    return ValueError(f"{event} ({event.description}) needs the PDU to send as its payload")


def _provider_abort_reason(event: Event, payload: object) -> AbortReason:
    """PS3.8 Table 9-26 reason of an A-ABORT the provider sends because of what it received.

    A well-formed PDU in the wrong state is "unexpected-PDU"; for Evt19 the caller says what
    was wrong (an AbortReason, or an error with an ``abort_reason``), else "not specified".
    """
    if event != Event.EVT19:
        return AbortReason.UNEXPECTED_PDU
    if isinstance(payload, AbortReason):
        return payload
    reason = getattr(payload, "abort_reason", None)
    if isinstance(reason, AbortReason):
        return reason
    return AbortReason.REASON_NOT_SPECIFIED


# PS3.8 Table 9-6: association establishment related actions


def _ae_1(machine: StateMachine, event: Event, rq: object) -> tuple[State, Outputs]:
    if rq is None:
        raise _no_pdu(event)
    machine._rq = rq  # sent by AE-2 once the transport is up
    machine._is_requestor = True
    return _STA4, (_CONNECT,)


def _ae_2(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    rq, machine._rq = machine._rq, None
    return _STA5, (Send(rq),)


def _ae_3(machine: StateMachine, event: Event, ac: object) -> tuple[State, Outputs]:
    return _STA6, (Indicate(Primitive.A_ASSOCIATE_CONFIRM_ACCEPT, ac),)


def _ae_4(machine: StateMachine, event: Event, rj: object) -> tuple[State, Outputs]:
    return _STA1, (Indicate(Primitive.A_ASSOCIATE_CONFIRM_REJECT, rj), _CLOSE)


def _ae_5(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    machine._is_requestor = False
    return _STA2, (_ACCEPT, _START_ARTIM)


def _ae_6(machine: StateMachine, event: Event, rq: object) -> tuple[State, Outputs]:
    check = machine._provider_check
    rj = None if check is None else check(rq)
    if rj is None:
        return _STA3, (_STOP_ARTIM, Indicate(Primitive.A_ASSOCIATE_INDICATION, rq))
    return _STA13, (_STOP_ARTIM, Send(rj), _START_ARTIM)


def _ae_7(machine: StateMachine, event: Event, ac: object) -> tuple[State, Outputs]:
    if ac is None:
        raise _no_pdu(event)
    return _STA6, (Send(ac),)


def _ae_8(machine: StateMachine, event: Event, rj: object) -> tuple[State, Outputs]:
    if rj is None:
        raise _no_pdu(event)
    return _STA13, (Send(rj), _START_ARTIM)


# PS3.8 Table 9-7: data transfer related actions


def _dt_1(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    if pdu is None:
        raise _no_pdu(event)
    return _STA6, (Send(pdu),)


def _dt_2(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    return _STA6, (Indicate(Primitive.P_DATA_INDICATION, pdu),)


# PS3.8 Table 9-8: association release related actions

_AR_1_OUTPUTS: Final[Outputs] = (_SEND_RELEASE_RQ,)
_AR_4_OUTPUTS: Final[Outputs] = (_SEND_RELEASE_RP, _START_ARTIM)
_AR_5_OUTPUTS: Final[Outputs] = (_STOP_ARTIM,)
_AR_9_OUTPUTS: Final[Outputs] = (_SEND_RELEASE_RP,)


def _ar_1(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA7, _AR_1_OUTPUTS


def _ar_2(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    return _STA8, (Indicate(Primitive.A_RELEASE_INDICATION, pdu),)


def _ar_3(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    return _STA1, (Indicate(Primitive.A_RELEASE_CONFIRM, pdu), _CLOSE)


def _ar_4(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA13, _AR_4_OUTPUTS


def _ar_5(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA1, _AR_5_OUTPUTS


def _ar_6(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    return _STA7, (Indicate(Primitive.P_DATA_INDICATION, pdu),)


def _ar_7(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    if pdu is None:
        raise _no_pdu(event)
    return _STA8, (Send(pdu),)


def _ar_8(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    # Release collision: the association-requestor answers first (PS3.8 7.2.2).
    next_state = _STA9 if machine._is_requestor else _STA10
    return next_state, (Indicate(Primitive.A_RELEASE_INDICATION, pdu),)


def _ar_9(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA11, _AR_9_OUTPUTS


def _ar_10(machine: StateMachine, event: Event, pdu: object) -> tuple[State, Outputs]:
    return _STA12, (Indicate(Primitive.A_RELEASE_CONFIRM, pdu),)


# PS3.8 Table 9-9: association abort related actions

# AA-1 says "service-user source"; Table 9-26 then wants the reason sent as 00H.
_AA_1_OUTPUTS: Final[Outputs] = (
    SendAbort(AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED),
    _START_ARTIM,
)
_AA_2_OUTPUTS: Final[Outputs] = (_STOP_ARTIM, _CLOSE)
_AA_4_OUTPUTS: Final[Outputs] = (Indicate(Primitive.A_P_ABORT_INDICATION),)
_AA_5_OUTPUTS: Final[Outputs] = (_STOP_ARTIM,)
_AA_8_UNEXPECTED_OUTPUTS: Final[Outputs] = (
    SendAbort(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU),
    Indicate(Primitive.A_P_ABORT_INDICATION, None, AbortReason.UNEXPECTED_PDU),
    _START_ARTIM,
)


def _aa_1(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA13, _AA_1_OUTPUTS


def _aa_2(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA1, _AA_2_OUTPUTS


def _aa_3(machine: StateMachine, event: Event, abort: object) -> tuple[State, Outputs]:
    # PS3.8 Table 9-26: source 0 is the service-user; 2 (and the reserved 1) the provider.
    if getattr(abort, "source", None) == AbortSource.SERVICE_USER:
        primitive = Primitive.A_ABORT_INDICATION
    else:
        primitive = Primitive.A_P_ABORT_INDICATION
    return _STA1, (Indicate(primitive, abort), _CLOSE)


def _aa_4(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA1, _AA_4_OUTPUTS


def _aa_5(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA1, _AA_5_OUTPUTS


def _aa_6(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    return _STA13, ()


def _aa_7(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    # The association no longer exists (Sta13): only the provider can be the source.
    reason = _provider_abort_reason(event, payload)
    return _STA13, (SendAbort(AbortSource.SERVICE_PROVIDER, reason),)


def _aa_8(machine: StateMachine, event: Event, payload: object) -> tuple[State, Outputs]:
    if event != Event.EVT19:
        return _STA13, _AA_8_UNEXPECTED_OUTPUTS
    reason = _provider_abort_reason(event, payload)
    return _STA13, (
        SendAbort(AbortSource.SERVICE_PROVIDER, reason),
        Indicate(Primitive.A_P_ABORT_INDICATION, None, reason),
        _START_ARTIM,
    )


# The definitions are the standard's wording (PS3.8 Tables 9-6 to 9-9).
AE_1: Final = Action(
    "AE-1",
    "Issue TRANSPORT CONNECT request primitive to local transport service",
    (_STA4,),
    _ae_1,
)
AE_2: Final = Action("AE-2", "Send A-ASSOCIATE-RQ-PDU", (_STA5,), _ae_2)
AE_3: Final = Action("AE-3", "Issue A-ASSOCIATE confirmation (accept) primitive", (_STA6,), _ae_3)
AE_4: Final = Action(
    "AE-4",
    "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection",
    (_STA1,),
    _ae_4,
)
AE_5: Final = Action(
    "AE-5", "Issue Transport connection response primitive; start ARTIM timer", (_STA2,), _ae_5
)
AE_6: Final = Action(
    "AE-6",
    "Stop ARTIM timer and if A-ASSOCIATE-RQ acceptable by service-provider: issue A-ASSOCIATE"
    " indication primitive (next state is Sta3); otherwise: issue A-ASSOCIATE-RJ-PDU and start"
    " ARTIM timer (next state is Sta13)",
    (_STA3, _STA13),
    _ae_6,
)
AE_7: Final = Action("AE-7", "Send A-ASSOCIATE-AC PDU", (_STA6,), _ae_7)
AE_8: Final = Action("AE-8", "Send A-ASSOCIATE-RJ PDU and start ARTIM timer", (_STA13,), _ae_8)
DT_1: Final = Action("DT-1", "Send P-DATA-TF PDU", (_STA6,), _dt_1)
DT_2: Final = Action("DT-2", "Send P-DATA indication primitive", (_STA6,), _dt_2)
AR_1: Final = Action("AR-1", "Send A-RELEASE-RQ PDU", (_STA7,), _ar_1)
AR_2: Final = Action("AR-2", "Issue A-RELEASE indication primitive", (_STA8,), _ar_2)
AR_3: Final = Action(
    "AR-3",
    "Issue A-RELEASE confirmation primitive, and close transport connection",
    (_STA1,),
    _ar_3,
)
AR_4: Final = Action("AR-4", "Issue A-RELEASE-RP PDU and start ARTIM timer", (_STA13,), _ar_4)
AR_5: Final = Action("AR-5", "Stop ARTIM timer", (_STA1,), _ar_5)
AR_6: Final = Action("AR-6", "Issue P-DATA indication", (_STA7,), _ar_6)
AR_7: Final = Action("AR-7", "Issue P-DATA-TF PDU", (_STA8,), _ar_7)
AR_8: Final = Action(
    "AR-8",
    "Issue A-RELEASE indication (release collision): if association-requestor, next state is"
    " Sta9; if not, next state is Sta10",
    (_STA9, _STA10),
    _ar_8,
)
AR_9: Final = Action("AR-9", "Send A-RELEASE-RP PDU", (_STA11,), _ar_9)
AR_10: Final = Action("AR-10", "Issue A-RELEASE confirmation primitive", (_STA12,), _ar_10)
AA_1: Final = Action(
    "AA-1",
    "Send A-ABORT PDU (service-user source) and start (or restart if already started) ARTIM timer",
    (_STA13,),
    _aa_1,
)
AA_2: Final = Action(
    "AA-2", "Stop ARTIM timer if running. Close transport connection", (_STA1,), _aa_2
)
AA_3: Final = Action(
    "AA-3",
    "If (service-user initiated abort): issue A-ABORT indication and close transport"
    " connection; otherwise (service-provider initiated abort): issue A-P-ABORT indication and"
    " close transport connection",
    (_STA1,),
    _aa_3,
)
AA_4: Final = Action("AA-4", "Issue A-P-ABORT indication primitive", (_STA1,), _aa_4)
AA_5: Final = Action("AA-5", "Stop ARTIM timer", (_STA1,), _aa_5)
AA_6: Final = Action("AA-6", "Ignore PDU", (_STA13,), _aa_6)
AA_7: Final = Action("AA-7", "Send A-ABORT PDU", (_STA13,), _aa_7)
AA_8: Final = Action(
    "AA-8",
    "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, and start"
    " ARTIM timer",
    (_STA13,),
    _aa_8,
)

ACTIONS: Final[dict[str, Action]] = {
    action.name: action
    for action in (
        AE_1, AE_2, AE_3, AE_4, AE_5, AE_6, AE_7, AE_8,
        DT_1, DT_2,
        AR_1, AR_2, AR_3, AR_4, AR_5, AR_6, AR_7, AR_8, AR_9, AR_10,
        AA_1, AA_2, AA_3, AA_4, AA_5, AA_6, AA_7, AA_8,
    )
}  # fmt: skip


# -- PS3.8 Table 9-10 ----------------------------------------------------------------------

___: Final = None  # an empty cell: the event is not allowed in that state

# One row per event, one column per state, exactly as Table 9-10 is printed. The next
# state of each cell is the one its action defines (Action.next_states).
# fmt: off
TABLE_9_10: Final[tuple[tuple[Action | None, ...], ...]] = (
    # Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
    (AE_1, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt1
    (___,  ___,  ___,  AE_2, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt2
    (___,  AA_1, AA_8, ___,  AE_3, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),  # Evt3
    (___,  AA_1, AA_8, ___,  AE_4, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),  # Evt4
    (AE_5, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt5
    (___,  AE_6, AA_8, ___,  AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7),  # Evt6
    (___,  ___,  AE_7, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt7
    (___,  ___,  AE_8, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt8
    (___,  ___,  ___,  ___,  ___,  DT_1, ___,  AR_7, ___,  ___,  ___,  ___,  ___),  # Evt9
    (___,  AA_1, AA_8, ___,  AA_8, DT_2, AR_6, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),  # Evt10
    (___,  ___,  ___,  ___,  ___,  AR_1, ___,  ___,  ___,  ___,  ___,  ___,  ___),  # Evt11
    (___,  AA_1, AA_8, ___,  AA_8, AR_2, AR_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6),  # Evt12
    (___,  AA_1, AA_8, ___,  AA_8, AA_8, AR_3, AA_8, AA_8, AR_10,AR_3, AA_8, AA_6),  # Evt13
    (___,  ___,  ___,  ___,  ___,  ___,  ___,  AR_4, AR_9, ___,  ___,  AR_4, ___),  # Evt14
    (___,  ___,  AA_1, AA_2, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, ___),  # Evt15
    (___,  AA_2, AA_3, ___,  AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_2),  # Evt16
    (___,  AA_5, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AR_5),  # Evt17
    (___,  AA_2, ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  ___,  AA_2),  # Evt18
    (___,  AA_1, AA_8, ___,  AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7),  # Evt19
)
# fmt: on

assert len(TABLE_9_10) == len(Event) and all(len(row) == len(State) for row in TABLE_9_10)

# The same table keyed by cell: exactly the non-empty cells of Table 9-10.
TRANSITIONS: Final[dict[tuple[State, Event], Action]] = {
    (State(column), Event(row)): action
    for row, cells in enumerate(TABLE_9_10, start=1)
    for column, action in enumerate(cells, start=1)
    if action is not None
}

_new_tuple: Final = tuple.__new__

# Per-state rows for the machine: one dict lookup per event.
_ROWS: Final[dict[State, dict[Event, Action]]] = {
    state: {event: action for (s, event), action in TRANSITIONS.items() if s is state}
    for state in State
}


# -- the machine ------------------------------------------------------------------------------


class StateMachine:
    """One association's PS3.8 Upper Layer state machine (sans-I/O).

    Feed it events with :meth:`handle`; carry out the returned outputs in order.
    ``provider_check(rq)`` may return an A-ASSOCIATE-RJ PDU to refuse an A-ASSOCIATE-RQ on
    the provider's behalf (AE-6, e.g. an unsupported protocol version), or None to pass the
    request on to the local user.
    """

    __slots__ = ("_is_requestor", "_provider_check", "_row", "_rq", "_state")

    def __init__(self, provider_check: Callable[[object], object | None] | None = None) -> None:
        self._state = _STA1
        self._row = _ROWS[_STA1]
        self._is_requestor: bool | None = None
        self._rq: object = None
        self._provider_check = provider_check

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def is_requestor(self) -> bool | None:
        """True after Evt1 (we asked for the association), False after Evt5, None before."""
        return self._is_requestor

    def allows(self, event: Event) -> bool:
        """Whether Table 9-10 has an action for this event in the current state."""
        return event in self._row

    def handle(self, event: Event, payload: object | None = None) -> Transition:
        """Run the action of the current state's cell for this event.

        The payload is what goes with the event: the PDU a local primitive sends (Evt1 RQ,
        Evt7 AC, Evt8 RJ, Evt9 P-DATA-TF), the PDU received (Evt3, 4, 6, 10, 12, 13, 16),
        the AbortReason (or PDUError) for Evt19, nothing otherwise. Raises
        ProtocolStateError, leaving the machine unchanged, for an empty cell.
        """
        action = self._row.get(event)
        if action is None:
            raise ProtocolStateError(self._state, Event(event))
        previous = self._state
        next_state, outputs = action.function(self, event, payload)
        if next_state is not previous:
            self._state = next_state
            self._row = _ROWS[next_state]
        # tuple.__new__ builds the NamedTuple without its Python-level __new__ (hot path).
        return _new_tuple(Transition, (previous, event, action.name, next_state, outputs))

    def receive_pdu(self, pdu_type: int, pdu: object) -> Transition:
        """Handle a received PDU given its PDU-type; an unknown type is Evt19."""
        event = _PDU_TYPE_EVENTS.get(pdu_type)
        if event is None:
            return self.handle(Event.EVT19, AbortReason.UNRECOGNIZED_PDU)
        return self.handle(event, pdu)

    receive_pdu_type = staticmethod(event_for_pdu_type)

    def __repr__(self) -> str:
        role = {None: "", True: " requestor", False: " acceptor"}[self._is_requestor]
        return f"<StateMachine {self._state}{role}>"
