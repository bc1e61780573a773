"""Shared plumbing for the benchmark scripts: tables, JSON results, worker processes, data.

Benchmarks measure; they never assert speed. Every script prints absolute rates and ratios
against the peers (pynetdicom, DCMTK) measured in the same run, plus the machine load, and
writes its numbers to ``benchmarks/results/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    # Run the checkout's package, whatever is installed.
    sys.path.insert(0, str(REPO))

from aiodimse.testing import peers  # noqa: E402
from aiodimse.testing.synthetic import make_ct_instance, uid_from, write_study  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
WORKERS = BENCH_DIR / "_workers.py"
#: The Q/R servers and the retrieve and window clients (bench_retrieve.py, bench_window.py).
RETRIEVE_WORKERS = BENCH_DIR / "_retrieve_workers.py"
MIB = 1024 * 1024

NODELAY_NOTE = (
    "TCP_NODELAY: aiodimse sets it itself; set on pynetdicom's sockets by this benchmark "
    "(pynetdicom never sets it); TCP_NODELAY=1 exported for DCMTK."
)


# -- command line and results ------------------------------------------------------------------


def base_parser(description: str, runs: bool = False) -> argparse.ArgumentParser:
    """Options every benchmark takes; with ``runs``, ``--runs`` too (see :func:`runs_of`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small version that runs in seconds")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON result goes (default: benchmarks/results)",
    )
    if runs:
        parser.add_argument(
            "--runs", type=int, default=None, help="runs per row (default 3; quick 1)"
        )
    return parser


def runs_of(args: argparse.Namespace) -> int:
    """``--runs``, else 3 (1 under ``--quick``)."""
    return int(args.runs or (1 if args.quick else 3))


#: The generated data sets of the transfer benchmarks: key -> (rows = columns, instances
#: under --quick, instances by default).
SET_SIZES = {"large": (512, 10, 500), "tiny": (64, 50, 2000)}


def add_set_options(parser: argparse.ArgumentParser, *keys: str) -> None:
    """``--large``, ``--tiny``: how many instances each data set has."""
    for key in keys:
        size, _, full = SET_SIZES[key]
        help_ = f"{size}x{size} instances (default {full})"
        parser.add_argument(f"--{key}", type=int, default=None, help=help_)


def set_counts(args: argparse.Namespace, *keys: str) -> list[tuple[str, int, int]]:
    """(key, instances, rows = columns) of each data set, in the order given."""
    out = []
    for key in keys:
        size, quick, full = SET_SIZES[key]
        value = getattr(args, key)
        out.append((key, value if value is not None else (quick if args.quick else full), size))
    return out


def environment() -> dict[str, Any]:
    """What the numbers were measured on (versions, CPUs, load)."""
    import pydicom

    import aiodimse

    try:
        import pynetdicom

        pynetdicom_version: str | None = pynetdicom.__version__
    except ImportError:
        pynetdicom_version = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "aiodimse": aiodimse.__version__,
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom_version,
        "dcmtk": dcmtk_version(),
    }


def dcmtk_version() -> str | None:
    """DCMTK's version line, or None when it is not installed."""
    try:
        tool = peers.dcmtk_tool("storescu")
    except peers.PeerMissing:
        return None
    try:
        out = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        if "DCMTK" in line:
            return line.strip()
    return "unknown"


def have_dcmtk() -> bool:
    try:
        peers.dcmtk_tool("storescu")
        peers.dcmtk_tool("storescp")
    except peers.PeerMissing:
        return False
    return True


#: True under ``CI=true``: there a missing DCMTK ends a benchmark instead of skipping rows.
CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def dcmtk_or_exit(have: bool | None = None) -> bool:
    """Whether DCMTK is installed (``have``, else :func:`have_dcmtk`). Outside CI its rows
    are then skipped; under ``CI=true`` its absence ends the benchmark with exit status 1,
    so that the smoke test fails instead of passing on skipped rows."""
    found = have_dcmtk() if have is None else have
    if not found and CI:
        print("DCMTK is missing (CI=true): the DCMTK rows cannot be skipped", file=sys.stderr)
        raise SystemExit(1)
    return found


