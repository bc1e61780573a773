"""The SCU commands: echo, store, find, get, move (like DCMTK's echoscu, storescu,
findscu, getscu, movescu). ``store`` lives in :mod:`aiodimse.cli.store`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import contexts
from ..config import DEFAULT_HOST
from ..query import Identifier, build_identifier, build_query, with_return_keys
from ..results import Progress as Pending
from ..sinks import DirectorySink
from ..ul.negotiation import ContextRequest
from . import store
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_query_options,
    add_scu_options,
    ae_title,
    port_number,
)
from .options import (
    add_client_security,
    add_propose_options,
    check_identity_response,
    connect_with,
    proposed_syntaxes,
)
from .progress import LiveProgress, emit

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import, and `aiodimse echo` needs none of it.
    from pydicom import Dataset

    from ..server import StorageServer

__all__ = ["format_match", "iter_files", "query_from", "register", "retrieve_query_from"]

iter_files = store.iter_files

_RAW = argparse.RawDescriptionHelpFormatter


def _parser(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, epilog="examples:\n" + examples, formatter_class=_RAW, prefix_chars="-+"
    )
    return p


def _cancel_after(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--cancel-after",
        type=int,
        metavar="N",
        help=f"send C-CANCEL after {what} (like DCMTK's --cancel)",
    )


def register(sub: Any) -> None:
    """Add the SCU commands to the sub-command parsers."""
    p = _parser(
        sub,
        "echo",
        "C-ECHO: verify a peer (like echoscu)",
        "  aiodimse echo pacs 104 --aec PACS\n"
        "  aiodimse echo pacs 2762 --aec PACS +tls me.key me.pem +cf ca.pem\n",
    )
    p.set_defaults(run=cmd_echo)
    add_scu_options(p)
    p.add_argument("--repeat", type=int, default=1, help="number of C-ECHOs")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    add_propose_options(p)
    add_client_security(p)

    store.register(sub)

    p = _parser(
        sub,
        "find",
        "C-FIND (like findscu)",
        "  aiodimse find pacs 104 --aec PACS -k PatientName='DOE*' -k StudyDate=20240101-\n"
        "  aiodimse find pacs 104 --aec PACS --level SERIES -k StudyInstanceUID=1.2.3"
        " -k Modality --json\n",
    )
    p.set_defaults(run=cmd_find)
    add_scu_options(p)
    add_query_options(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the matches as one JSON array in the DICOM JSON model (PS3.18 F.2)",
    )
    _cancel_after(p, "N matches")
    add_propose_options(p)
    add_client_security(p)

    p = _parser(
        sub,
        "get",
        "C-GET into a folder (like getscu)",
        "  aiodimse get pacs 104 --aec PACS -k StudyInstanceUID=1.2.3 --out study/\n",
    )
    p.set_defaults(run=cmd_get)
    add_scu_options(p)
    add_query_options(p)
    p.add_argument("--out", "-od", required=True, type=Path, help="output folder")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    _cancel_after(p, "N instances have arrived")
    add_propose_options(p)
    add_client_security(p)

    p = _parser(
        sub,
        "move",
        "C-MOVE, optionally receiving it ourselves (like movescu)",
        "  aiodimse move pacs 104 --aec PACS -k StudyInstanceUID=1.2.3 --dest WORKSTATION\n"
        "  aiodimse move pacs 104 --aec PACS -k StudyInstanceUID=1.2.3 --dest ME"
        " --port 11113 --out study/\n",
    )
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
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    _cancel_after(p, "N sub-operations have completed")
    add_propose_options(p)
    add_client_security(p)


def query_from(args: argparse.Namespace) -> Dataset:
    """The query identifier of ``-k`` and ``--level``; a bad key is a usage error."""
    try:
        return build_query(args.key, args.level)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def retrieve_query_from(args: argparse.Namespace) -> Identifier | Dataset:
    """The identifier of a C-GET / C-MOVE: a light Identifier (no pydicom: start-up time)
    when every ``-k`` key is an ordinary one with a plain value, else as ``query_from``."""
    try:
        return build_identifier(args.key, args.level)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def format_match(ds: Dataset) -> str:
    parts = []
    for elem in ds:
        if elem.tag.group in (0x0008,) and elem.keyword == "SpecificCharacterSet":
            continue
        value = "" if elem.value is None else str(elem.value)
        parts.append(f"{elem.keyword or elem.tag}={value}")
    return "  ".join(parts)


def _with_syntaxes(
    proposal: list[ContextRequest], args: argparse.Namespace
) -> list[ContextRequest]:
    """The proposal with the transfer syntaxes asked for on the command line, if any."""
    syntaxes = proposed_syntaxes(args)
    if syntaxes is None:
        return proposal
    return [replace(c, transfer_syntaxes=syntaxes) for c in proposal]


def _check_cancel_after(args: argparse.Namespace) -> int | None:
    n: int | None = args.cancel_after
    if n is not None and n < 1:
        raise UsageError(f"--cancel-after {n}: must be 1 or more")
    return n


def _print_failed(uids: Sequence[str]) -> None:
    for uid in uids:
        print(f"  failed: {uid}", file=sys.stderr)


async def cmd_echo(args: argparse.Namespace) -> int:
    async with connect_with(args, _with_syntaxes(contexts.verification(), args)) as assoc:
        check_identity_response(args, assoc)
        for _ in range(max(1, args.repeat)):
            status = await assoc.echo()
            if args.json:
                emit("echo", peer=f"{args.host}:{args.port}", ae=args.aec, status=status.code)
            else:
                print(f"C-ECHO {args.aec} at {args.host}:{args.port}: {status}")
    return EXIT_OK


async def cmd_find(args: argparse.Namespace) -> int:
    query = with_return_keys(query_from(args))
    limit = _check_cancel_after(args)
    results: list[dict[str, Any]] = []
    count = 0
    proposal = contexts.verification() + contexts.query_retrieve(
        move=False, get=False, models=(args.model,)
    )
    async with connect_with(args, _with_syntaxes(proposal, args)) as assoc:
        check_identity_response(args, assoc)
        matches = assoc.find(query, model=args.model)
        async with matches:
            async for match in matches:
                count += 1
                if args.json:
                    results.append(match.to_json_dict())
                else:
                    print(format_match(match), flush=True)
                if limit is not None and count >= limit:
                    await matches.cancel()
                    break
        status = matches.status
    if args.json:
        print(json.dumps(results, indent=2))
    print(f"C-FIND: {count} match(es), {status}", file=sys.stderr)
    return EXIT_OK


class _Counter:
    """Pending-response counts to the progress display, and the C-CANCEL trigger."""

    def __init__(self, progress: LiveProgress, limit: int | None, json_out: bool) -> None:
        self.progress = progress
        self.limit = limit
        self.json = json_out
        self.reached = asyncio.Event()

    def __call__(self, pending: Pending) -> None:
        if pending.remaining is not None:
            self.progress.set_total(pending.remaining + pending.completed + pending.failed)
        self.progress.advance_to(pending.completed + pending.warning, pending.failed)
        if self.json:
            emit(
                "progress",
                completed=pending.completed,
                failed=pending.failed,
                warning=pending.warning,
                remaining=pending.remaining,
            )
        if self.limit is not None and pending.completed + pending.warning >= self.limit:
            self.reached.set()


async def _run_retrieve(op: Any, counter: _Counter) -> Any:
    """Await a C-GET/C-MOVE, sending C-CANCEL once ``--cancel-after`` is reached."""
    result = asyncio.ensure_future(_await(op))
    reached = asyncio.ensure_future(counter.reached.wait())
    try:
        await asyncio.wait({reached, result}, return_when=asyncio.FIRST_COMPLETED)
        if not result.done():
            await op.cancel()
        return await result
    finally:
        reached.cancel()


async def _await(op: Any) -> Any:
    return await op


def _report(
    args: argparse.Namespace, what: str, result: Any, progress: LiveProgress, where: str
) -> None:
    progress.close()
    if args.json:
        emit(
            "summary",
            service=what,
            status=result.status.code,
            completed=result.completed,
            failed=result.failed,
            warning=result.warning,
            cancelled=result.cancelled,
            received=len(result.instances),
            failed_instances=list(result.failed_instances),
            seconds=round(progress.elapsed, 3),
        )
    else:
        print(f"{what}: {result}{where}")
        _print_failed(result.failed_instances)


async def cmd_get(args: argparse.Namespace) -> int:
    query = retrieve_query_from(args)
    limit = _check_cancel_after(args)
    sink = DirectorySink(args.out)
    syntaxes = proposed_syntaxes(args)
    proposal = (
        contexts.for_get(models=(args.model,))
        if syntaxes is None
        else contexts.for_get(models=(args.model,), transfer_syntaxes=syntaxes, compressed=())
    )
    progress = LiveProgress("C-GET", None, enabled=False if args.json else None)
    counter = _Counter(progress, limit, args.json)
    async with connect_with(args, proposal) as assoc:
        check_identity_response(args, assoc)
        op = assoc.get(query, model=args.model, receiver=sink, check=False, on_progress=counter)
        result = await _run_retrieve(op, counter)
    _report(args, "C-GET", result, progress, f"; {len(result.instances)} file(s) in {args.out}")
    return EXIT_OK if result.ok or (limit is not None and result.cancelled) else EXIT_FAILED


async def cmd_move(args: argparse.Namespace) -> int:
    query = retrieve_query_from(args)
    limit = _check_cancel_after(args)
    destination = args.dest or args.aet
    scp: StorageServer | None = None
    if args.listen_port is not None:
        if args.out is None:
            raise UsageError("--port needs --out, the folder for the received instances")
        # Deferred: only `move --port` runs a storage server; the other commands start
        # without importing it.
        from ..server import StorageServer

        scp = StorageServer(args.out, args.listen_host, args.listen_port, ae_title=destination)
        await scp.start()
    elif args.out is not None:
        raise UsageError("--out is only used with --port (receiving the instances ourselves)")
    progress = LiveProgress("C-MOVE", None, enabled=False if args.json else None)
    counter = _Counter(progress, limit, args.json)
    proposal = contexts.verification() + contexts.query_retrieve(
        find=False, get=False, models=(args.model,)
    )
    try:
        async with connect_with(args, _with_syntaxes(proposal, args)) as assoc:
            check_identity_response(args, assoc)
            op = assoc.move(
                query,
                destination,
                model=args.model,
                receiver=scp,
                check=False,
                on_progress=counter,
            )
            result = await _run_retrieve(op, counter)
    finally:
        if scp is not None:
            scp.close()
            await scp.wait_closed()
    where = f"; {len(result.instances)} received in {args.out}" if scp is not None else ""
    _report(args, f"C-MOVE to {destination}", result, progress, where)
    ok = result.ok and (scp is None or len(result.instances) >= result.completed)
    return EXIT_OK if ok or (limit is not None and result.cancelled) else EXIT_FAILED
