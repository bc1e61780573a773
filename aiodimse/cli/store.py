"""``aiodimse store``: C-STORE files and folders (like DCMTK's storescu), over one or more
associations, each with up to ``--window`` operations outstanding (PS3.7 D.3.3.3)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import contexts, uids
from ..dicomfile import NotDicomError, read_part10
from ..errors import AiodimseError, StatusError
from ..ul.negotiation import MAX_CONTEXTS, ContextRequest
from .common import EXIT_FAILED, EXIT_OK, UsageError, add_scu_options, log
from .options import (
    add_client_security,
    add_propose_options,
    check_identity_response,
    connect_with,
    proposed_syntaxes,
    security_from,
)
from .progress import LiveProgress, emit

EXAMPLES = """examples:
  aiodimse store pacs 104 --aec PACS study/ -r
  aiodimse store pacs 104 --aec PACS study/ -r --window 8 --associations 4
  aiodimse store pacs 2762 --aec PACS ct.dcm +tls me.key me.pem +cf ca.pem
  aiodimse store pacs 104 --aec PACS ct.dcm -xi --user bob --password-env PACS_PW
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "store",
        help="C-STORE files or folders (like storescu)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        prefix_chars="-+",
    )
    p.set_defaults(run=cmd_store)
    add_scu_options(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument(
        "--window",
        type=_positive,
        default=1,
        metavar="N",
        help="up to N C-STOREs outstanding on each association (asynchronous operations"
        " window, PS3.7 D.3.3.3; default 1: one at a time)",
    )
    p.add_argument(
        "--associations",
        type=_positive,
        default=1,
        metavar="N",
        help="send over N associations at once (default 1)",
    )
    p.add_argument(
        "--repeat", type=_positive, default=1, metavar="N", help="send everything N times"
    )
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    add_propose_options(p)
    add_client_security(p)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: must be 1 or more")
    return n


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


def storage_proposal(
    described: dict[Path, tuple[str, str]], syntaxes: tuple[str, ...] | None
) -> list[ContextRequest]:
    """The contexts for these files: each file's own syntax (sent as it is) by default;
    with a transfer-syntax option, one context per SOP class proposing those syntaxes in
    that order, as DCMTK's storescu does (the file is converted to what is accepted)."""
    if syntaxes is None:
        return contexts.verification() + contexts.for_instances(described.values())
    classes = list(dict.fromkeys(sop for sop, _ in described.values()))
    groups = [syntaxes]
    first = uids.transfer_syntax(syntaxes[0])
    if first is not None and first.is_encapsulated and len(syntaxes) > 1:
        # We never compress: a compressed syntax gets a context of its own (files already
        # in it go as they are), the uncompressed ones another, proposed first so that it
        # is the one a file in neither syntax is converted for.
        groups = [syntaxes[1:], syntaxes[:1]]
    if len(classes) * len(groups) + 1 > MAX_CONTEXTS:
        raise UsageError(f"{len(classes)} SOP classes need more than {MAX_CONTEXTS} contexts")
    return contexts.verification() + [ContextRequest(c, g) for c in classes for g in groups]


def _first(error: BaseException) -> BaseException:
    """The first failure inside (nested) task groups: the one line the user sees."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def cmd_store(args: argparse.Namespace) -> int:
    described: dict[Path, tuple[str, str]] = {}
    sizes: dict[Path, int] = {}
    skipped = missing = unreadable = 0
    for path in iter_files(args.paths, args.recursive):
        if not path.exists():
            print(f"aiodimse store: {path}: no such file", file=sys.stderr)
            missing += 1
            continue
        try:
            info = read_part10(path)
            sizes[path] = info.file_size
        except NotDicomError:
            skipped += 1
            log.info("skipping %s: not a DICOM file", path)
            continue
        except OSError as exc:
            print(f"aiodimse store: {path}: {exc.strerror or exc}", file=sys.stderr)
            unreadable += 1
            continue
        described[path] = (info.sop_class_uid, info.transfer_syntax_uid)
    if not described:
        if skipped:
            print(f"aiodimse store: nothing to send ({skipped} non-DICOM skipped)", file=sys.stderr)
        return EXIT_FAILED
    try:
        proposal = storage_proposal(described, proposed_syntaxes(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    security_from(args)  # a bad TLS or identity option is a usage error before connecting
    work: asyncio.Queue[Path] = asyncio.Queue()
    for _ in range(args.repeat):
        for path in described:
            work.put_nowait(path)
    progress = LiveProgress("C-STORE", work.qsize(), enabled=None if not args.json else False)
    failures: list[str] = []

    async def sender(assoc: Any) -> None:
        while True:
            try:
                path = work.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                status = await assoc.store(path)
            except (StatusError, AiodimseError, OSError) as exc:
                if not assoc.is_established:
                    raise
                progress.step(failed=True)
                failures.append(f"{path}: {exc}")
                if args.json:
                    emit("stored", path=str(path), ok=False, error=str(exc))
                else:
                    progress.note(f"aiodimse store: {path}: {exc}")
                continue
            progress.step(size=sizes[path])
            log.info("%s: %s", path, status)
            if args.json:
                emit("stored", path=str(path), ok=True, status=f"{status.code:04X}")

    async def association() -> None:
        async with connect_with(args, proposal, window=args.window) as assoc:
            check_identity_response(args, assoc)
            if args.window > 1:
                # PS3.7 D.3.3.3: what the peer granted (0 = unlimited); 1 = one at a time.
                granted = assoc.negotiated.max_invoked
                log.info("#%d operations window: %s outstanding", assoc.id, granted or "any")
            async with asyncio.TaskGroup() as group:
                for _ in range(args.window):
                    group.create_task(sender(assoc))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(args.associations):
                group.create_task(association())
    except BaseExceptionGroup as group_error:
        progress.close()
        raise _first(group_error) from None
    progress.close()
    summary = progress.summary()
    extra = (f", {missing} missing" if missing else "") + (
        f", {unreadable} unreadable" if unreadable else ""
    )
    if args.json:
        emit(
            "summary",
            sent=summary["done"],
            failed=len(failures),
            skipped=skipped,
            missing=missing,
            unreadable=unreadable,
            seconds=summary["seconds"],
            per_second=summary["per_second"],
            mib_per_second=summary["mib_per_second"],
        )
    else:
        print(
            f"sent {summary['done']}, failed {len(failures)}, skipped {skipped} non-DICOM{extra}"
            f" ({summary['per_second']:,.0f}/s, {summary['mib_per_second']:.1f} MiB/s,"
            f" {summary['seconds']:.2f} s)"
        )
    return EXIT_OK if not failures and not missing and not unreadable else EXIT_FAILED
