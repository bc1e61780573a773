"""Bytes for the hostile SCP: A-ASSOCIATE answers (well formed or broken on purpose),
DIMSE responses and the small data sets that go with them.

Everything here is pure: values in, bytes out. What is broken, and how, is chosen by the
caller (:mod:`aiodimse.fuzz.hostile_case`); these functions only say it on the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..dimse.commands import Message, encode_command
from ..enums import ContextResult, ItemType
from ..pdu import (
    AAssociateAC,
    AAssociateRQ,
    AsyncOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    RoleSelection,
    UserInformation,
    UserItem,
    pdata_fragments,
)
from ..uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN

__all__ = [
    "HOSTILE_CLASS_UID",
    "UNKNOWN_TRANSFER_SYNTAX",
    "build_ac",
    "choose_syntax",
    "encode_identifier",
    "message_pdus",
    "overrun_first_context",
    "padded_command",
    "short_max_length_item",
    "strip_application_context",
]

#: Implementation Class UID of the hostile SCP (PS3.7 D.3.3.2), a 2.25 UUID-derived UID.
HOSTILE_CLASS_UID = "2.25.204986611946423913712385262617935601721"
#: A well-formed UID that names no transfer syntax: what an AC "accepts" a context with when
#: it answers with a syntax the requestor never proposed (PS3.8 9.3.3.2).
UNKNOWN_TRANSFER_SYNTAX = "1.2.826.0.1.3680043.10.1138.99"

_PDU_HEADER = struct.Struct(">BBL")
_ITEM_HEADER = struct.Struct(">BBH")
# PS3.8 9.3.3: PDU header (6) + protocol version, reserved, AE titles, reserved (68).
_AC_FIXED_END = 6 + 68


def choose_syntax(proposed: Sequence[str]) -> str:
    """The transfer syntax a plain acceptor picks: implicit VR LE (every SCP must support it,
    PS3.5 10.1), then explicit VR LE, else the first proposed."""
    for ts in (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN):
        if ts in proposed:
            return ts
    return proposed[0] if proposed else IMPLICIT_VR_LITTLE_ENDIAN


def build_ac(
    rq: AAssociateRQ,
    *,
    max_pdu: int,
    contexts: Sequence[PresentationContextAC] | None = None,
    roles: Sequence[RoleSelection] | None = None,
    async_window: tuple[int, int] | None = None,
) -> AAssociateAC:
    """An A-ASSOCIATE-AC for ``rq``: every context accepted in :func:`choose_syntax`, each
    proposed role granted as proposed (PS3.7 D.3.3.4), unless ``contexts``/``roles`` say
    otherwise."""
    if contexts is None:
        contexts = [
            PresentationContextAC(
                pc.context_id, ContextResult.ACCEPTANCE, choose_syntax(pc.transfer_syntaxes)
            )
            for pc in rq.presentation_contexts
        ]
    if roles is None:
        proposed = rq.user_information.role_selections if rq.user_information else ()
        roles = [RoleSelection(r.sop_class_uid, r.scu_role, r.scp_role) for r in proposed]
    items: list[UserItem] = [
        MaximumLength(max_pdu),
        ImplementationClassUID(HOSTILE_CLASS_UID),
    ]
    if async_window is not None:
        items.append(AsyncOperationsWindow(*async_window))
    items.extend(roles)
    items.append(ImplementationVersionName("HOSTILE"))
    return AAssociateAC(
        rq.called_ae_title,
        rq.calling_ae_title,
        tuple(contexts),
        UserInformation(tuple(items)),
    )


def strip_application_context(ac: bytes) -> bytes:
    """``ac`` without its Application Context item (mandatory, PS3.8 9.3.3.2)."""
    item_type, _r, length = _ITEM_HEADER.unpack_from(ac, _AC_FIXED_END)
    if item_type != ItemType.APPLICATION_CONTEXT:
        raise ValueError("the first item of this A-ASSOCIATE-AC is not the application context")
    body = ac[6:_AC_FIXED_END] + ac[_AC_FIXED_END + 4 + length :]
    return _PDU_HEADER.pack(ac[0], 0, len(body)) + body


def overrun_first_context(ac: bytes, extra: int) -> bytes:
    """``ac`` with its first presentation context item claiming ``extra`` more bytes than
    it has, so that it runs past the end of the PDU (PS3.8 9.3.3.3 item-length)."""
    pos = _AC_FIXED_END
    while pos + 4 <= len(ac):
        item_type, _r, length = _ITEM_HEADER.unpack_from(ac, pos)
        if item_type == ItemType.PRESENTATION_CONTEXT_AC:
            new = min(length + extra, 0xFFFF)
            return ac[:pos] + _ITEM_HEADER.pack(item_type, 0, new) + ac[pos + 4 :]
        pos += 4 + length
    raise ValueError("no presentation context item in this A-ASSOCIATE-AC")


def short_max_length_item(ac: bytes) -> bytes:
    """``ac`` with its Maximum Length sub-item declaring 2 bytes instead of 4 (PS3.8 D.1),
    the sub-item and user information lengths kept consistent around it."""
    marker = bytes((ItemType.MAXIMUM_LENGTH, 0, 0, 4))
    pos = ac.find(marker)
    if pos < 0:
        raise ValueError("no maximum length sub-item in this A-ASSOCIATE-AC")
    fixed = ac[:pos] + bytes((ItemType.MAXIMUM_LENGTH, 0, 0, 2)) + ac[pos + 4 : pos + 6]
    rest = ac[pos + 8 :]
    out = bytearray(fixed + rest)
    # The user information item (0x50) that holds it is 2 bytes shorter, and so is the PDU.
    ui = out.rfind(bytes((ItemType.USER_INFORMATION, 0)), _AC_FIXED_END, pos)
    if ui >= 0:
        (ui_len,) = struct.unpack_from(">H", out, ui + 2)
        struct.pack_into(">H", out, ui + 2, ui_len - 2)
    struct.pack_into(">L", out, 2, len(out) - 6)
    return bytes(out)


# -- DIMSE -----------------------------------------------------------------------------

_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UT", b"UC", b"UR"})


def _element(tag: int, vr: bytes, value: bytes, explicit: bool) -> bytes:
    if len(value) & 1:
        value += b"\x00" if vr == b"UI" else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if not explicit:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def encode_identifier(
    transfer_syntax: str, elements: Sequence[tuple[int, str, str]], *, pad_to: int = 0
) -> bytes:
    """A small data set (elements as (tag, VR, text), ascending) in implicit or explicit VR
    little endian; ``pad_to`` adds a Patient Comments (0010,4000) LT value to reach that size."""
    explicit = transfer_syntax != IMPLICIT_VR_LITTLE_ENDIAN
    out = b"".join(_element(t, vr.encode(), v.encode("ascii"), explicit) for t, vr, v in elements)
    if pad_to > len(out):
        tail = [e for e in elements if e[0] > 0x00104000]
        head = [e for e in elements if e[0] < 0x00104000]
        filler = max(pad_to - len(out), 2)
        out = (
            b"".join(_element(t, vr.encode(), v.encode("ascii"), explicit) for t, vr, v in head)
            + _element(0x00104000, b"LT", b"X" * filler, explicit)
            + b"".join(_element(t, vr.encode(), v.encode("ascii"), explicit) for t, vr, v in tail)
        )
    return out


def padded_command(msg: Message, size: int) -> bytes:
    """The command set of ``msg`` grown to about ``size`` bytes by a trailing group 0000
    element no DIMSE message defines (0000,7FF0) - receivers skip unknown command
    elements - with the Command Group Length (PS3.7 E.1) kept true."""
    cmd = encode_command(msg)
    body = cmd[12:]
    filler = max(size - len(cmd) - 8, 2) & ~1
    body += struct.pack("<HHI", 0, 0x7FF0, filler) + b"\x00" * filler
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def message_pdus(
    context_id: int, command: bytes, dataset: bytes | None, max_pdu: int
) -> list[bytes]:
    """One DIMSE message as P-DATA-TF PDUs that respect ``max_pdu`` (the peer's Maximum
    Length, 0 = none; a limit too small for any fragment is treated as 16)."""
    limit = 0 if max_pdu == 0 else max(max_pdu, 16)
    out = [bytes(b) for b in pdata_fragments(context_id, True, command, limit)]
    if dataset is not None:
        out += [bytes(b) for b in pdata_fragments(context_id, False, dataset, limit)]
    return out
