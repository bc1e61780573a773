"""C-FIND attribute matching (PS3.4 C.2.2.2) translated into SQL over the archive's index.

Pure functions, no database: :func:`condition` turns one key of a request identifier into a
SQL condition on an index column, and the ``*_key`` normalisers turn attribute values into
the form they are stored and compared in. The rules, and the choices the standard leaves to
the implementation:

- **Universal matching** (C.2.2.2.3): a zero-length value, or a value of only ``*``
  (C.2.2.2.4: equivalent), matches everything, empty values included, and asks for the
  value to be returned. The archive takes ``*`` as universal for every VR (strictly it is
  a wild card only for the text VRs; a date of ``*`` would otherwise match nothing).
- **Single value matching** (C.2.2.2.1): exact and case-sensitive, except for PN, where
  the standard lets the SCP choose: PN values match **case-insensitively** (both sides are
  compared after ``str.casefold``), with trailing empty name components (``DOE^JANE^^``)
  ignored. Leading and trailing spaces are never significant (PS3.5 6.2 padding).
- **Wild card matching** (C.2.2.2.4): ``*`` and ``?`` in AE, CS, LO, LT, PN, SH, ST, UC, UR,
  UT values; case-sensitive except PN (as above). It is done with SQLite ``GLOB``, whose
  only other metacharacters, ``[`` and ``]``, are escaped as one-character sets; ``%`` and
  ``_`` mean nothing to GLOB. A value of another VR containing ``*`` or ``?`` is matched
  literally (single value).
- **Range matching** (C.2.2.2.5): ``A-B``, ``A-`` and ``-B`` for DA, TM and DT, inclusive.
  A TM or DT value of reduced precision names a period (``10`` is 10:00:00 to
  10:59:59.999999): a bound includes the whole period it names, and a single value matches
  any time within it. DT timezone offsets are ignored (values compare as written). Dates
  and times are matched independently (combined date-time matching needs Extended
  Negotiation, which the archive does not offer).
- **List of UID matching** (C.2.2.2.2): backslash-separated UIDs, any of which may match.
  Other multi-valued keys are matched the same way (any value matches): without Extended
  Negotiation of multiple value matching the standard leaves them undefined (C.2.2.2.8).
- An entity whose value is empty matches no key except a universal one (as PS3.4
  K.2.2.1.1.1 spells out for worklists).
- IS keys (Series Number, Instance Number) compare as integers.
- Modalities in Study matches a study when any of its series' Modality matches (any of
  the values given, wild cards allowed). The Number of ... Related ... keys are computed
  return keys and never matched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Condition",
    "Key",
    "condition",
    "date_key",
    "datetime_key",
    "has_wildcard",
    "int_key",
    "pn_key",
    "split_values",
    "text_key",
    "time_key",
    "to_glob",
]

#: VRs on which "*" and "?" are wild cards (PS3.4 C.2.2.2.4).
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})

#: How a key is matched. "text": strings (single value + wild card); "pn": like text but
#: case-insensitive on a folded column; "uid": list of UID; "date"/"time"/"datetime":
#: single value + range; "int": IS as integers; "modalities": Modalities in Study, matched
#: against the series of the study; "count": a number the index computes (return only).
KINDS: Final = frozenset(
    {"text", "pn", "uid", "date", "time", "datetime", "int", "modalities", "count"}
)


@dataclass(frozen=True, slots=True)
class Key:
    """An attribute the archive indexes: where it lives and how it is matched."""

    keyword: str
    tag: int
    vr: str
    level: str  # "PATIENT", "STUDY", "SERIES" or "IMAGE"
    kind: str
    #: The SQL expression returned for it (a column, or a subquery for computed keys).
    expr: str
    #: The SQL expression compared when matching (a folded or normalised column).
    match_expr: str | None = None

    @property
    def compared(self) -> str:
        return self.match_expr or self.expr


@dataclass(frozen=True, slots=True)
class Condition:
    """A SQL boolean expression with its ``?`` parameters."""

    sql: str
    params: tuple[Any, ...] = ()


NEVER: Final = Condition("0")


# -- stored forms ------------------------------------------------------------------------


def text_key(value: str) -> str:
    """Text as stored and compared: without its padding (PS3.5 6.2: spaces, and NUL for UI)."""
    return value.strip(" \x00")


def pn_key(value: str) -> str:
    """A Person Name as compared: case-folded, each component group without trailing empty
    components ("DOE^JANE^^" and "doe^jane" are the same name)."""
    groups = [g.strip(" ").rstrip("^").strip(" ") for g in text_key(value).split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).casefold()


def date_key(value: str) -> str:
    """A DA value as YYYYMMDD (the ACR-NEMA form YYYY.MM.DD accepted); '' if empty."""
    return text_key(value).replace(".", "")


_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")


def time_key(value: str, *, upper: bool = False) -> str:
    """A TM value as ``HHMMSS.FFFFFF``; missing components filled with their lowest value
    (or their highest with ``upper=True``, for the end of the period a value names).
    Colons of the ACR-NEMA form are dropped. A value that is not a time is returned
    stripped, and compares as text."""
    text = text_key(value).replace(":", "")
    m = _TIME.match(text)
    if m is None:
        return text
    hh, mm, ss, frac = m.groups()
    if upper:
        return f"{hh}{mm or '59'}{ss or '59'}.{(frac or '').ljust(6, '9')}"
    return f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"


_DATETIME = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DT_HIGH: Final = ("", "12", "31", "23", "59", "59")
_DT_LOW: Final = ("", "01", "01", "00", "00", "00")


def datetime_key(value: str, *, upper: bool = False) -> str:
    """A DT value as ``YYYYMMDDHHMMSS.FFFFFF`` (timezone offset dropped), missing components
    filled with their lowest (or, ``upper=True``, highest) value."""
    text = text_key(value)
    for sign in "+-":
        cut = text.find(sign, 4)
        if cut != -1:
            text = text[:cut]
    m = _DATETIME.match(text)
    if m is None:
        return text
    parts = list(m.groups())
    frac = parts.pop()
    fill = _DT_HIGH if upper else _DT_LOW
    out = parts[0] or ""
    for i in range(1, 6):
        out += parts[i] or fill[i]
    pad = "9" if upper else "0"
    return f"{out}.{(frac or '').ljust(6, pad)}"


def int_key(value: str) -> int | None:
    """An IS value as an integer, None if empty or not a number."""
    try:
        return int(text_key(value))
    except ValueError:
        return None


# -- request values ----------------------------------------------------------------------


def split_values(value: str) -> list[str]:
    """A request value's backslash-separated values (PS3.5 6.4), without padding."""
    return [text_key(v) for v in value.split("\\")]


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def to_glob(pattern: str) -> str:
    """A DICOM wild card pattern as a SQLite GLOB pattern: ``*`` and ``?`` kept, ``[`` and
    ``]`` made literal as one-character sets (GLOB has no escape character)."""
    return "".join("[[]" if ch == "[" else "[]]" if ch == "]" else ch for ch in pattern)


