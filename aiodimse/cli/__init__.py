"""Command-line tools like DCMTK's (``aiodimse echo|store|find|get|move|storescp|qrscp``),
bulk retrieval jobs (``retrieve``, ``worker``), probes of other implementations (``fuzz``,
``conformance``) and the ``demo``.

Each exits 0 only on success. Bad input (an unreachable host, a refused association, an
unknown ``-k`` keyword, a missing file) gets one clear line on stderr, not a traceback;
``-d`` shows the debug log (and tracebacks) for when you need them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import AiodimseError
from . import conformance, fuzz, retrieve, servers, tools, worker
from .common import EXIT_FAILED, UsageError, log, setup_logging
from .servers import load_qrscp_config

__all__ = ["build_parser", "load_qrscp_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiodimse",
        description="DICOM networking on asyncio: DIMSE-C tools and an embedded archive.",
    )
    parser.add_argument("--version", action="version", version=f"aiodimse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tools.register(sub)
    servers.register(sub)
    retrieve.register(sub)
    worker.register(sub)
    fuzz.register(sub)
    conformance.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    try:
        return int(asyncio.run(args.run(args)))
    except UsageError as exc:
        parser.error(str(exc))  # exits 2 with the usage line
    except KeyboardInterrupt:
        return 130
    except (AiodimseError, OSError, ValueError) as exc:
        if args.debug:
            log.exception("failed")
        print(f"aiodimse {args.command}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED


def describe_error(exc: BaseException) -> str:
    """One line for a failure: the file and the OS's words for an OSError."""
    if isinstance(exc, OSError) and not isinstance(exc, AiodimseError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)
