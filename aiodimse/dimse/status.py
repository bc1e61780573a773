"""DIMSE status codes (PS3.7 Annex C, PS3.4 B.2.3 and C.4) with their names and categories."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "CANCEL",
    "PENDING",
    "PENDING_WARNING",
    "SERVICES",
    "SUCCESS",
    "StatusCategory",
    "StatusInfo",
    "is_cancel",
    "is_completed",
    "is_failure",
    "is_final",
    "is_pending",
    "is_success",
    "is_warning",
    "status_category",
    "status_info",
]


class StatusCategory(Enum):
    """The status types of PS3.7 C.1 (Refused is a kind of Failure)."""

    SUCCESS = "Success"
    PENDING = "Pending"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """A status code with its PS3.7/PS3.4 meaning."""

    code: int
    name: str
    category: StatusCategory

    def __str__(self) -> str:
        return f"0x{self.code:04X} {self.category.value}: {self.name}"


SUCCESS: Final = 0x0000
CANCEL: Final = 0xFE00
PENDING: Final = 0xFF00
PENDING_WARNING: Final = 0xFF01  # C-FIND: optional keys not supported (PS3.4 C.4.1.1.4)

# The codes aiodimse answers with, named once (PS3.7 C.4, PS3.4 B.2.3 and C.4.1-C.4.3).
PROCESSING_FAILURE: Final = 0x0110  # PS3.7 C.4.2: generic failure of a handler
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122  # PS3.7 C.4.10: no handler for the service
UNRECOGNIZED_OPERATION: Final = 0x0211  # PS3.7 C.4.23
OUT_OF_RESOURCES: Final = 0xA700  # PS3.4 B.2.3 / C.4.1.1.4
UNABLE_TO_CALCULATE_MATCHES: Final = 0xA701  # PS3.4 C.4.2.1.5 / C.4.3.1.4
UNABLE_TO_PERFORM_SUBOPERATIONS: Final = 0xA702  # PS3.4 C.4.2.1.5 / C.4.3.1.4
MOVE_DESTINATION_UNKNOWN: Final = 0xA801  # PS3.4 C.4.2.1.5
DATASET_DOES_NOT_MATCH: Final = 0xA900  # PS3.4 B.2.3 (C-STORE) and C.4 ("identifier")
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
SUBOPERATIONS_COMPLETE_WITH_FAILURES: Final = 0xB000  # PS3.4 C.4.2.1.5 / C.4.3.1.4
CANNOT_UNDERSTAND: Final = 0xC000  # PS3.4 B.2.3 (C-STORE)
UNABLE_TO_PROCESS: Final = 0xC001  # PS3.4 C.4.1.1.4 (C-FIND/C-GET/C-MOVE: Cxxx)

SERVICES: Final = ("C-ECHO", "C-STORE", "C-FIND", "C-GET", "C-MOVE")

_S = StatusCategory.SUCCESS
_P = StatusCategory.PENDING
_W = StatusCategory.WARNING
_F = StatusCategory.FAILURE
_C = StatusCategory.CANCEL

# A row is (first code, last code, name, category): a single code has first == last,
# a family such as A7xx spans its range.
_Row = tuple[int, int, str, StatusCategory]

# PS3.7 Annex C (C.1-C.5): general status codes, shared by every DIMSE service.
_GENERAL: Final[tuple[_Row, ...]] = (
    (0x0000, 0x0000, "Success", _S),
    (0x0001, 0x0001, "Requested optional attributes are not supported", _W),
    (0x0107, 0x0107, "Attribute list error", _W),
    (0x0116, 0x0116, "Attribute value out of range", _W),
    (0x0105, 0x0105, "No such attribute", _F),
    (0x0106, 0x0106, "Invalid attribute value", _F),
    (0x0110, 0x0110, "Processing failure", _F),
    (0x0111, 0x0111, "Duplicate SOP instance", _F),
    (0x0112, 0x0112, "No such SOP instance", _F),
    (0x0113, 0x0113, "No such event type", _F),
    (0x0114, 0x0114, "No such argument", _F),
    (0x0115, 0x0115, "Invalid argument value", _F),
    (0x0117, 0x0117, "Invalid object instance", _F),
    (0x0118, 0x0118, "No such SOP class", _F),
    (0x0119, 0x0119, "Class-instance conflict", _F),
    (0x0120, 0x0120, "Missing attribute", _F),
    (0x0121, 0x0121, "Missing attribute value", _F),
    (0x0122, 0x0122, "Refused: SOP class not supported", _F),
    (0x0123, 0x0123, "No such action type", _F),
    (0x0124, 0x0124, "Refused: not authorized", _F),
    (0x0210, 0x0210, "Duplicate invocation", _F),
    (0x0211, 0x0211, "Unrecognized operation", _F),
    (0x0212, 0x0212, "Mistyped argument", _F),
    (0x0213, 0x0213, "Resource limitation", _F),
    (0xFE00, 0xFE00, "Cancel", _C),
    (0xFF00, 0xFF00, "Pending", _P),
    (0xFF01, 0xFF01, "Pending (warning)", _P),
    # Service-specific families, named by the meaning the storage and query/retrieve
    # services give them (PS3.4 B.2.3, C.4), for when the service is not known.
    (0xA700, 0xA7FF, "Refused: out of resources", _F),
    (0xA801, 0xA801, "Refused: move destination unknown", _F),
    (0xA900, 0xA9FF, "Error: data set does not match SOP class", _F),
    (0xC000, 0xCFFF, "Error: cannot understand / unable to process", _F),
)

# PS3.4 Table B.2-1: C-STORE.
_C_STORE: Final[tuple[_Row, ...]] = (
    (0xA700, 0xA7FF, "Refused: out of resources", _F),
    (0xA900, 0xA9FF, "Error: data set does not match SOP class", _F),
    (0xC000, 0xCFFF, "Error: cannot understand", _F),
    (0xB000, 0xB000, "Coercion of data elements", _W),
    (0xB007, 0xB007, "Data set does not match SOP class", _W),
    (0xB006, 0xB006, "Elements discarded", _W),
)

# PS3.4 Table C.4-1: C-FIND.
_C_FIND: Final[tuple[_Row, ...]] = (
    (0x0000, 0x0000, "Matching is complete", _S),
    (0xA700, 0xA700, "Refused: out of resources", _F),
    (0xA900, 0xA900, "Identifier does not match SOP class", _F),
    (0xC000, 0xCFFF, "Unable to process", _F),
    (0xFE00, 0xFE00, "Matching terminated due to cancel request", _C),
    (0xFF00, 0xFF00, "Matches are continuing", _P),
    (
        0xFF01,
        0xFF01,
        "Matches are continuing - one or more optional keys were not supported",
        _P,
    ),
)

# PS3.4 Table C.4-2: C-MOVE.
_C_MOVE: Final[tuple[_Row, ...]] = (
    (0x0000, 0x0000, "Sub-operations complete - no failures", _S),
    (0xA701, 0xA701, "Refused: out of resources - unable to calculate number of matches", _F),
    (0xA702, 0xA702, "Refused: out of resources - unable to perform sub-operations", _F),
    (0xA801, 0xA801, "Refused: move destination unknown", _F),
    (0xA900, 0xA900, "Identifier does not match SOP class", _F),
    (0xC000, 0xCFFF, "Unable to process", _F),
    (0xFE00, 0xFE00, "Sub-operations terminated due to cancel indication", _C),
    (0xB000, 0xB000, "Sub-operations complete - one or more failures", _W),
    (0xFF00, 0xFF00, "Sub-operations are continuing", _P),
)

# PS3.4 Table C.4-3: C-GET.
_C_GET: Final[tuple[_Row, ...]] = (
    (0x0000, 0x0000, "Sub-operations complete - no failures or warnings", _S),
    (0xA701, 0xA701, "Refused: out of resources - unable to calculate number of matches", _F),
    (0xA702, 0xA702, "Refused: out of resources - unable to perform sub-operations", _F),
    (0xA900, 0xA900, "Identifier does not match SOP class", _F),
    (0xC000, 0xCFFF, "Unable to process", _F),
    (0xFE00, 0xFE00, "Sub-operations terminated due to cancel indication", _C),
    (0xB000, 0xB000, "Sub-operations complete - one or more failures or warnings", _W),
    (0xFF00, 0xFF00, "Sub-operations are continuing", _P),
)

# PS3.4 A.4.2 / PS3.7 9.1.5: C-ECHO defines only Success; the general codes cover the rest.
_C_ECHO: Final[tuple[_Row, ...]] = ()

_BY_SERVICE: Final[dict[str, tuple[_Row, ...]]] = {
    "C-ECHO": _C_ECHO,
    "C-STORE": _C_STORE,
    "C-FIND": _C_FIND,
    "C-MOVE": _C_MOVE,
    "C-GET": _C_GET,
}


def _index(rows: tuple[_Row, ...]) -> tuple[dict[int, StatusInfo], tuple[_Row, ...]]:
    exact = {lo: StatusInfo(lo, name, cat) for lo, hi, name, cat in rows if lo == hi}
    ranges = tuple(row for row in rows if row[0] != row[1])
    return exact, ranges


_GENERAL_INDEX: Final = _index(_GENERAL)
_SERVICE_INDEX: Final = {service: _index(rows) for service, rows in _BY_SERVICE.items()}


def status_category(code: int) -> StatusCategory:
    """The category of any status code by the PS3.7 C.1 ranges (service independent)."""
    if code == 0x0000:
        return StatusCategory.SUCCESS
    if code in (0xFF00, 0xFF01):
        return StatusCategory.PENDING
    if code == 0xFE00:
        return StatusCategory.CANCEL
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


def _lookup(index: tuple[dict[int, StatusInfo], tuple[_Row, ...]], code: int) -> StatusInfo | None:
    exact, ranges = index
    info = exact.get(code)
    if info is not None:
        return info
    for lo, hi, name, category in ranges:
        if lo <= code <= hi:
            return StatusInfo(code, name, category)
    return None


def status_info(code: int, service: str | None = None) -> StatusInfo:
    """Name and category of ``code``; the service's own meaning first when it is given.

    ``service`` is one of :data:`SERVICES` (e.g. ``"C-STORE"``); any other value is treated
    as unknown. Codes no table names still get a category from the PS3.7 C.1 ranges.
    """
    if service is not None:
        index = _SERVICE_INDEX.get(service)
        if index is not None:
            info = _lookup(index, code)
            if info is not None:
                return info
    info = _lookup(_GENERAL_INDEX, code)
    if info is not None:
        return info
    category = status_category(code)
    return StatusInfo(code, f"Unknown {category.value.lower()} status", category)


def is_success(code: int) -> bool:
    """Status 0x0000."""
    return status_category(code) is StatusCategory.SUCCESS


def is_pending(code: int) -> bool:
    """Status 0xFF00 or 0xFF01: more responses follow."""
    return status_category(code) is StatusCategory.PENDING


def is_warning(code: int) -> bool:
    """Completed with a warning (0001, 0107, 0116, Bxxx)."""
    return status_category(code) is StatusCategory.WARNING


def is_failure(code: int) -> bool:
    """Failed or refused."""
    return status_category(code) is StatusCategory.FAILURE


def is_cancel(code: int) -> bool:
    """Status 0xFE00: ended by a C-CANCEL."""
    return status_category(code) is StatusCategory.CANCEL


def is_completed(code: int) -> bool:
    """Success or warning: the operation did what was asked (a C-STORE whose instance is
    kept, a sub-operation that counts as completed or warning)."""
    return status_category(code) in (StatusCategory.SUCCESS, StatusCategory.WARNING)


def is_final(code: int) -> bool:
    """Whether a response with this status ends its operation (anything but pending)."""
    return not is_pending(code)
