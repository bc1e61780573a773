"""Throughput of the stateful fuzz engine (``aiodimse fuzz``) and zero-finding runs.

Cases per second against aiodimse's ``qrscp`` and DCMTK's ``dcmqrscp`` (each case is a
fresh connection: associate, a DIMSE message or two, release, one layer mutated; a
liveness C-ECHO every 25 cases), and the findings of each run: aiodimse's own
``qrscp`` and ``storescp`` must give none (the default 2,000 cases each). Each server runs
in a process of its own on loopback, stopped by its PID; the leak oracle watches the
aiodimse servers (``--pid``).

    python benchmarks/bench_fuzz.py [--quick] [--cases 2000] [--seed 1]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

from aiodimse import fuzz
from aiodimse.testing import peers


def _storescp(port: int, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "aiodimse", "storescp", "--port", str(port)]
    proc = subprocess.Popen([*argv, "--out", str(out)], stderr=subprocess.DEVNULL)
    peers.wait_for_port("127.0.0.1", port, 30)
    return proc


def _one(target: str, cases: int, seed: int, work: Path) -> dict[str, Any]:
    port = peers.free_port()
    peer: peers.PeerProcess | None = None
    proc: subprocess.Popen[bytes] | None = None
    if target == "aiodimse qrscp":
        peer = peers.start_aiodimse_qrscp(port, work / "archive", work_dir=work)
        aec, pid = peer.aet, peer.proc.pid
    elif target == "aiodimse storescp":
        proc = _storescp(port, work / "in")
        aec, pid = "STORESCP", proc.pid
    else:
        peer = peers.start_dcmqrscp(port, work / "db", work_dir=work)
        aec, pid = peer.aet, None  # forks one child per association: no process to watch
    try:
        started = time.monotonic()
        report = asyncio.run(
            fuzz.run("127.0.0.1", port, aec=aec, seed=seed, cases=cases, pid=pid, out=work / "f")
        )
        wall = time.monotonic() - started
    finally:
        if peer is not None:
            peer.stop()
        if proc is not None:
            proc.terminate()
            proc.wait()
    return {
        "target": target,
        "cases": report.cases,
        "seconds": round(report.elapsed, 2),
        "wall_seconds": round(wall, 2),
        "cases_per_s": round(report.rate, 1),
        "findings": [f.to_json() for f in report.findings],
        "rss_kib": report.rss_kib,
        "layers": report.layers,
    }


def main() -> int:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="cases per target (2000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cases = args.cases or (40 if args.quick else 2000)
    targets = ["aiodimse qrscp", "aiodimse storescp"]
    if C.dcmtk_or_exit():
        targets.append("dcmtk dcmqrscp")
    print(f"before: {C.load_caveat()}")
    rows = []
    for target in targets:
        with tempfile.TemporaryDirectory(prefix="aiodimse-bench-fuzz-") as tmp:
            rows.append(_one(target, cases, args.seed, Path(tmp)))
    C.print_table(
        f"aiodimse fuzz, seed {args.seed}: cases/s and findings (one case at a time)",
        ["target", "cases", "seconds", "cases/s", "findings", "target RSS KiB (warm -> end)"],
        [
            (
                r["target"],
                r["cases"],
                r["seconds"],
                r["cases_per_s"],
                len(r["findings"]),
                " -> ".join(str(v) for v in r["rss_kib"]) if r["rss_kib"] else None,
            )
            for r in rows
        ],
    )
    for r in rows:
        for f in r["findings"]:
            print(f"  {r['target']}: {f['kind']}: {f['detail']} ({f['case']})")
    own = [r for r in rows if r["target"].startswith("aiodimse")]
    clean = all(not r["findings"] for r in own)
    print(f"aiodimse servers without findings: {'yes' if clean else 'NO'}")
    C.finish(args, "bench_fuzz", {"environment": C.environment(), "seed": args.seed, "rows": rows})
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
