"""User information sub-items (PS3.7 D.3.3, PS3.8 Annex D) and presentation context items."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from ..enums import (
    ContextResult,
    ItemType,
    UserIdentityType,
)
from ..errors import (
    InvalidPDUParameterValue,
    UnexpectedPDUParameter,
    UnrecognizedPDUParameter,
)
from .fields import (
    ITEM_HEADER,
    KNOWN_ITEMS,
    U32,
    Cursor,
    decode_uid,
    encode_item,
    iter_items,
    length_value,
    uid_bytes,
)

# ---------------------------------------------------------------------------------------
# user information sub-items (PS3.7 Annex D.3.3, PS3.8 Annex D)


@dataclass(frozen=True, slots=True)
class MaximumLength:
    """Maximum Length sub-item (0x51): the largest P-DATA-TF variable field accepted; 0 = any."""

    item_type: ClassVar[int] = ItemType.MAXIMUM_LENGTH
    max_length: int

    def encode(self) -> bytes:
        return encode_item(self.item_type, U32.pack(self.max_length))


@dataclass(frozen=True, slots=True)
class ImplementationClassUID:
    """Implementation Class UID sub-item (0x52), PS3.7 D.3.3.2."""

    item_type: ClassVar[int] = ItemType.IMPLEMENTATION_CLASS_UID
    uid: str

    def encode(self) -> bytes:
        return encode_item(self.item_type, uid_bytes(self.uid))


@dataclass(frozen=True, slots=True)
class ImplementationVersionName:
    """Implementation Version Name sub-item (0x55), 1-16 characters, PS3.7 D.3.3.2."""

    item_type: ClassVar[int] = ItemType.IMPLEMENTATION_VERSION_NAME
    name: str

    def encode(self) -> bytes:
        return encode_item(self.item_type, self.name.encode("ascii", "replace"))


@dataclass(frozen=True, slots=True)
class AsyncOperationsWindow:
    """Asynchronous Operations Window sub-item (0x53), PS3.7 D.3.3.3; 0 means unlimited."""

    item_type: ClassVar[int] = ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW
    max_operations_invoked: int
    max_operations_performed: int

    def encode(self) -> bytes:
        body = struct.pack(">HH", self.max_operations_invoked, self.max_operations_performed)
        return encode_item(self.item_type, body)


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
        body = length_value(uid_bytes(self.sop_class_uid)) + bytes(
            (int(self.scu_role), int(self.scp_role))
        )
        return encode_item(self.item_type, body)


@dataclass(frozen=True, slots=True)
class SOPClassExtendedNegotiation:
    """SOP Class Extended Negotiation sub-item (0x56), PS3.7 D.3.3.5; the info is opaque."""

    item_type: ClassVar[int] = ItemType.SOP_CLASS_EXTENDED_NEGOTIATION
    sop_class_uid: str
    service_class_application_information: bytes

    def encode(self) -> bytes:
        body = (
            length_value(uid_bytes(self.sop_class_uid)) + self.service_class_application_information
        )
        return encode_item(self.item_type, body)


@dataclass(frozen=True, slots=True)
class SOPClassCommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation sub-item (0x57), PS3.7 D.3.3.6 (request only)."""

    item_type: ClassVar[int] = ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION
    sop_class_uid: str
    service_class_uid: str
    related_general_sop_class_uids: tuple[str, ...] = ()
    sub_item_version: int = 0

    def encode(self) -> bytes:
        related = b"".join(length_value(uid_bytes(u)) for u in self.related_general_sop_class_uids)
        body = (
            length_value(uid_bytes(self.sop_class_uid))
            + length_value(uid_bytes(self.service_class_uid))
            + length_value(related)
        )
        if len(body) > 0xFFFF:
            raise ValueError("common extended negotiation sub-item too long")
        return ITEM_HEADER.pack(self.item_type, self.sub_item_version, len(body)) + body


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
            + length_value(self.primary_field)
            + length_value(self.secondary_field)
        )
        return encode_item(self.item_type, body)

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
        return encode_item(self.item_type, length_value(self.server_response))


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
        return encode_item(self.item_type, b"".join(i.encode() for i in self.items))

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
    cur = Cursor(body, what)
    result: UserItem
    if item_type == ItemType.MAXIMUM_LENGTH:
        if len(body) != 4:
            raise InvalidPDUParameterValue(f"{what}: length {len(body)}, expected 4")
        result = MaximumLength(U32.unpack(body)[0])
    elif item_type == ItemType.IMPLEMENTATION_CLASS_UID:
        result = ImplementationClassUID(decode_uid(body))
    elif item_type == ItemType.IMPLEMENTATION_VERSION_NAME:
        result = ImplementationVersionName(bytes(body).decode("latin-1").rstrip(" \x00"))
    elif item_type == ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW:
        if len(body) != 4:
            raise InvalidPDUParameterValue(f"{what}: length {len(body)}, expected 4")
        invoked, performed = struct.unpack(">HH", body)
        result = AsyncOperationsWindow(invoked, performed)
    elif item_type == ItemType.SCP_SCU_ROLE_SELECTION:
        uid = decode_uid(cur.lv())
        scu, scp = cur.u8(), cur.u8()
        if scu > 1 or scp > 1:
            raise InvalidPDUParameterValue(f"{what}: role values {scu}/{scp}, expected 0 or 1")
        result = RoleSelection(uid, bool(scu), bool(scp))
    elif item_type == ItemType.SOP_CLASS_EXTENDED_NEGOTIATION:
        uid = decode_uid(cur.lv())
        result = SOPClassExtendedNegotiation(uid, bytes(cur.take(cur.remaining())))
    elif item_type == ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION:
        uid = decode_uid(cur.lv())
        service = decode_uid(cur.lv())
        related_cur = Cursor(cur.lv(), what)
        related: list[str] = []
        while related_cur.remaining():
            related.append(decode_uid(related_cur.lv()))
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


