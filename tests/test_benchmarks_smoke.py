"""Every benchmark still runs: ``--quick`` as a subprocess, exit 0, its table, its JSON.

Speed is never asserted here (benchmarks/ measures it); what is checked is that each script
works end to end, prints its table, and that the transfers it measured really happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _settings import CI

try:
    import pynetdicom  # noqa: F401 - the benchmarks compare against it (extra "bench")
except ImportError:
    if CI:  # scripts/test.sh installs the "bench" extra: a missing pynetdicom is a failure
        raise
    pytest.skip("pynetdicom is not installed (extra 'bench')", allow_module_level=True)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


def run_script(name: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``benchmarks/<name>.py`` with ``args``; it must exit 0. Returns its stdout."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 0, f"{name} exited with {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def run_quick(name: str, results: Path, timeout: float = 50.0) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<name>.py --quick``; return its stdout and its JSON result."""
    stdout = run_script(name, "--quick", "--results-dir", str(results), timeout=timeout)
    latest = results / f"{name}-quick-latest.json"
    assert latest.is_file(), f"{name} wrote no result into {results}: {sorted(results.iterdir())}"
    return stdout, json.loads(latest.read_text())


#: Scripts this module runs by a name that is not written out in a call (parametrized).
OTHER_RUNS = {"fuzz_network", "flood_qrscp", "find_50k"}


def test_every_script_is_run_here() -> None:
    """A script added to benchmarks/ gets its smoke test: each is named here."""
    here = Path(__file__).read_text(encoding="utf-8")
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_"))
    assert len(scripts) > 10
    called = {s for s in scripts if f'run_quick("{s}"' in here or f'run_script("{s}"' in here}
    assert set(scripts) - called - OTHER_RUNS == set()
    assert set(scripts) >= OTHER_RUNS


def test_bench_pdu_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_pdu", tmp_path)
    assert "PDU codec: aiodimse.pdu vs pynetdicom.pdu" in stdout
    assert "aiodimse / pynetdicom" in stdout
    rows = {(r["pdu"], r["operation"]) for r in result["rows"] if r["group"] == "codec"}
    expected = {
        (pdu, op)
        for pdu in ("P-DATA-TF 16 KiB", "P-DATA-TF 1 MiB", "A-ASSOCIATE-RQ 120x3 + roles")
        for op in ("encode", "decode")
    }
    assert rows == expected
    for r in result["rows"]:
        assert r["aiodimse"]["best_s"] > 0 and r["pynetdicom"]["best_s"] > 0


def test_bench_store_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_store", tmp_path)
    assert "C-STORE, one association" in stdout
    assert "vs pynetdicom" in stdout and "vs DCMTK" in stdout
    assert "TCP_NODELAY" in stdout
    assert [s["instances"] for s in result["sets"]] == [10, 50]
    for data_set in result["sets"]:
        rows = {r["key"]: r for r in data_set["rows"]}
        assert set(rows) == {"aiodimse", "pynetdicom", "dcmtk", "aiodimse-dcmtk", "dcmtk-aiodimse"}
        for key in ("aiodimse", "aiodimse-dcmtk", "dcmtk-aiodimse"):
            if rows[key]["skipped"]:
                continue
            # Every instance an aiodimse side took part in arrived on the server's disk.
            for run in rows[key]["runs"]:
                assert run["stored"] == data_set["instances"], (key, run)
        for run in rows["pynetdicom"]["runs"]:
            assert run["nodelay"] is True  # the fairness setting really took effect


def test_bench_concurrency_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_concurrency", tmp_path)
    assert "Concurrent associations" in stdout
    assert "peak RSS MiB" in stdout
    by_server = {s["server"]: s for s in result["summary"]}
    assert set(by_server) == {"aiodimse", "pynetdicom"}
    ours = by_server["aiodimse"]
    assert ours["stored"] == ours["expected"] > 0
    assert ours["rejected"] == ours["stalled"] == ours["aborted"] == 0
    for s in result["summary"]:
        assert s["median_peak_rss_mib"] > 0


