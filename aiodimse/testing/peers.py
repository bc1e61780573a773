"""Start and stop real DICOM peers (DCMTK's tools, Orthanc) on loopback for tests and benchmarks.

Plain synchronous code on :mod:`subprocess`, so that pytest fixtures, benchmark scripts and
one-off scripts can all use it. Every peer gets ``TCP_NODELAY=1`` in its environment (DCMTK and
Orthanc leave Nagle's algorithm on otherwise, and every DIMSE message then waits ~40-90 ms for a
delayed ACK), writes its output to a log file, and is stopped by its PID.

Tools are always run by absolute path: pynetdicom installs console scripts with the same names
(``storescp``, ``echoscu``, ...) that shadow DCMTK's on ``PATH``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import check_ae_title

__all__ = [
    "DCMTK_BIN",
    "LOOPBACK",
    "ORTHANC_BIN",
    "PeerError",
    "PeerMissing",
    "PeerProcess",
    "dcmtk_tool",
    "free_port",
    "free_ports",
    "orthanc_binary",
    "peer_env",
    "run_dcmtk",
    "start_dcmqrscp",
    "start_orthanc",
    "start_storescp",
    "wait_for_port",
]

DCMTK_BIN = Path("/usr/bin")
ORTHANC_BIN = Path("/usr/sbin/Orthanc")
LOOPBACK = "127.0.0.1"


class PeerMissing(Exception):
    """A third-party peer program (a DCMTK tool, Orthanc) is not installed here."""


class PeerError(RuntimeError):
    """A peer did not start, died, or did not listen in time; the message carries its log."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free ports on 127.0.0.1 (all bound at once, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _executable(path: Path, what: str) -> str:
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    raise PeerMissing(f"{what} is not installed ({path} is missing or not executable)")


def dcmtk_tool(name: str) -> str:
    """Absolute path of DCMTK's ``name`` in /usr/bin; never a ``PATH`` lookup (see module doc)."""
    if not name or "/" in name:
        raise ValueError(f"not a tool name: {name!r}")
    return _executable(DCMTK_BIN / name, f"DCMTK's {name}")


def orthanc_binary() -> str:
    """Absolute path of the Orthanc server binary from the Debian package."""
    return _executable(ORTHANC_BIN, "Orthanc")


def peer_env() -> dict[str, str]:
    """The environment for every peer process: ours plus ``TCP_NODELAY=1``."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run_dcmtk(
    tool: str, *args: str | os.PathLike[str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one DCMTK tool to completion (bounded by ``timeout``) and capture its output."""
    argv = [dcmtk_tool(tool), *(os.fspath(a) for a in args)]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=peer_env(),
        timeout=timeout,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


