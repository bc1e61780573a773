"""What every command shares: exit codes, option groups, argument types, logging,
the association an SCU command asks for, a progress line, serving until a signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..config import Timeouts
from ..errors import check_ae_title

if TYPE_CHECKING:
    import asyncio

    from ..ul.negotiation import ContextRequest

log = logging.getLogger("aiodimse.cli")

#: Exit codes: 0 success, 1 the operation failed, 2 bad command line.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: What to say when the distributed mode's optional extra is not installed.
CLUSTER_MISSING = "the distributed mode needs the cluster extra: pip install 'aiodimse[cluster]'"


class UsageError(Exception):
    """A bad command-line value (exit code 2)."""


def ae_title(value: str) -> str:
    """argparse type: a valid AE title."""
    try:
        return check_ae_title(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(value: str) -> int:
    """argparse type: a TCP port, 0-65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


def ae_address(value: str) -> tuple[str, tuple[str, int]]:
    """argparse type: ``AET=host:port``."""
    ae, sep, address = value.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host:
        raise argparse.ArgumentTypeError(f"{value!r}: expected AET=host:port")
    return ae_title(ae), (host, port_number(port))


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument(
        "-d", "--debug", action="store_true", help="debug log: PDUs, negotiation, tracebacks"
    )


def add_association_options(parser: argparse.ArgumentParser, default_aec: str = "ANY-SCP") -> None:
    """Our AE title, the peer's, max PDU and timeout (no host and port)."""
    parser.add_argument("--aet", "-aet", type=ae_title, default="AIODIMSE", help="our AE title")
    parser.add_argument(
        "--aec", "-aec", type=ae_title, default=default_aec, help="the peer's AE title (called AE)"
    )
    parser.add_argument("--max-pdu", type=int, default=262144, help="our maximum PDU length")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)"
    )


def add_scu_options(parser: argparse.ArgumentParser, default_aec: str = "ANY-SCP") -> None:
    parser.add_argument("host", help="peer host name or address")
    parser.add_argument("port", type=port_number, help="peer port")
    add_association_options(parser, default_aec)
    add_common(parser)


def add_query_options(parser: argparse.ArgumentParser) -> None:
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


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s: %(message)s"))
    root = logging.getLogger("aiodimse")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def timeouts(args: argparse.Namespace) -> Timeouts:
    t = float(args.timeout)
    return Timeouts(connect=t, acse=t, dimse=max(t, 60.0))


def connect_from(args: argparse.Namespace, proposal: list[ContextRequest]) -> Any:
    """The association an SCU command asks for, from its common options."""
    # Deferred: `aiodimse --version` and every parser load this module; only a command
    # that connects needs the association stack.
    from ..association import connect

    return connect(
        args.host,
        args.port,
        calling_ae=args.aet,
        called_ae=args.aec,
        contexts=proposal,
        max_pdu=args.max_pdu,
        timeouts=timeouts(args),
    )


class Progress:
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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (where the loop can take signal handlers)."""
    # Here, not at the top: `aiodimse --version` loads this module and needs no asyncio.
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this OS
            pass
    return stop


async def serve_until_signalled(server: Any) -> None:
    stop = stop_on_signals()
    async with server:
        print(
            f"{server.ae_title} listening on {server.host}:{server.port} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await server.shutdown(timeout=5.0)
