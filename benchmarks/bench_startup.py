"""Start-up time of the command line, timed as whole processes the way a user times them.

Rows: ``python -X importtime`` totals of ``import aiodimse.cli`` and of the echo command's
import path; then whole processes, wall time and CPU time (user + system), median of
``--runs`` (10; 3 under ``--quick``): ``aiodimse --version``, ``aiodimse echo --help``,
``aiodimse echo`` and ``aiodimse store`` (one small file) against a running DCMTK
``storescp`` next to DCMTK ``echoscu`` / ``storescu`` doing the same, and the time until
``aiodimse storescp`` / DCMTK ``storescp`` accept connections. Ratios are DCMTK's time over
ours (above 1.00x: we are faster), measured in the same run. Python runs from bytecode
cached in a scratch folder (one unmeasured run of each row fills it), as an installed
package does, even where PYTHONDONTWRITEBYTECODE is set.

``aiodimse`` is run as its console script does (``from aiodimse.cli import main``), from
this checkout. Without DCMTK the echo and store rows go to an aiodimse ``storescp`` and the
DCMTK rows are skipped, except under ``CI=true``, where a missing DCMTK is an error.
"""

from __future__ import annotations

import json
import os
import re
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

#: What the console script ``aiodimse`` runs (see pyproject's [project.scripts]).
AIODIMSE = [sys.executable, "-c", "import sys; from aiodimse.cli import main; sys.exit(main())"]
#: The modules the echo command must start without (issue: start-up time).
HEAVY = ("pydicom", "numpy", "sqlite3", "aiodimse.archive", "aiodimse.jobs", "aiodimse.fuzz")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


#: Compiled modules go here (set by main): an installed package runs from its bytecode,
#: and timing the compiler at every start (PYTHONDONTWRITEBYTECODE) is not what users see.
PYCACHE: list[Path] = []


def aiodimse_env() -> dict[str, str]:
    """The environment of a Python process: this checkout first on the path, bytecode
    cached outside the checkout (PYTHONPYCACHEPREFIX) even if the shell says not to."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(C.REPO), env.get("PYTHONPATH")) if p)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYCACHE:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE[0])
    return env


@dataclass
class Row:
    """One whole-process measurement, ``runs`` times: wall and CPU seconds of each run."""

    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    group: str
    until_listening: int | None = None  # a server: time until this port accepts
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None

    def run_once(self, timeout: float) -> None:
        if self.until_listening is not None:
            self._run_server(self.until_listening, timeout)
            return
        before = C.children_cpu_seconds()
        start = time.perf_counter()
        try:
            out = subprocess.run(
                self.argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.failures.append(f"timed out after {timeout} s")
            return
        wall = time.perf_counter() - start
        if out.returncode != 0:
            self.failures.append(f"exit {out.returncode}: {(out.stderr or out.stdout)[-300:]}")
            return
        self.wall.append(wall)
        self.cpu.append(C.children_cpu_seconds() - before)

    def _run_server(self, port: int, timeout: float) -> None:
        """Start the server, poll its port until it accepts, note the times, stop it."""
        start = time.perf_counter()
        proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - start > timeout:
                        break
                    time.sleep(0.001)  # measuring: poll the port every millisecond
            wall = time.perf_counter() - start
            cpu = C.proc_cpu_seconds(proc.pid)
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.failures.append(f"exited with {proc.returncode}: {err[-300:]}")
            elif wall > timeout:
                self.failures.append(f"not listening after {timeout} s")
            else:
                self.wall.append(wall)
                if cpu is not None:
                    self.cpu.append(cpu)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "group": self.group,
            "argv": self.argv,
            "skipped": self.skipped,
            "median_wall_s": C.median(self.wall),
            "median_cpu_s": C.median(self.cpu),
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "failures": self.failures,
        }


def import_times(code: str, runs: int) -> dict[str, Any]:
    """``python -X importtime -c code``: the median total (top-level imports after ``site``,
    in ms) over ``runs``, and the heavy modules the code imported."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    totals: list[float] = []
    heavy: list[str] = []
    for n in range(runs + 1):  # the first run compiles into the cache: not counted
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", probe],
            env=aiodimse_env(),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        heavy = json.loads(out.stdout.strip().splitlines()[-1])
        total, after_site = 0, False
        for line in out.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match is None or match.group(3) != " ":
                continue  # not a top-level import
            if after_site:
                total += int(match.group(2))
            after_site = after_site or match.group(4) == "site"
        if n:
            totals.append(total / 1000)
    return {"code": code, "median_ms": C.median(totals), "ms": totals, "heavy": heavy}


def dcmtk_tool(name: str) -> str | None:
    try:
        return peers.dcmtk_tool(name)
    except peers.PeerMissing:
        return None


