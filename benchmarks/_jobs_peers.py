"""The processes bench_jobs.py times, each in a process of its own so that its memory is
its own: an aiodimse retrieval job (library API), and a serial pynetdicom C-MOVE loop.

Each prints one JSON line with ``seconds`` (the work only, interpreter start-up and
imports excluded) and its peak RSS (VmHWM, KiB), then exits. VmHWM, not ``ru_maxrss``:
Linux keeps the parent's high-water mark in ``ru_maxrss`` across fork and exec.

    python benchmarks/_jobs_peers.py job --host H --port P --aec AE --method move|get
        --associations N --out DIR --journal FILE [--listen-port P] [--study-date D]
    python benchmarks/_jobs_peers.py pynetdicom-move --host H --port P --aec AE
        --dest-ae AE --studies FILE
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    # Run the checkout's package, whatever is installed.
    sys.path.insert(0, str(BENCH_DIR.parent))

from aiodimse.jobs import JobSpec, Limits, RetrieveJob, Source  # noqa: E402

#: The job's AE title: the calling AE, and the C-MOVE destination of a move to itself.
JOB_AE = "JOBS"
#: Study Root Query/Retrieve Information Model - MOVE (PS3.4 C.6.2).
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _vm(key: str) -> int:
    """VmRSS / VmHWM of this process (KiB), from /proc/self/status; 0 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    except OSError:
        pass
    return 0


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def _job(args: argparse.Namespace) -> dict[str, Any]:
    """One job: STUDY-level C-FIND on the source (StudyDate), then every study by C-MOVE
    to ourselves or by C-GET, over ``associations`` associations."""
    rss_before = _vm("VmRSS")
    spec = JobSpec(
        sources=(Source(args.host, args.port, args.aec, args.associations),),
        method=args.method,
        destination=str(args.out),
        calling_ae=JOB_AE,
        query={"StudyDate": args.study_date},
        listen=("127.0.0.1", args.listen_port) if args.method == "move" else None,
        limits=Limits(backoff=0.5),
    )
    events: collections.Counter[str] = collections.Counter()
    finished: dict[str, Any] = {}
    hwm_expanded = 0
    start = time.perf_counter()
    cpu = time.process_time()
    job = await RetrieveJob.create(args.journal, spec)
    try:
        async for event in job.run():
            events[event.kind] += 1
            if event.kind == "expanded":
                # The high-water mark once the study list is in the journal, before transfers.
                hwm_expanded = _vm("VmHWM")
            elif event.kind == "finished":
                finished = dict(event.data)
    finally:
        await job.close()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "counts": finished.get("counts", {}),
        "instances": finished.get("instances", {}),
        "ok": finished.get("ok", False),
        "stopped_sources": finished.get("stopped_sources", {}),
        "problems": finished.get("problems", [])[:5],
        "events": dict(events),
        "rss_before_kib": rss_before,
        "peak_rss_expanded_kib": hwm_expanded,
        "peak_rss_kib": _vm("VmHWM"),
        # Not the peak of this program alone: Linux carries the parent's RSS high-water mark
        # across fork + exec into ru_maxrss (kept for comparison only).
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _pynetdicom_move(args: argparse.Namespace) -> dict[str, Any]:
    """One pynetdicom association, one C-MOVE per study to ``dest_ae``, one after the
    other. pynetdicom never sets TCP_NODELAY: it is set here on its socket (EVT_CONN_OPEN)."""
    from pydicom import Dataset
    from pynetdicom import AE, evt

    def set_nodelay(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    studies = [s for s in Path(args.studies).read_text().split() if s]
    ae = AE(ae_title="PYNETDICOM")
    ae.acse_timeout = 30
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(STUDY_ROOT_MOVE)
    statuses: collections.Counter[str] = collections.Counter()
    completed = failed = 0
    start = time.perf_counter()
    cpu = time.process_time()
    assoc = ae.associate(
        args.host, args.port, ae_title=args.aec, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    if not assoc.is_established:
        raise SystemExit(f"pynetdicom could not associate with {args.aec}@{args.host}:{args.port}")
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    nodelay = bool(sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    for study in studies:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        final = "none"
        for status, _identifier in assoc.send_c_move(query, args.dest_ae, STUDY_ROOT_MOVE):
            if status is None or "Status" not in status:
                final = "aborted"
                continue
            final = f"{int(status.Status):04X}"
            if final not in ("FF00", "FF01"):  # the final response carries the counts
                completed += int(status.get("NumberOfCompletedSuboperations", 0) or 0)
                failed += int(status.get("NumberOfFailedSuboperations", 0) or 0)
        statuses[final] += 1
        if final == "aborted":
            break
    if assoc.is_established:
        assoc.release()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "statuses": dict(statuses),
        "completed": completed,
        "failed": failed,
        "nodelay": nodelay,
        "peak_rss_kib": _vm("VmHWM"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    job = sub.add_parser("job")
    job.add_argument("--host", default="127.0.0.1")
    job.add_argument("--port", type=int, required=True)
    job.add_argument("--aec", required=True)
    job.add_argument("--method", choices=("move", "get"), required=True)
    job.add_argument("--associations", type=int, default=4)
    job.add_argument("--out", type=Path, required=True)
    job.add_argument("--journal", type=Path, required=True)
    job.add_argument("--listen-port", type=int, default=0)
    job.add_argument("--study-date", default="", help="StudyDate key of the C-FIND (any)")
    move = sub.add_parser("pynetdicom-move")
    move.add_argument("--host", default="127.0.0.1")
    move.add_argument("--port", type=int, required=True)
    move.add_argument("--aec", required=True)
    move.add_argument("--dest-ae", required=True)
    move.add_argument("--studies", type=Path, required=True, help="one StudyInstanceUID a line")
    args = parser.parse_args(argv)
    if args.command == "job":
        _emit(asyncio.run(_job(args)))
    else:
        _emit(_pynetdicom_move(args))


if __name__ == "__main__":
    main()
