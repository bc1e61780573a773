"""``--workers N`` of the server commands: N processes accepting on one port
(SO_REUSEPORT: the kernel spreads the connections), a supervisor that starts them, replaces
one that dies and stops them all on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
from dataclasses import dataclass

from ..errors import AiodimseError
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    log,
    setup_logging,
    stop_on_signals,
)

#
# Each worker is a whole server (`storescp` or `qrscp` as with one worker) that listens
# with SO_REUSEPORT: the kernel spreads incoming connections among the listening
# processes, so no parent sits in the data path and a worker's death loses only its own
# associations. The parent only supervises: it starts the workers, replaces one that
# dies (a bounded number of times), and passes SIGTERM/SIGINT on for a clean stop.

#: At most this many workers replaced within RESTART_WINDOW seconds; past it something
#: is wrong with every worker (the disk, the index) and the supervisor stops.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds between a worker's death and its replacement.
RESTART_DELAY = 0.2
#: Seconds the workers have to stop after SIGTERM (each gives its associations 5 s) before
#: they are killed.
STOP_GRACE = 15.0
MAX_WORKERS = 256

#: What a worker process runs; its plan (a pickled _WorkerPlan) arrives on stdin.
_WORKER_ENTRY = "from aiodimse.cli.supervisor import worker_main; raise SystemExit(worker_main())"


def worker_count(value: str) -> int:
    """argparse type: a number of worker processes, 1 to MAX_WORKERS."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{n} workers: must be 1 to {MAX_WORKERS}")
    return n


def positive(value: int, option: str) -> int:
    if value < 1:
        raise UsageError(f"{option} {value}: must be 1 or more")
    return value


def shares(total: int, workers: int) -> list[int]:
    """``total`` split among ``workers``, as evenly as can be and adding up exactly: each
    gets ``total // workers``, the first ``total % workers`` one more."""
    base, extra = divmod(total, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket on ``host:port``: the port (a free one for
    port 0) stays ours while workers come and go, and "address in use" shows up once,
    here. UsageError where SO_REUSEPORT does not spread connections (not Linux)."""
    option = getattr(socket, "SO_REUSEPORT", None)
    if not sys.platform.startswith("linux") or option is None:
        raise UsageError(
            f"--workers needs SO_REUSEPORT load balancing (Linux); this is {sys.platform}:"
            " run one worker"
        )
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        except OSError as exc:
            raise UsageError(f"--workers: cannot set SO_REUSEPORT: {exc.strerror}") from None
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class _WorkerPlan:
    """What a worker is told on its stdin: the parsed command line, its slot, its parent."""

    args: argparse.Namespace
    slot: int
    workers: int
    parent: int


async def supervise(
    args: argparse.Namespace, host: str, port: int, ae: str, max_associations: int
) -> int:
    """Run ``args.workers`` copies of this server command on one port until SIGTERM or
    SIGINT; replace a worker that dies. Exit code 0 after a clean stop."""
    n = int(args.workers)
    if max_associations < n:
        raise UsageError(
            f"--max-associations {max_associations} with --workers {n}:"
            " each worker needs at least one association"
        )
    limits = shares(max_associations, n)
    reservation = reserve_port(host, port)
    port = int(reservation.getsockname()[1])
    loop = asyncio.get_running_loop()
    stop = stop_on_signals()
    procs: dict[int, asyncio.subprocess.Process] = {}
    deaths: collections.deque[float] = collections.deque()
    failure: list[str] = []

    async def spawn(slot: int) -> asyncio.subprocess.Process:
        worker_args = argparse.Namespace(**vars(args))
        worker_args.workers = 1
        worker_args.worker_slot = slot
        worker_args.port = port
        worker_args.host = host
        worker_args.max_associations = limits[slot]
        plan = _WorkerPlan(worker_args, slot, n, os.getpid())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER_ENTRY, stdin=asyncio.subprocess.PIPE
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(plan))
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        print(f"worker {slot + 1} of {n} started (pid {proc.pid})", file=sys.stderr, flush=True)
        return proc

    async def keep(slot: int) -> None:
        """Keep worker ``slot`` running until the stop."""
        while not stop.is_set():
            proc = procs[slot] = await spawn(slot)
            if stop.is_set():  # the stop came while it was starting
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            if stop.is_set():
                return
            now = loop.time()
            deaths.append(now)
            while deaths and now - deaths[0] > RESTART_WINDOW:
                deaths.popleft()
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            if code == EXIT_USAGE or len(deaths) > MAX_RESTARTS:
                why = (
                    "a bad command line"
                    if code == EXIT_USAGE
                    else (f"{len(deaths)} deaths in {RESTART_WINDOW:.0f} s")
                )
                failure.append(f"worker {slot + 1} (pid {proc.pid}) ended with {how}: {why}")
                stop.set()
                return
            log.warning("worker %d (pid %d) ended with %s: replacing it", slot + 1, proc.pid, how)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY)

    keepers = [asyncio.create_task(keep(slot)) for slot in range(n)]
    try:
        print(
            f"{ae} listening on {host}:{port} with {n} workers, up to"
            f" {'/'.join(map(str, limits))} associations each (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        for proc in procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        _, late = await asyncio.wait(keepers, timeout=STOP_GRACE)
        if late:
            log.warning(
                "%d workers still running after %.0f s: killing them", len(late), STOP_GRACE
            )
            for proc in procs.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.wait(keepers)
    finally:
        for task in keepers:
            task.cancel()
        for proc in procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        reservation.close()
    if failure:
        print(f"aiodimse {args.command}: {failure[0]}; stopped", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return EXIT_OK


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when its supervisor dies (even by
    SIGKILL), so that no worker is left behind; exit at once if it is already gone."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG, prctl(2)
    if os.getppid() != parent:
        raise SystemExit(EXIT_OK)


def worker_main() -> int:
    """A worker of ``storescp`` / ``qrscp --workers N``, started by :func:`supervise` with
    its plan on stdin: the same server command, listening with SO_REUSEPORT."""
    plan: _WorkerPlan = pickle.load(sys.stdin.buffer)
    _die_with_parent(plan.parent)
    args = plan.args
    setup_logging(args)
    tag = f"[worker {plan.slot + 1}/{plan.workers}] "
    for handler in logging.getLogger("aiodimse").handlers:
        handler.setFormatter(logging.Formatter(f"%(levelname).1s: {tag}%(message)s"))
    try:
        return int(asyncio.run(args.run(args)))
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"aiodimse {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (AiodimseError, OSError, ValueError) as exc:
        print(f"aiodimse {args.command}: {tag}{exc}", file=sys.stderr)
        return EXIT_FAILED
