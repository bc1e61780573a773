"""The PS3.8 9.2 Upper Layer state machine: every cell of Table 9-10, the actions' outputs,
and two machines talking to each other over a simulated transport (hypothesis, stateful).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aiodimse.enums import AbortReason, AbortSource
from aiodimse.errors import AiodimseError, UnrecognizedPDUParameter
from aiodimse.ul.fsm import (
    TRANSITIONS,
    AcceptTransport,
    Action,
    CloseTransport,
    ConnectTransport,
    Event,
    Indicate,
    Output,
    Primitive,
    ProtocolStateError,
    Send,
    SendAbort,
    SendReleaseRP,
    SendReleaseRQ,
    StartARTIM,
    State,
    StateMachine,
    StopARTIM,
    Transition,
)

# -- PS3.8 Table 9-10, transcribed from the standard -----------------------------------------
#
# One row per event, one column per state, as printed in PS3.8 9.2.3. A cell is
# "<action>><next state(s)>", "." where the standard leaves the cell empty.

EXPECTED_TABLE_9_10 = """
       Sta1      Sta2      Sta3      Sta4      Sta5      Sta6      Sta7      Sta8      Sta9      Sta10     Sta11     Sta12     Sta13
Evt1   AE-1>4    .         .         .         .         .         .         .         .         .         .         .         .
Evt2   .         .         .         AE-2>5    .         .         .         .         .         .         .         .         .
Evt3   .         AA-1>13   AA-8>13   .         AE-3>6    AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-6>13
Evt4   .         AA-1>13   AA-8>13   .         AE-4>1    AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-6>13
Evt5   AE-5>2    .         .         .         .         .         .         .         .         .         .         .         .
Evt6   .         AE-6>3/13 AA-8>13   .         AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-7>13
Evt7   .         .         AE-7>6    .         .         .         .         .         .         .         .         .         .
Evt8   .         .         AE-8>13   .         .         .         .         .         .         .         .         .         .
Evt9   .         .         .         .         .         DT-1>6    .         AR-7>8    .         .         .         .         .
Evt10  .         AA-1>13   AA-8>13   .         AA-8>13   DT-2>6    AR-6>7    AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-6>13
Evt11  .         .         .         .         .         AR-1>7    .         .         .         .         .         .         .
Evt12  .         AA-1>13   AA-8>13   .         AA-8>13   AR-2>8    AR-8>9/10 AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-6>13
Evt13  .         AA-1>13   AA-8>13   .         AA-8>13   AA-8>13   AR-3>1    AA-8>13   AA-8>13   AR-10>12  AR-3>1    AA-8>13   AA-6>13
Evt14  .         .         .         .         .         .         .         AR-4>13   AR-9>11   .         .         AR-4>13   .
Evt15  .         .         AA-1>13   AA-2>1    AA-1>13   AA-1>13   AA-1>13   AA-1>13   AA-1>13   AA-1>13   AA-1>13   AA-1>13   .
Evt16  .         AA-2>1    AA-3>1    .         AA-3>1    AA-3>1    AA-3>1    AA-3>1    AA-3>1    AA-3>1    AA-3>1    AA-3>1    AA-2>1
Evt17  .         AA-5>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AA-4>1    AR-5>1
Evt18  .         AA-2>1    .         .         .         .         .         .         .         .         .         .         AA-2>1
Evt19  .         AA-1>13   AA-8>13   .         AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-8>13   AA-7>13
"""  # noqa: E501


def _parse_table(text: str) -> dict[tuple[State, Event], tuple[str, frozenset[State]]]:
    lines = [line.split() for line in text.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    assert header == [f"Sta{n}" for n in range(1, 14)]
    assert [row[0] for row in rows] == [f"Evt{n}" for n in range(1, 20)]
    cells: dict[tuple[State, Event], tuple[str, frozenset[State]]] = {}
    for row in rows:
        event = Event(int(row[0].removeprefix("Evt")))
        assert len(row) == 14, row
        for column, cell in enumerate(row[1:], start=1):
            if cell == ".":
                continue
            name, _, targets = cell.partition(">")
            cells[State(column), event] = (
                name,
                frozenset(State(int(n)) for n in targets.split("/")),
            )
    return cells


EXPECTED = _parse_table(EXPECTED_TABLE_9_10)
ALL_CELLS = list(itertools.product(State, Event))


# -- PDU stand-ins: the machine treats PDUs as opaque objects ------------------------------


@dataclass(frozen=True)
class Pdu:
    """A PDU as the I/O layer would hand it over: only its type (and abort source) matter."""

    pdu_type: int
    serial: int = 0
    source: int | None = None
    reason: int | None = None
    bad_version: bool = False


RQ = Pdu(0x01, serial=1)
PEER_RQ = Pdu(0x01, serial=2)
AC = Pdu(0x02)
RJ = Pdu(0x03)
PDATA = Pdu(0x04, serial=7)
RELEASE_RQ = Pdu(0x05)
RELEASE_RP = Pdu(0x06)
PROVIDER_ABORT = Pdu(0x07, source=AbortSource.SERVICE_PROVIDER, reason=2)
USER_ABORT = Pdu(0x07, source=AbortSource.SERVICE_USER, reason=0)

# What goes with each event in the cell-by-cell tests.
PAYLOADS: dict[Event, object] = {
    Event.EVT1: RQ,
    Event.EVT3: AC,
    Event.EVT4: RJ,
    Event.EVT6: PEER_RQ,
    Event.EVT7: AC,
    Event.EVT8: RJ,
    Event.EVT9: PDATA,
    Event.EVT10: PDATA,
    Event.EVT12: RELEASE_RQ,
    Event.EVT13: RELEASE_RP,
    Event.EVT16: PROVIDER_ABORT,
    Event.EVT19: AbortReason.INVALID_PDU_PARAMETER_VALUE,
}

# Event sequences that bring a machine into each state, per association role.
_REQUESTOR_STA6: list[tuple[Event, object]] = [
    (Event.EVT1, RQ),
    (Event.EVT2, None),
    (Event.EVT3, AC),
]
_ACCEPTOR_STA6: list[tuple[Event, object]] = [
    (Event.EVT5, None),
    (Event.EVT6, PEER_RQ),
    (Event.EVT7, AC),
]
PATHS: dict[tuple[State, str], list[tuple[Event, object]]] = {
    (State.STA1, "fresh"): [],
    (State.STA2, "acceptor"): [(Event.EVT5, None)],
    (State.STA3, "acceptor"): [(Event.EVT5, None), (Event.EVT6, PEER_RQ)],
    (State.STA4, "requestor"): [(Event.EVT1, RQ)],
    (State.STA5, "requestor"): [(Event.EVT1, RQ), (Event.EVT2, None)],
    (State.STA6, "requestor"): _REQUESTOR_STA6,
    (State.STA6, "acceptor"): _ACCEPTOR_STA6,
    (State.STA7, "requestor"): [*_REQUESTOR_STA6, (Event.EVT11, None)],
    (State.STA7, "acceptor"): [*_ACCEPTOR_STA6, (Event.EVT11, None)],
    (State.STA8, "requestor"): [*_REQUESTOR_STA6, (Event.EVT12, RELEASE_RQ)],
    (State.STA8, "acceptor"): [*_ACCEPTOR_STA6, (Event.EVT12, RELEASE_RQ)],
    (State.STA9, "requestor"): [*_REQUESTOR_STA6, (Event.EVT11, None), (Event.EVT12, RELEASE_RQ)],
    (State.STA10, "acceptor"): [*_ACCEPTOR_STA6, (Event.EVT11, None), (Event.EVT12, RELEASE_RQ)],
    (State.STA11, "requestor"): [
        *_REQUESTOR_STA6,
        (Event.EVT11, None),
        (Event.EVT12, RELEASE_RQ),
        (Event.EVT14, None),
    ],
    (State.STA12, "acceptor"): [
        *_ACCEPTOR_STA6,
        (Event.EVT11, None),
        (Event.EVT12, RELEASE_RQ),
        (Event.EVT13, RELEASE_RP),
    ],
    (State.STA13, "requestor"): [*_REQUESTOR_STA6, (Event.EVT15, None)],
    (State.STA13, "acceptor"): [*_ACCEPTOR_STA6, (Event.EVT15, None)],
}
ALL_CASES = [
    (state, role, event)
    for (state, role) in PATHS
    for event in Event  # every cell, empty or not, from every way into the state
]


def machine_in(state: State, role: str) -> StateMachine:
    machine = StateMachine()
    for event, payload in PATHS[state, role]:
        machine.handle(event, payload)
    assert machine.state is state
    return machine


def expected_outputs(action: str, event: Event, payload: object) -> tuple[Output, ...]:
    """What each action must tell the I/O layer to do, from PS3.8 Tables 9-6 to 9-9."""
    reason = payload if event is Event.EVT19 else AbortReason.UNEXPECTED_PDU
    assert isinstance(reason, AbortReason)
    outputs: dict[str, tuple[Output, ...]] = {
        "AE-1": (ConnectTransport(),),
        "AE-2": (Send(RQ),),  # the RQ given with Evt1
        "AE-3": (Indicate(Primitive.A_ASSOCIATE_CONFIRM_ACCEPT, payload),),
        "AE-4": (Indicate(Primitive.A_ASSOCIATE_CONFIRM_REJECT, payload), CloseTransport()),
        "AE-5": (AcceptTransport(), StartARTIM()),
        "AE-6": (StopARTIM(), Indicate(Primitive.A_ASSOCIATE_INDICATION, payload)),
        "AE-7": (Send(payload),),
        "AE-8": (Send(payload), StartARTIM()),
        "DT-1": (Send(payload),),
        "DT-2": (Indicate(Primitive.P_DATA_INDICATION, payload),),
        "AR-1": (SendReleaseRQ(),),
        "AR-2": (Indicate(Primitive.A_RELEASE_INDICATION, payload),),
        "AR-3": (Indicate(Primitive.A_RELEASE_CONFIRM, payload), CloseTransport()),
        "AR-4": (SendReleaseRP(), StartARTIM()),
        "AR-5": (StopARTIM(),),
        "AR-6": (Indicate(Primitive.P_DATA_INDICATION, payload),),
        "AR-7": (Send(payload),),
        "AR-8": (Indicate(Primitive.A_RELEASE_INDICATION, payload),),
        "AR-9": (SendReleaseRP(),),
        "AR-10": (Indicate(Primitive.A_RELEASE_CONFIRM, payload),),
        "AA-1": (
            SendAbort(AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED),
            StartARTIM(),
        ),
        "AA-2": (StopARTIM(), CloseTransport()),
        # PROVIDER_ABORT is the Evt16 payload: a provider-initiated abort.
        "AA-3": (Indicate(Primitive.A_P_ABORT_INDICATION, payload), CloseTransport()),
        "AA-4": (Indicate(Primitive.A_P_ABORT_INDICATION),),
        "AA-5": (StopARTIM(),),
        "AA-6": (),
        "AA-7": (SendAbort(AbortSource.SERVICE_PROVIDER, reason),),
        "AA-8": (
            SendAbort(AbortSource.SERVICE_PROVIDER, reason),
            Indicate(Primitive.A_P_ABORT_INDICATION, None, reason),
            StartARTIM(),
        ),
    }
    return outputs[action]


# -- the table itself --------------------------------------------------------------------------


def test_expected_table_has_the_standards_shape() -> None:
    # 123 non-empty cells; the empty ones are the local primitives where not allowed,
    # the PDU events where no transport exists (Sta1, Sta4), and so on.
    assert len(EXPECTED) == 123
    assert {name for name, _ in EXPECTED.values()} == (
        {f"AE-{n}" for n in range(1, 9)}
        | {"DT-1", "DT-2"}
        | {f"AR-{n}" for n in range(1, 11)}
        | {f"AA-{n}" for n in range(1, 9)}
    )


def test_transitions_are_exactly_table_9_10() -> None:
    assert set(TRANSITIONS) == set(EXPECTED)
    for cell, (name, next_states) in EXPECTED.items():
        action = TRANSITIONS[cell]
        assert action.name == name, cell
        assert frozenset(action.next_states) == next_states, cell


def test_actions_are_shared_and_described() -> None:
    by_name: dict[str, Action] = {}
    for action in TRANSITIONS.values():
        assert by_name.setdefault(action.name, action) is action  # one object per action
        assert action.description
    assert "release collision" in by_name["AR-8"].description
    assert by_name["AA-6"].description == "Ignore PDU"


@pytest.mark.parametrize(("state", "role", "event"), ALL_CASES)
def test_every_cell(state: State, role: str, event: Event) -> None:
    machine = machine_in(state, role)
    payload = PAYLOADS.get(event)
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(ProtocolStateError) as info:
            machine.handle(event, payload)
        assert info.value.state is state and info.value.event is event
        assert machine.state is state  # nothing happened
        assert not machine.allows(event)
        return
    name, next_states = expected
    assert machine.allows(event)
    transition = machine.handle(event, payload)
    assert transition.previous_state is state
    assert transition.event is event
    assert transition.action == name
    assert transition.next_state is machine.state
    assert machine.state in next_states
    if name == "AR-8":  # PS3.8 Table 9-8: requestor side -> Sta9, acceptor side -> Sta10
        assert machine.state is (State.STA9 if role == "requestor" else State.STA10)
    if name == "AE-6":  # no provider check: the RQ is acceptable
        assert machine.state is State.STA3
    assert transition.outputs == expected_outputs(name, event, payload)


def test_protocol_state_error_names_event_and_state() -> None:
    machine = machine_in(State.STA7, "requestor")
    with pytest.raises(ProtocolStateError, match=r"Evt9 \(P-DATA request primitive\).*Sta7"):
        machine.handle(Event.EVT9, PDATA)
    assert isinstance(ProtocolStateError(State.STA1, Event.EVT3), AiodimseError)


def test_a_received_pdu_without_transport_is_an_error() -> None:
    for event in (Event.EVT3, Event.EVT10, Event.EVT16, Event.EVT17, Event.EVT19):
        with pytest.raises(ProtocolStateError):
            StateMachine().handle(event, PAYLOADS.get(event))


@pytest.mark.parametrize(
    ("state", "role", "event"),
    [
        (State.STA1, "fresh", Event.EVT1),
        (State.STA3, "acceptor", Event.EVT7),
        (State.STA3, "acceptor", Event.EVT8),
        (State.STA6, "requestor", Event.EVT9),
        (State.STA8, "acceptor", Event.EVT9),
    ],
)
def test_a_primitive_that_sends_needs_its_pdu(state: State, role: str, event: Event) -> None:
    machine = machine_in(state, role)
    with pytest.raises(ValueError, match="needs the PDU"):
        machine.handle(event)
    assert machine.state is state


# -- actions with choices ----------------------------------------------------------------------


def test_ar8_release_collision_depends_on_the_association_role() -> None:
    requestor = machine_in(State.STA7, "requestor")
    acceptor = machine_in(State.STA7, "acceptor")
    assert requestor.is_requestor is True and acceptor.is_requestor is False
    assert requestor.handle(Event.EVT12, RELEASE_RQ).next_state is State.STA9
    assert acceptor.handle(Event.EVT12, RELEASE_RQ).next_state is State.STA10
    # and the two sides finish the collision as PS3.8 7.2.2 describes
    assert requestor.handle(Event.EVT14).outputs == (SendReleaseRP(),)
    assert requestor.state is State.STA11
    t = acceptor.handle(Event.EVT13, RELEASE_RP)
    assert (t.action, t.next_state) == ("AR-10", State.STA12)
    t = acceptor.handle(Event.EVT14)
    assert (t.action, t.next_state, t.outputs) == (
        "AR-4",
        State.STA13,
        (SendReleaseRP(), StartARTIM()),
    )
    t = requestor.handle(Event.EVT13, RELEASE_RP)
    assert (t.action, t.next_state) == ("AR-3", State.STA1)
    assert t.outputs == (Indicate(Primitive.A_RELEASE_CONFIRM, RELEASE_RP), CloseTransport())


@pytest.mark.parametrize(
    ("abort", "primitive"),
    [
        (USER_ABORT, Primitive.A_ABORT_INDICATION),
        (PROVIDER_ABORT, Primitive.A_P_ABORT_INDICATION),
        (Pdu(0x07, source=1), Primitive.A_P_ABORT_INDICATION),  # reserved source value
    ],
)
def test_aa3_abort_source_chooses_the_indication(abort: Pdu, primitive: Primitive) -> None:
    for state, role in [
        (State.STA3, "acceptor"),
        (State.STA6, "requestor"),
        (State.STA12, "acceptor"),
    ]:
        machine = machine_in(state, role)
        t = machine.handle(Event.EVT16, abort)
        assert (t.action, t.next_state) == ("AA-3", State.STA1)
        assert t.outputs == (Indicate(primitive, abort), CloseTransport())


def test_ae6_provider_check_rejects() -> None:
    seen: list[object] = []
    refusal = Pdu(0x03, serial=99)

    def check(rq: object) -> object | None:
        seen.append(rq)
        return refusal if isinstance(rq, Pdu) and rq.bad_version else None

    machine = StateMachine(provider_check=check)
    machine.handle(Event.EVT5)
    bad = Pdu(0x01, bad_version=True)
    t = machine.handle(Event.EVT6, bad)
    assert seen == [bad]
    assert (t.action, t.next_state) == ("AE-6", State.STA13)
    assert t.outputs == (StopARTIM(), Send(refusal), StartARTIM())
    # the user never hears of it; the peer closes or ARTIM expires
    assert machine.handle(Event.EVT17).action == "AR-5"
    assert machine.state is State.STA1

    machine = StateMachine(provider_check=check)
    machine.handle(Event.EVT5)
    t = machine.handle(Event.EVT6, PEER_RQ)
    assert t.next_state is State.STA3
    assert t.outputs == (StopARTIM(), Indicate(Primitive.A_ASSOCIATE_INDICATION, PEER_RQ))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (AbortReason.UNRECOGNIZED_PDU, AbortReason.UNRECOGNIZED_PDU),
        (UnrecognizedPDUParameter("item 0x99"), AbortReason.UNRECOGNIZED_PDU_PARAMETER),
        (None, AbortReason.REASON_NOT_SPECIFIED),
    ],
)
def test_aa8_for_an_invalid_pdu_sends_the_given_reason(
    payload: object, reason: AbortReason
) -> None:
    machine = machine_in(State.STA6, "acceptor")
    t = machine.handle(Event.EVT19, payload)
    assert (t.action, t.next_state) == ("AA-8", State.STA13)
    assert t.outputs == (
        SendAbort(AbortSource.SERVICE_PROVIDER, reason),
        Indicate(Primitive.A_P_ABORT_INDICATION, None, reason),
        StartARTIM(),
    )
    # Sta13: the same PDU again gets an A-ABORT (AA-7) but no second indication
    t = machine.handle(Event.EVT19, payload)
    assert (t.action, t.next_state) == ("AA-7", State.STA13)
    assert t.outputs == (SendAbort(AbortSource.SERVICE_PROVIDER, reason),)


def test_aa1_is_a_service_user_abort() -> None:
    # PS3.8 Table 9-26: with the service-user source the reason is sent as 00H.
    t = machine_in(State.STA6, "requestor").handle(Event.EVT15)
    abort = t.outputs[0]
    assert abort == SendAbort(AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED)
    assert isinstance(abort, SendAbort) and (abort.source, abort.reason) == (0, 0)


# -- PDU types to events -------------------------------------------------------------------------


def test_pdu_types_map_to_events() -> None:
    # PS3.8 9.3.1 PDU types against the rows of Table 9-10
    assert StateMachine.receive_pdu_type(0x01) is Event.EVT6  # A-ASSOCIATE-RQ
    assert StateMachine.receive_pdu_type(0x02) is Event.EVT3  # A-ASSOCIATE-AC
    assert StateMachine.receive_pdu_type(0x03) is Event.EVT4  # A-ASSOCIATE-RJ
    assert StateMachine.receive_pdu_type(0x04) is Event.EVT10  # P-DATA-TF
    assert StateMachine.receive_pdu_type(0x05) is Event.EVT12  # A-RELEASE-RQ
    assert StateMachine.receive_pdu_type(0x06) is Event.EVT13  # A-RELEASE-RP
    assert StateMachine.receive_pdu_type(0x07) is Event.EVT16  # A-ABORT
    for unknown in (0x00, 0x08, 0x10, 0xFF):
        assert StateMachine.receive_pdu_type(unknown) is Event.EVT19


def test_receive_pdu_of_unknown_type_is_an_unrecognized_pdu_abort() -> None:
    machine = machine_in(State.STA6, "requestor")
    assert machine.receive_pdu(0x04, PDATA).outputs == (
        Indicate(Primitive.P_DATA_INDICATION, PDATA),
    )
    t = machine.receive_pdu(0x42, object())
    assert t.event is Event.EVT19 and t.action == "AA-8"
    assert t.outputs[0] == SendAbort(AbortSource.SERVICE_PROVIDER, AbortReason.UNRECOGNIZED_PDU)


def test_states_and_events_carry_the_standards_definitions() -> None:
    assert State.STA1.description == "Idle"
    assert "A-RELEASE-RP" in State.STA7.description
    assert "Release collision requestor side" in State.STA9.description
    assert "Release collision acceptor side" in State.STA10.description
    assert "Transport Connection Close" in State.STA13.description
    assert all(state.description for state in State)
    assert Event.EVT18.description.startswith("ARTIM timer expired")
    assert Event.EVT19.description == "Unrecognized or invalid PDU received"
    assert all(event.description for event in Event)
    assert (str(State.STA10), str(Event.EVT19)) == ("Sta10", "Evt19")


# -- two machines on a simulated transport (hypothesis, stateful) --------------------------------

EOF = "EOF"  # the peer closed its end of the transport connection
GARBAGE = -2  # serial of the P-DATA-TF PDUs nobody sent
REQUESTOR, ACCEPTOR = "requestor", "acceptor"
RARELY = st.integers(0, 9).map(lambda n: n == 0)  # for the rules that end everything

# What the runs went through; the reachability test reads it.
SEEN: Counter[str] = Counter()


@dataclass
class User:
    """What a well-behaved service-user knows and may do (PS3.8 section 7)."""

    role: str
    phase: str = "idle"  # idle -> requested/indicated -> established; `ended` on top
    ended: bool = False
    aborted: bool = False
    release_requested: bool = False
    release_indicated: bool = False
    release_responded: bool = False
    release_confirmed: bool = False
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase == "established" and not self.ended

    @property
    def collision(self) -> bool:
        return self.release_requested and self.release_indicated

    def can_respond_association(self) -> bool:
        return self.phase == "indicated" and not self.ended

    def can_send_data(self) -> bool:
        # 7.2.2: none after own A-RELEASE request; allowed after an A-RELEASE indication
        # until the response.
        return self.active and not self.release_requested and not self.release_responded

    def can_request_release(self) -> bool:
        return self.active and not self.release_requested and not self.release_indicated

    def can_respond_release(self) -> bool:
        if not (self.active and self.release_indicated and not self.release_responded):
            return False
        # 7.2.2 release collision: the association-requestor answers first; the acceptor
        # waits for the A-RELEASE confirmation.
        return not self.release_requested or self.role == REQUESTOR or self.release_confirmed

    def can_abort(self) -> bool:
        return self.phase in ("requested", "indicated", "established") and not self.ended

    def check_release_done(self) -> bool:
        """Whether the release is complete for this user (PS3.8 7.2.2), collision or not."""
        own_done = not self.release_requested or self.release_confirmed
        peer_done = not self.release_indicated or self.release_responded
        if (self.release_requested or self.release_indicated) and own_done and peer_done:
            self.ended = True
        return self.ended

    def expected_states(self) -> set[State]:
        """The machine states that agree with what this user has seen and done."""
        if self.ended:
            return {State.STA1, State.STA13}
        if self.phase == "idle":
            if self.role == REQUESTOR:
                return {State.STA1}
            # before the RQ, or after the provider refused it (AE-6), or after the peer went
            return {State.STA1, State.STA2, State.STA13}
        if self.phase == "requested":
            return {State.STA4, State.STA5}
        if self.phase == "indicated":
            return {State.STA3}
        rq, ind = self.release_requested, self.release_indicated
        if not rq and not ind:
            return {State.STA6}
        if rq and not ind:
            return {State.STA7}
        if ind and not rq:
            return {State.STA8}
        if self.role == REQUESTOR:
            return {State.STA11} if self.release_responded else {State.STA9}
        return {State.STA12} if self.release_confirmed else {State.STA10}


@dataclass
class Side:
    name: str
    machine: StateMachine
    user: User
    inbox: deque[object] = field(default_factory=deque)  # in flight towards this side
    attached: bool = False  # holds an open end of the transport connection
    artim: bool = False


def in_flight(side: Side) -> set[object]:
    """The PDU types (and EOF) on their way to this side."""
    return {item.pdu_type if isinstance(item, Pdu) else item for item in side.inbox}


class AssociationPair(RuleBasedStateMachine):
    """A requestor and an acceptor machine over an in-order transport, driven by users that
    only issue primitives the service definition allows them."""

    faults = False  # the subclass also feeds garbage

    def __init__(self) -> None:
        super().__init__()

        def provider_check(rq: object) -> object | None:
            assert isinstance(rq, Pdu)
            return Pdu(0x03, serial=-1) if rq.bad_version else None

        self.sides = {
            REQUESTOR: Side(REQUESTOR, StateMachine(), User(REQUESTOR)),
            ACCEPTOR: Side(ACCEPTOR, StateMachine(provider_check), User(ACCEPTOR)),
        }
        self.connecting = False
        self.serials = itertools.count(100)
        self.actions: list[str] = []

    # -- plumbing

    def peer(self, side: Side) -> Side:
        return self.sides[ACCEPTOR if side.name == REQUESTOR else REQUESTOR]

    def step(self, side: Side, event: Event, payload: object = None) -> None:
        before = side.machine.state
        transition = side.machine.handle(event, payload)  # ProtocolStateError fails the run
        self.carry_out_all(side, before, transition)

    def carry_out_all(self, side: Side, before: State, transition: Transition) -> None:
        event = transition.event
        assert transition.next_state in TRANSITIONS[before, event].next_states
        self.actions.append(f"{side.name}:{before}+{event}:{transition.action}")
        SEEN[transition.action] += 1
        if transition.action == "AE-6" and transition.next_state is State.STA13:
            SEEN["refused by the provider"] += 1
        for output in transition.outputs:
            self.carry_out(side, output)

    def push(self, side: Side, pdu: Pdu) -> None:
        assert side.attached, f"{side.name} sends {pdu} without a transport connection"
        peer = self.peer(side)
        if peer.attached:  # else the bytes go nowhere: the peer closed its end
            peer.inbox.append(pdu)

    def close(self, side: Side) -> None:
        if not side.attached:  # AA-2 in Sta4: give up the pending connection
            assert side.name == REQUESTOR and self.connecting
            self.connecting = False
            return
        side.attached = False
        side.inbox.clear()  # what was on its way to us is lost
        peer = self.peer(side)
        if peer.attached:
            peer.inbox.append(EOF)  # delivered after everything we already sent

    def carry_out(self, side: Side, output: Output) -> None:
        match output:
            case ConnectTransport():
                assert side.name == REQUESTOR and not self.connecting and not side.attached
                self.connecting = True
            case AcceptTransport():
                assert side.name == ACCEPTOR and side.attached
            case Send(pdu=pdu):
                assert isinstance(pdu, Pdu)
                self.push(side, pdu)
            case SendReleaseRQ():
                self.push(side, Pdu(0x05))
            case SendReleaseRP():
                self.push(side, Pdu(0x06))
            case SendAbort(source=source, reason=reason):
                self.push(side, Pdu(0x07, source=source, reason=reason))
            case StartARTIM():
                side.artim = True
            case StopARTIM():
                side.artim = False
            case CloseTransport():
                self.close(side)
            case Indicate(primitive=primitive, pdu=pdu):
                self.indicate(side, primitive, pdu)
            case _:
                raise AssertionError(output)

    def indicate(self, side: Side, primitive: Primitive, pdu: object) -> None:
        user = side.user
        assert not user.ended, f"{primitive} after the association ended for {side.name}"
        if primitive is Primitive.A_ASSOCIATE_INDICATION:
            assert user.role == ACCEPTOR and user.phase == "idle"
            user.phase = "indicated"
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_ACCEPT:
            assert user.role == REQUESTOR and user.phase == "requested"
            user.phase = "established"
        elif primitive is Primitive.A_ASSOCIATE_CONFIRM_REJECT:
            assert user.role == REQUESTOR and user.phase == "requested"
            user.ended = True
            SEEN["rejected"] += 1
        elif primitive is Primitive.P_DATA_INDICATION:
            assert user.active and not user.release_responded
            assert isinstance(pdu, Pdu)
            user.received.append(pdu.serial)
        elif primitive is Primitive.A_RELEASE_INDICATION:
            assert user.active and not user.release_indicated
            user.release_indicated = True
            if user.release_requested:
                SEEN[f"release collision seen by the {user.role}"] += 1
        elif primitive is Primitive.A_RELEASE_CONFIRM:
            assert user.active and user.release_requested and not user.release_confirmed
            user.release_confirmed = True
            if user.check_release_done():
                SEEN[f"released ({'collision' if user.collision else 'normal'})"] += 1
        else:
            assert primitive in (Primitive.A_ABORT_INDICATION, Primitive.A_P_ABORT_INDICATION)
            assert user.phase != "idle"
            user.ended = user.aborted = True
            SEEN[str(primitive.value)] += 1

    # -- the users' primitives

    def _pick(self, data: st.DataObject, can: Callable[[Side], bool]) -> Side:
        return data.draw(st.sampled_from([side for side in self.sides.values() if can(side)]))

    def _anyone(can: Callable[[Side], bool]) -> Callable[[AssociationPair], bool]:  # type: ignore[misc]
        return lambda self: any(can(side) for side in self.sides.values())

    _may_send_data = staticmethod(lambda side: side.user.can_send_data())
    _may_request_release = staticmethod(lambda side: side.user.can_request_release())
    _may_respond_release = staticmethod(lambda side: side.user.can_respond_release())
    _may_abort = staticmethod(lambda side: side.user.can_abort())
    _has_mail = staticmethod(lambda side: bool(side.inbox))
    _has_timer = staticmethod(lambda side: side.artim)

    @precondition(lambda self: self.sides[REQUESTOR].user.phase == "idle")
    @rule(bad_version=RARELY)
    def associate(self, bad_version: bool) -> None:
        side = self.sides[REQUESTOR]
        side.user.phase = "requested"
        self.step(side, Event.EVT1, Pdu(0x01, bad_version=bad_version))

    @precondition(lambda self: self.sides[ACCEPTOR].user.can_respond_association())
    @rule(reject=RARELY)
    def respond_to_association(self, reject: bool) -> None:
        side = self.sides[ACCEPTOR]
        if not reject:
            side.user.phase = "established"
            self.step(side, Event.EVT7, Pdu(0x02))
        else:
            side.user.ended = True
            self.step(side, Event.EVT8, Pdu(0x03))

    @precondition(_anyone(_may_send_data))
    @rule(data=st.data())
    def send_data(self, data: st.DataObject) -> None:
        side = self._pick(data, self._may_send_data)
        serial = next(self.serials)
        side.user.sent.append(serial)
        self.step(side, Event.EVT9, Pdu(0x04, serial=serial))

    @precondition(_anyone(_may_request_release))
    @rule(data=st.data())
    def request_release(self, data: st.DataObject) -> None:
        side = self._pick(data, self._may_request_release)
        side.user.release_requested = True
        self.step(side, Event.EVT11)

    @precondition(_anyone(_may_respond_release))
    @rule(data=st.data())
    def respond_to_release(self, data: st.DataObject) -> None:
        side = self._pick(data, self._may_respond_release)
        side.user.release_responded = True
        side.user.check_release_done()
        self.step(side, Event.EVT14)

    @precondition(_anyone(_may_abort))
    @rule(data=st.data(), now=RARELY)
    def abort(self, data: st.DataObject, now: bool) -> None:
        if now:
            self.abort_by(self._pick(data, self._may_abort))

    def abort_by(self, side: Side) -> None:
        side.user.ended = side.user.aborted = True
        self.step(side, Event.EVT15)

    # -- the network and the timers

    @precondition(lambda self: self.connecting)
    @rule()
    def finish_connecting(self) -> None:
        self.connecting = False
        requestor, acceptor = self.sides[REQUESTOR], self.sides[ACCEPTOR]
        requestor.attached = acceptor.attached = True
        self.step(acceptor, Event.EVT5)
        self.step(requestor, Event.EVT2)

    @precondition(_anyone(_has_mail))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        self.deliver_to(self._pick(data, self._has_mail))

    def deliver_to(self, side: Side) -> None:
        item = side.inbox.popleft()
        if item == EOF:
            side.attached = False
            self.step(side, Event.EVT17)
        else:
            assert isinstance(item, Pdu)
            self.step(side, side.machine.receive_pdu_type(item.pdu_type), item)

    @precondition(_anyone(_has_timer))
    @rule(data=st.data(), now=RARELY)
    def expire_artim(self, data: st.DataObject, now: bool) -> None:
        if now:
            self.expire_artim_of(self._pick(data, self._has_timer))

    def expire_artim_of(self, side: Side) -> None:
        side.artim = False
        self.step(side, Event.EVT18)

    @precondition(lambda self: self.sides[REQUESTOR].user.ended)
    @rule()
    def time_passes(self) -> None:
        """Nothing happens (keeps the run going once the association is over)."""

    del _anyone

    # -- invariants

    @invariant()
    def artim_runs_exactly_in_sta2_and_sta13(self) -> None:
        for side in self.sides.values():
            assert side.artim == (side.machine.state in (State.STA2, State.STA13)), side

    @invariant()
    def a_transport_exists_exactly_in_sta2_to_sta13(self) -> None:
        for side in self.sides.values():
            assert side.attached == (side.machine.state not in (State.STA1, State.STA4)), side
        assert self.connecting == (self.sides[REQUESTOR].machine.state is State.STA4)

    @invariant()
    def machines_agree_with_their_users(self) -> None:
        for side in self.sides.values():
            assert side.machine.state in side.user.expected_states(), (side, self.actions)

    @invariant()
    def data_arrives_in_order_without_duplicates(self) -> None:
        for side in self.sides.values():
            sent, received = side.user.sent, self.peer(side).user.received
            received = [serial for serial in received if serial != GARBAGE]
            assert received == sent[: len(received)]

    @invariant()
    def the_two_ends_are_consistent(self) -> None:
        if self.faults:
            return
        # Two well-behaved peers never see an unexpected PDU.
        assert not {"AA-7", "AA-8"} & {a.rsplit(":", 1)[1] for a in self.actions}
        for side in self.sides.values():
            peer = self.peer(side)
            mine, theirs = side.machine.state, peer.machine.state
            kinds, their_kinds = in_flight(side), in_flight(peer)
            if mine is State.STA6:
                assert (
                    theirs is State.STA6
                    or (theirs is State.STA7 and 0x05 in kinds)  # their RQ on its way
                    or (theirs is State.STA5 and 0x02 in their_kinds)  # our AC on its way
                    or (theirs in (State.STA13, State.STA1) and kinds & {0x07, EOF})
                ), (mine, theirs, self.actions)
            if mine is State.STA5 and theirs in (State.STA6, State.STA7):
                assert 0x02 in kinds  # they accepted; the AC is on its way
            if mine is State.STA3:
                assert theirs is State.STA5 or kinds & {0x07, EOF}

    def teardown(self) -> None:
        """Deliver everything, let users abort what is still open, let ARTIM expire: both
        machines must end in Sta1 with nothing left in flight."""
        for _ in range(500):
            pending = [side for side in self.sides.values() if side.inbox]
            open_users = [side for side in self.sides.values() if side.user.can_abort()]
            timers = [side for side in self.sides.values() if side.artim]
            if pending:
                self.deliver_to(pending[0])
            elif self.connecting:
                self.finish_connecting()
            elif open_users:
                self.abort_by(open_users[0])
            elif timers:
                self.expire_artim_of(timers[0])
            else:
                break
            self.artim_runs_exactly_in_sta2_and_sta13()
            self.a_transport_exists_exactly_in_sta2_to_sta13()
            self.machines_agree_with_their_users()
        for side in self.sides.values():
            assert side.machine.state is State.STA1, (side, self.actions)
            assert not side.inbox and not side.attached and not side.artim
            assert side.user.ended or side.user.phase == "idle"
        requestor, acceptor = self.sides[REQUESTOR].user, self.sides[ACCEPTOR].user
        if not self.faults and not (requestor.aborted or acceptor.aborted):
            # a completed release loses nothing in either direction
            assert acceptor.received == requestor.sent
            assert requestor.received == acceptor.sent


class AssociationPairWithFaults(AssociationPair):
    """The same over an unreliable network, with garbage and unexpected PDUs arriving."""

    faults = True

    @precondition(lambda self: self.connecting)
    @rule(now=RARELY)
    def fail_connecting(self, now: bool) -> None:
        if now:  # refused or unreachable: the transport service says closed
            self.connecting = False
            self.step(self.sides[REQUESTOR], Event.EVT17)

    @precondition(lambda self: any(side.attached for side in self.sides.values()))
    @rule(now=RARELY)
    def lose_the_connection(self, now: bool) -> None:
        if not now:
            return
        sides = [side for side in self.sides.values() if side.attached]
        for side in self.sides.values():
            side.inbox.clear()
            side.attached = False
        for side in sides:
            self.step(side, Event.EVT17)

    @precondition(lambda self: any(side.attached for side in self.sides.values()))
    @rule(
        data=st.data(),
        now=RARELY,
        pdu_type=st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x42]),
    )
    def receive_garbage(self, data: st.DataObject, now: bool, pdu_type: int) -> None:
        if not now:
            return
        side = self._pick(data, lambda side: side.attached)
        SEEN["garbage"] += 1
        pdu = Pdu(pdu_type, serial=GARBAGE, source=AbortSource.SERVICE_PROVIDER)
        before = side.machine.state
        self.carry_out_all(side, before, side.machine.receive_pdu(pdu_type, pdu))


PAIR_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_two_well_behaved_peers() -> None:
    """Invariants hold on every step; release collisions happen and resolve; every way an
    association can end without a protocol fault is reached."""
    SEEN.clear()
    run_state_machine_as_test(AssociationPair, settings=PAIR_SETTINGS)  # type: ignore[no-untyped-call]
    for what in (
        "AR-8",  # release collision ...
        "AR-9",  # ... answered first by the requestor
        "AR-10",  # ... confirmed at the acceptor
        "release collision seen by the requestor",
        "release collision seen by the acceptor",
        "released (collision)",
        "released (normal)",
        "AR-6",  # P-DATA still arriving while waiting for the A-RELEASE-RP
        "AR-7",  # P-DATA sent after an A-RELEASE indication
        "rejected",
        "refused by the provider",
        "A-ABORT indication",
        "AA-1",
        "AA-2",
        "AA-3",
        "AA-6",
        "AR-5",
    ):
        assert SEEN[what] > 0, (what, SEEN)
    assert SEEN["AA-7"] == SEEN["AA-8"] == 0


def test_peers_on_a_faulty_network() -> None:
    """Lost connections, refused connects and garbage: the machines still end in Sta1."""
    SEEN.clear()
    run_state_machine_as_test(AssociationPairWithFaults, settings=PAIR_SETTINGS)  # type: ignore[no-untyped-call]
    for what in ("garbage", "AA-4", "AA-5", "AA-7", "AA-8", "A-P-ABORT indication"):
        assert SEEN[what] > 0, (what, SEEN)
