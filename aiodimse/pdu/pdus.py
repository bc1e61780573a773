"""The seven PDUs of PS3.8 9.3 as values, and :func:`decode_pdu` for one whole PDU."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from ..enums import (
    ABORT_REASON_NAMES,
    AbortReason,
    AbortSource,
    ItemType,
    PDUType,
    RejectResult,
    RejectSource,
    reject_reason_name,
)
from ..errors import (
    InvalidPDUParameterValue,
    PDUError,
    UnexpectedPDUParameter,
    UnrecognizedPDU,
    UnrecognizedPDUParameter,
)
from .fields import (
    APPLICATION_CONTEXT_NAME,
    ASSOC_FIXED,
    KNOWN_ITEMS,
    PDU_HEADER,
    PDV_HEADER,
    decode_ae,
    decode_uid,
    encode_ae,
    encode_item,
    iter_items,
    uid_bytes,
)
from .items import (
    PresentationContextAC,
    PresentationContextRQ,
    UserInformation,
    decode_context_ac,
    decode_context_rq,
    decode_user_information,
)

# ---------------------------------------------------------------------------------------
# PDUs


@dataclass(frozen=True, slots=True)
class AAssociateRQ:
    """A-ASSOCIATE-RQ PDU (0x01), PS3.8 9.3.2."""

    pdu_type: ClassVar[int] = PDUType.A_ASSOCIATE_RQ
    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation | None = None
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_association(self, self.presentation_contexts)


@dataclass(frozen=True, slots=True)
class AAssociateAC:
    """A-ASSOCIATE-AC PDU (0x02), PS3.8 9.3.3. The AE titles echo the request's."""

    pdu_type: ClassVar[int] = PDUType.A_ASSOCIATE_AC
    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation | None = None
    application_context_name: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1

    def encode(self) -> bytes:
        return _encode_association(self, self.presentation_contexts)


def _encode_association(
    pdu: AAssociateRQ | AAssociateAC,
    contexts: Sequence[PresentationContextRQ | PresentationContextAC],
) -> bytes:
    parts = [
        ASSOC_FIXED.pack(
            pdu.protocol_version,
            0,
            encode_ae(pdu.called_ae_title),
            encode_ae(pdu.calling_ae_title),
            b"",
        ),
        encode_item(ItemType.APPLICATION_CONTEXT, uid_bytes(pdu.application_context_name)),
    ]
    parts += [c.encode() for c in contexts]
    if pdu.user_information is not None:
        parts.append(pdu.user_information.encode())
    body = b"".join(parts)
    return PDU_HEADER.pack(pdu.pdu_type, 0, len(body)) + body