async def run_dcmtk_async(
    tool: str, *args: str | int | os.PathLike[str], timeout: float = 60, cwd: Path | None = None
) -> tuple[int, str]:
    """Run one DCMTK tool without blocking the event loop (for when the peer it talks to runs
    on that same loop): (exit code, stdout and stderr). Killed by PID if it overruns."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        dcmtk_tool(tool),
        *(
            a if isinstance(a, str) else os.fspath(a) if not isinstance(a, int) else str(a)
            for a in args
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=peer_env(),
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class PeerProcess:
    """A running peer server: its process, port and log file; a context manager that stops it.

    The peer runs in a session of its own so that the children it forks (one per association
    for ``storescp --fork`` and ``dcmqrscp``) can be ended together with it, by its PID.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        work_dir: Path,
        aet: str,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
        data_dir: Path | None = None,
        config_path: Path | None = None,
        http_port: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.host = LOOPBACK
        self.aet = aet
        self.work_dir = Path(work_dir)
        self.stop_timeout = stop_timeout
        #: where the peer puts received instances (storescp -od, dcmqrscp/Orthanc storage)
        self.data_dir = data_dir
        self.config_path = config_path
        #: Orthanc's REST port
        self.http_port = http_port
        self._stopped = False
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / f"{name}-{port}.log"
        self._log_file = self.log_path.open("wb")
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=peer_env(),
                cwd=cwd or self.work_dir,
                start_new_session=True,
            )
        except BaseException:
            self._log_file.close()
            raise

    @property
    def pid(self) -> int:
        """Process id of the peer's main process."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the main process has not exited."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the peer wrote to stdout and stderr so far."""
        with contextlib.suppress(ValueError):
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until the peer accepts TCP connections on its port; PeerError if it died."""
        wait_for_port(self.host, self.port, timeout, proc=self)

    def stop(self) -> int | None:
        """SIGTERM the peer's PID, wait (bounded), then SIGKILL; end its forked children too.

        Returns the exit code of the main process (negative for a signal). Idempotent.
        """
        proc = self.proc
        if self._stopped:
            return proc.returncode
        self._stopped = True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Children forked per association are in the session (process group) led by our PID.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._log_file.close()
        return proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        where = f"{self.aet}@{self.host}:{self.port}"
        return f"<PeerProcess {self.name} pid={self.pid} {where} {state}>"


def _describe_death(proc: PeerProcess | subprocess.Popen[Any]) -> str:
    if isinstance(proc, PeerProcess):
        return f"{proc.name} exited with {proc.proc.returncode}; log:\n{proc.log()}"
    err = ""
    if proc.stderr is not None:
        with contextlib.suppress(Exception):
            data = proc.stderr.read()
            err = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
    return f"{proc.args!r} exited with {proc.returncode}; stderr:\n{err}"


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: PeerProcess | subprocess.Popen[Any] | None = None,
) -> None:
    """Poll until a TCP connect to ``host:port`` succeeds; fail fast if ``proc`` has died."""
    deadline = time.monotonic() + timeout
    while True:
        running = proc is None or (
            proc.alive() if isinstance(proc, PeerProcess) else proc.poll() is None
        )
        if not running:
            assert proc is not None
            raise PeerError(f"peer died before listening on {host}:{port}: {_describe_death(proc)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            tail = _describe_death(proc) if isinstance(proc, PeerProcess) else ""
            raise PeerError(f"nothing listens on {host}:{port} after {timeout:.1f} s. {tail}")
        time.sleep(0.05)


def _start(peer: PeerProcess, timeout: float) -> PeerProcess:
    try:
        peer.wait_ready(timeout)
    except BaseException:
        peer.stop()
        raise
    return peer


def start_storescp(
    port: int,
    out_dir: Path,
    *,
    aet: str = "STORESCP",
    fork: bool = False,
    accept_all: bool = True,
    extra: Sequence[str] = (),
    work_dir: Path | None = None,
    timeout: float = 15.0,
) -> PeerProcess:
    """Start DCMTK's storescp writing received files into ``out_dir``; return once it listens.

    storescp 3.6.7 has no option to choose the listening address: it binds every interface
    (INADDR_ANY). Tests only ever connect to it on 127.0.0.1. Its log goes to ``work_dir``
    (default: the parent of ``out_dir``, so that ``out_dir`` holds only received files).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [dcmtk_tool("storescp"), "-aet", aet, "-pm", "-dhl", "-od", str(out_dir)]
    if accept_all:
        argv.append("+xa")  # accept every transfer syntax DCMTK knows
    if fork:
        argv.append("--fork")  # one child per association, else they queue in the backlog
    argv += [*extra, str(port)]
    peer = PeerProcess(
        "storescp", argv, port=port, aet=aet, work_dir=work_dir or out_dir.parent, data_dir=out_dir
    )
    return _start(peer, timeout)


