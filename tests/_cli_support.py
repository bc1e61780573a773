"""What the command-line test modules share: running ``aiodimse`` as a process, and an
``aiodimse`` server command in a process of its own, stopped by its PID.

Test modules import it as ``from _cli_support import Service, run_aiodimse`` (``tests/``
is on ``sys.path``); the ``services`` fixture (conftest.py) stops what a test started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from aiodimse.testing import peers

LOCAL = "127.0.0.1"


def run_aiodimse(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m aiodimse ARGS`` (60 s at most); never a traceback on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "aiodimse", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


class Service:
    """``aiodimse storescp|qrscp ARGS --port N -v`` in a process of its own, stopped by its
    PID; its output goes to ``log_path``. ``port`` is a free one unless given (when the
    caller needs it before the arguments, e.g. to name a folder after it);
    ``port_option=False`` leaves ``--port`` out (the arguments name it another way, such as
    a configuration file)."""

    def __init__(
        self, tmp_path: Path, *args: str | Path, port: int | None = None, port_option: bool = True
    ) -> None:
        self.port = peers.free_port() if port is None else port
        self.log_path = tmp_path / f"service-{self.port}.log"
        self._log = self.log_path.open("w")
        port_args = ["--port", str(self.port)] if port_option else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiodimse", *map(str, args), *port_args, "-v"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            peers.wait_for_port(LOCAL, self.port, 20.0, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()
