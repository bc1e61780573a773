"""The fuzz engine (``aiodimse fuzz``): planted faults are found, minimised and replayed;
aiodimse's own servers give zero findings; real peers are fuzzed to a report."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _settings import CI, require_dcmtk, require_orthanc

from aiodimse import fuzz
from aiodimse.fuzz.cases import LAYERS, build_case
from aiodimse.fuzz.engine import FuzzReport, load_replay
from aiodimse.fuzz.engine import alive as engine_alive
from aiodimse.server import Server
from aiodimse.testing import peers

PLANTED = Path(__file__).resolve().parent / "_planted_scp.py"

#: One seed finds every planted fault within this many cases (checked by the tests).
SEED, CASES = 2, 60


class Planted:
    """tests/_planted_scp.py as a subprocess, stopped by its PID."""

    def __init__(self, fault: str, *, supervise: bool = False) -> None:
        self.port = peers.free_port()
        argv = [sys.executable, str(PLANTED), "--port", str(self.port), "--fault", fault]
        self.proc = subprocess.Popen(
            [*argv, *(["--supervise"] if supervise else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.restarts = 0
        peers.wait_for_port("127.0.0.1", self.port, 20)

    async def restart(self) -> None:
        """Bring a crashed server back (the supervisor forks a new one on SIGUSR1)."""
        self.restarts += 1
        os.kill(self.proc.pid, signal.SIGUSR1)
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return
        raise RuntimeError("the planted SCP did not come back")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def planted(request: pytest.FixtureRequest) -> Iterator[Planted]:
    fault = request.param
    server = Planted(fault, supervise=fault == "crash")
    yield server
    server.stop()


def test_a_case_is_the_same_bytes_for_the_same_seed_and_index() -> None:
    a = build_case(7, 42, calling_ae="A", called_ae="B")
    b = build_case(7, 42, calling_ae="A", called_ae="B")
    c = build_case(7, 43, calling_ae="A", called_ae="B")
    assert a == b
    assert [s.data for s in a.steps] != [s.data for s in c.steps]
    # Every layer is mutated in a short run.
    assert {build_case(1, i, calling_ae="A", called_ae="B").layer for i in range(60)} == set(LAYERS)


EXPECTED = {
    "crash": ("crash", "A-ASSOCIATE-RQ", "port closed"),
    "hang": ("hang", "P-DATA-TF C-ECHO-RQ", "timeout"),
    "abort": ("conformance", "unknown-PDU", "A-ABORT source 2 reason 2"),
    "leak": ("leak", "acse/user-identity", "rss"),
}


@pytest.mark.parametrize("planted", sorted(EXPECTED), indirect=True)
async def test_each_planted_fault_is_found_minimised_and_replayed(
    planted: Planted, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fault = request.node.callspec.params["planted"]
    report = await fuzz.run(
        "127.0.0.1",
        planted.port,
        aec="PLANTED",
        seed=SEED,
        cases=CASES,
        out=tmp_path,
        hang_timeout=1.0,
        pid=planted.proc.pid if fault == "leak" else None,
        leak_rss_mib=32,
        restart=planted.restart if fault == "crash" else None,
        max_attempts=8,
    )
    assert report.cases == CASES
    assert [f.signature for f in report.findings] == [EXPECTED[fault]], report.summary()
    finding = report.findings[0]
    assert finding.reproduced is True
    assert finding.minimised is True
    assert finding.replay_file is not None
    saved = load_replay(finding.replay_file)
    assert saved.signature == EXPECTED[fault]
    assert saved.doc["seed"] == SEED and saved.doc["index"] == finding.index
    # The case is re-created from (seed, index) and still carries the fault.
    original = build_case(SEED, finding.index, calling_ae="AIODIMSE-FUZZ", called_ae="PLANTED")
    assert len(saved.steps) <= len(original.steps)
    if fault == "crash":
        assert planted.restarts >= 2  # found, then reproduced while minimising
    ok, _ = await fuzz.replay(
        finding.replay_file,
        "127.0.0.1",
        planted.port,
        hang_timeout=1.0,
        pid=planted.proc.pid if fault == "leak" else None,
    )
    assert ok


@pytest.fixture
def planted_hang() -> Iterator[Planted]:
    server = Planted("hang")
    yield server
    server.stop()


async def test_cli_replay_says_whether_it_reproduces(planted_hang: Planted, tmp_path: Path) -> None:
    # A replay file written by hand, as the format is documented: an association, then a
    # C-ECHO-RQ command split over two PDVs, which the planted server never answers.
    case = next(
        c
        for c in (build_case(SEED, i, calling_ae="FUZZ", called_ae="PLANTED") for i in range(99))
        if c.name in ("pdata/pdvs-one-pdu", "pdata/fragment-pdus")
        and c.steps[1].label == "P-DATA-TF C-ECHO-RQ"
    )
    last = next(i for i, s in enumerate(case.steps) if s.expect == "dimse")
    steps = [s.to_json() for s in case.steps[: last + 1]]
    doc = {
        "format": "aiodimse-fuzz-replay/1",
        "seed": SEED,
        "index": case.index,
        "calling_ae": "FUZZ",
        "called_ae": "PLANTED",
        "finding": {"kind": "hang", "step": "P-DATA-TF C-ECHO-RQ", "came_back": "timeout",
                    "detail": "no answer", "clause": "PS3.7 9.3"},
        "steps": steps,
    }  # fmt: skip
    path = tmp_path / "hang.json"
    path.write_text(json.dumps(doc))
    argv = [sys.executable, "-m", "aiodimse", "fuzz", "--replay", str(path), "127.0.0.1"]
    argv += [str(planted_hang.port), "--hang-timeout", "1"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "hang" in out.decode() and ": reproduces" in out.decode()
    # Against a server without the fault, the same file does not reproduce.
    async with Server(port=0) as healthy:
        argv[-3] = str(healthy.port)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    assert "does not reproduce" in out.decode()
    # Not a replay file: one line.
    path.write_text("{}")
    with pytest.raises(ValueError, match="not an aiodimse fuzz replay file"):
        load_replay(path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodimse", "fuzz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_a_non_loopback_target_in_one_line() -> None:
    out = _cli("192.0.2.1", "104", "--aec", "PACS", "--cases", "5")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--i-own-this-host" in lines[0]
    assert out.stdout == ""


def test_cli_needs_host_and_port_without_listen() -> None:
    out = _cli("--cases", "5")
    assert out.returncode == 2
    assert "HOST and PORT" in out.stderr and "Traceback" not in out.stderr


async def test_cli_json_is_one_event_per_line_then_the_report() -> None:
    async with Server(port=0) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiodimse", "fuzz", "127.0.0.1", str(server.port),
            "--aec", "ANY-SCP", "--cases", "30", "--json", "--hang-timeout", "5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events and all(isinstance(e, dict) and "event" in e for e in events)
    report = events[-1]
    assert report["event"] == "report" and report["cases"] == 30
    assert report["findings"] == [] and sum(report["layers"].values()) == 30
    assert {"seed", "elapsed_s", "cases_per_s", "interrupted", "target"} <= set(report)


async def test_cli_ctrl_c_stops_the_run_and_prints_the_report() -> None:
    async with Server(port=0) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiodimse", "fuzz", "127.0.0.1", str(server.port),
            "--cases", "100000", "--json", "--hang-timeout", "5",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            # The first progress event says the run is under way.
            while b'"progress"' not in await asyncio.wait_for(proc.stdout.readline(), 60):
                pass
            proc.send_signal(signal.SIGINT)
            rest, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    report = json.loads(rest.decode().splitlines()[-1])
    assert report["event"] == "report" and report["interrupted"] is True
    assert 25 <= report["cases"] < 100000
    assert proc.returncode == 0, err.decode()


async def test_cli_listen_plays_a_hostile_scp_then_reports() -> None:
    port = peers.free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodimse", "fuzz", "--listen", str(port), "--cases", "1",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.to_thread(peers.wait_for_port, "127.0.0.1", port, 30)
        # Whatever the hostile SCP answers, the SCU side here only has to finish.
        await engine_alive("127.0.0.1", port, calling="SCU", called="HOSTILE")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().splitlines()[-1])
    assert isinstance(report, dict) and report


# -- zero findings against aiodimse's own servers ---------------------------------------------


@pytest.fixture
def own_qrscp(tmp_path: Path) -> Iterator[peers.PeerProcess]:
    peer = peers.start_aiodimse_qrscp(peers.free_port(), tmp_path / "archive", work_dir=tmp_path)
    yield peer
    peer.stop()


async def test_no_findings_against_aiodimse_qrscp(own_qrscp: peers.PeerProcess) -> None:
    report = await fuzz.run(
        "127.0.0.1", own_qrscp.port, aec="QRSCP", seed=1, cases=300, pid=own_qrscp.proc.pid
    )
    assert report.cases == 300 and report.answered > 250
    assert report.findings == [], report.summary()


@pytest.fixture
async def own_storescp(tmp_path: Path) -> AsyncIterator[int]:
    port = peers.free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiodimse", "storescp", "--port", str(port),
        "--out", str(tmp_path / "in"), stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.to_thread(peers.wait_for_port, "127.0.0.1", port, 20)
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def test_no_findings_against_aiodimse_storescp(own_storescp: int) -> None:
    report = await fuzz.run("127.0.0.1", own_storescp, aec="STORESCP", seed=3, cases=150)
    assert report.cases == 150
    assert report.findings == [], report.summary()


# -- real peers: the run completes with a report --------------------------------------------


def _check_completed(report: FuzzReport, cases: int) -> None:
    assert report.cases == cases or report.stopped_by, report.summary()
    assert report.elapsed > 0 and sum(report.layers.values()) == report.cases
    assert report.to_json()["event"] == "report"
    for f in report.findings:  # whatever was found is described and replayable
        assert f.kind and f.clause and f.steps


INTEROP_CASES = 100


async def _interop_run(peer: peers.PeerProcess, tmp_path: Path) -> FuzzReport:
    """The short run every interop peer gets (findings saved, not minimised)."""
    return await fuzz.run(
        "127.0.0.1", peer.port, aec=peer.aet, cases=INTEROP_CASES, hang_timeout=2,
        out=tmp_path / "findings", minimise=False, patience=3,
    )  # fmt: skip


@pytest.mark.interop
async def test_fuzz_run_against_dcmtk_dcmqrscp_completes(tmp_path: Path) -> None:
    require_dcmtk("dcmqrscp")
    peer = peers.start_dcmqrscp(peers.free_port(), tmp_path / "db", work_dir=tmp_path)
    try:
        report = await _interop_run(peer, tmp_path)
    finally:
        peer.stop()
    _check_completed(report, INTEROP_CASES)


@pytest.mark.interop
async def test_fuzz_run_against_dcmtk_storescp_completes(tmp_path: Path) -> None:
    require_dcmtk("storescp")
    peer = peers.start_storescp(peers.free_port(), tmp_path / "in")
    try:
        report = await _interop_run(peer, tmp_path)
    finally:
        peer.stop()
    _check_completed(report, INTEROP_CASES)


@pytest.mark.interop
async def test_fuzz_run_against_orthanc_completes(tmp_path: Path) -> None:
    require_orthanc()
    peer = await asyncio.to_thread(
        peers.start_orthanc, peers.free_port(), peers.free_port(), tmp_path
    )
    try:
        report = await _interop_run(peer, tmp_path)
    finally:
        await asyncio.to_thread(peer.stop)
    _check_completed(report, INTEROP_CASES)


@pytest.mark.interop
async def test_fuzz_run_against_pynetdicom_completes(tmp_path: Path) -> None:
    try:
        import pydicom.data

        sample = Path(pydicom.data.get_testdata_file("CT_small.dcm") or "")
        peer = peers.start_pynetdicom_qrscp(peers.free_port(), [sample], work_dir=tmp_path)
    except (ImportError, peers.PeerMissing) as exc:
        if CI:
            pytest.fail(f"{exc}; interop peers are mandatory when CI=true", pytrace=False)
        pytest.skip(str(exc))
    try:
        report = await _interop_run(peer, tmp_path)
    finally:
        peer.stop()
    _check_completed(report, INTEROP_CASES)
