"""The archive's index: patients, studies, series and instances in one SQLite file.

One connection, used from the event loop's thread only; every write is one short
transaction (no ``await`` inside), so concurrent associations never see half an update.
WAL mode lets readers (other tools, a backup) look while the archive writes.

Values are stored as text without padding (as PS3.5 says it is not significant); PN values
also have a case-folded column and TM values a normalised one, for matching (see
:mod:`aiodimse.archive.matching`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydicom import Dataset
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

from .matching import (
    Condition,
    Key,
    condition,
    date_key,
    int_key,
    pn_key,
    text_key,
    time_key,
)

__all__ = [
    "KEYS",
    "LEVELS",
    "RECORD_TAGS",
    "Index",
    "Plan",
    "Record",
    "element_text",
    "is_busy",
    "plan_query",
]

LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_DEPTH: Final = {level: i for i, level in enumerate(LEVELS)}

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS patients (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL UNIQUE,
    patient_name TEXT NOT NULL,
    patient_name_key TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    sex TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS patients_name ON patients (patient_name_key);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    patient_pk INTEGER NOT NULL REFERENCES patients (id),
    study_uid TEXT NOT NULL UNIQUE,
    study_date TEXT NOT NULL,
    study_time TEXT NOT NULL,
    study_time_key TEXT NOT NULL,
    accession TEXT NOT NULL,
    study_id TEXT NOT NULL,
    description TEXT NOT NULL,
    referring TEXT NOT NULL,
    referring_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_pk);
CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies (accession);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    study_pk INTEGER NOT NULL REFERENCES studies (id),
    series_uid TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    series_number INTEGER,
    description TEXT NOT NULL,
    body_part TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series (study_pk);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    series_pk INTEGER NOT NULL REFERENCES series (id),
    sop_uid TEXT NOT NULL UNIQUE,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances (series_pk, instance_number);
"""

_FROM: Final = {
    "PATIENT": "patients p",
    "STUDY": "studies st JOIN patients p ON p.id = st.patient_pk",
    "SERIES": (
        "series se JOIN studies st ON st.id = se.study_pk JOIN patients p ON p.id = st.patient_pk"
    ),
    "IMAGE": (
        "instances i JOIN series se ON se.id = i.series_pk"
        " JOIN studies st ON st.id = se.study_pk JOIN patients p ON p.id = st.patient_pk"
    ),
}


def _key(
    keyword: str, tag: int, vr: str, level: str, kind: str, expr: str, match: str | None = None
) -> Key:
    return Key(keyword, tag, vr, level, kind, expr, match)


