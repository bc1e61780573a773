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

The reference row is DCMTK's own pair, ``storescu -> storescp`` (one C-STORE at a time: DCMTK
does not propose the window), run and timed exactly as in bench_store.py (its functions are
imported from there): storescu is timed from its own millisecond-stamped log, from its
association request to its release (its start-up and its scan of the files' headers
excluded; the whole process time is kept in the JSON as ``process_seconds``), and its client
CPU is that of the whole process (start-up and file scan included). "vs DCMTK" is each row's
rate over that row's in the same run (above 1.00x: faster than DCMTK). Without DCMTK the
DCMTK rows are skipped, except under ``CI=true``, where a missing DCMTK is an error.

Data: tiny 64x64 CT (~9.5 KiB; the round trip per operation dominates) and large 512x512
CT (~512 KiB; the bytes dominate), Explicit VR Little Endian. The client is timed from its
association request to its release (start-up excluded); every run counts the files its
server wrote; rows are interleaved across runs and the median is reported.

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
from bench_store import run_storescu

from aiodimse.testing import peers


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    window: bool  # does the client propose the window (and gather the stores)?
    server: str  # aiodimse | dcmtk
    client: str = "aiodimse"  # aiodimse | dcmtk (storescu, as bench_store.py runs it)

    @property
    def needs_dcmtk(self) -> bool:
        return "dcmtk" in (self.client, self.server)


def specs(window: int) -> tuple[Spec, ...]:
    gather = f"aiodimse window ({window}, {window}) + gather"
    return (
        Spec("serial", "aiodimse serial -> aiodimse SCP", False, "aiodimse"),
        Spec("window", f"{gather} -> aiodimse SCP", True, "aiodimse"),
        Spec("serial-dcmtk", "aiodimse serial -> DCMTK storescp", False, "dcmtk"),
        Spec("window-dcmtk", f"{gather} -> DCMTK storescp", True, "dcmtk"),
        Spec(DCMTK, "DCMTK storescu -> storescp", False, "dcmtk", client="dcmtk"),
    )


#: The key of the reference row: DCMTK's own storescu -> storescp.
DCMTK = "dcmtk"
#: Which row each row's "vs serial" divides by (the serial row against the same server);
#: the serial rows are their own, the DCMTK row has none.
BASELINE = {
    "serial": "serial",
    "window": "serial",
    "serial-dcmtk": "serial-dcmtk",
    "window-dcmtk": "serial-dcmtk",
}


@dataclass
class Row(C.RowRuns):
    spec: Spec


@dataclass
class DataSet(C.InstanceSet):
    rows: list[Row] = field(default_factory=list)


def _aiodimse_client(
    port: int, data: DataSet, spec: Spec, window: int, timeout: float, profile: Path | None
) -> dict[str, Any]:
    """The aiodimse client of a row, serial or through the window, timed by itself."""
    args: list[object] = ["window-store", "--port", port, "--files-from", data.file_list]
    args += ["--window", window if spec.window else 0]
    args += ["--dimse-timeout", min(60.0, timeout / 2)]
    try:
        return C.run_client(
            *args, timeout=timeout, script=C.RETRIEVE_WORKERS, profile=profile, process_cpu=True
        )
    except C.WorkerError as exc:
        return {"seconds": 0.0, "error": str(exc)[-800:]}


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
            if spec.client == "dcmtk":
                # bench_store.py's storescu, as it runs it there (DCMTK's default max PDU).
                result = run_storescu(port, data.files, 0, timeout, scratch)
            else:
                result = _aiodimse_client(port, data, spec, window, timeout, prof("client"))
    finally:
        if peer is not None:
            peer.stop()
            if result.get("returncode"):
                result["server_log"] = peer.log()[-2000:]
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
        "storescu did not finish within the timeout (killed)" if run.get("timeout") else "",
        f"exit status {run['returncode']}" if run.get("returncode") else "",
        str(run.get("error") or ""),
    ]


