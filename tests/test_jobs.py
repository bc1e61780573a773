"""Bulk retrieval jobs (aiodimse.jobs, ``aiodimse retrieve``): against real sources, and
under the faults a long job meets (a kill -9, a source that goes away, an instance that
cannot be sent, a wrong AE title, a full disk)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _retrieve_support import data_set_of, originals

import aiodimse
from aiodimse import contexts
from aiodimse.archive import ArchiveServer
from aiodimse.dicomfile import read_part10
from aiodimse.jobs import (
    JobSpec,
    Limits,
    RetrieveJob,
    Source,
    SQLiteJournal,
    TimeWindow,
    WorkItem,
    parse_rate,
    read_work_file,
)
from aiodimse.jobs.policy import RateLimiter, backoff_delay
from aiodimse.testing import peers
from aiodimse.testing.peers import PeerProcess
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"
FAST = Limits(backoff=0.05, max_backoff=0.2, max_attempts=3, dimse_timeout=20)


def _population(root: Path, studies: int, per_study: int = 2) -> dict[str, list[Path]]:
    """``studies`` small studies (16x16, ``per_study`` instances in 1-2 series) on disk."""
    out = {}
    for n in range(studies):
        seed = f"job-{studies}-{n}"
        datasets = make_study(
            per_study,
            rows=16,
            cols=16,
            seed=seed,
            patient_id=f"P{n % 7}",
            series_count=min(2, per_study),
        )
        out[str(datasets[0].StudyInstanceUID)] = write_study(root / seed, datasets)
    return out


def _received(out: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every file under ``out`` (study folders)."""
    found: dict[str, bytes] = {}
    for path in out.rglob("*.dcm"):
        found[read_part10(path).sop_instance_uid] = data_set_of(path)
    return found


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and p.name.endswith(".part")]


async def _fill(port: int, aet: str, files: list[Path]) -> None:
    async with aiodimse.connect(
        LOCAL, port, calling_ae="FILLER", called_ae=aet, contexts=contexts.for_files(files)
    ) as assoc:
        for path in files:
            await assoc.store(path)


async def _run(job: RetrieveJob) -> list[aiodimse.jobs.JobEvent]:
    return [event async for event in job.run()]


def _spec(source: Source, out: Path, method: str, listen: int | None, **kw: Any) -> JobSpec:
    return JobSpec(
        sources=(source,),
        method=method,  # type: ignore[arg-type]
        destination=str(out),
        calling_ae="JOBS",
        listen=(LOCAL, listen) if listen is not None else None,
        limits=kw.pop("limits", FAST),
        **({"query": {"StudyDate": ""}} | kw),
    )


# -- the job as data --------------------------------------------------------------------


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec(
        sources=(Source("pacs", 104, "PACS", 8, "patient"), Source("b", 11112, "B")),
        method="move-to",
        destination="ARCHIVE",
        items=(WorkItem("AccessionNumber", "A1", 3),),
        verify=("arch", 11112, "ARCHIVE"),
        limits=Limits(instances_per_second=50, window=TimeWindow.parse("19:00-07:00")),
    )
    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"method": "get", "destination": ""}, "needs a destination"),
        ({"method": "move", "listen": None}, "needs the port"),
        ({"method": "fetch"}, "not one of"),
        ({"query": {}}, "either a query or a list"),
    ],
)
def test_spec_names_what_is_missing(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "sources": (Source("pacs", 104, "PACS"),),
        "method": "move",
        "destination": "out",
        "listen": (LOCAL, 11113),
        "query": {"StudyDate": "2024"},
    }
    with pytest.raises(ValueError, match=message):
        JobSpec(**(base | kw))


