"""Network fuzz run against ``aiodimse qrscp``: random, mutated and raw PDUs and DIMSE
messages over real sockets, bounded in cases and time, then the verdict.

    python benchmarks/fuzz_network.py --cases 100000 --seed 1

The archive runs as a subprocess on a loopback port (stopped by its PID); every 500 cases
a fresh association must answer a C-ECHO. The run fails on a crash (the process exits or
stops accepting), a hang (a liveness check that gets no answer), or any ERROR-level line
or traceback in the server's log. It prints the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

from aiodimse.testing import peers  # noqa: E402
from aiodimse.testing.netfuzz import FuzzReport, run_cases  # noqa: E402


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=30.0, help="stop after this long")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiodimse-fuzz-"))
    peer = peers.start_aiodimse_qrscp(peers.free_port(), work / "archive", work_dir=work)
    port, proc = peer.port, peer.proc
    try:
        rss_before = _rss_mib(proc.pid)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        report = FuzzReport(args.seed)

        def show(r: FuzzReport) -> None:
            rate = r.cases / (time.monotonic() - started)
            print(f"  {r.cases:>7} cases, {r.answered} answered, {rate:,.0f} cases/s", flush=True)

        done = 0
        while done < args.cases and time.monotonic() < deadline and report.ok:
            chunk = min(5000, args.cases - done)
            part = asyncio.run(
                run_cases(
                    "127.0.0.1",
                    port,
                    called_ae="QRSCP",
                    seed=args.seed * 1_000_003 + done,
                    cases=chunk,
                    concurrency=args.concurrency,
                    check_every=500,
                )
            )
            done += part.cases
            report.cases = done
            report.answered += part.answered
            report.liveness_checks += part.liveness_checks
            report.failures += part.failures
            for kind, n in part.kinds.items():
                report.kinds[kind] = report.kinds.get(kind, 0) + n
            show(report)
        elapsed = time.monotonic() - started
        alive = proc.poll() is None
        rss_after = _rss_mib(proc.pid) if alive else 0.0
    finally:
        peer.stop()
    log = peer.log()
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    print(
        f"\nnetwork fuzz of aiodimse qrscp, seed {args.seed}: {report.cases} cases in"
        f" {elapsed:.0f} s ({report.cases / elapsed:,.0f} cases/s)"
    )
    print(f"  cases by kind: {dict(sorted(report.kinds.items()))}")
    print(
        f"  answered: {report.answered}; liveness checks: {report.liveness_checks},"
        f" failed: {len(report.failures)}"
    )
    print(f"  server alive at the end: {alive}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB")
    print(f"  ERROR lines or tracebacks in its log: {len(errors)}")
    for line in report.failures + errors[:10]:
        print(f"    {line}")
    return 0 if report.ok and alive and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
