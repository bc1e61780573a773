"""The journal of a retrieval job in PostgreSQL, for the distributed mode: the same states
and semantics as :class:`~aiodimse.jobs.journal.SQLiteJournal`, shared by every worker.

The tables live in a schema of their own (``aiodimse``); a database holds many jobs, each
identified by its id (and an optional unique name). Every change is committed before the
caller acts on it; a study is claimed with ``FOR UPDATE SKIP LOCKED`` so that two workers
never take the same one. Needs the ``cluster`` extra (psycopg 3).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from .journal import (
    SCHEMA_VERSION,
    STATES,
    STUDY_COLUMNS,
    Journal,
    JournalError,
    StudyRow,
    WorkRow,
    study_row,
)
from .spec import JobSpec

__all__ = ["SCHEMA", "PostgresJournal", "ensure_schema", "open_pool"]

#: The schema that holds the job tables.
SCHEMA = "aiodimse"

#: A constant advisory-lock key: creating the tables is serialised between processes
#: (concurrent ``CREATE TABLE IF NOT EXISTS`` may otherwise collide in the catalogue).
_SCHEMA_LOCK = 0x41494F44  # "AIOD"

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.jobs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT UNIQUE,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.meta (
    job BIGINT NOT NULL REFERENCES {schema}.jobs ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job, key)
);
CREATE TABLE IF NOT EXISTS {schema}.work (
    job BIGINT NOT NULL REFERENCES {schema}.jobs ON DELETE CASCADE,
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    studies INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS {schema}.studies (
    job BIGINT NOT NULL REFERENCES {schema}.jobs ON DELETE CASCADE,
    id BIGSERIAL PRIMARY KEY,
    source INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    expected INTEGER,
    received INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    missing TEXT,
    patient_id TEXT,
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    updated DOUBLE PRECISION NOT NULL,
    worker TEXT,
    UNIQUE (job, study_uid)
);
CREATE INDEX IF NOT EXISTS studies_ready
    ON {schema}.studies (job, source, state, priority DESC, id);
"""


async def open_pool(dsn: str, size: int = 4) -> AsyncConnectionPool:
    """A small pool of connections to ``dsn`` (opened; close it with ``await pool.close()``)."""
    conn = await AsyncConnection.connect(dsn, connect_timeout=15)  # fails at once, clearly
    await conn.close()
    pool: AsyncConnectionPool = AsyncConnectionPool(
        dsn, min_size=1, max_size=max(size, 1), open=False, timeout=30.0
    )
    await pool.open(wait=True, timeout=30.0)
    return pool