def load_caveat() -> str:
    """A line saying how busy the machine was; absolute numbers are only meaningful when idle."""
    one, five, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    busy = " -- the machine is busy: absolute numbers are noisy" if one > 0.5 * cpus else ""
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {cpus} CPUs{busy}"


def write_result(results_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as ``<name>-<UTC timestamp>.json`` and ``<name>-latest.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(payload, indent=2, default=str)
    path = results_dir / f"{name}-{stamp}.json"
    path.write_text(text, encoding="utf-8")
    (results_dir / f"{name}-latest.json").write_text(text, encoding="utf-8")
    return path


def finish(
    args: argparse.Namespace, name: str, payload: dict[str, Any], profile: Path | None = None
) -> None:
    """The closing lines of a benchmark: where the profiles went (if any), the load now, then
    the JSON result (``-quick`` appended to ``name`` under ``--quick``) and where it went."""
    if profile:
        print(f"profiles (rates under cProfile are not comparable): {profile}")
    print(f"after: {load_caveat()}")
    path = write_result(args.results_dir, name + ("-quick" if args.quick else ""), payload)
    print(f"results: {path}")


def add_row_options(
    parser: argparse.ArgumentParser, profiled: str, only: str = "row keys to run (default: all)"
) -> None:
    """``--only`` (rows to run) and ``--profile`` (``profiled`` under cProfile)."""
    parser.add_argument("--only", nargs="*", help=only)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help=f"run {profiled} under cProfile, .prof files here "
        "(slows them down: the rates are then not comparable)",
    )


@dataclass(kw_only=True)
class RowRuns:
    """What a table row of a transfer benchmark collects over its runs."""

    rates: list[float] = field(default_factory=list)
    mib_rates: list[float] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

    def add_run(self, run: int, result: dict[str, Any]) -> None:
        """Keep the result of run ``run`` (counted from 0)."""
        result["run"] = run
        self.runs.append(result)

    def add_rate(self, count: int, seconds: float, n: int, total_bytes: int) -> None:
        """``count`` of ``n`` instances (``total_bytes`` in all) moved in ``seconds``."""
        self.rates.append(count / seconds)
        self.mib_rates.append(total_bytes * count / n / seconds / MIB)

    def summary(self, key: str, label: str, **extra: object) -> dict[str, Any]:
        """The row in the JSON result: medians, every rate and every run."""
        return {
            "key": key,
            "label": label,
            **extra,
            "skipped": self.skipped,
            "median_inst_per_s": median(self.rates),
            "median_mib_per_s": median(self.mib_rates),
            "rates": self.rates,
            "runs": self.runs,
        }


_Row = TypeVar("_Row", bound=RowRuns)


def print_problems(
    heading: str,
    rows: Iterable[tuple[str, RowRuns]],
    problems: Callable[[dict[str, Any], int], Iterable[str]],
    n: int,
    sep: str = "; ",
) -> None:
    """Under ``heading``, a line for each run of the (label, row) pairs that went wrong: the
    non-empty parts of ``problems(run, n)``; nothing at all when every run went well."""
    lines = [
        f"  {label}, run {int(r.get('run', 0)) + 1}: " + sep.join(parts)
        for label, row in rows
        for r in row.runs
        if (parts := [p for p in problems(r, n) if p])
    ]
    if lines:
        print(heading)
        print("\n".join(lines))


def pending(rows: Sequence[_Row], runs: int) -> Iterator[tuple[int, _Row]]:
    """Each run of each row not skipped: the rows interleaved within every run, so that load
    drifting during the benchmark hits all of them alike."""
    for run in range(runs):
        for row in rows:
            if not row.skipped:
                yield run, row


