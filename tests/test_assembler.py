"""PDVs -> DIMSE messages (aiodimse/dimse/assembler.py): ordering, last-fragment bits, one
presentation context per message, reserved bits, size bounds, and streaming of data sets
(PS3.7 8.1, PS3.8 Annex E). Every malformed sequence is a DIMSEError carrying an A-ABORT
reason (PS3.8 Table 9-26).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodimse.dimse.assembler import MessageAssembler
from aiodimse.dimse.commands import (
    CEchoRQ,
    CFindRSP,
    CStoreRQ,
    Message,
    encode_command,
)
from aiodimse.enums import AbortReason
from aiodimse.errors import DIMSEError
from aiodimse.pdu import PresentationDataValue

CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"

# PS3.8 E.2: bit 0 = command (1) / data set (0); bit 1 = last fragment.
DATA, DATA_LAST, CMD, CMD_LAST = 0x00, 0x02, 0x01, 0x03

ECHO = CEchoRQ(message_id=7)
STORE = CStoreRQ(message_id=8, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4")
FIND_PENDING = CFindRSP(
    message_id_being_responded_to=9,
    affected_sop_class_uid=FIND,
    status=0xFF00,
    has_dataset=True,
)

Event = tuple[str, int, object, bool]


class Recorder:
    """Collects what the assembler hands on, in order."""

    def __init__(self, contexts: tuple[int, ...] = (1, 3, 5), max_command: int = 1 << 16):
        self.events: list[Event] = []
        self.assembler = MessageAssembler(
            set(contexts), self.on_command, self.on_data, max_command_size=max_command
        )

    def on_command(self, context_id: int, message: Message) -> None:
        self.events.append(("command", context_id, message, True))

    def on_data(self, context_id: int, data: memoryview | bytes, last: bool) -> None:
        self.events.append(("data", context_id, bytes(data), last))

    def feed(self, context_id: int, control: int, data: bytes) -> None:
        self.assembler.feed(PresentationDataValue(context_id, control, data))

    def messages(self) -> list[tuple[int, Message, bytes | None]]:
        """Whole messages: (context, message, data set or None)."""
        out: list[tuple[int, Message, bytes | None]] = []
        data: bytes | None = None
        for kind, ctx, value, last in self.events:
            if kind == "command":
                assert hasattr(value, "has_dataset") and hasattr(value, "is_request")
                out.append((ctx, value, None))  # type: ignore[arg-type]
                data = b"" if value.has_dataset else None
            else:
                assert isinstance(value, bytes) and data is not None
                data += value
                if last:
                    out[-1] = (out[-1][0], out[-1][1], data)
                    data = None
        return out


def idle(rec: Recorder) -> bool:
    return rec.assembler.idle


def raises(rec: Recorder, context_id: int, control: int, data: bytes) -> DIMSEError:
    with pytest.raises(DIMSEError) as info:
        rec.feed(context_id, control, data)
    assert isinstance(info.value.abort_reason, AbortReason)
    return info.value


# -- well-formed sequences ------------------------------------------------------------------


def test_command_without_data_set() -> None:
    rec = Recorder()
    assert idle(rec)
    rec.feed(1, CMD_LAST, encode_command(ECHO))
    assert rec.events == [("command", 1, ECHO, True)]
    assert idle(rec)


def test_command_then_data_set_fragments_in_order() -> None:
    rec = Recorder()
    rec.feed(3, CMD_LAST, encode_command(STORE))
    assert rec.events == [("command", 3, STORE, True)]
    assert not idle(rec)  # the data set must follow
    rec.feed(3, DATA, b"abc")
    rec.feed(3, DATA, b"")
    rec.feed(3, DATA_LAST, b"def")
    assert rec.events[1:] == [
        ("data", 3, b"abc", False),
        ("data", 3, b"", False),
        ("data", 3, b"def", True),
    ]
    assert idle(rec)
    # The next message may use another accepted context.
    rec.feed(5, CMD_LAST, encode_command(ECHO))
    assert rec.events[-1] == ("command", 5, ECHO, True)


def test_data_set_is_streamed_fragment_by_fragment() -> None:
    rec = Recorder()
    rec.feed(1, CMD_LAST, encode_command(STORE))
    # Each fragment is handed on when it arrives, long before the last one: nothing is
    # collected in the assembler, so memory stays flat whatever the instance size.
    for i in range(100):
        chunk = bytes([i]) * 1000
        rec.feed(1, DATA, chunk)
        assert rec.events[-1] == ("data", 1, chunk, False)
    rec.feed(1, DATA_LAST, b"end")
    assert rec.events[-1] == ("data", 1, b"end", True)
    assert len(rec.events) == 102


def test_data_fragments_are_passed_without_copying() -> None:
    seen: list[memoryview | bytes] = []
    asm = MessageAssembler({1}, lambda c, m: None, lambda c, d, last: seen.append(d))
    asm.feed(PresentationDataValue(1, CMD_LAST, encode_command(STORE)))
    payload = memoryview(b"0123456789")
    asm.feed(PresentationDataValue(1, DATA_LAST, payload[2:6]))
    assert seen[0] is not None and bytes(seen[0]) == b"2345"
    assert isinstance(seen[0], memoryview) and seen[0].obj is payload.obj


def test_command_split_across_many_pdvs() -> None:
    raw = encode_command(STORE)
    rec = Recorder()
    for i, byte in enumerate(raw):
        rec.feed(5, CMD_LAST if i == len(raw) - 1 else CMD, bytes([byte]))
        if i < len(raw) - 1:
            assert rec.events == []  # nothing until the last command fragment
    assert rec.events == [("command", 5, STORE, True)]


def test_command_fragments_may_be_empty() -> None:
    raw = encode_command(ECHO)
    rec = Recorder()
    rec.feed(1, CMD, b"")
    rec.feed(1, CMD, raw[:10])
    rec.feed(1, CMD, b"")
    rec.feed(1, CMD_LAST, raw[10:])
    assert rec.events == [("command", 1, ECHO, True)]


def test_response_with_data_set() -> None:
    rec = Recorder()
    rec.feed(1, CMD_LAST, encode_command(FIND_PENDING))
    rec.feed(1, DATA_LAST, b"identifier")
    assert rec.messages() == [(1, FIND_PENDING, b"identifier")]


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from([1, 3, 5]),
            st.sampled_from([ECHO, STORE, FIND_PENDING]),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20),
)
def test_any_fragmentation_gives_back_the_same_messages(
    messages: list[tuple[int, Message, bytes]], cuts: list[int]
) -> None:
    rec = Recorder()
    expected: list[tuple[int, Message, bytes | None]] = []
    sizes = iter(cuts * 1000)

    def fragments(data: bytes) -> list[bytes]:
        parts, pos = [], 0
        while True:
            n = next(sizes)
            parts.append(data[pos : pos + n])
            pos += n
            if pos >= len(data):
                return parts

    for context_id, message, dataset in messages:
        cmd_parts = fragments(encode_command(message))
        for i, part in enumerate(cmd_parts):
            rec.feed(context_id, CMD_LAST if i == len(cmd_parts) - 1 else CMD, part)
        if message.has_dataset:
            ds_parts = fragments(dataset)
            for i, part in enumerate(ds_parts):
                rec.feed(context_id, DATA_LAST if i == len(ds_parts) - 1 else DATA, part)
            expected.append((context_id, message, dataset))
        else:
            expected.append((context_id, message, None))
        assert idle(rec)
    assert rec.messages() == expected


# -- malformed sequences --------------------------------------------------------------------


def test_data_set_fragment_without_a_command() -> None:
    rec = Recorder()
    exc = raises(rec, 1, DATA_LAST, b"data")
    assert exc.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    assert rec.events == []


def test_data_set_after_a_command_that_has_none() -> None:
    rec = Recorder()
    rec.feed(1, CMD_LAST, encode_command(ECHO))
    exc = raises(rec, 1, DATA_LAST, b"data")
    assert exc.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER


def test_data_set_fragment_in_the_middle_of_a_command() -> None:
    rec = Recorder()
    rec.feed(1, CMD, encode_command(STORE)[:20])
    exc = raises(rec, 1, DATA, b"data")
    assert exc.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    assert rec.events == []


def test_command_while_a_data_set_is_expected() -> None:
    rec = Recorder()
    rec.feed(1, CMD_LAST, encode_command(STORE))
    rec.feed(1, DATA, b"first half")
    # Messages are never interleaved (PS3.7 8.1): a new command cannot start here.
    exc = raises(rec, 1, CMD_LAST, encode_command(ECHO))
    assert exc.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    assert [e[0] for e in rec.events] == ["command", "data"]


def test_command_on_a_context_that_was_not_accepted() -> None:
    rec = Recorder(contexts=(1, 3))
    exc = raises(rec, 7, CMD_LAST, encode_command(ECHO))
    assert exc.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "7" in str(exc)


def test_command_continued_on_another_context() -> None:
    raw = encode_command(ECHO)
    rec = Recorder()
    rec.feed(1, CMD, raw[:8])
    exc = raises(rec, 3, CMD_LAST, raw[8:])
    assert exc.abort_reason in (
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
        AbortReason.UNEXPECTED_PDU_PARAMETER,
    )


def test_data_set_on_another_context_than_its_command() -> None:
    rec = Recorder()
    rec.feed(1, CMD_LAST, encode_command(STORE))
    rec.feed(1, DATA, b"part")
    exc = raises(rec, 3, DATA_LAST, b"rest")
    assert exc.abort_reason in (
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
        AbortReason.UNEXPECTED_PDU_PARAMETER,
    )
    assert "3" in str(exc) and "1" in str(exc)


@pytest.mark.parametrize("bit", [0x04, 0x08, 0x10, 0x20, 0x40, 0x80])
@pytest.mark.parametrize("base", [DATA, DATA_LAST, CMD, CMD_LAST])
def test_reserved_control_bits(bit: int, base: int) -> None:
    rec = Recorder()
    if base in (DATA, DATA_LAST):
        rec.feed(1, CMD_LAST, encode_command(STORE))
        data = b"x"
    else:
        data = encode_command(ECHO)
    # PS3.8 E.2: bits 2-7 of the message control header are always 0.
    exc = raises(rec, 1, base | bit, data)
    assert exc.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_oversize_command_is_refused_before_it_ends() -> None:
    rec = Recorder(max_command=1024)
    # A command that never ends (no last bit) is stopped as soon as it passes the bound.
    for _ in range(7):
        rec.feed(1, CMD, b"\x00" * 128)
    with pytest.raises(DIMSEError, match="1024"):
        for _ in range(100):
            rec.feed(1, CMD, b"\x00" * 128)
    assert rec.events == []


def test_command_at_the_size_bound_is_fine() -> None:
    raw = encode_command(STORE)
    rec = Recorder(max_command=len(raw))
    rec.feed(1, CMD_LAST, raw)
    assert rec.events == [("command", 1, STORE, True)]
    over = Recorder(max_command=len(raw) - 1)
    raises(over, 1, CMD_LAST, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00\x01\x04\x00\x00\x00",  # truncated value
        b"\x08\x00\x10\x00\x02\x00\x00\x00AB",  # not group 0000
        encode_command(ECHO)[:-2],  # group length disagrees
    ],
)
def test_undecodable_command(raw: bytes) -> None:
    rec = Recorder()
    raises(rec, 1, CMD_LAST, raw)
    assert rec.events == []


@given(st.binary(max_size=200))
def test_random_command_bytes_never_raise_anything_but_dimse_error(raw: bytes) -> None:
    rec = Recorder()
    try:
        rec.feed(1, CMD_LAST, raw)
    except DIMSEError as exc:
        assert isinstance(exc.abort_reason, AbortReason)
