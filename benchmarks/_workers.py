"""Processes the benchmarks start: storage servers and storage clients, one toolkit each.

Servers and clients run in processes of their own so that the side being measured never
shares an interpreter (or an event loop, or the GIL) with the other side. Every worker
prints one JSON line: servers ``{"ready": true, "port": ...}`` once they listen (then serve
until SIGTERM), clients their result ``{"seconds": ..., "ok": ...}`` when done.

    python benchmarks/_workers.py serve aiodimse|pynetdicom --dir D [--max-associations N]
    python benchmarks/_workers.py store aiodimse|pynetdicom --port P --files-from LIST
    python benchmarks/_workers.py flood --port P --files-from LIST --associations N --per-assoc K
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiodimse

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

CALLING_AE = "BENCHSCU"
CALLED_AE = "STORESCP"
#: How often a server samples how many associations it has open (seconds).
_SAMPLE_INTERVAL = 0.02


def preload_aiodimse() -> None:
    """Import what ``import aiodimse`` leaves for first use (PEP 562): the Python clients
    time themselves from their association request, and the other toolkits have loaded
    everything before that point, so aiodimse must too (its import is start-up, which
    bench_startup.py measures, not C-STORE)."""
    import aiodimse

    for name in ("Association", "Server", "connect", "contexts", "StorageServer"):
        getattr(aiodimse, name)


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _read_list(path: Path) -> list[Path]:
    return [Path(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _nodelay_of(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    try:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except OSError:
        return False


def _stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT: an asyncio server serves until then."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    return stop


def _stop_flag() -> threading.Event:
    """Set on SIGTERM or SIGINT: a pynetdicom server (threads) serves until then."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


# -- aiodimse clients' association ---------------------------------------------------------------


def _connect(
    args: argparse.Namespace,
    contexts: Any,
    timeouts: aiodimse.Timeouts | None = None,
    **options: Any,
) -> contextlib.AbstractAsyncContextManager[aiodimse.Association]:
    """An association from CALLING_AE to ``args.called_ae`` on 127.0.0.1:``args.port``;
    ``timeouts`` default to 10 s for connect and A-ASSOCIATE, ``args.dimse_timeout`` after."""
    import aiodimse

    if timeouts is None:
        timeouts = aiodimse.Timeouts(connect=10, acse=10, dimse=args.dimse_timeout)
    return aiodimse.connect(
        "127.0.0.1",
        args.port,
        calling_ae=CALLING_AE,
        called_ae=args.called_ae,
        contexts=contexts,
        timeouts=timeouts,
        **options,
    )


def _assoc_nodelay(assoc: aiodimse.Association) -> bool:
    """Whether TCP_NODELAY is on for an aiodimse association's socket."""
    transport = assoc.link.transport
    return _nodelay_of(transport.get_extra_info("socket") if transport else None)


def _pynetdicom_nodelay(assoc: Any) -> bool:
    """Whether TCP_NODELAY is on for a pynetdicom association's socket."""
    sock = assoc.dul.socket
    return _nodelay_of(sock.socket if sock else None)


def _file_contexts(files: list[Path]) -> list[Any]:
    """One context: the SOP class and transfer syntax of the first file (every file of a
    benchmark has the same: one header is read, not all)."""
    import aiodimse
    from aiodimse.dicomfile import read_part10

    info = read_part10(files[0])
    return [aiodimse.ContextRequest(info.sop_class_uid, (info.transfer_syntax_uid,))]


# -- aiodimse ----------------------------------------------------------------------------------


async def _serve_aiodimse(args: argparse.Namespace) -> None:
    import aiodimse

    options: dict[str, Any] = {
        "max_associations": args.max_associations,
        "backlog": args.backlog,
    }
    if args.max_pdu:
        options["max_pdu"] = args.max_pdu
    stop = _stop_event()
    server = aiodimse.StorageServer(args.dir, "127.0.0.1", 0, ae_title=CALLED_AE, **options)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(server.associations))
            await asyncio.sleep(_SAMPLE_INTERVAL)

    async with server:
        sampler = asyncio.create_task(sample())
        _emit({"ready": True, "port": server.port, "pid": os.getpid(), "toolkit": "aiodimse"})
        await stop.wait()
        sampler.cancel()
    _emit({"stats": {"peak_associations": peak}})