def test_bench_retrieve_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_retrieve", tmp_path)
    assert "C-MOVE, one study" in stdout and "C-GET, one study" in stdout
    assert "vs pynetdicom" in stdout and "vs DCMTK" in stdout and "vs serial" in stdout
    assert "TCP_NODELAY" in stdout
    n = result["instances"]
    assert n == 10
    rows = {(s, r["key"]): r for s, rs in result["services"].items() for r in rs}
    move = {"aiodimse", "aiodimse-window", "aiodimse-dcmqrscp", "pynetdicom", "dcmtk"}
    move |= {"dcmtk-self", "dcmtk-archive"}
    get = {"aiodimse", "aiodimse-window", "aiodimse-dcmqrscp", "pynetdicom", "dcmtk"}
    get |= {"dcmtk-archive"}
    assert set(rows) == {("move", k) for k in move} | {("get", k) for k in get}
    for (service, key), row in rows.items():
        if row["skipped"]:
            continue
        assert row["runs"], (service, key)
        if row["client"] != "aiodimse" and row["scp"] != "archive":
            continue
        # Every instance a retrieval with an aiodimse side asked for is on disk.
        for run in row["runs"]:
            assert run["files"] == n, (service, key, run)
            assert not run.get("error"), (service, key, run)
            if row["client"] == "aiodimse":
                assert run["status"] == "0000" and run["completed"] == n, (service, key, run)
                assert run["received_instances"] == n and run["nodelay"] is True
    for service in ("move", "get"):
        for run in rows[(service, "pynetdicom")]["runs"]:
            assert run["nodelay"] is True  # the fairness setting really took effect
    # The C-MOVE rows measure what they say: the window row's sub-associations were granted
    # a window by the receiver, the serial row's were not.
    for key, windowed in (("aiodimse", False), ("aiodimse-window", True)):
        for run in rows[("move", key)]["runs"]:
            windows = run["sub_association_windows"]
            assert windows, (key, run)
            assert any(w != [1, 1] for w in windows) is windowed, (key, windows)


def test_bench_window_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_window", tmp_path)
    assert "C-STORE, one association" in stdout and "vs serial" in stdout
    assert "vs DCMTK" in stdout and "DCMTK storescu -> storescp" in stdout
    assert [s["instances"] for s in result["sets"]] == [50, 10]
    for data_set in result["sets"]:
        n = data_set["instances"]
        rows = {r["key"]: r for r in data_set["rows"]}
        assert set(rows) == {"serial", "window", "serial-dcmtk", "window-dcmtk", "dcmtk"}
        # DCMTK's own pair, the reference row (skipped only outside CI: the script fails there).
        for run in rows["dcmtk"]["runs"]:
            assert run["stored"] == n and run["ok"] == n and not run["failed"], run
        for key, row in rows.items():
            if row["skipped"] or key == "dcmtk":
                continue
            for run in row["runs"]:
                assert run["stored"] == n and run["ok"] == n and run["failed"] == 0, (key, run)
                invoked = run["negotiated_window"][0]
                # Never more outstanding than negotiated (0 would mean unlimited).
                assert 1 <= run["peak_outstanding"] <= (invoked or n), (key, run)
        for run in rows["serial"]["runs"]:
            assert run["proposed_window"] is None and run["negotiated_window"] == [1, 1]
        for run in rows["window"]["runs"]:
            # Our SCP grants what was proposed, and the client really overlapped requests.
            assert run["negotiated_window"] == [8, 8] and run["peak_outstanding"] > 1


def test_bench_store_window_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_store_window", tmp_path)
    assert "into aiodimse qrscp" in stdout and "vs storescu" in stdout
    assert result["instances"] == 50
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"storescu", "serial", "window"}
    for key in ("serial", "window"):
        (run,) = rows[key]["runs"]
        assert run["ok"] and run["stored"] == 50, (key, run)


def test_bench_workers_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_workers", tmp_path)
    if result.get("skipped"):  # no DCMTK clients; under CI=true the script fails instead
        pytest.skip(result["skipped"])
    assert "concurrent storescu" in stdout and "vs --workers 1" in stdout
    expected = result["clients"] * result["per_client"]
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"workers-1", "workers-2", "dcmqrscp", "storescp-fork"}
    for key in ("workers-1", "workers-2", "storescp-fork"):
        for run in rows[key]["runs"]:
            assert run["stored"] == expected and not run["problems"], (key, run)
    for key in ("workers-1", "workers-2"):
        for run in rows[key]["runs"]:  # every instance indexed exactly once
            assert run["index_rows"] == run["index_distinct"] == run["files"] == expected, run


def test_bench_jobs_quick(tmp_path: Path) -> None:
    # A longer timeout: it starts four servers and a dozen job processes (> 50 s on a busy
    # machine).
    stdout, result = run_quick("bench_jobs", tmp_path, timeout=150)
    assert "Bulk retrieval" in stdout and "vs movescu" in stdout
    assert "TCP_NODELAY" in stdout and "peak RSS MiB" in stdout
    n = result["studies"]
    expected = n * result["instances"]
    keys = {(r["source"], r["key"]) for r in result["rows"]}
    jobs = {f"job-{m}-{a}" for m in ("move", "get") for a in (1, 4)}
    rows = {"movescu", "pynetdicom", *jobs}
    assert keys == {(s, k) for s in ("dcmqrscp", "archive") for k in rows}
    for row in result["rows"]:
        # Every instance arrived, and every job says every study done.
        assert row["error"] is None and row["files"] == expected, row
        if row["key"].startswith("job-"):
            assert row["studies_done"] == n and row["peak_rss_kib"] > 0, row
        if row["key"] == "pynetdicom":
            assert row["detail"]["nodelay"] is True  # the fairness setting really took effect
    assert [r["detail"]["studies"] for r in result["memory"]] == [n, result["memory_studies"]]
    for row in result["memory"]:
        assert row["files"] == row["studies_done"] == row["detail"]["studies"], row
        assert row["peak_rss_kib"] > 0


