"""C-FIND against the embedded archive vs DCMTK's dcmqrscp, and the archive's C-STORE ingest.

Archives of 10,000 and 100,000 indexed instances (synthetic 4x4-pixel CT/MR headers, many
patients, studies and series) are queried with three cases:

- ``image-in-study``: IMAGE level, every instance of one study (all match);
- ``image-all``: IMAGE level across the whole archive (every instance is a response);
- ``study-wildcard``: STUDY level, ``PatientName=S*`` (a wild card on a patient key).

Servers: the aiodimse archive (``ArchiveServer`` in its own process, filled with
``Archive.ingest``) and DCMTK's dcmqrscp (same files registered with ``dcmqridx``).
Clients: aiodimse and pynetdicom (TCP_NODELAY set on its socket by this script), each on one
association per server, timed from the C-FIND-RQ to the final response. Rates are
responses/s (median of the runs); the ratio column is archive vs dcmqrscp for one client.

dcmqrscp keeps one 8 KiB record per instance in a flat ``index.dat`` that every
registration and every query scans in full: registering n instances costs O(n^2) (about
2 minutes for 10,000 here, hours for 100,000), so dcmqrscp is measured only at the sizes up
to ``--dcmqrscp-max`` (10,000 by default) and reported as "not measured" above that.

Ingest: instances/s stored by C-STORE from one aiodimse SCU association (one instance at a
time) into a fresh archive, and into a fresh dcmqrscp.

    python benchmarks/bench_find.py [--quick] [--sizes 10000,100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers
from aiodimse.testing.synthetic import make_archive_population, write_study

ARCHIVE_AET = "ARCHIVE"
DCMQRSCP_AET = "DCMQRSCP"
CLIENT_AET = "BENCHSCU"


# -- data --------------------------------------------------------------------------------------


def shape(n: int) -> tuple[int, int, int, int]:
    """(patients, studies per patient, series per study, instances per series) for ~n."""
    if n >= 100_000:
        return 100, 4, 5, n // 2000  # 400 studies of 250 instances
    if n >= 10_000:
        return 50, 2, 4, n // 400  # 100 studies of 100 instances
    return max(1, n // 100), 2, 2, 25  # studies of 50 instances


def generate(directory: Path, n: int, seed: str) -> list[Path]:
    """Write the population in chunks (memory stays flat); returns the files."""
    patients, studies, series, instances = shape(n)
    paths: list[Path] = []
    chunk = max(1, 2000 // (studies * series * instances))
    for first in range(0, patients, chunk):
        count = min(chunk, patients - first)
        datasets = make_archive_population(
            count, studies, series, instances, rows=4, cols=4, seed=f"{seed}/{first}"
        )
        paths += write_study(directory, datasets)
    return paths


# -- servers -----------------------------------------------------------------------------------


def serve_archive(storage: Path, port: int) -> None:
    """Worker mode: run an ArchiveServer on 127.0.0.1:port until SIGTERM."""
    from aiodimse.archive import ArchiveServer

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        server = ArchiveServer(storage, ae_title=ARCHIVE_AET, port=port, host="127.0.0.1")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()
        server.archive.close()

    asyncio.run(main())


@dataclass
class Server:
    name: str
    aet: str
    port: int
    proc: Any  # subprocess.Popen or PeerProcess

    def stop(self) -> None:
        if isinstance(self.proc, peers.PeerProcess):
            self.proc.stop()
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_archive(storage: Path) -> Server:
    port = peers.free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-archive", str(storage), "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    try:
        peers.wait_for_port("127.0.0.1", port, 60, proc=proc)
    except BaseException:
        proc.kill()
        raise
    return Server("aiodimse archive", ARCHIVE_AET, port, proc)


def start_dcmqrscp(storage: Path, work: Path) -> Server:
    port = peers.free_port()
    peer = peers.start_dcmqrscp(port, storage, aet=DCMQRSCP_AET, work_dir=work)
    return Server("dcmqrscp", DCMQRSCP_AET, port, peer)


def register_dcmqrscp(storage: Path, files: Sequence[Path]) -> float:
    """dcmqridx the files into dcmqrscp's index; returns seconds."""
    storage.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i in range(0, len(files), 500):
        done = peers.run_dcmtk("dcmqridx", storage, *files[i : i + 500], timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"dcmqridx failed: {done.stdout}{done.stderr}")
    return time.perf_counter() - started


# -- clients -----------------------------------------------------------------------------------


