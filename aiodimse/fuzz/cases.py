"""Fuzz cases: (seed, index) -> a short script of steps, built valid from the codec and then
mutated at one layer (PDU, ACSE, P-DATA, DIMSE, identifier or sequence).

A case is pure data: the exact bytes of each step, how long to pause, and what a
conforming acceptor owes us after it (``expect``) or which fault it carries (``fault``),
so that the oracles can judge the answers and a replay file can send it again.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import uids
from ..dimse.commands import (
    CCancelRQ,
    CEchoRQ,
    CFindRQ,
    CStoreRQ,
    Message,
    encode_command,
)
from ..enums import AbortReason, AbortSource
from ..pdu import (
    AAbort,
    AAssociateAC,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    RawItem,
    RoleSelection,
    UserIdentityRQ,
    UserItem,
)
from ..ul.negotiation import ContextRequest, build_request

__all__ = [
    "CONTEXTS",
    "LAYERS",
    "Case",
    "Step",
    "build_case",
    "pdu_label",
]

#: Our implementation class UID in the requests the fuzzer builds.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.9999.11"

_IMPLICIT = uids.IMPLICIT_VR_LITTLE_ENDIAN
_EXPLICIT = uids.EXPLICIT_VR_LITTLE_ENDIAN
_DEFLATED = uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
_CT = uids.STORAGE_SOP_CLASSES["CTImageStorage"]

#: The proposal of every case before mutation: one transfer syntax per context, so that the
#: bytes of a data set are fixed when the case is built (IDs 1, 3, 5, 7, 9).
CONTEXTS: tuple[ContextRequest, ...] = (
    ContextRequest(uids.VERIFICATION_SOP_CLASS, (_IMPLICIT,)),
    ContextRequest(uids.STUDY_ROOT_QR_FIND, (_IMPLICIT,)),
    ContextRequest(uids.STUDY_ROOT_QR_FIND, (_EXPLICIT,)),
    ContextRequest(_CT, (_IMPLICIT,)),
    ContextRequest(uids.PATIENT_ROOT_QR_FIND, (_DEFLATED,)),
)
_ECHO_CTX, _FIND_CTX, _FIND_EXPLICIT_CTX, _STORE_CTX, _DEFLATED_CTX = 1, 3, 5, 7, 9
_TS_OF = {1: _IMPLICIT, 3: _IMPLICIT, 5: _EXPLICIT, 7: _IMPLICIT, 9: _DEFLATED}

LAYERS = ("pdu", "acse", "pdata", "dimse", "identifier", "sequence")

_PDU_NAMES = {
    1: "A-ASSOCIATE-RQ",
    2: "A-ASSOCIATE-AC",
    3: "A-ASSOCIATE-RJ",
    4: "P-DATA-TF",
    5: "A-RELEASE-RQ",
    6: "A-RELEASE-RP",
    7: "A-ABORT",
}


def pdu_label(data: bytes) -> str:
    """The PDU-type name of the first PDU in ``data`` ("unknown-PDU" for other types)."""
    if not data:
        return "nothing"
    return _PDU_NAMES.get(data[0], "unknown-PDU")


@dataclass(frozen=True)
class Step:
    """One write to the peer and what we then wait for.

    ``expect``: what a conforming acceptor must answer once this step is sent, when the
    association is in the right state ("assoc": AC/RJ/A-ABORT or a close; "dimse": a final
    response to ``message_id``; "release": A-RELEASE-RP, A-ABORT or a close). ``fault``
    names the one fault the step carries, for the oracles that judge the answer to it.
    ``chunk`` sends the bytes in pieces of that size, ``pause`` seconds apart (slow sends).
    """

    data: bytes
    label: str
    expect: str | None = None
    fault: str | None = None
    context_id: int | None = None
    message_id: int | None = None
    service: str | None = None
    pause: float = 0.0
    chunk: int | None = None
    close: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"send": self.data.hex(), "label": self.label}
        for name in ("expect", "fault", "context_id", "message_id", "service", "chunk"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.pause:
            out["pause"] = self.pause
        if self.close:
            out["close"] = True
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Step:
        return cls(
            data=bytes.fromhex(str(obj["send"])),
            label=str(obj.get("label", "")),
            expect=obj.get("expect"),
            fault=obj.get("fault"),
            context_id=obj.get("context_id"),
            message_id=obj.get("message_id"),
            service=obj.get("service"),
            pause=float(obj.get("pause", 0.0)),
            chunk=obj.get("chunk"),
            close=bool(obj.get("close", False)),
        )


@dataclass(frozen=True)
class Case:
    """A numbered case: its script and the mutation that made it."""

    seed: int
    index: int
    layer: str
    mutation: str
    steps: tuple[Step, ...]
    #: Whether the script is still valid PS3.8/PS3.7 after the mutation (expectations hold).
    valid: bool = True

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.mutation}"


# -- data sets ----------------------------------------------------------------------------

_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"}


def _pad(value: bytes, vr: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
    return value


def _element(tag: int, vr: bytes, value: bytes, explicit: bool) -> bytes:
    """One data element, Little Endian, implicit or explicit VR (PS3.5 7.1)."""
    value = _pad(value, vr)
    group, elem = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack("<HHL", group, elem, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _sequence(tag: int, items: list[bytes], explicit: bool) -> bytes:
    """A sequence of undefined length with undefined-length items (PS3.5 7.5)."""
    group, elem = tag >> 16, tag & 0xFFFF
    head = (
        struct.pack("<HH2sHL", group, elem, b"SQ", 0, 0xFFFFFFFF)
        if explicit
        else struct.pack("<HHL", group, elem, 0xFFFFFFFF)
    )
    body = b"".join(
        struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        for item in items
    )
    return head + body + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


_ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)


def _identifier(keys: list[tuple[int, bytes, bytes]], explicit: bool) -> bytes:
    return b"".join(_element(t, vr, v, explicit) for t, vr, v in sorted(keys))


def _study_keys(rng: random.Random) -> list[tuple[int, bytes, bytes]]:
    keys = [
        (0x00080052, b"CS", b"STUDY"),
        (0x00100010, b"PN", b""),
        (0x00100020, b"LO", b""),
        (0x0020000D, b"UI", b""),
        (0x00080020, b"DA", b""),
    ]
    if rng.random() < 0.3:
        keys.append((0x00080061, b"CS", b""))
    return keys


def _store_dataset(sop_instance: str) -> bytes:
    keys = [
        (0x00080016, b"UI", _CT.encode()),
        (0x00080018, b"UI", sop_instance.encode()),
        (0x00080060, b"CS", b"CT"),
        (0x00100010, b"PN", b"FUZZ^CASE"),
        (0x00100020, b"LO", b"FUZZ1"),
        (0x0020000D, b"UI", b"1.2.826.0.1.3680043.9.9999.11.1"),
        (0x0020000E, b"UI", b"1.2.826.0.1.3680043.9.9999.11.2"),
    ]
    return _identifier(keys, False)


# -- building blocks ----------------------------------------------------------------------


def _pdata(context_id: int, control: int, data: bytes) -> bytes:
    return PDataTF((PresentationDataValue(context_id, control, data),)).encode()


@dataclass
class _Msg:
    """A DIMSE message before it is laid out in P-DATA PDUs."""

    service: str
    context_id: int
    message_id: int
    command: bytes
    dataset: bytes | None

    def pdus(self) -> list[bytes]:
        out = [_pdata(self.context_id, 0x03, self.command)]
        if self.dataset is not None:
            out.append(_pdata(self.context_id, 0x02, self.dataset))
        return out

    def steps(self, expect: bool = True) -> list[Step]:
        pdus = self.pdus()
        label = f"P-DATA-TF {self.service}-RQ"
        out = [Step(p, label) for p in pdus[:-1]]
        out.append(
            Step(
                pdus[-1],
                label,
                expect="dimse" if expect else None,
                context_id=self.context_id,
                message_id=self.message_id,
                service=self.service,
            )
        )
        return out


def _command(msg: Message) -> bytes:
    return encode_command(msg)


def _echo(mid: int) -> _Msg:
    return _Msg("C-ECHO", _ECHO_CTX, mid, _command(CEchoRQ(message_id=mid)), None)


def _find(mid: int, rng: random.Random, keys: list[tuple[int, bytes, bytes]] | None = None) -> _Msg:
    explicit = rng.random() < 0.4
    ctx = _FIND_EXPLICIT_CTX if explicit else _FIND_CTX
    ident = _identifier(keys if keys is not None else _study_keys(rng), explicit)
    cmd = _command(CFindRQ(message_id=mid, affected_sop_class_uid=uids.STUDY_ROOT_QR_FIND))
    return _Msg("C-FIND", ctx, mid, cmd, ident)


def _store(mid: int, index: int) -> _Msg:
    instance = f"1.2.826.0.1.3680043.9.9999.11.3.{index}"
    cmd = _command(
        CStoreRQ(
            message_id=mid,
            affected_sop_class_uid=_CT,
            affected_sop_instance_uid=instance,
            has_dataset=True,
        )
    )
    return _Msg("C-STORE", _STORE_CTX, mid, cmd, _store_dataset(instance))


@dataclass
class _Script:
    """A case while it is being built: the RQ's parameters and the messages."""

    rng: random.Random
    calling: str
    called: str
    index: int
    max_pdu: int = 16384
    async_window: tuple[int, int] | None = None
    identity: UserIdentityRQ | None = None
    extra_items: list[UserItem] = field(default_factory=list)
    contexts: tuple[ContextRequest, ...] = CONTEXTS
    messages: list[_Msg] = field(default_factory=list)

    def rq(self) -> bytes:
        return build_request(
            self.calling,
            self.called,
            self.contexts,
            max_pdu=self.max_pdu,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            async_window=self.async_window,
            user_identity=self.identity,
            extra_items=self.extra_items,
        ).encode()

    def steps(self, *, rq: bytes | None = None, release: bool = True) -> list[Step]:
        out = [Step(rq if rq is not None else self.rq(), "A-ASSOCIATE-RQ", expect="assoc")]
        for msg in self.messages:
            out += msg.steps()
        if release:
            out.append(Step(AReleaseRQ().encode(), "A-RELEASE-RQ", expect="release"))
        return out


