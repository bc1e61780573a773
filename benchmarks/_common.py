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
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    # Run the checkout's package, whatever is installed.
    sys.path.insert(0, str(REPO))

from aiodimse.testing import peers  # noqa: E402
from aiodimse.testing.synthetic import make_ct_instance, uid_from, write_study  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
WORKERS = BENCH_DIR / "_workers.py"
MIB = 1024 * 1024

NODELAY_NOTE = (
    "TCP_NODELAY: aiodimse sets it itself; set on pynetdicom's sockets by this benchmark "
    "(pynetdicom never sets it); TCP_NODELAY=1 exported for DCMTK."
)


# -- command line and results ------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small version that runs in seconds")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON result goes (default: benchmarks/results)",
    )
    return parser


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
    """A server started from ``_workers.py`` in its own process; stopped by its PID."""

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


def worker_argv(*args: object, profile: Path | None = None) -> list[str]:
    """The command line of a worker; under cProfile (output to ``profile``) if given."""
    python = [sys.executable]
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        python += ["-m", "cProfile", "-o", str(profile)]
    return [*python, str(WORKERS), *(str(a) for a in args)]


def start_server(*args: object, timeout: float = 30.0, profile: Path | None = None) -> Worker:
    """Start a ``_workers.py serve ...`` process and wait for its JSON "ready" line."""
    argv = worker_argv("serve", *args, profile=profile)
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
            raise WorkerError(f"{' '.join(argv)}: not ready after {timeout} s\n{err}")
        readable, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if readable:
            line = proc.stdout.readline()
            if not line:
                err = worker.stop()
                raise WorkerError(f"{' '.join(argv)}: exited before it was ready\n{err}")
            with contextlib.suppress(json.JSONDecodeError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("ready"):
                    worker.ready = message
                    return worker
        elif proc.poll() is not None:
            err = worker.stop()
            raise WorkerError(f"{' '.join(argv)}: exited with {proc.returncode}\n{err}")


def run_client(*args: object, timeout: float, profile: Path | None = None) -> dict[str, Any]:
    """Run a ``_workers.py <client> ...`` process to completion; return its JSON result line."""
    argv = worker_argv(*args, profile=profile)
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
        raise WorkerError(f"{_what(argv)}: no result within {timeout:.0f} s") from exc
    for line in reversed(out.stdout.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            message = json.loads(line)
            if isinstance(message, dict) and "seconds" in message:
                message["returncode"] = out.returncode
                return message
    raise WorkerError(
        f"{' '.join(argv[2:4])} exited with {out.returncode} without a result\n{out.stderr[-3000:]}"
    )


def _what(argv: Sequence[str]) -> str:
    """The worker command (``store aiodimse``) in a worker's command line."""
    i = argv.index(str(WORKERS)) if str(WORKERS) in argv else 0
    return " ".join(argv[i + 1 : i + 3])
