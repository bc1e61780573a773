"""The ``retrieve`` command: a bulk retrieval job from one or more PACS, journalled,
resumable and verified (aiodimse.jobs)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..config import DEFAULT_HOST
from ..jobs import (
    JobEvent,
    JobReport,
    JobSpec,
    JournalError,
    Limits,
    RetrieveJob,
    Source,
    TimeWindow,
    parse_rate,
    read_work_file,
)
from ..jobs.spec import DEFAULT_ASSOCIATIONS, METHODS, WORK_KEYS, sources_named
from ..query import parse_key
from .common import (
    CLUSTER_MISSING,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    ae_title,
    port_number,
    stop_on_signals,
)

EXAMPLES = """examples:
  aiodimse retrieve pacs 11112 --aec PACS -k StudyDate=20240101-20240131 \\
      -k ModalitiesInStudy=CT --out exports --port 11113 --aet JOBS --journal ct.db
  aiodimse retrieve pacs 11112 --aec PACS --method get --input studies.csv --out exports
  aiodimse retrieve --resume ct.db        # after a crash or Ctrl-C: continues
  aiodimse retrieve --status ct.db        # states, and the UIDs still missing
"""


def register(sub: Any) -> None:
    """Add the ``retrieve`` command to the sub-command parsers."""
    p = sub.add_parser(
        "retrieve",
        help="a bulk retrieval job: many studies, many associations, resumable, verified",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(run=cmd_retrieve)
    p.add_argument("host", nargs="?", help="the source PACS host")
    p.add_argument("port", nargs="?", type=port_number, help="the source PACS port")
    p.add_argument("--aec", "-aec", type=ae_title, default="ANY-SCP", help="the source's AE title")
    p.add_argument(
        "--aet",
        "-aet",
        type=ae_title,
        default="AIODIMSE",
        help="our AE title (with --method move, the destination AE the source knows)",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="AE@HOST:PORT",
        help="another source (repeatable); a study is taken from the first that has it",
    )
    p.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a STUDY-level query key selecting the studies, as in findscu",
    )
    p.add_argument("--input", type=Path, help="a text or CSV file listing the studies")
    p.add_argument(
        "--input-key",
        choices=WORK_KEYS,
        default="StudyInstanceUID",
        help="what --input lists (default StudyInstanceUID)",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="move",
        help="move: C-MOVE to our own storage server (--port); get: C-GET;"
        " move-to: C-MOVE to another AE (--dest)",
    )
    p.add_argument("--out", "-od", type=Path, help="output folder (one sub-folder per study)")
    p.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="instead of --out: into the embedded archive stored in DIR (indexed as they"
        " arrive; `aiodimse qrscp --storage DIR` serves them)",
    )
    p.add_argument("--dest", type=ae_title, help="with --method move-to: the destination AE")
    p.add_argument(
        "--verify",
        metavar="AE@HOST:PORT",
        help="with --method move-to: where the destination answers IMAGE-level C-FIND",
    )
    p.add_argument(
        "--port",
        dest="listen_port",
        type=port_number,
        help="with --method move: the port the sources send to",
    )
    p.add_argument(
        "--host",
        dest="listen_host",
        default=DEFAULT_HOST,
        help=f"with --method move: the address to listen on (default {DEFAULT_HOST})",
    )
    p.add_argument(
        "--associations",
        type=int,
        default=DEFAULT_ASSOCIATIONS,
        help=f"associations per source at once (default {DEFAULT_ASSOCIATIONS})",
    )
    p.add_argument("--rate", help="at most this many instances/s (50/s) or MiB/s (20MiB/s)")
    p.add_argument("--window", help="start transfers only between these hours: 19:00-07:00")
    p.add_argument("--attempts", type=int, default=5, help="attempts per study (default 5)")
    p.add_argument(
        "--backoff",
        type=float,
        default=2.0,
        help="first retry delay in seconds, doubled each time (default 2)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds a retrieve may go without a response (default 120)",
    )
    p.add_argument(
        "--journal",
        type=Path,
        default=Path("retrieve.db"),
        help="the job's journal, a SQLite file (default retrieve.db)",
    )
    p.add_argument("--resume", type=Path, metavar="JOURNAL", help="continue the job in JOURNAL")
    p.add_argument(
        "--status",
        type=Path,
        metavar="JOURNAL",
        help="show the state of the job in JOURNAL and exit",
    )
    p.add_argument(
        "--engine",
        metavar="postgresql://...",
        help="queue the job in this PostgreSQL database for `aiodimse worker` processes"
        " (the distributed mode; needs the cluster extra) instead of running it here",
    )
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    add_common(p)


def _query(keys: list[str]) -> dict[str, str]:
    query: dict[str, str] = {}
    for spec in keys:
        try:
            parse_key(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        key, _, value = spec.partition("=")
        query[key.strip()] = value
    return query


def spec_from(args: argparse.Namespace) -> JobSpec:
    """The job the command line describes; UsageError names what is wrong."""
    if args.host is None or args.port is None:
        raise UsageError("give the source as HOST PORT (or --resume/--status JOURNAL)")
    if bool(args.key) == bool(args.input):
        raise UsageError("give the studies either as -k query keys or as --input FILE")
    try:
        rate = parse_rate(args.rate) if args.rate else (None, None)
        window = TimeWindow.parse(args.window) if args.window else None
        sources: tuple[Source, ...] = (Source(args.host, args.port, args.aec, args.associations),)
        sources += sources_named(args.source, args.associations)
        items = tuple(read_work_file(args.input, args.input_key)) if args.input else ()
        if args.input and not items:
            raise UsageError(f"--input {args.input}: no studies listed")
        verify = None
        if args.verify:
            (source,) = sources_named([args.verify], 1)
            verify = (source.host, source.port, source.called_ae)
        if args.out is not None and args.archive is not None:
            raise UsageError("give either --out DIR or --archive DIR, not both")
        folder = args.archive if args.archive is not None else args.out
        destination = args.dest if args.method == "move-to" else str(folder or "")
        if args.method != "move-to" and folder is None:
            raise UsageError(f"--method {args.method} needs --out DIR (or --archive DIR)")
        if args.method == "move" and args.listen_port is None:
            raise UsageError(
                f"--method move needs --port: the port the sources send to (AE {args.aet})"
            )
        return JobSpec(
            sources=sources,
            method=args.method,
            destination=destination or "",
            calling_ae=args.aet,
            query=_query(args.key),
            items=items,
            listen=(args.listen_host, args.listen_port) if args.method == "move" else None,
            verify=verify,
            archive=args.archive is not None,
            limits=Limits(
                instances_per_second=rate[0],
                bytes_per_second=rate[1],
                window=window,
                max_attempts=max(1, args.attempts),
                backoff=args.backoff,
                dimse_timeout=args.timeout,
            ),
        )
    except OSError as exc:
        raise UsageError(f"--input {args.input}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


class _View:
    """What a person sees. Not on a terminal (or with --json): a line per study that ends
    and per retry. On a terminal, above those lines, a live block: studies, instances,
    MiB/s, ETA and failures, then one line per association at work (its study, attempt
    and time so far), redrawn in place."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.live = sys.stderr.isatty() and not as_json
        self.studies = 0
        self.finished = 0
        self.failures = 0
        self.instances = 0
        self.rate = 0.0
        self.started = time.monotonic()
        self.active: dict[str, tuple[str, int, float]] = {}  # study -> source, attempt, since
        self._drawn = 0

    def show(self, event: JobEvent) -> None:
        if self.json:
            print(json.dumps(event.to_json()), flush=True)
            return
        d = event.data
        if event.kind == "expanded":
            self.studies += int(d.get("new", 0))
        elif event.kind == "progress":
            self.instances = int(d["instances"])
            self.rate = float(d["mib_per_s"])
            self.studies = int(d["studies"])
            self.finished = int(d["studies_done"])
        elif event.kind == "study":
            state = d["state"]
            if state == "running":
                self.active[d["study"]] = (d["source"], d["attempt"], time.monotonic())
            else:
                self.active.pop(d["study"], None)
                self.finished += 1
                self.failures += state in ("partial", "failed")
                self._line(str(event))
        elif event.kind == "retry":
            self.active.pop(d["study"], None)
            self._line(str(event))
        elif event.kind in ("source-stopped", "source-error", "paused"):
            self._line(str(event))
        self._draw()

    def _status(self) -> str:
        elapsed = time.monotonic() - self.started
        eta = ""
        if self.finished and self.studies > self.finished:
            eta = f", ETA {elapsed / self.finished * (self.studies - self.finished):.0f} s"
        return (
            f"{self.finished}/{self.studies} studies, {self.instances} instances,"
            f" {self.rate:.1f} MiB/s, {self.failures} failed{eta}"
        )

    def _erase(self) -> None:
        if self._drawn:
            print(f"\033[{self._drawn}F\033[J", end="", file=sys.stderr)
            self._drawn = 0

    def _draw(self) -> None:
        if not self.live:
            return
        self._erase()
        now = time.monotonic()
        lines = [self._status()]
        for study, (source, attempt, since) in sorted(self.active.items()):
            lines.append(f"  {source}  {study}  attempt {attempt}, {now - since:.0f} s")
        print("\n".join(lines), file=sys.stderr, flush=True)
        self._drawn = len(lines)

    def _line(self, text: str) -> None:
        self._erase()
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._erase()