def test_rates_windows_and_work_files(tmp_path: Path) -> None:
    assert parse_rate("50/s") == (50.0, None)
    assert parse_rate("20MiB/s") == (None, 20 * 1024 * 1024)
    with pytest.raises(ValueError, match=r"expected e\.g\."):
        parse_rate("fast")
    night = TimeWindow.parse("19:00-07:00")
    assert night.contains(dt.datetime(2026, 1, 1, 23, 0))
    assert not night.contains(dt.datetime(2026, 1, 1, 12, 0))
    assert night.seconds_until_open(dt.datetime(2026, 1, 1, 18, 0)) == 3600
    with pytest.raises(ValueError, match="HH:MM"):
        TimeWindow.parse("7pm")
    text = tmp_path / "uids.txt"
    text.write_text("# studies\n1.2.3\n1.2.4  # second\n1.2.3\n\n")
    assert [i.value for i in read_work_file(text)] == ["1.2.3", "1.2.4"]
    table = tmp_path / "list.csv"
    table.write_text("AccessionNumber,priority\nA1,1\nA2,9\n")
    items = read_work_file(table, "AccessionNumber")
    assert [(i.value, i.priority) for i in items] == [("A1", 1), ("A2", 9)]
    text.write_text("1.2.3\nnot a uid\n")
    with pytest.raises(ValueError, match=r"uids\.txt:2"):
        read_work_file(text)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 8.0, rng) for n in range(1, 8)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(backoff_delay(6, 1.0, 8.0, rng) for _ in range(50)) > 4.0
    assert len({round(d, 6) for d in delays}) == len(delays)


