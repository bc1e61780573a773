"""C-STORE throughput over loopback, one association: aiodimse vs pynetdicom vs DCMTK.

Two data sets are generated once into a temporary folder (synthetic CT, Explicit VR Little
Endian): large 512x512x16-bit instances (~512 KiB) and tiny 64x64 ones (~9.5 KiB). Each row
sends all of one data set over one association, client and server in separate processes on
127.0.0.1, every server writing each instance to disk as a Part 10 file. Rows are interleaved
across runs (so that load drifting during the benchmark hits all of them alike) and the
median of the runs is reported.

    python benchmarks/bench_store.py [--quick] [--runs 3] [--large 500] [--tiny 2000]

Timing: every client is timed from its association request to its release: the Python
clients time themselves (interpreter start-up excluded), storescu is timed from its own
millisecond-stamped log (its start-up and its scan of the files' headers excluded; the
whole process time is kept in the JSON as ``process_seconds``). pynetdicom runs in its
fastest documented mode (STORE_SEND_CHUNKED_DATASET / STORE_RECV_CHUNKED_DATASET: no
decoding on either side). Every client proposes only the files' own transfer syntax, so that
no client converts anything (see ``--aiodimse-contexts``).

CPU ms/inst: user + system CPU time of each side's process (all its threads) per instance,
from /proc/<pid>/stat for servers and the process itself for Python clients (storescu's
includes its start-up and its file scan). On a loaded machine it is a steadier comparison
than the rates, which also measure how often each process got a CPU.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.dicomfile import read_part10
from aiodimse.testing import peers


@dataclass
class Row(C.RowRuns):
    """One client/server pairing."""

    key: str
    label: str
    client: str  # aiodimse | pynetdicom | dcmtk
    server: str  # aiodimse | pynetdicom | dcmtk

    @property
    def needs_dcmtk(self) -> bool:
        return "dcmtk" in (self.client, self.server)


ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("aiodimse", "aiodimse SCU -> aiodimse SCP", "aiodimse", "aiodimse"),
    ("pynetdicom", "pynetdicom SCU -> pynetdicom SCP", "pynetdicom", "pynetdicom"),
    ("dcmtk", "DCMTK storescu -> storescp", "dcmtk", "dcmtk"),
    ("aiodimse-dcmtk", "aiodimse SCU -> DCMTK storescp", "aiodimse", "dcmtk"),
    ("dcmtk-aiodimse", "DCMTK storescu -> aiodimse SCP", "dcmtk", "aiodimse"),
)


@dataclass
class DataSet(C.InstanceSet):
    rows: list[Row] = field(default_factory=list)
    syntax: str = ""


class Server:
    """Whichever server a row needs, started fresh for every run and stopped by PID."""

    def __init__(
        self, kind: str, out_dir: Path, work_dir: Path, max_pdu: int, profile: Path | None
    ) -> None:
        self.kind = kind
        self.out_dir = out_dir
        self.worker: C.Worker | None = None
        self.peer: peers.PeerProcess | None = None
        if kind == "dcmtk":
            extra = ["--max-pdu", str(max_pdu)] if max_pdu else []
            self.peer = peers.start_storescp(
                peers.free_port(), out_dir, aet="STORESCP", extra=extra, work_dir=work_dir
            )
            self.port = self.peer.port
        else:
            args: list[object] = [kind, "--dir", out_dir]
            if max_pdu:
                args += ["--max-pdu", max_pdu]
            self.worker = C.start_server(*args, profile=profile if kind == "aiodimse" else None)
            self.port = self.worker.port

    @property
    def pid(self) -> int:
        if self.peer is not None:
            return self.peer.pid
        assert self.worker is not None
        return self.worker.pid

    def stop(self) -> str:
        if self.peer is not None:
            self.peer.stop()
            return self.peer.log()[-2000:]
        assert self.worker is not None
        return self.worker.stop()[-2000:]


def storescu_timing(log: str) -> tuple[float | None, int, int]:
    """(seconds from "Requesting Association" to "Releasing Association", successes,
    other responses) from storescu's timestamped log."""
    begin = end = None
    ok = other = 0
    for line in log.splitlines():
        if "Requesting Association" in line:
            begin = C.log_seconds(line)
        elif "Releasing Association" in line or "Association Release" in line:
            end = C.log_seconds(line) if end is None else end
        elif "Received Store Response" in line:
            if "(Success)" in line:
                ok += 1
            else:
                other += 1
    return C.log_span(begin, end), ok, other


