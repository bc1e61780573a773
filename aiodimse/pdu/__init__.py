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

from .fields import (
    APPLICATION_CONTEXT_NAME,
)
from .items import (
    AsyncOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    RawItem,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    UserItem,
)
from .pdus import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    RawPDU,
    decode_pdu,
)
from .reader import (
    PDUReader,
    encode_pdata_header,
    pdata_fragments,
    pdu_summary,
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
    "UserItem",
    "decode_pdu",
    "encode_pdata_header",
    "pdata_fragments",
    "pdu_summary",
]