def _print_report(report: JobReport, journal: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "report", "journal": str(journal), **report.to_json()}))
        return
    print(report.summary())
    if not report.finished:
        print(f"resume with: aiodimse retrieve --resume {journal}")


async def _status(path: Path, as_json: bool) -> int:
    try:
        job = await RetrieveJob.open(path)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    async with job:
        report = await job.report()
    _print_report(report, path, as_json)
    return EXIT_OK if report.ok else EXIT_FAILED


async def _submit(args: argparse.Namespace) -> int:
    """Queue the job in PostgreSQL for the workers; print its id."""
    spec = spec_from(args)
    try:
        # Imported here: the distributed mode is an optional extra (procrastinate, psycopg)
        # that the rest of the command line must not need.
        from ..jobs import cluster
    except ImportError:
        print(f"aiodimse retrieve: {CLUSTER_MISSING}", file=sys.stderr)
        return EXIT_FAILED
    job_id = await cluster.submit(args.engine, spec)
    if args.json:
        print(json.dumps({"event": "queued", "job": job_id, "engine": args.engine}))
    else:
        print(f"job {job_id} queued; run `aiodimse worker {args.engine}` on each machine")
        print(f"where it stands: aiodimse worker {args.engine} --status {job_id}")
    return EXIT_OK


