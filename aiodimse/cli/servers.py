"""The server commands: storescp, qrscp (the embedded archive) and the demo, with DICOM
TLS, user identity (a hashed credentials file), accepted transfer syntaxes, the
asynchronous operations window; storescp also with file layouts and reception hooks."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..config import DEFAULT_HOST
from ..results import StoredInstance
from ..server import StorageServer
from .common import (
    EXIT_OK,
    UsageError,
    add_common,
    ae_address,
    ae_title,
    log,
    port_number,
    serve_until_signalled,
)
from .credentials import Credentials, read_password
from .hooks import HookRunner, StudyTracker
from .layout import SORT_ON_STUDY, LayoutSink
from .options import accepted_syntaxes, add_accept_options, add_server_tls, server_ssl
from .progress import emit
from .supervisor import positive, supervise, worker_count

_RAW = argparse.RawDescriptionHelpFormatter

STORESCP_EXAMPLES = """examples:
  aiodimse storescp --port 11113 --out incoming/
  aiodimse storescp --port 11113 --out incoming/ --sort-on-study \\
      --exec-on-eostudy 'dcm2nii #p' --eostudy-timeout 30
  aiodimse storescp --port 2762 --out incoming/ +tls scp.key scp.pem +cf ca.pem
  aiodimse storescp --port 11113 --out incoming/ --filepath '{0020000D}/{0020000E}/{00080018}'
  aiodimse storescp --port 11113 --out incoming/ --workers 4    # four processes, one port
"""

QRSCP_EXAMPLES = """examples:
  aiodimse qrscp --port 11112 --storage archive/ --dest WS=10.0.0.5:11113
  aiodimse qrscp --add-user users.txt bob            # asks for bob's passcode
  aiodimse qrscp --port 11112 --storage archive/ --require-identity users.txt
  aiodimse qrscp --port 2762 --storage archive/ +tls scp.key scp.pem +cf ca.pem
  aiodimse qrscp --port 11112 --storage archive/ --workers 4 --max-associations 100
