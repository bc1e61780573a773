"""The job runner: expands the work into studies, then drives N associations per source
on this one event loop, each fetching study after study, with retries, a rate limit and a
time window, recording every step in the journal and telling the caller as events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import contexts
from ..association import connect
from ..config import Timeouts
from ..errors import AiodimseError
from ..server import StorageServer
from .destination import ArchiveDestination, Destination, StudyFolders
from .journal import Journal, JournalError, SQLiteJournal, StudyRow, WorkRow
from .policy import Failure, RateLimiter, backoff_delay, classify
from .spec import JobSpec, Source
from .study import Outcome, StudyFetcher

__all__ = [
    "JobError",
    "JobEvent",
    "JobReport",
    "RetrieveJob",
    "close_receivers",
    "open_or_create",
]

log = logging.getLogger("aiodimse.jobs")

#: Seconds between two progress events (only when something moved).
PROGRESS_EVERY = 1.0


class JobError(AiodimseError):
    """The job cannot run (a bad journal, a port we cannot listen on, ...)."""


@dataclass(frozen=True)
class JobEvent:
    """Something that happened in the job: ``kind`` is one of started, expanded, study
    (a study changed state), retry, progress, paused, source-stopped, finished."""

    kind: str
    data: Mapping[str, Any]
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "time": round(self.time, 3), **self.data}

    def __str__(self) -> str:
        d = self.data
        if self.kind == "study":
            text = f"study {d['study']}: {d['state']}"
            if d.get("expected") is not None:
                text += f" ({d['received']}/{d['expected']} instances)"
            if d.get("error"):
                text += f": {d['error']}"
            return text
        if self.kind == "retry":
            return f"study {d['study']}: retry in {d['delay']:.1f} s after: {d['error']}"
        if self.kind == "progress":
            return (
                f"{d['studies_done']}/{d['studies']} studies, {d['instances']} instances,"
                f" {d['mib_per_s']:.1f} MiB/s"
            )
        return f"{self.kind}: " + ", ".join(f"{k}={v}" for k, v in d.items())


@dataclass
class JobReport:
    """Where the job stands: studies by state, instances, and what went wrong."""

    counts: dict[str, int]
    expected: int
    received: int
    problems: list[dict[str, Any]]
    unexpanded: list[dict[str, Any]]
    stopped: dict[str, str]

    @property
    def finished(self) -> bool:
        return not self.counts.get("pending") and not self.counts.get("running")

    @property
    def ok(self) -> bool:
        bad = self.counts.get("partial", 0) + self.counts.get("failed", 0)
        return self.finished and not bad and not self.unexpanded and not self.stopped

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "instances": {"expected": self.expected, "received": self.received},
            "ok": self.ok,
            "finished": self.finished,
            "problems": self.problems,
            "unexpanded": self.unexpanded,
            "stopped_sources": self.stopped,
        }

    def summary(self) -> str:
        c = self.counts
        states = ", ".join(f"{n} {state}" for state, n in c.items() if n)
        lines = [
            f"{sum(c.values())} studies: {states or 'none'};"
            f" {self.received} of {self.expected} expected instances on hand"
        ]
        for source, message in self.stopped.items():
            lines.append(f"source {source} stopped: {message}")
        for item in self.unexpanded:
            lines.append(f"not expanded: {item['key']}={item['value']}: {item['error']}")
        for p in self.problems:
            line = f"{p['state']}: study {p['study']}"
            if p.get("error"):
                line += f": {p['error']}"
            lines.append(line)
            lines += [f"  missing {uid}" for uid in p.get("missing", [])]
        return "\n".join(lines)


async def close_receivers(folders: Destination | None, server: StorageServer | None) -> None:
    """Stop the storage server and close the destination (an archive's index)."""
    if server is not None:
        server.close()
        await server.wait_closed()
    if isinstance(folders, ArchiveDestination):
        folders.close()


class RetrieveJob:
    """A bulk retrieval job bound to its journal.

    ``job = await RetrieveJob.create("job.db", spec)`` writes the spec and work list;
    ``await RetrieveJob.open("job.db")`` takes it up again (after a crash too);
    ``async for event in job.run(): ...`` runs it to the end; ``await job.report()``
    says where it stands.
    """

    def __init__(self, journal: Journal, spec: JobSpec) -> None:
        self.journal = journal
        self.spec = spec
        self._events: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        #: Sources stopped by a permanent failure: index -> what to fix (in the journal too).
        self.stopped: dict[int, str] = {}
        self._instances = 0
        self._bytes = 0
        self._rng = random.Random()

    @classmethod
    async def create(cls, path: str | Path, spec: JobSpec) -> RetrieveJob:
        journal = SQLiteJournal(path, create=True)
        try:
            await journal.create(spec)
        except BaseException:
            await journal.close()
            raise
        return cls(journal, spec)

    @classmethod
    async def open(cls, path: str | Path) -> RetrieveJob:
        journal = SQLiteJournal(path)
        try:
            spec = await journal.spec()
        except BaseException:
            await journal.close()
            raise
        return cls(journal, spec)

    async def close(self) -> None:
        await self.journal.close()

    async def __aenter__(self) -> RetrieveJob:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running --------------------------------------------------------------------------

    def emit(self, kind: str, **data: Any) -> None:
        """Tell whoever runs the job (``run()``'s iterator); a runner that has no one
        iterating its events (a worker of a distributed job) overrides it."""
        self._events.put_nowait(JobEvent(kind, data))

    def _timeouts(self) -> Timeouts:
        return Timeouts(dimse=self.spec.limits.dimse_timeout)

    def _contexts(self, source: Source) -> list[Any]:
        model = source.model
        if self.spec.method == "get":
            return contexts.for_get(models=(model,))
        return contexts.verification() + contexts.query_retrieve(get=False, models=(model,))

    async def open_receivers(self) -> tuple[Destination | None, StorageServer | None]:
        """Where instances arrive: the study folders (move, get) and, for a move to
        ourselves, the storage server the sources send to (started here)."""
        spec = self.spec
        limits = spec.limits
        folders: Destination | None = None
        server: StorageServer | None = None
        if spec.method in ("move", "get"):
            limiter = RateLimiter(limits.instances_per_second, limits.bytes_per_second)
            if spec.archive:
                folders = ArchiveDestination(
                    spec.destination, limiter=limiter, on_commit=self._committed
                )
            else:
                folders = StudyFolders(spec.destination, limiter=limiter, on_commit=self._committed)
        if spec.method == "move":
            assert spec.listen is not None and folders is not None
            server = StorageServer(
                folders,
                spec.listen[0],
                spec.listen[1],
                ae_title=spec.calling_ae,
                max_associations=4 * sum(s.associations for s in spec.sources) + 8,
            )
            try:
                await server.start()
            except OSError as exc:
                raise JobError(
                    f"cannot listen on {spec.listen[0]}:{spec.listen[1]} for the C-MOVE"
                    f" sub-operations: {exc.strerror or exc}"
                ) from None
        return folders, server

    async def run(self) -> AsyncGenerator[JobEvent, None]:
        """Run the job to the end (or until the caller stops iterating: the studies in
        progress are then re-checked when the job is resumed)."""
        spec = self.spec
        recovered = await self.journal.recover()
        await self.clear_stopped()
        folders, server = await self.open_receivers()
        supervisor = asyncio.get_running_loop().create_task(self._drive(folders, server))
        try:
            yield JobEvent(
                "started",
                {
                    "method": spec.method,
                    "sources": [s.name for s in spec.sources],
                    "recovered": recovered,
                },
            )
            while (event := await self._events.get()) is not None:
                yield event
            await supervisor  # raises what the job raised
            report = await self.report()
            yield JobEvent("finished", report.to_json())
        finally:
            if not supervisor.done():
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            await close_receivers(folders, server)

    def _committed(self, sop_instance_uid: str, path: Path, size: int) -> None:
        self._instances += 1
        self._bytes += size

    async def _drive(self, folders: Destination | None, server: StorageServer | None) -> None:
        try:
            await self.expand()
            ticker = asyncio.get_running_loop().create_task(self._tick())
            try:
                async with asyncio.TaskGroup() as group:
                    for index, source in enumerate(self.spec.sources):
                        for _ in range(source.associations):
                            group.create_task(self._worker(index, source, folders, server))
            finally:
                ticker.cancel()
        finally:
            self._events.put_nowait(None)

    async def _tick(self) -> None:
        last = (-1, time.monotonic(), 0)
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            now = time.monotonic()
            if self._instances == last[0]:
                continue
            counts = await self.journal.counts()
            rate = (self._bytes - last[2]) / max(now - last[1], 1e-6) / (1 << 20)
            done = sum(counts[s] for s in ("done", "partial", "failed", "unverified"))
            self.emit(
                "progress",
                studies=sum(counts.values()),
                studies_done=done,
                instances=self._instances,
                bytes=self._bytes,
                mib_per_s=round(rate, 2),
            )
            last = (self._instances, now, self._bytes)

    # -- expanding the work into studies ---------------------------------------------------

    async def expand(self) -> None:
        """Turn the work list into studies, source by source: a query is asked of every
        source; a listed study, accession or patient is looked up until a source has it.
        A source that cannot be reached is retried with backoff, like a study."""
        sources = self.spec.sources
        for index, source in enumerate(sources):
            last = index == len(sources) - 1
            attempt = 0
            while index not in self.stopped:
                pending = await self.journal.work("pending")
                if not pending:
                    return
                attempt += 1
                try:
                    await self._expand_on(index, source, pending, last)
                    break
                except Exception as exc:
                    failure = self._classify(exc, source)
                    if failure.permanent:
                        await self.stop_source(index, failure)
                        break
                    limits = self.spec.limits
                    self.emit("source-error", source=source.name, error=failure.message)
                    if attempt >= limits.max_attempts:
                        break  # its work stays pending: a resume asks again
                    delay = backoff_delay(attempt, limits.backoff, limits.max_backoff, self._rng)
                    await asyncio.sleep(delay)

    async def _expand_on(
        self, index: int, source: Source, pending: list[WorkRow], last: bool
    ) -> None:
        async with connect(
            source.host,
            source.port,
            calling_ae=self.spec.calling_ae,
            called_ae=source.called_ae,
            contexts=contexts.verification()
            + contexts.query_retrieve(move=False, get=False, models=(source.model,)),
            timeouts=self._timeouts(),
        ) as assoc:
            for work in pending:
                found = await self._expand_one(assoc, index, source, work)
                if work.key == "query":
                    state, error = ("expanded" if last else "pending"), None
                elif found:
                    state, error = "expanded", None
                elif last:
                    state, error = "not-found", "no study matches on any source"
                else:
                    continue
                added = await self.journal.expand(work.id, found, state=state, error=error)
                self.emit("expanded", key=work.key, value=work.value, studies=len(found), new=added)

    async def _expand_one(
        self, assoc: Any, index: int, source: Source, work: WorkRow
    ) -> list[tuple[int, str, int | None, str | None]]:
        if work.key == "query":
            query: dict[str, Any] = json.loads(work.value)
        else:
            query = {work.key: work.value}
        query = {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": "",
            "PatientID": "",
            "NumberOfStudyRelatedInstances": "",
            **{k: v for k, v in query.items() if k != "QueryRetrieveLevel"},
        }
        found = []
        # Iterated, not awaited: only the UID, count and patient of each match are kept
        # (a query may list a hundred thousand studies).
        async for match in assoc.find(query, model=source.model):
            uid = str(match.get("StudyInstanceUID", "") or "").strip()
            if not uid:
                continue
            hint = match.get("NumberOfStudyRelatedInstances")
            count = int(hint) if hint not in (None, "") else None
            found.append((index, uid, count, str(match.get("PatientID", "") or "") or None))
        return found

    # -- the workers ----------------------------------------------------------------------

    def _classify(self, exc: BaseException, source: Source | None = None) -> Failure:
        spec = self.spec
        return classify(
            exc,
            calling_ae=spec.calling_ae,
            called_ae=source.called_ae if source else spec.sources[0].called_ae,
            destination=spec.destination if spec.method == "move-to" else spec.calling_ae,
        )

    async def stop_source(self, index: int, failure: Failure) -> None:
        """Stop taking work from a source (a permanent failure: the message says what to
        fix); recorded in the journal, so that ``--status`` shows it after the process
        ends. Its studies stay pending for a resume."""
        if index not in self.stopped:
            self.stopped[index] = failure.message
            await self.journal.set_meta(f"stopped:{index}", failure.message)
            self.emit("source-stopped", source=self.spec.sources[index].name, error=failure.message)

    async def load_stopped(self) -> None:
        """The sources the journal says were stopped (by this or another process)."""
        stopped = await self.journal.metas("stopped:")
        self.stopped = {int(k.partition(":")[2]): v for k, v in stopped.items()}

    async def clear_stopped(self) -> None:
        """Try every source again (a resume, once what was wrong is fixed)."""
        for key in await self.journal.metas("stopped:"):
            await self.journal.delete_meta(key)
        self.stopped = {}

    async def _wait_for_window(self) -> None:
        window = self.spec.limits.window
        if window is None:
            return
        wait = window.seconds_until_open(dt.datetime.now())
        if wait > 0:
            self.emit("paused", window=str(window), seconds=round(wait))
            await asyncio.sleep(wait)

    async def _worker(
        self,
        index: int,
        source: Source,
        folders: Destination | None,
        server: StorageServer | None,
    ) -> None:
        fetcher = self.fetcher(source, folders, server)
        journal = self.journal
        try:
            while index not in self.stopped:
                await self._wait_for_window()
                study = await journal.claim(index, time.time())
                if study is None:
                    due = await journal.next_ready(index)
                    if due is None:
                        return
                    await asyncio.sleep(min(max(due - time.time(), 0.01), 5.0))
                    continue
                if not await self.process(index, source, study, fetcher):
                    return
        finally:
            await fetcher.close()

    def fetcher(
        self,
        source: Source,
        folders: Destination | None,
        server: StorageServer | None,
    ) -> StudyFetcher:
        """What fetches this job's studies from ``source`` over one association."""
        return StudyFetcher(
            self.spec,
            source,
            self._contexts(source),
            folders=folders,
            receiver=server,
            timeouts=self._timeouts(),
        )

    async def process(
        self, index: int, source: Source, study: StudyRow, fetcher: StudyFetcher
    ) -> bool:
        """One attempt at a claimed study, its outcome recorded in the journal (done,
        retried later, partial or failed). False when the source must stop (a permanent
        failure: the study goes back to pending, untouched)."""
        self.emit(
            "study",
            study=study.study_uid,
            state="running",
            attempt=study.attempts,
            source=source.name,
            expected=None,
            received=0,
        )
        try:
            outcome = await fetcher.fetch(study.study_uid, study.expected)
        except Exception as exc:
            await fetcher.close(abort=True)
            failure = self._classify(exc, source)
            full = fetcher.folders.full if fetcher.folders is not None else None
            if full is not None:
                failure = Failure(self._full_message(full), permanent=True)
                await self.journal.release(study.id, failure.message)
                await self._stop_all(failure)
                return False
            if failure.permanent:
                await self.journal.release(study.id, failure.message)
                await self.stop_source(index, failure)
                return False
            await self._retry_or_give_up(study, None, failure.message)
            return True
        full = fetcher.folders.full if fetcher.folders is not None else None
        if full is not None:
            # No retry can cure a full destination: stop every source, keep the study.
            await self.journal.release(study.id, self._full_message(full))
            await self._stop_all(Failure(self._full_message(full), permanent=True))
            return False
        await self._settle(index, source, study, outcome)
        return index not in self.stopped

    def _full_message(self, exc: OSError) -> str:
        return (
            f"destination {self.spec.destination}: {exc.strerror or exc}; make room and"
            " resume the job (nothing partial was kept)"
        )

    async def _stop_all(self, failure: Failure) -> None:
        for index in range(len(self.spec.sources)):
            await self.stop_source(index, failure)

    async def _settle(self, index: int, source: Source, study: StudyRow, outcome: Outcome) -> None:
        if outcome.complete:
            state = "done" if outcome.verified else "unverified"
            await self.journal.finish(
                study.id, state, expected=outcome.expected, received=outcome.received
            )
            self.emit(
                "study",
                study=study.study_uid,
                state=state,
                expected=outcome.expected,
                received=outcome.received,
            )
            return
        if outcome.error is not None:
            failure = self._classify(outcome.error, source)
            if failure.permanent:
                await self.journal.release(study.id, failure.message)
                await self.stop_source(index, failure)
                return
            message = failure.message
        else:
            message = f"{len(outcome.missing)} instance(s) missing after the transfer"
        if outcome.missing and outcome.error is not None:
            message += f"; {len(outcome.missing)} instance(s) missing"
        await self._retry_or_give_up(study, outcome, message)

    async def _retry_or_give_up(
        self, study: StudyRow, outcome: Outcome | None, message: str
    ) -> None:
        limits = self.spec.limits
        received = outcome.received if outcome else study.received
        if study.attempts < limits.max_attempts:
            delay = backoff_delay(study.attempts, limits.backoff, limits.max_backoff, self._rng)
            await self.journal.defer(study.id, message, time.time() + delay, received)
            self.emit(
                "retry",
                study=study.study_uid,
                attempt=study.attempts,
                delay=round(delay, 2),
                error=message,
            )
            return
        state = "partial" if outcome is not None and outcome.received else "failed"
        missing = outcome.missing if outcome else []
        await self.journal.finish(
            study.id,
            state,
            expected=outcome.expected if outcome else study.expected,
            received=received,
            missing=missing,
            error=message,
        )
        self.emit(
            "study",
            study=study.study_uid,
            state=state,
            error=message,
            expected=outcome.expected if outcome else study.expected,
            received=received,
            missing=missing,
        )

    # -- reporting ------------------------------------------------------------------------

    async def report(self) -> JobReport:
        journal = self.journal
        counts = await journal.counts()
        expected, received = await journal.totals()
        problems = [s.to_json() for s in await journal.studies(("partial", "failed", "unverified"))]
        pending = [s for s in await journal.studies(("pending",)) if s.last_error]
        problems += [s.to_json() for s in pending]
        unexpanded = [
            {"key": w.key, "value": w.value, "state": w.state, "error": w.error}
            for w in await journal.work()
            if w.state != "expanded"
        ]
        await self.load_stopped()
        stopped = {self.spec.sources[i].name: m for i, m in self.stopped.items()}
        return JobReport(counts, expected, received, problems, unexpanded, stopped)


async def open_or_create(path: str | Path, spec: JobSpec | None) -> RetrieveJob:
    """Resume the job in ``path`` (``spec`` None), or create it there."""
    if spec is None:
        return await RetrieveJob.open(path)
    if Path(path).exists() and Path(path).stat().st_size:
        raise JournalError(f"{path} already exists: resume it with --resume, or pick a new file")
    return await RetrieveJob.create(path, spec)
