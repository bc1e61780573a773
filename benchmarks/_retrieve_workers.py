"""Processes for bench_retrieve.py and bench_window.py: Q/R servers, retrieve and window clients.

Like ``_workers.py``, each server and each client runs in a process of its own and speaks one
JSON line: servers ``{"ready": true, "port": ...}`` once they listen (then serve until
SIGTERM), clients their result ``{"seconds": ..., ...}`` when done. Clients time themselves
from their association request to its release (interpreter start-up excluded).

    python benchmarks/_retrieve_workers.py serve archive --dir D [--dest AE=PORT ...] [--window N]
    python benchmarks/_retrieve_workers.py serve pynetdicom-qr --files-from LIST [--dest AE=PORT]
    python benchmarks/_retrieve_workers.py serve window --dir D --window N
    python benchmarks/_retrieve_workers.py move aiodimse|pynetdicom --port P --study UID
        --dest-ae AE --dest-port N --out D [--window N]
    python benchmarks/_retrieve_workers.py get aiodimse|pynetdicom --port P --study UID --out D
        [--window N]
    python benchmarks/_retrieve_workers.py window-store --port P --files-from LIST --window N

``--window N`` (aiodimse): the archive allows the asynchronous operations window (N, N), as
``qrscp --async-window N`` does, and proposes it on a C-MOVE's sub-association (``qrscp
--move-window N``); the move client's receiver grants the SCP N outstanding C-STOREs (the
serial row's receiver grants none), the get client proposes to perform N; without it,
sub-operations go one at a time.

The orchestrator starts them with ``_common.start_server`` and ``_common.run_client``
(``script=_common.RETRIEVE_WORKERS``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
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
    _assoc_nodelay,
    _configure_pynetdicom,
    _connect,
    _emit,
    _file_contexts,
    _pynetdicom_nodelay,
    _pynetdicom_nodelay_handler,
    _pynetdicom_store_handler,
    _read_list,
    _stop_event,
    _stop_flag,
    preload_aiodimse,
)

from aiodimse import uids  # noqa: E402
from aiodimse.testing.pynetdicom_qr import qr_ae  # noqa: E402

CT_IMAGE_STORAGE = uids.STORAGE_SOP_CLASSES["CTImageStorage"]
#: The called AE title of the window benchmark's storage SCP.
WINDOW_AE = "STORESCP"


# -- common ----------------------------------------------------------------------------------


def _destinations(values: list[str]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for value in values:
        ae, _, port = value.partition("=")
        out[ae] = ("127.0.0.1", int(port))
    return out


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
        async_window=(args.window, args.window) if args.window else None,
        # A C-MOVE proposes the window on its sub-association only when asked to.
        move_window=args.window or 1,
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
        args.dir, "127.0.0.1", 0, ae_title=WINDOW_AE, async_window=window
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
    _configure_pynetdicom()
    nodelay = _pynetdicom_nodelay_handler()
    ae, handlers = qr_ae(
        args.ae,
        _read_list(args.files_from),
        _destinations(args.dest),
        models=(
            uids.STUDY_ROOT_QR_MOVE,
            uids.STUDY_ROOT_QR_GET,
            uids.PATIENT_ROOT_QR_MOVE,
            uids.PATIENT_ROOT_QR_GET,
        ),
        timeout=60,
        # The sub-association turns Nagle off too (evt_handlers for ae.associate()).
        sub_association_handlers=[nodelay],
    )
    ae.maximum_associations = 16
    handlers.append(nodelay)
    stop = _stop_flag()
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
    """C-MOVE to a StorageServer on this process's own loop (``receive=``); with
    ``--window N`` it grants the SCP's sub-association N outstanding C-STOREs."""
    import aiodimse

    contexts = aiodimse.contexts.query_retrieve(find=False, get=False, models=("study",))
    window = (1, args.window) if args.window else None
    async with aiodimse.StorageServer(
        args.out, "127.0.0.1", args.dest_port, ae_title=args.dest_ae, async_window=window
    ) as scp:
        # The window each sub-association really got (the row must measure what it says).
        windows: set[tuple[int, int]] = set()

        def seen(instance: Any) -> None:
            for sub in scp.associations:
                if sub.id == instance.association_id and sub.negotiated is not None:
                    windows.add((sub.negotiated.max_invoked, sub.negotiated.max_performed))

        scp.add_listener(seen)
        start = time.perf_counter()
        cpu = time.process_time()
        async with _connect(args, contexts) as assoc:
            nodelay = _assoc_nodelay(assoc)
            begun = time.perf_counter()
            result = await assoc.move(
                _query(args.study), args.dest_ae, receiver=scp, check=False, arrival_timeout=30
            )
            service = time.perf_counter() - begun
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "received_instances": len(result.instances),
        "nodelay": nodelay,
        "sub_association_windows": sorted(windows),
        **_result_of(result, service),
    }


