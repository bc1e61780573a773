"""``qrscp`` / ``storescp --workers N``: several processes on one port (SO_REUSEPORT), one
SQLite index shared by them, a supervisor that replaces a dead worker and stops them all
cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _archive_support import instance
from hypothesis import given
from hypothesis import strategies as st

import aiodimse
from aiodimse.archive import Archive
from aiodimse.archive.index import Record, is_busy
from aiodimse.cli import main, supervisor
from aiodimse.cli.common import UsageError
from aiodimse.cli.supervisor import shares
from aiodimse.testing import peers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT: Linux")

HOST = "127.0.0.1"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (state 0A in /proc/net/tcp, tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port``."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer exists (a zombie still counts as there)."""
    return not Path(f"/proc/{pid}").exists()


def slots_serving(log: str, calling_ae: str) -> set[str]:
    """The worker slots whose log says they accepted an association from ``calling_ae``."""
    pattern = rf"\[worker (\d+)/\d+\] #\d+ accepted association {calling_ae} "
    return set(re.findall(pattern, log))


def start_workers(tmp_path: Path, storage: Path, n: int = 2) -> peers.PeerProcess:
    """``aiodimse qrscp --workers n -v``, once every worker listens on the port."""
    port = peers.free_port()
    qr = peers.start_aiodimse_qrscp(
        port, storage, work_dir=tmp_path, extra=["--workers", str(n), "-v"]
    )
    try:
        wait_until(
            lambda: len(children(qr.pid)) == n and all(listens(c, port) for c in children(qr.pid)),
            f"{n} workers listening",
        )
    except BaseException:
        qr.stop()
        raise
    return qr


async def store_one(port: int, ds: object, calling: str) -> None:
    async with aiodimse.connect(HOST, port, calling_ae=calling, called_ae="QRSCP") as assoc:
        await assoc.store(ds)  # type: ignore[arg-type]


async def find_study(port: int, study_uid: str) -> list[str]:
    query = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": "",
        "SOPInstanceUID": "",
    }
    async with aiodimse.connect(HOST, port, calling_ae="FINDER", called_ae="QRSCP") as assoc:
        result = await assoc.find(query)
    return sorted(str(m.SOPInstanceUID) for m in result.matches)


async def test_two_workers_store_into_one_index_and_find_sees_all(tmp_path: Path) -> None:
    storage = tmp_path / "archive"
    qr = start_workers(tmp_path, storage)
    try:
        datasets = [instance(study="workers", sop=f"workers-{i}") for i in range(8)]
        uids = sorted(str(ds.SOPInstanceUID) for ds in datasets)
        # 8 concurrent associations, then 16 more sending the same 8 instances twice over,
        # concurrently: each instance stored three times, by either worker.
        await asyncio.gather(*(store_one(qr.port, ds, f"SCU{i}") for i, ds in enumerate(datasets)))
        again = datasets + datasets
        await asyncio.gather(
            *(store_one(qr.port, ds, f"AGAIN{i % 2}") for i, ds in enumerate(again))
        )
        study = str(datasets[0].StudyInstanceUID)
        # C-FIND, association after association, until both workers have answered one.
        for _ in range(60):
            assert await find_study(qr.port, study) == uids
            if slots_serving(qr.log(), "FINDER") == {"1", "2"}:
                break
        assert slots_serving(qr.log(), "FINDER") == {"1", "2"}, qr.log()
        # Stores came in through both workers too (16 associations among two processes).
        stores = set().union(*(slots_serving(qr.log(), ae) for ae in ("AGAIN0", "AGAIN1")))
        stores |= set().union(*(slots_serving(qr.log(), f"SCU{i}") for i in range(8)))
        assert stores == {"1", "2"}, qr.log()
    finally:
        assert qr.stop() == 0, qr.log()
    db = sqlite3.connect(storage / "index.sqlite")
    try:
        rows = db.execute("SELECT sop_uid FROM instances ORDER BY sop_uid").fetchall()
    finally:
        db.close()
    assert [r[0] for r in rows] == uids  # each exactly once
    files = sorted(p.name for p in (storage / "files").rglob("*") if p.is_file())
    assert files == sorted(f"{uid}.dcm" for uid in uids)  # no temporary left either


