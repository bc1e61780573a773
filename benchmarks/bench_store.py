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

import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.dicomfile import read_part10
from aiodimse.testing import peers


@dataclass
class Row:
    """One client/server pairing."""

    key: str
    label: str
    client: str  # aiodimse | pynetdicom | dcmtk
    server: str  # aiodimse | pynetdicom | dcmtk
    rates: list[float] = field(default_factory=list)
    mib_rates: list[float] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

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
class DataSet:
    key: str
    name: str
    files: list[Path]
    file_list: Path
    total_bytes: int
    rows: list[Row]
    syntax: str


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


#: storescu logs with millisecond timestamps (DCMTK's log4cplus-style --log-config), so that
#: its association can be timed like the Python clients: request -> release.
_DCMTK_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%q} %m%n
"""


def _log_seconds(line: str) -> float | None:
    stamp = line.split(" ", 1)[0]
    try:
        h, m, rest = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    except ValueError:
        return None


def storescu_timing(log: str) -> tuple[float | None, int, int]:
    """(seconds from "Requesting Association" to "Releasing Association", successes,
    other responses) from storescu's timestamped log."""
    begin = end = None
    ok = other = 0
    for line in log.splitlines():
        if "Requesting Association" in line:
            begin = _log_seconds(line)
        elif "Releasing Association" in line or "Association Release" in line:
            end = _log_seconds(line) if end is None else end
        elif "Received Store Response" in line:
            if "(Success)" in line:
                ok += 1
            else:
                other += 1
    if begin is None or end is None:
        return None, ok, other
    if end < begin:  # past midnight
        end += 86400
    return end - begin, ok, other


def run_storescu(
    port: int, files: list[Path], max_pdu: int, timeout: float, scratch: Path
) -> dict[str, Any]:
    """DCMTK's storescu; timed from its association request to its release (its own log)."""
    cfg = scratch / "storescu-log.cfg"
    cfg.write_text(_DCMTK_LOG_CONFIG, encoding="ascii")
    argv = [peers.dcmtk_tool("storescu"), "--log-config", str(cfg)]
    argv += ["-aet", "BENCHSCU", "-aec", "STORESCP"]
    argv += ["-to", "10", "-ta", "10", "-td", str(int(min(30.0, timeout / 2)))]
    if max_pdu:
        argv += ["--max-pdu", str(max_pdu)]
    argv += ["127.0.0.1", str(port), *(str(f) for f in files)]
    start = time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=peers.peer_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - start, "ok": 0, "stalls": 1, "timeout": True}
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    seconds, ok, other = storescu_timing(out.stdout + out.stderr)
    return {
        # The log has millisecond resolution; fall back to the process time without it.
        "seconds": seconds if seconds else wall,
        "process_seconds": wall,
        # The whole process: its start-up and file scan included (a small part).
        "cpu_seconds": cpu,
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


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 3; quick 1)")
    parser.add_argument("--large", type=int, default=None, help="512x512 instances (default 500)")
    parser.add_argument("--tiny", type=int, default=None, help="64x64 instances (default 2000)")
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
    parser.add_argument("--only", nargs="*", help="row keys to run (default: all)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run aiodimse's client and server processes under cProfile, .prof files here "
        "(slows them down: the rates are then not comparable)",
    )
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n_large = args.large if args.large is not None else (10 if args.quick else 500)
    n_tiny = args.tiny if args.tiny is not None else (50 if args.quick else 2000)
    timeout = 60.0 if args.quick else 600.0
    dcmtk = C.have_dcmtk()

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
        for name, n, size in (("large", n_large, 512), ("tiny", n_tiny, 64)):
            if n <= 0:
                continue
            files = C.write_instances(scratch / f"src-{name}", n, size, size, f"bench-{name}")
            total = sum(f.stat().st_size for f in files)
            rows = []
            for key, label, client, server in ROWS:
                if args.only and key not in args.only:
                    continue
                row = Row(key, label, client, server)
                if row.needs_dcmtk and not dcmtk:
                    row.skipped = "DCMTK not installed"
                rows.append(row)
            sets.append(
                DataSet(
                    name,
                    f"{n} x {size}x{size} CT ({total / n / 1024:.1f} KiB each)",
                    files,
                    C.write_file_list(scratch / f"{name}.txt", files),
                    total,
                    rows,
                    read_part10(files[0]).transfer_syntax_uid,
                )
            )
        print(f"generated the data sets in {time.perf_counter() - t0:.1f} s")

        for data in sets:
            n = len(data.files)
            for run in range(runs):
                for row in data.rows:
                    if row.skipped:
                        continue
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
                    result["run"] = run
                    row.runs.append(result)
                    stored = int(result["stored"])
                    seconds = float(result["seconds"])
                    if seconds <= 0:
                        print(f"  run {run + 1}/{runs} {data.name}: {row.label}: {result['error']}")
                        continue
                    # The rate counts what the server committed, over the client's time.
                    row.rates.append(stored / seconds)
                    row.mib_rates.append(data.total_bytes * stored / n / seconds / C.MIB)
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
            notes = [
                f"  {row.label}, run {int(r.get('run', 0)) + 1}: "
                + ", ".join(
                    part
                    for part in (
                        f"{r['stalls']} C-STORE response(s) never seen within the DIMSE timeout"
                        " (the client aborted, then went on on a new association)"
                        if r.get("stalls")
                        else "",
                        f"{n - int(r['stored'])} instance(s) missing on the server"
                        if int(r["stored"]) != n
                        else "",
                        str(r["error"]) if r.get("error") else "",
                    )
                    if part
                )
                for row in data.rows
                for r in row.runs
                if r.get("stalls") or r.get("error") or int(r["stored"]) != n
            ]
            if notes:
                print("stalls and failures (counted above, never hidden):")
                print("\n".join(notes))
            payload["sets"].append(
                {
                    "name": data.name,
                    "instances": n,
                    "total_bytes": data.total_bytes,
                    "rows": [
                        {
                            "key": r.key,
                            "label": r.label,
                            "skipped": r.skipped,
                            "median_inst_per_s": med.get(r.key),
                            "median_mib_per_s": C.median(r.mib_rates),
                            "rates": r.rates,
                            "runs": r.runs,
                        }
                        for r in data.rows
                    ],
                }
            )
    print()
    print(
        "CPU ms/inst = user+system time per instance of each side's process (steadier than "
        "rates under load; storescu's includes its start-up and file scan)."
    )
    print(f"after: {C.load_caveat()}")
    path = C.write_result(
        args.results_dir, "bench_store" + ("-quick" if args.quick else ""), payload
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
