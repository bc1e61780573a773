"""Sinks: temporary files left by a process killed mid-transfer are cleaned at start-up;
instances land through unnamed files made ahead where the platform has them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import aiodimse
from aiodimse import sinks
from aiodimse.dimse.commands import CStoreRQ
from aiodimse.enums import ContextResult
from aiodimse.requests import StoreRequest
from aiodimse.sinks import DirectorySink
from aiodimse.uids import EXPLICIT_VR_LITTLE_ENDIAN
from aiodimse.ul.negotiation import NegotiatedContext


def _dead_pid() -> int:
    """The PID of a process that has exited (killed with SIGKILL, as a crash would)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return proc.pid


def _temporaries(folder: Path, pids: dict[str, int]) -> dict[str, Path]:
    made = {}
    for name, pid in pids.items():
        path = folder / f".1.2.3.{len(made)}.{pid}.7.part"
        path.write_bytes(b"half an instance")
        made[name] = path
    return made


def test_a_sink_removes_what_a_dead_process_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = _temporaries(tmp_path, {"dead": _dead_pid(), "ours": os.getpid(), "alive": os.getppid()})
    (tmp_path / "1.2.3.dcm").write_bytes(b"a complete instance")
    with caplog.at_level("WARNING", logger="aiodimse.storage"):
        DirectorySink(tmp_path)
    assert not made["dead"].exists()
    assert made["ours"].exists() and made["alive"].exists()
    assert (tmp_path / "1.2.3.dcm").exists()
    assert any("removed 1 temporary file" in r.getMessage() for r in caplog.records)


def test_the_archive_cleans_its_folders_at_start_up(tmp_path: Path) -> None:
    bucket = tmp_path / "arch" / "files" / "a7"
    bucket.mkdir(parents=True)
    made = _temporaries(bucket, {"dead": _dead_pid(), "alive": os.getppid()})
    archive = aiodimse.Archive(tmp_path / "arch")
    try:
        assert not made["dead"].exists() and made["alive"].exists()
    finally:
        archive.close()


# -- unnamed files made ahead (O_TMPFILE) -----------------------------------------------------

CT = "1.2.840.10008.5.1.4.1.1.2"
TMPFILE = bool(getattr(os, "O_TMPFILE", 0)) and sys.platform == "linux"


def _request(uid: str) -> StoreRequest:
    context = NegotiatedContext(
        1, CT, ContextResult.ACCEPTANCE, EXPLICIT_VR_LITTLE_ENDIAN, scu=False, scp=True
    )
    message = CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid=uid)
    peer = SimpleNamespace(peer_ae="SCU")
    return StoreRequest(peer, context, message, cast(Any, None))


async def _filled(sink: DirectorySink) -> None:
    """Take (and give back) one writer so that the sink makes its spares; wait for them."""
    sink.open(_request("9.9.9")).discard()
    refill = sink.spares.refill
    assert refill is not None
    await refill


async def _store(sink: DirectorySink, uid: str, body: bytes) -> Path:
    writer = sink.open(_request(uid))
    writer.write(body)
    await writer.commit()
    return sink.directory / f"{uid}.dcm"


@pytest.mark.skipif(not TMPFILE, reason="O_TMPFILE is Linux only")
async def test_instances_land_through_unnamed_files_and_nothing_else_shows(
    tmp_path: Path,
) -> None:
    sink = DirectorySink(tmp_path)
    await _filled(sink)
    assert sink.spares.usable is True and len(sink.spares.ready) > 0
    writer = sink.open(_request("1.2.3.1"))
    assert str(writer.tmp).startswith("/proc/self/fd/")  # an unnamed file, made ahead
    writer.write(b"first half ")
    # While it is being received, nothing shows in the folder (no .part, no spares).
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    writer.write(b"second half")
    await writer.commit()
    final = tmp_path / "1.2.3.1.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert final.read_bytes().endswith(b"first half second half")
    assert final.read_bytes().startswith(bytes(128) + b"DICM")
    assert final.stat().st_mode & 0o777 == 0o644 & ~_umask()


@pytest.mark.skipif(not TMPFILE, reason="O_TMPFILE is Linux only")
async def test_an_instance_sent_again_replaces_the_first(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    await _filled(sink)
    first = await _store(sink, "1.2.3.2", b"old")
    second = await _store(sink, "1.2.3.2", b"new data")
    assert first == second and second.read_bytes().endswith(b"new data")
    assert sorted(p.name for p in tmp_path.iterdir()) == [second.name]


@pytest.mark.skipif(not TMPFILE, reason="O_TMPFILE is Linux only")
async def test_a_discarded_unnamed_file_leaves_nothing(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    await _filled(sink)
    writer = sink.open(_request("1.2.3.3"))
    assert str(writer.tmp).startswith("/proc/self/fd/")
    writer.write(b"half an instance")
    writer.discard()
    assert list(tmp_path.iterdir()) == []


async def test_without_unnamed_files_a_part_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where O_TMPFILE does not work, the writers create their own temporary files."""
    real_open = os.open

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if TMPFILE and flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(95, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    sink = DirectorySink(tmp_path)
    sink.open(_request("9.9.9")).discard()
    if TMPFILE:
        assert sink.spares.refill is not None
        with pytest.raises(OSError, match="not supported"):
            await sink.spares.refill
    assert sink.spares.usable is False
    writer = sink.open(_request("1.2.3.4"))
    assert writer.tmp.name.endswith(".part") and writer.tmp.parent == tmp_path
    writer.write(b"data")
    await writer.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.2.3.4.dcm"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.skipif(not TMPFILE, reason="O_TMPFILE is Linux only")
async def test_nothing_shows_in_the_folder_while_spares_are_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program watching the folder must see instances only: making the unnamed files
    (in a thread) adds no entry, not even for a moment (it once linked a probe file)."""
    seen: list[list[str]] = []
    real_open, real_link = os.open, os.link

    def watched(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            seen.append(sorted(os.listdir(tmp_path)))
            return result

        return call

    sink = DirectorySink(tmp_path)
    monkeypatch.setattr(os, "open", watched(real_open))
    monkeypatch.setattr(os, "link", watched(real_link))
    writer = sink.open(_request("9.9.9"))  # (a .part file: nothing made ahead yet)
    own = writer.tmp.name
    writer.discard()
    assert sink.spares.refill is not None
    await sink.spares.refill
    # The thread making files may list the folder before the writer's own .part file is
    # discarded: that file, and nothing else, may show.
    assert seen and all(set(listing) <= {own} for listing in seen), seen
    assert len(sink.spares.ready) > 0


@pytest.mark.skipif(not TMPFILE, reason="O_TMPFILE is Linux only")
async def test_where_unnamed_files_cannot_be_named_they_are_copied_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc or a policy against linkat: the instance still lands whole (copied out),
    and the sink makes no more unnamed files."""
    sink = DirectorySink(tmp_path)
    await _filled(sink)

    def refused(fd: int, name: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(name))

    monkeypatch.setattr(sinks, "_link_unnamed", refused)
    first = await _store(sink, "1.2.3.5", b"copied out")
    assert first.read_bytes().endswith(b"copied out")
    assert sink.spares.usable is False and not sink.spares.ready
    writer = sink.open(_request("1.2.3.6"))
    assert writer.tmp.name.endswith(".part")
    writer.write(b"by a part file")
    await writer.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.2.3.5.dcm", "1.2.3.6.dcm"]