def dcmqrscp_config(
    port: int,
    storage_dir: Path,
    *,
    aet: str = "DCMQRSCP",
    hosts: Mapping[str, tuple[str, int]] | None = None,
    max_pdu: int = 16384,
    max_associations: int = 16,
) -> str:
    """Text of a dcmqrscp configuration file (format: DCMTK's dcmqrcnf.txt).

    ``hosts`` maps each move-destination AE title to (host, port). The AETable gives ``aet``
    read/write access from ANY peer with the largest quota dcmqrscp allows (500 studies of
    1 GiB; beyond that it deletes the oldest study).
    """
    lines = [
        f"NetworkTCPPort  = {port}",
        f"MaxPDUSize      = {max_pdu}",
        f"MaxAssociations = {max_associations}",
        "",
        "HostTable BEGIN",
    ]
    for i, (dest_aet, (host, dest_port)) in enumerate((hosts or {}).items()):
        _check_aet(dest_aet)
        lines.append(f"dest{i:03d} = ({dest_aet}, {host}, {dest_port})")
    lines += [
        "HostTable END",
        "",
        "VendorTable BEGIN",
        "VendorTable END",
        "",
        "AETable BEGIN",
        f'{_check_aet(aet)} "{Path(storage_dir).resolve()}" RW (500, 1024mb) ANY',
        "AETable END",
        "",
    ]
    return "\n".join(lines)


def _check_aet(aet: str) -> str:
    check_ae_title(aet)
    if any(ch in aet for ch in " ,()=\"'#"):
        raise ValueError(f"AE title {aet!r} cannot be written into a dcmqrscp config")
    return aet


def start_aiodimse_qrscp(
    port: int,
    storage: Path,
    *,
    aet: str = "QRSCP",
    work_dir: Path,
    extra: Sequence[str] = (),
    timeout: float = 30.0,
) -> PeerProcess:
    """Start ``aiodimse qrscp`` (the embedded archive, as its command line runs it) in a
    process of its own on 127.0.0.1; its log is ``peer.log()``."""
    argv = [sys.executable, "-m", "aiodimse", "qrscp", "--port", str(port)]
    argv += ["--storage", str(storage), "--aet", aet, *extra]
    peer = PeerProcess("aiodimse-qrscp", argv, port=port, aet=aet, work_dir=work_dir)
    return _start(peer, timeout)


def start_pynetdicom_qrscp(
    port: int,
    files: Sequence[Path],
    *,
    aet: str = "PYNETDICOM",
    destinations: Mapping[str, tuple[str, int]] | None = None,
    work_dir: Path,
    timeout: float = 30.0,
) -> PeerProcess:
    """Start pynetdicom's Q/R SCP (C-FIND, C-GET, C-MOVE by Study Instance UID) over
    ``files`` on 127.0.0.1 (see :mod:`aiodimse.testing.pynetdicom_qr`). PeerMissing if
    pynetdicom is not installed."""
    if importlib.util.find_spec("pynetdicom") is None:
        raise PeerMissing("pynetdicom is not installed (the 'bench' extra)")
    argv = [sys.executable, "-m", "aiodimse.testing.pynetdicom_qr", "--port", str(port)]
    argv += ["--ae", aet]
    for ae_title, (host, dest_port) in (destinations or {}).items():
        argv += ["--dest", f"{ae_title}={host}:{dest_port}"]
    argv += [str(f) for f in files]
    peer = PeerProcess("pynetdicom-qr", argv, port=port, aet=aet, work_dir=work_dir)
    return _start(peer, timeout)