def aiodimse_find(server: Server, query: dict[str, str], runs: int) -> tuple[list[float], int]:
    """(elapsed seconds per run, responses per run) with one aiodimse association."""
    import aiodimse

    async def main() -> tuple[list[float], int]:
        times: list[float] = []
        count = 0
        contexts = aiodimse.contexts.query_retrieve(get=False, move=False)
        async with aiodimse.connect(
            "127.0.0.1", server.port, calling_ae=CLIENT_AET, called_ae=server.aet,
            contexts=contexts,
        ) as assoc:  # fmt: skip
            for _ in range(runs):
                started = time.perf_counter()
                count = 0
                async for _match in assoc.find(query, model="study"):
                    count += 1
                times.append(time.perf_counter() - started)
        return times, count

    return asyncio.run(main())


def pynetdicom_find(server: Server, query: dict[str, str], runs: int) -> tuple[list[float], int]:
    from pydicom import Dataset
    from pynetdicom import AE

    from aiodimse.uids import STUDY_ROOT_QR_FIND as FIND

    ae = AE(ae_title=CLIENT_AET)
    ae.add_requested_context(FIND)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    if not assoc.is_established:
        raise RuntimeError(f"pynetdicom could not associate with {server.name}")
    assoc_socket = assoc.dul.socket
    sock = assoc_socket.socket if assoc_socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ds = Dataset()
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    times: list[float] = []
    count = 0
    try:
        for _ in range(runs):
            started = time.perf_counter()
            count = 0
            for status, identifier in assoc.send_c_find(ds, FIND):
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    count += 1
            times.append(time.perf_counter() - started)
    finally:
        assoc.release()
    return times, count


def aiodimse_store(server: Server, files: Sequence[Path]) -> float:
    import aiodimse

    async def main() -> float:
        contexts = aiodimse.contexts.default()
        async with aiodimse.connect(
            "127.0.0.1", server.port, calling_ae=CLIENT_AET, called_ae=server.aet,
            contexts=contexts,
        ) as assoc:  # fmt: skip
            started = time.perf_counter()
            for path in files:
                await assoc.store(path)
            return time.perf_counter() - started

    return asyncio.run(main())


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Row:
    size: int
    case: str
    client: str
    rates: dict[str, float | None] = field(default_factory=dict)  # server -> responses/s
    counts: dict[str, int] = field(default_factory=dict)
    ms: dict[str, float | None] = field(default_factory=dict)  # server -> ms per query


def cases(files: Sequence[Path]) -> dict[str, dict[str, str]]:
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {
        "image-in-study": {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": str(first.StudyInstanceUID),
            "SeriesInstanceUID": "",
            "SOPInstanceUID": "",
            "InstanceNumber": "",
        },
        "image-all": {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": "",
            "SeriesInstanceUID": "",
            "SOPInstanceUID": "",
        },
        "study-wildcard": {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": "",
            "PatientName": "S*",
            "PatientID": "",
            "StudyDate": "",
        },
    }


CLIENTS = {"aiodimse": aiodimse_find, "pynetdicom": pynetdicom_find}


def measure_size(
    size: int, work: Path, runs: int, dcmqrscp_max: int, results: dict[str, Any]
) -> list[Row]:
    src = work / f"src-{size}"
    print(f"\n[{size:,} instances] generating ...", flush=True)
    started = time.perf_counter()
    files = generate(src, size, seed=f"bench-find-{size}")
    info: dict[str, Any] = {"instances": len(files), "generate_s": time.perf_counter() - started}
    print(f"  {len(files):,} files in {info['generate_s']:.1f} s", flush=True)

    from aiodimse.archive import Archive

    started = time.perf_counter()
    with Archive(work / f"archive-{size}") as archive:
        archive.ingest(files, batch=1000)
        info["archive_ingest_api_per_s"] = len(files) / (time.perf_counter() - started)
        info["archive_counts"] = {lvl: archive.count(lvl) for lvl in ("PATIENT", "STUDY", "IMAGE")}
    print(f"  Archive.ingest: {info['archive_ingest_api_per_s']:,.0f} instances/s", flush=True)

    servers = {"archive": start_archive(work / f"archive-{size}")}
    if size <= dcmqrscp_max and C.have_dcmtk():
        print("  dcmqridx ...", flush=True)
        seconds = register_dcmqrscp(work / f"dcmqrscp-{size}", files)
        info["dcmqridx_per_s"] = len(files) / seconds
        print(f"  dcmqridx: {info['dcmqridx_per_s']:,.0f} instances/s", flush=True)
        servers["dcmqrscp"] = start_dcmqrscp(work / f"dcmqrscp-{size}", work / f"qrwork-{size}")
    else:
        info["dcmqrscp"] = f"not measured above {dcmqrscp_max:,} instances (O(n^2) index)"
    rows: list[Row] = []
    try:
        for case, query in cases(files).items():
            for client, run in CLIENTS.items():
                row = Row(size, case, client)
                n_runs = 1 if case == "image-all" and size >= 50_000 else runs
                for key, server in servers.items():
                    times, count = run(server, query, n_runs)
                    best = C.median(times)
                    row.counts[key] = count
                    row.rates[key] = count / best if best and count else None
                    row.ms[key] = best * 1000 if best else None
                    print(
                        f"  {case:15s} {client:10s} -> {key:9s} {count:7,d} responses "
                        f"{row.ms[key] or 0:9.1f} ms",
                        flush=True,
                    )
                rows.append(row)
    finally:
        for server in servers.values():
            server.stop()
    results["sizes"][str(size)] = info
    shutil.rmtree(src, ignore_errors=True)
    return rows


