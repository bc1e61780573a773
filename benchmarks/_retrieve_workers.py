"""Processes for bench_retrieve.py and bench_window.py: Q/R servers, retrieve and window clients.

Like ``_workers.py``, each server and each client runs in a process of its own and speaks one
JSON line: servers ``{"ready": true, "port": ...}`` once they listen (then serve until
SIGTERM), clients their result ``{"seconds": ..., ...}`` when done. Clients time themselves
from their association request to its release (interpreter start-up excluded).

    python benchmarks/_retrieve_workers.py serve archive --dir D [--dest AE=PORT ...]
    python benchmarks/_retrieve_workers.py serve pynetdicom-qr --files-from LIST [--dest AE=PORT]
    python benchmarks/_retrieve_workers.py serve window --dir D --window N
    python benchmarks/_retrieve_workers.py move aiodimse|pynetdicom --port P --study UID
        --dest-ae AE --dest-port N --out D
    python benchmarks/_retrieve_workers.py get aiodimse|pynetdicom --port P --study UID --out D
    python benchmarks/_retrieve_workers.py window-store --port P --files-from LIST --window N

The module also holds the orchestrator's side: :func:`start_server` and :func:`run_client`
start these processes (optionally under cProfile) and read their JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _common as C  # noqa: E402
from _workers import (  # noqa: E402
    CALLING_AE,
    _configure_pynetdicom,
    _emit,
    _nodelay_of,
    _pynetdicom_nodelay_handler,
    _read_list,
)

from aiodimse import uids  # noqa: E402
from aiodimse.testing import peers  # noqa: E402

SCRIPT = Path(__file__).resolve()
CT_IMAGE_STORAGE = uids.STORAGE_SOP_CLASSES["CTImageStorage"]
#: The called AE title of the window benchmark's storage SCP.
WINDOW_AE = "STORESCP"


# -- orchestrator side -------------------------------------------------------------------------


def _argv(*args: object, profile: Path | None = None) -> list[str]:
    python = [sys.executable]
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        python += ["-m", "cProfile", "-o", str(profile)]
    return [*python, str(SCRIPT), *(str(a) for a in args)]


def start_server(*args: object, timeout: float = 60.0, profile: Path | None = None) -> C.Worker:
    """Start ``serve ...`` in its own process (own session) and wait for its "ready" line."""
    argv = _argv("serve", *args, profile=profile)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=peers.peer_env(),
        start_new_session=True,
    )
    worker = C.Worker(argv, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            err = worker.stop()
            raise C.WorkerError(f"serve {args[0]}: not ready after {timeout} s\n{err[-2000:]}")
        readable, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if readable:
            line = proc.stdout.readline()
            if not line:
                err = worker.stop()
                raise C.WorkerError(f"serve {args[0]}: exited before it was ready\n{err[-2000:]}")
            with contextlib.suppress(json.JSONDecodeError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("ready"):
                    worker.ready = message
                    return worker
        elif proc.poll() is not None:
            err = worker.stop()
            raise C.WorkerError(f"serve {args[0]}: exited with {proc.returncode}\n{err[-2000:]}")


def run_client(*args: object, timeout: float, profile: Path | None = None) -> dict[str, Any]:
    """Run a client to completion; its JSON result, plus ``returncode`` and the CPU time of
    the whole process (``process_cpu_seconds``, start-up included)."""
    argv = _argv(*args, profile=profile)
    before = os.times()
    try:
        out = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=peers.peer_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise C.WorkerError(f"{args[0]} {args[1]}: no result within {timeout:.0f} s") from exc
    after = os.times()
    for line in reversed(out.stdout.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict) and "seconds" in message:
                message["returncode"] = out.returncode
                message["process_cpu_seconds"] = (
                    after.children_user
                    + after.children_system
                    - before.children_user
                    - before.children_system
                )
                if out.returncode:
                    message["stderr"] = out.stderr[-2000:]
                return message
    raise C.WorkerError(
        f"{args[0]} {args[1]} exited with {out.returncode} without a result\n{out.stderr[-3000:]}"
    )


def _stat_cpu(pid: int) -> float | None:
    """utime + stime of one process (all its threads), seconds; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class TreeCPU:
    """CPU time used by some processes and the children they fork (dcmqrscp forks one per
    association), while a ``with`` block runs.

    A thread samples /proc every ``interval`` seconds and keeps each process's last value;
    a child that ends between two samples loses at most ``interval`` of CPU time.
    """

    def __init__(self, *pids: int, interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        seen = list(self.pids)
        for pid in self.pids:
            seen += _children(pid)
        for pid in seen:
            cpu = _stat_cpu(pid)
            if cpu is None:
                continue
            if pid not in self._start:
                # A root process counts from the start of the block; a new child from 0.
                self._start[pid] = cpu if pid in self.pids else 0.0
            self._last[pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._last[pid] - self._start[pid] for pid in self._last)


# -- worker side: common -------------------------------------------------------------------


def _destinations(values: list[str]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for value in values:
        ae, _, port = value.partition("=")
        out[ae] = ("127.0.0.1", int(port))
    return out


def _count_files(directory: Path) -> int:
    return C.count_files(directory)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    return stop


# -- aiodimse servers ------------------------------------------------------------------------


async def _serve_archive(args: argparse.Namespace) -> None:
    """The embedded archive (already filled by ``Archive.ingest``) as the Q/R SCP."""
    from aiodimse.archive import ArchiveServer

    stop = _stop_event()
    server = ArchiveServer(
        args.dir,
        ae_title=args.ae,
        port=0,
        host="127.0.0.1",
        destinations=_destinations(args.dest),
    )
    try:
        async with server:
            _emit(
                {
                    "ready": True,
                    "port": server.port,
                    "pid": os.getpid(),
                    "instances": server.archive.count("IMAGE"),
                }
            )
            await stop.wait()
    finally:
        server.archive.close()


async def _serve_window(args: argparse.Namespace) -> None:
    """A storage SCP that offers the asynchronous operations window (N, N), or none for 0."""
    import aiodimse

    stop = _stop_event()
    window = (args.window, args.window) if args.window else None
    server = aiodimse.StorageServer(
        WINDOW_AE, 0, host="127.0.0.1", directory=args.dir, async_window=window
    )
    async with server:
        _emit({"ready": True, "port": server.port, "pid": os.getpid()})
        await stop.wait()


# -- pynetdicom Q/R server ----------------------------------------------------------------------


def _serve_pynetdicom_qr(args: argparse.Namespace) -> None:
    """pynetdicom's Q/R SCP (C-MOVE and C-GET) over the listed files.

    Its C-GET/C-MOVE handlers must yield pydicom Datasets (pynetdicom 3 accepts nothing else
    for the sub-operations), so every instance is read with ``dcmread`` and re-encoded by
    pynetdicom as it is sent: pynetdicom's documented way of serving files.
    """
    from pydicom import dcmread
    from pynetdicom import AE, evt

    _configure_pynetdicom()
    files = _read_list(args.files_from)
    # The index: study UID of every file, read once before the server is ready.
    index: list[tuple[Path, str]] = []
    classes: dict[str, str] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        index.append((path, str(ds.StudyInstanceUID)))
        classes[str(ds.SOPClassUID)] = str(ds.file_meta.TransferSyntaxUID)
    destinations = _destinations(args.dest)
    nodelay = _pynetdicom_nodelay_handler()

    ae = AE(ae_title=args.ae)
    ae.maximum_associations = 16
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for model in (
        uids.STUDY_ROOT_QR_MOVE,
        uids.STUDY_ROOT_QR_GET,
        uids.PATIENT_ROOT_QR_MOVE,
        uids.PATIENT_ROOT_QR_GET,
    ):
        ae.add_supported_context(model)
    for sop_class, syntax in classes.items():
        # C-GET: the requestor proposes the SCP role for storage, we take the SCU role.
        ae.add_supported_context(sop_class, syntax, scu_role=True, scp_role=True)
        # C-MOVE: the sub-association to the destination.
        ae.add_requested_context(sop_class, syntax)

    def matches(identifier: Any) -> list[Path]:
        wanted = str(getattr(identifier, "StudyInstanceUID", "") or "")
        return [path for path, study in index if not wanted or study == wanted]

    def handle_get(event: Any) -> Iterator[Any]:
        found = matches(event.identifier)
        yield len(found)
        for path in found:
            if event.is_cancelled:
                yield (0xFE00, None)
                return
            yield (0xFF00, dcmread(path))

    def handle_move(event: Any) -> Iterator[Any]:
        destination = destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield (None, None)
            return
        # The sub-association turns Nagle off too (evt_handlers for ae.associate()).
        yield (*destination, {"evt_handlers": [nodelay]})
        found = matches(event.identifier)
        yield len(found)
        for path in found:
            if event.is_cancelled:
                yield (0xFE00, None)
                return
            yield (0xFF00, dcmread(path))

    handlers: Any = [(evt.EVT_C_GET, handle_get), (evt.EVT_C_MOVE, handle_move), nodelay]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert server is not None
    _emit({"ready": True, "port": server.server_address[1], "pid": os.getpid()})
    stop.wait()
    server.shutdown()


# -- aiodimse clients --------------------------------------------------------------------------


def _query(study: str) -> dict[str, str]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}


def _result_of(result: Any, service_seconds: float) -> dict[str, Any]:
    return {
        "status": f"{result.status.code:04X}",
        "completed": result.completed,
        "failed": result.failed,
        "warning": result.warning,
        "retrieve_seconds": service_seconds,
    }


async def _move_aiodimse(args: argparse.Namespace) -> dict[str, Any]:
    """C-MOVE to a StorageServer on this process's own loop (``receive=``)."""
    import aiodimse

    timeouts = aiodimse.Timeouts(connect=10, acse=10, dimse=args.dimse_timeout)
    contexts = aiodimse.contexts.query_retrieve(find=False, get=False, models=("study",))
    async with aiodimse.StorageServer(
        args.dest_ae, args.dest_port, host="127.0.0.1", directory=args.out
    ) as scp:
        start = time.perf_counter()
        cpu = time.process_time()
        async with aiodimse.connect(
            "127.0.0.1",
            args.port,
            calling_ae=CALLING_AE,
            called_ae=args.called_ae,
            contexts=contexts,
            timeouts=timeouts,
        ) as assoc:
            transport = assoc._transport
            nodelay = _nodelay_of(transport.get_extra_info("socket") if transport else None)
            begun = time.perf_counter()
            result = await assoc.move(
                _query(args.study), args.dest_ae, receive=scp, check=False, arrival_timeout=30
            )
            service = time.perf_counter() - begun
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "received_instances": len(result.instances),
        "nodelay": nodelay,
        **_result_of(result, service),
    }