async def test_killed_worker_is_replaced_and_sigterm_stops_everything(tmp_path: Path) -> None:
    qr = start_workers(tmp_path, tmp_path / "archive")
    try:
        first = children(qr.pid)
        victim = min(first)
        survivor = (first - {victim}).pop()
        started = dict(re.findall(r"worker (\d+) of 2 started \(pid (\d+)\)", qr.log()))
        slot = next(s for s, pid in started.items() if int(pid) == victim)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(children(qr.pid) - {survivor}) == 1 and victim not in children(qr.pid),
            "a replacement worker",
        )
        (new,) = children(qr.pid) - {survivor}
        wait_until(lambda: listens(new, qr.port), "the replacement listening")
        assert f"worker {slot} (pid {victim}) ended with signal 9: replacing it" in qr.log()
        # The port keeps serving, and the new worker takes its share.
        log_before = len(qr.log())
        for _ in range(60):
            async with aiodimse.connect(HOST, qr.port, calling_ae="ECHOER") as assoc:
                await assoc.echo()
            if slot in slots_serving(qr.log()[log_before:], "ECHOER"):
                break
        assert slot in slots_serving(qr.log()[log_before:], "ECHOER"), qr.log()
        everyone = first | {new}
        qr.proc.send_signal(signal.SIGTERM)
        assert qr.proc.wait(timeout=30) == 0, qr.log()
        for pid in everyone:
            assert gone(pid), f"worker {pid} outlived the supervisor"
        assert "Traceback" not in qr.log()
    finally:
        qr.stop()


async def test_storescp_workers(tmp_path: Path) -> None:
    port = peers.free_port()
    out = tmp_path / "in"
    argv = [sys.executable, "-m", "aiodimse", "storescp", "--port", str(port), "--out", str(out)]
    scp = peers.PeerProcess(
        "storescp-workers", [*argv, "--workers", "2"], port=port, aet="STORESCP", work_dir=tmp_path
    )
    try:
        wait_until(lambda: len(children(scp.pid)) == 2, "two workers")
        wait_until(lambda: all(listens(c, port) for c in children(scp.pid)), "workers listening")
        workers = children(scp.pid)
        datasets = [instance(study="scp", sop=f"scp-{i}") for i in range(6)]

        async def one(ds: object) -> None:
            async with aiodimse.connect(HOST, port, called_ae="STORESCP") as assoc:
                await assoc.store(ds)  # type: ignore[arg-type]

        await asyncio.gather(*(one(ds) for ds in datasets))
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in datasets)
        scp.proc.send_signal(signal.SIGTERM)
        assert scp.proc.wait(timeout=30) == 0, scp.log()
        assert all(gone(pid) for pid in workers)
    finally:
        scp.stop()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["qrscp", "--storage", "{tmp}", "--workers", "0"], "0 workers: must be 1 to 256"),
        (
            ["qrscp", "--storage", "{tmp}", "--workers", "3", "--max-associations", "2"],
            "each worker needs at least one association",
        ),
        (
            ["storescp", "--port", "0", "--out", "{tmp}", "--workers", "2", "-xcs", "true"],
            "--exec-on-eostudy cannot be used with --workers",
        ),
        (["qrscp", "--storage", "{tmp}", "--move-window", "0"], "--move-window 0: must be 1"),
    ],
)
def test_workers_usage_errors(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@given(total=st.integers(1, 10_000), workers=st.integers(1, 256))
def test_shares_add_up_to_the_total(total: int, workers: int) -> None:
    split = shares(total, workers)
    assert len(split) == workers and sum(split) == total
    assert max(split) - min(split) <= 1 and split == sorted(split, reverse=True)


async def test_store_waits_for_an_index_locked_by_another_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write lock held past the busy timeout (another worker) delays the index row, on
    the event loop, instead of failing the store."""
    archive = Archive(tmp_path / "archive")
    try:
        archive.index.db.execute("PRAGMA busy_timeout = 0")  # fail at once: the retry path
        other = sqlite3.connect(archive.index.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the lock another process would hold
        ds = instance(study="busy", sop="busy-1")
        record = Record.from_header(ds, "1.2.840.10008.1.2.1")
        retried = asyncio.Event()

        class Seen(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "index busy" in record.getMessage():
                    retried.set()

        seen = Seen()
        logging.getLogger("aiodimse.archive").addHandler(seen)
        try:
            task = asyncio.create_task(archive.index_instance(record, "files/x.dcm", 1))
            await asyncio.wait_for(retried.wait(), 10)
            assert not task.done()
            other.execute("COMMIT")
            await asyncio.wait_for(task, 10)
        finally:
            logging.getLogger("aiodimse.archive").removeHandler(seen)
            other.close()
        assert archive.count() == 1
    finally:
        archive.close()


def test_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    a = sqlite3.connect(path, isolation_level=None)
    b = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        a.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as caught:
            b.execute("BEGIN IMMEDIATE")
        assert is_busy(caught.value)
        assert not is_busy(sqlite3.OperationalError("no such table: x"))
        assert not is_busy(ValueError("database is locked"))
    finally:
        a.close()
        b.close()


def test_workers_without_so_reuseport_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor.sys, "platform", "darwin")
    with pytest.raises(UsageError) as caught:
        supervisor.reserve_port(HOST, 0)
    assert "needs SO_REUSEPORT" in str(caught.value) and "\n" not in str(caught.value)