def _storage_contexts(files: list[Path], mode: str = "exact") -> list[Any]:
    """The presentation contexts the aiodimse client proposes.

    ``exact`` (the default) proposes only each file's own transfer syntax, as the
    pynetdicom client here does and as DCMTK's storescu effectively gets (it proposes
    uncompressed syntaxes only), so that every row moves the same bytes. ``for-files`` uses
    ``aiodimse.contexts.for_files()``, which also offers Deflated Explicit VR Little Endian:
    an SCP that prefers it (storescp +xa does) makes the client deflate every instance.
    """
    import aiodimse

    # Every file of a benchmark has the same class and syntax: read one header, not all.
    if mode == "for-files":
        return aiodimse.contexts.for_files(files[:1])
    return _file_contexts(files)


async def _store_aiodimse(args: argparse.Namespace) -> dict[str, Any]:
    import aiodimse

    files = _read_list(args.files_from)
    contexts = _storage_contexts(files, args.contexts)
    counts: Counter[str] = Counter()
    nodelay = False
    start = time.perf_counter()
    cpu = time.process_time()
    options: dict[str, Any] = {"max_pdu": args.max_pdu} if args.max_pdu else {}
    async with _connect(args, contexts, **options) as assoc:
        nodelay = _assoc_nodelay(assoc)
        negotiated = assoc.negotiated
        accepted = [c.transfer_syntax for c in negotiated.accepted] if negotiated else []
        for path in files:
            try:
                status = await assoc.store(path, check=False)
            except aiodimse.AssociationTimeout:
                counts["stalls"] += 1
                break
            counts["ok" if status.code == 0 else "failed"] += 1
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "ok": counts["ok"],
        "failed": counts["failed"] + (len(files) - sum(counts.values())),
        "stalls": counts["stalls"],
        "nodelay": nodelay,
        "transfer_syntaxes": accepted,
    }


async def _flood(args: argparse.Namespace) -> dict[str, Any]:
    """Many concurrent associations from one process, each storing its own few instances."""
    import aiodimse

    files = _read_list(args.files_from)
    per = args.per_assoc
    n = args.associations
    if len(files) < n * per:
        raise SystemExit(f"need {n * per} files, got {len(files)}")
    contexts = _storage_contexts(files, args.contexts)
    timeouts = aiodimse.Timeouts(
        connect=args.dimse_timeout, acse=args.dimse_timeout, dimse=args.dimse_timeout
    )
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    stored = 0
    gate = asyncio.Event()

    async def one(k: int) -> None:
        nonlocal stored
        await gate.wait()
        try:
            async with _connect(args, contexts, timeouts) as assoc:
                for path in files[k * per : (k + 1) * per]:
                    status = await assoc.store(path, check=False)
                    if status.code == 0:
                        stored += 1
            outcomes["completed"] += 1
        except aiodimse.AssociationRejected:
            outcomes["rejected"] += 1
        except aiodimse.AssociationTimeout:
            outcomes["stalled"] += 1
        except (aiodimse.AssociationAborted, aiodimse.ConnectionLost) as exc:
            outcomes["aborted"] += 1
            errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1
        except (aiodimse.AiodimseError, OSError) as exc:
            outcomes["error"] += 1
            errors[type(exc).__name__ + ": " + str(exc)[:120]] += 1

    tasks = [asyncio.create_task(one(k)) for k in range(n)]
    await asyncio.sleep(0)
    start = time.perf_counter()
    gate.set()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "ok": stored,
        "associations": n,
        "completed": outcomes["completed"],
        "rejected": outcomes["rejected"],
        "stalled": outcomes["stalled"],
        "aborted": outcomes["aborted"],
        "error": outcomes["error"],
        "errors": dict(errors.most_common(5)),
    }


# -- pynetdicom ----------------------------------------------------------------------------------


