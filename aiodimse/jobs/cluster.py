"""The distributed mode of retrieval jobs: the journal in PostgreSQL, each study one task
of `procrastinate <https://procrastinate.readthedocs.io>`_ (an asyncio task queue on the
same PostgreSQL), run by ``aiodimse worker`` processes on any number of machines.

``job_id = await submit(dsn, spec)`` writes the spec and work list to the journal and
queues one task that expands the work into studies (C-FIND on the sources, run by a
worker), which queues one task per study. A worker runs each study task with the same
:meth:`RetrieveJob.process` as the single-process runner, against the shared journal.

- **Per-source limit across workers**: a study task first takes one of the source's
  ``associations`` slots, the PostgreSQL advisory locks ``(source key, slot)``; a task
  that gets none is retried a moment later (a procrastinate retry), it never blocks a
  worker. The locks belong to the worker's database session: a worker that dies loses
  them at once.
- **A killed worker**: procrastinate's heartbeats tell which workers are gone; every
  worker looks for the tasks of gone workers every few seconds and retries them
  (``JobManager.get_stalled_jobs`` + ``retry_job``). The study, still ``running`` in the
  journal, is then re-checked: listed again, compared with what is on disk, and only the
  missing instances are fetched. A study already final is never fetched again, and a
  per-study procrastinate lock keeps two tasks of one study from ever running at once.
- **C-MOVE to ourselves**: each worker runs its own storage server (``--listen``) under
  its own AE title (``--aet``); every worker must be a move destination the source PACS
  knows (AE title, host, port). C-GET needs none of that.
- Instances land in the job's destination folder as each worker sees it: on several
  machines, a shared file system mounted at the same path.

Needs the ``cluster`` extra (``procrastinate``, ``psycopg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from procrastinate import (
    App,
    BaseRetryStrategy,
    JobContext,
    PsycopgConnector,
    RetryDecision,
)
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ..server import StorageServer
from .destination import Destination
from .journal import FINAL_STATES, StudyRow
from .postgres import PostgresJournal
from .runner import JobEvent, JobReport, RetrieveJob, close_receivers
from .spec import JobSpec, Source

__all__ = [
    "QUEUE",
    "ClusterJob",
    "ClusterWorker",
    "RetryAt",
    "cluster_report",
    "enqueue",
    "make_app",
    "resume",
    "run_worker",
    "source_key",
    "submit",
]

log = logging.getLogger("aiodimse.jobs")

#: The procrastinate queue of every aiodimse task.
QUEUE = "aiodimse"
STUDY_TASK = "aiodimse:study"
EXPAND_TASK = "aiodimse:expand"
#: Seconds before a task that found no free association slot tries again (plus jitter).
SLOT_RETRY = 0.2
#: Seconds before a work list that could not be expanded (a source down) is tried again.
EXPAND_RETRY = 30.0
#: Seconds before a task that failed unexpectedly runs again (plus jitter).
UNEXPECTED_RETRY = 10.0
#: Studies queued in one batch.
DEFER_BATCH = 500

#: A constant advisory-lock key: one process at a time installs procrastinate's tables.
_PROCRASTINATE_SCHEMA_LOCK = 0x41494F45


class RetryAt(Exception):
    """Raised by a task to run again at ``when`` (epoch seconds): a study deferred after
    a transient failure, no association slot free, outside the time window."""

    def __init__(self, when: float, reason: str) -> None:
        super().__init__(reason)
        self.when = when


class _Retries(BaseRetryStrategy):
    """``RetryAt`` at its time; anything else (the database away for a moment, a port
    we cannot listen on) again after ``UNEXPECTED_RETRY`` seconds, for as long as it
    takes: a study is never dropped (its DICOM failures are counted by the journal)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryAt):
            return RetryDecision(retry_at=dt.datetime.fromtimestamp(exception.when, dt.UTC))
        log.warning("task %s (%s) failed, retried: %s", job.id, job.task_name, exception)
        delay = UNEXPECTED_RETRY * (1 + random.random())
        return RetryDecision(retry_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))


def _worker_of(context: JobContext) -> ClusterWorker:
    worker = context.additional_context.get("aiodimse")
    if not isinstance(worker, ClusterWorker):
        raise RuntimeError("this task runs only in an aiodimse worker (aiodimse worker DSN)")
    return worker


