"""The command line against DCMTK's, timed as whole processes the way a user times them.

Rows, for each of two generated data sets (one study each, synthetic CT, Explicit VR Little
Endian: ``--tiny`` 500 x 64x64, ~9.5 KiB, and ``--large`` 100 x 512x512, ~512 KiB):

- ``aiodimse store`` of the set's files into a DCMTK ``storescp`` vs DCMTK ``storescu`` of
  the same files into the same kind of storescp (a fresh one, with a fresh folder, per run);
- ``aiodimse get`` of the study from DCMTK ``dcmqrscp`` vs DCMTK ``getscu``;
- ``aiodimse move --port P`` (a C-MOVE to itself, received on its own storage port) vs
  DCMTK ``movescu --port P``, the same AE title and port, known to dcmqrscp;
- the same get and move rows with ``aiodimse qrscp`` (a process of its own, the embedded
  archive) as the source.

dcmqrscp is filled by C-STORE and the archive by ``Archive.ingest`` before anything is
timed; both stay up for the whole benchmark. Each run of a row writes into a fresh folder;
afterwards the files that arrived are counted, and a run with the wrong count fails its row.
Wall time is the whole process, start-up included; CPU is its user + system time. The
median of ``--runs`` (3; 1 under ``--quick``) is reported, rows interleaved across runs.
"vs DCMTK" is DCMTK's time over ours in the same run (above 1.00x: we are faster).

``aiodimse`` runs as its console script does, from this checkout, from bytecode cached in a
scratch folder (one unmeasured run of each command on a 2-instance study fills it), exactly
as in bench_startup.py. Without DCMTK the rows that need it are skipped and ``aiodimse
store`` goes to an ``aiodimse storescp``, except under ``CI=true``, where a missing DCMTK is
an error.

    python benchmarks/bench_cli.py [--quick] [--runs 3] [--tiny 500] [--large 100]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C
from bench_startup import AIODIMSE, PYCACHE, aiodimse_env

from aiodimse.testing import peers
from aiodimse.testing.synthetic import uid_from

HOST = "127.0.0.1"
#: Our AE title as a client, and the move destination of ``move --port`` / ``movescu --port``.
CLIENT_AE = "BENCHCLI"
STORESCP_AE = "STORESCP"
DCMQRSCP_AE = "DCMQRSCP"
QRSCP_AE = "QRSCP"
#: The data sets: key -> (rows = columns, instances under --quick, instances by default).
SIZES = {"tiny": (64, 20, 500), "large": (512, 5, 100)}
#: The DCMTK tools the rows use.
DCMTK_TOOLS = ("storescu", "storescp", "getscu", "movescu", "dcmqrscp")

#: key -> (label, service, tool, source); the DCMTK row of ``key`` is ``PEER_OF[key]``.
ROWS: tuple[tuple[str, str, str, str, str], ...] = (
    ("store", "aiodimse store -> storescp", "store", "aiodimse", "storescp"),
    ("storescu", "storescu -> storescp", "store", "dcmtk", "storescp"),
    ("get-dcmqrscp", "aiodimse get <- dcmqrscp", "get", "aiodimse", "dcmqrscp"),
    ("getscu-dcmqrscp", "getscu <- dcmqrscp", "get", "dcmtk", "dcmqrscp"),
    ("move-dcmqrscp", "aiodimse move --port <- dcmqrscp", "move", "aiodimse", "dcmqrscp"),
    ("movescu-dcmqrscp", "movescu --port <- dcmqrscp", "move", "dcmtk", "dcmqrscp"),
    ("get-qrscp", "aiodimse get <- aiodimse qrscp", "get", "aiodimse", "qrscp"),
    ("getscu-qrscp", "getscu <- aiodimse qrscp", "get", "dcmtk", "qrscp"),
    ("move-qrscp", "aiodimse move --port <- aiodimse qrscp", "move", "aiodimse", "qrscp"),
    ("movescu-qrscp", "movescu --port <- aiodimse qrscp", "move", "dcmtk", "qrscp"),
)
PEER_OF = {
    "store": "storescu",
    **{f"{s}-{src}": f"{s}scu-{src}" for s in ("get", "move") for src in ("dcmqrscp", "qrscp")},
}


@dataclass
class DataSet(C.InstanceSet):
    study: str = ""
    rows: list[Row] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.files)


@dataclass
class Row(C.RowRuns):
    """One command on one data set: wall and CPU seconds of each run that went well."""

    key: str
    label: str
    service: str  # store | get | move
    tool: str  # aiodimse | dcmtk
    source: str  # storescp | dcmqrscp | qrscp
    data: DataSet
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def row_summary(self, peer: Row | None) -> dict[str, Any]:
        return self.summary(
            self.key,
            self.label,
            service=self.service,
            tool=self.tool,
            source=self.source,
            instances=self.data.n,
            median_wall_s=C.median(self.wall),
            median_cpu_s=C.median(self.cpu),
            wall_s=self.wall,
            cpu_s=self.cpu,
            vs_dcmtk_wall=_over(peer.wall, self.wall) if peer else None,
            vs_dcmtk_cpu=_over(peer.cpu, self.cpu) if peer else None,
            failures=self.failures,
        )


def _over(theirs: Sequence[float], ours: Sequence[float]) -> float | None:
    a, b = C.median(theirs), C.median(ours)
    return a / b if a is not None and b else None


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process of ours (``aiodimse storescp`` / ``qrscp``), in a session of its own,
    its output in a log file; stopped by its PID."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, args: Sequence[str], port: int, log: Path, timeout: float = 30.0) -> Server:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*AIODIMSE, *args, "--host", HOST, "--port", str(port)],
                env=aiodimse_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = cls(proc, port, log)
        try:
            peers.wait_for_port(HOST, port, timeout, proc=proc)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@dataclass
class Setup:
    """What every run needs: the scratch folder, the long-lived sources, the move port."""

    scratch: Path
    have_dcmtk: bool
    move_port: int
    timeout: float
    sources: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> port, AE
    stoppers: list[Any] = field(default_factory=list)


async def _fill(port: int, files: list[Path]) -> int:
    """C-STORE ``files`` into dcmqrscp (it only knows what it received); how many succeeded."""
    import aiodimse
    from aiodimse.dicomfile import read_part10

    info = read_part10(files[0])
    contexts = [aiodimse.ContextRequest(info.sop_class_uid, (info.transfer_syntax_uid,))]
    ok = 0
    async with aiodimse.connect(
        HOST, port, calling_ae="FILLER", called_ae=DCMQRSCP_AE, contexts=contexts
    ) as assoc:
        for path in files:
            status = await assoc.store(path, check=False)
            ok += status.code == 0
    return ok


def start_sources(setup: Setup, sets: Sequence[DataSet]) -> None:
    """dcmqrscp (with DCMTK) and aiodimse qrscp, each holding every data set's study."""
    scratch = setup.scratch
    destination = {CLIENT_AE: (HOST, setup.move_port)}
    if setup.have_dcmtk:
        started = time.perf_counter()
        peer = peers.start_dcmqrscp(
            peers.free_port(),
            scratch / "dcmqrscp-storage",
            aet=DCMQRSCP_AE,
            hosts=destination,
            work_dir=scratch / "logs",
        )
        setup.stoppers.append(peer.stop)
        for data in sets:
            stored = asyncio.run(_fill(peer.port, data.files))
            if stored != data.n:
                log = peer.log()[-2000:]
                raise RuntimeError(f"dcmqrscp took {stored} of {data.n} instances:\n{log}")
        setup.sources["dcmqrscp"] = (peer.port, DCMQRSCP_AE)
        took = time.perf_counter() - started
        print(f"dcmqrscp filled by C-STORE in {took:.1f} s")
    from aiodimse.archive import Archive

    started = time.perf_counter()
    storage = scratch / "archive"
    with Archive(storage) as archive:
        for data in sets:
            archive.ingest(data.files)
        indexed = archive.count("IMAGE")
    expected = sum(d.n for d in sets)
    if indexed != expected:
        raise RuntimeError(f"the archive indexed {indexed} of {expected} instances")
    qrscp = Server.start(
        ["qrscp", "--storage", str(storage), "--aet", QRSCP_AE]
        + ["--dest", f"{CLIENT_AE}={HOST}:{setup.move_port}"],
        peers.free_port(),
        scratch / "logs" / "qrscp.log",
    )
    setup.stoppers.append(qrscp.stop)
    setup.sources["qrscp"] = (qrscp.port, QRSCP_AE)
    print(f"aiodimse qrscp filled by Archive.ingest in {time.perf_counter() - started:.1f} s")