def _base(rng: random.Random, calling: str, called: str, index: int) -> _Script:
    script = _Script(rng, calling, called, index)
    template = rng.choice(["echo", "find", "store", "echo2", "find-echo"])
    mid = rng.randint(1, 0xFFF0)
    if template == "echo":
        script.messages = [_echo(mid)]
    elif template == "find":
        script.messages = [_find(mid, rng)]
    elif template == "store":
        script.messages = [_store(mid, index)]
    elif template == "echo2":
        script.messages = [_echo(mid), _echo(mid + 1)]
    else:
        script.messages = [_find(mid, rng), _echo(mid + 1)]
    return script


def _invalidate_from(steps: list[Step], start: int) -> list[Step]:
    """The steps with no expectation from ``start`` on (after a fault, the peer may abort,
    wait or ignore: PS3.8 leaves it free)."""
    return [s if i < start else replace(s, expect=None) for i, s in enumerate(steps)]


# -- mutators, one family per layer -------------------------------------------------------
# Each returns (mutation name, steps, valid).

_Mutated = tuple[str, list[Step], bool]


def _with_header(data: bytes, *, pdu_type: int | None = None, reserved: int | None = None,
                 length: int | None = None) -> bytes:  # fmt: skip
    t, r, n = struct.unpack(">BBL", data[:6])
    return (
        struct.pack(
            ">BBL",
            t if pdu_type is None else pdu_type,
            r if reserved is None else reserved,
            n if length is None else length,
        )
        + data[6:]
    )


