"""The journal of a retrieval job: its spec, its work list and every study's state.

The default is one SQLite file (nothing to install). Every change is committed before
the job acts on it, so a job killed at any moment (``kill -9``) resumes from the journal:
studies that were ``done`` are never fetched again, studies that were ``running`` are
re-checked against what is on disk, and nothing is lost. The interface is async so that a
journal in a database server (PostgreSQL) can implement it too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import JobSpec, WorkItem

__all__ = [
    "FINAL_STATES",
    "STATES",
    "STUDY_COLUMNS",
    "Journal",
    "JournalError",
    "SQLiteJournal",
    "StudyRow",
    "WorkRow",
    "study_row",
]

#: A study's states. ``unverified``: moved to a third-party AE that cannot be queried.
STATES = ("pending", "running", "done", "partial", "failed", "unverified")
FINAL_STATES = frozenset({"done", "partial", "failed", "unverified"})
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS work (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending, expanded, not-found
    studies INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    source INTEGER NOT NULL,
    study_uid TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    expected INTEGER,
    received INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    missing TEXT,
    patient_id TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_ready ON studies (source, state, priority DESC, id);
"""


class JournalError(Exception):
    """The journal cannot be used (missing, of another job, of a newer version)."""


@dataclass(frozen=True)
class WorkRow:
    """A work item to expand into studies (``key`` "query" holds the query as JSON)."""

    id: int
    key: str
    value: str
    priority: int
    state: str
    studies: int
    error: str | None


@dataclass(frozen=True)
class StudyRow:
    """One study of the job, as the journal has it."""

    id: int
    source: int
    study_uid: str
    priority: int
    state: str
    expected: int | None
    received: int
    attempts: int
    not_before: float
    last_error: str | None
    missing: tuple[str, ...]
    patient_id: str | None
    created: float
    started: float | None
    finished: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study_uid,
            "source": self.source,
            "state": self.state,
            "expected": self.expected,
            "received": self.received,
            "attempts": self.attempts,
            "error": self.last_error,
            "missing": list(self.missing),
        }