def _vs(rate: float | None, reference: float | None) -> float | None:
    """``rate / reference`` for the JSON result, or None when either is missing."""
    if rate is None or reference is None or reference <= 0:
        return None
    return round(rate / reference, 4)


def main() -> int:
    parser = C.base_parser(__doc__.splitlines()[0], runs=True)
    C.add_set_options(parser, "tiny", "large")
    parser.add_argument("--window", type=int, default=8, help="operations window (default 8)")
    C.add_row_options(parser, "the aiodimse client and server")
    args = parser.parse_args()
    runs = C.runs_of(args)
    timeout = 60.0 if args.quick else 600.0
    window = args.window
    wanted = [s for s in specs(window) if not args.only or s.key in args.only]
    dcmtk = C.dcmtk_or_exit() if any(s.needs_dcmtk for s in wanted) else C.have_dcmtk()

    env = C.environment()
    print(f"bench_window: C-STORE, operations window vs serial, one association; {C.load_caveat()}")
    print(f"{env['cpus']} CPUs: client and server are one process each. {C.NODELAY_NOTE}")
    if not dcmtk:
        print("DCMTK rows skipped: DCMTK (storescu, storescp) not installed")
    width = max(len(s.label) for s in wanted) if wanted else 0

    with C.scratch_dir("aiodimse-bench-window-") as scratch:
        started = time.perf_counter()
        sets: list[DataSet] = []
        for key, n, size in C.set_counts(args, "tiny", "large"):
            if n <= 0:
                continue
            data = C.write_instance_set(DataSet, scratch, key, n, size, f"bench-window-{key}")
            for spec in wanted:
                row = Row(spec)
                if spec.needs_dcmtk and not dcmtk:
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
                peak = result.get("peak_outstanding")
                print(
                    f"  run {run + 1}/{runs} {data.key:5s} {row.spec.label:{width}s}"
                    f" {stored / seconds:8.1f} inst/s"
                    + (f"  peak outstanding {peak}" if peak is not None else "")
                    + note,
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
        summaries: list[dict[str, Any]] = []
        for row in data.rows:
            rate = med[row.spec.key]
            base = med.get(BASELINE.get(row.spec.key, ""))
            summaries.append(
                row.summary(
                    row.spec.key,
                    row.spec.label,
                    vs_serial=_vs(rate, base),
                    vs_dcmtk=_vs(rate, med.get(DCMTK)),
                )
            )
            if row.skipped:
                table.append([row.spec.label, *([None] * 8), row.skipped])
                continue
            storescu = row.spec.client == "dcmtk"  # it reports no window: it has none
            table.append(
                [
                    row.spec.label,
                    rate,
                    C.median(row.mib_rates),
                    C.ratio(rate, base),
                    C.ratio(rate, med.get(DCMTK)),
                    None if storescu else _window_text(row.runs, "negotiated_window"),
                    None
                    if storescu
                    else max((int(r.get("peak_outstanding") or 0) for r in row.runs), default=None),
                    _cpu_ms(row.runs, "cpu_seconds", n),
                    _cpu_ms(row.runs, "server_cpu_seconds", n),
                    f"{sum(int(r['stored']) for r in row.runs)}/{len(row.runs) * n}",
                ]
            )
        C.print_table(
            f"C-STORE, one association, {data.name}, median of {runs}",
            [
                "client -> server",
                "inst/s",
                "MiB/s",
                "vs serial",
                "vs DCMTK",
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
                "rows": summaries,
            }
        )
    print()
    print(
        "vs serial: against the aiodimse serial row on the same server. vs DCMTK: against "
        "DCMTK storescu -> storescp in the same run (above 1.00x: faster). peak outstanding: "
        "most C-STORE requests invoked and not yet answered at once, seen by the client. "
        "storescu's client CPU includes its start-up and file scan."
    )
    C.finish(args, "bench_window", payload, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
