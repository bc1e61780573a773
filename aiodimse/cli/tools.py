"""The SCU commands: echo, store, find, get, move (like DCMTK's echoscu, storescu,
findscu, getscu, movescu)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from .. import contexts
from ..config import DEFAULT_HOST
from ..dicomfile import NotDicomError, read_part10
from ..errors import AiodimseError, StatusError
from ..query import build_query, with_return_keys
from ..server import StorageServer
from ..sinks import DirectorySink
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    Progress,
    UsageError,
    add_query_options,
    add_scu_options,
    ae_title,
    connect_from,
    log,
    port_number,
)


def register(sub: Any) -> None:
    """Add the SCU commands to the sub-command parsers."""
    p = sub.add_parser("echo", help="C-ECHO: verify a peer (like echoscu)")
    p.set_defaults(run=cmd_echo)
    add_scu_options(p)
    p.add_argument("--repeat", type=int, default=1, help="number of C-ECHOs")

    p = sub.add_parser("store", help="C-STORE files or folders (like storescu)")
    p.set_defaults(run=cmd_store)
    add_scu_options(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")

    p = sub.add_parser("find", help="C-FIND (like findscu)")
    p.set_defaults(run=cmd_find)
    add_scu_options(p)
    add_query_options(p)
    p.add_argument("--json", action="store_true", help="print the DICOM JSON model (PS3.18 F.2)")

    p = sub.add_parser("get", help="C-GET into a folder (like getscu)")
    p.set_defaults(run=cmd_get)
    add_scu_options(p)
    add_query_options(p)
    p.add_argument("--out", "-od", required=True, type=Path, help="output folder")

    p = sub.add_parser("move", help="C-MOVE, optionally receiving it ourselves (like movescu)")
    p.set_defaults(run=cmd_move)
    add_scu_options(p)
    add_query_options(p)
    p.add_argument("--dest", "-aem", type=ae_title, help="move destination AE (default: --aet)")
    p.add_argument(
        "--port", dest="listen_port", type=port_number, help="receive the instances on this port"
    )
    p.add_argument(
        "--host",
        dest="listen_host",
        default=DEFAULT_HOST,
        help=f"address to receive them on, with --port (default {DEFAULT_HOST};"
        " 0.0.0.0 for every interface)",
    )
    p.add_argument("--out", "-od", type=Path, help="folder for received instances (with --port)")


def query_from(args: argparse.Namespace) -> Dataset:
    """The query identifier of ``-k`` and ``--level``; a bad key is a usage error."""
    try:
        return build_query(args.key, args.level)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def iter_files(paths: Sequence[str], recursive: bool) -> Iterator[Path]:
    """Files named, and the files in the folders named (their sub-folders with -r)."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            for child in sorted(walker):
                if child.is_file():
                    yield child
        else:
            yield path


def _format_match(ds: Dataset) -> str:
    parts = []
    for elem in ds:
        if elem.tag.group in (0x0008,) and elem.keyword == "SpecificCharacterSet":
            continue
        value = "" if elem.value is None else str(elem.value)
        parts.append(f"{elem.keyword or elem.tag}={value}")
    return "  ".join(parts)


def format_match(ds: Dataset) -> str:
    parts = []
    for elem in ds:
        if elem.tag.group in (0x0008,) and elem.keyword == "SpecificCharacterSet":
            continue
        value = "" if elem.value is None else str(elem.value)
        parts.append(f"{elem.keyword or elem.tag}={value}")
    return "  ".join(parts)


async def cmd_echo(args: argparse.Namespace) -> int:
    async with connect_from(args, contexts.verification()) as assoc:
        for _ in range(max(1, args.repeat)):
            status = await assoc.echo()
            print(f"C-ECHO {args.aec} at {args.host}:{args.port}: {status}")
    return EXIT_OK


