"""C-STORE with the asynchronous operations window vs one operation at a time, one association.

The Asynchronous Operations Window (PS3.7 D.3.3.3, sub-item 53H) lets the requestor have
several operations outstanding: it sends the next C-STORE-RQ without waiting for the previous
response. Here the aiodimse SCU proposes ``async_window=(8, 8)`` and stores every file at
once with ``asyncio.gather`` (the window keeps at most 8 outstanding), against an aiodimse
``StorageServer(..., async_window=(8, 8))`` in a process of its own; the serial row is the
same client without the window, awaiting each store before the next, against the same
server. Both write every instance to disk as a Part 10 file before answering.

The window rows against DCMTK's storescp show that proposing the window to an SCP that does
not negotiate it still works: storescp accepts the association without granting a window,
so it is the default (1, 1) (PS3.7 D.3.3.3) and the stores run one at a time (the
"negotiated window" and "peak outstanding" columns say so).

Data: tiny 64x64 CT (~9.5 KiB; the round trip per operation dominates) and large 512x512
CT (~512 KiB; the bytes dominate), Explicit VR Little Endian. The client is timed from its
association request to its release (start-up excluded); rows are interleaved across runs
and the median is reported.

    python benchmarks/bench_window.py [--quick] [--runs 3] [--tiny 2000] [--large 500]
        [--window 8] [--profile DIR]
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    window: bool  # does the client propose the window (and gather the stores)?
    server: str  # aiodimse | dcmtk


def specs(window: int) -> tuple[Spec, ...]:
    gather = f"window ({window}, {window}) + gather"
    return (
        Spec("serial", "serial -> aiodimse SCP", False, "aiodimse"),
        Spec("window", f"{gather} -> aiodimse SCP", True, "aiodimse"),
        Spec("serial-dcmtk", "serial -> DCMTK storescp", False, "dcmtk"),
        Spec("window-dcmtk", f"{gather} -> DCMTK storescp", True, "dcmtk"),
    )


#: Which row each row's ratio divides by (the serial row against the same server).
BASELINE = {"window": "serial", "window-dcmtk": "serial-dcmtk"}


@dataclass
class Row(C.RowRuns):
    spec: Spec


@dataclass
class DataSet(C.InstanceSet):
    rows: list[Row] = field(default_factory=list)


def measure(
    row: Row,
    data: DataSet,
    scratch: Path,
    window: int,
    timeout: float,
    profile: Path | None,
    run: int,
) -> dict[str, Any]:
    """One run of one row: a fresh server, one client association, count the stored files."""
    out = scratch / f"out-{row.spec.key}"
    shutil.rmtree(out, ignore_errors=True)
    spec = row.spec

    def prof(role: str) -> Path | None:
        if profile is None:
            return None
        return profile / f"{data.key}-{spec.key}-{role}-{run + 1}.prof"

    worker: C.Worker | None = None
    peer: peers.PeerProcess | None = None
    try:
        if spec.server == "dcmtk":
            peer = peers.start_storescp(peers.free_port(), out, work_dir=scratch)
            port, pid = peer.port, peer.pid
        else:
            worker = C.start_server(
                "window",
                "--dir",
                out,
                "--window",
                window,
                script=C.RETRIEVE_WORKERS,
                timeout=60.0,
                profile=prof("server"),
            )
            port, pid = worker.port, worker.pid
    except (C.WorkerError, peers.PeerError) as exc:
        return {"seconds": 0.0, "stored": 0, "error": f"server did not start: {exc}"[-800:]}
    server_cpu = C.TreeCPU(pid)
    result: dict[str, Any] = {"seconds": 0.0, "error": "not run"}
    try:
        with server_cpu:
            args: list[object] = ["window-store", "--port", port, "--files-from", data.file_list]
            args += ["--window", window if spec.window else 0]
            args += ["--dimse-timeout", min(60.0, timeout / 2)]
            try:
                result = C.run_client(
                    *args,
                    timeout=timeout,
                    script=C.RETRIEVE_WORKERS,
                    profile=prof("client"),
                    process_cpu=True,
                )
            except C.WorkerError as exc:
                result = {"seconds": 0.0, "error": str(exc)[-800:]}
    finally:
        if peer is not None:
            peer.stop()
        if worker is not None:
            err = worker.stop()
            if err.strip():
                result["server_stderr"] = err[-1000:]
    result["stored"] = C.count_files(out)
    result["server_cpu_seconds"] = server_cpu.seconds
    shutil.rmtree(out, ignore_errors=True)
    return result


def _cpu_ms(runs: list[dict[str, Any]], key: str, n: int) -> float | None:
    return C.median([1000 * float(r[key]) / n for r in runs if r.get("seconds") and key in r])


def _window_text(runs: list[dict[str, Any]], key: str) -> str:
    seen = sorted({tuple(r[key]) if r.get(key) else () for r in runs})
    return ", ".join("(" + ", ".join(str(v) for v in w) + ")" if w else "none" for w in seen)


def _problems(run: dict[str, Any], n: int) -> list[str]:
    """What went wrong in one run of ``n`` instances (empty strings for what did not)."""
    return [
        f"{n - int(run['stored'])} instance(s) missing on the server"
        if int(run["stored"]) != n
        else "",
        f"{run['failed']} store(s) not Success" if run.get("failed") else "",
        str(run.get("error") or ""),
    ]


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], runs=True)
    C.add_set_options(parser, "tiny", "large")
    parser.add_argument("--window", type=int, default=8, help="operations window (default 8)")
    C.add_row_options(parser, "the aiodimse client and server")
    args = parser.parse_args()
    runs = C.runs_of(args)
    timeout = 60.0 if args.quick else 600.0
    dcmtk = C.have_dcmtk()
    window = args.window

    env = C.environment()
    print(f"bench_window: C-STORE, operations window vs serial, one association; {C.load_caveat()}")
    print(f"{env['cpus']} CPUs: client and server are one process each. {C.NODELAY_NOTE}")

    with C.scratch_dir("aiodimse-bench-window-") as scratch:
        started = time.perf_counter()
        sets: list[DataSet] = []
        for key, n, size in C.set_counts(args, "tiny", "large"):
            if n <= 0:
                continue
            data = C.write_instance_set(DataSet, scratch, key, n, size, f"bench-window-{key}")
            for spec in specs(window):
                if args.only and spec.key not in args.only:
                    continue
                row = Row(spec)
                if spec.server == "dcmtk" and not dcmtk:
                    row.skipped = "DCMTK not installed"
                data.rows.append(row)
            sets.append(data)
        print(f"generated the data sets in {time.perf_counter() - started:.1f} s")

        for data in sets:
            n = len(data.files)
            for run, row in C.pending(data.rows, runs):
                result = measure(row, data, scratch, window, timeout, args.profile, run)
                row.add_run(run, result)
                stored = int(result["stored"])
                seconds = float(result.get("seconds") or 0.0)
                if seconds <= 0:
                    what = f"{data.key}: {row.spec.label}"
                    print(f"  run {run + 1}/{runs} {what}: {result['error']}")
                    continue
                row.add_rate(stored, seconds, n, data.total_bytes)
                note = f"  stored {stored}/{n}" if stored != n else ""
                print(
                    f"  run {run + 1}/{runs} {data.key:5s} {row.spec.label:42s}"
                    f" {stored / seconds:8.1f} inst/s  peak outstanding"
                    f" {result.get('peak_outstanding')}{note}",
                    flush=True,
                )

    payload: dict[str, Any] = {
        "benchmark": "bench_window",
        "quick": args.quick,
        "runs": runs,
        "window": window,
        "environment": env,
        "load_after": C.load_caveat(),
        "sets": [],
    }
    for data in sets:
        n = len(data.files)
        med = {r.spec.key: C.median(r.rates) for r in data.rows}
        table: list[list[object]] = []
        for row in data.rows:
            if row.skipped:
                table.append([row.spec.label, *([None] * 7), row.skipped])
                continue
            rate = med[row.spec.key]
            base = BASELINE.get(row.spec.key)
            table.append(
                [
                    row.spec.label,
                    rate,
                    C.median(row.mib_rates),
                    C.ratio(rate, med.get(base)) if base else "1.00x",
                    _window_text(row.runs, "negotiated_window"),
                    max((int(r.get("peak_outstanding") or 0) for r in row.runs), default=None),
                    _cpu_ms(row.runs, "cpu_seconds", n),
                    _cpu_ms(row.runs, "server_cpu_seconds", n),
                    f"{sum(int(r['stored']) for r in row.runs)}/{len(row.runs) * n}",
                ]
            )
        C.print_table(
            f"C-STORE, one association, {data.name}, median of {runs}",
            [
                "aiodimse SCU -> SCP",
                "inst/s",
                "MiB/s",
                "vs serial",
                "negotiated window",
                "peak outstanding",
                "client CPU ms/inst",
                "server CPU ms/inst",
                "stored",
            ],
            table,
        )
        C.print_problems(
            "missing instances and failures (counted above, never hidden):",
            [(row.spec.label, row) for row in data.rows],
            _problems,
            n,
        )
        payload["sets"].append(
            {
                "name": data.key,
                "instances": n,
                "total_bytes": data.total_bytes,
                "rows": [r.summary(r.spec.key, r.spec.label) for r in data.rows],
            }
        )
    print()
    print(
        "vs serial: against the serial row on the same server. peak outstanding: most C-STORE "
        "requests invoked and not yet answered at once, seen by the client."
    )
    C.finish(args, "bench_window", payload, args.profile)


if __name__ == "__main__":
    main()
