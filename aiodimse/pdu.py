"""The DICOM Upper Layer PDU codec (PS3.8 section 9.3), pure: bytes <-> immutable values.

Every PDU and item is a frozen dataclass with ``encode() -> bytes``; :func:`decode_pdu`
turns one whole PDU back into a value and raises only :class:`~aiodimse.errors.PDUError`
subclasses, each carrying the A-ABORT reason of PS3.8 Table 9-26. :class:`PDUReader` frames
a byte stream into PDUs and refuses oversize PDUs from their 6-byte header alone.

Values are not validated when constructed, so a deliberately wrong PDU (odd presentation
context IDs, nonsense roles) can be expressed; :class:`RawPDU` and :class:`RawItem` go
further and let lengths, reserved fields and types be anything at all.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from .enums import (
    ABORT_REASON_NAMES,
    AbortReason,
    AbortSource,
    ContextResult,
    ItemType,
    PDUType,
    RejectResult,
    RejectSource,
    UserIdentityType,
    reject_reason_name,
)
from .errors import (
    InvalidPDUParameterValue,
    PDUError,
    PDUTooLarge,
    UnexpectedPDUParameter,
    UnrecognizedPDU,
    UnrecognizedPDUParameter,
)

__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "PDU",
    "AAbort",
    "AAssociateAC",
    "AAssociateRJ",
    "AAssociateRQ",
    "AReleaseRP",
    "AReleaseRQ",
    "AsyncOperationsWindow",
    "ImplementationClassUID",
    "ImplementationVersionName",
    "MaximumLength",
    "PDUReader",
    "PDataTF",
    "PresentationContextAC",
    "PresentationContextRQ",
    "PresentationDataValue",
    "RawItem",
    "RawPDU",
    "RoleSelection",
    "SOPClassCommonExtendedNegotiation",
    "SOPClassExtendedNegotiation",
    "UserIdentityAC",
    "UserIdentityRQ",
    "UserInformation",
    "decode_pdu",
    "encode_pdata_header",
    "pdata_fragments",
    "pdu_summary",
]

#: PS3.7 Annex A.2.1: the only application context name DICOM defines.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

_HEADER = struct.Struct(">BBL")  # PDU-type, reserved, PDU-length (PS3.8 9.3.1)
_ITEM_HEADER = struct.Struct(">BBH")  # item-type, reserved, item-length
_ASSOC_FIXED = struct.Struct(
    ">HH16s16s32s"
)  # protocol version, reserved, called, calling, reserved
_PDV_HEADER = struct.Struct(">LBB")  # item-length, presentation-context-ID, message control header
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">L")
_PDATA_PDV_HEADER = struct.Struct(">BBLLBB")  # P-DATA-TF header + one PDV item header

#: Upper bound of a non-P-DATA PDU accepted by default (an A-ASSOCIATE-RQ with every storage
#: class and many transfer syntaxes is far below this).
DEFAULT_MAX_ASSOCIATION_PDU = 1 << 20


# ---------------------------------------------------------------------------------------
# small encoding helpers


def _ae(title: str) -> bytes:
    """An AE title field: 16 bytes, padded with spaces (PS3.8 9.3.2)."""
    raw = title.encode("ascii", "replace")
    if len(raw) > 16:
        raise ValueError(f"AE title {title!r} is longer than 16 characters")
    return raw.ljust(16, b" ")


def _decode_ae(raw: bytes) -> str:
    # PS3.8 9.3.2: leading and trailing spaces are not significant; trailing ones are padding.
    return raw.decode("latin-1").rstrip(" \x00")


def _uid_bytes(uid: str) -> bytes:
    return uid.encode("ascii", "replace")


def _decode_uid(raw: bytes | memoryview) -> str:
    # PS3.8 Annex F: UIDs in PDUs are not padded, but some implementations add a trailing NUL.
    return bytes(raw).decode("latin-1").rstrip("\x00 ")


_KNOWN_ITEMS = frozenset(int(t) for t in ItemType)


def _item(item_type: int, body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02X} body of {len(body)} bytes exceeds 65535")
    return _ITEM_HEADER.pack(item_type, 0, len(body)) + body


def _lv(value: bytes) -> bytes:
    """A 2-byte big-endian length followed by the value (role selection, extended negotiation)."""
    return _U16.pack(len(value)) + value


class _Cursor:
    """Reads length-prefixed fields from a buffer, raising PDUError rather than IndexError."""

    __slots__ = ("data", "end", "pos", "what")

    def __init__(self, data: bytes | memoryview, what: str, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise InvalidPDUParameterValue(
                f"{self.what}: needs {n} bytes at offset {self.pos}, "
                f"only {self.end - self.pos} left"
            )
        start = self.pos
        self.pos += n
        return memoryview(self.data)[start : self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        b = self.take(2)
        return (b[0] << 8) | b[1]

    def lv(self) -> memoryview:
        return self.take(self.u16())


def _iter_items(data: bytes | memoryview, what: str) -> Iterator[tuple[int, memoryview]]:
    """Split a variable field into (item-type, item body) pairs (PS3.8 9.3.2.x headers)."""
    cur = _Cursor(data, what)
    while cur.remaining():
        if cur.remaining() < 4:
            raise InvalidPDUParameterValue(f"{what}: {cur.remaining()} trailing bytes, not an item")
        item_type, _reserved, length = _ITEM_HEADER.unpack(cur.take(4))
        yield item_type, cur.take(length)


# ---------------------------------------------------------------------------------------
# user information sub-items (PS3.7 Annex D.3.3, PS3.8 Annex D)


@dataclass(frozen=True, slots=True)
class MaximumLength:
    """Maximum Length sub-item (0x51): the largest P-DATA-TF variable field accepted; 0 = any."""

    item_type: ClassVar[int] = ItemType.MAXIMUM_LENGTH
    max_length: int

    def encode(self) -> bytes:
        return _item(self.item_type, _U32.pack(self.max_length))


@dataclass(frozen=True, slots=True)
class ImplementationClassUID:
    """Implementation Class UID sub-item (0x52), PS3.7 D.3.3.2."""

    item_type: ClassVar[int] = ItemType.IMPLEMENTATION_CLASS_UID
    uid: str

    def encode(self) -> bytes:
        return _item(self.item_type, _uid_bytes(self.uid))


@dataclass(frozen=True, slots=True)
class ImplementationVersionName:
    """Implementation Version Name sub-item (0x55), 1-16 characters, PS3.7 D.3.3.2."""

    item_type: ClassVar[int] = ItemType.IMPLEMENTATION_VERSION_NAME
    name: str

    def encode(self) -> bytes:
        return _item(self.item_type, self.name.encode("ascii", "replace"))


@dataclass(frozen=True, slots=True)
class AsyncOperationsWindow:
    """Asynchronous Operations Window sub-item (0x53), PS3.7 D.3.3.3; 0 means unlimited."""

    item_type: ClassVar[int] = ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW
    max_operations_invoked: int
    max_operations_performed: int

    def encode(self) -> bytes:
        body = struct.pack(">HH", self.max_operations_invoked, self.max_operations_performed)
        return _item(self.item_type, body)


@dataclass(frozen=True, slots=True)
class RoleSelection:
    """SCP/SCU Role Selection sub-item (0x54), PS3.7 D.3.3.4.

    In a request the booleans say which roles the requestor proposes to play; in an accept
    they say which the acceptor grants.
    """

    item_type: ClassVar[int] = ItemType.SCP_SCU_ROLE_SELECTION
    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def encode(self) -> bytes:
        body = _lv(_uid_bytes(self.sop_class_uid)) + bytes((int(self.scu_role), int(self.scp_role)))
        return _item(self.item_type, body)


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiation:
    """SOP Class Extended Negotiation sub-item (0x56), PS3.7 D.3.3.5; the info is opaque."""

    item_type: ClassVar[int] = ItemType.SOP_CLASS_EXTENDED_NEGOTIATION
    sop_class_uid: str
    service_class_application_information: bytes

    def encode(self) -> bytes:
        body = _lv(_uid_bytes(self.sop_class_uid)) + self.service_class_application_information
        return _item(self.item_type, body)


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation sub-item (0x57), PS3.7 D.3.3.6 (request only)."""

    item_type: ClassVar[int] = ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION
    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()
    sub_item_version: int = 0

    def encode(self) -> bytes:
        related = b"".join(_lv(_uid_bytes(u)) for u in self.related_general_sop_class_uids)
        body = (
            _lv(_uid_bytes(self.sop_class_uid))
            + _lv(_uid_bytes(self.service_class_uid))
            + _lv(related)
        )
        if len(body) > 0xFFFF:
            raise ValueError("common extended negotiation sub-item too long")
        return _ITEM_HEADER.pack(self.item_type, self.sub_item_version, len(body)) + body