async def _get_aiodimse(args: argparse.Namespace) -> dict[str, Any]:
    """C-GET with ``contexts.for_get()`` into a DirectorySink."""
    import aiodimse

    timeouts = aiodimse.Timeouts(connect=10, acse=10, dimse=args.dimse_timeout)
    sink = aiodimse.DirectorySink(args.out)
    start = time.perf_counter()
    cpu = time.process_time()
    async with aiodimse.connect(
        "127.0.0.1",
        args.port,
        calling_ae=CALLING_AE,
        called_ae=args.called_ae,
        contexts=aiodimse.contexts.for_get(),
        timeouts=timeouts,
    ) as assoc:
        transport = assoc._transport
        nodelay = _nodelay_of(transport.get_extra_info("socket") if transport else None)
        begun = time.perf_counter()
        result = await assoc.get(_query(args.study), sink=sink, check=False)
        service = time.perf_counter() - begun
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "received_instances": len(result.instances),
        "nodelay": nodelay,
        **_result_of(result, service),
    }


# -- pynetdicom clients ------------------------------------------------------------------------


def _pynetdicom_store_handler(out: Path, sockets: list[bool]) -> Any:
    """EVT_C_STORE: move the file pynetdicom wrote as the data set arrived into ``out``."""

    def handle_store(event: Any) -> int:
        if len(sockets) < 64:
            sock = event.assoc.dul.socket
            sockets.append(_nodelay_of(sock.socket if sock else None))
        uid = str(event.request.AffectedSOPInstanceUID)
        os.replace(event.dataset_path, out / f"{uid}.dcm")
        return 0x0000

    return handle_store