async def cmd_store(args: argparse.Namespace) -> int:
    files: list[Path] = []
    skipped: list[str] = []
    missing = unreadable = 0
    for path in iter_files(args.paths, args.recursive):
        if not path.exists():
            print(f"aiodimse store: {path}: no such file", file=sys.stderr)
            missing += 1
            continue
        try:
            read_part10(path)
        except NotDicomError:
            skipped.append(str(path))
            log.info("skipping %s: not a DICOM file", path)
            continue
        except OSError as exc:
            print(f"aiodimse store: {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable += 1
            continue
        files.append(path)
    if not files:
        # Each missing or unreadable file has had its line; say only what else happened.
        if skipped:
            print(
                f"aiodimse store: nothing to send ({len(skipped)} non-DICOM skipped)",
                file=sys.stderr,
            )
        return EXIT_FAILED
    try:
        proposal = contexts.for_files(files)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sent = failed = 0
    progress = Progress(len(files), "C-STORE")
    async with connect_from(args, proposal) as assoc:
        for path in files:
            try:
                status = await assoc.store(path)
            except (StatusError, AiodimseError, OSError) as exc:
                if not assoc.is_established:
                    raise
                progress.close()
                print(f"aiodimse store: {path}: {exc}", file=sys.stderr)
                failed += 1
            else:
                sent += 1
                log.info("%s: %s", path, status)
            progress.step()
    progress.close()
    print(
        f"sent {sent}, failed {failed}, skipped {len(skipped)} non-DICOM"
        + (f", {missing} missing" if missing else "")
        + (f", {unreadable} unreadable" if unreadable else "")
    )
    return EXIT_OK if failed == 0 and missing == 0 and unreadable == 0 else EXIT_FAILED


async def cmd_find(args: argparse.Namespace) -> int:
    query = with_return_keys(query_from(args))
    results: list[dict[str, Any]] = []
    count = 0
    async with connect_from(
        args,
        contexts.verification()
        + contexts.query_retrieve(move=False, get=False, models=(args.model,)),
    ) as assoc:
        matches = assoc.find(query, model=args.model)
        async for match in matches:
            count += 1
            if args.json:
                results.append(match.to_json_dict())
            else:
                print(format_match(match), flush=True)
        status = matches.status
    if args.json:
        print(json.dumps(results, indent=2))
    print(f"C-FIND: {count} match(es), {status}", file=sys.stderr)
    return EXIT_OK


async def cmd_get(args: argparse.Namespace) -> int:
    query = query_from(args)
    sink = DirectorySink(args.out)
    async with connect_from(args, contexts.for_get(models=(args.model,))) as assoc:
        result = await assoc.get(query, model=args.model, receiver=sink, check=False)
    print(f"C-GET: {result}; {len(result.instances)} file(s) in {args.out}")
    for uid in result.failed_instances:
        print(f"  failed: {uid}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_move(args: argparse.Namespace) -> int:
    query = query_from(args)
    destination = args.dest or args.aet
    scp: StorageServer | None = None
    if args.listen_port is not None:
        if args.out is None:
            raise UsageError("--port needs --out, the folder for the received instances")
        scp = StorageServer(args.out, args.listen_host, args.listen_port, ae_title=destination)
        await scp.start()
    elif args.out is not None:
        raise UsageError("--out is only used with --port (receiving the instances ourselves)")
    try:
        async with connect_from(
            args,
            contexts.verification()
            + contexts.query_retrieve(find=False, get=False, models=(args.model,)),
        ) as assoc:
            result = await assoc.move(
                query, destination, model=args.model, receiver=scp, check=False
            )
    finally:
        if scp is not None:
            scp.close()
            await scp.wait_closed()
    where = f"; {len(result.instances)} received in {args.out}" if scp is not None else ""
    print(f"C-MOVE to {destination}: {result}{where}")
    for uid in result.failed_instances:
        print(f"  failed: {uid}", file=sys.stderr)
    ok = result.ok and (scp is None or len(result.instances) >= result.completed)
    return EXIT_OK if ok else EXIT_FAILED