def measure_ingest(n: int, work: Path) -> dict[str, Any]:
    files = generate(work / "ingest-src", n, seed="bench-ingest")
    out: dict[str, Any] = {"instances": len(files)}
    archive = start_archive(work / "ingest-archive")
    try:
        out["archive_per_s"] = len(files) / aiodimse_store(archive, files)
    finally:
        archive.stop()
    if C.have_dcmtk():
        qr = start_dcmqrscp(work / "ingest-dcmqrscp", work / "ingest-qrwork")
        try:
            out["dcmqrscp_per_s"] = len(files) / aiodimse_store(qr, files)
        finally:
            qr.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = C.base_parser(__doc__.splitlines()[0] if __doc__ else "bench_find")
    parser.add_argument("--sizes", default=None, help="comma-separated archive sizes")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement")
    parser.add_argument("--ingest", type=int, default=None, help="instances for the ingest rate")
    parser.add_argument("--dcmqrscp-max", type=int, default=10_000)
    parser.add_argument("--serve-archive", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_archive is not None:
        serve_archive(args.serve_archive, args.port)
        return 0
    sizes = [int(s) for s in (args.sizes or ("300" if args.quick else "10000,100000")).split(",")]
    runs = args.runs or (2 if args.quick else 3)
    ingest_n = args.ingest or (100 if args.quick else 3000)
    C.dcmtk_or_exit()  # (outside CI, dcmqrscp is then left out)
    results: dict[str, Any] = {
        "benchmark": "find",
        "environment": C.environment(),
        "load_before": C.load_caveat(),
        "sizes": {},
        "rows": [],
        "notes": [C.NODELAY_NOTE],
    }
    print(C.load_caveat())
    rows: list[Row] = []
    with C.scratch_dir("aiodimse-bench-find-") as work:
        for size in sizes:
            rows += measure_size(size, work, runs, args.dcmqrscp_max, results)
        print(f"\n[ingest] {ingest_n:,} instances by C-STORE from one aiodimse association ...")
        results["ingest"] = measure_ingest(ingest_n, work)
    for size in sizes:
        C.print_table(
            f"C-FIND, {size:,} instances indexed: responses/s (median of runs)",
            ["case", "client", "responses", "archive", "dcmqrscp", "archive/dcmqrscp",
             "archive ms", "dcmqrscp ms"],
            [
                [r.case, r.client, r.counts.get("archive"), r.rates.get("archive"),
                 r.rates.get("dcmqrscp"), C.ratio(r.rates.get("archive"), r.rates.get("dcmqrscp")),
                 r.ms.get("archive"), r.ms.get("dcmqrscp")]
                for r in rows if r.size == size
            ],
        )  # fmt: skip
        info = results["sizes"][str(size)]
        if "dcmqrscp" in info:
            print(f"  dcmqrscp: {info['dcmqrscp']}")
        mismatched = [r for r in rows if r.size == size and len(set(r.counts.values())) > 1]
        for r in mismatched:
            print(f"  NOTE {r.case}/{r.client}: response counts differ: {r.counts}")
    ing = results["ingest"]
    C.print_table(
        f"C-STORE ingest, {ing['instances']:,} instances, one aiodimse SCU association",
        ["server", "instances/s", "vs dcmqrscp"],
        [
            ["aiodimse archive", ing.get("archive_per_s"),
             C.ratio(ing.get("archive_per_s"), ing.get("dcmqrscp_per_s"))],
            ["dcmqrscp", ing.get("dcmqrscp_per_s"), "1.00x" if ing.get("dcmqrscp_per_s") else "-"],
        ],
    )  # fmt: skip
    results["rows"] = [r.__dict__ for r in rows]
    results["load_after"] = C.load_caveat()
    C.finish(args, "bench_find", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
