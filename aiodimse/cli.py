"""Command-line tools like DCMTK's: ``aiodimse echo|store|find|get|move|storescp|qrscp|demo``.

Each exits 0 only on success. Bad input (an unreachable host, a refused association, an
unknown ``-k`` keyword, a missing file) gets one clear line on stderr, not a traceback;
``-d`` shows the debug log (and tracebacks) for when you need them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset, config
from pydicom.datadict import keyword_for_tag

from . import __version__, contexts
from .association import connect
from .config import DEFAULT_HOST, Timeouts
from .dicomfile import NotDicomError, read_part10
from .errors import AiodimseError, StatusError, check_ae_title
from .query import parse_key, vr_of
from .server import StorageServer
from .sinks import DirectorySink
from .ul.negotiation import ContextRequest

log = logging.getLogger("aiodimse.cli")

#: Exit codes: 0 success, 1 the operation failed, 2 bad command line.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Keys returned by default at each level when the query names none (besides the level).
DEFAULT_RETURN_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": (
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "StudyInstanceUID",
    ),
    "SERIES": (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
    ),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"),
}
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class UsageError(Exception):
    """A bad command-line value (exit code 2)."""


# ---------------------------------------------------------------------------------------
# argument parsing


def _ae(value: str) -> str:
    try:
        return check_ae_title(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def _destination(value: str) -> tuple[str, tuple[str, int]]:
    ae, sep, address = value.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host:
        raise argparse.ArgumentTypeError(f"{value!r}: expected AET=host:port")
    return _ae(ae), (host, _port(port))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument(
        "-d", "--debug", action="store_true", help="debug log: PDUs, negotiation, tracebacks"
    )


def _scu_options(parser: argparse.ArgumentParser, default_aec: str = "ANY-SCP") -> None:
    parser.add_argument("host", help="peer host name or address")
    parser.add_argument("port", type=_port, help="peer port")
    parser.add_argument("--aet", "-aet", type=_ae, default="AIODIMSE", help="our AE title")
    parser.add_argument(
        "--aec", "-aec", type=_ae, default=default_aec, help="the peer's AE title (called AE)"
    )
    parser.add_argument("--max-pdu", type=int, default=262144, help="our maximum PDU length")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)"
    )
    _common(parser)


def _query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="a query key as in DCMTK: -k PatientName=DOE*, -k StudyDate=20190101-, "
        "-k StudyInstanceUID (a return key)",
    )
    parser.add_argument(
        "--level",
        choices=["PATIENT", "STUDY", "SERIES", "IMAGE"],
        type=str.upper,
        help="query/retrieve level (default STUDY, or what -k QueryRetrieveLevel says)",
    )
    parser.add_argument(
        "--model",
        "-m",
        default="study",
        help="information model: study (Study Root), patient (Patient Root), psonly",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiodimse",
        description="DICOM networking on asyncio: DIMSE-C tools and an embedded archive.",
    )
    parser.add_argument("--version", action="version", version=f"aiodimse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("echo", help="C-ECHO: verify a peer (like echoscu)")
    _scu_options(p)
    p.add_argument("--repeat", type=int, default=1, help="number of C-ECHOs")

    p = sub.add_parser("store", help="C-STORE files or folders (like storescu)")
    _scu_options(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")

    p = sub.add_parser("find", help="C-FIND (like findscu)")
    _scu_options(p)
    _query_options(p)
    p.add_argument("--json", action="store_true", help="print the DICOM JSON model (PS3.18 F.2)")

    p = sub.add_parser("get", help="C-GET into a folder (like getscu)")
    _scu_options(p)
    _query_options(p)
    p.add_argument("--out", "-od", required=True, type=Path, help="output folder")

    p = sub.add_parser("move", help="C-MOVE, optionally receiving it ourselves (like movescu)")
    _scu_options(p)
    _query_options(p)
    p.add_argument("--dest", "-aem", type=_ae, help="move destination AE (default: --aet)")
    p.add_argument(
        "--port", dest="listen_port", type=_port, help="receive the instances on this port"
    )
    p.add_argument(
        "--host",
        dest="listen_host",
        default=DEFAULT_HOST,
        help=f"address to receive them on, with --port (default {DEFAULT_HOST};"
        " 0.0.0.0 for every interface)",
    )
    p.add_argument("--out", "-od", type=Path, help="folder for received instances (with --port)")

    p = sub.add_parser("storescp", help="a storage SCP writing Part 10 files (like storescp)")
    p.add_argument("--port", type=_port, required=True, help="port to listen on")
    p.add_argument("--out", "-od", type=Path, required=True, help="output folder")
    p.add_argument("--aet", type=_ae, default="STORESCP", help="our AE title")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument("--fsync", action="store_true", help="flush each file to disk before Success")
    _common(p)

    p = sub.add_parser("qrscp", help="the embedded archive: storage + query/retrieve SCP")
    p.add_argument("--port", type=_port, default=None, help="port to listen on (default 11112)")
    p.add_argument("--storage", type=Path, default=None, help="archive folder")
    p.add_argument("--aet", type=_ae, default=None, help="our AE title (default QRSCP)")
    p.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--dest",
        action="append",
        default=[],
        type=_destination,
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination (repeatable)",
    )
    p.add_argument("--config", type=Path, help="a TOML file with these settings")
    p.add_argument(
        "--allow", action="append", type=_ae, metavar="AET", help="only these calling AE titles"
    )
    p.add_argument("--max-associations", type=int, default=None)
    p.add_argument("--check-called-ae", action="store_true", help="refuse other called AEs")
    _common(p)

    p = sub.add_parser("demo", help="run the archive and every DIMSE-C operation against it")
    p.add_argument("--instances", type=int, default=12, help="instances in the demo study")
    p.add_argument("--keep", type=Path, help="keep the demo's files in this folder")
    _common(p)
    return parser


# ---------------------------------------------------------------------------------------
# helpers


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s: %(message)s"))
    root = logging.getLogger("aiodimse")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _timeouts(args: argparse.Namespace) -> Timeouts:
    t = float(args.timeout)
    return Timeouts(connect=t, acse=t, dimse=max(t, 60.0))


def _connect(args: argparse.Namespace, proposal: list[ContextRequest]) -> Any:
    """The association an SCU command asks for, from its common options."""
    return connect(
        args.host,
        args.port,
        calling_ae=args.aet,
        called_ae=args.aec,
        contexts=proposal,
        max_pdu=args.max_pdu,
        timeouts=_timeouts(args),
    )


def build_query(keys: Sequence[str], level: str | None) -> Dataset:
    """A query identifier from ``-k`` arguments (DCMTK syntax) and ``--level``."""
    ds = Dataset()
    for spec in keys:
        try:
            tag, value = parse_key(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        vr = vr_of(tag)
        # Matching values (ranges, wildcards) are not plain values: no VR warnings.
        with config.disable_value_validation():
            if vr == "UN":  # not in the dictionary (a private tag): sent as it is
                ds.add_new(tag, vr, value.encode("latin-1", "replace"))
            else:
                ds.add_new(tag, vr, [] if vr == "SQ" else value)
    if level is not None:
        ds.QueryRetrieveLevel = level
    elif "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = "STUDY"
    level_value = str(ds.QueryRetrieveLevel).upper()
    if level_value not in DEFAULT_RETURN_KEYS:
        raise UsageError(
            f"query/retrieve level {level_value!r} is not one of PATIENT/STUDY/SERIES/IMAGE"
        )
    ds.QueryRetrieveLevel = level_value
    unique = UNIQUE_KEYS[level_value]
    if unique not in ds:
        setattr(ds, unique, "")
    return ds


def _ensure_return_keys(ds: Dataset) -> Dataset:
    """Without any key but the level and its unique key, ask for the usual ones."""
    level = str(ds.QueryRetrieveLevel)
    named = {keyword_for_tag(e.tag) for e in ds} - {"QueryRetrieveLevel", UNIQUE_KEYS[level]}
    if not named:
        for keyword in DEFAULT_RETURN_KEYS[level]:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return ds


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


class _Progress:
    """A one-line progress counter, only on a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.done = 0

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            print(f"\r{self.label} [{bar}] {self.done}/{self.total}", end="", file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


# ---------------------------------------------------------------------------------------
# commands


async def cmd_echo(args: argparse.Namespace) -> int:
    async with _connect(args, contexts.verification()) as assoc:
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
    progress = _Progress(len(files), "C-STORE")
    async with _connect(args, proposal) as assoc:
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
    query = _ensure_return_keys(build_query(args.key, args.level))
    results: list[dict[str, Any]] = []
    count = 0
    async with _connect(
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
                print(_format_match(match), flush=True)
        status = matches.status
    if args.json:
        print(json.dumps(results, indent=2))
    print(f"C-FIND: {count} match(es), {status}", file=sys.stderr)
    return EXIT_OK


async def cmd_get(args: argparse.Namespace) -> int:
    query = build_query(args.key, args.level)
    sink = DirectorySink(args.out)
    async with _connect(args, contexts.for_get(models=(args.model,))) as assoc:
        result = await assoc.get(query, model=args.model, receiver=sink, check=False)
    print(f"C-GET: {result}; {len(result.instances)} file(s) in {args.out}")
    for uid in result.failed_instances:
        print(f"  failed: {uid}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_move(args: argparse.Namespace) -> int:
    query = build_query(args.key, args.level)
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
        async with _connect(
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


async def _serve_until_signalled(server: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this OS
            pass
    async with server:
        print(
            f"{server.ae_title} listening on {server.host}:{server.port} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await server.shutdown(timeout=5.0)


async def cmd_storescp(args: argparse.Namespace) -> int:
    server = StorageServer(
        DirectorySink(args.out, fsync=args.fsync), args.host, args.port, ae_title=args.aet
    )

    def show(instance: Any) -> None:
        log.info(
            "received %s from %s -> %s",
            instance.sop_instance_uid,
            instance.calling_ae,
            instance.path,
        )

    server.add_listener(show)
    await _serve_until_signalled(server)
    return EXIT_OK


def load_qrscp_config(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line settings over the TOML file's over the defaults."""
    settings: dict[str, Any] = {
        "port": 11112,
        "storage": None,
        "aet": "QRSCP",
        "host": DEFAULT_HOST,
        "destinations": {},
        "allow": None,
        "max_associations": 100,
        "check_called_ae": False,
    }
    if args.config is not None:
        try:
            with open(args.config, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise UsageError(f"--config {args.config}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"--config {args.config}: {exc}") from None
        for key in ("port", "storage", "aet", "host", "max_associations", "check_called_ae"):
            if key in data:
                settings[key] = data[key]
        if "allow" in data:
            settings["allow"] = list(data["allow"])
        for ae, address in dict(data.get("destinations", {})).items():
            try:
                settings["destinations"][ae] = _destination(f"{ae}={address}")[1]
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"--config {args.config}: destination {exc}") from None
    for key in ("port", "storage", "aet", "host", "max_associations"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.allow:
        settings["allow"] = args.allow
    if args.check_called_ae:
        settings["check_called_ae"] = True
    for ae, address in args.dest:
        settings["destinations"][ae] = address
    if settings["storage"] is None:
        raise UsageError('qrscp needs --storage DIR (or storage = "DIR" in --config)')
    return settings


async def cmd_qrscp(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the archive (sqlite3, the index) is only needed by
    # this command, and every other command starts faster without it.
    from .archive import ArchiveServer

    s = load_qrscp_config(args)
    server = ArchiveServer(
        Path(s["storage"]),
        ae_title=s["aet"],
        port=int(s["port"]),
        host=s["host"],
        destinations=s["destinations"],
        allowed_calling=s["allow"],
        max_associations=int(s["max_associations"]),
        check_called_ae=bool(s["check_called_ae"]),
    )
    for ae, (host, port) in sorted(s["destinations"].items()):
        log.info("move destination %s = %s:%d", ae, host, port)
    try:
        await _serve_until_signalled(server)
    finally:
        server.archive.close()
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here for start-up time, as in cmd_qrscp (the demo needs the archive).
    from .demo import run_demo

    return await run_demo(instances=args.instances, keep=args.keep)


COMMANDS = {
    "echo": cmd_echo,
    "store": cmd_store,
    "find": cmd_find,
    "get": cmd_get,
    "move": cmd_move,
    "storescp": cmd_storescp,
    "qrscp": cmd_qrscp,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    command = COMMANDS[args.command]
    try:
        return asyncio.run(command(args))
    except UsageError as exc:
        parser.error(str(exc))  # exits 2 with the usage line
    except KeyboardInterrupt:
        return 130
    except (AiodimseError, OSError, ValueError) as exc:
        if args.debug:
            log.exception("failed")
        print(f"aiodimse {args.command}: {_describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, AiodimseError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
