"""Eight concurrent DCMTK ``storescu`` clients into one server: ``aiodimse qrscp --workers 1``
and ``--workers 2`` against DCMTK's ``dcmqrscp`` and ``storescp --fork`` (one process per
association), in one run.

Each client is a whole ``storescu`` process sending its own study (``--per-client``
instances of 64x64 CT, ~9 KiB each) on one association; all eight start together. The
rate is every client's instances over the wall-clock time from the first client's start to
the last one's end. CPU is user + system time per instance: of the server and every process
it forks (sampled from /proc), and of the eight clients. The aiodimse rows index each
instance in SQLite before answering Success (the archive); ``storescp --fork`` only writes
files; ``dcmqrscp`` writes files and its own index. Every run is checked: each instance on
the server's disk (and in aiodimse's index, exactly once); the rate counts only the
instances that arrived (DCMTK 3.6.7's dcmqrscp answers some C-STOREs from concurrent
associations with C000 "Index database error"). Speed is measured, never asserted.

    python benchmarks/bench_workers.py [--quick] [--runs 3] [--per-client 250] [--clients 8]
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers

ROWS = (
    ("workers-1", "aiodimse qrscp --workers 1"),
    ("workers-2", "aiodimse qrscp --workers 2"),
    ("dcmqrscp", "DCMTK dcmqrscp (forks per association)"),
    ("storescp-fork", "DCMTK storescp --fork"),
)
AET = {"dcmqrscp": "DCMQRSCP", "storescp-fork": "STORESCP"}


def start_server(key: str, port: int, where: Path) -> tuple[peers.PeerProcess, Path]:
    """The server of row ``key`` on ``port``, once it (every worker of it) listens; and the
    folder its instances land in."""
    logs = where / "logs"
    if key.startswith("workers-"):
        n = key.split("-")[1]
        storage = where / "archive"
        server = peers.start_aiodimse_qrscp(
            port, storage, work_dir=logs, extra=["--workers", n, "--max-associations", "16"]
        )
        # Every worker listens (each prints its line), not just the first.
        deadline = time.monotonic() + 30
        while server.log().count("(Ctrl-C to stop)") < int(n) + (int(n) > 1):
            if time.monotonic() > deadline or not server.alive():
                server.stop()
                raise SystemExit(f"{key}: workers did not all start:\n{server.log()}")
            time.sleep(0.02)
        return server, storage
    if key == "dcmqrscp":
        storage = where / "dcmqrscp"
        return peers.start_dcmqrscp(port, storage, work_dir=logs), storage
    out = where / "storescp"
    return peers.start_storescp(port, out, fork=True, work_dir=logs), out


def worker_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stored_files(folder: Path) -> int:
    return sum(
        1
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix not in {".dat", ".sqlite"}
        and "sqlite" not in p.name
    )


def indexed(storage: Path) -> tuple[int, int]:
    """(rows, distinct SOP Instance UIDs) in an aiodimse archive's index."""
    db = sqlite3.connect(storage / "index.sqlite")
    try:
        rows, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT sop_uid) FROM instances"
        ).fetchone()
    finally:
        db.close()
    return int(rows), int(distinct)


def one_run(key: str, run: int, scratch: Path, clients: list[list[Path]]) -> dict[str, Any]:
    where = scratch / f"{key}-{run}"
    port = peers.free_port()
    expected = sum(len(files) for files in clients)
    server, folder = start_server(key, port, where)
    storescu = peers.dcmtk_tool("storescu")
    aec = AET.get(key, "QRSCP")
    try:
        before = C.children_cpu_seconds()
        # The workers already running count from now, like the server itself; processes
        # forked per association (DCMTK) from 0.
        workers = worker_pids(server.pid) if key.startswith("workers-") else []
        worker_start = [C.proc_cpu_seconds(pid) or 0.0 for pid in workers]
        with C.TreeCPU(server.pid, *workers) as server_cpu:
            start = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [storescu, "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=peers.peer_env(),
                )
                for files in clients
            ]
            codes = []
            errors = []
            for proc in procs:
                try:
                    out, _ = proc.communicate(timeout=600)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                codes.append(proc.returncode)
                if proc.returncode:
                    text = out.decode(errors="replace").strip()[-300:]
                    errors.append(
                        f"storescu exit {proc.returncode}" + (f": {text}" if text else "")
                    )
            seconds = time.perf_counter() - start
            spent = [
                (C.proc_cpu_seconds(pid) or 0.0) - before_
                for pid, before_ in zip(workers, worker_start, strict=True)
            ]
        client_cpu = C.children_cpu_seconds() - before
    finally:
        server.stop()
    files = stored_files(folder)
    if key.startswith("workers-"):
        files = min(files, indexed(folder)[1])
    result: dict[str, Any] = {
        "seconds": round(seconds, 3),
        # Instances that really arrived (DCMTK's dcmqrscp refuses some under concurrency).
        "rate": min(files, expected) / seconds,
        "server_cpu_s": round(server_cpu.seconds, 3),
        "client_cpu_s": round(client_cpu, 3),
        "stored": files,
        "expected": expected,
        "client_exit_codes": codes,
        "problems": errors,
    }
    if key.startswith("workers-"):
        # How evenly the kernel spread the work: each worker's share of the CPU.
        total = sum(spent)
        result["worker_cpu_share"] = sorted((round(c / total, 2) for c in spent), reverse=True)
        result["index_rows"], result["index_distinct"] = indexed(folder)
        result["files"] = stored_files(folder)
    return result


