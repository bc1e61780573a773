"""The distributed mode of retrieval jobs against a real PostgreSQL server (started from
the OS package by ``_postgres``) and worker processes (``aiodimse worker``): the journal
behaves like the SQLite one, a worker killed with SIGKILL loses nothing and fetches no
study twice, and the per-source association limit holds across workers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _postgres import PostgresServer, start_postgres
from _settings import CI

from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.jobs import JobSpec, Journal, Limits, Source, SQLiteJournal, WorkItem
from aiodimse.testing.peers import PeerMissing, PeerProcess, free_port
from aiodimse.testing.synthetic import make_study, write_study

try:
    from aiodimse.jobs import cluster
    from aiodimse.jobs.postgres import PostgresJournal
except ImportError as exc:  # the cluster extra is not installed
    if CI:
        raise
    pytest.skip(f"the cluster extra is not installed: {exc}", allow_module_level=True)

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except PeerMissing as exc:
        if CI:
            pytest.fail(f"{exc}; PostgreSQL is mandatory when CI=true", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    return postgres.create_database(f"test_{os.getpid()}_{next(_databases)}")


# -- the journal: PostgreSQL behaves as SQLite does ---------------------------------------


def _spec(items: tuple[WorkItem, ...]) -> JobSpec:
    source = Source("127.0.0.1", 11112, "PACS", associations=2)
    return JobSpec(sources=(source,), method="get", destination="/tmp/out", items=items)


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    if request.param == "sqlite":
        made: Journal = SQLiteJournal(tmp_path / "job.db", create=True)
    else:
        made = await PostgresJournal.connect(request.getfixturevalue("dsn"))
    try:
        yield made
    finally:
        await made.close()


async def test_journal_semantics(journal: Journal) -> None:
    items = (WorkItem("StudyInstanceUID", "1.2.1", 0), WorkItem("AccessionNumber", "A7", 5))
    spec = _spec(items)
    await journal.create(spec)
    assert await journal.spec() == spec
    work = await journal.work()
    assert [(w.key, w.value, w.priority, w.state) for w in work] == [
        ("StudyInstanceUID", "1.2.1", 0, "pending"),
        ("AccessionNumber", "A7", 5, "pending"),
    ]
    low, high = work
    # Expanding: new studies counted, a study found twice is one study.
    assert await journal.expand(low.id, [(0, "1.2.1", 3, "P1"), (0, "1.2.2", None, None)]) == 2
    assert await journal.expand(high.id, [(0, "1.2.3", 4, "P2"), (0, "1.2.1", 3, "P1")]) == 1
    assert [w.state for w in await journal.work("expanded")] == ["expanded", "expanded"]
    assert await journal.work("pending") == []

    now = time.time()
    # Claim order: priority first (the AccessionNumber item's), then order of arrival.
    first = await journal.claim(0, now)
    assert first is not None and first.study_uid == "1.2.3"
    assert (first.state, first.attempts, first.priority, first.expected) == ("running", 1, 5, 4)
    second = await journal.claim(0, now)
    assert second is not None and second.study_uid == "1.2.1"
    assert await journal.claim(1, now) is None  # another source has nothing

    # A transient failure: deferred, not claimable before its time.
    await journal.defer(second.id, "A700 out of resources", now + 60, received=1)
    third = await journal.claim(0, now)
    assert third is not None and third.study_uid == "1.2.2"
    assert await journal.claim(0, now) is None
    assert await journal.next_ready(0) == pytest.approx(now + 60)
    again = await journal.claim(0, now + 61)
    assert again is not None and again.study_uid == "1.2.1" and again.attempts == 2

    # Released (the source stopped): back to pending, the attempt not counted.
    await journal.release(again.id, "called AE not recognised")
    rows = {s.study_uid: s for s in await journal.studies()}
    assert rows["1.2.1"].state == "pending" and rows["1.2.1"].attempts == 1
    assert rows["1.2.1"].last_error == "called AE not recognised"

    # Finished, then a crash: what was running goes back to pending, done stays done.
    await journal.finish(first.id, "done", expected=4, received=4)
    await journal.finish(third.id, "partial", expected=3, received=2, missing=["9.9"], error="x")
    counts = await journal.counts()
    assert {k: v for k, v in counts.items() if v} == {"pending": 1, "done": 1, "partial": 1}
    assert await journal.totals() == (4 + 3 + 3, 4 + 2 + 1)
    partial = await journal.studies(("partial",))
    assert [(s.study_uid, s.missing, s.last_error) for s in partial] == [("1.2.2", ("9.9",), "x")]

    claimed = await journal.claim(0, now + 61)
    assert claimed is not None
    assert (await journal.counts())["running"] == 1
    assert await journal.recover() == 1
    assert (await journal.counts())["running"] == 0
    assert await journal.next_ready(0) is not None

    await journal.set_meta("k", "v1")
    await journal.set_meta("k", "v2")
    assert await journal.meta("k") == "v2"
    assert await journal.meta("absent") is None


# -- workers ------------------------------------------------------------------------------


def _make_studies(folder: Path, n: int) -> dict[str, list[Path]]:
    """``n`` small studies (2 series of 4 instances) written to ``folder``."""
    studies: dict[str, list[Path]] = {}
    for i in range(n):
        datasets = make_study(
            8, rows=64, cols=64, seed=f"cluster-{i}", patient_id=f"C{i:03d}", series_count=2
        )
        uid = str(datasets[0].StudyInstanceUID)
        studies[uid] = write_study(folder / uid, datasets)
    return studies


def _start_source(
    tmp_path: Path, studies_dir: Path, destinations: dict[str, int] | None = None
) -> tuple[PeerProcess, Path]:
    port = free_port()
    stats = tmp_path / "source-stats.jsonl"
    argv = [sys.executable, str(HERE / "_cluster_source.py"), "--port", str(port)]
    argv += ["--storage", str(tmp_path / "archive"), "--input", str(studies_dir)]
    argv += ["--stats", str(stats), "--aet", "SOURCE"]
    for ae, where in (destinations or {}).items():
        argv += ["--destination", f"{ae}=127.0.0.1:{where}"]
    peer = PeerProcess("cluster-source", argv, port=port, aet="SOURCE", work_dir=tmp_path)
    try:
        peer.wait_ready(60)
    except BaseException:
        peer.stop()
        raise
    return peer, stats


def _start_worker(
    tmp_path: Path, dsn: str, name: str, concurrency: int, *extra: str
) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{name}.log", "wb")
    argv = [sys.executable, "-m", "aiodimse", "worker", dsn, "--concurrency", str(concurrency)]
    argv += ["--heartbeat", "1", "--stalled-after", "3", "--name", name, "-v", *extra]
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _events(stats: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]


async def _wait_for(
    journal: PostgresJournal,
    done: int,
    timeout: float,
    workers: list[subprocess.Popen[bytes]],
    logs: Path,
) -> dict[str, int]:
    """Poll the journal until ``done`` studies are done (fail if every worker died)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await journal.counts()
        if counts["done"] >= done:
            return counts
        if all(w.poll() is not None for w in workers) or time.monotonic() > deadline:
            text = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs.glob("w*.log"))
            pytest.fail(f"{counts} (wanted {done} done); worker logs:\n{text}")
        await asyncio.sleep(0.05)