"""


def _add_server_security(p: argparse.ArgumentParser) -> None:
    """TLS, identity, accepted syntaxes and the window: shared by storescp and qrscp."""
    group = p.add_argument_group("user identity (PS3.7 D.3.3.7)")
    group.add_argument(
        "--require-identity",
        metavar="FILE",
        type=Path,
        help="refuse associations without a user name and passcode listed in FILE",
    )
    group.add_argument(
        "--add-user",
        nargs=2,
        metavar=("FILE", "NAME"),
        help="add NAME (passcode from the terminal or stdin) to the credentials FILE, then exit",
    )
    p.add_argument(
        "--async-window",
        type=int,
        default=None,
        metavar="N",
        help="grant up to N outstanding operations (PS3.7 D.3.3.3) to clients that ask",
    )
    p.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="N processes accepting on one port (SO_REUSEPORT, Linux), supervised: one that"
        " dies is replaced; limits such as --max-associations are split among them"
        " (default 1: this process alone)",
    )
    p.set_defaults(worker_slot=None)
    add_accept_options(p)
    add_server_tls(p)


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """The Server keywords for the security options (TLS, identity, syntaxes, window)."""
    options: dict[str, Any] = {}
    ctx = server_ssl(args)
    if ctx is not None:
        options["ssl"] = ctx
    if args.require_identity is not None:
        options["user_identity"] = Credentials.load(args.require_identity).check
        options["require_user_identity"] = True
    syntaxes = accepted_syntaxes(args)
    if syntaxes is not None:
        options["storage_transfer_syntaxes"] = syntaxes
    if args.async_window is not None:
        if args.async_window < 1:
            raise UsageError(f"--async-window {args.async_window}: must be 1 or more")
        options["async_window"] = (args.async_window, args.async_window)
    return options


def _add_user(args: argparse.Namespace) -> int:
    path, name = args.add_user
    Credentials(path).add(name, read_password(f"passcode for {name}: "))
    print(f"{name} added to {path}")
    return EXIT_OK


def _add_hook_options(p: argparse.ArgumentParser) -> None:
    """The reception and end-of-study commands (like DCMTK storescp -xcr / -xcs)."""
    hooks = p.add_argument_group(
        "hooks (placeholders #p/{dir}, #f/{path}, #a/{ae}, #c/{called}, #s/{study},"
        " #n/{count}; see --help of the README)"
    )
    hooks.add_argument(
        "--exec-on-reception",
        "-xcr",
        metavar="CMD",
        help="run CMD for each received file (#f the file, #p its folder)",
    )
    hooks.add_argument(
        "--exec-on-eostudy",
        "-xcs",
        metavar="CMD",
        help="run CMD when a study has arrived (#s its UID, #n its instances; #p the study"
        " folder with storescp --sort-on-study or a --filepath starting with the study UID)",
    )
    hooks.add_argument(
        "--eostudy-timeout",
        "-tos",
        type=float,
        default=60.0,
        metavar="S",
        help="a study also ends after S seconds without an instance of it (default 60)",
    )
    hooks.add_argument(
        "--exec-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="kill a hook command after S seconds (default 300)",
    )
    hooks.add_argument(
        "--exec-concurrency",
        type=int,
        default=4,
        metavar="N",
        help="run at most N hook commands at once (default 4)",
    )
    hooks.add_argument(
        "--exec-shell",
        action="store_true",
        help="run the commands with /bin/sh -c, values shell-quoted (default: no shell,"
        " the command split into arguments as a shell would)",
    )


def register(sub: Any) -> None:
    """Add the server commands (and the demo) to the sub-command parsers."""
    p = sub.add_parser(
        "storescp",
        help="a storage SCP writing Part 10 files (like storescp)",
        epilog=STORESCP_EXAMPLES,
        formatter_class=_RAW,
        prefix_chars="-+",
    )
    p.set_defaults(run=cmd_storescp)
    p.add_argument("--port", type=port_number, help="port to listen on (required)")
    p.add_argument("--out", "-od", type=Path, help="output folder (required)")
    p.add_argument("--aet", type=ae_title, default="STORESCP", help="our AE title")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument("--fsync", action="store_true", help="flush each file to disk before Success")
    p.add_argument(
        "--allow",
        action="append",
        type=ae_title,
        metavar="AET",
        help="only these calling AE titles (repeatable; default: anyone)",
    )
    p.add_argument("--check-called-ae", action="store_true", help="refuse other called AEs")
    p.add_argument("--json", action="store_true", help="one JSON event per received instance")
    p.add_argument(
        "--max-associations",
        type=int,
        default=100,
        metavar="N",
        help="concurrent associations, at most (default 100; with --workers, in all)",
    )
    layout = p.add_argument_group("file layout (like DCMTK -su / -fe, dcm4che --filepath)")
    where = layout.add_mutually_exclusive_group()
    where.add_argument(
        "--sort-on-study",
        "-su",
        action="store_true",
        help="one folder per study: OUT/<StudyInstanceUID>/<SOPInstanceUID>.dcm",
    )
    where.add_argument(
        "--filepath",
        metavar="PATTERN",
        help="file path under OUT from {GGGGEEEE} or {Keyword} fields, e.g."
        " '{0020000D}/{0020000E}/{00080018}' (UIDs checked; '..' refused)",
    )
    layout.add_argument(
        "--filename-extension",
        "-fe",
        default=".dcm",
        metavar="EXT",
        help="appended to every file name (default .dcm)",
    )
    _add_hook_options(p)
    _add_server_security(p)
    add_common(p)

    p = sub.add_parser(
        "qrscp",
        help="the embedded archive: storage + query/retrieve SCP",
        epilog=QRSCP_EXAMPLES,
        formatter_class=_RAW,
        prefix_chars="-+",
    )
    p.set_defaults(run=cmd_qrscp)
    p.add_argument(
        "--port", type=port_number, default=None, help="port to listen on (default 11112)"
    )
    p.add_argument("--storage", type=Path, default=None, help="archive folder")
    p.add_argument("--aet", type=ae_title, default=None, help="our AE title (default QRSCP)")
    p.add_argument(
        "--host",
        default=None,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--dest",
        action="append",
        default=[],
        type=ae_address,
        metavar="AET=HOST:PORT",
        help="a C-MOVE destination (repeatable)",
    )
    p.add_argument("--config", type=Path, help="a TOML file with these settings")
    p.add_argument(
        "--allow",
        action="append",
        type=ae_title,
        metavar="AET",
        help="only these calling AE titles",
    )
    p.add_argument("--max-associations", type=int, default=None)
    p.add_argument("--check-called-ae", action="store_true", help="refuse other called AEs")
    p.add_argument(
        "--move-window",
        type=int,
        default=1,
        metavar="N",
        help="propose an asynchronous operations window of N on C-MOVE sub-associations, so"
        " that up to N sub-operations are outstanding (default 1: none proposed; some SCPs"
        " drop associations that offer one)",
    )
    _add_hook_options(p)
    _add_server_security(p)
    add_common(p)

    p = sub.add_parser("demo", help="run the archive and every DIMSE-C operation against it")
    p.set_defaults(run=cmd_demo)
    p.add_argument("--instances", type=int, default=12, help="instances in the demo study")
    p.add_argument("--keep", type=Path, help="keep the demo's files in this folder")
    add_common(p)


def _command(text: str | None, shell: bool) -> list[str] | None:
    """A hook's command line: split into arguments, or kept whole for ``/bin/sh``."""
    if text is None:
        return None
    if shell:
        if not text.strip():
            raise UsageError("a hook command is empty")
        return [text]
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"hook command {text!r}: {exc}") from None
    if not argv:
        raise UsageError("a hook command is empty")
    return argv