async def ensure_schema(conn: AsyncConnection[Any], schema: str = SCHEMA) -> None:
    """Create the job tables if they are not there yet (safe from several processes)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _DDL.split(";"):
            if statement.strip():
                await conn.execute(sql.SQL(statement.format(schema=schema)))


class PostgresJournal(Journal):
    """One job's journal in PostgreSQL. ``job`` names an existing job (its id, or its
    name); leave it None and call :meth:`create` for a new one (``name`` optional).
    The pool is the caller's unless the journal was made by :meth:`connect`."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        job: int | str | None = None,
        *,
        name: str | None = None,
        schema: str = SCHEMA,
        owns_pool: bool = False,
    ) -> None:
        self.pool = pool
        self._job_ref = job
        self.job_id: int | None = None
        self.name = name
        self.schema = schema
        self._owns_pool = owns_pool
        self._schema_ready = False
        self._resolved = False

    @classmethod
    async def connect(
        cls, dsn: str, job: int | str | None = None, *, name: str | None = None
    ) -> PostgresJournal:
        """A journal with a pool of its own (closed by :meth:`close`)."""
        try:
            pool = await open_pool(dsn, 2)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise JournalError(f"cannot connect to PostgreSQL: {first}") from None
        journal = cls(pool, job, name=name, owns_pool=True)
        try:
            await journal.attach()
        except BaseException:
            await pool.close()
            raise
        return journal

    def _q(self, text: str) -> sql.Composed:
        """``text`` with ``{s}`` naming the schema."""
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    async def attach(self) -> None:
        """Create the tables if needed and resolve the job reference to its id."""
        if not self._schema_ready:
            async with self.pool.connection() as conn:
                await ensure_schema(conn, self.schema)
            self._schema_ready = True
        ref = self._job_ref
        if ref is None or self._resolved:
            return
        if isinstance(ref, int) or ref.isdigit():
            row = await self._one("SELECT id, name FROM {s}.jobs WHERE id = %s", (int(ref),))
        else:
            row = await self._one("SELECT id, name FROM {s}.jobs WHERE name = %s", (ref,))
        if row is None:
            raise JournalError(f"no job {ref!r} in the PostgreSQL journal")
        self.job_id, self.name = int(row[0]), row[1]
        self._resolved = True

    @property
    def job(self) -> int:
        if self.job_id is None:
            raise JournalError("the journal names no job yet: create one first")
        return self.job_id

    async def create(self, spec: JobSpec) -> None:
        await self.attach()
        if self.job_id is not None:
            raise JournalError(f"job {self.job_id} already exists: resume it, or create another")
        now = time.time()
        async with self.pool.connection() as conn, conn.transaction():
            try:
                cur = await conn.execute(
                    self._q("INSERT INTO {s}.jobs (name, created) VALUES (%s, %s) RETURNING id"),
                    (self.name, now),
                )
            except Exception as exc:
                if "unique" in str(exc).lower():
                    raise JournalError(f"a job named {self.name!r} already exists") from None
                raise
            row = await cur.fetchone()
            assert row is not None
            job = int(row[0])
            meta = [
                ("version", str(SCHEMA_VERSION)),
                ("spec", json.dumps(spec.to_json())),
                ("created", repr(now)),
            ]
            async with conn.cursor() as cur:
                await cur.executemany(
                    self._q("INSERT INTO {s}.meta (job, key, value) VALUES (%s, %s, %s)"),
                    [(job, k, v) for k, v in meta],
                )
                work = [(job, i.key, i.value, i.priority) for i in spec.items]
                if spec.query:
                    work.insert(0, (job, "query", json.dumps(dict(spec.query), sort_keys=True), 0))
                await cur.executemany(
                    self._q(
                        "INSERT INTO {s}.work (job, key, value, priority) VALUES (%s, %s, %s, %s)"
                    ),
                    work,
                )
        self.job_id = job
        self._resolved = True

    async def _one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._q(query), params)
            return await cur.fetchone()

    async def _all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._q(query), params)
            return await cur.fetchall()

    async def _exec(self, query: str, params: Sequence[Any] = ()) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._q(query), params)
            return cur.rowcount

    async def spec(self) -> JobSpec:
        text = await self.meta("spec")
        if text is None:
            raise JournalError(f"job {self.job}: the journal holds no spec")
        return JobSpec.from_json(json.loads(text))

    async def work(self, state: str | None = None) -> list[WorkRow]:
        query = (
            "SELECT id, key, value, priority, state, studies, error FROM {s}.work WHERE job = %s"
        )
        if state is None:
            rows = await self._all(query + " ORDER BY id", (self.job,))
        else:
            rows = await self._all(query + " AND state = %s ORDER BY id", (self.job, state))
        return [WorkRow(*row) for row in rows]

    async def expand(
        self,
        work_id: int,
        studies: Sequence[tuple[int, str, int | None, str | None]],
        *,
        state: str = "expanded",
        error: str | None = None,
    ) -> int:
        now = time.time()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                self._q("SELECT priority FROM {s}.work WHERE id = %s AND job = %s FOR UPDATE"),
                (work_id, self.job),
            )
            row = await cur.fetchone()
            priority = int(row[0]) if row else 0
            added = 0
            if studies:
                cur = await conn.execute(
                    self._q(
                        "INSERT INTO {s}.studies (job, source, study_uid, priority, expected,"
                        " patient_id, created, updated)"
                        " SELECT %s, src, uid, %s, hint, patient, %s, %s"
                        " FROM unnest(%s::int[], %s::text[], %s::int[], %s::text[])"
                        " AS t(src, uid, hint, patient)"
                        " ON CONFLICT (job, study_uid) DO NOTHING"
                    ),
                    (
                        self.job,
                        priority,
                        now,
                        now,
                        [s[0] for s in studies],
                        [s[1] for s in studies],
                        [s[2] for s in studies],
                        [s[3] for s in studies],
                    ),
                )
                added = cur.rowcount
            await conn.execute(
                self._q(
                    "UPDATE {s}.work SET state = %s, studies = %s, error = %s"
                    " WHERE id = %s AND job = %s"
                ),
                (state, len(studies), error, work_id, self.job),
            )
        return added

    async def recover(self) -> int:
        return await self._exec(
            "UPDATE {s}.studies SET state = 'pending', updated = %s"
            " WHERE job = %s AND state = 'running'",
            (time.time(), self.job),
        )

    async def claim(self, source: int, now: float) -> StudyRow | None:
        row = await self._one(
            "UPDATE {s}.studies SET state = 'running', attempts = attempts + 1, started = %s,"
            " updated = %s WHERE id = (SELECT id FROM {s}.studies WHERE job = %s AND source = %s"
            " AND state = 'pending' AND not_before <= %s ORDER BY priority DESC, id LIMIT 1"
            f" FOR UPDATE SKIP LOCKED) RETURNING {STUDY_COLUMNS}",
            (now, now, self.job, source, now),
        )
        return None if row is None else study_row(row)

    async def claim_study(
        self, study_id: int, now: float, worker: str | None = None
    ) -> StudyRow | None:
        """Mark this study running (from pending, or from running when the worker that
        held it is gone: it is re-checked), by ``worker``; None when it is final already."""
        row = await self._one(
            "UPDATE {s}.studies SET state = 'running', attempts = attempts + 1, started = %s,"
            " updated = %s, worker = %s WHERE id = %s AND job = %s"
            f" AND state IN ('pending', 'running') RETURNING {STUDY_COLUMNS}",
            (now, now, worker, study_id, self.job),
        )
        return None if row is None else study_row(row)

    async def running_by(self, worker: str) -> list[StudyRow]:
        """The studies ``worker`` holds running."""
        rows = await self._all(
            f"SELECT {STUDY_COLUMNS} FROM {{s}}.studies WHERE job = %s AND state = 'running'"
            " AND worker = %s ORDER BY id",
            (self.job, worker),
        )
        return [study_row(row) for row in rows]

    async def study(self, study_id: int) -> StudyRow | None:
        row = await self._one(
            f"SELECT {STUDY_COLUMNS} FROM {{s}}.studies WHERE id = %s AND job = %s",
            (study_id, self.job),
        )
        return None if row is None else study_row(row)

    async def next_ready(self, source: int) -> float | None:
        row = await self._one(
            "SELECT MIN(not_before) FROM {s}.studies WHERE job = %s AND source = %s"
            " AND state = 'pending'",
            (self.job, source),
        )
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
        await self._exec(
            "UPDATE {s}.studies SET state = %s, expected = %s, received = %s, missing = %s,"
            " last_error = %s, finished = %s, updated = %s WHERE id = %s AND job = %s",
            (
                state,
                expected,
                received,
                json.dumps(list(missing)) if missing else None,
                error,
                now,
                now,
                study_id,
                self.job,
            ),
        )

    async def defer(self, study_id: int, error: str, not_before: float, received: int) -> None:
        await self._exec(
            "UPDATE {s}.studies SET state = 'pending', last_error = %s, not_before = %s,"
            " received = %s, updated = %s WHERE id = %s AND job = %s",
            (error, not_before, received, time.time(), study_id, self.job),
        )

    async def release(self, study_id: int, error: str | None = None) -> None:
        await self._exec(
            "UPDATE {s}.studies SET state = 'pending', attempts = GREATEST(attempts - 1, 0),"
            " last_error = COALESCE(%s, last_error), updated = %s WHERE id = %s AND job = %s",
            (error, time.time(), study_id, self.job),
        )

    async def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in await self._all(
            "SELECT state, COUNT(*) FROM {s}.studies WHERE job = %s GROUP BY state", (self.job,)
        ):
            counts[str(state)] = int(n)
        return counts

    async def totals(self) -> tuple[int, int]:
        row = await self._one(
            "SELECT COALESCE(SUM(expected), 0), COALESCE(SUM(received), 0) FROM {s}.studies"
            " WHERE job = %s",
            (self.job,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def studies(self, states: Iterable[str] | None = None) -> list[StudyRow]:
        query = f"SELECT {STUDY_COLUMNS} FROM {{s}}.studies WHERE job = %s"
        params: list[Any] = [self.job]
        if states is not None:
            query += " AND state = ANY(%s)"
            params.append(list(states))
        return [study_row(row) for row in await self._all(query + " ORDER BY id", params)]

    async def set_meta(self, key: str, value: str) -> None:
        await self._exec(
            "INSERT INTO {s}.meta (job, key, value) VALUES (%s, %s, %s)"
            " ON CONFLICT (job, key) DO UPDATE SET value = EXCLUDED.value",
            (self.job, key, value),
        )

    async def delete_meta(self, key: str) -> None:
        await self._exec("DELETE FROM {s}.meta WHERE job = %s AND key = %s", (self.job, key))

    async def meta(self, key: str) -> str | None:
        row = await self._one(
            "SELECT value FROM {s}.meta WHERE job = %s AND key = %s", (self.job, key)
        )
        return None if row is None else str(row[0])

    async def metas(self, prefix: str) -> dict[str, str]:
        """Every meta value whose key starts with ``prefix``."""
        rows = await self._all(
            "SELECT key, value FROM {s}.meta WHERE job = %s AND starts_with(key, %s)",
            (self.job, prefix),
        )
        return {str(k): str(v) for k, v in rows}

    async def close(self) -> None:
        if self._owns_pool:
            await self.pool.close()
