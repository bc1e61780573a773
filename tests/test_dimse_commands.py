"""Tests of the DIMSE-C command set codec (PS3.7 9.3, Annex E)."""

from __future__ import annotations

import random
import struct
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from aiodimse.dimse.commands import (
    MESSAGE_TYPES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CommandField,
    CStoreRQ,
    CStoreRSP,
    Message,
    Priority,
    decode_command,
    encode_command,
)
from aiodimse.errors import DIMSEError

# -- strategies ----------------------------------------------------------------------------

_component = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))
uids = st.lists(_component, min_size=2, max_size=12).map(".".join).filter(lambda u: len(u) <= 64)
# PS3.5 6.2 AE: default repertoire without backslash and control characters; leading and
# trailing spaces are not significant, so generate values without them.
_ae_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")
ae_titles = st.text(_ae_chars, min_size=1, max_size=16).map(str.strip).filter(bool)
comments = st.text(_ae_chars, min_size=1, max_size=64).map(str.strip).filter(bool)
us = st.integers(0, 0xFFFF)
tags = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)).map(lambda t: t[0] << 16 | t[1])
priorities = st.sampled_from(list(Priority))

_response_extras: dict[str, Any] = {
    "status": us,
    "affected_sop_class_uid": st.none() | uids,
    "has_dataset": st.booleans(),
    "error_comment": st.none() | comments,
    "offending_element": st.none() | st.lists(tags, min_size=1, max_size=4).map(tuple),
    "error_id": st.none() | us,
}
_suboperations: dict[str, Any] = {
    f"number_of_{k}_suboperations": st.none() | us
    for k in ("remaining", "completed", "failed", "warning")
}

MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    CEchoRQ: st.builds(
        CEchoRQ, message_id=us, affected_sop_class_uid=uids, has_dataset=st.booleans()
    ),
    CEchoRSP: st.builds(CEchoRSP, message_id_being_responded_to=us, **_response_extras),
    CStoreRQ: st.builds(
        CStoreRQ,
        message_id=us,
        affected_sop_class_uid=uids,
        affected_sop_instance_uid=uids,
        priority=priorities,
        move_originator_ae_title=st.none() | ae_titles,
        move_originator_message_id=st.none() | us,
        has_dataset=st.booleans(),
    ),
    CStoreRSP: st.builds(
        CStoreRSP,
        message_id_being_responded_to=us,
        affected_sop_instance_uid=st.none() | uids,
        **_response_extras,
    ),
    CFindRQ: st.builds(
        CFindRQ,
        message_id=us,
        affected_sop_class_uid=uids,
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CFindRSP: st.builds(CFindRSP, message_id_being_responded_to=us, **_response_extras),
    CGetRQ: st.builds(
        CGetRQ,
        message_id=us,
        affected_sop_class_uid=uids,
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CGetRSP: st.builds(
        CGetRSP, message_id_being_responded_to=us, **_response_extras, **_suboperations
    ),
    CMoveRQ: st.builds(
        CMoveRQ,
        message_id=us,
        affected_sop_class_uid=uids,
        move_destination=ae_titles,
        priority=priorities,
        has_dataset=st.booleans(),
    ),
    CMoveRSP: st.builds(
        CMoveRSP, message_id_being_responded_to=us, **_response_extras, **_suboperations
    ),
    CCancelRQ: st.builds(CCancelRQ, message_id_being_responded_to=us, has_dataset=st.booleans()),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES.values())
    assert len(MESSAGE_TYPES) == 11


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(MESSAGE_STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    encoded = encode_command(msg)
    assert decode_command(encoded) == msg
    assert decode_command(memoryview(encoded)) == msg
    assert decode_command(bytearray(encoded)) == msg


@settings(max_examples=300, deadline=None)
@given(messages)
def test_encoding_is_well_formed(msg: Message) -> None:
    """Group 0000 only, ascending even-length elements, group length first and right."""
    data = encode_command(msg)
    group, elem, length, value = struct.unpack_from("<HHII", data)
    assert (group, elem, length) == (0, 0, 4)
    assert value == len(data) - 12
    offset, previous = 12, 0
    while offset < len(data):
        group, elem, length = struct.unpack_from("<HHI", data, offset)
        assert group == 0
        assert elem > previous
        assert length % 2 == 0
        previous = elem
        offset += 8 + length
    assert offset == len(data)


def test_defaults_follow_the_standard() -> None:
    """PS3.7 9.3: which requests carry a data set, default priority, verification class."""
    uid = "1.2.3"
    assert CStoreRQ(
        message_id=1, affected_sop_class_uid=uid, affected_sop_instance_uid=uid
    ).has_dataset
    assert CFindRQ(message_id=1, affected_sop_class_uid=uid).has_dataset
    assert CGetRQ(message_id=1, affected_sop_class_uid=uid).has_dataset
    assert CMoveRQ(message_id=1, affected_sop_class_uid=uid, move_destination="X").has_dataset
    assert not CEchoRQ(message_id=1).has_dataset
    assert not CCancelRQ(message_id_being_responded_to=1).has_dataset
    assert CEchoRQ(message_id=1).affected_sop_class_uid == "1.2.840.10008.1.1"
    assert CFindRQ(message_id=1, affected_sop_class_uid=uid).priority == 0
    # PS3.7 Table E.1-1 / 9.3: command field values.
    assert {f.name: int(f) for f in CommandField} == {
        "C_STORE_RQ": 0x0001,
        "C_STORE_RSP": 0x8001,
        "C_GET_RQ": 0x0010,
        "C_GET_RSP": 0x8010,
        "C_FIND_RQ": 0x0020,
        "C_FIND_RSP": 0x8020,
        "C_MOVE_RQ": 0x0021,
        "C_MOVE_RSP": 0x8021,
        "C_ECHO_RQ": 0x0030,
        "C_ECHO_RSP": 0x8030,
        "C_CANCEL_RQ": 0x0FFF,
    }
    assert (Priority.MEDIUM, Priority.HIGH, Priority.LOW) == (0, 1, 2)


# -- byte-exact encodings built independently with pydicom -----------------------------------


def _pydicom_command(**elements: Any) -> bytes:
    """Group 0000 written by pydicom in implicit VR little endian, with its group length."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    body = fp.getvalue()
    ds.CommandGroupLength = len(body)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def test_c_store_rq_bytes_match_pydicom() -> None:
    msg = CStoreRQ(
        message_id=0x1234,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.2",  # odd length: NUL padded
        affected_sop_instance_uid="1.2.3.44",  # even length
        priority=Priority.HIGH,
        move_originator_ae_title="MOVESCU",  # odd length: space padded
        move_originator_message_id=7,
    )
    expected = _pydicom_command(
        AffectedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
        CommandField=0x0001,
        MessageID=0x1234,
        Priority=1,
        CommandDataSetType=0x0001,
        AffectedSOPInstanceUID="1.2.3.44",
        MoveOriginatorApplicationEntityTitle="MOVESCU",
        MoveOriginatorMessageID=7,
    )
    assert encode_command(msg) == expected
    assert decode_command(expected) == msg


def test_c_move_rsp_bytes_match_pydicom() -> None:
    msg = CMoveRSP(
        message_id_being_responded_to=3,
        status=0xB000,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.2",
        number_of_remaining_suboperations=0,
        number_of_completed_suboperations=10,
        number_of_failed_suboperations=2,
        number_of_warning_suboperations=1,
        has_dataset=True,
        error_comment="two failed",
        offending_element=(0x00100010, 0x0020000D),
        error_id=5,
    )
    expected = _pydicom_command(
        AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.2",
        CommandField=0x8021,
        MessageIDBeingRespondedTo=3,
        CommandDataSetType=0x0001,
        Status=0xB000,
        OffendingElement=[0x00100010, 0x0020000D],
        ErrorComment="two failed",
        ErrorID=5,
        NumberOfRemainingSuboperations=0,
        NumberOfCompletedSuboperations=10,
        NumberOfFailedSuboperations=2,
        NumberOfWarningSuboperations=1,
    )
    assert encode_command(msg) == expected
    assert decode_command(expected) == msg


def test_c_echo_and_cancel_bytes_match_pydicom() -> None:
    assert encode_command(CEchoRQ(message_id=1)) == _pydicom_command(
        AffectedSOPClassUID="1.2.840.10008.1.1",
        CommandField=0x0030,
        MessageID=1,
        CommandDataSetType=0x0101,
    )
    assert encode_command(CCancelRQ(message_id_being_responded_to=9)) == _pydicom_command(
        CommandField=0x0FFF, MessageIDBeingRespondedTo=9, CommandDataSetType=0x0101
    )
    assert encode_command(
        CMoveRQ(message_id=2, affected_sop_class_uid="1.2", move_destination="DEST")
    ) == _pydicom_command(
        AffectedSOPClassUID="1.2",
        CommandField=0x0021,
        MessageID=2,
        MoveDestination="DEST",
        Priority=0,
        CommandDataSetType=0x0001,
    )


# -- tolerant decoding -----------------------------------------------------------------------


def _element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, elem, len(value)) + value


def _us(elem: int, value: int) -> bytes:
    return _element(elem, struct.pack("<H", value))


def _with_group_length(body: bytes) -> bytes:
    return _element(0x0000, struct.pack("<I", len(body))) + body


ECHO_BODY = _element(0x0002, b"1.2.840.10008.1.1\x00") + _us(0x0100, 0x30) + _us(0x0110, 5)
ECHO_BODY += _us(0x0800, 0x0101)


def test_decodes_a_hand_made_echo() -> None:
    assert decode_command(_with_group_length(ECHO_BODY)) == CEchoRQ(message_id=5)


def test_group_length_is_optional_when_decoding() -> None:
    assert decode_command(ECHO_BODY) == CEchoRQ(message_id=5)


def test_unknown_group_0000_elements_are_skipped() -> None:
    body = ECHO_BODY[:-10] + _element(0x0003, b"1.2\x00") + ECHO_BODY[-10:]
    body += _element(0x5010, b"whatever")  # an unknown, retired or future element
    assert decode_command(_with_group_length(body)) == CEchoRQ(message_id=5)


def test_padding_is_trimmed() -> None:
    body = _element(0x0002, b"1.2.3 ") + _us(0x0100, 0x21) + _us(0x0110, 1)
    body += _element(0x0600, b" DEST   \x00") + _us(0x0700, 2) + _us(0x0800, 0xFEFE)
    msg = decode_command(body)
    assert msg == CMoveRQ(
        message_id=1,
        affected_sop_class_uid="1.2.3",
        move_destination="DEST",
        priority=Priority.LOW,
        has_dataset=True,  # any value but 0x0101 means a data set follows (PS3.7 E.1)
    )


def test_unknown_priority_is_kept() -> None:
    body = _element(0x0002, b"1.2\x00") + _us(0x0100, 0x20) + _us(0x0110, 1)
    body += _us(0x0700, 9) + _us(0x0800, 1)
    msg = decode_command(body)
    assert isinstance(msg, CFindRQ)
    assert msg.priority == 9


def test_zero_length_optional_numbers_are_absent() -> None:
    body = _us(0x0100, 0x8010) + _us(0x0120, 4) + _us(0x0800, 0x0101) + _us(0x0900, 0)
    body += _element(0x1020, b"") + _element(0x0901, b"")
    assert decode_command(body) == CGetRSP(message_id_being_responded_to=4)


# C-GET-RSP as Orthanc 1.10 sends it when a sub-operation failed: the Failed SOP Instance
# UID List (0008,0058), with its group length, follows the command group in the command PDV.
ORTHANC_FAILED_GET_RSP = bytes.fromhex(
    "00000000040000006a000000000002001c000000312e322e3834302e31303030382e352e312e342e312e32"
    "2e322e3300000000010200000010800000200102000000010000000008020000000101000000090200000000"
    "c0000021100200000000000000221002000000010000002310020000000000080000000400000036000000"
    "080058002e000000312e332e362e312e342e312e353936322e312e312e382e312e332e3230303430383236"
    "3138353035392e35343537"
)


def test_status_detail_after_the_command_group_is_skipped() -> None:
    assert decode_command(ORTHANC_FAILED_GET_RSP) == CGetRSP(
        message_id_being_responded_to=1,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.3",
        status=0xC000,
        number_of_completed_suboperations=0,  # no (0000,1020) in a final response
        number_of_failed_suboperations=1,
        number_of_warning_suboperations=0,
    )


@pytest.mark.parametrize(
    ("trailer", "message"),
    [
        (struct.pack("<HHI", 0x0008, 0x0058, 10) + b"1.2", "(0008,0058)"),  # truncated
        (struct.pack("<HHI", 0x0008, 0x0058, 0) + b"\x00\x00", "truncated"),
        (struct.pack("<HHI", 0x0008, 0x0058, 0) + _us(0x0110, 5), "(0000,0110)"),  # group 0000
    ],
)
def test_malformed_status_detail_raises(trailer: bytes, message: str) -> None:
    data = _with_group_length(ECHO_BODY) + trailer
    with pytest.raises(DIMSEError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_command(data)


def test_elements_inside_the_declared_group_must_be_group_0000() -> None:
    # The group length covers the foreign element: it is inside the command group.
    body = ECHO_BODY + struct.pack("<HHI", 0x0008, 0x0016, 0)
    with pytest.raises(DIMSEError, match=r"\(0008,0016\)"):
        decode_command(_with_group_length(body))


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "without Command Field"),
        (ECHO_BODY[:-1], "claims"),
        (ECHO_BODY + b"\x00\x00\x00", "truncated"),
        (ECHO_BODY + struct.pack("<HHI", 0x0008, 0x0016, 0), "(0008,0016)"),
        (ECHO_BODY + _us(0x0110, 5), "twice"),
        (_element(0x0000, struct.pack("<I", 3)) + ECHO_BODY, "Group Length"),
        (_element(0x0000, b"\x00\x00") + ECHO_BODY, "Group Length"),
        (ECHO_BODY.replace(_us(0x0100, 0x30), _us(0x0100, 0x1234)), "0x1234"),
        (ECHO_BODY.replace(_us(0x0110, 5), _element(0x0110, b"\x05\x00\x00\x00")), "length 4"),
        (ECHO_BODY.replace(_us(0x0110, 5), b""), "message_id"),
        (ECHO_BODY.replace(_us(0x0800, 0x0101), b""), "Data Set Type"),
        (ECHO_BODY.replace(_us(0x0100, 0x30), b""), "Command Field"),
        (ECHO_BODY.replace(b"1.2.840.10008.1.1\x00", b"1.2.840.10008.1.\xe9\x00"), "ASCII"),
        (
            _us(0x0100, 0x8030)
            + _us(0x0120, 1)
            + _us(0x0800, 0x101)
            + _us(0x0900, 0)
            + _element(0x0901, b"\x10\x00"),
            "multiple of 4",
        ),
        (struct.pack("<HHI", 0, 0x0002, 0xFFFFFFFF) + ECHO_BODY, "claims"),
    ],
)
def test_malformed_raises_dimse_error(data: bytes, message: str) -> None:
    with pytest.raises(DIMSEError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_command(data)


_REQUIRED = {
    CEchoRQ: ("message_id", "affected_sop_class_uid"),
    CEchoRSP: ("message_id_being_responded_to", "status"),
    CStoreRQ: ("message_id", "affected_sop_class_uid", "affected_sop_instance_uid", "priority"),
    CStoreRSP: ("message_id_being_responded_to", "status"),
    CFindRQ: ("message_id", "affected_sop_class_uid", "priority"),
    CFindRSP: ("message_id_being_responded_to", "status"),
    CGetRQ: ("message_id", "affected_sop_class_uid", "priority"),
    CGetRSP: ("message_id_being_responded_to", "status"),
    CMoveRQ: ("message_id", "affected_sop_class_uid", "priority", "move_destination"),
    CMoveRSP: ("message_id_being_responded_to", "status"),
    CCancelRQ: ("message_id_being_responded_to",),
}
# PS3.7 Table E.1-1 element numbers, typed in from the standard.
_ELEMENT_OF = {
    "affected_sop_class_uid": 0x0002,
    "message_id": 0x0110,
    "message_id_being_responded_to": 0x0120,
    "move_destination": 0x0600,
    "priority": 0x0700,
    "status": 0x0900,
    "affected_sop_instance_uid": 0x1000,
}


def _drop_element(data: bytes, drop: int) -> bytes:
    """``data`` without element (0000,drop), the group length fixed."""
    out, offset = b"", 12
    while offset < len(data):
        _, elem, length = struct.unpack_from("<HHI", data, offset)
        if elem != drop:
            out += data[offset : offset + 8 + length]
        offset += 8 + length
    return _with_group_length(out)


@pytest.mark.parametrize(
    ("cls", "attr"),
    [(cls, attr) for cls, attrs in _REQUIRED.items() for attr in attrs],
    ids=lambda x: x if isinstance(x, str) else x.__name__,
)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_missing_required_field(cls: type[Message], attr: str, data: st.DataObject) -> None:
    full = data.draw(MESSAGE_STRATEGIES[cls])
    dropped = _drop_element(encode_command(full), _ELEMENT_OF[attr])
    with pytest.raises(DIMSEError, match=attr):
        decode_command(dropped)


def test_optional_fields_may_be_missing() -> None:
    """Every field not in _REQUIRED decodes as None when its element is left out."""
    for cls, required in _REQUIRED.items():
        names = [f.name for f in fields(cls) if f.name not in (*required, "has_dataset")]
        for name in names:
            assert getattr(_minimal(cls), name) is None, (cls.__name__, name)


def _minimal(cls: type[Message]) -> Message:
    body = _us(0x0100, cls.command_field) + _us(0x0800, 0x0101)
    for attr in _REQUIRED[cls]:
        elem = _ELEMENT_OF[attr]
        if attr in ("affected_sop_class_uid", "affected_sop_instance_uid"):
            body += _element(elem, b"1.2\x00")
        elif attr == "move_destination":
            body += _element(elem, b"AE")
        else:
            body += _us(elem, 1)
    return decode_command(body)


# -- fuzzing: only DIMSEError, whatever the bytes ---------------------------------------------


def _decode_or_dimse_error(data: bytes) -> None:
    try:
        msg = decode_command(data)
    except DIMSEError:
        return
    # What decodes must encode again, to the same message: no value survives decoding
    # that the encoder rejects or changes (error comments aside: non-ASCII became U+FFFD).
    again = decode_command(encode_command(msg))
    if isinstance(msg, _RESPONSES) and isinstance(again, _RESPONSES):
        assert replace(again, error_comment=None) == replace(msg, error_comment=None)
    else:
        assert again == msg


_RESPONSES = (CEchoRSP, CStoreRSP, CFindRSP, CGetRSP, CMoveRSP)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_dimse_error(data: bytes) -> None:
    _decode_or_dimse_error(data)


def _mutate(data: bytearray, rnd: random.Random) -> bytes:
    for _ in range(rnd.randint(1, 4)):
        if not data:
            break
        pos = rnd.randrange(len(data))
        kind = rnd.randrange(5)
        if kind == 0:
            data[pos] = rnd.randrange(256)
        elif kind == 1:
            del data[pos:]
        elif kind == 2:
            data[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
        elif kind == 3:
            del data[pos : pos + rnd.randint(1, 8)]
        else:  # a plausible-looking length where a length may be
            data[pos : pos + 4] = struct.pack("<I", rnd.choice([0, 1, 2, 3, 4, 0xFFFFFFFF]))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(messages, st.randoms(use_true_random=False))
def test_mutated_commands_raise_only_dimse_error(msg: Message, rnd: random.Random) -> None:
    """300 messages x 20 mutations each: several thousand broken command sets."""
    encoded = encode_command(msg)
    for _ in range(20):
        _decode_or_dimse_error(_mutate(bytearray(encoded), rnd))


# -- encoding errors -------------------------------------------------------------------------


def test_unencodable_values_raise_dimse_error() -> None:
    ok = CStoreRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.3")
    for bad in (
        replace(ok, message_id=70000),
        replace(ok, message_id=-1),
        replace(ok, affected_sop_instance_uid="1.2.\u00e9"),
        replace(ok, move_originator_ae_title="caf\u00e9"),
    ):
        with pytest.raises(DIMSEError):
            encode_command(bad)
    with pytest.raises(DIMSEError):
        encode_command(
            replace(CEchoRSP(message_id_being_responded_to=1), offending_element=(1 << 40,))
        )
