"""The real-peer launchers work: each peer starts, answers DCMTK's tools, and stops by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from _settings import require_dcmtk

from aiodimse.testing import peers
from aiodimse.testing.peers import PeerError, PeerMissing, PeerProcess, run_dcmtk
from aiodimse.testing.synthetic import make_study, write_study

Start = Callable[..., PeerProcess]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- plain unit tests of the launcher machinery ------------------------------------------


def test_dcmtk_tool_never_looks_up_path() -> None:
    with pytest.raises(PeerMissing):
        peers.dcmtk_tool("no-such-dicom-tool")
    with pytest.raises(ValueError):
        peers.dcmtk_tool("../bin/sh")


def test_peer_env_turns_nagle_off() -> None:
    env = peers.peer_env()
    assert env["TCP_NODELAY"] == "1"
    assert env.get("PATH") == os.environ.get("PATH")


def test_free_port_is_bindable() -> None:
    import socket

    port = peers.free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct() -> None:
    ports = peers.free_ports(5)
    assert len(set(ports)) == 5


def test_wait_for_port_fails_fast_with_the_dead_process_output(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('cannot start'); sys.exit(3)"],
        stderr=subprocess.PIPE,
    )
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="cannot start"):
        peers.wait_for_port("127.0.0.1", peers.free_port(), timeout=30, proc=proc)
    assert time.monotonic() - t0 < 10
    proc.wait()


def test_wait_for_port_times_out() -> None:
    with pytest.raises(PeerError, match="nothing listens"):
        peers.wait_for_port("127.0.0.1", peers.free_port(), timeout=0.3)


def test_stop_is_bounded_and_ends_forked_children(tmp_path: Path) -> None:
    # A server that ignores SIGTERM and has a child, like storescp --fork with an association.
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    time.sleep(60); os._exit(0)\n"
        "print('child', child, flush=True)\n"
        "time.sleep(60)\n"
    )
    peer = PeerProcess(
        "stubborn",
        [sys.executable, "-c", script],
        port=0,
        aet="NONE",
        work_dir=tmp_path,
        stop_timeout=0.5,
    )
    deadline = time.monotonic() + 10
    while "child" not in peer.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(peer.log().split()[1])
    assert _pid_alive(child)
    t0 = time.monotonic()
    code = peer.stop()
    assert time.monotonic() - t0 < 5
    assert code == -9  # SIGTERM was ignored: killed after stop_timeout
    deadline = time.monotonic() + 5
    while _pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pid_alive(child)


def test_dcmqrscp_config_has_host_table_and_ae_table(tmp_path: Path) -> None:
    text = peers.dcmqrscp_config(
        1234, tmp_path, aet="QR", hosts={"DEST1": ("127.0.0.1", 5678), "DEST2": ("h", 9)}
    )
    assert "(DEST1, 127.0.0.1, 5678)" in text
    assert "(DEST2, h, 9)" in text
    assert f'QR "{tmp_path.resolve()}" RW' in text
    assert "ANY" in text.split("AETable BEGIN")[1]
    with pytest.raises(ValueError):
        peers.dcmqrscp_config(1, tmp_path, aet="BAD,AET")


# -- the real peers ------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("fork", [False, True], ids=["single", "fork"])
def test_storescp_receives_from_storescu(storescp_peer: Start, tmp_path: Path, fork: bool) -> None:
    require_dcmtk("storescu")
    datasets = make_study(2, rows=16, cols=16, seed=f"peers-storescp-{fork}")
    files = write_study(tmp_path / "send", datasets)
    scp = storescp_peer(fork=fork)
    result = run_dcmtk("storescu", "-aec", scp.aet, "127.0.0.1", str(scp.port), *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert scp.data_dir is not None
    received = {
        pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in scp.data_dir.iterdir()
    }
    assert set(received) == {ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:
        assert received[ds.SOPInstanceUID].PixelData == ds.PixelData
    pid = scp.pid
    scp.stop()
    assert not _pid_alive(pid)


def _find(
    port: int, aet: str, out_dir: Path, *keys: str, model: str = "-S"
) -> list[pydicom.Dataset]:
    """Run findscu, extracting each response identifier to a file; return them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args: list[str] = [model, "-aec", aet, "-X", "-od", str(out_dir)]
    for key in keys:
        args += ["-k", key]
    result = run_dcmtk("findscu", *args, "127.0.0.1", str(port))
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))]


