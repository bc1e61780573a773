"""C-MOVE and C-GET of one study over loopback: aiodimse vs pynetdicom vs DCMTK, in one run.

One study of synthetic CT (512x512x16-bit, Explicit VR Little Endian, ~512 KiB per instance;
500 instances, ~256 MiB) is generated once and served by three Q/R SCPs, each in a process
of its own on 127.0.0.1:

- DCMTK's ``dcmqrscp``, filled once by C-STORE before anything is timed;
- the aiodimse archive (``aiodimse.archive.ArchiveServer``), filled with ``Archive.ingest``;
- a pynetdicom Q/R SCP over the same files (``_retrieve_workers.py serve pynetdicom-qr``):
  pynetdicom's C-GET/C-MOVE handlers must yield pydicom Datasets, so it reads each file
  with ``dcmread`` and pynetdicom re-encodes it as it sends it.

Rows (C-MOVE: SCU -> SCP -> destination; C-GET: SCU <- SCP):

- aiodimse SCU, C-MOVE to a ``StorageServer`` on the SCU's own loop (``receive=``), C-GET
  with ``contexts.for_get()`` into a ``DirectorySink``; against dcmqrscp and the archive;
- the same against the archive with pipelined sub-operations ("window 8"): the C-MOVE
  destination grants the SCP's sub-association 8 outstanding C-STOREs, the C-GET SCU
  proposes to perform 8 (the archive allows the window (8, 8), as ``qrscp --async-window 8``
  does). "vs serial" divides by the row without the window (same SCU, SCP and receiver;
  sub-operations one at a time, as with any peer that grants no window);
- pynetdicom SCU against the pynetdicom SCP: C-MOVE to the SCU's own storage SCP (same AE,
  started with ``start_server(block=False)``), C-GET with role selection and a C-STORE
  handler; both write received data sets straight to a file (STORE_RECV_CHUNKED_DATASET);
- DCMTK: ``movescu`` -> dcmqrscp -> ``storescp``; ``movescu --port`` (it receives the
  sub-operations itself); ``getscu`` <- dcmqrscp;
- and, to compare the two SCPs with the same client and destination, ``movescu`` -> archive
  -> ``storescp`` and ``getscu`` <- archive.

Each SCU runs in its own process and is timed from its association request to its release
(Python clients time themselves, start-up excluded; movescu/getscu from their own
millisecond-stamped log). A run counts only once every instance is on disk: the aiodimse
C-MOVE returns after its receiver committed them, pynetdicom's and DCMTK's SCPs wait for
each C-STORE response before the next sub-operation. inst/s = files found on disk afterwards
/ seconds; a row that lost instances says so. Rows are interleaved across runs; the median
is reported. Every toolkit uses its default Maximum Length (aiodimse 262144, pynetdicom
16382, DCMTK 16384): the sender's PDUs are as large as the receiver's limit.

CPU ms/inst: user + system time per instance. "SCU side" is the SCU process with its
receiver (same process for aiodimse, pynetdicom and movescu --port; plus storescp when that
is the destination); "SCP" is the Q/R SCP with the children it forks (dcmqrscp forks one
per association), sampled from /proc every 20 ms.

    python benchmarks/bench_retrieve.py [--quick] [--runs 3] [--instances 500]
        [--only move:aiodimse get:dcmtk ...] [--profile DIR]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers

CALLING_AE = "BENCHSCU"
DCMQRSCP_AE = "DCMQRSCP"
ARCHIVE_AE = "QRSCP"
PYNETDICOM_AE = "PYQRSCP"
#: Move destinations, each known to the SCPs that need it.
AIODIMSE_DEST = "AIODEST"
PYNETDICOM_DEST = "PYDEST"
STORESCP_DEST = "STORESCP"
MOVESCU_DEST = "MOVESCU"


@dataclass(frozen=True)
class Spec:
    service: str  # move | get
    key: str
    label: str
    client: str  # aiodimse | pynetdicom | movescu | movescu-port | getscu
    scp: str  # dcmqrscp | archive | pynetdicom
    #: The asynchronous operations window the receiver grants the SCP (0: none, serial).
    window: int = 0


_OWN = "(on the SCU's loop)"
#: The window of the pipelined rows: what the receiver grants, and the archive's default
#: number of outstanding sub-operations (aiodimse.scp.retrieve.SUB_OPERATION_WINDOW).
WINDOW = 8
SPECS: tuple[Spec, ...] = (
    Spec("move", "aiodimse", f"aiodimse -> archive -> aiodimse {_OWN}", "aiodimse", "archive"),
    Spec(
        "move",
        "aiodimse-window",
        f"aiodimse -> archive -> aiodimse, window {WINDOW}",
        "aiodimse",
        "archive",
        WINDOW,
    ),
    Spec(
        "move",
        "aiodimse-dcmqrscp",
        f"aiodimse -> dcmqrscp -> aiodimse {_OWN}",
        "aiodimse",
        "dcmqrscp",
    ),
    Spec(
        "move",
        "pynetdicom",
        "pynetdicom -> pynetdicom -> pynetdicom (SCU's own AE)",
        "pynetdicom",
        "pynetdicom",
    ),
    Spec("move", "dcmtk", "movescu -> dcmqrscp -> storescp", "movescu", "dcmqrscp"),
    Spec("move", "dcmtk-self", "movescu --port -> dcmqrscp -> movescu", "movescu-port", "dcmqrscp"),
    Spec("move", "dcmtk-archive", "movescu -> archive -> storescp", "movescu", "archive"),
    Spec("get", "aiodimse", "aiodimse <- archive", "aiodimse", "archive"),
    Spec(
        "get",
        "aiodimse-window",
        f"aiodimse <- archive, window {WINDOW}",
        "aiodimse",
        "archive",
        WINDOW,
    ),
    Spec("get", "aiodimse-dcmqrscp", "aiodimse <- dcmqrscp", "aiodimse", "dcmqrscp"),
    Spec("get", "pynetdicom", "pynetdicom <- pynetdicom", "pynetdicom", "pynetdicom"),
    Spec("get", "dcmtk", "getscu <- dcmqrscp", "getscu", "dcmqrscp"),
    Spec("get", "dcmtk-archive", "getscu <- archive", "getscu", "archive"),
)
#: The rows the ratio columns divide by (the same key in each service).
PYNETDICOM_ROW = "pynetdicom"
DCMTK_ROW = "dcmtk"
#: What the pipelined rows are compared with: the same SCU, SCP and receiver, no window.
SERIAL_ROW = "aiodimse"


@dataclass
class Row(C.RowRuns):
    spec: Spec

    @property
    def needs_dcmtk(self) -> bool:
        return self.spec.scp == "dcmqrscp" or self.spec.client in (
            "movescu",
            "movescu-port",
            "getscu",
        )


@dataclass
class Setup:
    """The study and the long-lived SCPs every row talks to."""

    files: list[Path]
    study: str
    total_bytes: int
    scratch: Path
    ports: dict[str, int]
    scps: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # name -> port, pid, AE
    stoppers: list[Any] = field(default_factory=list)


# -- the SCPs ------------------------------------------------------------------------------------


async def _fill(port: int, files: list[Path]) -> int:
    """C-STORE the study into dcmqrscp (it only knows what it received); how many succeeded."""
    import aiodimse
    from aiodimse.dicomfile import read_part10

    info = read_part10(files[0])
    contexts = [aiodimse.ContextRequest(info.sop_class_uid, (info.transfer_syntax_uid,))]
    ok = 0
    async with aiodimse.connect(
        "127.0.0.1", port, calling_ae="FILLER", called_ae=DCMQRSCP_AE, contexts=contexts
    ) as assoc:
        for path in files:
            status = await assoc.store(path, check=False)
            ok += status.code == 0
    return ok


def start_scps(setup: Setup, wanted: set[str], dcmtk: bool, profile: Path | None) -> None:
    """Start (and fill) the SCPs the chosen rows need; each stays up for the whole benchmark."""
    ports = setup.ports
    scratch = setup.scratch
    n = len(setup.files)
    if "dcmqrscp" in wanted and dcmtk:
        started = time.perf_counter()
        peer = peers.start_dcmqrscp(
            peers.free_port(),
            scratch / "dcmqrscp-storage",
            aet=DCMQRSCP_AE,
            hosts={
                AIODIMSE_DEST: ("127.0.0.1", ports["aiodimse"]),
                STORESCP_DEST: ("127.0.0.1", ports["storescp"]),
                MOVESCU_DEST: ("127.0.0.1", ports["movescu"]),
            },
            work_dir=scratch / "dcmqrscp-work",
        )
        setup.stoppers.append(peer.stop)
        stored = asyncio.run(_fill(peer.port, setup.files))
        if stored != n:
            raise RuntimeError(f"dcmqrscp took {stored} of {n} instances:\n{peer.log()[-2000:]}")
        setup.scps["dcmqrscp"] = (peer.port, peer.pid, DCMQRSCP_AE)
        print(f"dcmqrscp filled by C-STORE: {n} instances in {time.perf_counter() - started:.1f} s")
    if "archive" in wanted:
        from aiodimse.archive import Archive

        started = time.perf_counter()
        storage = scratch / "archive"
        with Archive(storage) as archive:
            archive.ingest(setup.files)
            indexed = archive.count("IMAGE")
        if indexed != n:
            raise RuntimeError(f"the archive indexed {indexed} of {n} instances")
        took = time.perf_counter() - started
        worker = C.start_server(
            "archive",
            "--dir",
            storage,
            "--ae",
            ARCHIVE_AE,
            "--dest",
            f"{AIODIMSE_DEST}={ports['aiodimse']}",
            "--dest",
            f"{STORESCP_DEST}={ports['storescp']}",
            "--window",
            WINDOW,
            script=C.RETRIEVE_WORKERS,
            timeout=60.0,
            profile=profile / "archive-server.prof" if profile else None,
        )
        setup.stoppers.append(worker.stop)
        setup.scps["archive"] = (worker.port, worker.pid, ARCHIVE_AE)
        print(f"archive filled by Archive.ingest: {n} instances in {took:.1f} s")
    if "pynetdicom" in wanted:
        file_list = C.write_file_list(scratch / "qr-files.txt", setup.files)
        worker = C.start_server(
            "pynetdicom-qr",
            "--files-from",
            file_list,
            "--ae",
            PYNETDICOM_AE,
            "--dest",
            f"{PYNETDICOM_DEST}={ports['pynetdicom']}",
            script=C.RETRIEVE_WORKERS,
            timeout=60.0,
        )
        setup.stoppers.append(worker.stop)
        setup.scps["pynetdicom"] = (worker.port, worker.pid, PYNETDICOM_AE)


# -- DCMTK clients ---------------------------------------------------------------------------


def dcmtk_timing(log: str) -> dict[str, Any]:
    """Association request -> release (seconds), C-MOVE/C-GET request -> final response, and
    the final status, from a movescu/getscu log with millisecond time stamps."""
    begin = end = sent = final = sub = None
    status = "none"
    for line in log.splitlines():
        if "Requesting Association" in line:
            begin = C.log_seconds(line)
        elif "Sub-Association Received" in line and sub is None:
            sub = C.log_seconds(line)
        elif "Sending Move Request" in line or "Sending C-GET Request" in line:
            sent = C.log_seconds(line)
        elif "Received Final Move Response" in line or (
            "Received C-GET Response" in line and "(Pending)" not in line
        ):
            final = C.log_seconds(line)
            status = line.rsplit("(", 1)[-1].rstrip(")") if "(" in line else line
        elif "Releasing Association" in line and end is None:
            end = C.log_seconds(line)

    return {
        "seconds": C.log_span(begin, end),
        "retrieve_seconds": C.log_span(sent, final),
        # movescu --port: from the C-MOVE-RQ to accepting the SCP's sub-association.
        "sub_association_wait": C.log_span(sent, sub),
        "status": status,
    }


def run_dcmtk(
    spec: Spec, setup: Setup, out: Path, timeout: float, log_config: Path
) -> dict[str, Any]:
    port, _, called = setup.scps[spec.scp]
    tool = "getscu" if spec.client == "getscu" else "movescu"
    argv = [peers.dcmtk_tool(tool), "--log-config", str(log_config)]
    argv += ["-aet", CALLING_AE, "-aec", called, "-S", "-to", "10", "-ta", "10", "-td", "60"]
    if spec.client == "movescu":
        argv += ["-aem", STORESCP_DEST]
    elif spec.client == "movescu-port":
        argv += ["-aem", MOVESCU_DEST, "--port", str(setup.ports["movescu"]), "-od", str(out)]
    else:
        argv += ["-od", str(out)]
    argv += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={setup.study}"]
    argv += ["127.0.0.1", str(port)]
    run = C.run_tool(argv, timeout)
    done = run.out
    if done is None:
        return {"seconds": 0.0, "error": f"{tool}: no result within {timeout:.0f} s"}
    result = dcmtk_timing(done.stdout + done.stderr)
    result["process_seconds"] = run.seconds
    if result["seconds"] is None:
        result["seconds"] = run.seconds
    # The whole process, start-up included (small for these tools).
    result["cpu_seconds"] = run.cpu_seconds
    result["returncode"] = done.returncode
    if done.returncode:
        result["stderr"] = (done.stdout + done.stderr)[-1500:]
    return result


# -- one row, one run ------------------------------------------------------------------------


def run_python(
    spec: Spec, setup: Setup, out: Path, timeout: float, profile_dir: Path | None, run: int
) -> dict[str, Any]:
    """An aiodimse or pynetdicom SCU in its own process (``_retrieve_workers.py``)."""
    port, _, called = setup.scps[spec.scp]
    args: list[object] = [spec.service, spec.client, "--port", port, "--called-ae", called]
    args += ["--study", setup.study, "--out", out, "--dimse-timeout", min(60.0, timeout / 2)]
    if spec.window:
        args += ["--window", spec.window]
    if spec.service == "move":
        dest_ae = AIODIMSE_DEST if spec.client == "aiodimse" else PYNETDICOM_DEST
        args += ["--dest-ae", dest_ae, "--dest-port", setup.ports[spec.client]]
    prof = None
    if profile_dir is not None and spec.client == "aiodimse":
        prof = profile_dir / f"{spec.service}-{spec.key}-client-{run + 1}.prof"
    try:
        return C.run_client(
            *args, timeout=timeout, script=C.RETRIEVE_WORKERS, profile=prof, process_cpu=True
        )
    except C.WorkerError as exc:
        return {"seconds": 0.0, "error": str(exc)[-800:]}


def measure(
    spec: Spec,
    setup: Setup,
    timeout: float,
    log_config: Path,
    profile_dir: Path | None,
    run: int,
) -> dict[str, Any]:
    """One run of one row: empty destination folder, one SCU association, count the files."""
    out = setup.scratch / f"out-{spec.service}-{spec.key}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _, scp_pid, _ = setup.scps[spec.scp]
    dest: peers.PeerProcess | None = None
    if spec.client == "movescu":
        try:
            dest = peers.start_storescp(
                setup.ports["storescp"], out, aet=STORESCP_DEST, work_dir=setup.scratch
            )
        except peers.PeerError as exc:
            return {"seconds": 0.0, "files": 0, "error": f"storescp did not start: {exc}"[-800:]}
    scp_cpu = C.TreeCPU(scp_pid)
    dest_cpu = C.TreeCPU(dest.pid) if dest is not None else None
    code: int | None = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(scp_cpu)
            if dest_cpu is not None:
                stack.enter_context(dest_cpu)
            if spec.client in ("aiodimse", "pynetdicom"):
                result = run_python(spec, setup, out, timeout, profile_dir, run)
            else:
                result = run_dcmtk(spec, setup, out, timeout, log_config)
    finally:
        if dest is not None:
            code = dest.stop()
    if dest is not None and code not in (0, -signal.SIGTERM, None):
        result["dest_log"] = dest.log()[-1000:]
    result["files"] = C.count_files(out)
    result["scp_cpu_seconds"] = scp_cpu.seconds
    if dest_cpu is not None:
        result["dest_cpu_seconds"] = dest_cpu.seconds
    shutil.rmtree(out, ignore_errors=True)
    return result


# -- the benchmark -----------------------------------------------------------------------------


def _cpu_ms(runs: list[dict[str, Any]], keys: tuple[str, ...], n: int) -> float | None:
    values = [
        1000 * sum(float(r.get(k) or 0.0) for k in keys) / n
        for r in runs
        if r.get("seconds") and r.get(keys[0]) is not None
    ]
    return C.median(values)


def _problems(run: dict[str, Any], n: int) -> list[str]:
    """What went wrong in one run of ``n`` instances: nothing unless instances are missing or
    it failed, then with the tail of the client's stderr."""
    missing = n - int(run.get("files", 0))
    if not missing and not run.get("error"):
        return []
    return [
        f"{missing} instance(s) missing on disk" if missing else "",
        str(run.get("error") or ""),
        str(run.get("stderr") or "")[-300:],
    ]


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0], runs=True)
    parser.add_argument(
        "--instances", type=int, default=None, help="instances in the study (default 500; quick 10)"
    )
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    C.add_row_options(
        parser,
        "aiodimse's client processes and the archive",
        only="rows to run as service:key, e.g. move:aiodimse (default: all)",
    )
    args = parser.parse_args()
    runs = C.runs_of(args)
    n = args.instances if args.instances is not None else (10 if args.quick else 500)
    timeout = 60.0 if args.quick else 600.0
    dcmtk = C.dcmtk_or_exit()

    env = C.environment()
    print(f"bench_retrieve: C-MOVE and C-GET of one study over loopback; {C.load_caveat()}")
    print(C.NODELAY_NOTE)
    print(
        f"{os.cpu_count()} CPUs: a move keeps up to three processes busy (SCU + receiver, SCP, "
        "and storescp when it is the destination); they share the cores."
    )
    rows = [Row(s) for s in SPECS if not args.only or f"{s.service}:{s.key}" in args.only]
    for row in rows:
        if row.needs_dcmtk and not dcmtk:
            row.skipped = "DCMTK not installed"
    wanted = {r.spec.scp for r in rows if not r.skipped}

    with C.scratch_dir("aiodimse-bench-retrieve-") as scratch:
        started = time.perf_counter()
        files = C.write_instances(scratch / "src", n, args.size, args.size, "bench-retrieve")
        total = sum(f.stat().st_size for f in files)
        import pydicom

        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        each = f"{total / n / 1024:.1f} KiB each, {total / C.MIB:.0f} MiB"
        name = f"{n} x {args.size}x{args.size} CT ({each})"
        print(f"generated {name} in {time.perf_counter() - started:.1f} s")
        ports = dict(
            zip(("aiodimse", "pynetdicom", "storescp", "movescu"), peers.free_ports(4), strict=True)
        )
        setup = Setup(files, study, total, scratch, ports)
        log_config = C.write_dcmtk_log_config(scratch / "dcmtk-log.cfg")
        try:
            start_scps(setup, wanted, dcmtk, args.profile)
            for run, row in C.pending(rows, runs):
                spec = row.spec
                result = measure(spec, setup, timeout, log_config, args.profile, run)
                row.add_run(run, result)
                got = int(result.get("files", 0))
                seconds = float(result.get("seconds") or 0.0)
                if seconds <= 0:
                    what = f"{spec.service}: {spec.label}"
                    print(f"  run {run + 1}/{runs} {what}: {result.get('error')}")
                    continue
                row.add_rate(got, seconds, n, total)
                note = f"  received {got}/{n}" if got != n else ""
                status = result.get("status")
                if status not in ("0000", "Success"):
                    note += f"  final status {status}"
                print(
                    f"  run {run + 1}/{runs} {spec.service:4s} {spec.label:52s}"
                    f" {got / seconds:8.1f} inst/s{note}",
                    flush=True,
                )
        finally:
            for stop in reversed(setup.stoppers):
                stop()

    payload: dict[str, Any] = {
        "benchmark": "bench_retrieve",
        "quick": args.quick,
        "runs": runs,
        "instances": n,
        "total_bytes": total,
        "study": name,
        "environment": env,
        "load_after": C.load_caveat(),
        "services": {},
    }
    for service, title in (("move", "C-MOVE"), ("get", "C-GET")):
        chosen = [r for r in rows if r.spec.service == service]
        if not chosen:
            continue
        med = {r.spec.key: C.median(r.rates) for r in chosen}
        table: list[list[object]] = []
        for row in chosen:
            if row.skipped:
                table.append([row.spec.label, *([None] * 7), row.skipped, None])
                continue
            got = sum(int(r.get("files", 0)) for r in row.runs)
            statuses = sorted({str(r.get("status")) for r in row.runs})
            rate = med[row.spec.key]
            table.append(
                [
                    row.spec.label,
                    rate,
                    C.median(row.mib_rates),
                    C.ratio(rate, med.get(PYNETDICOM_ROW)),
                    C.ratio(rate, med.get(DCMTK_ROW)),
                    C.ratio(rate, med.get(SERIAL_ROW)) if row.spec.window else None,
                    _cpu_ms(row.runs, ("cpu_seconds", "dest_cpu_seconds"), n),
                    _cpu_ms(row.runs, ("scp_cpu_seconds",), n),
                    f"{got}/{len(row.runs) * n}",
                    ",".join(statuses),
                ]
            )
        C.print_table(
            f"{title}, one study of {name}, median of {runs}",
            [
                "SCU -> SCP -> destination" if service == "move" else "SCU <- SCP",
                "inst/s",
                "MiB/s",
                "vs pynetdicom",
                "vs DCMTK",
                "vs serial",
                "SCU side CPU ms/inst",
                "SCP CPU ms/inst",
                "received",
                "final status",
            ],
            table,
        )
        C.print_problems(
            "missing instances and failures (counted above, never hidden):",
            [(row.spec.label, row) for row in chosen],
            _problems,
            n,
        )
        for row in chosen:
            waits = [
                float(r["sub_association_wait"]) for r in row.runs if r.get("sub_association_wait")
            ]
            spans = [float(r["seconds"]) for r in row.runs if r.get("seconds")]
            if waits and spans:
                print(
                    f"  {row.spec.label}: it accepted dcmqrscp's sub-association"
                    f" {C.median(waits):.2f} s after sending its C-MOVE-RQ (median; of"
                    f" {C.median(spans):.2f} s in all): a fixed wait per C-MOVE, not a rate"
                )
        payload["services"][service] = [
            r.summary(r.spec.key, r.spec.label, client=r.spec.client, scp=r.spec.scp)
            for r in chosen
        ]
    print()
    print(
        "SCU side CPU = the SCU process with its receiver (+ storescp when it is the "
        "destination); SCP CPU = the Q/R SCP with its forked children (sampled every 20 ms). "
        "DCMTK clients' CPU includes their start-up."
    )
    C.finish(args, "bench_retrieve", payload, args.profile)


if __name__ == "__main__":
    main()