def main() -> int:
    parser = C.base_parser(__doc__ or "", runs=True)
    parser.add_argument("--clients", type=int, default=8, help="concurrent storescu (default 8)")
    parser.add_argument(
        "--per-client", type=int, default=None, help="instances each (default 250; quick 10)"
    )
    args = parser.parse_args()
    runs = C.runs_of(args)
    per_client = args.per_client or (10 if args.quick else 250)
    print(f"before: {C.load_caveat()}")
    if not C.dcmtk_or_exit():
        # The clients are DCMTK's: without it there is nothing to measure.
        message = "DCMTK (storescu, storescp, dcmqrscp) is not installed: nothing measured"
        print(message)
        C.finish(args, "bench_workers", {"environment": C.environment(), "skipped": message})
        return 0
    results: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in ROWS}
    with C.scratch_dir("bench-workers-") as scratch:
        clients = [
            C.write_instances(scratch / f"client-{i}", per_client, 64, 64, f"workers/{i}")
            for i in range(args.clients)
        ]
        size = sum(f.stat().st_size for files in clients for f in files) / (
            args.clients * per_client
        )
        print(
            f"data: {args.clients} clients x {per_client} x 64x64 CT ({size / 1024:.1f} KiB each)"
        )
        for run in range(runs):  # rows interleaved: load drifting hits them alike
            for key, _ in ROWS:
                results[key].append(one_run(key, run, scratch, clients))
    expected = args.clients * per_client

    def med(key: str, field: str) -> float | None:
        return C.median([r[field] for r in results[key]])

    rates = {key: med(key, "rate") for key, _ in ROWS}
    table = []
    for key, label in ROWS:
        server_ms = med(key, "server_cpu_s")
        client_ms = med(key, "client_cpu_s")
        stored = [r["stored"] for r in results[key]]
        complete = all(
            n == expected and not r["problems"] for n, r in zip(stored, results[key], strict=True)
        )
        table.append(
            (
                label,
                f"{rates[key]:,.0f} inst/s" if rates[key] else "-",
                C.ratio(rates[key], rates["workers-1"]),
                C.ratio(rates[key], rates["dcmqrscp"]),
                C.ratio(rates[key], rates["storescp-fork"]),
                f"{server_ms * 1000 / expected:.2f}" if server_ms is not None else "-",
                f"{client_ms * 1000 / expected:.2f}" if client_ms is not None else "-",
                "yes" if complete else f"NO (min {min(stored)} of {expected})",
                " ".join(
                    "/".join(f"{x:.0%}" for x in r.get("worker_cpu_share", []))
                    for r in results[key]
                    if len(r.get("worker_cpu_share", [])) > 1
                )
                or "-",
            )
        )
    C.print_table(
        f"{args.clients} concurrent storescu x {per_client} instances into one server,"
        f" {os.cpu_count()} CPUs (median of {runs})",
        [
            "server",
            "rate",
            "vs --workers 1",
            "vs dcmqrscp",
            "vs storescp --fork",
            "server CPU ms/inst",
            "clients CPU ms/inst",
            "all stored",
            "CPU split by worker, each run",
        ],
        table,
    )
    print(C.NODELAY_NOTE)
    for key, label in ROWS:
        for i, r in enumerate(results[key]):
            if r["problems"] or r["stored"] != expected:
                print(
                    f"  {label}, run {i + 1}: {r['stored']} of {expected} stored; {r['problems']}"
                )
    payload = {
        "environment": C.environment(),
        "clients": args.clients,
        "per_client": per_client,
        "runs": runs,
        "rows": [
            {
                "key": key,
                "label": label,
                "median_rate": rates[key],
                "median_server_cpu_s": med(key, "server_cpu_s"),
                "median_client_cpu_s": med(key, "client_cpu_s"),
                "runs": results[key],
            }
            for key, label in ROWS
        ],
    }
    C.finish(args, "bench_workers", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
