"""The ``worker`` command: runs the studies of distributed retrieval jobs queued in
PostgreSQL (``aiodimse.jobs.cluster``), on as many machines as needed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..jobs import JournalError
from .common import (
    CLUSTER_MISSING,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    ae_title,
    port_number,
)

EXAMPLES = """examples:
  aiodimse worker postgresql://jobs@db.example/pacs --concurrency 8
  aiodimse worker postgresql://jobs@db/pacs --listen 0.0.0.0:11113 --aet WORKER1
      (C-MOVE jobs: the PACS must know WORKER1 at this machine's address and port)
  aiodimse worker postgresql://jobs@db/pacs --status 12     # where job 12 stands
  aiodimse worker postgresql://jobs@db/pacs --requeue 12    # after fixing a source
"""


def register(sub: Any) -> None:
    """Add the ``worker`` command to the sub-command parsers."""
    p = sub.add_parser(
        "worker",
        help="run the studies of retrieval jobs queued in PostgreSQL (distributed mode)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=cmd_worker)
    p.add_argument("dsn", help="the PostgreSQL database: postgresql://user@host:port/dbname")
    p.add_argument(
        "--concurrency", "-c", type=int, default=4, help="studies at once in this worker (4)"
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where this worker's storage server listens for C-MOVE jobs (default: the job's)",
    )
    p.add_argument("--aet", type=ae_title, help="this worker's AE title for C-MOVE jobs")
    p.add_argument(
        "--stalled-after",
        type=float,
        default=30.0,
        metavar="S",
        help="a worker silent this long is taken for dead and its studies re-run (30)",
    )
    p.add_argument(
        "--heartbeat", type=float, default=5.0, metavar="S", help="seconds between heartbeats"
    )
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--name", help="this worker's name in the queue's records")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--status", metavar="JOB", help="print where a job stands, then exit")
    what.add_argument(
        "--requeue", metavar="JOB", help="queue again what a job has left (after a fix), then exit"
    )
    p.add_argument("--json", action="store_true", help="--status as JSON")
    add_common(p)


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT")
    try:
        return host, port_number(port)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"--listen: {exc}") from None


async def cmd_worker(args: argparse.Namespace) -> int:
    if not str(args.dsn).startswith(("postgresql://", "postgres://")):
        raise UsageError(f"{args.dsn!r} is not a PostgreSQL URI (postgresql://user@host/db)")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.stalled_after <= args.heartbeat:
        raise UsageError("--stalled-after must be longer than --heartbeat")
    listen = _address(args.listen) if args.listen else None
    try:
        # Imported here: procrastinate and psycopg are an optional extra, and every other
        # command must run without them.
        import psycopg

        from ..jobs import cluster  # (the optional extra, as above)
    except ImportError:
        print(f"aiodimse worker: {CLUSTER_MISSING}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.status is not None:
            report = await cluster.cluster_report(args.dsn, args.status)
            text = json.dumps(report.to_json(), indent=2) if args.json else report.summary()
            print(text)
            return EXIT_OK if report.ok else EXIT_FAILED
        if args.requeue is not None:
            queued = await cluster.resume(args.dsn, args.requeue)
            print(f"job {args.requeue}: {queued} studies queued", file=sys.stderr)
            return EXIT_OK
        await cluster.run_worker(
            args.dsn,
            concurrency=args.concurrency,
            listen=listen,
            calling_ae=args.aet,
            name=args.name,
            stalled_after=args.stalled_after,
            heartbeat=args.heartbeat,
            wait=not args.once,
        )
    except psycopg.Error as exc:
        print(f"aiodimse worker: PostgreSQL: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    except JournalError as exc:
        print(f"aiodimse worker: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