def _is_universal(values: Sequence[str]) -> bool:
    return all(v == "" for v in values) or any(v and not v.strip("*") for v in values)


def condition(key: Key, value: str) -> Condition | None:
    """The SQL condition for ``key`` with the request ``value``; None for universal
    matching (every entity matches; the value is only to be returned)."""
    if key.kind == "count":
        return None  # return key only
    values = split_values(value)
    if _is_universal(values):
        return None
    parts = [_single(key, v) for v in values if v != ""]
    if any(p is None for p in parts):
        return None
    conds = [p for p in parts if p is not None]
    if len(conds) == 1:
        return conds[0]
    # Several values: any of them (List of UID Matching, C.2.2.2.2; see module doc).
    if key.kind in ("uid", "int") and all(c.sql.endswith("= ?") for c in conds):
        marks = ", ".join("?" for _ in conds)
        return Condition(f"{key.compared} IN ({marks})", tuple(p for c in conds for p in c.params))
    return Condition(
        "(" + " OR ".join(c.sql for c in conds) + ")", tuple(p for c in conds for p in c.params)
    )


def _single(key: Key, value: str) -> Condition | None:
    col = key.compared
    kind = key.kind
    if kind == "modalities":
        inner = _text_condition("s2.modality", value, fold=False, wildcards=True)
        if inner is None:
            return None
        return Condition(
            f"EXISTS (SELECT 1 FROM series s2 WHERE s2.study_pk = st.id AND {inner.sql})",
            inner.params,
        )
    if kind == "pn":
        return _text_condition(col, value, fold=True, wildcards=True)
    if kind == "text":
        return _text_condition(col, value, fold=False, wildcards=key.vr in WILDCARD_VRS)
    if kind == "uid":
        return Condition(f"{col} = ?", (value,))
    if kind == "int":
        number = int_key(value)
        return NEVER if number is None else Condition(f"{col} = ?", (number,))
    if kind in ("date", "time", "datetime"):
        return _range_condition(kind, col, value)
    raise ValueError(f"no matching rule for {key.keyword} ({kind})")


