"""Building query identifiers and choosing Query/Retrieve information models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import uids
from .dicomfile import is_dataset

if TYPE_CHECKING:
    # Only the functions that build identifiers import pydicom (start-up time: the UID
    # tables and model_uid are wanted by every command, pydicom by few).
    from pydicom import Dataset

__all__ = [
    "DEFAULT_RETURN_KEYS",
    "MODELS",
    "UNIQUE_KEYS",
    "build_query",
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