async def study_task(context: JobContext, job: int, study: int) -> None:
    """One study of a job: take a slot of its source, fetch, verify, record."""
    await _worker_of(context).run_study(job, study)


async def expand_task(context: JobContext, job: int) -> None:
    """Expand a job's work into studies, then queue one task per study."""
    await _worker_of(context).expand(job)


def make_app(dsn: str, *, pool_size: int = 4) -> App:
    """The procrastinate app on ``dsn`` with aiodimse's tasks (open it with
    ``async with app.open_async():``). Each call makes an app of its own."""
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=1, max_size=max(pool_size, 2)))
    for name, function in ((STUDY_TASK, study_task), (EXPAND_TASK, expand_task)):
        app.task(name=name, pass_context=True, retry=_Retries(), queue=QUEUE)(function)
    return app


async def _prepare(app: App, pool: AsyncConnectionPool) -> None:
    """Install procrastinate's tables if the database has none (one process at a time)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PROCRASTINATE_SCHEMA_LOCK,))
        if not await app.check_connection_async():
            await app.schema_manager.apply_schema_async()


def source_key(source: Source) -> int:
    """The 32-bit advisory-lock key of a source (the same on every machine)."""
    digest = hashlib.sha256(f"{source.host}:{source.port}:{source.called_ae}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


async def _reset(conn: AsyncConnection[Any]) -> None:
    # A connection goes back to the pool holding no slot, whatever happened.
    await conn.execute("SELECT pg_advisory_unlock_all()")


async def _open_pool(dsn: str, size: int) -> AsyncConnectionPool:
    # One plain connection first: an unreachable database fails at once, with the
    # server's words (the pool would retry quietly until its timeout).
    conn = await AsyncConnection.connect(dsn, connect_timeout=15)
    await conn.close()
    pool: AsyncConnectionPool = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        open=False,
        kwargs={"autocommit": True},
        reset=_reset,
        timeout=60.0,
    )
    await pool.open(wait=True, timeout=30.0)
    return pool


class ClusterJob(RetrieveJob):
    """A job as one worker runs it: events go to the log (no one iterates them here) and
    a stopped source is recorded in the journal for every worker to see."""

    journal: PostgresJournal

    def __init__(self, journal: PostgresJournal, spec: JobSpec) -> None:
        super().__init__(journal, spec)

    def emit(self, kind: str, **data: Any) -> None:
        log.info("job %s: %s", self.journal.job_id, JobEvent(kind, data))


@dataclass
class _Bound:
    """A job as opened in this worker: the job, where instances arrive."""

    job: ClusterJob
    folders: Destination | None
    server: StorageServer | None


class ClusterWorker:
    """What one worker process holds: its pool (journal and slot locks), the jobs it has
    opened, and how it receives C-MOVE sub-operations (``listen``, ``calling_ae``)."""

    def __init__(
        self,
        app: App,
        pool: AsyncConnectionPool,
        *,
        listen: tuple[str, int] | None = None,
        calling_ae: str | None = None,
        name: str | None = None,
    ) -> None:
        self.app = app
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.pool = pool
        self.listen = listen
        self.calling_ae = calling_ae
        self._jobs: dict[int, _Bound] = {}
        self._opening = asyncio.Lock()
        self._rng = random.Random()

    async def bound(self, job_id: int) -> _Bound:
        async with self._opening:
            bound = self._jobs.get(job_id)
            if bound is None:
                journal = PostgresJournal(self.pool, job_id)
                await journal.attach()
                spec = await journal.spec()
                if spec.method == "move" and (self.listen or self.calling_ae):
                    spec = replace(
                        spec,
                        listen=self.listen or spec.listen,
                        calling_ae=self.calling_ae or spec.calling_ae,
                    )
                job = ClusterJob(journal, spec)
                folders, server = await job.open_receivers()
                bound = self._jobs[job_id] = _Bound(job, folders, server)
            return bound

    @contextlib.asynccontextmanager
    async def slot(self, source: Source) -> AsyncIterator[int]:
        """One of ``source``'s association slots, held for the block (RetryAt if none
        is free): the advisory lock ``(source_key, slot)`` on a connection kept for it."""
        key = source_key(source)
        async with self.pool.connection() as conn:
            for slot in range(source.associations):
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, slot))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    break
            else:
                delay = SLOT_RETRY * (1 + self._rng.random())
                raise RetryAt(time.time() + delay, f"no free association slot on {source.name}")
            try:
                yield slot
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))

    async def run_study(self, job_id: int, study_id: int) -> None:
        bound = await self.bound(job_id)
        job, journal = bound.job, bound.job.journal
        row = await journal.study(study_id)
        if row is None or row.state in FINAL_STATES:
            return  # done already (a repeated task): never fetched twice
        await job.load_stopped()
        if row.source in job.stopped:
            return  # left pending: ``resume`` queues it again once the source is fixed
        now = time.time()
        if row.not_before > now:
            raise RetryAt(row.not_before, "deferred after a transient failure")
        window = job.spec.limits.window
        if window is not None:
            wait = window.seconds_until_open(dt.datetime.now())
            if wait > 0:
                raise RetryAt(now + wait, f"outside the time window {window}")
        index = row.source
        source = job.spec.sources[index]
        async with self.slot(source):
            claimed = await journal.claim_study(study_id, time.time(), self.name)
            if claimed is None:
                return
            try:
                ok = await self._process(bound, index, source, claimed)
            except asyncio.CancelledError:
                # The worker is stopping: the study goes back to pending, uncounted.
                with contextlib.suppress(Exception):
                    await asyncio.shield(journal.release(study_id))
                raise
        if not ok:
            return  # the source is stopped (recorded in the journal by the job)
        after = await journal.study(study_id)
        if after is not None and after.state == "pending":
            raise RetryAt(max(after.not_before, time.time()), after.last_error or "retry")

    async def _process(self, bound: _Bound, index: int, source: Source, study: StudyRow) -> bool:
        fetcher = bound.job.fetcher(source, bound.folders, bound.server)
        try:
            return await bound.job.process(index, source, study, fetcher)
        finally:
            await fetcher.close()

    async def expand(self, job_id: int) -> None:
        bound = await self.bound(job_id)
        job = bound.job
        await job.load_stopped()
        # The C-FINDs use an association per source: each takes a slot like a study.
        async with contextlib.AsyncExitStack() as slots:
            keys = set()
            for source in job.spec.sources:
                if source_key(source) not in keys:
                    keys.add(source_key(source))
                    await slots.enter_async_context(self.slot(source))
            await job.expand()
        await defer_studies(self.app, job.journal)
        if await job.journal.work("pending"):
            if all(i in job.stopped for i in range(len(job.spec.sources))):
                return  # ``resume`` expands it once the sources are fixed
            raise RetryAt(time.time() + EXPAND_RETRY, "some of the work could not be listed")

    async def recover_stalled(self, stalled_after: float, every: float) -> None:
        """Retry the tasks of workers whose heartbeat stopped (killed, machine lost)."""
        manager = self.app.job_manager
        while True:
            await asyncio.sleep(every)
            try:
                stalled = await manager.get_stalled_jobs(
                    queue=QUEUE, seconds_since_heartbeat=stalled_after
                )
                for job in stalled:
                    log.warning("task %s of a stalled worker: retried", job.id)
                    await manager.retry_job(job)
            except Exception as exc:  # the database away for a moment: try next round
                log.warning("looking for stalled tasks failed: %s", exc)

    async def close(self) -> None:
        for bound in self._jobs.values():
            await close_receivers(bound.folders, bound.server)
        self._jobs.clear()


async def defer_studies(app: App, journal: PostgresJournal) -> int:
    """Queue a task for every pending study of the job (one waiting task per study at
    most: a study's queueing lock); returns how many were queued."""
    job_id = journal.job
    studies = await journal.studies(("pending",))
    task = app.tasks[STUDY_TASK]
    queued = 0
    for start in range(0, len(studies), DEFER_BATCH):
        batch = [
            _study_job(task, job_id, s.id, s.priority, s.not_before)
            for s in studies[start : start + DEFER_BATCH]
        ]
        try:
            await app.job_manager.batch_defer_jobs_async(batch)
            queued += len(batch)
        except AlreadyEnqueued:
            for one in batch:  # some are queued already: the others one by one
                with contextlib.suppress(AlreadyEnqueued):
                    await app.job_manager.defer_job_async(one)
                    queued += 1
    return queued


def _study_job(task: Any, job_id: int, study_id: int, priority: int, not_before: float) -> Job:
    lock = f"aiodimse-{job_id}-{study_id}"
    when = dt.datetime.fromtimestamp(not_before, dt.UTC) if not_before > time.time() else None
    deferrer = task.configure(
        lock=lock, queueing_lock=lock, priority=priority, schedule_at=when, queue=QUEUE
    )
    job: Job = deferrer.make_new_job(job=job_id, study=study_id)
    return job


async def _defer_expand(app: App, job_id: int) -> None:
    lock = f"aiodimse-{job_id}-expand"
    with contextlib.suppress(AlreadyEnqueued):
        await (
            app.tasks[EXPAND_TASK]
            .configure(lock=lock, queueing_lock=lock, queue=QUEUE, priority=1000)
            .defer_async(job=job_id)
        )


async def enqueue(dsn: str, spec: JobSpec, *, name: str | None = None) -> int:
    """Write ``spec`` and its work list to the PostgreSQL journal and queue the task that
    expands it into studies (run by the first free worker); returns the job id."""
    pool = await _open_pool(dsn, 2)
    try:
        journal = PostgresJournal(pool, name=name)
        await journal.attach()
        app = make_app(dsn, pool_size=2)
        async with app.open_async():
            await _prepare(app, pool)
            await journal.create(spec)
            await _defer_expand(app, journal.job)
        return journal.job
    finally:
        await pool.close()


async def submit(dsn: str, spec: JobSpec) -> str:
    """``aiodimse retrieve --engine postgresql://...``: queue the job; its id."""
    return str(await enqueue(dsn, spec))


async def resume(dsn: str, job: int | str) -> int:
    """Queue again what a job has left: clear its stopped sources (fixed by now), expand
    what was not, and queue every pending study. Returns the studies queued."""
    pool = await _open_pool(dsn, 2)
    try:
        journal = PostgresJournal(pool, job)
        await journal.attach()
        for key in await journal.metas("stopped:"):
            await journal.delete_meta(key)
        app = make_app(dsn, pool_size=2)
        async with app.open_async():
            await _prepare(app, pool)
            if await journal.work("pending"):
                await _defer_expand(app, journal.job)
            return await defer_studies(app, journal)
    finally:
        await pool.close()


async def cluster_report(dsn: str, job_id: int | str) -> JobReport:
    """Where a distributed job stands (the same report as the single-process runner)."""
    journal = await PostgresJournal.connect(dsn, job_id)
    try:
        job = ClusterJob(journal, await journal.spec())
        return await job.report()
    finally:
        await journal.close()


async def _due(pool: AsyncConnectionPool) -> int:
    """Tasks of ours waiting to run now (not scheduled later, not running)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = 'todo'"
            " AND (scheduled_at IS NULL OR scheduled_at <= now())",
            (QUEUE,),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def run_worker(
    dsn: str,
    *,
    concurrency: int = 4,
    listen: tuple[str, int] | None = None,
    calling_ae: str | None = None,
    name: str | None = None,
    stalled_after: float = 30.0,
    heartbeat: float = 5.0,
    wait: bool = True,
    install_signal_handlers: bool = True,
) -> None:
    """Run a worker on this event loop until stopped (SIGINT/SIGTERM: the studies in
    progress are finished first) or, with ``wait=False``, until the queue is empty.
    ``concurrency`` studies at a time; a worker whose heartbeat is older than
    ``stalled_after`` seconds is taken for dead and its tasks are run again."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    app = make_app(dsn, pool_size=concurrency + 4)
    pool = await _open_pool(dsn, 2 * concurrency + 2)
    worker = ClusterWorker(app, pool, listen=listen, calling_ae=calling_ae, name=name)
    try:
        async with app.open_async():
            await _prepare(app, pool)
            recovery = asyncio.get_running_loop().create_task(
                worker.recover_stalled(stalled_after, max(1.0, min(heartbeat, stalled_after / 3)))
            )
            try:
                while True:
                    await app.run_worker_async(
                        queues=[QUEUE],
                        concurrency=concurrency,
                        name=worker.name,
                        wait=wait,
                        additional_context={"aiodimse": worker},
                        install_signal_handlers=install_signal_handlers,
                        update_heartbeat_interval=heartbeat,
                        stalled_worker_timeout=stalled_after,
                        fetch_job_polling_interval=0.5,
                        listen_notify=True,
                    )
                    # procrastinate's wait=False stops once nothing is due *now*; tasks
                    # queued by the ones it ran (an expansion queues its studies) are
                    # still to do.
                    if wait or not await _due(pool):
                        break
            finally:
                recovery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recovery
    finally:
        await worker.close()
        await pool.close()