def test_bench_fuzz_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_fuzz", tmp_path)
    assert "aiodimse fuzz, seed 1" in stdout
    assert "aiodimse servers without findings: yes" in stdout
    rows = {r["target"]: r for r in result["rows"]}
    assert {"aiodimse qrscp", "aiodimse storescp"} <= set(rows)
    for row in rows.values():
        assert row["cases"] == 40 and row["cases_per_s"] > 0


def test_bench_startup_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_startup", tmp_path)
    assert "python -X importtime" in stdout and "vs DCMTK" in stdout
    first = result["imports"][0]
    assert first["code"] == "import aiodimse.cli" and first["median_ms"] > 0
    rows = {r["key"]: r for r in result["rows"]}
    assert {"version", "echo-help", "echo", "store", "storescp"} <= set(rows)
    for row in rows.values():
        assert row["failures"] == [], row
        # Each row ran every time (a skipped DCMTK row only outside CI: the script fails then).
        assert row["skipped"] or len(row["wall_s"]) == result["runs"] == 3, row


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("fuzz_network", ["--cases", "300"], "liveness checks: 1, failed: 0"),
        ("flood_qrscp", ["--associations", "30", "--per-assoc", "2"], "nothing lost: yes"),
        ("find_50k", ["--matches", "300"], "C-FIND of 300 matches"),
    ],
)
def test_robustness_runs_small(name: str, args: list[str], says: str) -> None:
    stdout = run_script(name, *args)
    assert says in stdout, stdout


def test_bench_cli_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_cli", tmp_path)
    assert "Whole commands (start-up included)" in stdout and "vs DCMTK" in stdout
    assert [s["instances"] for s in result["sets"]] == [20, 5]
    services = ("get", "move")
    sources = ("dcmqrscp", "qrscp")
    expected = {"store", "storescu"}
    expected |= {f"{s}{scu}-{src}" for s in services for scu in ("", "scu") for src in sources}
    for data_set in result["sets"]:
        n = data_set["instances"]
        rows = {r["key"]: r for r in data_set["rows"]}
        assert set(rows) == expected
        for key, row in rows.items():
            # A skipped row only outside CI (a missing DCMTK fails the script there).
            if row["skipped"]:
                continue
            assert row["failures"] == [] and len(row["runs"]) == result["runs"] == 1, (key, row)
            for run in row["runs"]:
                assert run["files"] == n and run["ok"], (key, run)


def test_bench_find_quick(tmp_path: Path) -> None:
    stdout, result = run_quick("bench_find", tmp_path)
    assert "C-FIND, 300 instances indexed" in stdout and "archive/dcmqrscp" in stdout
    assert "C-STORE ingest, 100 instances" in stdout
    rows = {(r["case"], r["client"]): r for r in result["rows"]}
    assert {case for case, _ in rows} == {"image-in-study", "image-all", "study-wildcard"}
    dcmqrscp = CI or "dcmqrscp_per_s" in result["ingest"]  # (DCMTK is required under CI)
    servers = {"archive", "dcmqrscp"} if dcmqrscp else {"archive"}
    for (case, client), row in rows.items():
        counts = row["counts"]
        # Every server answered every query with matches. (Their numbers are compared in
        # the script's output: dcmqrscp once gave pynetdicom 299 of 300 here.)
        assert set(counts) == servers and min(counts.values()) > 0, (case, client, counts)
    # Where aiodimse is both ends, the count is exact: every instance of the archive.
    assert rows[("image-all", "aiodimse")]["counts"]["archive"] == 300
    assert result["sizes"]["300"]["archive_counts"]["IMAGE"] == 300
    assert result["ingest"]["instances"] == 100 and result["ingest"]["archive_per_s"] > 0


@pytest.mark.parametrize("service", ["get", "move"])
def test_retrieve_cpu_runs_small(service: str) -> None:
    stdout = run_script("retrieve_cpu", service, "--instances", "5")
    assert f"{service}: 5 instances, " in stdout, stdout


def test_archive_cpu_runs_small() -> None:
    stdout = run_script("archive_cpu", "--instances", "6", "--size", "8")
    # Every instance was ingested, and every stored one is in the index.
    assert "ingest: 6 instances, " in stdout and "store: 6 instances, " in stdout