def _unknown_type(rng: random.Random) -> int:
    return rng.choice([0x00, 0x08, 0x09, 0x0A, 0x10, 0x44, 0x80, 0xFF])


def _mutate_pdu(s: _Script) -> _Mutated:
    rng = s.rng
    steps = s.steps()
    what = rng.choice(
        ["unknown-type", "unknown-type", "reserved", "length-short", "length-long",
         "truncated", "over-long", "unknown-type-first", "unexpected-pdu"]
    )  # fmt: skip
    at = rng.randrange(1, len(steps))  # a step after the A-ASSOCIATE-RQ
    if what == "unknown-type":
        # PS3.8 9.3.1 / Table 9-26: a PDU of an unknown type in Sta6 is Evt19 -> AA-8,
        # A-ABORT (service-provider) with reason 1 (unrecognized-PDU).
        body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 10, 64])))
        pdu = struct.pack(">BBL", _unknown_type(rng), 0, len(body)) + body
        steps = steps[:at] + [Step(pdu, "unknown-PDU", fault="unrecognized-pdu")] + steps[at:]
        return what, _invalidate_from(steps, at), False
    if what == "unknown-type-first":
        body = bytes(rng.randrange(256) for _ in range(16))
        pdu = struct.pack(">BBL", _unknown_type(rng), 0, len(body)) + body
        return what, [Step(pdu, "unknown-PDU", fault="unrecognized-pdu-sta2")], False
    if what == "unexpected-pdu":
        # Table 9-10 Sta6: Evt3/Evt4/Evt13 (AC, RJ, RP received) -> AA-8, reason 2.
        pdu = rng.choice(
            [
                AReleaseRP().encode(),
                AAssociateAC("FUZZ", s.called, ()).encode(),
            ]
        )
        steps = steps[:at] + [Step(pdu, pdu_label(pdu), fault="unexpected-pdu")] + steps[at:]
        return what, _invalidate_from(steps, at), False
    target = steps[at]
    if what == "reserved":
        # PS3.8 9.3.1: reserved fields are sent as zero and never tested: still valid.
        steps[at] = replace(target, data=_with_header(target.data, reserved=rng.randrange(1, 256)))
        return what, steps, True
    if what == "length-short":
        n = len(target.data) - 6
        steps[at] = replace(
            target, data=_with_header(target.data, length=max(0, n - rng.randint(1, 8)))
        )
    elif what == "length-long":
        n = len(target.data) - 6
        steps[at] = replace(target, data=_with_header(target.data, length=n + rng.randint(1, 64)))
    elif what == "truncated":
        cut = rng.randrange(1, len(target.data))
        steps[at] = replace(target, data=target.data[:cut])
    else:  # over-long: a PDU far beyond the peer's maximum (declared, not sent)
        steps[at] = replace(
            target,
            data=_with_header(target.data, length=rng.choice([1 << 24, 0x7FFFFFFF, 0xFFFFFFFF])),
        )
    return what, _invalidate_from(steps, at), False