def decode_user_information(body: memoryview) -> UserInformation:
    items: list[UserItem] = []
    cur = Cursor(body, "user information item")
    while cur.remaining():
        if cur.remaining() < 4:
            raise InvalidPDUParameterValue("user information item: truncated sub-item header")
        item_type, reserved, length = ITEM_HEADER.unpack(cur.take(4))
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
        parts = [encode_item(ItemType.ABSTRACT_SYNTAX, uid_bytes(self.abstract_syntax))]
        parts += [
            encode_item(ItemType.TRANSFER_SYNTAX, uid_bytes(t)) for t in self.transfer_syntaxes
        ]
        head = bytes((self.context_id,)) + (self.reserved + b"\x00\x00\x00")[:3]
        return encode_item(self.item_type, head + b"".join(parts))


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
            body += encode_item(ItemType.TRANSFER_SYNTAX, uid_bytes(self.transfer_syntax))
        return encode_item(self.item_type, body)

    @property
    def accepted(self) -> bool:
        return self.result == ContextResult.ACCEPTANCE


def decode_context_rq(body: memoryview) -> PresentationContextRQ:
    if len(body) < 4:
        raise InvalidPDUParameterValue("presentation context (RQ) item shorter than 4 bytes")
    context_id = body[0]
    abstract: str | None = None
    transfers: list[str] = []
    for sub_type, sub in iter_items(body[4:], "presentation context (RQ) item"):
        if sub_type == ItemType.ABSTRACT_SYNTAX:
            if abstract is not None:
                raise UnexpectedPDUParameter(
                    f"presentation context {context_id}: more than one abstract syntax"
                )
            abstract = decode_uid(sub)
        elif sub_type == ItemType.TRANSFER_SYNTAX:
            transfers.append(decode_uid(sub))
        elif sub_type in KNOWN_ITEMS:
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


def decode_context_ac(body: memoryview) -> PresentationContextAC:
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
    for sub_type, sub in iter_items(body[4:], "presentation context (AC) item"):
        if sub_type != ItemType.TRANSFER_SYNTAX:
            cls = UnexpectedPDUParameter if sub_type in KNOWN_ITEMS else (UnrecognizedPDUParameter)
            raise cls(f"presentation context {context_id}: sub-item 0x{sub_type:02X} in an accept")
        if transfer is not None:
            raise UnexpectedPDUParameter(
                f"presentation context {context_id}: more than one transfer syntax in an accept"
            )
        transfer = decode_uid(sub)
    if transfer is None and result == ContextResult.ACCEPTANCE:
        raise InvalidPDUParameterValue(
            f"presentation context {context_id}: accepted without a transfer syntax"
        )
    return PresentationContextAC(context_id, result, transfer)
