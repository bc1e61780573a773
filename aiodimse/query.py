"""Building query identifiers and choosing Query/Retrieve information models.

Two forms of identifier: a pydicom Dataset (:func:`build_query`, :func:`to_dataset`), and
the light :class:`Identifier` (:func:`build_identifier`), plain text elements encoded by
:func:`encode_identifier` without pydicom, for the C-GET / C-MOVE of ordinary keys (start-up
time: importing pydicom, and numpy through it, costs ~0.25 s).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from . import uids
from .dicomfile import LONG_VRS, is_dataset
from .uids import TransferSyntax

if TYPE_CHECKING:
    # Only the functions that build identifiers import pydicom (start-up time: the UID
    # tables and model_uid are wanted by every command, pydicom by few).
    from pydicom import Dataset

__all__ = [
    "DEFAULT_RETURN_KEYS",
    "MODELS",
    "QUERY_KEYS",
    "UNIQUE_KEYS",
    "Identifier",
    "build_identifier",
    "build_query",
    "encode_identifier",
    "model_uid",
    "parse_key",
    "to_dataset",
    "vr_of",
    "with_return_keys",
]

#: Information model names accepted wherever a ``model=`` argument is taken (PS3.4 C.6).
MODELS: dict[str, dict[str, str]] = {
    "patient": {
        "find": uids.PATIENT_ROOT_QR_FIND,
        "move": uids.PATIENT_ROOT_QR_MOVE,
        "get": uids.PATIENT_ROOT_QR_GET,
    },
    "study": {
        "find": uids.STUDY_ROOT_QR_FIND,
        "move": uids.STUDY_ROOT_QR_MOVE,
        "get": uids.STUDY_ROOT_QR_GET,
    },
    "psonly": {
        "find": uids.PATIENT_STUDY_ONLY_QR_FIND,
        "move": uids.PATIENT_STUDY_ONLY_QR_MOVE,
        "get": uids.PATIENT_STUDY_ONLY_QR_GET,
    },
}


def model_uid(model: str, service: str) -> str:
    """The SOP class UID of ``model`` ("patient", "study", "psonly", or a UID) for
    ``service`` ("find", "move" or "get")."""
    if uids.is_valid_uid(model):
        return model
    try:
        return MODELS[model.lower()][service]
    except KeyError:
        names = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown query model {model!r}: use one of {names} or a UID") from None


#: ``(gggg,eeee)``, ``gggg,eeee`` or ``ggggeeee``: parentheses both or neither.
_TAG = re.compile(
    r"^(?:\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)"
    r"|([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})|([0-9A-Fa-f]{4})([0-9A-Fa-f]{4}))$"
)


def _tag_of(key: str) -> int:
    """A DICOM keyword or a (gggg,eeee) / ggggeeee tag as an int; ValueError names the key."""
    text = key.strip()
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(text)
    if tag is not None:
        return int(tag)
    match = _TAG.match(text)
    if match is None:
        raise ValueError(
            f"{key!r} is neither a DICOM keyword nor a tag like (0010,0010) or 00100010"
        )
    group, element = (g for g in match.groups() if g is not None)
    return int(group + element, 16)


def vr_of(tag: int) -> str:
    """The VR of ``tag`` from the dictionary; UN for a tag it does not know (a private or
    newer attribute: PS3.5 6.2.2)."""
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def parse_key(spec: str) -> tuple[int, str]:
    """A DCMTK-style ``-k`` argument: ``Keyword=value``, ``Keyword`` (return key) or
    ``(0010,0010)=DOE*``. Returns (tag, value)."""
    key, _, value = spec.partition("=")
    if not key.strip():
        raise ValueError(f"empty key in {spec!r}")
    return _tag_of(key), value


def to_dataset(query: Dataset | Mapping[str, Any] | Mapping[int, Any]) -> Dataset:
    """A query identifier from a Dataset (returned as is) or a mapping of keywords (or tags)
    to values; None or "" asks for the attribute to be returned (universal matching)."""
    if is_dataset(query):
        return query
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom import config

    # Matching values are not plain values (ranges, wildcards, UID lists): no VR warnings.
    with config.disable_value_validation():
        # (is_dataset is a TypeGuard: it does not narrow the other branch)
        return _from_mapping(cast("Mapping[str, Any] | Mapping[int, Any]", query))


def _from_mapping(query: Mapping[str, Any] | Mapping[int, Any]) -> Dataset:
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom import Dataset

    ds = Dataset()
    for key, value in query.items():
        tag = key if isinstance(key, int) else _tag_of(str(key))
        vr = vr_of(tag)
        if value is None:
            value = ""
        if vr == "UN" and isinstance(value, str):
            value = value.encode("latin-1", "replace")
        if vr == "SQ" and isinstance(value, (list, tuple)):
            value = [to_dataset(v) for v in value]
        ds.add_new(tag, vr, value if value != "" or vr != "SQ" else [])
    return ds


#: Keys returned by default at each level when the query names none (besides the level).
DEFAULT_RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "StudyInstanceUID",
    ),
    "SERIES": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
    ),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"),
}
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def build_query(keys: Sequence[str], level: str | None = None) -> Dataset:
    """A query identifier from DCMTK-style ``-k`` keys and a level (default STUDY, or what
    the keys say); the level's unique key is added when missing. ValueError names a bad key."""
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom import Dataset, config

    ds = Dataset()
    for spec in keys:
        tag, value = parse_key(spec)
        vr = vr_of(tag)
        # Matching values (ranges, wildcards) are not plain values: no VR warnings.
        with config.disable_value_validation():
            if vr == "UN":  # not in the dictionary (a private tag): sent as it is
                ds.add_new(tag, vr, value.encode("latin-1", "replace"))
            else:
                ds.add_new(tag, vr, [] if vr == "SQ" else value)
    if level is not None:
        ds.QueryRetrieveLevel = level
    elif "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = "STUDY"
    level_value = str(ds.QueryRetrieveLevel).upper()
    if level_value not in DEFAULT_RETURN_KEYS:
        raise ValueError(
            f"query/retrieve level {level_value!r} is not one of PATIENT/STUDY/SERIES/IMAGE"
        )
    ds.QueryRetrieveLevel = level_value
    unique = UNIQUE_KEYS[level_value]
    if unique not in ds:
        setattr(ds, unique, "")
    return ds