def _rq_items(rq: bytes) -> tuple[bytes, list[bytes]]:
    """The fixed part (after the header) and the variable items of an A-ASSOCIATE-RQ."""
    body = rq[6:]
    fixed, rest = body[:68], body[68:]
    items = []
    while len(rest) >= 4:
        n = struct.unpack(">H", rest[2:4])[0]
        items.append(rest[: 4 + n])
        rest = rest[4 + n :]
    return fixed, items


def _rq_from(fixed: bytes, items: list[bytes]) -> bytes:
    body = fixed + b"".join(items)
    return struct.pack(">BBL", 1, 0, len(body)) + body


def _mutate_acse(s: _Script) -> _Mutated:
    rng = s.rng
    what = rng.choice(
        ["version-0", "version-3", "called-blank", "calling-odd", "no-contexts",
         "duplicate-context", "even-context", "unknown-abstract", "roles", "async-window",
         "user-identity", "max-length-0", "max-length-1", "max-length-huge",
         "item-overrun", "user-item-cut", "item-order", "item-duplicate", "unknown-item"]
    )  # fmt: skip
    if what.startswith("max-length"):
        s.max_pdu = {"max-length-0": 0, "max-length-1": 1, "max-length-huge": 0xFFFFFFFF}[what]
        # A maximum of 1 cannot carry any PDV item: the peer may only abort.
        valid = what != "max-length-1"
        steps = s.steps()
        return what, steps if valid else _invalidate_from(steps, 1), valid
    if what == "async-window":
        s.async_window = rng.choice([(0, 0), (1, 1), (0xFFFF, 0xFFFF), (16, 0)])
        return what, s.steps(), True
    if what == "user-identity":
        s.identity = rng.choice(
            [
                UserIdentityRQ.username("fuzz"),
                UserIdentityRQ.username("fuzz", "secret", positive_response=True),
                UserIdentityRQ(3, bytes(rng.randrange(256) for _ in range(40))),
                UserIdentityRQ(rng.choice([0, 9, 255]), b"x"),
            ]
        )
        # Identity may be refused (RJ); what matters is an answer.
        return what, _invalidate_from(s.steps(), 1), False
    if what == "roles":
        s.extra_items = [
            rng.choice(
                [
                    RoleSelection(uids.VERIFICATION_SOP_CLASS, True, True),
                    RoleSelection("1.2.3.4.5.6", False, True),
                    RoleSelection(uids.STUDY_ROOT_QR_FIND, False, False),
                ]
            )
        ]
        return what, s.steps(), True
    if what == "unknown-abstract":
        s.contexts = (*CONTEXTS, ContextRequest("1.2.826.0.1.3680043.9.9999.11.99", (_IMPLICIT,)))
        return what, s.steps(), True
    if what == "unknown-item":
        # PS3.8 9.3.1: items of unrecognized types are ignored.
        s.extra_items = [RawItem(rng.choice([0x5F, 0x60, 0x7A]), b"fuzz")]
        return what, s.steps(), True
    rq = s.rq()
    fixed, items = _rq_items(rq)
    fault: str | None = None
    valid = False
    if what in ("version-0", "version-3"):
        version = 0 if what == "version-0" else 3
        fixed = struct.pack(">H", version) + fixed[2:]
        # PS3.8 9.3.2: only bit 0 is tested; without it the RQ must be rejected (9.3.4,
        # reason 2 protocol-version-not-supported), never accepted.
        fault = "bad-version" if version == 0 else None
        valid = version == 3
    elif what == "called-blank":
        fixed = fixed[:4] + b" " * 16 + fixed[20:]
    elif what == "calling-odd":
        fixed = fixed[:20] + bytes(rng.randrange(128, 256) for _ in range(16)) + fixed[36:]
    elif what == "no-contexts":
        items = [i for i in items if i[0] != 0x20]
    elif what == "duplicate-context":
        ctx = next(i for i in items if i[0] == 0x20)
        items.insert(items.index(ctx), ctx)
    elif what == "even-context":
        items = [i[:4] + bytes((2,)) + i[5:] if i[0] == 0x20 and i[4] == 1 else i for i in items]
    elif what == "item-overrun":
        # An item whose length runs past the end of the PDU: the RQ cannot be decoded, so
        # PS3.8 Table 9-10 Sta2 Evt19 -> AA-1 (A-ABORT), never an A-ASSOCIATE-AC.
        k = rng.randrange(len(items))
        item = items[k]
        declared = len(item) - 4 + sum(len(x) for x in items[k + 1 :]) + rng.randint(1, 200)
        items[k] = item[:2] + struct.pack(">H", min(declared, 0xFFFF)) + item[4:]
        if declared <= 0xFFFF:
            fault = "malformed-rq"
    elif what == "user-item-cut":
        # A maximum length sub-item of 2 bytes instead of 4 (PS3.8 D.1).
        ui = items[-1]
        sub = ui[4:]
        if sub[:1] == b"\x51":
            sub = b"\x51\x00\x00\x02" + sub[6:8] + sub[8:]
            items[-1] = b"\x50\x00" + struct.pack(">H", len(sub)) + sub
    elif what == "item-order":
        items = items[1:] + items[:1]
    elif what == "item-duplicate":
        items.append(items[0])
    rq = _rq_from(fixed, items)
    steps = s.steps(rq=rq)
    steps[0] = replace(steps[0], fault=fault, label="A-ASSOCIATE-RQ")
    if not valid:
        steps = _invalidate_from(steps, 1)
    return what, steps, valid