async def test_rate_limiter_spaces_instances() -> None:
    limiter = RateLimiter(200.0, None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(40):
        await limiter.take(1000)
    # 40 instances at 200/s with at most one second of burst banked: never faster than
    # the bucket allows (a lower bound, not a timing assertion on our speed).
    assert loop.time() - start >= (40 - 1) / 200 - 1.0 - 0.01


async def test_journal_claims_by_priority_and_recovers(tmp_path: Path) -> None:
    spec = JobSpec(
        sources=(Source("pacs", 104, "PACS"),),
        method="get",
        destination="out",
        items=(WorkItem("StudyInstanceUID", "1.1", 0), WorkItem("StudyInstanceUID", "1.2", 5)),
    )
    journal = SQLiteJournal(tmp_path / "j.db", create=True)
    await journal.create(spec)
    work = await journal.work("pending")
    for row in work:
        await journal.expand(row.id, [(0, row.value, None, None)])
    first = await journal.claim(0, time.time())
    assert first is not None and first.study_uid == "1.2" and first.attempts == 1
    await journal.defer(first.id, "busy", time.time() + 60, 0)
    second = await journal.claim(0, time.time())
    assert second is not None and second.study_uid == "1.1"
    assert await journal.claim(0, time.time()) is None  # 1.2 is not due yet
    assert await journal.next_ready(0) is not None
    await journal.close()
    # A process that dies leaves 1.1 running: the next one puts it back.
    journal = SQLiteJournal(tmp_path / "j.db")
    assert (await journal.counts())["running"] == 1
    assert await journal.recover() == 1
    assert await journal.spec() == spec
    await journal.close()
    with pytest.raises(aiodimse.jobs.JournalError, match="already holds a job"):
        await RetrieveJob.create(tmp_path / "j.db", spec)
    with pytest.raises(aiodimse.jobs.JournalError, match="no such journal"):
        await RetrieveJob.open(tmp_path / "none.db")


# -- real sources: every instance, byte for byte, by C-MOVE to ourselves and by C-GET -----

STUDIES = 50


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return _population(tmp_path_factory.mktemp("population"), STUDIES)


async def _both_methods(
    port: int, aet: str, population: dict[str, list[Path]], tmp_path: Path, listen: int
) -> None:
    every = [p for files in population.values() for p in files]
    for method in ("move", "get"):
        out = tmp_path / f"out-{method}"
        spec = _spec(Source(LOCAL, port, aet, 4), out, method, listen if method == "move" else None)
        job = await RetrieveJob.create(tmp_path / f"{method}.db", spec)
        async with job:
            events = await _run(job)
            report = await job.report()
        assert report.ok, report.summary()
        assert report.counts["done"] == STUDIES
        assert events[-1].kind == "finished"
        done = [e for e in events if e.kind == "study" and e.data["state"] == "done"]
        assert len(done) == STUDIES
        assert _received(out) == originals(every), method
        for uid, files in population.items():
            assert {p.stem for p in (out / uid).glob("*.dcm")} == {
                read_part10(f).sop_instance_uid for f in files
            }
        assert _leftovers(out) == []


async def test_job_from_the_aiodimse_archive(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    listen = peers.free_port()
    async with ArchiveServer(
        tmp_path / "pacs", LOCAL, 0, destinations={"JOBS": (LOCAL, listen)}
    ) as server:
        try:
            server.archive.ingest([p for files in population.values() for p in files])
            await _both_methods(server.port, "QRSCP", population, tmp_path, listen)
        finally:
            server.archive.close()


async def test_job_from_dcmqrscp(
    dcmqrscp_peer: Callable[..., PeerProcess], population: dict[str, list[Path]], tmp_path: Path
) -> None:
    listen = peers.free_port()
    peer = dcmqrscp_peer(hosts={"JOBS": (LOCAL, listen)})
    await _fill(peer.port, peer.aet, [p for files in population.values() for p in files])
    await _both_methods(peer.port, peer.aet, population, tmp_path, listen)


async def test_job_from_orthanc(
    orthanc_peer: Callable[..., PeerProcess], population: dict[str, list[Path]], tmp_path: Path
) -> None:
    listen = peers.free_port()
    peer = orthanc_peer(modalities={"jobs": ("JOBS", LOCAL, listen)})
    await _fill(peer.port, peer.aet, [p for files in population.values() for p in files])
    await _both_methods(peer.port, peer.aet, population, tmp_path, listen)


# -- faults -----------------------------------------------------------------------------


def _journal_states(path: Path) -> dict[str, str]:
    """Study UID -> state, read by a second connection (the job may be writing)."""
    if not path.exists():  # the job has not started yet
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT study_uid, state FROM studies").fetchall())
    except sqlite3.OperationalError:  # the job has not created its tables yet
        return {}
    finally:
        db.close()


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (bounded) until ``condition()`` holds, looking every 20 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _stamps(out: Path, studies: list[str]) -> dict[Path, tuple[int, int]]:
    return {
        p: (p.stat().st_ino, p.stat().st_mtime_ns)
        for uid in studies
        for p in (out / uid).glob("*.dcm")
    }


async def test_a_job_killed_midway_resumes_without_fetching_done_studies_again(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    out, journal = tmp_path / "out", tmp_path / "job.db"
    async with ArchiveServer(tmp_path / "pacs", LOCAL, 0) as server:
        try:
            server.archive.ingest([p for files in population.values() for p in files])
            argv = [
                sys.executable, "-m", "aiodimse", "retrieve", LOCAL, str(server.port),
                "--aec", "QRSCP", "--aet", "JOBS", "--method", "get", "-k", "StudyDate=",
                "--out", str(out), "--journal", str(journal), "--associations", "2",
                "--rate", "40/s",
            ]  # fmt: skip
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                await _until(
                    lambda: list(_journal_states(journal).values()).count("done") >= 10,
                    60,
                    "10 studies done",
                )
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=10)
            states = _journal_states(journal)
            done_before = [uid for uid, state in states.items() if state == "done"]
            assert 10 <= len(done_before) < STUDIES
            stamps = _stamps(out, done_before)
            job = await RetrieveJob.open(journal)
            async with job:
                events = await _run(job)
                report = await job.report()
        finally:
            server.archive.close()
    assert events[0].data["recovered"] >= 1  # the studies in progress when it died
    touched = {e.data["study"] for e in events if e.kind == "study"}
    assert touched.isdisjoint(done_before)  # done means done: never fetched again
    assert _stamps(out, done_before) == stamps
    assert report.ok and report.counts["done"] == STUDIES
    every = [p for files in population.values() for p in files]
    assert _received(out) == originals(every)
    assert _leftovers(out) == []


async def test_the_job_backs_off_while_the_source_is_down_and_completes(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    port = peers.free_port()
    storage = tmp_path / "pacs"

    def start() -> PeerProcess:
        return peers.start_aiodimse_qrscp(port, storage, work_dir=tmp_path)

    peer = start()
    try:
        every = [p for files in population.values() for p in files]
        await _fill(port, "QRSCP", every)
        limits = Limits(
            backoff=0.1, max_backoff=0.5, max_attempts=30, dimse_timeout=10,
            instances_per_second=60,
        )  # fmt: skip
        spec = _spec(Source(LOCAL, port, "QRSCP", 2), tmp_path / "out", "get", None, limits=limits)
        job = await RetrieveJob.create(tmp_path / "job.db", spec)
        retries = done = 0
        async with job:
            async for event in job.run():
                if event.kind == "retry":
                    retries += 1
                if event.kind == "study" and event.data["state"] == "done":
                    done += 1
                    if done == 5:  # the source goes away mid-job, and comes back
                        peer.stop()
                        peer = await asyncio.to_thread(start)
            report = await job.report()
    finally:
        peer.stop()
    assert retries >= 1  # the outage was felt ...
    assert report.ok and report.counts["done"] == STUDIES, report.summary()  # ... and overcome
    assert _received(tmp_path / "out") == originals(every)


async def test_an_instance_the_source_cannot_send_leaves_its_study_partial(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    async with ArchiveServer(tmp_path / "pacs", LOCAL, 0) as server:
        try:
            server.archive.ingest([p for files in population.values() for p in files])
            victim_study, files = next(iter(population.items()))
            victim = read_part10(files[0]).sop_instance_uid
            (stored,) = [
                p for p in (tmp_path / "pacs").rglob("*.dcm")
                if read_part10(p).sop_instance_uid == victim
            ]  # fmt: skip
            stored.unlink()  # the PACS still lists it, but cannot send it
            spec = _spec(Source(LOCAL, server.port, "QRSCP", 4), tmp_path / "out", "get", None)
            job = await RetrieveJob.create(tmp_path / "job.db", spec)
            async with job:
                await _run(job)
                report = await job.report()
                (row,) = await job.journal.studies(["partial"])
        finally:
            server.archive.close()
    assert report.counts == {**report.counts, "done": STUDIES - 1, "partial": 1}
    assert row.study_uid == victim_study and row.missing == (victim,)
    assert row.attempts == FAST.max_attempts
    assert f"missing {victim}" in report.summary()
    assert not report.ok


async def test_a_wrong_called_ae_stops_at_once_with_what_to_fix(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    port = peers.free_port()
    peer = peers.start_aiodimse_qrscp(
        port, tmp_path / "pacs", work_dir=tmp_path, extra=["--check-called-ae"]
    )
    try:
        argv = [
            sys.executable, "-m", "aiodimse", "retrieve", LOCAL, str(port), "--aec", "WRONG",
            "--method", "get", "-k", "StudyDate=", "--out", str(tmp_path / "out"),
            "--journal", str(tmp_path / "job.db"), "--attempts", "5", "--backoff", "30",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        peer.stop()
    text = (stdout + stderr).decode()
    assert proc.returncode == 1, text
    assert "called-AE-title-not-recognized" in text and "--aec" in text
    assert "Traceback" not in text
    # Stopped at the first refusal: with a 30 s backoff a retry would have shown.
    assert "retry" not in text
    # The journal keeps why, for --status after the process has gone.
    status = await asyncio.to_thread(_cli, "--status", str(tmp_path / "job.db"))
    assert status.returncode == 1 and "stopped: " in status.stdout
    assert "called-AE-title-not-recognized" in status.stdout


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 256 KiB tmpfs: a destination that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_destination_ends_the_job_cleanly(small_disk: Path, tmp_path: Path) -> None:
    population = _population(tmp_path / "src", 12, per_study=1)
    big = {}
    for uid in population:  # ~130 KiB each: the disk holds one
        ds = make_study(1, rows=256, cols=256, seed=f"big-{uid}")[0]
        big[str(ds.StudyInstanceUID)] = write_study(tmp_path / "big" / uid, [ds])
    async with ArchiveServer(tmp_path / "pacs", LOCAL, 0) as server:
        try:
            server.archive.ingest([p for files in big.values() for p in files])
            spec = _spec(Source(LOCAL, server.port, "QRSCP", 2), small_disk, "get", None)
            job = await RetrieveJob.create(tmp_path / "job.db", spec)
            async with job:
                events = await _run(job)
                report = await job.report()
        finally:
            server.archive.close()
    stops = [e for e in events if e.kind == "source-stopped"]
    assert stops and "No space left on device" in stops[0].data["error"]
    assert "resume" in stops[0].data["error"]
    assert not report.ok and report.counts["pending"] >= 1  # kept for a resume
    assert _leftovers(small_disk) == []
    for path in small_disk.rglob("*.dcm"):  # what is there is whole
        assert read_part10(path).sop_instance_uid == path.stem
        aiodimse.completeness.check_complete(path, read_part10(path))


# -- migration to a third-party AE, work lists, several sources, the command ------------


async def test_migration_to_another_archive_is_verified_there(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    every = [p for files in population.values() for p in files]
    async with (
        ArchiveServer(tmp_path / "target", LOCAL, 0, ae_title="TARGET") as target,
        ArchiveServer(
            tmp_path / "pacs", LOCAL, 0, destinations={"TARGET": (LOCAL, target.port)}
        ) as source,
    ):
        try:
            source.archive.ingest(every)
            for verify, state in (
                ((LOCAL, target.port, "TARGET"), "done"),
                (None, "unverified"),
            ):
                spec = JobSpec(
                    sources=(Source(LOCAL, source.port, "QRSCP", 4),),
                    method="move-to",
                    destination="TARGET",
                    calling_ae="JOBS",
                    query={"StudyDate": ""},
                    verify=verify,
                    limits=FAST,
                )
                job = await RetrieveJob.create(tmp_path / f"{state}.db", spec)
                async with job:
                    await _run(job)
                    report = await job.report()
                assert report.counts[state] == STUDIES, report.summary()
        finally:
            source.archive.close()
            target.archive.close()
    stored = {read_part10(p).sop_instance_uid for p in (tmp_path / "target").rglob("*.dcm")}
    assert stored == set(originals(every))


async def test_a_work_list_over_two_sources_takes_each_study_once(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    studies = list(population)
    wanted = studies[:6]
    async with (
        ArchiveServer(tmp_path / "a", LOCAL, 0, ae_title="A") as a,
        ArchiveServer(tmp_path / "b", LOCAL, 0, ae_title="B") as b,
    ):
        try:
            a.archive.ingest([p for uid in studies[:4] for p in population[uid]])
            b.archive.ingest([p for uid in studies[2:8] for p in population[uid]])
            items = [WorkItem("StudyInstanceUID", uid, priority=n) for n, uid in enumerate(wanted)]
            items.append(WorkItem("StudyInstanceUID", "1.2.3.4.5.6.7.8.9"))  # nowhere
            spec = JobSpec(
                sources=(Source(LOCAL, a.port, "A", 2), Source(LOCAL, b.port, "B", 2)),
                method="get",
                destination=str(tmp_path / "out"),
                items=tuple(items),
                limits=FAST,
            )
            job = await RetrieveJob.create(tmp_path / "job.db", spec)
            async with job:
                await _run(job)
                report = await job.report()
                rows = {r.study_uid: r.source for r in await job.journal.studies()}
        finally:
            a.archive.close()
            b.archive.close()
    assert report.counts["done"] == len(wanted)
    # Each study from the first source that has it; the missing one named.
    assert rows == {uid: (0 if n < 4 else 1) for n, uid in enumerate(wanted)}
    assert [u["value"] for u in report.unexpanded] == ["1.2.3.4.5.6.7.8.9"]
    assert not report.ok
    expected = [p for uid in wanted for p in population[uid]]
    assert _received(tmp_path / "out") == originals(expected)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodimse", "retrieve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([LOCAL, "104", "--out", "o"], "either as -k query keys or as --input"),
        ([LOCAL, "104", "-k", "StudyDate=", "--out", "o"], "--method move needs --port"),
        ([LOCAL, "104", "-k", "StudyDate=", "--method", "get"], "needs --out"),
        ([LOCAL, "104", "-k", "Nonsense=1", "--method", "get", "--out", "o"], "Nonsense"),
        ([LOCAL, "104", "-k", "StudyDate=", "--method", "get", "--out", "o", "--rate", "x"],
         "rate"),
        (["--status", "missing.db"], "no such journal"),
    ],
)  # fmt: skip
def test_the_command_refuses_bad_input_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aiodimse", "retrieve", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


async def test_the_command_runs_reports_and_resumes(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    port = peers.free_port()
    peer = peers.start_aiodimse_qrscp(port, tmp_path / "pacs", work_dir=tmp_path)
    try:
        every = [p for files in population.values() for p in files]
        await _fill(port, "QRSCP", every)
        journal = tmp_path / "job.db"
        uids = tmp_path / "studies.txt"
        uids.write_text("\n".join(list(population)[:5]) + "\n")
        args = [
            LOCAL, str(port), "--aec", "QRSCP", "--aet", "JOBS", "--input", str(uids),
            "--out", str(tmp_path / "out"), "--journal", str(journal), "--json",
            "--method", "get", "--associations", "3",
        ]  # fmt: skip
        run = await asyncio.to_thread(_cli, *args)
        assert run.returncode == 0, run.stderr
        events = [json.loads(line) for line in run.stdout.splitlines()]
        assert events[0]["event"] == "started" and events[-1]["event"] == "report"
        assert events[-1]["counts"]["done"] == 5 and events[-1]["ok"] is True
        done = [e for e in events if e["event"] == "study" and e["state"] == "done"]
        assert sorted(e["study"] for e in done) == sorted(list(population)[:5])
        # The same journal again: nothing to do, nothing fetched.
        again = await asyncio.to_thread(_cli, "--resume", str(journal), "--json")
        assert again.returncode == 0, again.stderr
        assert not [e for e in map(json.loads, again.stdout.splitlines()) if e["event"] == "study"]
        status = await asyncio.to_thread(_cli, "--status", str(journal))
        assert status.returncode == 0 and "5 studies: 5 done" in status.stdout
        # A journal is never overwritten by a new job.
        twice = await asyncio.to_thread(_cli, *args)
        assert twice.returncode == 2 and "--resume" in twice.stderr
    finally:
        peer.stop()


async def test_outside_its_time_window_the_job_waits_and_starts_nothing(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    now = dt.datetime.now()
    closed = TimeWindow(
        (now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0),
        (now + dt.timedelta(hours=3)).time().replace(second=0, microsecond=0),
    )
    async with ArchiveServer(tmp_path / "pacs", LOCAL, 0) as server:
        try:
            server.archive.ingest([p for files in population.values() for p in files])
            limits = Limits(window=closed)
            spec = _spec(Source(LOCAL, server.port, "QRSCP", 2), tmp_path / "out", "get", None,
                         limits=limits)  # fmt: skip
            job = await RetrieveJob.create(tmp_path / "job.db", spec)
            async with job:
                events = job.run()
                kinds = []
                async for event in events:
                    kinds.append(event.kind)
                    if event.kind == "paused":
                        assert 3600 <= event.data["seconds"] <= 7200 + 60
                        break
                await events.aclose()
                report = await job.report()
        finally:
            server.archive.close()
    assert kinds[-1] == "paused" and "study" not in kinds
    assert report.counts["pending"] == STUDIES and not list((tmp_path / "out").rglob("*.dcm"))


async def test_a_source_that_refuses_c_get_stops_with_what_to_fix(
    dcmqrscp_peer: Callable[..., PeerProcess], population: dict[str, list[Path]], tmp_path: Path
) -> None:
    peer = dcmqrscp_peer(extra=["--disable-get"])
    files = next(iter(population.values()))
    await _fill(peer.port, peer.aet, files)
    spec = _spec(Source(LOCAL, peer.port, peer.aet, 2), tmp_path / "out", "get", None)
    job = await RetrieveJob.create(tmp_path / "job.db", spec)
    async with job:
        events = await _run(job)
        report = await job.report()
    (stop,) = [e for e in events if e.kind == "source-stopped"]
    assert "cannot send C-GET sub-operations" in stop.data["error"], stop.data
    assert not [e for e in events if e.kind == "retry"]  # permanent: no retry
    assert report.counts["pending"] == 1 and not report.ok


async def test_an_unknown_move_destination_stops_with_what_to_fix(
    dcmqrscp_peer: Callable[..., PeerProcess], population: dict[str, list[Path]], tmp_path: Path
) -> None:
    peer = dcmqrscp_peer()  # no HostTable entry for JOBS
    await _fill(peer.port, peer.aet, next(iter(population.values())))
    listen = peers.free_port()
    spec = _spec(Source(LOCAL, peer.port, peer.aet, 2), tmp_path / "out", "move", listen)
    job = await RetrieveJob.create(tmp_path / "job.db", spec)
    async with job:
        events = await _run(job)
        report = await job.report()
    (stop,) = [e for e in events if e.kind == "source-stopped"]
    assert "0xA801" in stop.data["error"] and "configure that AE title" in stop.data["error"]
    assert not [e for e in events if e.kind == "retry"]
    assert report.counts["pending"] == 1 and not report.ok


async def test_a_query_is_asked_of_every_source_and_waits_for_one_that_is_down(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    studies = list(population)
    b_port = peers.free_port()
    async with ArchiveServer(tmp_path / "a", LOCAL, 0, ae_title="A") as a:
        b: ArchiveServer | None = None
        try:
            a.archive.ingest([p for uid in studies[:4] for p in population[uid]])
            spec = JobSpec(
                sources=(Source(LOCAL, a.port, "A", 2), Source(LOCAL, b_port, "B", 2)),
                method="get",
                destination=str(tmp_path / "out"),
                query={"StudyDate": ""},
                limits=FAST,
            )
            job = await RetrieveJob.create(tmp_path / "job.db", spec)
            async with job:
                async for event in job.run():
                    if event.kind == "source-error" and b is None:
                        # B was down when the job asked; it comes up, and is asked again.
                        b = ArchiveServer(tmp_path / "b", LOCAL, b_port, ae_title="B")
                        b.archive.ingest([p for uid in studies[2:8] for p in population[uid]])
                        await b.start()
                report = await job.report()
                rows = {r.study_uid: r.source for r in await job.journal.studies()}
        finally:
            a.archive.close()
            if b is not None:
                b.close()
                await b.wait_closed()
                b.archive.close()
    assert b is not None, "the job never found B down"
    assert report.ok and report.counts["done"] == 8, report.summary()
    assert rows == {uid: (0 if n < 4 else 1) for n, uid in enumerate(studies[:8])}


async def test_a_job_into_the_embedded_archive_is_served_by_it(
    population: dict[str, list[Path]], tmp_path: Path
) -> None:
    every = [p for files in population.values() for p in files]
    listen = peers.free_port()
    async with ArchiveServer(
        tmp_path / "pacs", LOCAL, 0, destinations={"JOBS": (LOCAL, listen)}
    ) as source:
        try:
            source.archive.ingest(every)
            for method in ("move", "get"):  # the second finds everything there already
                spec = _spec(
                    Source(LOCAL, source.port, "QRSCP", 4), tmp_path / "mine", method,
                    listen if method == "move" else None, archive=True,
                )  # fmt: skip
                job = await RetrieveJob.create(tmp_path / f"{method}.db", spec)
                async with job:
                    events = await _run(job)
                    report = await job.report()
                assert report.ok and report.counts["done"] == STUDIES, report.summary()
                moved = sum(e.data["instances"] for e in events if e.kind == "progress")
                assert method == "move" or moved == 0
        finally:
            source.archive.close()
    # The archive it filled answers for every instance, byte for byte.
    async with ArchiveServer(tmp_path / "mine", LOCAL, 0, ae_title="MINE") as mine:
        try:
            async with aiodimse.connect(LOCAL, mine.port, called_ae="MINE") as assoc:
                found = await assoc.find(
                    {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "",
                     "SeriesInstanceUID": "", "SOPInstanceUID": ""}
                )  # fmt: skip
            paths = [
                path
                for uid in population
                for path in mine.archive.retrieve_paths(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid}
                )
            ]
        finally:
            mine.archive.close()
    assert {str(m.SOPInstanceUID) for m in found.matches} == set(originals(every))
    assert {read_part10(p).sop_instance_uid: data_set_of(p) for p in paths} == originals(every)
