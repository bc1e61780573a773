"""C-FIND matching of the archive (PS3.4 C.2.2.2), rule by rule, and against a reference.

The archive is filled by ``Archive.ingest`` from real Part 10 files and queried with
``Archive.query``, the code path of its C-FIND SCP without the network (the network path is
covered in test_archive.py and test_interop_archive.py). The hypothesis test at the end
compares the SQL matching with a plain-Python matcher written from the standard's text.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _archive_support import instance, save
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset

from aiodimse.archive import Archive
from aiodimse.archive.matching import (
    date_key,
    datetime_key,
    pn_key,
    time_key,
    to_glob,
)
from aiodimse.errors import StatusError
from aiodimse.testing.synthetic import uid_from

# Query values may break their VR's rules (ranges, wild cards, PS3.4 C.2.2.2); pydicom warns.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

# -- the normalisers and the GLOB escaping --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [("a[b]c", "a[b]c"), ("[", "["), ("]", "]"), ("50%_x", "50%_x"), ("a\\b", "a\\b")],
)
def test_glob_pattern_matches_special_characters_literally(value: str, literal: str) -> None:
    db = sqlite3.connect(":memory:")
    (hit,) = db.execute("SELECT ? GLOB ?", (literal, to_glob(value))).fetchone()
    (miss,) = db.execute("SELECT ? GLOB ?", (literal + "x", to_glob(value))).fetchone()
    assert (hit, miss) == (1, 0)


def test_glob_keeps_dicom_wildcards() -> None:
    db = sqlite3.connect(":memory:")
    pattern = to_glob("a[?]*")
    assert db.execute("SELECT 'a[x]yz' GLOB ?", (pattern,)).fetchone() == (1,)
    assert db.execute("SELECT 'a[xy]' GLOB ?", (pattern,)).fetchone() == (0,)


def test_time_key_fills_the_period_a_value_names() -> None:
    assert time_key("10") == "100000.000000"
    assert time_key("10", upper=True) == "105959.999999"
    assert time_key("1015") == "101500.000000"
    assert time_key("101530.5", upper=True) == "101530.599999"
    assert time_key("10:15:30") == "101530.000000"  # ACR-NEMA form


def test_datetime_key_drops_the_offset_and_fills_components() -> None:
    assert datetime_key("2019") == "20190101000000.000000"
    assert datetime_key("2019", upper=True) == "20191231235959.999999"
    assert datetime_key("20190102103000+0100") == "20190102103000.000000"


def test_pn_key_ignores_case_and_trailing_empty_components() -> None:
    assert pn_key("DOE^JANE^^") == pn_key("doe^jane") == "doe^jane"
    assert pn_key("DOE^JANE=ド^ジ==") == "doe^jane=ド^ジ"
    assert date_key("2019.01.02") == "20190102"


# -- rule by rule on a crafted archive -----------------------------------------------------

POPULATION = [
    # patient 1: two series in one study
    dict(study="A", series="1", sop="A11", PatientID="PAT-1", PatientName="DOE^JANE",
         StudyDate="20190101", StudyTime="101500", Modality="CT", SeriesNumber="1",
         InstanceNumber="1", StudyDescription="CT Chest"),
    dict(study="A", series="1", sop="A12", PatientID="PAT-1", PatientName="DOE^JANE",
         StudyDate="20190101", StudyTime="101500", Modality="CT", SeriesNumber="1",
         InstanceNumber="2", StudyDescription="CT Chest"),
    dict(study="A", series="2", sop="A21", PatientID="PAT-1", PatientName="DOE^JANE",
         StudyDate="20190101", StudyTime="101500", Modality="MR", SeriesNumber="2",
         InstanceNumber="1", StudyDescription="CT Chest"),
    dict(study="B", sop="B11", PatientID="PAT-2", PatientName="doe^john", StudyDate="20191231",
         StudyTime="235959.5", StudyDescription="ct chest"),
    dict(study="C", sop="C11", PatientID="PAT-3", PatientName="50%_OFF^X", StudyDate="20200615",
         StudyTime="08", StudyDescription="a[b]c"),
    dict(study="D", sop="D11", PatientID="PAT-4", PatientName="O'NEIL^Ann^^", StudyDate="",
         StudyTime="", StudyDescription="100% sure"),
    dict(study="E", sop="E11", PatientID="PAT-5", PatientName="MÜLLER^ÄNNE",
         StudyDate="20181231", StudyTime="1200", StudyDescription=""),
    dict(study="F", sop="F11", PatientID="PAT-6", PatientName="DOEX^JANE", StudyDate="20190615",
         StudyTime="0930", StudyDescription="Head", AccessionNumber="X_1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("matching")
    paths = save(base / "src", [instance(**spec) for spec in POPULATION])
    with Archive(base / "archive") as arch:
        assert arch.ingest(paths) == len(POPULATION)
        yield arch


def study_uid(name: str) -> str:
    return uid_from(f"study/{name}")


def studies(archive: Archive, **keys: Any) -> set[str]:
    """The study names (A, B ...) a STUDY level query with ``keys`` matches."""
    names = {study_uid(s["study"]): s["study"] for s in POPULATION}
    query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **keys}
    return {names[str(ds.StudyInstanceUID)] for ds in archive.query(query)}


def test_single_value_matching_is_case_sensitive_for_lo(archive: Archive) -> None:
    assert studies(archive, PatientID="PAT-1") == {"A"}
    assert studies(archive, PatientID="pat-1") == set()
    assert studies(archive, StudyDescription="CT Chest") == {"A"}


def test_pn_matching_ignores_case_and_trailing_components(archive: Archive) -> None:
    assert studies(archive, PatientName="doe^jane") == {"A"}
    assert studies(archive, PatientName="DOE^JOHN") == {"B"}
    assert studies(archive, PatientName="o'neil^ANN") == {"D"}


def test_wildcards_on_pn(archive: Archive) -> None:
    assert studies(archive, PatientName="DOE*") == {"A", "B", "F"}
    assert studies(archive, PatientName="doe^j?ne") == {"A"}
    assert studies(archive, PatientName="DOE^J???") == {"A", "B"}
    assert studies(archive, PatientName="*^JANE") == {"A", "F"}


def test_wildcards_are_case_sensitive_outside_pn(archive: Archive) -> None:
    assert studies(archive, StudyDescription="CT*") == {"A"}
    assert studies(archive, StudyDescription="ct*") == {"B"}
    assert studies(archive, StudyDescription="?T*") == {"A"}


def test_sql_metacharacters_in_values_are_literal(archive: Archive) -> None:
    assert studies(archive, PatientName="50%*") == {"C"}
    assert studies(archive, PatientName="*%*") == {"C"}
    assert studies(archive, PatientName="*_*") == {"C"}
    assert studies(archive, StudyDescription="*%*") == {"D"}
    assert studies(archive, StudyDescription="a[b]*") == {"C"}
    assert studies(archive, StudyDescription="*[*") == {"C"}
    assert studies(archive, AccessionNumber="X_1") == {"F"}
    assert studies(archive, AccessionNumber="X%1") == set()
    assert studies(archive, AccessionNumber="X?1") == {"F"}


def test_star_alone_is_universal_and_matches_empty_values(archive: Archive) -> None:
    everything = {s["study"] for s in POPULATION}
    assert studies(archive, StudyDescription="*") == everything
    assert studies(archive, StudyDescription="") == everything
    assert studies(archive, StudyDescription="?*") == everything - {"E"}


def test_date_range_matching(archive: Archive) -> None:
    assert studies(archive, StudyDate="20190101-20191231") == {"A", "B", "F"}
    assert studies(archive, StudyDate="20190101") == {"A"}
    assert studies(archive, StudyDate="20200101-") == {"C"}
    # An empty date matches no range (study D has none).
    assert studies(archive, StudyDate="-20181231") == {"E"}
    assert studies(archive, StudyDate="20191231-20190101") == set()


def test_time_range_matching(archive: Archive) -> None:
    assert studies(archive, StudyTime="1000-1100") == {"A"}
    assert studies(archive, StudyTime="-0900") == {"C"}
    assert studies(archive, StudyTime="2359-") == {"B"}
    assert studies(archive, StudyTime="10") == {"A"}  # the hour 10 as a period
    assert studies(archive, StudyTime="0930-1015") == {"A", "F"}
    assert studies(archive, StudyTime="-") == {"A", "B", "C", "E", "F"}


def test_list_of_uid_matching(archive: Archive) -> None:
    both = f"{study_uid('A')}\\{study_uid('C')}"
    assert studies(archive, StudyInstanceUID=both) == {"A", "C"}
    assert studies(archive, StudyInstanceUID=study_uid("B")) == {"B"}
    assert studies(archive, StudyInstanceUID="1.2.3") == set()


def test_modalities_in_study_matches_any_series(archive: Archive) -> None:
    assert studies(archive, ModalitiesInStudy="MR") == {"A"}
    assert studies(archive, ModalitiesInStudy="CT\\XA") == {s["study"] for s in POPULATION}
    (match,) = archive.query(
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid("A"), "ModalitiesInStudy": ""}
    )
    assert list(match.ModalitiesInStudy) == ["CT", "MR"]


def test_integer_string_keys_match_as_numbers(archive: Archive) -> None:
    found = archive.query(
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study_uid("A"), "SeriesNumber": "02",
         "Modality": ""}
    )  # fmt: skip
    assert [ds.Modality for ds in found] == ["MR"]
    found = archive.query(
        {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study_uid("A"), "InstanceNumber": "2",
         "SOPInstanceUID": ""}
    )  # fmt: skip
    assert [ds.SOPInstanceUID for ds in found] == [uid_from("sop/A12")]


def test_universal_matching_returns_stored_values_and_only_the_keys_asked(
    archive: Archive,
) -> None:
    query = {
        "QueryRetrieveLevel": "STUDY",
        "StudyInstanceUID": study_uid("A"),
        "PatientName": "",
        "StudyDate": "",
        "StudyTime": "",
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
        "PatientAge": "",  # not indexed: returned empty
        "ReferencedStudySequence": None,  # a sequence the index does not hold
    }
    (match,) = archive.query(query)
    assert {elem.keyword for elem in match} == set(query)
    assert str(match.PatientName) == "DOE^JANE"
    assert (match.StudyDate, match.StudyTime) == ("20190101", "101500")
    assert (int(match.NumberOfStudyRelatedSeries), int(match.NumberOfStudyRelatedInstances)) == (
        2,
        3,
    )
    assert match["PatientAge"].is_empty and match["ReferencedStudySequence"].is_empty
    assert "SpecificCharacterSet" not in match


def test_non_ascii_values_match_and_come_back_in_utf8(archive: Archive) -> None:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "müller*"
    query.PatientID = ""
    (match,) = archive.query(query, model="patient")
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "MÜLLER^ÄNNE"


def test_keys_below_the_level_are_returned_empty_and_not_matched(archive: Archive) -> None:
    found = archive.query(
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid("A"), "InstanceNumber": "99"}
    )
    assert len(found) == 1 and found[0]["InstanceNumber"].is_empty


def test_patient_level_counts(archive: Archive) -> None:
    (match,) = archive.query(
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientID": "PAT-1",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": "",
        },
        model="patient",
    )
    counts = (
        match.NumberOfPatientRelatedStudies,
        match.NumberOfPatientRelatedSeries,
        match.NumberOfPatientRelatedInstances,
    )
    assert tuple(int(c) for c in counts) == (1, 2, 3)


def test_image_level_across_the_archive(archive: Archive) -> None:
    found = archive.query({"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""})
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(
        uid_from(f"sop/{s['sop']}") for s in POPULATION
    )
    assert all(ds.QueryRetrieveLevel == "IMAGE" for ds in found)


@pytest.mark.parametrize(
    ("model", "level"),
    [("study", "PATIENT"), ("psonly", "SERIES"), ("psonly", "IMAGE"), ("patient", ""),
     ("patient", "FRAME")],
)  # fmt: skip
def test_levels_outside_the_model_are_refused(archive: Archive, model: str, level: str) -> None:
    with pytest.raises(StatusError) as caught:
        archive.query({"QueryRetrieveLevel": level, "PatientID": ""}, model=model)
    assert caught.value.status == 0xA900


def test_retrieve_needs_the_unique_key_of_its_level(archive: Archive) -> None:
    with pytest.raises(StatusError) as caught:
        archive.retrieve_paths({"QueryRetrieveLevel": "STUDY", "PatientID": "PAT-1"})
    assert caught.value.status == 0xA900
    paths = archive.retrieve_paths({"QueryRetrieveLevel": "SERIES",
                                    "SeriesInstanceUID": uid_from("study/A/series/1")})  # fmt: skip
    assert sorted(p.name for p in paths) == sorted(
        f"{uid_from(f'sop/{n}')}.dcm" for n in ("A11", "A12")
    )
    assert all(p.is_file() for p in paths)


# -- the archive against a reference matcher -------------------------------------------------

NAMES = ["DOE^JANE", "doe^jane", "DOE^JOHN", "50%_OFF^X", "[A]^B", "MÜLLER^ÄNNE", "O'NEIL^ANN^^"]
TEXTS = ["CT Chest", "ct chest", "100%", "a_b", "[x]", ""]
DATES = ["20190101", "20190615", "20191231", "20200101", ""]
TIMES = ["101500", "1015", "10", "101500.25", "235959.999999", "0800", ""]
MODALITIES = ["CT", "MR", "ct"]


@dataclass
class Ref:
    """One entity of the reference model: its attributes by keyword and its parent."""

    attrs: dict[str, str]
    parent: Ref | None = None
    children: list[Ref] = field(default_factory=list)

    def get(self, keyword: str) -> str:
        node: Ref | None = self
        while node is not None:
            if keyword in node.attrs:
                return node.attrs[keyword]
            node = node.parent
        raise KeyError(keyword)


LEVEL_KEYS = {
    "PATIENT": {"PatientID": "text", "PatientName": "pn", "PatientBirthDate": "date"},
    "STUDY": {"StudyInstanceUID": "uid", "StudyDate": "date", "StudyTime": "time",
              "StudyDescription": "text", "AccessionNumber": "text", "ModalitiesInStudy": "mods"},
    "SERIES": {"SeriesInstanceUID": "uid", "Modality": "text", "SeriesNumber": "int"},
    "IMAGE": {"SOPInstanceUID": "uid", "InstanceNumber": "int"},
}  # fmt: skip
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID"}  # fmt: skip
ORDER = ["PATIENT", "STUDY", "SERIES", "IMAGE"]


def _ref_fold_pn(value: str) -> str:
    groups = [g.strip().rstrip("^").strip() for g in value.strip().split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups).casefold()


def _ref_pattern(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _ref_micro(value: str, upper: bool) -> int:
    """A TM value as microseconds since midnight: start (or end) of the period it names."""
    main, _, frac = value.partition(".")
    hh = int(main[0:2])
    mm = int(main[2:4]) if len(main) >= 4 else (59 if upper else 0)
    ss = int(main[4:6]) if len(main) >= 6 else (59 if upper else 0)
    pad = "9" if upper else "0"
    micro = int((frac or pad).ljust(6, pad))
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + micro


def _ref_match(kind: str, query: str, entity: Ref, keyword: str) -> bool:
    if kind == "mods":
        if query in ("", "*"):
            return True
        study: Ref | None = entity
        while study is not None and "StudyInstanceUID" not in study.attrs:
            study = study.parent
        assert study is not None
        return any(_ref_match("text", query, series, "Modality") for series in study.children)
    value = entity.get(keyword)
    if query == "" or (query and not query.strip("*")):
        return True  # universal (C.2.2.2.3, C.2.2.2.4)
    if value == "":
        return False
    if kind == "uid":
        return value in query.split("\\")
    if kind == "int":
        return int(value) == int(query)
    if kind == "pn":
        if "*" in query or "?" in query:
            return _ref_pattern(query.casefold(), _ref_fold_pn(value))
        return _ref_fold_pn(query) == _ref_fold_pn(value)
    if kind == "text":
        if "*" in query or "?" in query:
            return _ref_pattern(query, value)
        return query == value
    if kind == "date":
        if "-" not in query:
            return value == query
        lo, _, hi = query.partition("-")
        return (not lo or value >= lo) and (not hi or value <= hi)
    if kind == "time":
        instant = _ref_micro(value, upper=False)
        lo, dash, hi = query.partition("-")
        if not dash:
            lo = hi = query
        return (not lo or instant >= _ref_micro(lo, False)) and (
            not hi or instant <= _ref_micro(hi, True)
        )
    raise AssertionError(kind)


@st.composite
def populations(draw: st.DrawFn) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for p in range(draw(st.integers(1, 3))):
        patient = {
            "PatientID": f"P{p}",
            "PatientName": draw(st.sampled_from(NAMES)),
            "PatientBirthDate": draw(st.sampled_from(DATES)),
        }
        for s in range(draw(st.integers(1, 2))):
            study = {
                "study": f"{p}.{s}",
                "StudyDate": draw(st.sampled_from(DATES)),
                "StudyTime": draw(st.sampled_from(TIMES)),
                "StudyDescription": draw(st.sampled_from(TEXTS)),
                "AccessionNumber": draw(st.sampled_from(TEXTS)),
            }
            for se in range(draw(st.integers(1, 2))):
                series = {
                    "series": str(se),
                    "Modality": draw(st.sampled_from(MODALITIES)),
                    "SeriesNumber": str(draw(st.integers(1, 3))),
                }
                for i in range(draw(st.integers(1, 2))):
                    specs.append(
                        {
                            **patient,
                            **study,
                            **series,
                            "sop": f"{p}.{s}.{se}.{i}",
                            "InstanceNumber": str(draw(st.integers(1, 3))),
                        }
                    )
    return specs


def _wildcarded(value: str) -> st.SearchStrategy[str]:
    def apply(ops: list[str]) -> str:
        out = []
        for ch, op in zip(value, ops, strict=True):
            out.append({"keep": ch, "?": "?", "*": "*", "swap": ch.swapcase(), "drop": ""}[op])
        return "".join(out)

    return st.lists(
        st.sampled_from(["keep", "keep", "keep", "?", "*", "swap", "drop"]),
        min_size=len(value),
        max_size=len(value),
    ).map(apply)


def _values(kind: str, uid_pool: list[str]) -> st.SearchStrategy[str]:
    if kind == "uid":
        return st.one_of(
            st.just(""),
            st.sampled_from(uid_pool),
            st.lists(st.sampled_from(uid_pool), min_size=2, max_size=3).map("\\".join),
        )
    if kind == "int":
        return st.one_of(
            st.just(""), st.integers(1, 3).map(str), st.integers(1, 3).map("0{}".format)
        )
    if kind == "date":
        some = st.sampled_from([d for d in DATES if d])
        return st.one_of(
            st.just(""),
            some,
            st.tuples(some, some).map("-".join),
            some.map("{}-".format),
            some.map("-{}".format),
        )
    if kind == "time":
        some = st.sampled_from([t for t in TIMES if t] + ["1016", "09", "23"])
        return st.one_of(
            st.just(""),
            some,
            st.tuples(some, some).map("-".join),
            some.map("{}-".format),
            some.map("-{}".format),
        )
    pool = {"pn": NAMES, "text": TEXTS + ["P0", "P1", "P2"], "mods": MODALITIES}[kind]
    return st.one_of(st.just(""), st.just("*"), st.sampled_from(pool),
                     st.sampled_from(pool).flatmap(_wildcarded))  # fmt: skip


@st.composite
def queries(draw: st.DrawFn, specs: list[dict[str, Any]]) -> tuple[str, str, dict[str, str]]:
    model = draw(st.sampled_from(["patient", "study"]))
    level = draw(st.sampled_from(ORDER if model == "patient" else ORDER[1:]))
    uid_pool = sorted(
        {uid_from(f"study/{s['study']}") for s in specs}
        | {uid_from(f"study/{s['study']}/series/{s['series']}") for s in specs}
        | {uid_from(f"sop/{s['sop']}") for s in specs}
    )
    keys: dict[str, str] = {UNIQUE[level]: ""}
    for lvl in ORDER[: ORDER.index(level) + 1]:
        for keyword, kind in LEVEL_KEYS[lvl].items():
            if draw(st.booleans()):
                keys[keyword] = draw(_values(kind, uid_pool))
    return model, level, keys


def _reference(specs: list[dict[str, Any]]) -> dict[str, list[Ref]]:
    """The population as a tree of Ref entities, listed by level."""
    by_level: dict[str, dict[str, Ref]] = {lvl: {} for lvl in ORDER}
    for spec in specs:
        attrs = {
            "PATIENT": {k: spec[k] for k in ("PatientID", "PatientName", "PatientBirthDate")},
            "STUDY": {
                "StudyInstanceUID": uid_from(f"study/{spec['study']}"),
                **{
                    k: spec[k]
                    for k in ("StudyDate", "StudyTime", "StudyDescription", "AccessionNumber")
                },
            },
            "SERIES": {
                "SeriesInstanceUID": uid_from(f"study/{spec['study']}/series/{spec['series']}"),
                "Modality": spec["Modality"],
                "SeriesNumber": spec["SeriesNumber"],
            },
            "IMAGE": {
                "SOPInstanceUID": uid_from(f"sop/{spec['sop']}"),
                "InstanceNumber": spec["InstanceNumber"],
            },
        }
        parent: Ref | None = None
        for lvl in ORDER:
            unique = attrs[lvl][UNIQUE[lvl]]
            node = by_level[lvl].get(unique)
            if node is None:
                node = by_level[lvl][unique] = Ref(attrs[lvl], parent)
                if parent is not None:
                    parent.children.append(node)
            parent = node
    return {lvl: list(nodes.values()) for lvl, nodes in by_level.items()}


def _kind(keyword: str) -> str:
    for keys in LEVEL_KEYS.values():
        if keyword in keys:
            return keys[keyword]
    raise KeyError(keyword)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data(), specs=populations())
def test_archive_matches_like_the_reference(
    data: st.DataObject, specs: list[dict[str, Any]]
) -> None:
    base = Path(tempfile.mkdtemp(prefix="aiodimse-match-"))
    try:
        paths = save(base / "src", [instance(**spec) for spec in specs])
        with Archive(base / "archive") as archive:
            assert archive.ingest(paths) == len(specs)
            tree = _reference(specs)
            for _ in range(4):
                model, level, keys = data.draw(queries(specs), label="query")
                found = archive.query({"QueryRetrieveLevel": level, **keys}, model=model)
                expected = [
                    entity
                    for entity in tree[level]
                    if all(_ref_match(_kind(k), v, entity, k) for k, v in keys.items())
                ]
                unique = UNIQUE[level]
                assert sorted(str(ds[unique].value) for ds in found) == sorted(
                    e.get(unique) for e in expected
                ), (level, keys)
                # Every returned key carries the entity's stored value.
                by_unique = {e.get(unique): e for e in expected}
                for ds in found:
                    entity = by_unique[str(ds[unique].value)]
                    for keyword in keys:
                        if keyword in ("ModalitiesInStudy",):
                            continue
                        returned = ds[keyword].value
                        text = "" if returned is None else str(returned)
                        assert text == entity.get(keyword), (keyword, text)
    finally:
        shutil.rmtree(base, ignore_errors=True)
