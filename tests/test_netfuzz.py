"""A short network fuzz run against ``aiodimse qrscp`` in a process of its own: random,
mutated and raw PDUs and DIMSE messages; the server must stay up, keep answering, and log
no ERROR and no traceback. (``benchmarks/fuzz_network.py`` runs 100,000 cases.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiodimse.testing import peers
from aiodimse.testing.netfuzz import run_cases


@pytest.fixture
def qrscp(tmp_path: Path) -> Iterator[peers.PeerProcess]:
    peer = peers.start_aiodimse_qrscp(
        peers.free_port(), tmp_path / "archive", work_dir=tmp_path / "peer"
    )
    try:
        yield peer
    finally:
        peer.stop()


@pytest.mark.parametrize("seed", [1, 2])
async def test_qrscp_survives_a_short_network_fuzz_run(qrscp: peers.PeerProcess, seed: int) -> None:
    report = await run_cases(
        "127.0.0.1", qrscp.port, called_ae="QRSCP", seed=seed, cases=400, check_every=100
    )
    assert report.ok, report.failures
    assert report.cases == 400 and report.liveness_checks == 4
    assert set(report.kinds) == {"random", "mutated-rq", "dimse", "dimse-mutated", "sequence"}
    assert report.answered > 100  # the server talked back, not just closed everything
    assert qrscp.alive()
    log = qrscp.log()
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if " ERROR " in line] == []
