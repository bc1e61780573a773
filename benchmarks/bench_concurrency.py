"""Many concurrent associations into one server: aiodimse vs pynetdicom.

A client process (aiodimse, ``asyncio.gather``) opens N associations at once; each stores
its own few tiny instances and releases. The same client load goes to one aiodimse
StorageServer and to one pynetdicom storage SCP, each alone in its own process and writing
every instance to disk. Reported: wall time, instances/s, the SERVER's resident memory
before the load and its peak (VmHWM from /proc/<pid>/status), its peak thread count, the
peak number of associations it had open at once (sampled by the server every 20 ms), and
how many associations were rejected, stalled (no response within the DIMSE timeout) or
aborted. Both servers are configured for the load: ``max_associations`` above N (pynetdicom
refuses beyond 10 by default) and a listen backlog of the same size.

    python benchmarks/bench_concurrency.py [--quick] [--levels 50 200] [--per-assoc 5]
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as C

SERVERS = ("aiodimse", "pynetdicom")


class Sampler:
    """Polls a process's thread count and RSS while the load runs (VmHWM gives the RSS peak;
    the thread peak has no such counter)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            status = C.proc_status(self.pid)
            self.max_threads = max(self.max_threads, status.get("Threads", 0))
            self._stop.wait(self.interval)