#: Every attribute the index answers, by tag (PS3.4 C.6.1.1 / C.6.2.1 keys and a few more).
KEYS: Final[dict[int, Key]] = {
    k.tag: k
    for k in (
        # Patient level (PS3.4 Table C.6-1)
        _key(
            "PatientName", 0x00100010, "PN", "PATIENT", "pn",
            "p.patient_name", "p.patient_name_key",
        ),
        _key("PatientID", 0x00100020, "LO", "PATIENT", "text", "p.patient_id"),
        _key("PatientBirthDate", 0x00100030, "DA", "PATIENT", "date", "p.birth_date"),
        _key("PatientSex", 0x00100040, "CS", "PATIENT", "text", "p.sex"),
        _key(
            "NumberOfPatientRelatedStudies", 0x00201200, "IS", "PATIENT", "count",
            "(SELECT COUNT(*) FROM studies c WHERE c.patient_pk = p.id)",
        ),
        _key(
            "NumberOfPatientRelatedSeries", 0x00201202, "IS", "PATIENT", "count",
            "(SELECT COUNT(*) FROM series c JOIN studies c2 ON c2.id = c.study_pk"
            " WHERE c2.patient_pk = p.id)",
        ),
        _key(
            "NumberOfPatientRelatedInstances", 0x00201204, "IS", "PATIENT", "count",
            "(SELECT COUNT(*) FROM instances c JOIN series c2 ON c2.id = c.series_pk"
            " JOIN studies c3 ON c3.id = c2.study_pk WHERE c3.patient_pk = p.id)",
        ),
        # Study level (PS3.4 Table C.6-2)
        _key("StudyInstanceUID", 0x0020000D, "UI", "STUDY", "uid", "st.study_uid"),
        _key("StudyDate", 0x00080020, "DA", "STUDY", "date", "st.study_date"),
        _key("StudyTime", 0x00080030, "TM", "STUDY", "time", "st.study_time", "st.study_time_key"),
        _key("AccessionNumber", 0x00080050, "SH", "STUDY", "text", "st.accession"),
        _key("StudyID", 0x00200010, "SH", "STUDY", "text", "st.study_id"),
        _key("StudyDescription", 0x00081030, "LO", "STUDY", "text", "st.description"),
        _key(
            "ReferringPhysicianName", 0x00080090, "PN", "STUDY", "pn",
            "st.referring", "st.referring_key",
        ),
        _key(
            "ModalitiesInStudy", 0x00080061, "CS", "STUDY", "modalities",
            "(SELECT group_concat(c.modality, '\\') FROM series c WHERE c.study_pk = st.id)",
        ),
        _key(
            "NumberOfStudyRelatedSeries", 0x00201206, "IS", "STUDY", "count",
            "(SELECT COUNT(*) FROM series c WHERE c.study_pk = st.id)",
        ),
        _key(
            "NumberOfStudyRelatedInstances", 0x00201208, "IS", "STUDY", "count",
            "(SELECT COUNT(*) FROM instances c JOIN series c2 ON c2.id = c.series_pk"
            " WHERE c2.study_pk = st.id)",
        ),
        # Series level (PS3.4 Table C.6-3)
        _key("SeriesInstanceUID", 0x0020000E, "UI", "SERIES", "uid", "se.series_uid"),
        _key("Modality", 0x00080060, "CS", "SERIES", "text", "se.modality"),
        _key("SeriesNumber", 0x00200011, "IS", "SERIES", "int", "se.series_number"),
        _key("SeriesDescription", 0x0008103E, "LO", "SERIES", "text", "se.description"),
        _key("BodyPartExamined", 0x00180015, "CS", "SERIES", "text", "se.body_part"),
        _key(
            "NumberOfSeriesRelatedInstances", 0x00201209, "IS", "SERIES", "count",
            "(SELECT COUNT(*) FROM instances c WHERE c.series_pk = se.id)",
        ),
        # Composite object instance level (PS3.4 Table C.6-4)
        _key("SOPInstanceUID", 0x00080018, "UI", "IMAGE", "uid", "i.sop_uid"),
        _key("SOPClassUID", 0x00080016, "UI", "IMAGE", "uid", "i.sop_class_uid"),
        _key("InstanceNumber", 0x00200013, "IS", "IMAGE", "int", "i.instance_number"),
    )
}  # fmt: skip

#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS: Final = {
    "PATIENT": 0x00100020,
    "STUDY": 0x0020000D,
    "SERIES": 0x0020000E,
    "IMAGE": 0x00080018,
}

QUERY_RETRIEVE_LEVEL: Final = 0x00080052
SPECIFIC_CHARACTER_SET: Final = 0x00080005
RETRIEVE_AE_TITLE: Final = 0x00080054
INSTANCE_AVAILABILITY: Final = 0x00080056

# VRs whose values are in the Specific Character Set (PS3.5 6.1.2.3), with the delimiters
# that reset ISO 2022 code extensions in them.
_CHARSET_VRS: Final = {
    "SH": {0x5C},
    "LO": {0x5C},
    "UC": {0x5C},
    "PN": {0x5C, 0x5E, 0x3D},
    "ST": {0x0D, 0x0A, 0x09, 0x0C},
    "LT": {0x0D, 0x0A, 0x09, 0x0C},
    "UT": {0x0D, 0x0A, 0x09, 0x0C},
}


def _encodings(ds: Dataset) -> list[str]:
    raw = element_text(ds, SPECIFIC_CHARACTER_SET, charset=False)
    terms = [t.strip() for t in raw.split("\\")] if raw else []
    try:
        return list(convert_encodings(terms or ["ISO_IR 6"]))
    except LookupError:
        return ["iso8859"]


def element_text(ds: Dataset, tag: int, *, charset: bool = True, vr: str | None = None) -> str:
    """An element's value as text without padding, decoded in the data set's character
    set, multiple values joined with a backslash; "" when absent or empty. Raw elements are
    decoded from their bytes (no pydicom validation of query values like ``2019-``)."""
    elem: Any = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(elem, RawDataElement):
        if not value:
            return ""
        if vr is None:
            vr = elem.VR
            if vr is None:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = "UN"
        if vr == "SQ":
            return ""
        raw = bytes(value)
        delims = _CHARSET_VRS.get(vr)
        if charset and delims is not None:
            text = decode_bytes(raw, _encodings(ds), delims)
        else:
            text = raw.decode("latin-1")
        return text_key(text)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _scalar_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return text_key(original)
    if isinstance(value, bytes):
        return text_key(value.decode("latin-1"))
    return text_key(str(value))