def start_store_target(setup: Setup, out: Path, tag: str) -> tuple[int, Any]:
    """A fresh storage SCP writing into ``out``: DCMTK storescp, else aiodimse storescp."""
    port = peers.free_port()
    if setup.have_dcmtk:
        peer = peers.start_storescp(port, out, aet=STORESCP_AE, work_dir=setup.scratch / "logs")
        return port, peer.stop
    log = setup.scratch / "logs" / f"storescp-{tag}.log"
    server = Server.start(["storescp", "--out", str(out), "--aet", STORESCP_AE], port, log)
    return port, server.stop


# -- one run of a row --------------------------------------------------------------------------


def argv_of(row: Row, setup: Setup, out: Path, port: int) -> list[str]:
    """The command line of ``row``, talking to ``port``, writing into ``out``."""
    files = [str(f) for f in row.data.files]
    if row.service == "store":
        if row.tool == "aiodimse":
            argv = [*AIODIMSE, "store", HOST, str(port), "--aet", CLIENT_AE]
            return [*argv, "--aec", STORESCP_AE, *files]
        argv = [peers.dcmtk_tool("storescu"), "-aet", CLIENT_AE, "-aec", STORESCP_AE]
        return [*argv, HOST, str(port), *files]
    _, called = setup.sources[row.source]
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={row.data.study}"]
    listen = ["--port", str(setup.move_port)]
    if row.tool == "aiodimse":
        argv = [*AIODIMSE, row.service, HOST, str(port), "--aet", CLIENT_AE, "--aec", called]
        argv += [*keys, "--out", str(out), "--timeout", "60"]
        if row.service == "move":
            argv += ["--dest", CLIENT_AE, *listen]
        return argv
    tool = "getscu" if row.service == "get" else "movescu"
    argv = [peers.dcmtk_tool(tool), "-aet", CLIENT_AE, "-aec", called, "-S"]
    argv += ["-to", "60", "-ta", "60", "-td", "60", *keys, "-od", str(out)]
    if row.service == "move":
        argv += ["-aem", CLIENT_AE, *listen]
    return [*argv, HOST, str(port)]


