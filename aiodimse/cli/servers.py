"""The server commands: storescp, qrscp (the embedded archive) and the demo."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from ..config import DEFAULT_HOST
from ..server import StorageServer
from ..sinks import DirectorySink
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


def register(sub: Any) -> None:
    """Add the server commands (and the demo) to the sub-command parsers."""
    p = sub.add_parser("storescp", help="a storage SCP writing Part 10 files (like storescp)")
    p.set_defaults(run=cmd_storescp)
    p.add_argument("--port", type=port_number, required=True, help="port to listen on")
    p.add_argument("--out", "-od", type=Path, required=True, help="output folder")
    p.add_argument("--aet", type=ae_title, default="STORESCP", help="our AE title")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for every interface)",
    )
    p.add_argument("--fsync", action="store_true", help="flush each file to disk before Success")
    add_common(p)

    p = sub.add_parser("qrscp", help="the embedded archive: storage + query/retrieve SCP")
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
    add_common(p)

    p = sub.add_parser("demo", help="run the archive and every DIMSE-C operation against it")
    p.set_defaults(run=cmd_demo)
    p.add_argument("--instances", type=int, default=12, help="instances in the demo study")
    p.add_argument("--keep", type=Path, help="keep the demo's files in this folder")
    add_common(p)


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
    await serve_until_signalled(server)
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
    from ..archive import ArchiveServer

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
        await serve_until_signalled(server)
    finally:
        server.archive.close()
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here for start-up time, as in cmd_qrscp (the demo needs the archive).
    from ..demo import run_demo

    return await run_demo(instances=args.instances, keep=args.keep)