class Journal:
    """What the job runner needs from a journal (SQLite here; PostgreSQL elsewhere)."""

    async def create(self, spec: JobSpec) -> None:
        raise NotImplementedError

    async def spec(self) -> JobSpec:
        raise NotImplementedError

    async def work(self, state: str | None = None) -> list[WorkRow]:
        raise NotImplementedError

    async def expand(
        self,
        work_id: int,
        studies: Sequence[tuple[int, str, int | None, str | None]],
        *,
        state: str = "expanded",
        error: str | None = None,
    ) -> int:
        """Record what a work item expanded into: (source, study UID, instances hinted,
        patient ID) each; returns how many studies were new."""
        raise NotImplementedError

    async def recover(self) -> int:
        """Put studies left ``running`` by a process that is gone back to ``pending``."""
        raise NotImplementedError

    async def claim(self, source: int, now: float) -> StudyRow | None:
        """The next ready study of ``source`` by priority, marked running."""
        raise NotImplementedError

    async def next_ready(self, source: int) -> float | None:
        """When the earliest deferred study of ``source`` is due (None: none pending)."""
        raise NotImplementedError

    async def finish(
        self,
        study_id: int,
        state: str,
        *,
        expected: int | None,
        received: int,
        missing: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        raise NotImplementedError

    async def defer(self, study_id: int, error: str, not_before: float, received: int) -> None:
        """Back to pending after a transient failure, not to be claimed before
        ``not_before``."""
        raise NotImplementedError

    async def release(self, study_id: int, error: str | None = None) -> None:
        """Back to pending without counting the attempt (the source stopped, or the job
        was interrupted before the study was touched)."""
        raise NotImplementedError

    async def counts(self) -> dict[str, int]:
        raise NotImplementedError

    async def totals(self) -> tuple[int, int]:
        """(expected instances, received instances) over every study."""
        raise NotImplementedError

    async def studies(self, states: Iterable[str] | None = None) -> list[StudyRow]:
        raise NotImplementedError

    async def set_meta(self, key: str, value: str) -> None:
        raise NotImplementedError

    async def meta(self, key: str) -> str | None:
        raise NotImplementedError

    async def metas(self, prefix: str) -> dict[str, str]:
        """Every meta value whose key starts with ``prefix``."""
        raise NotImplementedError

    async def delete_meta(self, key: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


#: The columns a StudyRow is read from, in its order (both journals).
STUDY_COLUMNS = (
    "id, source, study_uid, priority, state, expected, received, attempts, not_before,"
    " last_error, missing, patient_id, created, started, finished"
)


def study_row(row: Sequence[Any]) -> StudyRow:
    """A StudyRow from a row of STUDY_COLUMNS (``missing`` stored as JSON)."""
    missing = tuple(json.loads(row[10])) if row[10] else ()
    fields = [*row[:10], missing, *row[11:]]
    return StudyRow(*fields)


class SQLiteJournal(Journal):
    """The journal in one SQLite file (WAL, synchronous=FULL: a committed state survives
    a crash of the process or of the machine)."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise JournalError(f"{self.path}: no such journal")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: not a job journal ({exc})") from None
        version = self._get("version")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal version {version} is newer than this")

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    async def create(self, spec: JobSpec) -> None:
        if self._get("spec") is not None:
            raise JournalError(f"{self.path} already holds a job: resume it, or use a new file")
        now = time.time()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO meta VALUES ('version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT INTO meta VALUES ('spec', ?)", (json.dumps(spec.to_json()),))
            db.execute("INSERT INTO meta VALUES ('created', ?)", (repr(now),))
            if spec.query:
                db.execute(
                    "INSERT INTO work (key, value) VALUES ('query', ?)",
                    (json.dumps(dict(spec.query), sort_keys=True),),
                )
            db.executemany(
                "INSERT INTO work (key, value, priority) VALUES (?, ?, ?)",
                [(i.key, i.value, i.priority) for i in spec.items],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def spec(self) -> JobSpec:
        text = self._get("spec")
        if text is None:
            raise JournalError(f"{self.path}: the journal holds no job")
        return JobSpec.from_json(json.loads(text))

    async def work(self, state: str | None = None) -> list[WorkRow]:
        sql = "SELECT id, key, value, priority, state, studies, error FROM work"
        rows = (
            self._db.execute(sql + " WHERE state = ? ORDER BY id", (state,))
            if state is not None
            else self._db.execute(sql + " ORDER BY id")
        )
        return [WorkRow(*row) for row in rows]

    async def expand(
        self,
        work_id: int,
        studies: Sequence[tuple[int, str, int | None, str | None]],
        *,
        state: str = "expanded",
        error: str | None = None,
    ) -> int:
        db = self._db
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            priority = db.execute("SELECT priority FROM work WHERE id = ?", (work_id,)).fetchone()
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO studies (source, study_uid, priority, expected,"
                " patient_id, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (source, uid, priority[0] if priority else 0, hint, patient, now, now)
                    for source, uid, hint, patient in studies
                ],
            )
            added = db.total_changes - before
            db.execute(
                "UPDATE work SET state = ?, studies = ?, error = ? WHERE id = ?",
                (state, len(studies), error, work_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    async def recover(self) -> int:
        cursor = self._write(
            "UPDATE studies SET state = 'pending', updated = ? WHERE state = 'running'",
            (time.time(),),
        )
        return cursor.rowcount

    async def claim(self, source: int, now: float) -> StudyRow | None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                f"SELECT {STUDY_COLUMNS} FROM studies WHERE source = ? AND state = 'pending'"
                " AND not_before <= ? ORDER BY priority DESC, id LIMIT 1",
                (source, now),
            ).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute(
                "UPDATE studies SET state = 'running', attempts = attempts + 1, started = ?,"
                " updated = ? WHERE id = ?",
                (now, now, row[0]),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        study = study_row(row)
        return StudyRow(**{**study.__dict__, "state": "running", "attempts": study.attempts + 1})

    async def next_ready(self, source: int) -> float | None:
        row = self._db.execute(
            "SELECT MIN(not_before) FROM studies WHERE source = ? AND state = 'pending'",
            (source,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def finish(
        self,
        study_id: int,
        state: str,
        *,
        expected: int | None,
        received: int,
        missing: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        now = time.time()
        self._write(
            "UPDATE studies SET state = ?, expected = ?, received = ?, missing = ?,"
            " last_error = ?, finished = ?, updated = ? WHERE id = ?",
            (
                state,
                expected,
                received,
                json.dumps(list(missing)) if missing else None,
                error,
                now,
                now,
                study_id,
            ),
        )

    async def defer(self, study_id: int, error: str, not_before: float, received: int) -> None:
        self._write(
            "UPDATE studies SET state = 'pending', last_error = ?, not_before = ?, received = ?,"
            " updated = ? WHERE id = ?",
            (error, not_before, received, time.time(), study_id),
        )

    async def release(self, study_id: int, error: str | None = None) -> None:
        self._write(
            "UPDATE studies SET state = 'pending', attempts = MAX(attempts - 1, 0),"
            " last_error = COALESCE(?, last_error), updated = ? WHERE id = ?",
            (error, time.time(), study_id),
        )

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state"):
            counts[str(state)] = int(n)
        return counts

    async def totals(self) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT COALESCE(SUM(expected), 0), COALESCE(SUM(received), 0) FROM studies"
        ).fetchone()
        return int(row[0]), int(row[1])

    async def studies(self, states: Iterable[str] | None = None) -> list[StudyRow]:
        sql = f"SELECT {STUDY_COLUMNS} FROM studies"
        params: list[str] = []
        if states is not None:
            params = list(states)
            sql += f" WHERE state IN ({', '.join('?' * len(params))})"
        return [study_row(row) for row in self._db.execute(sql + " ORDER BY id", params)]

    async def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    async def meta(self, key: str) -> str | None:
        return self._get(key)

    async def metas(self, prefix: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {str(k): str(v) for k, v in rows}

    async def delete_meta(self, key: str) -> None:
        self._write("DELETE FROM meta WHERE key = ?", (key,))

    async def close(self) -> None:
        self._db.close()


def work_items(rows: Iterable[WorkRow]) -> list[WorkItem]:
    """The work items of rows that are not a query."""
    return [WorkItem(r.key, r.value, r.priority) for r in rows if r.key != "query"]