def start_dcmqrscp(
    port: int,
    storage_dir: Path,
    *,
    aet: str = "DCMQRSCP",
    hosts: Mapping[str, tuple[str, int]] | None = None,
    work_dir: Path,
    max_pdu: int = 16384,
    extra: Sequence[str] = (),
    timeout: float = 15.0,
) -> PeerProcess:
    """Start DCMTK's dcmqrscp (Q/R SCP + storage) with a config written into ``work_dir``.

    Runs in the default forking mode (``--single-process`` crashes after one association in
    3.6.7). dcmqrscp checks the *called* AE title, knows only instances it received by C-STORE,
    and needs StudyInstanceUID and SeriesInstanceUID keys in IMAGE-level queries. Like
    storescp it listens on every interface; connect to it on 127.0.0.1.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    cfg = work_dir / f"dcmqrscp-{port}.cfg"
    cfg.write_text(
        dcmqrscp_config(port, storage_dir, aet=aet, hosts=hosts, max_pdu=max_pdu),
        encoding="ascii",
    )
    argv = [dcmtk_tool("dcmqrscp"), "-c", str(cfg), "-dhl", *extra, str(port)]
    peer = PeerProcess(
        "dcmqrscp",
        argv,
        port=port,
        aet=aet,
        work_dir=work_dir,
        config_path=cfg,
        data_dir=storage_dir,
    )
    return _start(peer, timeout)


def orthanc_config(
    dicom_port: int,
    http_port: int,
    work_dir: Path,
    *,
    aet: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
) -> dict[str, Any]:
    """Orthanc configuration: open DICOM services, local-only HTTP, no plugins, fast writes."""
    work_dir = Path(work_dir).resolve()
    return {
        "Name": f"aiodimse-test-{dicom_port}",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "index"),
        "Plugins": [],
        "LuaScripts": [],
        "DicomServerEnabled": True,
        "DicomAet": _check_aet(aet),
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {
            name: [_check_aet(m_aet), host, port]
            for name, (m_aet, host, port) in (modalities or {}).items()
        },
        # Orthanc keeps outgoing (C-MOVE) associations open 5 s by default for reuse.
        "DicomAssociationCloseDelay": 0,
        "DicomScuTimeout": 10,
        "DicomScpTimeout": 30,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "MetricsEnabled": False,
        "SaveJobs": False,
        "SyncStorageArea": False,
        "StorageCompression": False,
        "StableAge": 1,
        "HttpTimeout": 10,
        "ExecuteLuaEnabled": False,
    }


def start_orthanc(
    dicom_port: int,
    http_port: int,
    work_dir: Path,
    *,
    aet: str = "ORTHANC",
    modalities: Mapping[str, tuple[str, str, int]] | None = None,
    config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> PeerProcess:
    """Start Orthanc with its own JSON config, storage and index in ``work_dir``.

    ``modalities`` maps a name to (AE title, host, port) for C-MOVE destinations. Orthanc
    cannot be told to listen on loopback only; talk to it on 127.0.0.1. It needs a few seconds
    to stop: ``stop()`` waits for it, bounded, then kills it.

    ``config`` replaces :func:`orthanc_config` with a complete configuration of the caller's
    (e.g. a deployment's file with its ports and folders substituted); its ``DicomPort`` and
    ``HttpPort`` must be ``dicom_port`` and ``http_port``, and ``aet``/``modalities`` are
    then taken from it.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = orthanc_config(dicom_port, http_port, work_dir, aet=aet, modalities=modalities)
    else:
        if modalities is not None:
            raise ValueError("pass modalities inside config, not both")
        if config.get("DicomPort") != dicom_port or config.get("HttpPort") != http_port:
            raise ValueError(
                f"config has DicomPort {config.get('DicomPort')!r} and HttpPort "
                f"{config.get('HttpPort')!r}, not {dicom_port} and {http_port}"
            )
        aet = _check_aet(str(config.get("DicomAet", "ORTHANC")))
    cfg = work_dir / f"orthanc-{dicom_port}.json"
    cfg.write_text(json.dumps(config, indent=2), encoding="utf-8")
    argv = [orthanc_binary(), "--no-jobs", str(cfg)]
    peer = PeerProcess(
        "orthanc",
        argv,
        port=dicom_port,
        aet=aet,
        work_dir=work_dir,
        stop_timeout=10.0,
        config_path=cfg,
        http_port=http_port,
        data_dir=Path(config.get("StorageDirectory", work_dir / "OrthancStorage")),
    )
    try:
        wait_for_port(LOOPBACK, http_port, timeout, proc=peer)
    except BaseException:
        peer.stop()
        raise
    return _start(peer, timeout)