def _pynetdicom_nodelay_handler() -> Any:
    """An EVT_CONN_OPEN handler that turns Nagle off on the association's socket."""
    from pynetdicom import evt

    def set_nodelay(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    return (evt.EVT_CONN_OPEN, set_nodelay)


def _configure_pynetdicom() -> None:
    # pynetdicom's fastest documented storage mode: send files without decoding them and
    # write received data sets to a file as they arrive, never decoding them either.
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.STORE_RECV_CHUNKED_DATASET = True


def _pynetdicom_store_handler(out: Path, sockets: list[bool] | None = None) -> Any:
    """EVT_C_STORE: move the file pynetdicom wrote as the data set arrived into ``out``;
    with ``sockets``, note whether TCP_NODELAY was on (the first 64 stores)."""

    def handle_store(event: Any) -> int:
        if sockets is not None and len(sockets) < 64:
            sockets.append(_pynetdicom_nodelay(event.assoc))
        uid = str(event.request.AffectedSOPInstanceUID)
        os.replace(event.dataset_path, out / f"{uid}.dcm")
        return 0x0000

    return handle_store


def _serve_pynetdicom(args: argparse.Namespace) -> None:
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.transport import AssociationServer

    _configure_pynetdicom()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)

    # The listen backlog (socketserver's documented knob), as large as aiodimse's.
    AssociationServer.request_queue_size = args.backlog
    ae = AE(ae_title=CALLED_AE)
    ae.maximum_associations = args.max_associations
    if args.max_pdu:
        ae.maximum_pdu_size = args.max_pdu
    for cx in AllStoragePresentationContexts[:127]:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    handlers: Any = [
        (evt.EVT_C_STORE, _pynetdicom_store_handler(out)),
        _pynetdicom_nodelay_handler(),
    ]
    stop = _stop_flag()
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    assert server is not None
    _emit(
        {
            "ready": True,
            "port": server.server_address[1],
            "pid": os.getpid(),
            "toolkit": "pynetdicom",
        }
    )
    peak = 0
    while not stop.wait(_SAMPLE_INTERVAL):
        peak = max(peak, len(ae.active_associations))
    server.shutdown()
    _emit({"stats": {"peak_associations": peak}})


def _store_pynetdicom(args: argparse.Namespace) -> dict[str, Any]:
    from pynetdicom import AE

    from aiodimse.dicomfile import read_part10

    _configure_pynetdicom()
    files = _read_list(args.files_from)
    info = read_part10(files[0])
    ae = AE(ae_title=CALLING_AE)
    ae.dimse_timeout = args.dimse_timeout
    ae.acse_timeout = 10
    ae.network_timeout = 30
    if args.max_pdu:
        ae.maximum_pdu_size = args.max_pdu
    ae.add_requested_context(info.sop_class_uid, [info.transfer_syntax_uid])
    handlers: Any = [_pynetdicom_nodelay_handler()]
    counts: Counter[str] = Counter()
    nodelay = False
    accepted: list[str] = []
    start = time.perf_counter()
    cpu = time.process_time()
    assoc = None
    for path in files:
        if assoc is None or not assoc.is_established:
            if assoc is not None:
                counts["reconnects"] += 1
            assoc = ae.associate(
                "127.0.0.1", args.port, ae_title=args.called_ae, evt_handlers=handlers
            )
            if not assoc.is_established:
                counts["failed"] += 1
                assoc = None
                continue
            nodelay = _pynetdicom_nodelay(assoc)
            accepted = [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts]
        status = assoc.send_c_store(path)
        code = getattr(status, "Status", None)
        if code is None:
            # No response within the DIMSE timeout: pynetdicom aborts the association.
            counts["stalls"] += 1
        elif code == 0:
            counts["ok"] += 1
        else:
            counts["failed"] += 1
    if assoc is not None and assoc.is_established:
        assoc.release()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "ok": counts["ok"],
        "failed": counts["failed"],
        "stalls": counts["stalls"],
        "reconnects": counts["reconnects"],
        "nodelay": nodelay,
        "transfer_syntaxes": accepted,
    }


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("toolkit", choices=("aiodimse", "pynetdicom"))
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--max-associations", type=int, default=16)
    serve.add_argument("--backlog", type=int, default=128)
    serve.add_argument("--max-pdu", type=int, default=0, help="0 = the toolkit's default")
    store = sub.add_parser("store")
    store.add_argument("toolkit", choices=("aiodimse", "pynetdicom"))
    flood = sub.add_parser("flood")
    flood.add_argument("--associations", type=int, required=True)
    flood.add_argument("--per-assoc", type=int, required=True)
    for p in (store, flood):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--called-ae", default=CALLED_AE)
        p.add_argument("--files-from", type=Path, required=True)
        p.add_argument("--dimse-timeout", type=float, default=30.0)
        p.add_argument("--max-pdu", type=int, default=0, help="0 = the toolkit's default")
        p.add_argument("--contexts", choices=("exact", "for-files"), default="exact")
    args = parser.parse_args(argv)

    if args.command == "serve":
        if args.toolkit == "aiodimse":
            asyncio.run(_serve_aiodimse(args))
        else:
            _serve_pynetdicom(args)
        return
    if args.command == "store":
        if args.toolkit == "aiodimse":
            preload_aiodimse()
            result = asyncio.run(_store_aiodimse(args))
        else:
            result = _store_pynetdicom(args)
    else:
        preload_aiodimse()
        result = asyncio.run(_flood(args))
    _emit(result)


if __name__ == "__main__":
    main()
