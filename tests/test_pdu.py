"""The PDU codec: byte layouts from PS3.8 9.3, round trips, framing and malformed input."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from _settings import FUZZ_EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodimse.enums import AbortReason, AbortSource, ContextResult, RejectResult, RejectSource
from aiodimse.errors import (
    InvalidPDUParameterValue,
    PDUError,
    PDUTooLarge,
    UnexpectedPDUParameter,
    UnrecognizedPDU,
    UnrecognizedPDUParameter,
)
from aiodimse.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsyncOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PDUReader,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RawItem,
    RawPDU,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
    pdata_fragments,
)
from aiodimse.testing import strategies as dst

FIXTURES = Path(__file__).parent / "fixtures" / "pdus"

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def item(item_type: int, body: bytes) -> bytes:
    """An item written out by hand from PS3.8 9.3.2.x: type, reserved, 2-byte length."""
    return bytes([item_type, 0]) + struct.pack(">H", len(body)) + body


def hand_made_rq() -> bytes:
    """An A-ASSOCIATE-RQ assembled field by field from PS3.8 Table 9-11."""
    ctx = item(
        0x20,
        bytes([1, 0, 0, 0]) + item(0x30, VERIFICATION.encode()) + item(0x40, IMPLICIT_LE.encode()),
    )
    user = item(
        0x50,
        item(0x51, struct.pack(">L", 16384))
        + item(0x52, b"1.2.3.4")
        + item(0x54, struct.pack(">H", 7) + b"1.2.3.5" + bytes([0, 1]))
        + item(0x55, b"TEST_1"),
    )
    body = (
        struct.pack(">HH", 1, 0)
        + b"CALLED_AE       "
        + b"CALLING_AE      "
        + bytes(32)
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + ctx
        + user
    )
    return bytes([1, 0]) + struct.pack(">L", len(body)) + body


def test_a_associate_rq_fields_decode_from_hand_made_bytes() -> None:
    pdu = decode_pdu(hand_made_rq())
    assert isinstance(pdu, AAssociateRQ)
    assert pdu.called_ae_title == "CALLED_AE"
    assert pdu.calling_ae_title == "CALLING_AE"
    assert pdu.protocol_version == 1
    assert pdu.presentation_contexts == (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),)
    ui = pdu.user_information
    assert ui is not None
    assert ui.max_length == 16384
    assert ui.implementation_class_uid == "1.2.3.4"
    assert ui.implementation_version_name == "TEST_1"
    assert ui.role_selections == (RoleSelection("1.2.3.5", False, True),)
    assert pdu.encode() == hand_made_rq()


def test_a_associate_ac_rj_release_abort_layouts() -> None:
    ac = AAssociateAC(
        "CALLED",
        "CALLING",
        (PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT_LE),),
        UserInformation((MaximumLength(0),)),
    )
    raw = ac.encode()
    assert raw[0] == 0x02
    assert struct.unpack(">L", raw[2:6])[0] == len(raw) - 6
    # The context item: type 0x21, then ID, reserved, result, reserved, then the TS sub-item.
    ctx = item(0x21, bytes([1, 0, 0, 0]) + item(0x40, EXPLICIT_LE.encode()))
    assert ctx in raw
    assert AAssociateRJ(RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 7).encode() == (
        b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07"
    )
    assert AReleaseRQ().encode() == b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    assert AReleaseRP().encode() == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    abort = AAbort(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU)
    assert abort.encode() == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02"
    assert decode_pdu(abort.encode()) == abort


def test_p_data_tf_layout() -> None:
    pdu = PDataTF((PresentationDataValue(3, 0x03, b"abcd"), PresentationDataValue(5, 0x00, b"")))
    raw = pdu.encode()
    assert raw == (
        b"\x04\x00"
        + struct.pack(">L", 16)
        + struct.pack(">L", 6)
        + b"\x03\x03abcd"
        + struct.pack(">L", 2)
        + b"\x05\x00"
    )
    back = decode_pdu(raw)
    assert isinstance(back, PDataTF)
    assert back.items[0].is_command and back.items[0].is_last
    assert not back.items[1].is_command and not back.items[1].is_last
    assert back == pdu


def test_sub_items_layouts() -> None:
    assert AsyncOperationsWindow(5, 3).encode() == b"\x53\x00\x00\x04\x00\x05\x00\x03"
    assert RoleSelection("1.2", True, False).encode() == b"\x54\x00\x00\x07\x00\x031.2\x01\x00"
    ident = UserIdentityRQ(2, b"bob", b"pw", True)
    assert ident.encode() == b"\x58\x00\x00\x0b\x02\x01\x00\x03bob\x00\x02pw"
    common = SOPClassCommonExtendedNegotiation("1.2", "3.4", ("5.6", "7.8"))
    assert common.encode() == (
        b"\x57\x00\x00\x16"
        + b"\x00\x031.2"
        + b"\x00\x033.4"
        + b"\x00\x0a"
        + b"\x00\x035.6\x00\x037.8"
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(dst.pdus())
def test_round_trip_of_generated_pdus(pdu: object) -> None:
    raw = pdu.encode()  # type: ignore[attr-defined]
    back = decode_pdu(raw)
    assert back == pdu
    assert back.encode() == raw


def test_unknown_user_information_sub_item_is_kept_raw() -> None:
    ui = UserInformation((MaximumLength(1000), RawItem(0xAB, b"secret")))
    rq = AAssociateRQ("A", "B", (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),), ui)
    back = decode_pdu(rq.encode())
    assert isinstance(back, AAssociateRQ)
    assert back.user_information is not None
    assert back.user_information.unknown_items == (RawItem(0xAB, b"secret"),)
    assert back.user_information.max_length == 1000


def test_async_window_is_only_an_item_not_a_default() -> None:
    # The codec never invents sub-items: an RQ carries the window only when given one.
    ui = UserInformation(
        (MaximumLength(0), ImplementationClassUID("1.2"), ImplementationVersionName("X"))
    )
    rq = AAssociateRQ("A", "B", (PresentationContextRQ(1, VERIFICATION, (IMPLICIT_LE,)),), ui)
    assert b"\x53\x00\x00\x04" not in rq.encode()


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"\x09\x00\x00\x00\x00\x00", UnrecognizedPDU, AbortReason.UNRECOGNIZED_PDU),
        (
            b"\x05\x00\x00\x00\x00\x04\x00\x00",
            InvalidPDUParameterValue,
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        ),
        (
            b"\x05\x00\x00\x00\x00\x02\x00\x00",
            InvalidPDUParameterValue,
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        ),
        (
            b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x09",
            InvalidPDUParameterValue,
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        ),
        (
            b"\x04\x00\x00\x00\x00\x00",
            InvalidPDUParameterValue,
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        ),
        (
            b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x09\x01\x00",
            InvalidPDUParameterValue,
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        ),
        (b"\x01", InvalidPDUParameterValue, AbortReason.INVALID_PDU_PARAMETER_VALUE),
    ],
)
def test_malformed_pdus_map_to_abort_reasons(
    data: bytes, error: type[PDUError], reason: AbortReason
) -> None:
    with pytest.raises(error) as info:
        decode_pdu(data)
    assert info.value.abort_reason == reason


def _rq_with_extra_item(extra: bytes) -> bytes:
    good = hand_made_rq()
    body = good[6:] + extra
    return good[:2] + struct.pack(">L", len(body)) + body


def test_item_errors_carry_parameter_reasons() -> None:
    with pytest.raises(UnrecognizedPDUParameter) as info:
        decode_pdu(_rq_with_extra_item(item(0x99, b"x")))
    assert info.value.abort_reason == AbortReason.UNRECOGNIZED_PDU_PARAMETER
    # A presentation context *accept* item inside a request is a known item out of place.
    with pytest.raises(UnexpectedPDUParameter) as info2:
        decode_pdu(_rq_with_extra_item(item(0x21, bytes([1, 0, 0, 0]))))
    assert info2.value.abort_reason == AbortReason.UNEXPECTED_PDU_PARAMETER
    with pytest.raises(UnexpectedPDUParameter):
        decode_pdu(_rq_with_extra_item(item(0x10, b"1.2.840.10008.3.1.1.1")))


def _only_pdu_errors(data: bytes) -> None:
    try:
        decode_pdu(data)
    except PDUError as exc:
        assert isinstance(exc.abort_reason, AbortReason)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_pdu_errors(data: bytes) -> None:
    _only_pdu_errors(data)


MUTATIONS_PER_PDU = 25


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """Damage a PDU at random: flip, set, insert, delete bytes or truncate."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not out:
            break
        i = rnd.randrange(len(out))
        op = rnd.randrange(5)
        if op == 0:
            out[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            out[i] = rnd.randrange(256)
        elif op == 2:
            out[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3:
            del out[i : i + rnd.randint(1, 8)]
        else:
            del out[i:]
    return bytes(out)


@settings(
    max_examples=FUZZ_EXAMPLES // MUTATIONS_PER_PDU, suppress_health_check=[HealthCheck.too_slow]
)
@given(dst.pdus(), st.randoms(use_true_random=False))
def test_mutated_pdus_raise_only_pdu_errors(pdu: object, rnd: random.Random) -> None:
    # Generating a structured PDU is the costly part, so each one is damaged many ways:
    # FUZZ_EXAMPLES damaged PDUs in all.
    raw = pdu.encode()  # type: ignore[attr-defined]
    for _ in range(MUTATIONS_PER_PDU):
        _only_pdu_errors(mutate(raw, rnd))


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(dst.mutated_pdu_bytes())
def test_public_mutation_strategy_yields_decodable_or_pdu_errors(data: bytes) -> None:
    _only_pdu_errors(data)


@settings(max_examples=FUZZ_EXAMPLES // 4, suppress_health_check=[HealthCheck.too_slow])
@given(dst.raw_pdus())
def test_raw_pdus_encode_as_declared_and_decode_safely(raw: RawPDU) -> None:
    data = raw.encode()
    assert data[0] == raw.pdu_type
    assert struct.unpack(">L", data[2:6])[0] == (
        len(raw.payload) if raw.length is None else raw.length
    )
    _only_pdu_errors(data)


# -- framing ----------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(dst.pdus(), min_size=1, max_size=5), st.integers(1, 64))
def test_reader_frames_any_chunking(pdus: list[object], chunk: int) -> None:
    stream = b"".join(p.encode() for p in pdus)  # type: ignore[attr-defined]
    reader = PDUReader()
    out: list[object] = []
    for i in range(0, len(stream), chunk):
        reader.feed(stream[i : i + chunk])
        out.extend(reader)
    assert out == pdus
    assert reader.buffered == 0


def test_reader_one_byte_at_a_time() -> None:
    stream = hand_made_rq() + AReleaseRQ().encode()
    reader = PDUReader()
    out: list[object] = []
    for b in stream:
        reader.feed(bytes([b]))
        out.extend(reader)
    assert [type(p) for p in out] == [AAssociateRQ, AReleaseRQ]


def test_reader_refuses_oversize_pdu_from_its_header_alone() -> None:
    reader = PDUReader(max_pdata_length=16384, max_other_length=65536)
    # A 6-byte header claiming 3 GiB: refused before anything more arrives.
    reader.feed(b"\x04\x00" + struct.pack(">L", 3 << 30))
    with pytest.raises(PDUTooLarge) as info:
        reader.next_raw()
    assert info.value.abort_reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    reader2 = PDUReader(max_pdata_length=16384, max_other_length=65536)
    reader2.feed(b"\x01\x00" + struct.pack(">L", 70000))
    with pytest.raises(PDUTooLarge):
        reader2.next_raw()
    # At the limit is fine.
    reader3 = PDUReader(max_pdata_length=16)
    pdu = PDataTF((PresentationDataValue(1, 3, b"0123456789"),))
    assert len(pdu.encode()) - 6 == 16
    reader3.feed(pdu.encode())
    assert reader3.next_pdu() == pdu


# -- fragmentation ----------------------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=5000), st.sampled_from([0, 7, 8, 64, 1000, 16384]), st.booleans())
def test_pdata_fragments_respect_max_length(data: bytes, max_len: int, is_command: bool) -> None:
    stream = b"".join(bytes(b) for b in pdata_fragments(3, is_command, data, max_len))
    reader = PDUReader()
    reader.feed(stream)
    pdus = list(reader)
    got = b""
    for i, pdu in enumerate(pdus):
        assert isinstance(pdu, PDataTF)
        assert max_len == 0 or len(pdu.encode()) - 6 <= max_len
        (pdv,) = pdu.items
        assert pdv.context_id == 3
        assert pdv.is_command == is_command
        assert pdv.is_last == (i == len(pdus) - 1)
        got += bytes(pdv.data)
    assert got == data


# -- what DCMTK really sends ------------------------------------------------------------

RECORDED = sorted(FIXTURES.glob("*/*.bin"))


def test_recorded_fixtures_cover_every_pdu_type() -> None:
    types = {path.read_bytes()[0] for path in RECORDED}
    assert types == {1, 2, 3, 4, 5, 6, 7}


def test_dcmtk_reserved_byte_survives_the_round_trip() -> None:
    # DCMTK writes FFH in a reserved byte of each presentation context item (PS3.8 says
    # send 00H, do not test on receipt): decoding accepts it and re-encoding keeps it.
    (rq_path,) = (FIXTURES / "echo").glob("*-rq-01.bin")
    rq = decode_pdu(rq_path.read_bytes())
    assert isinstance(rq, AAssociateRQ)
    assert rq.presentation_contexts[0].reserved != b"\x00\x00\x00"
    assert rq.presentation_contexts[0] == PresentationContextRQ(
        rq.presentation_contexts[0].context_id,
        rq.presentation_contexts[0].abstract_syntax,
        rq.presentation_contexts[0].transfer_syntaxes,
    )


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_dcmtk_pdus_round_trip(path: Path) -> None:
    raw = path.read_bytes()
    pdu = decode_pdu(raw)
    assert pdu.encode() == raw