def arrived(folder: Path) -> int:
    """Complete files anywhere under ``folder`` (hidden temporaries are not counted)."""
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def run_once(row: Row, setup: Setup, run: int) -> dict[str, Any]:
    """One run of ``row``: a fresh folder (and storage SCP for store), the command as a
    subprocess, its wall and CPU time, the files that arrived."""
    tag = f"{row.data.key}-{row.key}-{run}"
    out = setup.scratch / "out" / tag
    out.mkdir(parents=True)
    stop = None
    try:
        if row.service == "store":
            port, stop = start_store_target(setup, out, tag)
        else:
            port, _ = setup.sources[row.source]
        argv = argv_of(row, setup, out, port)
        env = aiodimse_env() if row.tool == "aiodimse" else peers.peer_env()
        before = C.children_cpu_seconds()
        start = time.perf_counter()
        try:
            done: subprocess.CompletedProcess[str] | None = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=setup.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            done = None
        wall = time.perf_counter() - start
        cpu = C.children_cpu_seconds() - before
    finally:
        if stop is not None:
            stop()
    files = arrived(out)
    shutil.rmtree(out, ignore_errors=True)
    problem = None
    if done is None:
        problem = f"timed out after {setup.timeout:.0f} s"
    elif done.returncode != 0:
        problem = f"exit {done.returncode}: {(done.stderr or done.stdout)[-300:].strip()}"
    elif files != row.data.n:
        problem = f"{files} of {row.data.n} files arrived"
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "files": files,
        "expected": row.data.n,
        "returncode": None if done is None else done.returncode,
        "ok": problem is None,
        "problem": problem,
    }


def measure(row: Row, setup: Setup, run: int) -> None:
    result = run_once(row, setup, run)
    row.add_run(run, result)
    if result["ok"]:
        row.wall.append(result["wall_s"])
        row.cpu.append(result["cpu_s"])
        row.add_rate(row.data.n, result["wall_s"], row.data.n, row.data.total_bytes)
    else:
        row.failures.append(f"run {run + 1}: {result['problem']}")
    note = f"  FAILED: {result['problem']}" if result["problem"] else ""
    print(
        f"  run {run + 1} {row.data.key:5s} {row.label:40s} {result['wall_s']:7.2f} s"
        f"  {result['files']}/{row.data.n} files{note}",
        flush=True,
    )


# -- the benchmark -------------------------------------------------------------------------


def make_rows(data: DataSet, have_dcmtk: bool) -> list[Row]:
    rows = []
    for key, label, service, tool, source in ROWS:
        row = Row(key=key, label=label, service=service, tool=tool, source=source, data=data)
        if not have_dcmtk and (tool == "dcmtk" or source == "dcmqrscp"):
            row.skipped = "DCMTK is not installed"
        elif not have_dcmtk and source == "storescp":
            row.label = label.replace("storescp", "aiodimse storescp")
        rows.append(row)
    return rows


def make_set(scratch: Path, key: str, n: int, size: int, have_dcmtk: bool) -> DataSet:
    """``n`` ``size`` x ``size`` CT instances of one study, and the rows that move them."""
    seed = f"bench-cli-{key}"
    data = C.write_instance_set(DataSet, scratch, key, n, size, seed)
    data.study = uid_from(f"{seed}/study")  # as C.write_instances names it
    data.rows = make_rows(data, have_dcmtk)
    return data