async def _get_aiodimse(args: argparse.Namespace) -> dict[str, Any]:
    """C-GET with ``contexts.for_get()`` into a DirectorySink; with ``--window N`` it
    proposes to perform N C-STORE sub-operations at once."""
    import aiodimse

    sink = aiodimse.DirectorySink(args.out)
    window = (1, args.window) if args.window else None
    start = time.perf_counter()
    cpu = time.process_time()
    async with _connect(args, aiodimse.contexts.for_get(), async_window=window) as assoc:
        nodelay = _assoc_nodelay(assoc)
        begun = time.perf_counter()
        result = await assoc.get(_query(args.study), receiver=sink, check=False)
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


def _pynetdicom_retrieve_scu(args: argparse.Namespace) -> tuple[Any, Path]:
    """pynetdicom's AE for a C-MOVE or C-GET SCU, and the folder received instances go to."""
    from pynetdicom import AE

    _configure_pynetdicom()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = 10
    ae.dimse_timeout = ae.network_timeout = args.dimse_timeout
    return ae, out


def _move_pynetdicom(args: argparse.Namespace) -> dict[str, Any]:
    """pynetdicom SCU with its own storage SCP (same AE, another thread) as destination."""
    from pynetdicom import evt
    from pynetdicom.transport import ThreadedAssociationServer

    ae, out = _pynetdicom_retrieve_scu(args)
    nodelay = _pynetdicom_nodelay_handler()
    stored_sockets: list[bool] = []
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
        assoc_nodelay = _pynetdicom_nodelay(assoc)
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
    from pynetdicom import build_role, evt

    ae, out = _pynetdicom_retrieve_scu(args)
    stored_sockets: list[bool] = []
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
    nodelay = _pynetdicom_nodelay(assoc)
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
    files = _read_list(args.files_from)
    window = (args.window, args.window) if args.window else None
    counts: Counter[str] = Counter()
    peak = 0
    start = time.perf_counter()
    cpu = time.process_time()
    async with _connect(args, _file_contexts(files), async_window=window) as assoc:
        negotiated = assoc.negotiated
        assert negotiated is not None
        exchange = assoc.exchange
        invoke = exchange.invoke

        async def counting(*args: Any, **kwargs: Any) -> Any:
            # Once a request is out: the operations invoked and not yet answered,
            # this one included.
            nonlocal peak
            op = await invoke(*args, **kwargs)
            peak = max(peak, exchange.outstanding)
            return op

        exchange.invoke = counting  # type: ignore[method-assign]

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
        p.add_argument("--window", type=int, default=0, help="0 = sub-operations one at a time")
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
    preload_aiodimse()
    if args.command == "window-store":
        result = asyncio.run(_window_store(args))
    elif args.toolkit == "aiodimse":
        coro = _move_aiodimse(args) if args.command == "move" else _get_aiodimse(args)
        result = asyncio.run(coro)
    else:
        result = _move_pynetdicom(args) if args.command == "move" else _get_pynetdicom(args)
    if args.command in ("move", "get"):
        result["files"] = C.count_files(args.out)
    _emit(result)


if __name__ == "__main__":
    main()