def run_storescu(
    port: int, files: list[Path], max_pdu: int, timeout: float, scratch: Path
) -> dict[str, Any]:
    """DCMTK's storescu; timed from its association request to its release (its own log)."""
    cfg = C.write_dcmtk_log_config(scratch / "storescu-log.cfg")
    argv = [peers.dcmtk_tool("storescu"), "--log-config", str(cfg)]
    argv += ["-aet", "BENCHSCU", "-aec", "STORESCP"]
    argv += ["-to", "10", "-ta", "10", "-td", str(int(min(30.0, timeout / 2)))]
    if max_pdu:
        argv += ["--max-pdu", str(max_pdu)]
    argv += ["127.0.0.1", str(port), *(str(f) for f in files)]
    done = C.run_tool(argv, timeout)
    out = done.out
    if out is None:
        return {"seconds": done.seconds, "ok": 0, "stalls": 1, "timeout": True}
    seconds, ok, other = storescu_timing(out.stdout + out.stderr)
    return {
        # The log has millisecond resolution; fall back to the process time without it.
        "seconds": seconds if seconds else done.seconds,
        "process_seconds": done.seconds,
        # The whole process: its start-up and file scan included (a small part).
        "cpu_seconds": done.cpu_seconds,
        "ok": ok,
        "failed": other,
        "returncode": out.returncode,
        "stderr": out.stderr[-1000:],
        "stalls": 0,
    }


def measure(
    row: Row,
    data: DataSet,
    scratch: Path,
    max_pdu: int,
    timeout: float,
    contexts: str,
    profile_dir: Path | None = None,
    run: int = 0,
) -> dict[str, Any]:
    """One run of one row: fresh server, one client association, count the stored files.

    With ``profile_dir``, aiodimse's processes run under cProfile and leave
    ``<set>-<row>-<server|client>-<run>.prof`` there."""
    out_dir = scratch / f"out-{row.key}"
    shutil.rmtree(out_dir, ignore_errors=True)

    def prof(role: str) -> Path | None:
        if profile_dir is None:
            return None
        return profile_dir / f"{data.key}-{row.key}-{role}-{run + 1}.prof"

    try:
        server = Server(row.server, out_dir, scratch, max_pdu, prof("server"))
    except (C.WorkerError, peers.PeerError) as exc:
        return {"seconds": 0.0, "stored": 0, "error": f"server did not start: {exc}"[-800:]}
    server_cpu = C.proc_cpu_seconds(server.pid)
    try:
        if row.client == "dcmtk":
            result = run_storescu(server.port, data.files, max_pdu, timeout, scratch)
        else:
            args: list[object] = ["store", row.client, "--port", server.port]
            args += ["--files-from", data.file_list, "--dimse-timeout", min(30.0, timeout / 2)]
            if max_pdu:
                args += ["--max-pdu", max_pdu]
            if row.client == "aiodimse":
                args += ["--contexts", contexts]
            try:
                client_profile = prof("client") if row.client == "aiodimse" else None
                result = C.run_client(*args, timeout=timeout, profile=client_profile)
            except C.WorkerError as exc:
                result = {"seconds": timeout, "ok": 0, "stalls": 1, "error": str(exc)[-800:]}
    finally:
        server_cpu_after = C.proc_cpu_seconds(server.pid)
        server_hwm = C.proc_status(server.pid).get("VmHWM")
        server_log = server.stop()
    stored = C.count_files(out_dir)
    result["stored"] = stored
    result["server_peak_rss_kib"] = server_hwm
    if server_cpu is not None and server_cpu_after is not None:
        result["server_cpu_seconds"] = server_cpu_after - server_cpu
    if result.get("returncode"):
        result["server_log"] = server_log
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _cpu_ms(runs: list[dict[str, Any]], side: str, n: int) -> float | None:
    """Median CPU milliseconds per instance of one side (user + system, all its threads)."""
    key = "cpu_seconds" if side == "client" else "server_cpu_seconds"
    values = [1000 * float(r[key]) / n for r in runs if r.get(key) is not None]
    return C.median(values)