@pytest.mark.interop
def test_dcmqrscp_echo_store_find(dcmqrscp_peer: Start, tmp_path: Path) -> None:
    require_dcmtk("echoscu")
    qr = dcmqrscp_peer(aet="QRSCP")
    echo = run_dcmtk("echoscu", "-aec", "QRSCP", "127.0.0.1", str(qr.port))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    # dcmqrscp checks the called AE title.
    wrong = run_dcmtk("echoscu", "-aec", "NOT_QRSCP", "127.0.0.1", str(qr.port))
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr

    datasets = make_study(3, rows=16, cols=16, seed="peers-dcmqrscp", series_count=2)
    files = write_study(tmp_path / "send", datasets)
    store = run_dcmtk("storescu", "-aec", "QRSCP", "127.0.0.1", str(qr.port), *map(str, files))
    assert store.returncode == 0, store.stdout + store.stderr

    study_uid = datasets[0].StudyInstanceUID
    studies = _find(
        qr.port, "QRSCP", tmp_path / "study", "QueryRetrieveLevel=STUDY", "StudyInstanceUID"
    )
    assert [ds.StudyInstanceUID for ds in studies] == [study_uid]
    images = _find(
        qr.port,
        "QRSCP",
        tmp_path / "image",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_uid}",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    )
    assert {ds.SOPInstanceUID for ds in images} == {ds.SOPInstanceUID for ds in datasets}


@pytest.mark.interop
def test_dcmqrscp_moves_to_a_host_table_destination(
    dcmqrscp_peer: Start, storescp_peer: Start, tmp_path: Path
) -> None:
    dest = storescp_peer(aet="DEST")
    qr = dcmqrscp_peer(hosts={"DEST": ("127.0.0.1", dest.port)})
    datasets = make_study(2, rows=16, cols=16, seed="peers-move")
    files = write_study(tmp_path / "send", datasets)
    store = run_dcmtk("storescu", "-aec", qr.aet, "127.0.0.1", str(qr.port), *map(str, files))
    assert store.returncode == 0, store.stdout + store.stderr
    move = run_dcmtk(
        "movescu",
        "-S",
        "-aec",
        qr.aet,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={datasets[0].StudyInstanceUID}",
        "127.0.0.1",
        str(qr.port),
    )
    assert move.returncode == 0, move.stdout + move.stderr
    assert dest.data_dir is not None
    got = {pydicom.dcmread(p).SOPInstanceUID for p in dest.data_dir.iterdir()}
    assert got == {ds.SOPInstanceUID for ds in datasets}


@pytest.mark.interop
def test_orthanc_echo_and_store(orthanc_peer: Start, tmp_path: Path) -> None:
    require_dcmtk("echoscu")
    orthanc = orthanc_peer(aet="ORTHANC")
    echo = run_dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.port))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    datasets = make_study(2, rows=16, cols=16, seed="peers-orthanc")
    files = write_study(tmp_path / "send", datasets)
    store = run_dcmtk(
        "storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.port), *map(str, files)
    )
    assert store.returncode == 0, store.stdout + store.stderr
    # The REST API (loopback only) confirms what Orthanc stored.
    url = f"http://127.0.0.1:{orthanc.http_port}/instances?expand"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(url, timeout=10) as response:
        instances = json.load(response)
    uids = {inst["MainDicomTags"]["SOPInstanceUID"] for inst in instances}
    assert uids == {ds.SOPInstanceUID for ds in datasets}


def test_missing_peer_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import _settings

    def missing() -> str:
        raise PeerMissing("DCMTK's nothing is not installed")

    monkeypatch.setattr(_settings, "CI", False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _settings.require_peer(missing)
    monkeypatch.setattr(_settings, "CI", True)
    with pytest.raises(pytest.fail.Exception, match="mandatory"):
        _settings.require_peer(missing)
    assert _settings.require_peer(lambda: "/usr/bin/x") == "/usr/bin/x"
