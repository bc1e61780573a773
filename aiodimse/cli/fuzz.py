"""The `fuzz` command: stateful fuzzing of an SCP, replay of a saved finding, or (with
``--listen``) a hostile SCP for testing SCUs."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..fuzz.engine import FuzzReport, load_replay, replay, run
from ..fuzz.hostile import serve_hostile
from ..fuzz.safety import OWN_HOST_FLAG
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_common,
    ae_title,
    port_number,
    stop_on_signals,
)

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: str) -> float:
    """argparse type: ``90``, ``30s``, ``10m``, ``1h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a duration such as 90s, 10m, 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return number


def register(sub: Any) -> None:
    """Add the `fuzz` command to the sub-command parsers."""
    p = sub.add_parser(
        "fuzz",
        help="stateful fuzzing of an SCP (or, with --listen, a hostile SCP for SCUs)",
        description="Fuzz a DICOM SCP: each case (seed, index) associates, sends DIMSE "
        "messages and releases, with one layer mutated (PDU, ACSE, P-DATA, DIMSE, "
        "identifier, sequence); crashes, hangs, leaks (--pid) and PS3.8/PS3.7 violations "
        "are grouped by signature, minimised and saved as replay files (--out). Exit 0 "
        "when nothing was found, 1 when something was. --replay FILE sends a saved case "
        "again (exit 0 if it reproduces, 1 if not). Only loopback hosts unless "
        f"{OWN_HOST_FLAG}.",
    )
    p.add_argument("host", nargs="?", help="peer host name or address")
    p.add_argument("port", nargs="?", type=port_number, help="peer port")
    p.add_argument("--aet", "-aet", type=ae_title, default="AIODIMSE-FUZZ", help="our AE title")
    p.add_argument("--aec", "-aec", type=ae_title, default="ANY-SCP", help="the peer's AE title")
    p.add_argument("--seed", type=int, default=1, help="the run's seed (default 1)")
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--cases", type=positive_int, help="number of cases (default 1000)")
    bound.add_argument("--time", type=duration, help="run for this long: 90s, 10m, 1h")
    p.add_argument("--out", type=Path, help="directory for the replay files of findings")
    p.add_argument("--pid", type=int, help="the target's process ID: turns on the leak oracle")
    p.add_argument(
        "--hang-timeout",
        type=float,
        default=10.0,
        help="seconds an owed answer may take before it is a hang (default 10)",
    )
    p.add_argument("--no-minimise", action="store_true", help="save findings as found")
    p.add_argument("--json", action="store_true", help="one JSON object per event line")
    p.add_argument("--replay", type=Path, metavar="FILE", help="send a replay file again")
    p.add_argument(
        "--listen",
        type=port_number,
        metavar="PORT",
        help="play a hostile SCP on this port (for testing SCUs) instead of fuzzing one",
    )
    p.add_argument(
        OWN_HOST_FLAG,
        dest="i_own_this_host",
        action="store_true",
        help="allow a non-loopback target (only a system that is yours to test)",
    )
    add_common(p)
    p.set_defaults(run=cmd_fuzz)


def _printer(as_json: bool) -> Any:
    def emit(event: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(event), flush=True)
        elif event.get("event") == "finding":
            print(
                f"finding: {event['kind']}: {event['detail']} (case {event['seed']}/"
                f"{event['index']}, {event['case']})",
                flush=True,
            )

    return emit


async def cmd_fuzz(args: argparse.Namespace) -> int:
    if not args.hang_timeout > 0:
        raise UsageError(f"--hang-timeout {args.hang_timeout}: must be positive")
    if args.listen is not None:
        return await _listen(args)
    if args.host is None or args.port is None:
        raise UsageError("HOST and PORT are needed (or --listen PORT)")
    if args.replay is not None:
        return await _replay(args)
    stop = stop_on_signals()
    try:
        report: FuzzReport = await run(
            args.host,
            args.port,
            aec=args.aec,
            aet=args.aet,
            seed=args.seed,
            cases=args.cases,
            duration=args.time,
            out=args.out,
            pid=args.pid,
            i_own_this_host=args.i_own_this_host,
            hang_timeout=args.hang_timeout,
            minimise=not args.no_minimise,
            on_event=_printer(args.json),
            stop=stop,
        )
    except ValueError as exc:
        print(f"aiodimse fuzz: {exc}", file=sys.stderr)
        return EXIT_USAGE if "loopback" in str(exc) else EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print(report.summary(), flush=True)
    return EXIT_OK if report.ok else EXIT_FAILED


async def _replay(args: argparse.Namespace) -> int:
    try:
        doc = load_replay(args.replay).doc
        ok, records = await replay(
            args.replay,
            args.host,
            args.port,
            pid=args.pid,
            i_own_this_host=args.i_own_this_host,
            hang_timeout=args.hang_timeout,
        )
    except ValueError as exc:
        print(f"aiodimse fuzz: {exc}", file=sys.stderr)
        return EXIT_USAGE if "loopback" in str(exc) else EXIT_FAILED
    finding = doc["finding"]
    verdict = "reproduces" if ok else "does not reproduce"
    if args.json:
        steps = [
            {"step": r.step.label, "answers": [a.to_json() for a in r.answers]} for r in records
        ]
        print(json.dumps({"event": "replay", "file": str(args.replay), "reproduces": ok,
                          "finding": finding, "steps": steps}))  # fmt: skip
    else:
        for r in records:
            print(f"  {r.step.label}: {r.came_back()}")
        print(f"{args.replay}: {finding['kind']} ({finding['detail']}): {verdict}")
    return EXIT_OK if ok else EXIT_FAILED


async def _listen(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    report = await serve_hostile(
        "127.0.0.1",
        args.listen,
        ae_title=args.aet if args.aet != "AIODIMSE-FUZZ" else "HOSTILE",
        seed=args.seed,
        cases=args.cases,
        duration=args.time,
        out=args.out,
        on_event=_printer(args.json) if args.json else None,
        stop=stop,
    )
    if args.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print(report.summary(), flush=True)
    return EXIT_OK