def with_return_keys(ds: Dataset) -> Dataset:
    """Without any key but the level and its unique key, ask for the usual ones."""
    level = str(ds.QueryRetrieveLevel)
    # Deferred: pydicom takes ~0.3 s to import; only building or reading a query needs it.
    from pydicom.datadict import keyword_for_tag

    named = {keyword_for_tag(e.tag) for e in ds} - {"QueryRetrieveLevel", UNIQUE_KEYS[level]}
    if not named:
        for keyword in DEFAULT_RETURN_KEYS[level]:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return ds


# -- the light identifier: no pydicom -------------------------------------------------------

#: The usual Query/Retrieve keys (PS3.4 C.6, PS3.6): keyword -> (tag, VR). A ``-k`` query
#: naming only these, with plain text values, is built and encoded without pydicom
#: (tests/test_identifier.py checks each against pydicom's dictionary).
QUERY_KEYS: Final[dict[str, tuple[int, str]]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "QueryRetrieveLevel": (0x00080052, "CS"),
    "RetrieveAETitle": (0x00080054, "AE"),
    "InstanceAvailability": (0x00080056, "CS"),
    "Modality": (0x00080060, "CS"),
    "ModalitiesInStudy": (0x00080061, "CS"),
    "SOPClassesInStudy": (0x00080062, "UI"),
    "InstitutionName": (0x00080080, "LO"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "BodyPartExamined": (0x00180015, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "NumberOfPatientRelatedStudies": (0x00201200, "IS"),
    "NumberOfPatientRelatedSeries": (0x00201202, "IS"),
    "NumberOfPatientRelatedInstances": (0x00201204, "IS"),
    "NumberOfStudyRelatedSeries": (0x00201206, "IS"),
    "NumberOfStudyRelatedInstances": (0x00201208, "IS"),
    "NumberOfSeriesRelatedInstances": (0x00201209, "IS"),
}
_KEYWORDS: Final = {tag: keyword for keyword, (tag, _) in QUERY_KEYS.items()}
_LEVEL_TAG: Final = QUERY_KEYS["QueryRetrieveLevel"][0]
_SPECIFIC_CHARACTER_SET: Final = QUERY_KEYS["SpecificCharacterSet"][0]

# What counts as a plain value: written by pydicom exactly as given (no conversion, no
# character set, no warning). Anything else goes the pydicom way.
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")  # ASCII, no control characters
_UI_TEXT: Final = re.compile(r"[0-9.\\]*")  # pydicom strips spaces around UIDs
_IS_TEXT: Final = re.compile(r"[+-]?[0-9]{1,12}(?:\\[+-]?[0-9]{1,12})*")  # converted to int
#: Specific Character Sets in which ASCII text is encoded as ASCII (PS3.3 C.12.1.1.2):
#: single values without code extensions.
_ASCII_CHARSETS: Final = frozenset(
    {
        "ISO_IR 100",
        "ISO_IR 101",
        "ISO_IR 109",
        "ISO_IR 110",
        "ISO_IR 126",
        "ISO_IR 127",
        "ISO_IR 138",
        "ISO_IR 144",
        "ISO_IR 148",
        "ISO_IR 166",
        "ISO_IR 192",
        "ISO_IR 203",
        "GB18030",
        "GBK",
    }
)


def _plain(value: str, vr: str, tag: int) -> bool:
    """Whether pydicom would write ``value`` for a ``vr`` element unchanged, as ASCII."""
    if not value:
        return True
    if vr == "UI":
        return _UI_TEXT.fullmatch(value) is not None
    if vr == "IS":
        return _IS_TEXT.fullmatch(value) is not None
    if tag == _SPECIFIC_CHARACTER_SET:
        return value in _ASCII_CHARSETS
    return _PRINTABLE.fullmatch(value) is not None


class Identifier(Mapping[str, "str | None"]):
    """A query identifier as plain elements: (tag, VR, text or None), one per tag, sorted
    by tag; None (or "") is an empty value, universal matching. Immutable.

    Built by :func:`build_identifier` from ``-k`` keys, it is encoded without pydicom
    (:meth:`encode`). As a mapping it is read by keyword (a tag outside
    :data:`QUERY_KEYS` by its ``ggggeeee`` hex), e.g. ``identifier.get("StudyInstanceUID")``.
    """

    __slots__ = ("_elements", "_values")

    _elements: tuple[tuple[int, str, str | None], ...]
    _values: dict[str, str | None]

    def __init__(self, elements: Iterable[tuple[int, str, str | None]]) -> None:
        by_tag: dict[int, tuple[int, str, str | None]] = {}
        for tag, vr, text in elements:
            by_tag[int(tag)] = (int(tag), str(vr), text if text else None)  # the last wins
        ordered = tuple(by_tag[tag] for tag in sorted(by_tag))
        object.__setattr__(self, "_elements", ordered)
        object.__setattr__(
            self, "_values", {_KEYWORDS.get(tag, f"{tag:08X}"): text for tag, _, text in ordered}
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @property
    def elements(self) -> tuple[tuple[int, str, str | None], ...]:
        """The (tag, VR, text or None) elements, sorted by tag."""
        return self._elements

    def __getitem__(self, key: str) -> str | None:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._elements)

    def __repr__(self) -> str:
        return f"Identifier({dict(self._values)!r})"

    def encode(self, syntax: TransferSyntax) -> bytes | None:
        """The identifier in ``syntax``; None where :func:`encode_identifier` refuses
        (deflated): use :meth:`to_dataset` and pydicom then."""
        return encode_identifier(self._elements, False, syntax)

    def to_dataset(self) -> Dataset:
        """The same identifier as a pydicom Dataset (what :func:`build_query` builds)."""
        # Deferred: pydicom takes ~0.3 s to import; only the fallback needs it.
        from pydicom import Dataset, config

        ds = Dataset()
        # Matching values (ranges, wildcards) are not plain values: no VR warnings.
        with config.disable_value_validation():
            for tag, vr, text in self._elements:
                ds.add_new(tag, vr, text or "")
        return ds


def build_identifier(keys: Sequence[str], level: str | None = None) -> Identifier | Dataset:
    """:func:`build_query` without pydicom when it can: an :class:`Identifier` when every
    key is a keyword of :data:`QUERY_KEYS` with a plain ASCII value, else (a tag given as
    hex, another keyword, non-ASCII text...) the pydicom Dataset of :func:`build_query`.
    Both mean the same query and encode to the same bytes."""
    light = _light_identifier(keys, level)
    return light if light is not None else build_query(keys, level)


def _light_identifier(keys: Sequence[str], level: str | None) -> Identifier | None:
    """build_query's identifier as plain elements, or None for anything not plain (and for
    a bad level: build_query raises the error)."""
    elements: dict[int, tuple[int, str, str | None]] = {}
    for spec in keys:
        key, _, value = spec.partition("=")  # as parse_key does
        known = QUERY_KEYS.get(key.strip())
        if known is None:
            return None
        tag, vr = known
        if not _plain(value, vr, tag):
            return None
        elements[tag] = (tag, vr, value)
    if level is not None:
        if level not in UNIQUE_KEYS:  # (build_query warns of a lower-case level, as CS)
            return None
        level_value = level
    else:
        given = (elements[_LEVEL_TAG][2] or "") if _LEVEL_TAG in elements else "STUDY"
        level_value = given.upper()
        if level_value not in UNIQUE_KEYS:
            return None
    elements[_LEVEL_TAG] = (_LEVEL_TAG, "CS", level_value)
    unique_tag, unique_vr = QUERY_KEYS[UNIQUE_KEYS[level_value]]
    elements.setdefault(unique_tag, (unique_tag, unique_vr, None))
    return Identifier(elements.values())


# -- encoding plain elements ------------------------------------------------------------------

_UTF8_TERM: Final = "ISO_IR 192"  # PS3.3 C.12.1.1.2: UTF-8


def encode_identifier(
    values: Sequence[tuple[int, str, str | None]], utf8: bool, syntax: TransferSyntax
) -> bytes | None:
    """Encode (tag, VR, text or None) elements, sorted by tag, in ``syntax``; with ``utf8``
    the text is UTF-8 and Specific Character Set (0008,0005) says so. None when ``syntax``
    is deflated, or a value does not fit its VR's length field.

    Writing element by element (PS3.5 7.1: tag, VR, length, value) is many times faster
    than building a pydicom Dataset and writing that (the archive's C-FIND responses), and
    needs no pydicom at all (a C-GET / C-MOVE identifier). Deflated syntaxes are left to
    pydicom: the caller falls back."""
    if syntax.is_deflated:
        return None
    implicit = syntax.is_implicit_vr
    order = "<" if syntax.is_little_endian else ">"
    short_header = struct.Struct(f"{order}HH2sH")
    long_header = struct.Struct(f"{order}HH2s2xI")
    implicit_header = struct.Struct(f"{order}HHI")
    out = bytearray()
    codec = "utf-8" if utf8 else "ascii"
    elements = values
    if utf8:
        elements = [(_SPECIFIC_CHARACTER_SET, "CS", _UTF8_TERM), *values]
    for tag, vr, text in elements:
        if text is None:
            raw = b""
        else:
            raw = text.encode(codec)
            if len(raw) & 1:
                raw += b"\x00" if vr == "UI" else b" "  # PS3.5 6.2: even length
        group, element = tag >> 16, tag & 0xFFFF
        if implicit:
            out += implicit_header.pack(group, element, len(raw))
        elif (code := vr.encode("ascii")) in LONG_VRS:
            out += long_header.pack(group, element, code, len(raw))
        else:
            if len(raw) > 0xFFFE:
                return None
            out += short_header.pack(group, element, code, len(raw))
        out += raw
    return bytes(out)