def _problems(run: dict[str, Any], n: int) -> list[str]:
    """What went wrong in one run of ``n`` instances (empty strings for what did not)."""
    return [
        f"{run['stalls']} C-STORE response(s) never seen within the DIMSE timeout"
        " (the client aborted, then went on on a new association)"
        if run.get("stalls")
        else "",
        f"{n - int(run['stored'])} instance(s) missing on the server"
        if int(run["stored"]) != n
        else "",
        str(run.get("error") or ""),
    ]


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], runs=True)
    C.add_set_options(parser, "large", "tiny")
    parser.add_argument(
        "--max-pdu",
        type=int,
        default=0,
        help="Maximum Length for every toolkit (default: each toolkit's own default)",
    )
    parser.add_argument(
        "--aiodimse-contexts",
        choices=("exact", "for-files"),
        default="exact",
        help="exact: propose only the files' own transfer syntax, like the other clients "
        "(default); for-files: aiodimse.contexts.for_files(), which also offers Deflated",
    )
    C.add_row_options(parser, "aiodimse's client and server processes")
    args = parser.parse_args()
    runs = C.runs_of(args)
    timeout = 60.0 if args.quick else 600.0
    dcmtk = C.dcmtk_or_exit()

    env = C.environment()
    print(f"bench_store: C-STORE over loopback, one association; {C.load_caveat()}")
    print(C.NODELAY_NOTE)
    print(
        "Maximum Length: "
        + (
            f"{args.max_pdu} for every toolkit"
            if args.max_pdu
            else "each toolkit's default (aiodimse 262144, pynetdicom 16382, DCMTK 16384)"
        )
    )

    with C.scratch_dir("aiodimse-bench-store-") as scratch:
        t0 = time.perf_counter()
        sets: list[DataSet] = []
        for name, n, size in C.set_counts(args, "large", "tiny"):
            if n <= 0:
                continue
            data = C.write_instance_set(DataSet, scratch, name, n, size, f"bench-{name}")
            data.syntax = read_part10(data.files[0]).transfer_syntax_uid
            for key, label, client, server in ROWS:
                if args.only and key not in args.only:
                    continue
                row = Row(key, label, client, server)
                if row.needs_dcmtk and not dcmtk:
                    row.skipped = "DCMTK not installed"
                data.rows.append(row)
            sets.append(data)
        print(f"generated the data sets in {time.perf_counter() - t0:.1f} s")

        for data in sets:
            n = len(data.files)
            for run, row in C.pending(data.rows, runs):
                result = measure(
                    row,
                    data,
                    scratch,
                    args.max_pdu,
                    timeout,
                    args.aiodimse_contexts,
                    args.profile,
                    run,
                )
                row.add_run(run, result)
                stored = int(result["stored"])
                seconds = float(result["seconds"])
                if seconds <= 0:
                    print(f"  run {run + 1}/{runs} {data.name}: {row.label}: {result['error']}")
                    continue
                # The rate counts what the server committed, over the client's time.
                row.add_rate(stored, seconds, n, data.total_bytes)
                note = ""
                if stored != n or result.get("stalls"):
                    note = f"  stored {stored}/{n}, stalls {result.get('stalls', 0)}"
                converted = [t for t in result.get("transfer_syntaxes", []) if t != data.syntax]
                if converted:
                    note += f"  (sent as {', '.join(converted)}: converted by the client)"
                print(
                    f"  run {run + 1}/{runs} {data.name}: {row.label:34s}"
                    f" {stored / seconds:8.1f} inst/s{note}",
                    flush=True,
                )

        payload: dict[str, Any] = {
            "benchmark": "bench_store",
            "quick": args.quick,
            "runs": runs,
            "max_pdu": args.max_pdu or "defaults",
            "environment": env,
            "load_after": C.load_caveat(),
            "sets": [],
        }
        for data in sets:
            n = len(data.files)
            med: dict[str, float | None] = {r.key: C.median(r.rates) for r in data.rows}
            table: list[list[object]] = []
            for row in data.rows:
                if row.skipped:
                    table.append([row.label, *([None] * 7), row.skipped, None])
                    continue
                stored = sum(int(r["stored"]) for r in row.runs)
                stalls = sum(int(r.get("stalls") or 0) for r in row.runs)
                failed = len(row.runs) * n - stored
                rate = med[row.key]
                table.append(
                    [
                        row.label,
                        rate,
                        C.median(row.mib_rates),
                        C.ratio(rate, med.get("pynetdicom")),
                        C.ratio(rate, med.get("dcmtk")),
                        _cpu_ms(row.runs, "client", n),
                        _cpu_ms(row.runs, "server", n),
                        C.median(
                            [
                                r["server_peak_rss_kib"] / 1024
                                for r in row.runs
                                if r.get("server_peak_rss_kib")
                            ]
                        ),
                        f"{stored}/{len(row.runs) * n}",
                        f"{stalls} / {failed}",
                    ]
                )
            C.print_table(
                f"C-STORE, one association, {data.name}, median of {runs}",
                [
                    "client -> server",
                    "inst/s",
                    "MiB/s",
                    "vs pynetdicom",
                    "vs DCMTK",
                    "client CPU ms/inst",
                    "server CPU ms/inst",
                    "server peak RSS MiB",
                    "stored",
                    "stalls / missing",
                ],
                table,
            )
            C.print_problems(
                "stalls and failures (counted above, never hidden):",
                [(row.label, row) for row in data.rows],
                _problems,
                n,
                sep=", ",
            )
            payload["sets"].append(
                {
                    "name": data.name,
                    "instances": n,
                    "total_bytes": data.total_bytes,
                    "rows": [r.summary(r.key, r.label) for r in data.rows],
                }
            )
    print()
    print(
        "CPU ms/inst = user+system time per instance of each side's process (steadier than "
        "rates under load; storescu's includes its start-up and file scan)."
    )
    C.finish(args, "bench_store", payload)


if __name__ == "__main__":
    main()
