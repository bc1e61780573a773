"""1,000 concurrent associations x 5 stores into ``aiodimse qrscp`` (the archive).

    python benchmarks/flood_qrscp.py [--associations 1000] [--per-assoc 5]

The archive runs as its own process with its default limit of 100 associations; every
store must end either stored (and indexed) or refused as local-limit-exceeded: nothing
lost, nothing half-stored, no ERROR in the server's log. Prints the outcome counts, the
wall time and the server's RSS before the flood and at its peak (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

import aiodimse  # noqa: E402
from aiodimse.testing import peers  # noqa: E402
from aiodimse.testing.synthetic import make_study, write_study  # noqa: E402


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


async def _one(port: int, files: list[Path], outcomes: Counter[str]) -> None:
    timeouts = aiodimse.Timeouts(connect=60, acse=60, dimse=60)
    try:
        async with aiodimse.connect(
            "127.0.0.1",
            port,
            called_ae="QRSCP",
            contexts=aiodimse.contexts.for_files(files),
            timeouts=timeouts,
        ) as assoc:
            for path in files:
                status = await assoc.store(path, check=False)
                outcomes["stored" if status.code == 0 else f"status {status.code:04X}"] += 1
    except aiodimse.AssociationRejected as exc:
        key = "refused: local-limit-exceeded" if exc.reason == 2 else f"rejected: {exc}"
        outcomes[key] += len(files)
    except aiodimse.AiodimseError as exc:
        outcomes[f"error: {type(exc).__name__}"] += len(files)


async def _flood(port: int, groups: list[list[Path]]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    await asyncio.gather(*(_one(port, group, outcomes) for group in groups))
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=1000)
    parser.add_argument("--per-assoc", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiodimse-flood-"))
    n, per = args.associations, args.per_assoc
    files = write_study(work / "src", make_study(n * per, rows=32, cols=32, seed="flood"))
    groups = [files[i * per : (i + 1) * per] for i in range(n)]
    peer = peers.start_aiodimse_qrscp(peers.free_port(), work / "archive", work_dir=work)
    port, proc = peer.port, peer.proc
    try:
        before = _status(proc.pid)
        started = time.perf_counter()
        outcomes = asyncio.run(_flood(port, groups))
        wall = time.perf_counter() - started
        after = _status(proc.pid)
        alive = proc.poll() is None
    finally:
        peer.stop()
    db = sqlite3.connect(work / "archive" / "index.sqlite")
    (indexed,) = db.execute("SELECT COUNT(*) FROM instances").fetchone()
    db.close()
    stored_files = sum(1 for p in (work / "archive" / "files").rglob("*.dcm"))
    partial = sum(1 for p in (work / "archive" / "files").rglob("*.part"))
    log = peer.log()
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    total = n * per
    print(f"flood of aiodimse qrscp: {n} concurrent associations x {per} stores ({total})")
    print(f"  wall {wall:.1f} s; outcomes: {dict(sorted(outcomes.items()))}")
    print(f"  indexed {indexed}, files {stored_files}, temporary files left {partial}")
    print(
        f"  server RSS before {before['VmRSS'] / 1024:.1f} MiB, peak {after['VmHWM'] / 1024:.1f}"
        f" MiB (+{(after['VmHWM'] - before['VmRSS']) / 1024:.1f}); alive: {alive};"
        f" ERROR lines or tracebacks in its log: {len(errors)}"
    )
    accounted = outcomes["stored"] + outcomes["refused: local-limit-exceeded"]
    ok = (
        alive
        and accounted == total
        and indexed == stored_files == outcomes["stored"]
        and not partial
        and not errors
    )
    print("  every store stored or refused, nothing lost: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
