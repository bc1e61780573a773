"""Bulk retrieval of many studies: the aiodimse job runner vs serial DCMTK and pynetdicom loops.

``--studies`` studies (default 200) of ``--instances`` synthetic CT instances each (default
10; ``--size`` x ``--size`` 16-bit pixels, default 64x64, ~9 KiB per file, Explicit VR
Little Endian) are generated once and loaded by C-STORE (DCMTK ``storescu``, not timed)
into two sources on 127.0.0.1, each a process of its own:

- DCMTK ``dcmqrscp`` (forks one child per association);
- aiodimse's archive, ``aiodimse qrscp`` run as a subprocess.

Rows, per source, one run each, in one table with ratios:

- the aiodimse job through its library API (``RetrieveJob.create(...)`` then
  ``async for event in job.run()``), in a process of its own: a STUDY-level C-FIND lists
  the studies, then each study is listed at IMAGE level, fetched and verified on disk; by
  C-MOVE to itself (its own storage server) and by C-GET, with 1, 4 and 8 associations;
- a serial loop of DCMTK ``movescu``, one process per study, ``-aem STORESCP``: the
  source sends the instances to a DCMTK ``storescp`` started before (its host table maps
  STORESCP to that port); this is the reference of the ratio column;
- a serial pynetdicom loop: one association, one C-MOVE per study to the same storescp.

Times: a job row is timed inside its process from ``RetrieveJob.create`` to the finished
event (interpreter start-up excluded); the movescu loop from the first process start to the
last exit (one process per study is what that approach costs); the pynetdicom loop from its
association request to its release. Every row is checked: the files that arrived are
counted (``storescp``'s folder, the job's study folders) and a job's final report must say
every study ``done`` (retries, if any, are counted there too: the jobs back off 0.5 s
rather than the default 2 s). inst/s counts the files found on disk. CPU ms/study is the
user + system time of the client side with its receiver (the job's process; the movescu
processes or pynetdicom, plus storescp), not of the source: less sensitive to a busy
machine than the rates.

Memory: the job (C-MOVE to itself, 4 associations) runs in a process of its own against
another aiodimse archive holding ``--memory-studies`` studies (default 2,000) of one
instance each, once for the first ``--studies`` of them and once for all of them; its
peak RSS (VmHWM of its own process: ``ru_maxrss`` would carry the parent's high-water mark
across fork and exec on Linux) is reported for each. Flat means the two peaks match.

TCP_NODELAY: aiodimse sets it itself; TCP_NODELAY=1 is exported for DCMTK; this benchmark
sets it on pynetdicom's socket (pynetdicom never does).

Nothing is written into the repository: the data, journals and received files live in a
temporary folder removed at the end. ``--results-dir DIR`` also writes the numbers as JSON.

    python benchmarks/bench_jobs.py [--quick] [--studies 200] [--instances 10] [--size 64]
        [--memory-studies 2000] [--associations 1 4 8] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

from aiodimse.testing import peers
from aiodimse.testing.synthetic import make_study, write_study

JOBS_WORKER = C.BENCH_DIR / "_jobs_peers.py"
#: The job's AE title (calling AE and move destination), as in _jobs_peers.py.
JOB_AE = "JOBS"
STORESCP_AE = "STORESCP"
DCMQRSCP_AE = "DCMQRSCP"
ARCHIVE_AE = "QRSCP"
MEMORY_AE = "QRSCPMEM"
#: StudyDate of the first ``--studies`` studies of the memory archive; the rest are a day later.
DATE = "20240101"
LATER = "20240102"
#: Seconds any one row may take before it is counted as failed.
ROW_TIMEOUT = 1800.0


@dataclass
class Row:
    """One line of the table: what ran, how long, and what arrived."""

    source: str
    key: str
    label: str
    seconds: float | None = None
    files: int = 0
    studies_done: int | None = None
    peak_rss_kib: int | None = None
    #: CPU time of the client side with its receiver (the job's own storage server, or
    #: storescp for the loops), in seconds.
    cpu_seconds: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key,
            "label": self.label,
            "seconds": self.seconds,
            "files": self.files,
            "studies_done": self.studies_done,
            "peak_rss_kib": self.peak_rss_kib,
            "cpu_seconds": self.cpu_seconds,
            "error": self.error,
            "detail": self.detail,
        }


@dataclass
class Source:
    """A loaded source: its name in the table, AE title and port."""

    name: str
    aet: str
    port: int
    peer: peers.PeerProcess


# -- data ------------------------------------------------------------------------------------


def write_studies(
    directory: Path, studies: int, instances: int, size: int, seed: str, later_from: int
) -> tuple[list[str], list[Path]]:
    """``studies`` studies of ``instances`` CT instances in ``directory`` (one flat folder);
    the studies from index ``later_from`` on are dated LATER, the others DATE."""
    uids: list[str] = []
    files: list[Path] = []
    for k in range(studies):
        datasets = make_study(
            instances,
            rows=size,
            cols=size,
            seed=f"{seed}/{k}",
            patient_id=f"BJ{k:05d}",
            study_date=LATER if k >= later_from else DATE,
        )
        uids.append(str(datasets[0].StudyInstanceUID))
        files += write_study(directory, datasets)
    return uids, files


def load(source: Source, files: Sequence[Path]) -> float:
    """C-STORE ``files`` into ``source`` with DCMTK storescu (500 a process); seconds."""
    start = time.perf_counter()
    for i in range(0, len(files), 500):
        run = C.run_tool(
            [
                peers.dcmtk_tool("storescu"),
                "-aet",
                "LOADER",
                "-aec",
                source.aet,
                peers.LOOPBACK,
                str(source.port),
                *(str(f) for f in files[i : i + 500]),
            ],
            timeout=600,
        )
        if run.out is None or run.out.returncode != 0:
            tail = "timed out" if run.out is None else run.out.stderr[-2000:]
            raise SystemExit(f"loading {source.name} with storescu failed: {tail}")
    return time.perf_counter() - start


# -- rows ------------------------------------------------------------------------------------


def count_received(folder: Path) -> int:
    """Files a job committed: ``<folder>/<study>/<sop>.dcm`` (temporaries not counted)."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.glob("*/*.dcm") if not p.parent.name.startswith("."))


def movescu_loop(
    source: Source, studies: Sequence[str], storescp: peers.PeerProcess, inbox: Path
) -> Row:
    """One ``movescu`` process per study, one after the other, to the running storescp."""
    row = Row(source.name, "movescu", "DCMTK movescu loop -> storescp (1 process/study)")
    failures = 0
    cpu = 0.0
    receiver = C.proc_cpu_seconds(storescp.pid) or 0.0
    start = time.perf_counter()
    for uid in studies:
        run = C.run_tool(
            [
                peers.dcmtk_tool("movescu"),
                "-aet",
                "MOVESCU",
                "-aec",
                source.aet,
                "-aem",
                STORESCP_AE,
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={uid}",
                peers.LOOPBACK,
                str(source.port),
            ],
            timeout=120,
        )
        cpu += run.cpu_seconds
        if run.out is None or run.out.returncode != 0:
            failures += 1
    row.seconds = time.perf_counter() - start
    row.cpu_seconds = cpu + (C.proc_cpu_seconds(storescp.pid) or 0.0) - receiver
    row.files = C.count_files(inbox)
    row.detail = {"failed_processes": failures}
    if failures:
        row.error = f"{failures} movescu process(es) failed"
    return row


def pynetdicom_loop(
    source: Source, study_list: Path, storescp: peers.PeerProcess, inbox: Path
) -> Row:
    """One pynetdicom association, a C-MOVE per study to the running storescp."""
    row = Row(source.name, "pynetdicom", "pynetdicom loop, 1 assoc -> storescp")
    receiver = C.proc_cpu_seconds(storescp.pid) or 0.0
    try:
        result = C.run_client(
            "pynetdicom-move",
            "--port",
            source.port,
            "--aec",
            source.aet,
            "--dest-ae",
            STORESCP_AE,
            "--studies",
            study_list,
            script=JOBS_WORKER,
            timeout=ROW_TIMEOUT,
        )
    except C.WorkerError as exc:
        row.error = str(exc).splitlines()[0]
        row.files = C.count_files(inbox)
        return row
    row.seconds = float(result["seconds"])
    row.cpu_seconds = result["cpu_seconds"] + (C.proc_cpu_seconds(storescp.pid) or 0.0) - receiver
    row.files = C.count_files(inbox)
    row.peak_rss_kib = int(result["peak_rss_kib"])
    row.detail = result
    if not result.get("nodelay"):
        row.error = "TCP_NODELAY was not set on pynetdicom's socket"
    return row


def job_row(
    source: Source,
    method: str,
    associations: int,
    scratch: Path,
    listen_port: int,
    study_date: str = "",
    label: str | None = None,
) -> Row:
    """The aiodimse job, in a process of its own; its received files counted afterwards."""
    key = f"job-{method}-{associations}"
    what = "C-MOVE to itself" if method == "move" else "C-GET"
    row = Row(source.name, key, label or f"aiodimse job, {what}, {associations} assoc")
    out = scratch / f"out-{source.name}-{key}-{study_date or 'all'}"
    journal = scratch / f"journal-{source.name}-{key}-{study_date or 'all'}.db"
    try:
        result = C.run_client(
            "job",
            "--port",
            source.port,
            "--aec",
            source.aet,
            "--method",
            method,
            "--associations",
            associations,
            "--out",
            out,
            "--journal",
            journal,
            "--listen-port",
            listen_port,
            "--study-date",
            study_date,
            script=JOBS_WORKER,
            timeout=ROW_TIMEOUT,
            process_cpu=True,
        )
    except C.WorkerError as exc:
        row.error = str(exc).splitlines()[0]
        return row
    finally:
        row.files = count_received(out)
        shutil.rmtree(out, ignore_errors=True)
        journal.unlink(missing_ok=True)
    row.seconds = float(result["seconds"])
    row.cpu_seconds = float(result["cpu_seconds"])
    row.studies_done = int(result["counts"].get("done", 0))
    row.peak_rss_kib = int(result["peak_rss_kib"])
    row.detail = result
    if result.get("returncode"):
        row.error = f"exited with {result['returncode']}: {result.get('stderr', '')[-300:]}"
    elif not result.get("ok"):
        row.error = f"job not ok: {result['counts']} {result.get('stopped_sources')}"
    return row


# -- the run ---------------------------------------------------------------------------------


def clear(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            p.unlink()


def verified(row: Row, studies: int, expected: int) -> str:
    """``yes`` when every instance is on disk (and, for a job, every study done)."""
    if row.error:
        return f"NO: {row.error}"
    if row.files != expected:
        return f"NO: {row.files}/{expected} files"
    if row.studies_done is not None and row.studies_done != studies:
        return f"NO: {row.studies_done}/{studies} done"
    done = f", {row.studies_done} done" if row.studies_done is not None else ""
    retries = row.detail.get("events", {}).get("retry", 0)
    done += f", {retries} retries" if retries else ""
    return f"yes ({row.files} files{done})"


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = C.base_parser(__doc__.splitlines()[0])
    # Nothing is written into the repository unless asked for.
    parser.set_defaults(results_dir=None)
    parser.add_argument("--studies", type=int, default=None, help="studies (default 200)")
    parser.add_argument(
        "--instances", type=int, default=None, help="instances per study (default 10)"
    )
    parser.add_argument("--size", type=int, default=64, help="rows = columns (default 64)")
    parser.add_argument(
        "--memory-studies",
        type=int,
        default=None,
        help="studies of one instance for the memory rows (default 2000)",
    )
    parser.add_argument(
        "--associations", type=int, nargs="+", default=[1, 4, 8], help="(default 1 4 8)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.studies = args.studies or (4 if quick else 200)
    args.instances = args.instances or (2 if quick else 10)
    args.memory_studies = args.memory_studies or (40 if quick else 2000)
    if args.quick and args.associations == [1, 4, 8]:
        args.associations = [1, 4]
    if min(args.studies, args.instances, args.size, *args.associations) < 1:
        parser.error("--studies, --instances, --size and --associations must be positive")
    if args.memory_studies < args.studies:
        parser.error("--memory-studies must be at least --studies")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not C.have_dcmtk():
        print("DCMTK is not installed: this benchmark compares against it", file=sys.stderr)
        return 1
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        have_pynetdicom = False
    else:
        have_pynetdicom = True
    began = time.perf_counter()
    print(f"before: {C.load_caveat()}")
    with C.scratch_dir("bench-jobs-") as scratch:
        payload = run(args, scratch, have_pynetdicom)
    wall = time.perf_counter() - began
    print(f"wall time: {wall:.1f} s")
    payload["wall_seconds"] = wall
    if args.results_dir is not None:
        C.finish(args, "bench_jobs", payload)
    else:
        print(f"after: {C.load_caveat()}")
    return 0 if payload["all_verified"] else 1


def run(args: argparse.Namespace, scratch: Path, have_pynetdicom: bool) -> dict[str, Any]:
    n_studies, n_inst = args.studies, args.instances
    expected = n_studies * n_inst
    t = time.perf_counter()
    main_uids, main_files = write_studies(
        scratch / "src", n_studies, n_inst, args.size, "bench-jobs", n_studies
    )
    _, memory_files = write_studies(
        scratch / "src-memory", args.memory_studies, 1, args.size, "bench-jobs-mem", n_studies
    )
    kib = sum(f.stat().st_size for f in main_files) / len(main_files) / 1024
    study_list = C.write_file_list(scratch / "studies.txt", [Path(u) for u in main_uids])
    print(
        f"data: {n_studies} studies x {n_inst} instances of {args.size}x{args.size} CT "
        f"({kib:.1f} KiB each) + {args.memory_studies} x 1 for the memory rows, "
        f"written in {time.perf_counter() - t:.1f} s"
    )

    storescp_port, dcmqrscp_port, archive_port, memory_port, listen_port = peers.free_ports(5)
    inbox = scratch / "storescp-in"
    destinations = {
        STORESCP_AE: (peers.LOOPBACK, storescp_port),
        JOB_AE: (peers.LOOPBACK, listen_port),
    }
    dest_args = [f"--dest={ae}={h}:{p}" for ae, (h, p) in destinations.items()]
    running: list[peers.PeerProcess] = []
    rows: list[Row] = []
    memory_rows: list[Row] = []
    try:
        storescp = peers.start_storescp(storescp_port, inbox, aet=STORESCP_AE, work_dir=scratch)
        running.append(storescp)
        dcmqrscp = peers.start_dcmqrscp(
            dcmqrscp_port,
            scratch / "dcmqrscp-db",
            aet=DCMQRSCP_AE,
            hosts=destinations,
            work_dir=scratch,
        )
        running.append(dcmqrscp)
        archive = peers.start_aiodimse_qrscp(
            archive_port, scratch / "archive", aet=ARCHIVE_AE, work_dir=scratch, extra=dest_args
        )
        running.append(archive)
        memory = peers.start_aiodimse_qrscp(
            memory_port,
            scratch / "archive-memory",
            aet=MEMORY_AE,
            work_dir=scratch,
            extra=dest_args[1:],
        )
        running.append(memory)
        sources = [
            Source("dcmqrscp", DCMQRSCP_AE, dcmqrscp_port, dcmqrscp),
            Source("archive", ARCHIVE_AE, archive_port, archive),
        ]
        memory_source = Source("archive", MEMORY_AE, memory_port, memory)
        for source in sources:
            seconds = load(source, main_files)
            print(f"loaded {source.name} by C-STORE: {expected} instances in {seconds:.1f} s")
        seconds = load(memory_source, memory_files)
        print(f"loaded the memory archive: {len(memory_files)} instances in {seconds:.1f} s")

        for source in sources:
            clear(inbox)
            rows.append(movescu_loop(source, main_uids, storescp, inbox))
            _progress(rows[-1])
            clear(inbox)
            if have_pynetdicom:
                rows.append(pynetdicom_loop(source, study_list, storescp, inbox))
                _progress(rows[-1])
                clear(inbox)
            else:
                rows.append(Row(source.name, "pynetdicom", "pynetdicom loop", error="skipped"))
            for method in ("move", "get"):
                for n in args.associations:
                    rows.append(job_row(source, method, n, scratch, listen_port))
                    _progress(rows[-1])

        for study_date, count in ((DATE, n_studies), (f"{DATE}-{LATER}", args.memory_studies)):
            row = job_row(
                memory_source,
                "move",
                4,
                scratch,
                listen_port,
                study_date=study_date,
                label=f"aiodimse job, {count:,} studies x 1, C-MOVE, 4 assoc",
            )
            row.detail["studies"] = count
            memory_rows.append(row)
            _progress(row)
    finally:
        for peer in reversed(running):
            peer.stop()

    return report(args, rows, memory_rows, kib)


def _progress(row: Row) -> None:
    took = "-" if row.seconds is None else f"{row.seconds:.1f} s"
    print(f"  {row.source}: {row.label}: {took}, {row.files} files {row.error or ''}", flush=True)


def report(
    args: argparse.Namespace, rows: list[Row], memory_rows: list[Row], kib: float
) -> dict[str, Any]:
    n_studies, n_inst = args.studies, args.instances
    expected = n_studies * n_inst
    table = []
    all_ok = True
    out_rows = []
    for row in rows:
        reference = next(
            (r for r in rows if r.source == row.source and r.key == "movescu" and r.seconds),
            None,
        )
        ref_rate = reference.files / reference.seconds if reference and reference.seconds else None
        rate = row.files / row.seconds if row.seconds else None
        check = verified(row, n_studies, expected)
        if row.error != "skipped":
            all_ok = all_ok and check.startswith("yes")
        table.append(
            [
                f"{row.source}: {row.label}",
                row.seconds,
                n_studies / row.seconds if row.seconds else None,
                rate,
                C.ratio(rate, ref_rate),
                mib(row.peak_rss_kib),
                None if row.cpu_seconds is None else 1000 * row.cpu_seconds / n_studies,
                check,
            ]
        )
        out_rows.append({**row.to_json(), "inst_per_s": rate, "verified": check})
    C.print_table(
        f"Bulk retrieval: {n_studies} studies x {n_inst} instances "
        f"({args.size}x{args.size} CT, {kib:.1f} KiB each) over loopback, one run each",
        [
            "source: row",
            "seconds",
            "studies/s",
            "inst/s",
            "vs movescu",
            "RSS MiB",
            "CPU ms/study",
            "verified",
        ],
        table,
    )
    memory = []
    mem_json = []
    for row in memory_rows:
        count = int(row.detail.get("studies", 0))
        check = verified(row, count, count)
        all_ok = all_ok and check.startswith("yes")
        before = row.detail.get("rss_before_kib")
        memory.append(
            [
                row.label,
                row.seconds,
                count / row.seconds if row.seconds else None,
                mib(before),
                mib(row.detail.get("peak_rss_expanded_kib")),
                mib(row.peak_rss_kib),
                check,
            ]
        )
        mem_json.append({**row.to_json(), "verified": check})
    C.print_table(
        "Memory of the job process (its own process; peak RSS = VmHWM)",
        [
            "job",
            "seconds",
            "studies/s",
            "RSS before MiB",
            "peak once listed MiB",
            "peak RSS MiB",
            "verified",
        ],
        memory,
    )
    if len(memory_rows) == 2 and all(r.peak_rss_kib for r in memory_rows):
        small, large = (r.peak_rss_kib or 0 for r in memory_rows)
        print(
            f"peak RSS {large / 1024:.1f} MiB at {args.memory_studies:,} studies vs "
            f"{small / 1024:.1f} MiB at {n_studies:,}: {large / small:.2f}x"
        )
    print(
        "RSS MiB: peak RSS (VmHWM) of the job's or pynetdicom's process; CPU ms/study: user +"
        " system time of the client side and its receiver (the job's own process; movescu"
        " processes or pynetdicom, plus storescp), not of the source; 'peak once listed':"
        " the high-water mark when the study list was in the journal, before any transfer"
    )
    print(C.NODELAY_NOTE)
    print(
        "times: job rows from RetrieveJob.create to its finished event (in its own process, "
        "start-up excluded); movescu loop: all processes, start to exit; pynetdicom loop: "
        "association request to release"
    )
    return {
        "studies": n_studies,
        "instances": n_inst,
        "size": args.size,
        "kib_per_instance": kib,
        "rows": out_rows,
        "memory": mem_json,
        "memory_studies": args.memory_studies,
        "all_verified": all_ok,
        "environment": C.environment(),
    }


if __name__ == "__main__":
    sys.exit(main())
