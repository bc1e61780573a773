"""The project's exceptions.

Every error that crosses the public API is an :class:`AiodimseError`. Errors raised while
decoding wire data carry the A-ABORT reason (PS3.8 Table 9-26) that the association sends
when it meets them.
"""

from __future__ import annotations

from .dimse.status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, StatusCategory, status_info
from .enums import (
    ABORT_REASON_NAMES,
    SOURCE_NAMES,
    AbortReason,
    AbortSource,
    RejectResult,
    reject_reason_name,
)


class AiodimseError(Exception):
    """Base class of every error aiodimse raises on purpose."""


# -- wire decoding -------------------------------------------------------------------


class PDUError(AiodimseError):
    """Bytes that are not a valid PDU. ``abort_reason`` is what the A-ABORT says (PS3.8 9.3.8)."""

    abort_reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE

    def __init__(self, message: str, abort_reason: AbortReason | None = None) -> None:
        super().__init__(message)
        if abort_reason is not None:
            self.abort_reason = abort_reason


class UnrecognizedPDU(PDUError):
    """A PDU type that PS3.8 does not define."""

    abort_reason = AbortReason.UNRECOGNIZED_PDU


class UnexpectedPDU(PDUError):
    """A well-formed PDU arriving where the protocol does not allow it."""

    abort_reason = AbortReason.UNEXPECTED_PDU


class UnrecognizedPDUParameter(PDUError):
    """An item type that is not known in its position."""

    abort_reason = AbortReason.UNRECOGNIZED_PDU_PARAMETER


class UnexpectedPDUParameter(PDUError):
    """A known item in a place where it must not be (or repeated where it must be unique)."""

    abort_reason = AbortReason.UNEXPECTED_PDU_PARAMETER


class InvalidPDUParameterValue(PDUError):
    """Lengths, fields or values that break the PDU's structure."""

    abort_reason = AbortReason.INVALID_PDU_PARAMETER_VALUE


class PDUTooLarge(InvalidPDUParameterValue):
    """A PDU whose declared length exceeds the negotiated/configured maximum."""


class DIMSEError(AiodimseError):
    """A malformed DIMSE message (command set, PDV sequence). Leads to an A-ABORT."""

    abort_reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE

    def __init__(self, message: str, abort_reason: AbortReason | None = None) -> None:
        super().__init__(message)
        if abort_reason is not None:
            self.abort_reason = abort_reason


# -- associations ----------------------------------------------------------------------


class AssociationError(AiodimseError):
    """The association could not be used (refused, aborted, lost, timed out)."""


class AssociationRejected(AssociationError):
    """The peer answered A-ASSOCIATE-RJ; the message says who refused and why (PS3.8 9.3.4)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        self.result = result
        self.source = source
        self.reason = reason
        try:
            result_name = RejectResult(result).name.lower().replace("_", "-")
        except ValueError:
            result_name = f"result {result}"
        source_name = SOURCE_NAMES.get(source, f"source {source}")
        super().__init__(
            f"association rejected ({result_name}) by the {source_name}: "
            f"{reject_reason_name(source, reason)}"
        )

    @property
    def reason_name(self) -> str:
        return reject_reason_name(self.source, self.reason)


class AssociationAborted(AssociationError):
    """The association ended by A-ABORT (sent by the peer, or by us after a protocol error)."""

    def __init__(self, source: int, reason: int, detail: str = "", local: bool = False) -> None:
        self.source = source
        self.reason = reason
        self.local = local
        if source == AbortSource.SERVICE_PROVIDER:
            why = f"service-provider: {ABORT_REASON_NAMES.get(reason, f'reason {reason}')}"
        elif source == AbortSource.SERVICE_USER:
            why = "service-user"
        else:
            why = f"source {source}"
        who = "we aborted the association" if local else "association aborted by the peer"
        msg = f"{who} ({why})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class ConnectionLost(AssociationError):
    """The transport connection closed without a release or an abort."""


class AssociationTimeout(AssociationError, TimeoutError):
    """A configured timeout (connect, ARTIM, DIMSE, idle) expired."""


class NegotiationError(AssociationError):
    """The association was accepted but lacks what an operation needs (context, role)."""


# -- DIMSE operations ------------------------------------------------------------------


class StatusError(AiodimseError):
    """A DIMSE operation ended with a failure (or cancel) status; carries its PS3.7 name.

    Handlers raise it too, to answer a request with a specific status:
    ``raise StatusError(0xA700, detail="disk full")``.
    """

    def __init__(
        self, status: int, name: str | None = None, detail: str = "", service: str | None = None
    ) -> None:
        if name is None:
            name = status_info(status, service).name
        self.status = status
        self.status_name = name
        self.detail = detail
        self.service = service
        msg = f"{service + ' ' if service else ''}status 0x{status:04X} ({name})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class IncompleteRetrieval(StatusError):
    """A C-GET or C-MOVE whose final status is not a failure, but that did not bring
    everything: some sub-operations failed, or (C-MOVE into a receiver) instances the SCP
    reported completed never arrived. ``result`` is the RetrieveResult."""

    result: object = None


def store_error_status(exc: BaseException) -> int:
    """The C-STORE status for a local failure to store an instance (PS3.4 B.2.3): A700
    (Refused: out of resources; the sender may retry) when we ran out of something, C000
    (Error: cannot understand; a retry cannot help) when the data set itself is the
    problem. Any OSError (no file descriptor, disk full, permissions) is ours: A700."""
    if isinstance(exc, StatusError):
        return exc.status
    if isinstance(exc, (OSError, MemoryError)):
        return OUT_OF_RESOURCES
    return CANNOT_UNDERSTAND


def check_status(code: int, service: str | None = None, detail: str = "") -> None:
    """Raise :class:`StatusError` when ``code`` is a failure or a cancel."""
    info = status_info(code, service)
    if info.category in (StatusCategory.FAILURE, StatusCategory.CANCEL):
        raise StatusError(code, info.name, detail, service=service)


def check_ae_title(value: str, what: str = "AE title") -> str:
    """``value`` if it can be an AE title (PS3.5 6.2 AE: 1 to 16 characters of the default
    repertoire, no backslash, not only spaces); ValueError naming ``what`` otherwise."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 16
        or "\\" in value
        or not value.isascii()
        or not value.isprintable()
    ):
        raise ValueError(f"{what} {value!r} must be 1 to 16 printable ASCII characters, no '\\'")
    return value


class TransferSyntaxError(AiodimseError):
    """A dataset cannot be sent in any accepted transfer syntax."""
