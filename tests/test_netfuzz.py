"""A short network fuzz run against ``aiodimse qrscp`` in a process of its own: random,
mutated and raw PDUs and DIMSE messages; the server must stay up, keep answering, and log
no ERROR and no traceback. (``benchmarks/fuzz_network.py`` runs 100,000 cases.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiodimse.testing import peers
from aiodimse.testing.netfuzz import run_cases


@pytest.fixture
def qrscp(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    port = peers.free_port()
    log_path = tmp_path / "qrscp.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiodimse",
                "qrscp",
                "--port",
                str(port),
                "--storage",
                str(tmp_path / "archive"),
                "--aet",
                "QRSCP",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        peers.wait_for_port("127.0.0.1", port, 30.0, proc)
        yield port, log_path, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("seed", [1, 2])
async def test_qrscp_survives_a_short_network_fuzz_run(
    qrscp: tuple[int, Path, subprocess.Popen[bytes]], seed: int
) -> None:
    port, log_path, proc = qrscp
    report = await run_cases(
        "127.0.0.1", port, called_ae="QRSCP", seed=seed, cases=400, check_every=100
    )
    assert report.ok, report.failures
    assert report.cases == 400 and report.liveness_checks == 4
    assert set(report.kinds) == {"random", "mutated-rq", "dimse", "dimse-mutated", "sequence"}
    assert report.answered > 100  # the server talked back, not just closed everything
    assert proc.poll() is None
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if " ERROR " in line] == []
