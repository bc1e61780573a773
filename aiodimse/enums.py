"""Code values of the DICOM Upper Layer protocol (PS3.8 9.3), named as the standard names them."""

from __future__ import annotations

from enum import IntEnum


class PDUType(IntEnum):
    """PS3.8 9.3.1: the PDU-type field of every PDU."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class ItemType(IntEnum):
    """PS3.8 9.3.2-9.3.3 and PS3.7 Annex D: item and sub-item types."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    SCP_SCU_ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


class RejectResult(IntEnum):
    """PS3.8 Table 9-21: A-ASSOCIATE-RJ Result."""

    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class RejectSource(IntEnum):
    """PS3.8 Table 9-21: A-ASSOCIATE-RJ Source."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


# PS3.8 Table 9-21: Reason/Diag., whose meaning depends on the Source.
REJECT_REASONS: dict[RejectSource, dict[int, str]] = {
    RejectSource.SERVICE_USER: {
        1: "no-reason-given",
        2: "application-context-name-not-supported",
        3: "calling-AE-title-not-recognized",
        7: "called-AE-title-not-recognized",
    },
    RejectSource.SERVICE_PROVIDER_ACSE: {
        1: "no-reason-given",
        2: "protocol-version-not-supported",
    },
    RejectSource.SERVICE_PROVIDER_PRESENTATION: {
        1: "temporary-congestion",
        2: "local-limit-exceeded",
    },
}

SOURCE_NAMES: dict[int, str] = {
    RejectSource.SERVICE_USER: "DICOM UL service-user",
    RejectSource.SERVICE_PROVIDER_ACSE: "DICOM UL service-provider (ACSE related function)",
    RejectSource.SERVICE_PROVIDER_PRESENTATION: (
        "DICOM UL service-provider (Presentation related function)"
    ),
}


def reject_reason_name(source: int, reason: int) -> str:
    """The PS3.8 Table 9-21 name of an A-ASSOCIATE-RJ reason, or 'reserved (N)'."""
    try:
        table = REJECT_REASONS[RejectSource(source)]
    except ValueError:
        return f"reserved ({reason})"
    return table.get(reason, f"reserved ({reason})")


class AbortSource(IntEnum):
    """PS3.8 Table 9-26: A-ABORT Source."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(IntEnum):
    """PS3.8 Table 9-26: A-ABORT Reason/Diag. (meaningful when the source is the provider)."""

    REASON_NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


ABORT_REASON_NAMES: dict[int, str] = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    3: "reserved",
    4: "unrecognized-PDU parameter",
    5: "unexpected-PDU parameter",
    6: "invalid-PDU-parameter value",
}


class ContextResult(IntEnum):
    """PS3.8 Table 9-18: Presentation Context (AC) Result/Reason."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class UserIdentityType(IntEnum):
    """PS3.7 Table D.3-14: User Identity Type."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5