# -- formatting ------------------------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A plain-text table, right-aligned numbers, one header rule."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print()
    print(title)
    for n, row in enumerate(cells):
        parts = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        print("  " + "  ".join(parts))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as ``1.23x``, or ``-`` when either is missing."""
    if value is None or reference is None or reference <= 0:
        return "-"
    return f"{value / reference:.2f}x"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# -- synthetic data ----------------------------------------------------------------------------


def write_instances(directory: Path, n: int, rows: int, cols: int, seed: str) -> list[Path]:
    """``n`` CT instances of one study, written one at a time (memory stays flat)."""
    study_uid = uid_from(f"{seed}/study")
    frame_uid = uid_from(f"{seed}/frame")
    datasets = (
        make_ct_instance(
            seed=seed,
            instance_number=i + 1,
            rows=rows,
            cols=cols,
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
        )
        for i in range(n)
    )
    return write_study(directory, datasets)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards, whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def count_files(directory: Path, suffix: str = "") -> int:
    """Complete files in ``directory`` (hidden ``.part`` temporaries are not counted)."""
    if not directory.is_dir():
        return 0
    return sum(
        1
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(suffix)
    )


def write_file_list(path: Path, files: Sequence[Path]) -> Path:
    path.write_text("\n".join(str(f) for f in files) + "\n", encoding="utf-8")
    return path


@dataclass
class InstanceSet:
    """Generated CT instances of one study on disk, and the file listing them for a worker."""

    key: str
    name: str
    files: list[Path]
    file_list: Path
    total_bytes: int


_Set = TypeVar("_Set", bound=InstanceSet)


def write_instance_set(
    kind: type[_Set], scratch: Path, key: str, n: int, size: int, seed: str
) -> _Set:
    """``n`` ``size`` x ``size`` CT instances in ``scratch/src-<key>``, listed in
    ``scratch/<key>.txt``, as a ``kind`` (an InstanceSet, its other fields left default)."""
    files = write_instances(scratch / f"src-{key}", n, size, size, seed)
    total = sum(f.stat().st_size for f in files)
    return kind(
        key,
        f"{n} x {size}x{size} CT ({total / n / 1024:.1f} KiB each)",
        files,
        write_file_list(scratch / f"{key}.txt", files),
        total,
    )


# -- /proc ---------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a live process, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far (/proc/<pid>/stat), in seconds.

    CPU time per instance is far less sensitive to other load on the machine than rates."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = text.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# -- worker processes ----------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker process failed, died, or did not answer in time."""


@dataclass
class Worker:
    """A server started from a worker script in its own process; stopped by its PID."""

    argv: list[str]
    proc: subprocess.Popen[str]
    ready: dict[str, Any] = field(default_factory=dict)
    #: What the worker reported as it stopped (``{"stats": {...}}``), once stopped.
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM, bounded wait, SIGKILL; returns what the worker wrote to stderr."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        err = ""
        if proc.stderr is not None:
            with contextlib.suppress(Exception):
                err = proc.stderr.read()
                proc.stderr.close()
        if proc.stdout is not None:
            with contextlib.suppress(Exception):
                for line in proc.stdout.read().splitlines():
                    with contextlib.suppress(json.JSONDecodeError):
                        message = json.loads(line)
                        if isinstance(message, dict) and "stats" in message:
                            self.stats = message["stats"]
                proc.stdout.close()
        return err


def worker_argv(*args: object, script: Path = WORKERS, profile: Path | None = None) -> list[str]:
    """The command line of a worker; under cProfile (output to ``profile``) if given."""
    python = [sys.executable]
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        python += ["-m", "cProfile", "-o", str(profile)]
    return [*python, str(script), *(str(a) for a in args)]


def _what(args: Sequence[object]) -> str:
    """The worker command (``store aiodimse``, ``serve archive``) for messages."""
    return " ".join(str(a) for a in args[:2])