def _text_condition(col: str, value: str, *, fold: bool, wildcards: bool) -> Condition | None:
    if fold:
        # Fold like pn_key, but keep the wild cards where they are.
        value = pn_key(value) if not has_wildcard(value) else value.casefold()
    if wildcards and has_wildcard(value):
        if not value.strip("*"):
            return None  # "*" is universal matching (C.2.2.2.4)
        return Condition(f"{col} GLOB ?", (to_glob(value),))
    return Condition(f"{col} = ?", (value,))


def _bounds(kind: str, text: str, upper: bool) -> str:
    if kind == "date":
        return date_key(text)
    if kind == "time":
        return time_key(text, upper=upper)
    return datetime_key(text, upper=upper)


def _range_condition(kind: str, col: str, value: str) -> Condition:
    if kind == "date":
        # DA: a single date is an exact match; "-" separates a range (C.2.2.2.5.1).
        lo_text, dash, hi_text = value.partition("-")
    else:
        lo_text, dash, hi_text = _split_range(value)
    lo_text, hi_text = lo_text.strip(), hi_text.strip()
    if not dash:
        if kind == "date":
            return Condition(f"{col} = ?", (date_key(value),))
        lo, hi = _bounds(kind, value, False), _bounds(kind, value, True)
        return Condition(f"({col} BETWEEN ? AND ?)", (lo, hi))
    if not lo_text and not hi_text:
        return Condition(f"{col} != ''")
    parts: list[str] = [f"{col} != ''"]
    params: list[str] = []
    if lo_text:
        parts.append(f"{col} >= ?")
        params.append(_bounds(kind, lo_text, False))
    if hi_text:
        parts.append(f"{col} <= ?")
        params.append(_bounds(kind, hi_text, True))
    return Condition("(" + " AND ".join(parts) + ")", tuple(params))


def _split_range(value: str) -> tuple[str, str, str]:
    """Split a TM/DT range at its '-', not at a DT timezone offset's '-' (``&ZZXX``)."""
    text = value.strip()
    if at := _range_dash(text):
        return text[:at], "-", text[at + 1 :]
    if text.startswith("-"):
        return "", "-", text[1:]
    return text, "", ""


def _range_dash(text: str) -> int:
    # A DT bound is at least 4 digits (a year); a timezone offset "-HHMM" follows digits.
    # The range separator is the dash that leaves a well-formed bound on each side.
    for i, ch in enumerate(text):
        if ch != "-" or i == 0:
            continue
        left, right = text[:i], text[i + 1 :]
        if _plausible(left) and (right == "" or _plausible(right)):
            return i
    return 0


def _plausible(bound: str) -> bool:
    core = bound.split("+")[0]
    if "-" in core[1:]:
        head, _, offset = core.rpartition("-")
        if len(offset) == 4 and offset.isdigit() and head:
            core = head
    return bool(core) and core.replace(".", "").replace(":", "").isdigit()
