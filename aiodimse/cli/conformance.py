"""The `conformance` command: the known-answer battery against an SCP, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..fuzz.conformance import check, check_ids, format_table
from ..fuzz.safety import OWN_HOST_FLAG, check_target
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_common,
    ae_title,
    port_number,
)


def register(sub: Any) -> None:
    """Add the `conformance` command to the sub-command parsers."""
    p = sub.add_parser(
        "conformance",
        help="known-answer checks of an SCP against PS3.8 / PS3.7 (table or JSON)",
        description="Run a fixed battery of known-answer checks against a DICOM SCP: each "
        "sends one thing the standard gives a definite answer to (PS3.8 state table, "
        "negotiation, DIMSE) and reports pass, fail, n/a or inconclusive with the clause. "
        "Exit 0 when no check failed, 1 when one did. Only loopback hosts unless "
        f"{OWN_HOST_FLAG}.",
    )
    p.add_argument("host", help="peer host name or address")
    p.add_argument("port", type=port_number, help="peer port")
    p.add_argument("--aet", "-aet", type=ae_title, default="AIODIMSE", help="our AE title")
    p.add_argument(
        "--aec", "-aec", type=ae_title, default="ANY-SCP", help="the peer's AE title (called AE)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each answer (default 5); a check takes a few at most",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help=f"run only this check (repeatable): {', '.join(check_ids())}",
    )
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument(
        OWN_HOST_FLAG,
        dest="i_own_this_host",
        action="store_true",
        help="allow a non-loopback target (only a system that is yours to test)",
    )
    add_common(p)
    p.set_defaults(run=cmd_conformance)


async def cmd_conformance(args: argparse.Namespace) -> int:
    try:
        check_target(args.host, i_own_this_host=args.i_own_this_host)
    except ValueError as exc:
        print(f"aiodimse conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout}: must be positive")
    unknown = sorted(set(args.only) - set(check_ids()))
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: no such check")
    report = await check(
        args.host, args.port, aec=args.aec, aet=args.aet, timeout=args.timeout, only=args.only
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_table(report))
    return EXIT_FAILED if report.failed else EXIT_OK