def _mutate_pdata(s: _Script) -> _Mutated:
    rng = s.rng
    what = rng.choice(
        ["fragment-pdvs", "fragment-pdus", "pdvs-one-pdu", "context-even", "context-unknown",
         "control-reserved", "command-flag", "no-last-bit", "empty-pdv"]
    )  # fmt: skip
    msg = s.messages[0]
    head = [Step(s.rq(), "A-ASSOCIATE-RQ", expect="assoc")]
    tail = [m for mm in s.messages[1:] for m in mm.steps()]
    tail.append(Step(AReleaseRQ().encode(), "A-RELEASE-RQ", expect="release"))
    label = f"P-DATA-TF {msg.service}-RQ"
    last = Step(b"", label, expect="dimse", context_id=msg.context_id,
                message_id=msg.message_id, service=msg.service)  # fmt: skip
    ctx = msg.context_id

    def fragments(data: bytes, control_last: int) -> list[PresentationDataValue]:
        n = rng.randint(2, 4)
        size = max(1, -(-len(data) // n))
        parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        return [
            PresentationDataValue(ctx, control_last if i == len(parts) - 1 else control_last & 1, p)
            for i, p in enumerate(parts)
        ]

    if what in ("fragment-pdvs", "fragment-pdus", "pdvs-one-pdu"):
        # PS3.8 9.3.5 / Annex E: a message may be split over any number of PDVs and PDUs.
        pdvs = fragments(msg.command, 0x03)
        if msg.dataset is not None:
            pdvs += fragments(msg.dataset, 0x02)
        if what == "fragment-pdus":
            pdus = [PDataTF((p,)).encode() for p in pdvs]
        elif what == "pdvs-one-pdu":
            pdus = [PDataTF(tuple(pdvs)).encode()]
        else:
            cmd = [p for p in pdvs if p.control & 1]
            data = [p for p in pdvs if not p.control & 1]
            pdus = [PDataTF(tuple(cmd)).encode()] + (
                [PDataTF(tuple(data)).encode()] if data else []
            )
        mid = [Step(p, label) for p in pdus[:-1]]
        return what, [*head, *mid, replace(last, data=pdus[-1]), *tail], True
    pdus = msg.pdus()
    if what == "context-even":
        pdus[0] = _pdata(2, 0x03, msg.command)
    elif what == "context-unknown":
        pdus[0] = _pdata(rng.choice([11, 101, 255]), 0x03, msg.command)
    elif what == "control-reserved":
        pdus[0] = _pdata(ctx, 0x03 | rng.choice([0x04, 0x80, 0xF0]), msg.command)
    elif what == "command-flag":
        pdus[0] = _pdata(ctx, 0x02, msg.command)
    elif what == "no-last-bit":
        pdus[0] = _pdata(ctx, 0x01, msg.command)
    else:
        pdus.insert(0, PDataTF(()).encode())
    steps = [*head, *(Step(p, label) for p in pdus), *tail]
    return what, _invalidate_from(steps, 1), False


def _command_elements(cmd: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 8 <= len(cmd):
        group, elem, n = struct.unpack("<HHL", cmd[pos : pos + 8])
        out.append(((group << 16) | elem, cmd[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    return out


def _command_bytes(elements: list[tuple[int, bytes]], group_length: bool = True) -> bytes:
    body = b"".join(
        struct.pack("<HHL", t >> 16, t & 0xFFFF, len(v)) + v for t, v in elements if t != 0
    )
    if not group_length:
        return body
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def _mutate_dimse(s: _Script) -> _Mutated:
    rng = s.rng
    what = rng.choice(
        ["missing-element", "extra-element", "wrong-length", "group-length", "unknown-command",
         "message-id-reuse", "dataset-type-present", "dataset-type-absent", "cancel-unknown"]
    )  # fmt: skip
    msg = s.messages[0]
    if what == "message-id-reuse":
        # A Message ID may be reused once its operation has completed (PS3.7 9.1.1.1.2).
        again = _Msg(msg.service, msg.context_id, msg.message_id, msg.command, msg.dataset)
        s.messages.insert(1, again)
        return what, s.steps(), True
    if what == "cancel-unknown":
        # PS3.7 9.3.2.3: a C-CANCEL-RQ asks for no response; one for an unknown
        # Message ID changes nothing.
        cancel = _command(CCancelRQ(message_id_being_responded_to=(msg.message_id + 7) & 0xFFFF))
        ctx = _FIND_CTX
        steps = s.steps()
        steps.insert(1, Step(_pdata(ctx, 0x03, cancel), "P-DATA-TF C-CANCEL-RQ"))
        return what, steps, True
    elements = _command_elements(msg.command)
    if what == "missing-element":
        victims = [t for t, _ in elements if t != 0]
        victim = rng.choice(victims)
        elements = [(t, v) for t, v in elements if t != victim]
    elif what == "extra-element":
        elements.append((rng.choice([0x00000999, 0x00001000, 0x00005000]), b"\x01\x00"))
        elements.sort()
    elif what == "wrong-length":
        k = rng.randrange(1, len(elements))
        t, v = elements[k]
        elements[k] = (t, v + b"\x00\x00" if len(v) == 2 else v[:1])
    elif what == "unknown-command":
        elements = [(t, struct.pack("<H", rng.choice([0x0FF0, 0x0123, 0x8FFF, 0x0031])))
                    if t == 0x00000100 else (t, v) for t, v in elements]  # fmt: skip
    elif what == "dataset-type-present":
        elements = [(t, b"\x01\x00") if t == 0x00000800 else (t, v) for t, v in elements]
    elif what == "dataset-type-absent":
        elements = [(t, b"\x01\x01") if t == 0x00000800 else (t, v) for t, v in elements]
    cmd = _command_bytes(elements, group_length=what != "group-length" or rng.random() < 0.5)
    if what == "group-length":
        cmd = cmd[:8] + struct.pack("<L", rng.choice([0, 1, 0xFFFF, len(cmd) * 3])) + cmd[12:]
    s.messages[0] = _Msg(msg.service, msg.context_id, msg.message_id, cmd, msg.dataset)
    return what, _invalidate_from(s.steps(), 1), False


def _mutate_identifier(s: _Script) -> _Mutated:
    rng = s.rng
    what = rng.choice(
        ["wildcards", "huge-value", "nested-sequence", "odd-vr", "unknown-level",
         "no-level", "deflate-bomb", "private-tags"]
    )  # fmt: skip
    mid = s.messages[0].message_id
    keys = _study_keys(rng)
    valid = True
    if what == "wildcards":
        keys = [(t, vr, rng.choice([b"*", b"?*", b"D*", b"\\*", b"*?*?"]) if vr == b"PN" else v)
                for t, vr, v in keys]  # fmt: skip
    elif what == "huge-value":
        keys = [
            (t, vr, b"A" * rng.choice([1024, 65534]) if vr == b"PN" else v) for t, vr, v in keys
        ]
    elif what == "unknown-level":
        keys = [(t, vr, b"GALAXY" if t == 0x00080052 else v) for t, vr, v in keys]
    elif what == "no-level":
        keys = [k for k in keys if k[0] != 0x00080052]
    elif what == "private-tags":
        keys += [(0x00090010, b"LO", b"FUZZ"), (0x00091001, b"LO", b"x" * 20)]
    if what in ("nested-sequence", "odd-vr", "deflate-bomb"):
        explicit = True
        ident = _identifier(keys, explicit)
        if what == "nested-sequence":
            inner = _element(0x00081150, b"UI", b"", explicit)
            for _ in range(rng.randint(2, 12)):
                inner = _sequence(0x00081110, [inner], explicit)
            before = [k for k in keys if k[0] < 0x00081110]
            after = [k for k in keys if k[0] > 0x00081110]
            ident = _identifier(before, explicit) + inner + _identifier(after, explicit)
        elif what == "odd-vr":
            vr = rng.choice([b"XX", b"UN", b"SQ", b"OB", b"\x00\x00"])
            odd = _element(0x00100010, vr, b"DOE", explicit)
            ident = _identifier([k for k in keys if k[0] != 0x00100010], explicit)
            ident = odd + ident if rng.random() < 0.5 else ident + odd
            valid = False
        cmd = _command(CFindRQ(message_id=mid, affected_sop_class_uid=uids.STUDY_ROOT_QR_FIND))
        if what == "deflate-bomb":
            # PS3.5 A.5: Deflated Explicit VR LE, here a few KiB that inflate to 8 MiB.
            big = _element(0x00091010, b"OB", bytes(8 << 20), explicit)
            raw = ident + _element(0x00090010, b"LO", b"FUZZ", explicit) + big
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            ident = packer.compress(raw) + packer.flush()
            cmd = _command(
                CFindRQ(message_id=mid, affected_sop_class_uid=uids.PATIENT_ROOT_QR_FIND)
            )
            s.messages[0] = _Msg("C-FIND", _DEFLATED_CTX, mid, cmd, ident)
        else:
            s.messages[0] = _Msg("C-FIND", _FIND_EXPLICIT_CTX, mid, cmd, ident)
    else:
        s.messages[0] = _find(mid, rng, keys)
    steps = s.steps()
    return what, steps if valid else _invalidate_from(steps, 1), valid


def _mutate_sequence(s: _Script) -> _Mutated:
    rng = s.rng
    what = rng.choice(
        ["pdata-before-ac", "release-twice", "pdata-after-release", "abort-then-data",
         "slow-rq", "slow-pdata", "release-first", "rq-twice", "close-early"]
    )  # fmt: skip
    steps = s.steps()
    if what == "pdata-before-ac":
        # Sent in one write with the RQ: whether the peer answered the RQ first is a race.
        merged = steps[0].data + steps[1].data
        steps = [Step(merged, "A-ASSOCIATE-RQ")] + steps[2:]
        return what, _invalidate_from(steps, 0), False
    if what == "release-twice":
        # The second A-RELEASE-RQ arrives in Sta13 (AA-6: ignored) or Sta8 (AA-8).
        steps.append(Step(AReleaseRQ().encode(), "A-RELEASE-RQ"))
        return what, steps, True
    if what == "pdata-after-release":
        extra = _echo((s.messages[0].message_id + 100) & 0xFFFF).pdus()[0]
        steps.append(Step(extra, "P-DATA-TF C-ECHO-RQ"))
        return what, steps, True
    if what == "abort-then-data":
        at = rng.randrange(1, len(steps))
        abort = AAbort(AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED).encode()
        steps = (
            steps[:at] + [Step(abort, "A-ABORT")] + [replace(x, expect=None) for x in steps[at:]]
        )
        return what, steps, True
    if what == "slow-rq":
        steps[0] = replace(steps[0], chunk=rng.choice([7, 64]), pause=0.001)
        return what, steps, True
    if what == "slow-pdata":
        steps[1] = replace(steps[1], chunk=rng.choice([5, 16]), pause=0.001)
        return what, steps, True
    if what == "release-first":
        release = steps[-1]
        later = [replace(x, expect=None) for x in steps[1:-1]]
        return what, [steps[0], release, *later], True
    if what == "rq-twice":
        # A second A-ASSOCIATE-RQ in Sta6: Evt6 -> AA-8, A-ABORT reason 2 (unexpected-PDU).
        again = replace(steps[0], expect=None, fault="unexpected-pdu")
        steps = [steps[0], again, *steps[1:]]
        return what, _invalidate_from(steps, 1), False
    # close-early: half-close after the request, the peer sees the end of the stream
    at = rng.randrange(1, len(steps))
    steps = steps[: at + 1]
    steps[at] = replace(steps[at], close=True)
    return what, steps, True


_MUTATORS: dict[str, Callable[[_Script], _Mutated]] = {
    "pdu": _mutate_pdu,
    "acse": _mutate_acse,
    "pdata": _mutate_pdata,
    "dimse": _mutate_dimse,
    "identifier": _mutate_identifier,
    "sequence": _mutate_sequence,
}


def build_case(seed: int, index: int, *, calling_ae: str, called_ae: str) -> Case:
    """Case ``index`` of the run with ``seed``: always the same bytes for the same inputs."""
    rng = random.Random(f"aiodimse-fuzz/{seed}/{index}")
    script = _base(rng, calling_ae, called_ae, index)
    layer = LAYERS[rng.randrange(len(LAYERS))]
    mutation, steps, valid = _MUTATORS[layer](script)
    return Case(seed, index, layer, mutation, tuple(steps), valid)


def context_transfer_syntax(context_id: int) -> str | None:
    """The one transfer syntax the base proposal offers on ``context_id``."""
    return _TS_OF.get(context_id)
