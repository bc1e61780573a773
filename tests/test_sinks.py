"""Sinks: temporary files left by a process killed mid-transfer are cleaned at start-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import aiodimse
from aiodimse.sinks import DirectorySink


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