#: Where each field of a :class:`Record` comes from: an element of the instance's header.
_RECORD_SOURCES: Final = {
    "sop_instance_uid": 0x00080018,
    "sop_class_uid": 0x00080016,
    "patient_id": 0x00100020,
    "patient_name": 0x00100010,
    "birth_date": 0x00100030,
    "sex": 0x00100040,
    "study_uid": 0x0020000D,
    "study_date": 0x00080020,
    "study_time": 0x00080030,
    "accession": 0x00080050,
    "study_id": 0x00200010,
    "study_description": 0x00081030,
    "referring": 0x00080090,
    "series_uid": 0x0020000E,
    "modality": 0x00080060,
    "series_number": 0x00200011,
    "series_description": 0x0008103E,
    "body_part": 0x00180015,
    "instance_number": 0x00200013,
}
_DATES: Final = frozenset({"birth_date", "study_date"})
#: The elements :meth:`Record.from_header` reads, all in groups 0008 to 0020.
RECORD_TAGS: Final = frozenset(_RECORD_SOURCES.values())


@dataclass(slots=True)
class Record:
    """The attributes of one instance that the index keeps (read from its header)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    accession: str = ""
    study_id: str = ""
    study_description: str = ""
    referring: str = ""
    series_uid: str = ""
    modality: str = ""
    series_number: str = ""
    series_description: str = ""
    body_part: str = ""
    instance_number: str = ""

    @classmethod
    def from_header(cls, ds: Dataset, transfer_syntax: str) -> Record:
        """The record of a data set read up to group 0020 (raw elements are fine)."""
        values: dict[str, str] = {}
        for name, tag in _RECORD_SOURCES.items():
            text = element_text(ds, tag)
            values[name] = date_key(text) if name in _DATES else text
        return cls(transfer_syntax=transfer_syntax, **values)

    def problem(self) -> str | None:
        """Why this instance cannot be indexed, or None."""
        if not self.study_uid:
            return "the data set has no Study Instance UID"
        if not self.series_uid:
            return "the data set has no Series Instance UID"
        if not self.sop_instance_uid:
            return "the data set has no SOP Instance UID"
        return None


# -- query plans -------------------------------------------------------------------------


@dataclass(slots=True)
class Returned:
    """One attribute of the response identifier: a column of the row, or a constant."""

    tag: int
    vr: str
    column: int | None = None  # index in the row
    constant: str | None = None
    kind: str = "text"


@dataclass(slots=True)
class Plan:
    """A C-FIND (or retrieve) request as SQL: what to select, where, and what to return."""

    level: str
    sql: str
    params: tuple[Any, ...]
    returned: list[Returned] = field(default_factory=list)
    unsupported: list[int] = field(default_factory=list)


def plan_query(
    identifier: Dataset,
    level: str,
    *,
    select: Sequence[str] | None = None,
    from_level: str | None = None,
    order_by: str | None = None,
    retrieve_ae_title: str | None = None,
) -> Plan:
    """Translate ``identifier`` at ``level`` into SQL (see :mod:`.matching` for the rules).

    Keys of ``level`` and of the levels above it are matched and returned (the archive is
    lenient: keys above the level need not be unique keys). Keys the index does not hold,
    and keys of levels below ``level``, are not matched and are returned empty (PS3.4
    C.2.2.1.3: an Optional Key the SCP does not match on is a Return Key; the archive has
    no value for it). ``select`` replaces the returned columns and ``from_level`` the
    entities selected (retrieval: the instances of the matching studies, series ...).
    """
    depth = _DEPTH[level]
    where: list[str] = []
    params: list[Any] = []
    columns: list[str] = list(select or ())
    returned: list[Returned] = []
    unsupported: list[int] = []
    for element_tag in identifier.keys():  # noqa: SIM118 - keys() does not convert raw elements
        tag = int(element_tag)
        group, elem = tag >> 16, tag & 0xFFFF
        if group < 0x0008 or group & 1 or elem == 0:
            continue  # command/meta groups, private elements, group lengths
        if tag == SPECIFIC_CHARACTER_SET:
            continue  # never matched (C.2.2.2); added to the response when needed
        if tag == QUERY_RETRIEVE_LEVEL:
            returned.append(Returned(tag, "CS", constant=level))
            continue
        key = KEYS.get(tag)
        if key is None or _DEPTH[key.level] > depth:
            if tag == RETRIEVE_AE_TITLE and retrieve_ae_title:
                returned.append(Returned(tag, "AE", constant=retrieve_ae_title))
            elif tag == INSTANCE_AVAILABILITY:
                returned.append(Returned(tag, "CS", constant="ONLINE"))
            else:
                unsupported.append(tag)
                returned.append(Returned(tag, _vr_of(identifier, tag)))
            continue
        cond: Condition | None = condition(key, element_text(identifier, tag, vr=key.vr))
        if cond is not None:
            where.append(cond.sql)
            params.extend(cond.params)
        if select is None:
            columns.append(key.expr)
            returned.append(Returned(tag, key.vr, column=len(columns) - 1, kind=key.kind))
    if not columns:
        columns.append("1")
    sql = f"SELECT {', '.join(columns)} FROM {_FROM[from_level or level]}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if order_by:
        sql += f" ORDER BY {order_by}"
    return Plan(level, sql, tuple(params), returned, unsupported)


def _vr_of(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag)
    vr = getattr(elem, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def format_value(item: Returned, value: Any) -> str:
    """A selected column as the text of the response attribute."""
    if value is None:
        return ""
    if item.kind == "modalities":
        return "\\".join(sorted({m for m in str(value).split("\\") if m}))
    return str(value)


# -- the index ---------------------------------------------------------------------------


#: Seconds a connection waits for another (thread or process) to release the write lock.
BUSY_TIMEOUT: Final = 5.0
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (SQLITE_BUSY or SQLITE_LOCKED, any
    extended code): the write lock stayed taken past the busy timeout; worth a retry."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return (int(code) & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)


class Index:
    """The SQLite index of an archive (one connection; synchronous, short transactions).

    Several processes may each open the same index (``qrscp --workers N``): WAL mode lets
    them read while one writes, ``BEGIN IMMEDIATE`` takes the write lock before reading
    what it updates, and a writer waits :data:`BUSY_TIMEOUT` for the lock.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        # isolation_level=None: we say BEGIN/COMMIT ourselves; check_same_thread stays on
        # (the index is only used from the event loop's thread).
        # The busy timeout comes first: another process (a worker of ``qrscp --workers``)
        # may hold the write lock while this one switches to WAL or creates the schema.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(_SCHEMA)
        # C-FIND results stream from a connection of their own: each query reads a
        # snapshot (WAL) while stores go on committing through ``db``.
        self.reader = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)

    def close(self) -> None:
        try:
            self.db.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.reader.close()
        self.db.close()

    # -- writing -----------------------------------------------------------------------

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def put(self, record: Record, path: str, size: int) -> None:
        """Index one instance, inside one transaction."""
        self.begin()
        try:
            self.upsert(record, path, size)
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def upsert(self, rec: Record, path: str, size: int) -> None:
        """Insert or replace the rows of one instance (caller holds a transaction).

        A re-sent instance replaces its row; if it now names another series, study or
        patient, it moves there and the entities it leaves empty are deleted. Patient,
        study and series attributes take the values of the latest instance stored.
        """
        db = self.db
        old = db.execute(
            "SELECT se.id, st.id, st.patient_pk FROM instances i"
            " JOIN series se ON se.id = i.series_pk JOIN studies st ON st.id = se.study_pk"
            " WHERE i.sop_uid = ?",
            (rec.sop_instance_uid,),
        ).fetchone()
        old_study_patient = db.execute(
            "SELECT patient_pk FROM studies WHERE study_uid = ?", (rec.study_uid,)
        ).fetchone()
        old_series_study = db.execute(
            "SELECT study_pk FROM series WHERE series_uid = ?", (rec.series_uid,)
        ).fetchone()
        (patient_pk,) = db.execute(
            "INSERT INTO patients (patient_id, patient_name, patient_name_key, birth_date, sex)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (patient_id) DO UPDATE SET"
            " patient_name = excluded.patient_name, patient_name_key = excluded.patient_name_key,"
            " birth_date = excluded.birth_date, sex = excluded.sex RETURNING id",
            (rec.patient_id, rec.patient_name, pn_key(rec.patient_name), rec.birth_date, rec.sex),
        ).fetchone()
        (study_pk,) = db.execute(
            "INSERT INTO studies (patient_pk, study_uid, study_date, study_time, study_time_key,"
            " accession, study_id, description, referring, referring_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (study_uid) DO UPDATE SET"
            " patient_pk = excluded.patient_pk, study_date = excluded.study_date,"
            " study_time = excluded.study_time, study_time_key = excluded.study_time_key,"
            " accession = excluded.accession, study_id = excluded.study_id,"
            " description = excluded.description, referring = excluded.referring,"
            " referring_key = excluded.referring_key RETURNING id",
            (
                patient_pk,
                rec.study_uid,
                rec.study_date,
                rec.study_time,
                time_key(rec.study_time) if rec.study_time else "",
                rec.accession,
                rec.study_id,
                rec.study_description,
                rec.referring,
                pn_key(rec.referring),
            ),
        ).fetchone()
        (series_pk,) = db.execute(
            "INSERT INTO series (study_pk, series_uid, modality, series_number, description,"
            " body_part) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series_uid) DO UPDATE SET"
            " study_pk = excluded.study_pk, modality = excluded.modality,"
            " series_number = excluded.series_number, description = excluded.description,"
            " body_part = excluded.body_part RETURNING id",
            (
                study_pk,
                rec.series_uid,
                rec.modality,
                int_key(rec.series_number),
                rec.series_description,
                rec.body_part,
            ),
        ).fetchone()
        db.execute(
            "INSERT INTO instances (series_pk, sop_uid, sop_class_uid, instance_number,"
            " transfer_syntax, path, size, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (sop_uid) DO UPDATE SET series_pk = excluded.series_pk,"
            " sop_class_uid = excluded.sop_class_uid,"
            " instance_number = excluded.instance_number,"
            " transfer_syntax = excluded.transfer_syntax, path = excluded.path,"
            " size = excluded.size, stored_at = excluded.stored_at",
            (
                series_pk,
                rec.sop_instance_uid,
                rec.sop_class_uid,
                int_key(rec.instance_number),
                rec.transfer_syntax,
                path,
                size,
                time.time(),
            ),
        )
        # Entities an instance, series or study moved away from may now be empty.
        series_left = {old[0]} if old and old[0] != series_pk else set()
        studies_left = {old[1]} if old and old[1] != study_pk else set()
        patients_left = {old[2]} if old and old[2] != patient_pk else set()
        if old_series_study and old_series_study[0] != study_pk:
            studies_left.add(old_series_study[0])
        if old_study_patient and old_study_patient[0] != patient_pk:
            patients_left.add(old_study_patient[0])
        self._prune(series_left, studies_left, patients_left)

    def _prune(
        self, series: Iterable[int], studies: Iterable[int], patients: Iterable[int]
    ) -> None:
        db = self.db
        for pk in series:
            row = db.execute(
                "DELETE FROM series WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM instances WHERE series_pk = ?) RETURNING study_pk",
                (pk, pk),
            ).fetchone()
            if row is not None:
                studies = {*studies, row[0]}
        for pk in set(studies):
            row = db.execute(
                "DELETE FROM studies WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM series WHERE study_pk = ?) RETURNING patient_pk",
                (pk, pk),
            ).fetchone()
            if row is not None:
                patients = {*patients, row[0]}
        for pk in set(patients):
            db.execute(
                "DELETE FROM patients WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM studies WHERE patient_pk = ?)",
                (pk, pk),
            )

    def remove(self, sop_instance_uid: str) -> str | None:
        """Delete one instance's row (and the entities left empty); its path, or None."""
        self.begin()
        try:
            row = self.db.execute(
                "DELETE FROM instances WHERE sop_uid = ? RETURNING series_pk, path",
                (sop_instance_uid,),
            ).fetchone()
            if row is not None:
                self._prune([row[0]], [], [])
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return None if row is None else str(row[1])

    # -- reading -----------------------------------------------------------------------

    def rows(self, plan: Plan) -> list[tuple[Any, ...]]:
        """All rows of a plan, read at once (no cursor stays open across ``await``)."""
        return self.db.execute(plan.sql, plan.params).fetchall()

    def stream(self, plan: Plan, batch: int = 512) -> Generator[list[tuple[Any, ...]], None, None]:
        """The rows of a plan in batches, read as they are asked for (memory stays flat
        however many rows match); close the iterator to stop early."""
        cursor = self.reader.execute(plan.sql, plan.params)
        try:
            while rows := cursor.fetchmany(batch):
                yield rows
        finally:
            cursor.close()

    def iter_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        yield from self.db.execute(sql, params).fetchall()

    def data_version(self) -> int:
        """A number that changes when another connection (or process) commits."""
        (n,) = self.db.execute("PRAGMA data_version").fetchone()
        return int(n)

    def count(self, level: str = "IMAGE") -> int:
        table = {"PATIENT": "patients", "STUDY": "studies", "SERIES": "series"}.get(
            level.upper(), "instances"
        )
        if level.upper() not in _DEPTH:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        (n,) = self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(n)
