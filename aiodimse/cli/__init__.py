"""Command-line tools like DCMTK's (``aiodimse echo|store|find|get|move|storescp|qrscp``),
bulk retrieval jobs (``retrieve``), probes of other implementations (``fuzz``,
``conformance``) and the ``demo``.

Each exits 0 only on success. Bad input (an unreachable host, a refused association, an
unknown ``-k`` keyword, a missing file) gets one clear line on stderr, not a traceback;
``-d`` shows the debug log (and tracebacks) for when you need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import AiodimseError
from .common import EXIT_FAILED, UsageError, log, setup_logging

if TYPE_CHECKING:
    from .servers import load_qrscp_config

__all__ = ["build_parser", "load_qrscp_config", "main"]

#: The modules that register the commands, in ``--help`` order, and the commands of each.
#: ``aiodimse echo`` imports only the module of ``echo`` (start-up time: the servers, the
#: jobs and the fuzzer pull in pydicom, sqlite3 and more that an echo never needs).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "tools": ("echo", "store", "find", "get", "move"),
    "servers": ("storescp", "qrscp", "demo"),
    "retrieve": ("retrieve",),
    "worker": ("worker",),
    "fuzz": ("fuzz",),
    "conformance": ("conformance",),
}
_MODULE_OF = {command: module for module, names in COMMAND_MODULES.items() for command in names}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``aiodimse`` parser; with ``commands``, only the modules registering those are
    imported (an unknown name gets every command, so argparse can say what exists)."""
    parser = argparse.ArgumentParser(
        prog="aiodimse",
        description="DICOM networking on asyncio: DIMSE-C tools and an embedded archive.",
    )
    parser.add_argument("--version", action="version", version=f"aiodimse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if commands is None else {_MODULE_OF.get(c) for c in commands}
    for name in COMMAND_MODULES:
        if wanted is None or None in wanted or name in wanted:
            # Each command module (and what it imports) loads only when its commands are
            # wanted: this is what keeps `aiodimse echo` fast to start.
            module = importlib.import_module(f".{name}", __name__)
            module.register(sub)
    return parser


def __getattr__(name: str) -> Any:
    """``load_qrscp_config`` on first use (PEP 562): importing the servers costs start-up."""
    if name == "load_qrscp_config":
        module = importlib.import_module(".servers", __name__)
        return module.load_qrscp_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: the first argument that is not an option (the
    top-level options, ``-h`` and ``--version``, take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    if command is not None:
        parser = build_parser([command])
    elif "--version" in argv and not {"-h", "--help"} & set(argv):
        parser = build_parser([])  # --version needs no command module
    else:
        parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    # Here, not at the top: `--version` and `--help` exit in parse_args, without asyncio.
    import asyncio

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