def warm_up(setup: Setup, data: DataSet) -> None:
    """Run each aiodimse command once, unmeasured, on a small study: Python compiles what
    it imports into the scratch bytecode cache, as an installed package has it."""
    for row in data.rows:
        if row.tool == "aiodimse" and row.source != "dcmqrscp" and not row.skipped:
            result = run_once(row, setup, 0)
            if not result["ok"]:
                raise RuntimeError(f"warm-up {row.label}: {result['problem']}")


def table_rows(sets: Sequence[DataSet]) -> list[list[object]]:
    out: list[list[object]] = []
    for data in sets:
        by_key = {r.key: r for r in data.rows}
        mib = data.total_bytes / C.MIB
        for row in data.rows:
            label = f"{data.key}: {row.label}"
            if row.skipped:
                out.append([label, data.n, mib, None, None, None, f"skipped: {row.skipped}"])
                continue
            wall, cpu = C.median(row.wall), C.median(row.cpu)
            peer = by_key.get(PEER_OF.get(row.key, ""))
            vs = ""
            if peer is not None and not peer.skipped:
                wall_ratio = C.ratio(C.median(peer.wall), wall)
                vs = f"{wall_ratio} / {C.ratio(C.median(peer.cpu), cpu)}"
            out.append(
                [
                    label,
                    data.n,
                    mib,
                    wall,
                    data.n / wall if wall else None,
                    1000 * cpu / data.n if cpu is not None else None,
                    vs if wall is not None else "failed",
                ]
            )
    return out


def main() -> int:
    parser = C.base_parser(__doc__.splitlines()[0] if __doc__ else "", runs=True)
    for key, (size, quick, full) in SIZES.items():
        parser.add_argument(
            f"--{key}",
            type=int,
            default=None,
            help=f"{size}x{size} instances in the study (default {full}; quick {quick})",
        )
    args = parser.parse_args()
    runs = C.runs_of(args)
    missing = [t for t in DCMTK_TOOLS if not _have(t)]
    if missing and C.CI:
        print(f"DCMTK is missing (CI=true): no {', '.join(missing)}", file=sys.stderr)
        return 1
    have_dcmtk = not missing
    print(f"bench_cli: aiodimse's commands vs DCMTK's, whole processes; {C.load_caveat()}")
    if missing:
        print(f"DCMTK rows skipped: no {', '.join(missing)}")
    with C.scratch_dir("bench-cli-") as scratch:
        PYCACHE.append(scratch / "pycache")
        sets: list[DataSet] = []
        for key, (size, quick, full) in SIZES.items():
            n = getattr(args, key)
            n = n if n is not None else (quick if args.quick else full)
            sets.append(make_set(scratch, key, n, size, have_dcmtk))
            print(f"data: {sets[-1].name}, {sets[-1].total_bytes / C.MIB:.1f} MiB")
        warm = make_set(scratch, "warm-up", 2, 64, have_dcmtk)
        setup = Setup(scratch, have_dcmtk, peers.free_port(), 60.0 if args.quick else 600.0)
        try:
            start_sources(setup, [*sets, warm])
            warm_up(setup, warm)
            rows = [row for data in sets for row in data.rows]
            for run, row in C.pending(rows, runs):
                measure(row, setup, run)
        finally:
            for stop in reversed(setup.stoppers):
                stop()
    C.print_table(
        f"Whole commands (start-up included), median of {runs}; "
        "vs DCMTK = DCMTK's time / ours, wall / CPU (above 1.00x: aiodimse is faster)",
        ["command", "files", "MiB", "wall s", "inst/s", "CPU ms/inst", "vs DCMTK"],
        table_rows(sets),
    )
    failed = [(f"{d.key}: {r.label}", f) for d in sets for r in d.rows for f in r.failures]
    if failed:
        print("\nfailed runs (the row fails):")
        for label, why in failed:
            print(f"  {label}: {why}")
    print(
        "\nwall = the whole process, start-up included; CPU = its user + system time "
        "(move: the receiver too, in the same process). "
        f"DCMTK's storescp and dcmqrscp listen on every interface; the clients use {HOST}."
    )
    payload = {
        "environment": C.environment(),
        "quick": args.quick,
        "runs": runs,
        "dcmtk": have_dcmtk,
        "sets": [
            {
                "key": d.key,
                "name": d.name,
                "instances": d.n,
                "total_bytes": d.total_bytes,
                "rows": [r.row_summary(_peer(d, r)) for r in d.rows],
            }
            for d in sets
        ],
    }
    C.finish(args, "bench_cli", payload)
    return 1 if failed else 0


def _peer(data: DataSet, row: Row) -> Row | None:
    peer = next((r for r in data.rows if r.key == PEER_OF.get(row.key)), None)
    return peer if peer is not None and not peer.skipped else None


def _have(tool: str) -> bool:
    try:
        peers.dcmtk_tool(tool)
    except peers.PeerMissing:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