def measure(
    server_kind: str,
    n: int,
    per: int,
    file_lists: list[Path],
    scratch: Path,
    timeout: float,
    dimse_timeout: float,
) -> dict[str, Any]:
    """One load against a fresh server process; returns rates, outcomes and memory."""
    out_dir = scratch / f"out-{server_kind}-{n}"
    slack = max(50, n // 4)
    try:
        server = C.start_server(
            server_kind,
            "--dir",
            out_dir,
            "--max-associations",
            n + slack,
            "--backlog",
            max(128, n + slack),
        )
    except C.WorkerError as exc:
        raise SystemExit(f"the {server_kind} server did not start: {exc}") from None
    try:
        time.sleep(0.2)  # let the server settle before taking its baseline
        before = server.status()
        procs = len(file_lists)
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        with Sampler(server.pid) as sampler, ThreadPoolExecutor(procs) as pool:
            start = time.perf_counter()
            futures = [
                pool.submit(
                    C.run_client,
                    "flood",
                    "--port",
                    server.port,
                    "--files-from",
                    file_lists[i],
                    "--associations",
                    shares[i],
                    "--per-assoc",
                    per,
                    "--dimse-timeout",
                    dimse_timeout,
                    timeout=timeout,
                )
                for i in range(procs)
                if shares[i]
            ]
            results = []
            for f in futures:
                try:
                    results.append(f.result())
                except C.WorkerError as exc:
                    results.append({"seconds": timeout, "ok": 0, "error": 1, "errors": str(exc)})
            wall = time.perf_counter() - start
        after = server.status()
    finally:
        err = server.stop()
    stored = C.count_files(out_dir)
    merged: dict[str, Any] = {
        "server": server_kind,
        "associations": n,
        "per_assoc": per,
        "client_seconds": max(float(r["seconds"]) for r in results),
        "wall_seconds": wall,
        "ok": sum(int(r.get("ok", 0)) for r in results),
        "stored": stored,
        "rss_before_kib": before.get("VmRSS"),
        "hwm_kib": after.get("VmHWM"),
        "threads_before": before.get("Threads"),
        "threads_peak": max(sampler.max_threads, after.get("Threads", 0)),
        "peak_associations": server.stats.get("peak_associations"),
        "server_stderr_tail": err[-1500:],
        "client_errors": [r.get("errors") for r in results if r.get("errors")],
    }
    for key in ("completed", "rejected", "stalled", "aborted", "error"):
        merged[key] = sum(int(r.get(key, 0)) for r in results)
    return merged


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--levels", type=int, nargs="+", default=None, help="concurrent associations (50 200)"
    )
    parser.add_argument("--per-assoc", type=int, default=None, help="instances each (5)")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (3; quick 1)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes")
    parser.add_argument("--dimse-timeout", type=float, default=None, help="seconds (30; quick 10)")
    args = parser.parse_args()
    levels = args.levels or ([20] if args.quick else [50, 200])
    per = args.per_assoc or (2 if args.quick else 5)
    runs = args.runs or (1 if args.quick else 3)
    dimse_timeout = args.dimse_timeout or (10.0 if args.quick else 30.0)
    timeout = 60.0 if args.quick else 600.0
    procs = max(1, args.client_procs)

    env = C.environment()
    print(f"bench_concurrency: concurrent associations into one server; {C.load_caveat()}")
    print(C.NODELAY_NOTE)
    print(
        f"client: aiodimse, asyncio.gather, {procs} process(es); {per} tiny instances per "
        f"association; DIMSE timeout {dimse_timeout:.0f} s; servers in their own processes"
    )

    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with C.scratch_dir("aiodimse-bench-concurrency-") as scratch:
        t0 = time.perf_counter()
        top = max(levels)
        files = C.write_instances(scratch / "src", top * per, 64, 64, "bench-concurrency")
        print(f"generated {len(files)} instances in {time.perf_counter() - t0:.1f} s")
        for level in levels:
            # Each client process gets its own contiguous slice of the instances.
            shares = [level // procs + (1 if i < level % procs else 0) for i in range(procs)]
            lists: list[Path] = []
            offset = 0
            for i, share in enumerate(shares):
                chunk = files[offset * per : (offset + share) * per]
                offset += share
                lists.append(C.write_file_list(scratch / f"list-{level}-{i}.txt", chunk))
            for run in range(runs):
                for kind in SERVERS:
                    r = measure(kind, level, per, lists, scratch, timeout, dimse_timeout)
                    r["run"] = run
                    results.setdefault((kind, level), []).append(r)
                    rate = r["stored"] / r["client_seconds"]
                    print(
                        f"  run {run + 1}/{runs} {level:4d} associations -> {kind:10s}"
                        f" {r['client_seconds']:7.2f} s {rate:8.1f} inst/s"
                        f"  stored {r['stored']}/{level * per}"
                        f"  rejected {r['rejected']} stalled {r['stalled']}"
                        f" aborted {r['aborted']} errors {r['error']}"
                        f"  server peak RSS {(r['hwm_kib'] or 0) / 1024:.0f} MiB",
                        flush=True,
                    )

    rows = []
    summary = []
    for level in levels:
        med_rate: dict[str, float | None] = {}
        med_hwm: dict[str, float | None] = {}
        for kind in SERVERS:
            rs = results[(kind, level)]
            med_rate[kind] = C.median([r["stored"] / r["client_seconds"] for r in rs])
            med_hwm[kind] = C.median([float(r["hwm_kib"] or 0) / 1024 for r in rs])
        for kind in SERVERS:
            rs = results[(kind, level)]
            wall = C.median([r["client_seconds"] for r in rs])
            before = C.median([float(r["rss_before_kib"] or 0) / 1024 for r in rs])
            hwm = med_hwm[kind]
            growth = (hwm - before) if hwm is not None and before is not None else None
            other = "pynetdicom" if kind == "aiodimse" else "aiodimse"
            row = {
                "server": kind,
                "associations": level,
                "instances": level * per,
                "median_seconds": wall,
                "median_inst_per_s": med_rate[kind],
                "median_rss_before_mib": before,
                "median_peak_rss_mib": hwm,
                "median_growth_mib": growth,
                "peak_threads": max(r["threads_peak"] for r in rs),
                "peak_associations": max(r["peak_associations"] or 0 for r in rs),
                "stored": sum(r["stored"] for r in rs),
                "expected": level * per * len(rs),
                "rejected": sum(r["rejected"] for r in rs),
                "stalled": sum(r["stalled"] for r in rs),
                "aborted": sum(r["aborted"] + r["error"] for r in rs),
            }
            summary.append(row)
            rows.append(
                [
                    f"{level} assoc -> {kind}",
                    wall,
                    med_rate[kind],
                    C.ratio(med_rate[kind], med_rate[other]) if kind == "aiodimse" else "1.00x",
                    before,
                    hwm,
                    growth,
                    row["peak_associations"],
                    row["peak_threads"],
                    f"{row['stored']}/{row['expected']}",
                    row["rejected"],
                    row["stalled"],
                    row["aborted"],
                ]
            )
    C.print_table(
        f"Concurrent associations x {per} tiny instances, one server process, median of {runs}",
        [
            "load -> server",
            "wall s",
            "inst/s",
            "vs pynetdicom",
            "RSS before MiB",
            "peak RSS MiB",
            "growth MiB",
            "peak open",
            "threads",
            "stored",
            "rejected",
            "stalled",
            "aborted",
        ],
        rows,
    )
    print()
    payload = {
        "benchmark": "bench_concurrency",
        "quick": args.quick,
        "levels": levels,
        "per_assoc": per,
        "runs": runs,
        "client_procs": procs,
        "environment": env,
        "load_after": C.load_caveat(),
        "summary": summary,
        "runs_detail": [r for rs in results.values() for r in rs],
    }
    C.finish(args, "bench_concurrency", payload)


if __name__ == "__main__":
    main()