def build_rows(
    port: int, target_aet: str, instance: Path, out_dir: Path, have_dcmtk: bool
) -> list[Row]:
    env, dcmtk_env = aiodimse_env(), peers.peer_env()
    host = ["127.0.0.1", str(port)]
    echoscu, storescu, storescp = (dcmtk_tool(n) for n in ("echoscu", "storescu", "storescp"))
    listen = peers.free_port()
    rows = [
        Row("python", "python -c pass (the floor)", [sys.executable, "-c", "pass"], env, "floor"),
        Row("version", "aiodimse --version", [*AIODIMSE, "--version"], env, "help"),
        Row("echo-help", "aiodimse echo --help", [*AIODIMSE, "echo", "--help"], env, "help"),
        Row(
            "echo",
            "aiodimse echo",
            [*AIODIMSE, "echo", *host, "--aec", target_aet],
            env,
            "echo",
        ),
        Row(
            "echoscu",
            "DCMTK echoscu",
            [echoscu or "echoscu", *host, "-aec", target_aet],
            dcmtk_env,
            "echo",
        ),
        Row(
            "store",
            "aiodimse store (1 file)",
            [*AIODIMSE, "store", *host, "--aec", target_aet, str(instance)],
            env,
            "store",
        ),
        Row(
            "storescu",
            "DCMTK storescu (1 file)",
            [storescu or "storescu", *host, "-aec", target_aet, str(instance)],
            dcmtk_env,
            "store",
        ),
        Row(
            "storescp",
            "aiodimse storescp, until listening",
            [*AIODIMSE, "storescp", "--port", str(listen), "--out", str(out_dir / "ours")],
            env,
            "listen",
            until_listening=listen,
        ),
        Row(
            "dcmtk-storescp",
            "DCMTK storescp, until listening",
            [storescp or "storescp", "-od", str(out_dir / "dcmtk"), str(listen)],
            dcmtk_env,
            "listen",
            until_listening=listen,
        ),
    ]
    (out_dir / "ours").mkdir(parents=True, exist_ok=True)
    (out_dir / "dcmtk").mkdir(parents=True, exist_ok=True)
    if not have_dcmtk:
        for row in rows:
            if row.key in ("echoscu", "storescu", "dcmtk-storescp"):
                row.skipped = "DCMTK is not installed"
    return rows


def start_target(work: Path, have_dcmtk: bool) -> tuple[Any, int, str]:
    """The server the echo and store rows talk to: DCMTK storescp, else aiodimse's."""
    port = peers.free_port()
    if have_dcmtk:
        return peers.start_storescp(port, work / "received", aet="STORESCP"), port, "STORESCP"
    proc = subprocess.Popen(
        [*AIODIMSE, "storescp", "--port", str(port), "--out", str(work / "received")],
        env=aiodimse_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peers.wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
    return proc, port, "STORESCP"


def stop_target(target: Any) -> None:
    if isinstance(target, subprocess.Popen):
        os.kill(target.pid, signal.SIGTERM)
        target.wait(timeout=10)
    else:
        target.stop()


def print_results(imports: Sequence[dict[str, Any]], rows: Sequence[Row], runs: int) -> None:
    C.print_table(
        "python -X importtime (top-level imports after site, median ms)",
        ["code", "ms", "heavy modules imported"],
        [(i["code"], i["median_ms"], ", ".join(i["heavy"]) or "none") for i in imports],
    )
    by_key = {r.key: r for r in rows}
    peer_of = {"echo": "echoscu", "store": "storescu", "storescp": "dcmtk-storescp"}
    table = []
    for row in rows:
        wall, cpu = C.median(row.wall), C.median(row.cpu)
        peer = by_key.get(peer_of.get(row.key, ""))
        vs = "-"
        if peer is not None and wall is not None:
            vs = f"{C.ratio(C.median(peer.wall), wall)} / {C.ratio(C.median(peer.cpu), cpu)}"
        if row.skipped:
            table.append((row.label, None, None, f"skipped: {row.skipped}"))
        else:
            table.append((row.label, wall and wall * 1000, cpu and cpu * 1000, vs if peer else ""))
    C.print_table(
        f"Whole processes, median of {runs} (ms); vs DCMTK = DCMTK's time / ours, wall / CPU",
        ["command", "wall ms", "CPU ms", "vs DCMTK"],
        table,
    )
    failed = [(r.label, f) for r in rows for f in r.failures]
    if failed:
        print("\nfailed runs:")
        for label, why in failed:
            print(f"  {label}: {why}")


def main() -> int:
    parser = C.base_parser(__doc__.splitlines()[0], runs=True)
    args = parser.parse_args()
    runs = int(args.runs or (3 if args.quick else 10))
    have_dcmtk = C.dcmtk_or_exit(C.have_dcmtk() and dcmtk_tool("echoscu") is not None)
    print(f"Start-up of the aiodimse command line vs DCMTK; before: {C.load_caveat()}")
    with C.scratch_dir("bench-startup-") as work:
        PYCACHE.append(work / "pycache")
        imports = [
            import_times("import aiodimse.cli", runs),
            # What `aiodimse echo` loads: the command's module, and connect() when it runs.
            import_times("import aiodimse.cli, aiodimse.cli.tools, aiodimse.association", runs),
        ]
        (instance,) = C.write_instances(work / "files", 1, 64, 64, "bench-startup")
        target, port, aet = start_target(work, have_dcmtk)
        try:
            rows = build_rows(port, aet, instance, work / "servers", have_dcmtk)
            for row in rows:  # compile every module once, outside the timings
                if not row.skipped:
                    row.run_once(timeout=60)
                    row.wall.clear()
                    row.cpu.clear()
            for _, row in C.pending(rows, runs):
                row.run_once(timeout=60)
        finally:
            stop_target(target)
    print_results(imports, rows, runs)
    payload = {
        "environment": C.environment(),
        "runs": runs,
        "target": "DCMTK storescp" if have_dcmtk else "aiodimse storescp",
        "imports": imports,
        "rows": [r.summary() for r in rows],
    }
    C.finish(args, "bench_startup", payload)
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