def _pynetdicom_final(responses: Iterator[Any]) -> tuple[dict[str, Any], int]:
    """Drain a send_c_move/send_c_get generator: the final counts, and how many responses."""
    final: dict[str, Any] = {"status": "none", "completed": 0, "failed": 0, "warning": 0}
    count = 0
    for status, _identifier in responses:
        count += 1
        if status is None or "Status" not in status:
            final["status"] = "no response (aborted)"
            continue
        final["status"] = f"{int(status.Status):04X}"
        for key, keyword in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
        ):
            if keyword in status:
                final[key] = int(getattr(status, keyword) or 0)
    return final, count


def _query_dataset(study: str) -> Any:
    from pydicom import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def _move_pynetdicom(args: argparse.Namespace) -> dict[str, Any]:
    """pynetdicom SCU with its own storage SCP (same AE, another thread) as destination."""
    from pynetdicom import AE, evt
    from pynetdicom.transport import ThreadedAssociationServer

    _configure_pynetdicom()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nodelay = _pynetdicom_nodelay_handler()
    stored_sockets: list[bool] = []
    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = 10
    ae.dimse_timeout = ae.network_timeout = args.dimse_timeout
    ae.add_requested_context(uids.STUDY_ROOT_QR_MOVE)
    ae.add_supported_context(CT_IMAGE_STORAGE)
    server: ThreadedAssociationServer | None = ae.start_server(
        ("127.0.0.1", args.dest_port),
        block=False,
        ae_title=args.dest_ae,
        evt_handlers=[(evt.EVT_C_STORE, _pynetdicom_store_handler(out, stored_sockets)), nodelay],
    )
    assert server is not None
    try:
        start = time.perf_counter()
        cpu = time.process_time()
        assoc = ae.associate(
            "127.0.0.1", args.port, ae_title=args.called_ae, evt_handlers=[nodelay]
        )
        if not assoc.is_established:
            raise SystemExit("pynetdicom could not associate with the Q/R SCP")
        sock = assoc.dul.socket
        assoc_nodelay = _nodelay_of(sock.socket if sock else None)
        begun = time.perf_counter()
        final, responses = _pynetdicom_final(
            assoc.send_c_move(_query_dataset(args.study), args.dest_ae, uids.STUDY_ROOT_QR_MOVE)
        )
        service = time.perf_counter() - begun
        assoc.release()
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
    finally:
        server.shutdown()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "responses": responses,
        "retrieve_seconds": service,
        "nodelay": assoc_nodelay and all(stored_sockets),
        **final,
    }