@dataclass(frozen=True, slots=True)
class UserIdentityRQ:
    """User Identity Negotiation sub-item, request (0x58), PS3.7 D.3.3.7.1."""

    item_type: ClassVar[int] = ItemType.USER_IDENTITY_RQ
    identity_type: int
    primary_field: bytes
    secondary_field: bytes = b""
    positive_response_requested: bool = False

    def encode(self) -> bytes:
        body = (
            bytes((self.identity_type, int(self.positive_response_requested)))
            + _lv(self.primary_field)
            + _lv(self.secondary_field)
        )
        return _item(self.item_type, body)

    @property
    def type_name(self) -> str:
        try:
            return UserIdentityType(self.identity_type).name.lower()
        except ValueError:
            return f"type {self.identity_type}"

    # Requestor-side constructors (PS3.7 Table D.3-14); ``positive_response`` asks the
    # acceptor to confirm, in its A-ASSOCIATE-AC, that it accepted the identity.

    @classmethod
    def username(
        cls, name: str, passcode: str | bytes | None = None, *, positive_response: bool = False
    ) -> UserIdentityRQ:
        """Type 1 (username, UTF-8), or type 2 when a ``passcode`` is given."""
        primary = _identity_field(name, "username")
        if passcode is None:
            return cls(UserIdentityType.USERNAME, primary, b"", positive_response)
        secondary = passcode.encode("utf-8") if isinstance(passcode, str) else bytes(passcode)
        if len(secondary) > 0xFFFF:
            raise ValueError("the passcode is longer than 65535 bytes")
        return cls(UserIdentityType.USERNAME_AND_PASSCODE, primary, secondary, positive_response)

    @classmethod
    def kerberos(cls, ticket: bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 3: a Kerberos service ticket (RFC 1510 encoding)."""
        primary = _identity_field(ticket, "Kerberos ticket")
        return cls(UserIdentityType.KERBEROS, primary, b"", positive_response)

    @classmethod
    def saml(cls, assertion: str | bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 4: a SAML assertion (XML)."""
        primary = _identity_field(assertion, "SAML assertion")
        return cls(UserIdentityType.SAML, primary, b"", positive_response)

    @classmethod
    def jwt(cls, token: str | bytes, *, positive_response: bool = False) -> UserIdentityRQ:
        """Type 5: a JSON Web Token in its compact (base64url) form (RFC 7519)."""
        return cls(UserIdentityType.JWT, _identity_field(token, "JWT"), b"", positive_response)


def _identity_field(value: str | bytes, what: str) -> bytes:
    """A primary field: UTF-8 for text, 1 to 65535 bytes (its length is 2 bytes, D.3.3.7.1)."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not raw:
        raise ValueError(f"the {what} is empty")
    if len(raw) > 0xFFFF:
        raise ValueError(f"the {what} is {len(raw)} bytes; a user identity field holds 65535")
    return raw


@dataclass(frozen=True, slots=True)
class UserIdentityAC:
    """User Identity Negotiation sub-item, accept (0x59), PS3.7 D.3.3.7.2."""

    item_type: ClassVar[int] = ItemType.USER_IDENTITY_AC
    server_response: bytes = b""

    def encode(self) -> bytes:
        return _item(self.item_type, _lv(self.server_response))


@dataclass(frozen=True, slots=True)
class RawItem:
    """Any item, unchecked: unknown user-information sub-items decode to this, and fuzzers can
    put wrong types, reserved values or lengths on the wire (``length=None`` = the true one)."""

    item_type: int
    data: bytes
    reserved: int = 0
    length: int | None = None

    def encode(self) -> bytes:
        length = len(self.data) if self.length is None else self.length
        return struct.pack(">BBH", self.item_type, self.reserved, length) + self.data


UserItem: TypeAlias = (
    MaximumLength
    | ImplementationClassUID
    | ImplementationVersionName
    | AsyncOperationsWindow
    | RoleSelection
    | SOPClassExtendedNegotiation
    | SOPClassCommonExtendedNegotiation
    | UserIdentityRQ
    | UserIdentityAC
    | RawItem
)


@dataclass(frozen=True, slots=True)
class UserInformation:
    """User Information item (0x50): an ordered tuple of sub-items, with typed accessors."""

    item_type: ClassVar[int] = ItemType.USER_INFORMATION
    items: tuple[UserItem, ...] = ()

    def encode(self) -> bytes:
        return _item(self.item_type, b"".join(i.encode() for i in self.items))

    def _first(self, cls: type) -> object | None:
        for i in self.items:
            if type(i) is cls:
                return i
        return None

    @property
    def max_length(self) -> int | None:
        item = self._first(MaximumLength)
        return item.max_length if isinstance(item, MaximumLength) else None

    @property
    def implementation_class_uid(self) -> str | None:
        item = self._first(ImplementationClassUID)
        return item.uid if isinstance(item, ImplementationClassUID) else None

    @property
    def implementation_version_name(self) -> str | None:
        item = self._first(ImplementationVersionName)
        return item.name if isinstance(item, ImplementationVersionName) else None

    @property
    def async_ops_window(self) -> AsyncOperationsWindow | None:
        item = self._first(AsyncOperationsWindow)
        return item if isinstance(item, AsyncOperationsWindow) else None

    @property
    def role_selections(self) -> tuple[RoleSelection, ...]:
        return tuple(i for i in self.items if isinstance(i, RoleSelection))

    @property
    def extended_negotiations(self) -> tuple[SOPClassExtendedNegotiation, ...]:
        return tuple(i for i in self.items if isinstance(i, SOPClassExtendedNegotiation))

    @property
    def common_extended_negotiations(self) -> tuple[SOPClassCommonExtendedNegotiation, ...]:
        return tuple(i for i in self.items if isinstance(i, SOPClassCommonExtendedNegotiation))

    @property
    def user_identity(self) -> UserIdentityRQ | None:
        item = self._first(UserIdentityRQ)
        return item if isinstance(item, UserIdentityRQ) else None

    @property
    def user_identity_response(self) -> UserIdentityAC | None:
        item = self._first(UserIdentityAC)
        return item if isinstance(item, UserIdentityAC) else None

    @property
    def unknown_items(self) -> tuple[RawItem, ...]:
        return tuple(i for i in self.items if isinstance(i, RawItem))


def _decode_user_item(item_type: int, body: memoryview, reserved: int) -> UserItem:
    what = f"user information sub-item 0x{item_type:02X}"
    cur = _Cursor(body, what)
    result: UserItem
    if item_type == ItemType.MAXIMUM_LENGTH:
        if len(body) != 4:
            raise InvalidPDUParameterValue(f"{what}: length {len(body)}, expected 4")
        result = MaximumLength(_U32.unpack(body)[0])
    elif item_type == ItemType.IMPLEMENTATION_CLASS_UID:
        result = ImplementationClassUID(_decode_uid(body))
    elif item_type == ItemType.IMPLEMENTATION_VERSION_NAME:
        result = ImplementationVersionName(bytes(body).decode("latin-1").rstrip(" \x00"))
    elif item_type == ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW:
        if len(body) != 4:
            raise InvalidPDUParameterValue(f"{what}: length {len(body)}, expected 4")
        invoked, performed = struct.unpack(">HH", body)
        result = AsyncOperationsWindow(invoked, performed)
    elif item_type == ItemType.SCP_SCU_ROLE_SELECTION:
        uid = _decode_uid(cur.lv())
        scu, scp = cur.u8(), cur.u8()
        if scu > 1 or scp > 1:
            raise InvalidPDUParameterValue(f"{what}: role values {scu}/{scp}, expected 0 or 1")
        result = RoleSelection(uid, bool(scu), bool(scp))
    elif item_type == ItemType.SOP_CLASS_EXTENDED_NEGOTIATION:
        uid = _decode_uid(cur.lv())
        result = SOPClassExtendedNegotiation(uid, bytes(cur.take(cur.remaining())))
    elif item_type == ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION:
        uid = _decode_uid(cur.lv())
        service = _decode_uid(cur.lv())
        related_cur = _Cursor(cur.lv(), what)
        related: list[str] = []
        while related_cur.remaining():
            related.append(_decode_uid(related_cur.lv()))
        result = SOPClassCommonExtendedNegotiation(uid, service, tuple(related), reserved)
    elif item_type == ItemType.USER_IDENTITY_RQ:
        id_type, positive = cur.u8(), cur.u8()
        primary = bytes(cur.lv())
        secondary = bytes(cur.lv())
        if positive > 1:
            raise InvalidPDUParameterValue(f"{what}: positive-response-requested {positive}")
        result = UserIdentityRQ(id_type, primary, secondary, bool(positive))
    elif item_type == ItemType.USER_IDENTITY_AC:
        result = UserIdentityAC(bytes(cur.lv()))
    else:
        # PS3.7 D.3.3: unknown sub-items are kept and ignored.
        return RawItem(item_type, bytes(body), reserved)
    if cur.remaining() and item_type not in (
        ItemType.MAXIMUM_LENGTH,
        ItemType.IMPLEMENTATION_CLASS_UID,
        ItemType.IMPLEMENTATION_VERSION_NAME,
        ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW,
    ):
        raise InvalidPDUParameterValue(f"{what}: {cur.remaining()} unexpected trailing bytes")
    return result


def _decode_user_information(body: memoryview) -> UserInformation:
    items: list[UserItem] = []
    cur = _Cursor(body, "user information item")
    while cur.remaining():
        if cur.remaining() < 4:
            raise InvalidPDUParameterValue("user information item: truncated sub-item header")
        item_type, reserved, length = _ITEM_HEADER.unpack(cur.take(4))
        items.append(_decode_user_item(item_type, cur.take(length), reserved))
    return UserInformation(tuple(items))


# ---------------------------------------------------------------------------------------
# presentation context items


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """Presentation Context item of a request (0x20): one abstract syntax, its transfer syntaxes."""

    item_type: ClassVar[int] = ItemType.PRESENTATION_CONTEXT_RQ
    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    #: Bytes 6-8 of the item. PS3.8 says send 00H and never test them; DCMTK sends FFH in
    #: byte 7. Kept so that a decoded PDU re-encodes to the same bytes; not compared.
    reserved: bytes = field(default=b"\x00\x00\x00", compare=False, repr=False)

    def encode(self) -> bytes:
        parts = [_item(ItemType.ABSTRACT_SYNTAX, _uid_bytes(self.abstract_syntax))]
        parts += [_item(ItemType.TRANSFER_SYNTAX, _uid_bytes(t)) for t in self.transfer_syntaxes]
        head = bytes((self.context_id,)) + (self.reserved + b"\x00\x00\x00")[:3]
        return _item(self.item_type, head + b"".join(parts))


@dataclass(frozen=True, slots=True)
class PresentationContextAC:
    """Presentation Context item of an accept (0x21): the result and the chosen transfer syntax.

    ``transfer_syntax`` is None when the sub-item is absent (allowed on a rejected context).
    """

    item_type: ClassVar[int] = ItemType.PRESENTATION_CONTEXT_AC
    context_id: int
    result: ContextResult
    transfer_syntax: str | None

    def encode(self) -> bytes:
        body = bytes((self.context_id, 0, int(self.result), 0))
        if self.transfer_syntax is not None:
            body += _item(ItemType.TRANSFER_SYNTAX, _uid_bytes(self.transfer_syntax))
        return _item(self.item_type, body)

    @property
    def accepted(self) -> bool:
        return self.result == ContextResult.ACCEPTANCE


def _decode_context_rq(body: memoryview) -> PresentationContextRQ:
    if len(body) < 4:
        raise InvalidPDUParameterValue("presentation context (RQ) item shorter than 4 bytes")
    context_id = body[0]
    abstract: str | None = None
    transfers: list[str] = []
    for sub_type, sub in _iter_items(body[4:], "presentation context (RQ) item"):
        if sub_type == ItemType.ABSTRACT_SYNTAX:
            if abstract is not None:
                raise UnexpectedPDUParameter(
                    f"presentation context {context_id}: more than one abstract syntax"
                )
            abstract = _decode_uid(sub)
        elif sub_type == ItemType.TRANSFER_SYNTAX:
            transfers.append(_decode_uid(sub))
        elif sub_type in _KNOWN_ITEMS:
            raise UnexpectedPDUParameter(
                f"presentation context {context_id}: item 0x{sub_type:02X} not allowed here"
            )
        else:
            raise UnrecognizedPDUParameter(
                f"presentation context {context_id}: unknown sub-item 0x{sub_type:02X}"
            )
    if abstract is None:
        raise InvalidPDUParameterValue(f"presentation context {context_id}: no abstract syntax")
    if not transfers:
        raise InvalidPDUParameterValue(f"presentation context {context_id}: no transfer syntax")
    return PresentationContextRQ(context_id, abstract, tuple(transfers), bytes(body[1:4]))


def _decode_context_ac(body: memoryview) -> PresentationContextAC:
    if len(body) < 4:
        raise InvalidPDUParameterValue("presentation context (AC) item shorter than 4 bytes")
    context_id, result_value = body[0], body[2]
    try:
        result = ContextResult(result_value)
    except ValueError:
        raise InvalidPDUParameterValue(
            f"presentation context {context_id}: result/reason {result_value} is not defined"
        ) from None
    transfer: str | None = None
    for sub_type, sub in _iter_items(body[4:], "presentation context (AC) item"):
        if sub_type != ItemType.TRANSFER_SYNTAX:
            cls = UnexpectedPDUParameter if sub_type in _KNOWN_ITEMS else (UnrecognizedPDUParameter)
            raise cls(f"presentation context {context_id}: sub-item 0x{sub_type:02X} in an accept")
        if transfer is not None:
            raise UnexpectedPDUParameter(
                f"presentation context {context_id}: more than one transfer syntax in an accept"
            )
        transfer = _decode_uid(sub)
    if transfer is None and result == ContextResult.ACCEPTANCE:
        raise InvalidPDUParameterValue(
            f"presentation context {context_id}: accepted without a transfer syntax"
        )
    return PresentationContextAC(context_id, result, transfer)


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
        _ASSOC_FIXED.pack(
            pdu.protocol_version, 0, _ae(pdu.called_ae_title), _ae(pdu.calling_ae_title), b""
        ),
        _item(ItemType.APPLICATION_CONTEXT, _uid_bytes(pdu.application_context_name)),
    ]
    parts += [c.encode() for c in contexts]
    if pdu.user_information is not None:
        parts.append(pdu.user_information.encode())
    body = b"".join(parts)
    return _HEADER.pack(pdu.pdu_type, 0, len(body)) + body


@dataclass(frozen=True, slots=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ PDU (0x03), PS3.8 9.3.4."""

    pdu_type: ClassVar[int] = PDUType.A_ASSOCIATE_RJ
    result: RejectResult
    source: RejectSource
    reason: int

    def encode(self) -> bytes:
        return _HEADER.pack(self.pdu_type, 0, 4) + bytes(
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
        return _PDV_HEADER.pack(len(self.data) + 2, self.context_id, self.control) + self.data


@dataclass(frozen=True, slots=True)
class PDataTF:
    """P-DATA-TF PDU (0x04), PS3.8 9.3.5: one or more PDV items."""

    pdu_type: ClassVar[int] = PDUType.P_DATA_TF
    items: tuple[PresentationDataValue, ...]

    def encode(self) -> bytes:
        parts: list[bytes | memoryview] = [b""]
        size = 0
        for item in self.items:
            parts.append(_PDV_HEADER.pack(len(item.data) + 2, item.context_id, item.control))
            parts.append(item.data)
            size += len(item.data) + 6
        parts[0] = _HEADER.pack(self.pdu_type, 0, size)
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
        return _HEADER.pack(self.pdu_type, 0, 4) + bytes((0, 0, int(self.source), int(self.reason)))

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
        return _HEADER.pack(self.pdu_type, self.reserved, length) + self.payload


PDU: TypeAlias = (
    AAssociateRQ | AAssociateAC | AAssociateRJ | PDataTF | AReleaseRQ | AReleaseRP | AAbort
)


# ---------------------------------------------------------------------------------------
# decoding


def _decode_association(pdu_type: int, body: memoryview) -> AAssociateRQ | AAssociateAC:
    name = "A-ASSOCIATE-RQ" if pdu_type == PDUType.A_ASSOCIATE_RQ else "A-ASSOCIATE-AC"
    if len(body) < _ASSOC_FIXED.size:
        raise InvalidPDUParameterValue(f"{name}: {len(body)} bytes, shorter than its fixed fields")
    version, _r, called, calling, _r2 = _ASSOC_FIXED.unpack_from(body)
    app_context: str | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    user_info: UserInformation | None = None
    context_type = (
        ItemType.PRESENTATION_CONTEXT_RQ
        if pdu_type == PDUType.A_ASSOCIATE_RQ
        else ItemType.PRESENTATION_CONTEXT_AC
    )
    for item_type, item in _iter_items(body[_ASSOC_FIXED.size :], name):
        if item_type == ItemType.APPLICATION_CONTEXT:
            if app_context is not None:
                raise UnexpectedPDUParameter(f"{name}: more than one application context item")
            app_context = _decode_uid(item)
        elif item_type == context_type:
            if pdu_type == PDUType.A_ASSOCIATE_RQ:
                rq_contexts.append(_decode_context_rq(item))
            else:
                ac_contexts.append(_decode_context_ac(item))
        elif item_type == ItemType.USER_INFORMATION:
            if user_info is not None:
                raise UnexpectedPDUParameter(f"{name}: more than one user information item")
            user_info = _decode_user_information(item)
        elif item_type in _KNOWN_ITEMS:
            raise UnexpectedPDUParameter(f"{name}: item 0x{item_type:02X} not allowed here")
        else:
            raise UnrecognizedPDUParameter(f"{name}: unknown item type 0x{item_type:02X}")
    if app_context is None:
        raise InvalidPDUParameterValue(f"{name}: no application context item")
    if pdu_type == PDUType.A_ASSOCIATE_RQ:
        return AAssociateRQ(
            _decode_ae(called),
            _decode_ae(calling),
            tuple(rq_contexts),
            user_info,
            app_context,
            version,
        )
    return AAssociateAC(
        _decode_ae(called), _decode_ae(calling), tuple(ac_contexts), user_info, app_context, version
    )


def _decode_pdata(body: memoryview) -> PDataTF:
    end = len(body)
    if end >= 6:
        length, context_id, control = _PDV_HEADER.unpack_from(body)
        if length + 4 == end and length >= 2:
            # The common case: one PDV filling the PDU.
            return PDataTF((PresentationDataValue(context_id, control, body[6:]),))
    items: list[PresentationDataValue] = []
    pos = 0
    unpack = _PDV_HEADER.unpack_from
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
    pdu_type, _reserved, length = _HEADER.unpack_from(view)
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


# ---------------------------------------------------------------------------------------
# stream framing


class PDUReader:
    """Frames a byte stream into whole PDUs, whatever the chunk sizes fed in.

    ``max_pdata_length`` bounds the PDU-length of a P-DATA-TF (our advertised Maximum
    Length, PS3.8 Annex D.1; 0 = fall back to ``max_other_length``) and
    ``max_other_length`` that of every other PDU. Both are checked from the 6-byte header,
    *before* the body is buffered, so a peer cannot make us allocate what it only claims
    to send.
    """

    __slots__ = ("_chunks", "_offset", "_size", "max_other_length", "max_pdata_length")

    def __init__(
        self, max_pdata_length: int = 0, max_other_length: int = DEFAULT_MAX_ASSOCIATION_PDU
    ) -> None:
        # Received chunks are kept as they came (no copy into a growing buffer): a PDU that
        # lies within one chunk is returned as a view of it, one that spans chunks is
        # joined once.
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already returned
        self._size = 0  # bytes received and not yet returned
        self.max_pdata_length = max_pdata_length
        self.max_other_length = max_other_length

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if data:
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self._size += len(data)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as PDUs."""
        return self._size

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == PDUType.P_DATA_TF and self.max_pdata_length:
            return self.max_pdata_length
        return self.max_other_length

    def _take(self, n: int) -> bytes | memoryview:
        """Remove and return the next ``n`` buffered bytes (``n <= self._size``)."""
        chunks = self._chunks
        first = chunks[0]
        off = self._offset
        self._size -= n
        if len(first) - off >= n:
            if off == 0 and len(first) == n:
                chunks.popleft()
                return first
            end = off + n
            if end == len(first):
                chunks.popleft()
                self._offset = 0
            else:
                self._offset = end
            return memoryview(first)[off:end]
        parts: list[bytes | memoryview] = []
        while n:
            chunk = chunks[0]
            avail = len(chunk) - off
            if avail <= n:
                parts.append(memoryview(chunk)[off:] if off else chunk)
                chunks.popleft()
                n -= avail
                off = 0
            else:
                parts.append(memoryview(chunk)[off : off + n])
                off += n
                n = 0
        self._offset = off
        return b"".join(parts)

    def _header(self) -> tuple[int, int]:
        first = self._chunks[0]
        if len(first) - self._offset >= 6:
            pdu_type, _reserved, length = _HEADER.unpack_from(first, self._offset)
        else:
            head = bytearray()
            off = self._offset
            for chunk in self._chunks:
                head += chunk[off : off + 6 - len(head)]
                off = 0
                if len(head) >= 6:
                    break
            pdu_type, _reserved, length = _HEADER.unpack(head)
        return pdu_type, length

    def next_raw(self) -> bytes | memoryview | None:
        """The next whole PDU (header included), or None if more bytes are needed.

        Raises PDUTooLarge as soon as a header declares more than the limit.
        """
        size = self._size
        if size < 6:
            return None
        first = self._chunks[0]
        off = self._offset
        if len(first) - off >= 6:
            pdu_type, _reserved, length = _HEADER.unpack_from(first, off)
        else:
            pdu_type, length = self._header()
        if pdu_type == 0x04 and self.max_pdata_length:
            limit = self.max_pdata_length
        else:
            limit = self.max_other_length
        if length > limit:
            raise PDUTooLarge(
                f"PDU 0x{pdu_type:02X} declares {length} bytes, more than the limit of {limit}"
            )
        end = off + 6 + length
        if size < end - off:
            return None
        if end <= len(first):
            # The common case: the whole PDU lies in the first chunk.
            self._size = size - (end - off)
            if end == len(first):
                self._chunks.popleft()
                self._offset = 0
                return first if off == 0 else memoryview(first)[off:]
            self._offset = end
            return memoryview(first)[off:end]
        return self._take(6 + length)

    def next_pdu(self) -> PDU | None:
        """The next whole decoded PDU, or None if more bytes are needed."""
        raw = self.next_raw()
        return None if raw is None else decode_pdu(raw)

    def __iter__(self) -> Iterator[PDU]:
        while (pdu := self.next_pdu()) is not None:
            yield pdu


# ---------------------------------------------------------------------------------------
# fast P-DATA encoding for the send path


def encode_pdata_header(context_id: int, control: int, data_length: int) -> bytes:
    """The 12 bytes that precede one PDV's data when a P-DATA-TF carries exactly one PDV."""
    return _PDATA_PDV_HEADER.pack(
        PDUType.P_DATA_TF, 0, data_length + 6, data_length + 2, context_id, control
    )


def pdata_fragments(
    context_id: int,
    is_command: bool,
    data: bytes | memoryview,
    max_pdu_length: int,
    *,
    last: bool = True,
) -> Iterator[bytes | memoryview]:
    """Fragment a command or data set into P-DATA-TF PDUs, yielded as buffers to write.

    Each PDU carries one PDV whose P-DATA-TF variable field never exceeds ``max_pdu_length``
    (the peer's Maximum Length; 0 = unlimited). The final fragment has the last bit set
    (PS3.8 Annex E.2) unless ``last`` is False, which lets a caller stream a large data set
    in pieces (each piece but the final one should then be a multiple of
    ``max_pdu_length - 6`` bytes so that no PDU is under-filled).
    """
    base = 0x01 if is_command else 0x00
    view = data if isinstance(data, memoryview) else memoryview(data)
    total = len(view)
    if max_pdu_length:
        room = max_pdu_length - 6
        if room < 1 and total:
            raise ValueError(f"maximum PDU length {max_pdu_length} leaves no room for data")
        if room > 1:
            room &= ~1  # even-sized fragments: some peers refuse odd-length ones
    else:
        room = total
    if total <= room:
        yield encode_pdata_header(context_id, base | (0x02 if last else 0), total)
        if total:
            yield view
        return
    pos = 0
    while pos < total:
        end = min(pos + room, total)
        flag = 0x02 if last and end == total else 0
        yield encode_pdata_header(context_id, base | flag, end - pos)
        yield view[pos:end]
        pos = end


def pdu_summary(pdu: PDU) -> str:
    """A one-line human description of a PDU for logs."""
    if isinstance(pdu, PDataTF):
        parts = [
            f"ctx {i.context_id} {'cmd' if i.is_command else 'data'}"
            f"{' last' if i.is_last else ''} {len(i.data)}B"
            for i in pdu.items
        ]
        return "P-DATA-TF [" + ", ".join(parts) + "]"
    if isinstance(pdu, AAssociateRJ):
        return f"A-ASSOCIATE-RJ {pdu.result.name} {pdu.source.name} {pdu.reason_name}"
    if isinstance(pdu, AAbort):
        return f"A-ABORT {pdu.source.name} {pdu.reason_name}"
    return PDUType(pdu.pdu_type).name.replace("_", "-")