def _job(port: int, out: Path, uids: list[str], rate: float | None = None) -> JobSpec:
    return JobSpec(
        sources=(Source("127.0.0.1", port, "SOURCE", associations=2),),
        method="get",
        destination=str(out),
        calling_ae="WORKERS",
        items=tuple(WorkItem("StudyInstanceUID", uid) for uid in uids),
        limits=Limits(instances_per_second=rate, backoff=0.2, max_backoff=1.0, dimse_timeout=30.0),
    )


async def _mid_transfer(journal: PostgresJournal, worker: str, out: Path, timeout: float) -> str:
    """Wait until ``worker`` holds a study of which some instances, not all, are on disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in await journal.running_by(worker):
            if 0 < len(list((out / row.study_uid).glob("*.dcm"))) < 8:
                return row.study_uid
        await asyncio.sleep(0.02)
    pytest.fail(f"{worker} never held a study half received")


async def test_two_workers_one_killed(dsn: str, tmp_path: Path) -> None:
    studies = _make_studies(tmp_path / "studies", 20)
    out = tmp_path / "out"
    source, stats = _start_source(tmp_path, tmp_path / "studies")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # 20 instances/s per worker: a study takes a while, so w1 dies in the middle of one.
        spec = _job(source.port, out, sorted(studies), rate=20.0)
        job_id = await cluster.enqueue(dsn, spec)
        journal = await PostgresJournal.connect(dsn, job_id)
        try:
            workers = [_start_worker(tmp_path, dsn, f"w{i}", 2) for i in (1, 2)]
            await _wait_for(journal, 4, 60, workers, tmp_path)
            halfway = await _mid_transfer(journal, "w1", out, 30)
            os.kill(workers[0].pid, signal.SIGKILL)
            workers[0].wait(timeout=10)
            at_kill = {s.study_uid: s.state for s in await journal.studies()}
            counts = await _wait_for(journal, 20, 60, workers[1:], tmp_path)
            rows = await journal.studies()
        finally:
            await journal.close()
        status = subprocess.run(
            [sys.executable, "-m", "aiodimse", "worker", dsn, "--status", str(job_id), "--json"],
            capture_output=True,
            timeout=60,
        )
    finally:
        for worker in workers:
            _stop(worker)
        source.stop()

    assert counts["done"] == 20 and sum(counts.values()) == 20
    done_before = {uid for uid, state in at_kill.items() if state == "done"}
    assert len(done_before) >= 4 and at_kill[halfway] == "running"
    retrieves: dict[str, list[str]] = {}
    for e in _events(stats):
        if e["event"] == "retrieve":
            retrieves.setdefault(e["study"], []).append(e["level"])
    assert set(retrieves) == set(studies)
    # Done once: a study done before the kill was never fetched again; only a study
    # that was running when its worker died was taken up again, and re-checked: the
    # half-received one was completed by fetching its missing instances only.
    assert all(retrieves[uid] == ["STUDY"] for uid in done_before), retrieves
    assert retrieves[halfway][0] == "STUDY" and set(retrieves[halfway][1:]) == {"IMAGE"}
    for row in rows:
        assert row.state == "done" and row.received == row.expected == 8
        if row.attempts > 1 or len(retrieves[row.study_uid]) > 1:
            assert at_kill[row.study_uid] == "running", row
            assert row.attempts == 2
    assert {r.study_uid: r.attempts for r in rows}[halfway] == 2
    # Every instance on disk, byte for byte the dataset the source holds.
    for uid, paths in studies.items():
        received = sorted((out / uid).glob("*.dcm"))
        assert [p.name for p in received] == sorted(p.name for p in paths)
        for path in paths:
            theirs, ours = path, out / uid / path.name
            assert dataset_bytes(ours, read_part10(ours)) == dataset_bytes(
                theirs, read_part10(theirs)
            )
    peak = max(e["concurrent"] for e in _events(stats) if e["event"] == "associate")
    assert peak <= 2
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["done"] == 20


async def test_source_limit_holds_across_workers(dsn: str, tmp_path: Path) -> None:
    studies = _make_studies(tmp_path / "studies", 12)
    source, stats = _start_source(tmp_path, tmp_path / "studies")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        job_id = await cluster.enqueue(dsn, _job(source.port, tmp_path / "out", sorted(studies)))
        journal = await PostgresJournal.connect(dsn, job_id)
        try:
            workers = [_start_worker(tmp_path, dsn, f"w{i}", 4) for i in (1, 2)]
            counts = await _wait_for(journal, 12, 60, workers, tmp_path)
        finally:
            await journal.close()
    finally:
        for worker in workers:
            _stop(worker)
        source.stop()
    assert counts["done"] == 12
    seen = [e["concurrent"] for e in _events(stats) if e["event"] == "associate"]
    # 8 study tasks at once in two processes, 2 associations: never more at the source,
    # and the 2 were used together.
    assert max(seen) == 2, seen


async def test_move_to_each_worker(dsn: str, tmp_path: Path) -> None:
    # C-MOVE to ourselves: each worker listens under its own AE title, which the source
    # knows as a move destination.
    studies = _make_studies(tmp_path / "studies", 6)
    ports = {"W1": free_port(), "W2": free_port()}
    source, stats = _start_source(tmp_path, tmp_path / "studies", ports)
    out = tmp_path / "out"
    spec = replace(_job(source.port, out, sorted(studies)), method="move", listen=("127.0.0.1", 1))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        job_id = await cluster.enqueue(dsn, spec)
        journal = await PostgresJournal.connect(dsn, job_id)
        try:
            workers = [
                _start_worker(tmp_path, dsn, f"w{i}", 2, "--aet", ae, "--listen", f"127.0.0.1:{p}")
                for i, (ae, p) in enumerate(ports.items(), start=1)
            ]
            counts = await _wait_for(journal, 6, 60, workers, tmp_path)
        finally:
            await journal.close()
    finally:
        for worker in workers:
            _stop(worker)
        source.stop()
    assert counts["done"] == 6
    moves = [e for e in _events(stats) if e["event"] == "retrieve"]
    assert {e["service"] for e in moves} == {"C-MOVE"}
    assert all(e["destination"] == e["calling"] for e in moves), moves  # each to itself
    assert sorted(e["study"] for e in moves) == sorted(studies)
    for uid, paths in studies.items():
        assert sorted(p.name for p in (out / uid).glob("*.dcm")) == sorted(p.name for p in paths)


async def test_report_and_requeue_of_a_stopped_source(dsn: str) -> None:
    # Nothing listens on this port: the expansion cannot list the work, and the report
    # says so; a requeue queues it again.
    spec = _job(free_port(), Path("/nonexistent"), ["1.2.3"])
    job_id = await cluster.enqueue(dsn, spec)
    report = await cluster.cluster_report(dsn, job_id)
    assert not report.ok and report.unexpanded == [
        {"key": "StudyInstanceUID", "value": "1.2.3", "state": "pending", "error": None}
    ]
    assert await cluster.resume(dsn, job_id) == 0


def test_worker_command_rejects_a_bad_dsn() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiodimse", "worker", "not-a-dsn"], capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"not a PostgreSQL URI" in done.stderr and b"Traceback" not in done.stderr


async def test_retrieve_engine_queues_a_job_that_a_worker_runs(dsn: str, tmp_path: Path) -> None:
    # The command line end to end: `retrieve --engine` queues, `worker --once` runs it,
    # `worker --status` reports it done.
    studies = _make_studies(tmp_path / "studies", 3)
    source, _ = _start_source(tmp_path, tmp_path / "studies")
    out = tmp_path / "out"
    try:
        queued = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable, "-m", "aiodimse", "retrieve", "127.0.0.1", str(source.port),
                "--aec", "SOURCE", "--aet", "WORKERS", "--method", "get", "-k", "PatientID=C*",
                "--out", str(out), "--engine", dsn, "--json",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        job_id = json.loads(queued.stdout)["job"]
        worker = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aiodimse", "worker", dsn, "--once", "--concurrency", "2"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aiodimse", "worker", dsn, "--status", str(job_id), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        source.stop()
    report = json.loads(status.stdout)
    assert report["counts"]["done"] == 3 and report["ok"] is True, report
    for uid, paths in studies.items():
        assert sorted(p.name for p in (out / uid).glob("*.dcm")) == sorted(p.name for p in paths)