@dataclass(frozen=True, slots=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ PDU (0x03), PS3.8 9.3.4."""

    pdu_type: ClassVar[int] = PDUType.A_ASSOCIATE_RJ
    result: RejectResult
    source: RejectSource
    reason: int

    def encode(self) -> bytes:
        return PDU_HEADER.pack(self.pdu_type, 0, 4) + bytes(
            (0, int(self.result), int(self.source), self.reason)
        )

    @property
    def reason_name(self) -> str:
        return reject_reason_name(self.source, self.reason)


@dataclass(frozen=True, slots=True)
class PresentationDataValue:
    """One PDV item (PS3.8 9.3.5.1) with its message control header (PS3.8 Annex E.2).

    ``control`` bit 0: 1 = command, 0 = data set; bit 1: 1 = last fragment.
    """

    context_id: int
    control: int
    data: bytes | memoryview

    @property
    def is_command(self) -> bool:
        return bool(self.control & 0x01)

    @property
    def is_last(self) -> bool:
        return bool(self.control & 0x02)

    def encode(self) -> bytes:
        return PDV_HEADER.pack(len(self.data) + 2, self.context_id, self.control) + self.data


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF PDU (0x04), PS3.8 9.3.5: one or more PDV items."""

    pdu_type: ClassVar[int] = PDUType.P_DATA_TF
    items: tuple[PresentationDataValue, ...]

    def encode(self) -> bytes:
        parts: list[bytes | memoryview] = [b""]
        size = 0
        for item in self.items:
            parts.append(PDV_HEADER.pack(len(item.data) + 2, item.context_id, item.control))
            parts.append(item.data)
            size += len(item.data) + 6
        parts[0] = PDU_HEADER.pack(self.pdu_type, 0, size)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class AReleaseRQ:
    """A-RELEASE-RQ PDU (0x05), PS3.8 9.3.6."""

    pdu_type: ClassVar[int] = PDUType.A_RELEASE_RQ

    def encode(self) -> bytes:
        return b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class AReleaseRP:
    """A-RELEASE-RP PDU (0x06), PS3.8 9.3.7."""

    pdu_type: ClassVar[int] = PDUType.A_RELEASE_RP

    def encode(self) -> bytes:
        return b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class AAbort:
    """A-ABORT PDU (0x07), PS3.8 9.3.8."""

    pdu_type: ClassVar[int] = PDUType.A_ABORT
    source: AbortSource = AbortSource.SERVICE_USER
    reason: AbortReason = AbortReason.REASON_NOT_SPECIFIED

    def encode(self) -> bytes:
        return PDU_HEADER.pack(self.pdu_type, 0, 4) + bytes(
            (0, 0, int(self.source), int(self.reason))
        )

    @property
    def reason_name(self) -> str:
        return ABORT_REASON_NAMES.get(self.reason, f"reason {self.reason}")


@dataclass(frozen=True, slots=True)
class RawPDU:
    """Any PDU, unchecked, for fuzzing a peer: any type byte, reserved byte and declared length
    (``length=None`` = the true length of ``payload``). Never produced by the decoder."""

    pdu_type: int
    payload: bytes = b""
    reserved: int = 0
    length: int | None = None

    def encode(self) -> bytes:
        length = len(self.payload) if self.length is None else self.length
        return PDU_HEADER.pack(self.pdu_type, self.reserved, length) + self.payload


PDU: TypeAlias = (
    AAssociateRQ | AAssociateAC | AAssociateRJ | PDataTF | AReleaseRQ | AReleaseRP | AAbort
)


# ---------------------------------------------------------------------------------------
# decoding


def _decode_association(pdu_type: int, body: memoryview) -> AAssociateRQ | AAssociateAC:
    name = "A-ASSOCIATE-RQ" if pdu_type == PDUType.A_ASSOCIATE_RQ else "A-ASSOCIATE-AC"
    if len(body) < ASSOC_FIXED.size:
        raise InvalidPDUParameterValue(f"{name}: {len(body)} bytes, shorter than its fixed fields")
    version, _r, called, calling, _r2 = ASSOC_FIXED.unpack_from(body)
    app_context: str | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    user_info: UserInformation | None = None
    context_type = (
        ItemType.PRESENTATION_CONTEXT_RQ
        if pdu_type == PDUType.A_ASSOCIATE_RQ
        else ItemType.PRESENTATION_CONTEXT_AC
    )
    for item_type, item in iter_items(body[ASSOC_FIXED.size :], name):
        if item_type == ItemType.APPLICATION_CONTEXT:
            if app_context is not None:
                raise UnexpectedPDUParameter(f"{name}: more than one application context item")
            app_context = decode_uid(item)
        elif item_type == context_type:
            if pdu_type == PDUType.A_ASSOCIATE_RQ:
                rq_contexts.append(decode_context_rq(item))
            else:
                ac_contexts.append(decode_context_ac(item))
        elif item_type == ItemType.USER_INFORMATION:
            if user_info is not None:
                raise UnexpectedPDUParameter(f"{name}: more than one user information item")
            user_info = decode_user_information(item)
        elif item_type in KNOWN_ITEMS:
            raise UnexpectedPDUParameter(f"{name}: item 0x{item_type:02X} not allowed here")
        else:
            raise UnrecognizedPDUParameter(f"{name}: unknown item type 0x{item_type:02X}")
    if app_context is None:
        raise InvalidPDUParameterValue(f"{name}: no application context item")
    if pdu_type == PDUType.A_ASSOCIATE_RQ:
        return AAssociateRQ(
            decode_ae(called),
            decode_ae(calling),
            tuple(rq_contexts),
            user_info,
            app_context,
            version,
        )
    return AAssociateAC(
        decode_ae(called), decode_ae(calling), tuple(ac_contexts), user_info, app_context, version
    )


def _decode_pdata(body: memoryview) -> PDataTF:
    end = len(body)
    if end >= 6:
        length, context_id, control = PDV_HEADER.unpack_from(body)
        if length + 4 == end and length >= 2:
            # The common case: one PDV filling the PDU.
            return PDataTF((PresentationDataValue(context_id, control, body[6:]),))
    items: list[PresentationDataValue] = []
    pos = 0
    unpack = PDV_HEADER.unpack_from
    while pos < end:
        if end - pos < 6:
            raise InvalidPDUParameterValue("P-DATA-TF: truncated presentation data value item")
        length, context_id, control = unpack(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise InvalidPDUParameterValue(
                f"P-DATA-TF: PDV item length {length} does not fit the PDU"
            )
        items.append(PresentationDataValue(context_id, control, body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    if not items:
        raise InvalidPDUParameterValue("P-DATA-TF without a presentation data value item")
    return PDataTF(tuple(items))


def _decode_fixed4(pdu_type: int, body: memoryview) -> PDU:
    if len(body) != 4:
        raise InvalidPDUParameterValue(
            f"{PDUType(pdu_type).name}: PDU-length {len(body)}, expected 4"
        )
    if pdu_type == PDUType.A_RELEASE_RQ:
        return AReleaseRQ()
    if pdu_type == PDUType.A_RELEASE_RP:
        return AReleaseRP()
    if pdu_type == PDUType.A_ASSOCIATE_RJ:
        try:
            result, source = RejectResult(body[1]), RejectSource(body[2])
        except ValueError:
            raise InvalidPDUParameterValue(
                f"A-ASSOCIATE-RJ: result {body[1]} / source {body[2]} not defined"
            ) from None
        return AAssociateRJ(result, source, body[3])
    try:
        return AAbort(AbortSource(body[2]), AbortReason(body[3]))
    except ValueError:
        raise InvalidPDUParameterValue(
            f"A-ABORT: source {body[2]} / reason {body[3]} not defined"
        ) from None


def decode_pdu(data: bytes | bytearray | memoryview) -> PDU:
    """Decode exactly one whole PDU.

    Raises a :class:`~aiodimse.errors.PDUError` (carrying its A-ABORT reason) for anything
    that is not a well-formed PDU, and nothing else.
    """
    view = memoryview(data)
    if len(view) < 6:
        raise InvalidPDUParameterValue(f"{len(view)} bytes is shorter than a PDU header")
    pdu_type, _reserved, length = PDU_HEADER.unpack_from(view)
    if length != len(view) - 6:
        raise InvalidPDUParameterValue(
            f"PDU-length {length} does not match the {len(view) - 6} bytes that follow the header"
        )
    body = view[6:]
    try:
        if pdu_type == 0x04:  # P-DATA-TF, the hot path: plain int, no enum lookup
            return _decode_pdata(body)
        if pdu_type in (PDUType.A_ASSOCIATE_RQ, PDUType.A_ASSOCIATE_AC):
            return _decode_association(pdu_type, body)
        if pdu_type in (
            PDUType.A_ASSOCIATE_RJ,
            PDUType.A_RELEASE_RQ,
            PDUType.A_RELEASE_RP,
            PDUType.A_ABORT,
        ):
            return _decode_fixed4(pdu_type, body)
    except PDUError:
        raise
    except (struct.error, ValueError, IndexError, UnicodeError) as exc:  # pragma: no cover
        # Belt and braces: the parsers check lengths explicitly, but the contract is that
        # nothing but PDUError escapes from wire data.
        raise InvalidPDUParameterValue(f"malformed PDU 0x{pdu_type:02X}: {exc}") from None
    raise UnrecognizedPDU(f"unknown PDU type 0x{pdu_type:02X}")