def _get_pynetdicom(args: argparse.Namespace) -> dict[str, Any]:
    """pynetdicom C-GET: SCP role for CT storage by role selection, C-STORE handler."""
    from pynetdicom import AE, build_role, evt

    _configure_pynetdicom()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stored_sockets: list[bool] = []
    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = 10
    ae.dimse_timeout = ae.network_timeout = args.dimse_timeout
    ae.add_requested_context(uids.STUDY_ROOT_QR_GET)
    ae.add_requested_context(CT_IMAGE_STORAGE)
    handlers: Any = [
        (evt.EVT_C_STORE, _pynetdicom_store_handler(out, stored_sockets)),
        _pynetdicom_nodelay_handler(),
    ]
    start = time.perf_counter()
    cpu = time.process_time()
    assoc = ae.associate(
        "127.0.0.1",
        args.port,
        ae_title=args.called_ae,
        ext_neg=[build_role(CT_IMAGE_STORAGE, scp_role=True)],
        evt_handlers=handlers,
    )
    if not assoc.is_established:
        raise SystemExit("pynetdicom could not associate with the Q/R SCP")
    sock = assoc.dul.socket
    nodelay = _nodelay_of(sock.socket if sock else None)
    begun = time.perf_counter()
    final, responses = _pynetdicom_final(
        assoc.send_c_get(_query_dataset(args.study), uids.STUDY_ROOT_QR_GET)
    )
    service = time.perf_counter() - begun
    assoc.release()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "responses": responses,
        "retrieve_seconds": service,
        "nodelay": nodelay,
        **final,
    }


