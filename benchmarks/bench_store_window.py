"""``aiodimse store --window 8 --associations 4`` against serial ``storescu``, both as a user
runs them: whole commands, start-up included, into ``aiodimse qrscp`` (the embedded
archive, each stored instance indexed in SQLite before Success).

Rows (each run into a fresh archive in a process of its own, ``--async-window 8``):

- ``storescu``: DCMTK's storescu, one association, one operation at a time
  (TCP_NODELAY=1, as every peer here);
- ``aiodimse serial``: ``aiodimse store`` with neither window nor extra associations;
- ``aiodimse window 8 x 4``: ``aiodimse store --window 8 --associations 4``.

The rate is instances over the command's wall-clock time (start-up included: what a user
waits for); "start-up excluded" is the rate ``aiodimse store`` prints itself, from its
first association request to its last response. Every file is checked to be in the
archive afterwards. Speed is measured, never asserted.

    python benchmarks/bench_store_window.py [--quick] [--runs 3] [--tiny 2000]
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers

ROWS = (
    ("storescu", "DCMTK storescu, serial"),
    ("serial", "aiodimse store, serial"),
    ("window", "aiodimse store --window 8 --associations 4"),
)


def argv_for(key: str, port: int, files: list[Path], folder: Path) -> list[str]:
    if key == "storescu":
        return [
            peers.dcmtk_tool("storescu"),
            "-aec",
            "QRSCP",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ]
    argv = [sys.executable, "-m", "aiodimse", "store", "127.0.0.1", str(port), str(folder)]
    argv += ["--aec", "QRSCP"]
    if key == "window":
        argv += ["--window", "8", "--associations", "4"]
    return argv


def stored(storage: Path) -> int:
    return sum(1 for p in (storage / "files").rglob("*.dcm") if not p.name.startswith("."))


def one_run(key: str, scratch: Path, run: int, data: C.InstanceSet) -> dict[str, Any]:
    storage = scratch / f"archive-{key}-{run}"
    port = peers.free_port()
    qr = peers.start_aiodimse_qrscp(
        port, storage, work_dir=scratch / "logs", extra=["--async-window", "8"]
    )
    try:
        folder = data.files[0].parent
        argv = argv_for(key, port, data.files, folder)
        start = time.perf_counter()
        tool = C.run_tool(argv, timeout=600)
        seconds = time.perf_counter() - start
    finally:
        qr.stop()
    ok = tool.out is not None and tool.out.returncode == 0
    n = stored(storage)
    problem = None
    if not ok:
        problem = (tool.out.stderr[-400:] if tool.out else "timed out") or "failed"
    elif n != len(data.files):
        problem = f"{n} of {len(data.files)} in the archive"
    # aiodimse's own summary: its rate from the first association request to the last
    # response (start-up excluded), e.g. "sent 2000, ... (1,234/s, 11.2 MiB/s, 1.62 s)".
    match = re.search(r"\(([\d,]+)/s", tool.out.stdout if tool.out else "")
    return {
        "transfer_rate": float(match.group(1).replace(",", "")) if match else None,
        "seconds": round(seconds, 3),
        "stored": n,
        "ok": ok and n == len(data.files),
        "rate": len(data.files) / seconds if ok else None,
        "problem": problem,
    }


def main() -> int:
    parser = C.base_parser(__doc__ or "", runs=True)
    C.add_set_options(parser, "tiny")
    args = parser.parse_args()
    runs = C.runs_of(args)
    ((key, n, size),) = C.set_counts(args, "tiny")
    have_dcmtk = C.dcmtk_or_exit()
    print(f"before: {C.load_caveat()}")
    with C.scratch_dir("bench-store-window-") as scratch:
        data = C.write_instance_set(C.InstanceSet, scratch, key, n, size, "store-window")
        print(f"data: {data.name}")
        results: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in ROWS}
        for run in range(runs):  # rows interleaved across runs
            for row, _ in ROWS:
                if row == "storescu" and not have_dcmtk:
                    continue
                results[row].append(one_run(row, scratch, run, data))
    medians = {
        row: C.median([r["rate"] for r in results[row] if r["rate"] is not None]) for row, _ in ROWS
    }
    transfer = {
        row: C.median([r["transfer_rate"] for r in results[row] if r["transfer_rate"]])
        for row, _ in ROWS
    }
    baseline = medians["storescu"]
    table = []
    for row, label in ROWS:
        rate = medians[row]
        table.append(
            (
                label,
                f"{rate:,.0f} inst/s" if rate else "-",
                C.ratio(rate, baseline),
                f"{transfer[row]:,.0f} inst/s" if transfer[row] else "-",
                "; ".join(str(r["problem"]) for r in results[row] if r["problem"]) or "",
            )
        )
    C.print_table(
        f"C-STORE {data.name} into aiodimse qrscp, whole commands (median of {runs})",
        ["command", "rate", "vs storescu", "start-up excluded", "problems"],
        table,
    )
    payload = {
        "environment": C.environment(),
        "instances": n,
        "runs": runs,
        "rows": [
            {
                "key": row,
                "label": label,
                "median_rate": medians[row],
                "median_transfer_rate": transfer[row],
                "runs": results[row],
            }
            for row, label in ROWS
        ],
    }
    C.finish(args, "bench_store_window", payload)
    failed = any(not r["ok"] for rows in results.values() for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
