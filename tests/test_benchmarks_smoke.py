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

pytest.importorskip(
    "pynetdicom", reason="the benchmarks compare against pynetdicom (extra 'bench')"
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.slow


def run_quick(name: str, results: Path) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<name>.py --quick``; return its stdout and its JSON result."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 0, f"{name} exited with {out.returncode}:\n{out.stdout}\n{out.stderr}"
    latest = results / f"{name}-quick-latest.json"
    assert latest.is_file(), f"{name} wrote no result into {results}: {sorted(results.iterdir())}"
    return out.stdout, json.loads(latest.read_text())


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