# -- the window client ---------------------------------------------------------------------------


async def _window_store(args: argparse.Namespace) -> dict[str, Any]:
    """C-STORE every file on one association: with the window, all at once through
    ``asyncio.gather`` (the window keeps N outstanding); without, one after the other."""
    import aiodimse
    from aiodimse.dicomfile import read_part10

    files = _read_list(args.files_from)
    info = read_part10(files[0])
    contexts = [aiodimse.ContextRequest(info.sop_class_uid, (info.transfer_syntax_uid,))]
    timeouts = aiodimse.Timeouts(connect=10, acse=10, dimse=args.dimse_timeout)
    window = (args.window, args.window) if args.window else None
    counts: Counter[str] = Counter()
    peak = 0
    start = time.perf_counter()
    cpu = time.process_time()
    async with aiodimse.connect(
        "127.0.0.1",
        args.port,
        calling_ae=CALLING_AE,
        called_ae=args.called_ae,
        contexts=contexts,
        timeouts=timeouts,
        async_window=window,
    ) as assoc:
        negotiated = assoc.negotiated
        assert negotiated is not None
        outstanding = assoc._outgoing
        deliver = assoc._deliver

        def counting(op: Any, message: Any, data: bytes | None) -> None:
            # When a response arrives: the operations invoked and not yet answered,
            # this one included (it completes in ``deliver``).
            nonlocal peak
            peak = max(peak, len(outstanding))
            deliver(op, message, data)

        assoc._deliver = counting  # type: ignore[method-assign]

        async def one(path: Path) -> None:
            status = await assoc.store(path, check=False)
            counts["ok" if status.code == 0 else "failed"] += 1

        if window is not None:
            await asyncio.gather(*(one(path) for path in files))
        else:
            for path in files:
                await one(path)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "ok": counts["ok"],
        "failed": counts["failed"] + len(files) - sum(counts.values()),
        "proposed_window": list(window) if window else None,
        "negotiated_window": [negotiated.max_invoked, negotiated.max_performed],
        "peak_outstanding": peak,
    }


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("kind", choices=("archive", "pynetdicom-qr", "window"))
    serve.add_argument("--dir", type=Path)
    serve.add_argument("--files-from", type=Path)
    serve.add_argument("--ae", default="QRSCP")
    serve.add_argument("--dest", action="append", default=[], help="AE=PORT on 127.0.0.1")
    serve.add_argument("--window", type=int, default=0)
    for name in ("move", "get"):
        p = sub.add_parser(name)
        p.add_argument("toolkit", choices=("aiodimse", "pynetdicom"))
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--called-ae", default="QRSCP")
        p.add_argument("--study", required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--dimse-timeout", type=float, default=60.0)
        if name == "move":
            p.add_argument("--dest-ae", required=True)
            p.add_argument("--dest-port", type=int, required=True)
    window = sub.add_parser("window-store")
    window.add_argument("--port", type=int, required=True)
    window.add_argument("--called-ae", default=WINDOW_AE)
    window.add_argument("--files-from", type=Path, required=True)
    window.add_argument("--window", type=int, default=0, help="0 = serial, no window proposed")
    window.add_argument("--dimse-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    if args.command == "serve":
        if args.kind == "archive":
            asyncio.run(_serve_archive(args))
        elif args.kind == "window":
            asyncio.run(_serve_window(args))
        else:
            _serve_pynetdicom_qr(args)
        return
    result: dict[str, Any]
    if args.command == "window-store":
        result = asyncio.run(_window_store(args))
    elif args.toolkit == "aiodimse":
        coro = _move_aiodimse(args) if args.command == "move" else _get_aiodimse(args)
        result = asyncio.run(coro)
    else:
        result = _move_pynetdicom(args) if args.command == "move" else _get_pynetdicom(args)
    if args.command in ("move", "get"):
        result["files"] = _count_files(args.out)
    _emit(result)


if __name__ == "__main__":
    main()