def start_server(
    *args: object, script: Path = WORKERS, timeout: float = 30.0, profile: Path | None = None
) -> Worker:
    """Start a ``<script> serve ...`` process (own session) and wait for its JSON "ready" line."""
    argv = worker_argv("serve", *args, script=script, profile=profile)
    what = _what(("serve", *args))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=peers.peer_env(),
        start_new_session=True,
    )
    worker = Worker(argv, proc)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            err = worker.stop()
            raise WorkerError(f"{what}: not ready after {timeout} s\n{err[-2000:]}")
        readable, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if readable:
            line = proc.stdout.readline()
            if not line:
                err = worker.stop()
                raise WorkerError(f"{what}: exited before it was ready\n{err[-2000:]}")
            with contextlib.suppress(json.JSONDecodeError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("ready"):
                    worker.ready = message
                    return worker
        elif proc.poll() is not None:
            err = worker.stop()
            raise WorkerError(f"{what}: exited with {proc.returncode}\n{err[-2000:]}")


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_client(
    *args: object,
    timeout: float,
    script: Path = WORKERS,
    profile: Path | None = None,
    process_cpu: bool = False,
) -> dict[str, Any]:
    """Run a ``<script> <client> ...`` process to completion; return its JSON result line
    with ``returncode``.

    With ``process_cpu`` (only meaningful when no other child ends meanwhile), also the CPU
    time of the whole process (``process_cpu_seconds``, start-up included) and the tail of
    its stderr when it failed."""
    argv = worker_argv(*args, script=script, profile=profile)
    before = children_cpu_seconds()
    try:
        out = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=peers.peer_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(f"{_what(args)}: no result within {timeout:.0f} s") from exc
    cpu = children_cpu_seconds() - before
    for line in reversed(out.stdout.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict) and "seconds" in message:
                message["returncode"] = out.returncode
                if process_cpu:
                    message["process_cpu_seconds"] = cpu
                    if out.returncode:
                        message["stderr"] = out.stderr[-2000:]
                return message
    raise WorkerError(
        f"{_what(args)} exited with {out.returncode} without a result\n{out.stderr[-3000:]}"
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class TreeCPU:
    """CPU time used by some processes and the children they fork (dcmqrscp forks one per
    association), while a ``with`` block runs.

    A thread samples /proc every ``interval`` seconds and keeps each process's last value;
    a child that ends between two samples loses at most ``interval`` of CPU time.
    """

    def __init__(self, *pids: int, interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        seen = list(self.pids)
        for pid in self.pids:
            seen += _children(pid)
        for pid in seen:
            cpu = proc_cpu_seconds(pid)
            if cpu is None:
                continue
            if pid not in self._start:
                # A root process counts from the start of the block; a new child from 0.
                self._start[pid] = cpu if pid in self.pids else 0.0
            self._last[pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._last[pid] - self._start[pid] for pid in self._last)


# -- DCMTK client logs ----------------------------------------------------------------------

#: DCMTK's log4cplus-style ``--log-config`` with millisecond timestamps, so that a DCMTK
#: client's association can be timed from its own log like the Python clients.
DCMTK_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%q} %m%n
"""


@dataclass
class ToolRun:
    """A peer tool run to its end (``out``) or killed at its timeout (``out`` is None)."""

    out: subprocess.CompletedProcess[str] | None
    #: Wall-clock time of the whole process, start-up included.
    seconds: float
    #: User + system CPU time of the whole process.
    cpu_seconds: float


def run_tool(argv: Sequence[str], timeout: float) -> ToolRun:
    """Run a DCMTK tool (TCP_NODELAY=1 in its environment) to completion, bounded in time."""
    before = children_cpu_seconds()
    start = time.perf_counter()
    try:
        out: subprocess.CompletedProcess[str] | None = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=peers.peer_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        out = None
    return ToolRun(out, time.perf_counter() - start, children_cpu_seconds() - before)


def write_dcmtk_log_config(path: Path) -> Path:
    path.write_text(DCMTK_LOG_CONFIG, encoding="ascii")
    return path


def log_seconds(line: str) -> float | None:
    """The time of day (seconds) a line of a DCMTK_LOG_CONFIG log was written."""
    stamp = line.split(" ", 1)[0]
    try:
        h, m, rest = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    except ValueError:
        return None


def log_span(begin: float | None, end: float | None) -> float | None:
    """Seconds from one log time to a later one (past midnight included)."""
    if begin is None or end is None:
        return None
    return end - begin if end >= begin else end + 86400 - begin