async def cmd_storescp(args: argparse.Namespace) -> int:
    if args.add_user:
        return _add_user(args)
    if args.port is None or args.out is None:
        raise UsageError("storescp needs --port and --out")
    pattern = SORT_ON_STUDY if args.sort_on_study else args.filepath
    extension = args.filename_extension
    if extension and ("/" in extension or "\\" in extension):
        raise UsageError(f"--filename-extension {extension!r}: no path separators")
    try:
        sink = LayoutSink(args.out, pattern, extension=extension, fsync=args.fsync)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    on_reception = _command(args.exec_on_reception, args.exec_shell)
    on_study = _command(args.exec_on_eostudy, args.exec_shell)
    security = _security(args)  # checked here, before any worker starts
    if args.workers > 1:
        if on_study is not None:
            raise UsageError(
                "--exec-on-eostudy cannot be used with --workers: the associations of one"
                " study may go to different workers"
            )
        return await supervise(args, args.host, args.port, args.aet, args.max_associations)
    server = StorageServer(
        sink,
        args.host,
        args.port,
        ae_title=args.aet,
        allowed_calling=args.allow,
        check_called_ae=args.check_called_ae,
        max_associations=positive(args.max_associations, "--max-associations"),
        reuse_port=args.worker_slot is not None,
        **security,
    )

    def show(instance: StoredInstance) -> None:
        log.info(
            "received %s from %s -> %s",
            instance.sop_instance_uid,
            instance.calling_ae,
            instance.path,
        )
        if args.json:
            emit(
                "received",
                sop_instance_uid=instance.sop_instance_uid,
                sop_class_uid=instance.sop_class_uid,
                transfer_syntax=instance.transfer_syntax,
                calling_ae=instance.calling_ae,
                path=str(instance.path),
            )

    server.add_listener(show)
    async with _hooks(args, server, on_reception, on_study):
        await serve_until_signalled(server)
    return EXIT_OK


@contextlib.asynccontextmanager
async def _hooks(
    args: argparse.Namespace,
    server: Any,
    on_reception: list[str] | None,
    on_study: list[str] | None,
) -> AsyncIterator[None]:
    """The reception and end-of-study commands, listening to ``server`` (storescp's or
    the archive's) while it serves; the commands still running are given a moment at
    the end."""
    if on_reception is None and on_study is None:
        yield
        return
    runner = HookRunner(
        concurrency=args.exec_concurrency, timeout=args.exec_timeout, shell=args.exec_shell
    )
    tracker = StudyTracker(
        runner,
        called_ae=server.ae_title,
        on_reception=on_reception,
        on_study=on_study,
        idle=args.eostudy_timeout,
        associations=lambda: list(server.associations),
    )
    server.add_listener(tracker)
    try:
        yield
    finally:
        tracker.close()
        await runner.drain(timeout=min(args.exec_timeout, 30.0))


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
                settings["destinations"][ae] = ae_address(f"{ae}={address}")[1]
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
    from ..archive import Archive, ArchiveServer

    if args.add_user:
        return _add_user(args)
    s = load_qrscp_config(args)
    security = _security(args)  # checked here, before any worker starts
    total = positive(int(s["max_associations"]), "--max-associations")
    on_reception = _command(args.exec_on_reception, args.exec_shell)
    on_study = _command(args.exec_on_eostudy, args.exec_shell)
    if args.workers > 1:
        if on_study is not None:
            raise UsageError(
                "--exec-on-eostudy cannot be used with --workers: the associations of one"
                " study may go to different workers"
            )
        # The index is created (schema, WAL) once, here, before the workers open it.
        Archive(Path(s["storage"])).close()
        return await supervise(args, s["host"], int(s["port"]), s["aet"], total)
    server = ArchiveServer(
        Path(s["storage"]),
        ae_title=s["aet"],
        port=int(s["port"]),
        host=s["host"],
        destinations=s["destinations"],
        allowed_calling=s["allow"],
        max_associations=total,
        check_called_ae=bool(s["check_called_ae"]),
        reuse_port=args.worker_slot is not None,
        move_window=positive(args.move_window, "--move-window"),
        **security,
    )
    for ae, (host, port) in sorted(s["destinations"].items()):
        log.info("move destination %s = %s:%d", ae, host, port)
    try:
        async with _hooks(args, server, on_reception, on_study):
            await serve_until_signalled(server)
    finally:
        server.archive.close()
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here for start-up time, as in cmd_qrscp (the demo needs the archive).
    from ..demo import run_demo

    return await run_demo(instances=args.instances, keep=args.keep)