async def cmd_retrieve(args: argparse.Namespace) -> int:
    if args.status is not None:
        return await _status(args.status, args.json)
    if args.engine is not None:
        if args.resume is not None:
            raise UsageError("--resume is for a journal file; a queued job resumes by itself")
        return await _submit(args)
    try:
        if args.resume is not None:
            journal = args.resume
            job = await RetrieveJob.open(journal)
        else:
            spec = spec_from(args)
            journal = args.journal
            if journal.exists() and journal.stat().st_size:
                raise UsageError(f"--journal {journal} exists: --resume {journal}, or a new file")
            job = await RetrieveJob.create(journal, spec)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    view = _View(args.json)
    stop = stop_on_signals()
    interrupted = False
    async with job:
        events = job.run()
        try:
            while True:
                next_event = asyncio.ensure_future(anext(events))
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait(
                    {next_event, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if next_event not in done:
                    next_event.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_event
                    interrupted = True
                    break
                stopping.cancel()
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    break
                if event.kind != "finished":
                    view.show(event)
        finally:
            await events.aclose()
            view.close()
        report = await job.report()
    _print_report(report, journal, args.json)
    if interrupted:
        print(f"interrupted: resume with aiodimse retrieve --resume {journal}", file=sys.stderr)
        return 130
    return EXIT_OK if report.ok else EXIT_FAILED
