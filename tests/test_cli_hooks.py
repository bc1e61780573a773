"""``aiodimse storescp`` file layouts and reception hooks: ``--sort-on-study``,
``--filepath`` patterns (never a path from unchecked peer data), ``--exec-on-reception``
and ``--exec-on-eostudy`` (once per study, with the study's folder)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_support import Service
from pydicom import dcmread

import aiodimse
from aiodimse.cli.hooks import HookRunner, StudyTracker, expand
from aiodimse.cli.layout import LayoutSink, PathPattern
from aiodimse.dicomfile import read_part10
from aiodimse.errors import StatusError
from aiodimse.testing import peers
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"

#: A hook that appends its arguments, as one JSON line, to the file named first.
RECORDER = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def wait_for_lines(path: Path, n: int, timeout: float = 20.0) -> list[list[str]]:
    """Wait until ``path`` has ``n`` complete lines (a condition, bounded), then parse them."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) >= n and text.endswith("\n"):
            return [json.loads(line) for line in lines]
        assert time.monotonic() < deadline, f"{n} lines expected in {path}, got: {text!r}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    base = tmp_path_factory.mktemp("studies")
    return [
        write_study(base / name, make_study(n, rows=8, cols=8, seed=name, patient_id=name))
        for name, n in (("a", 3), ("b", 2), ("c", 2))
    ]


class StoreSCP(Service):
    """``aiodimse storescp --out OUT ARGS`` in a process of its own."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out = tmp_path / "out"
        super().__init__(tmp_path, "storescp", "--out", self.out, *args)


@pytest.fixture
def scps() -> Iterator[list[StoreSCP]]:
    started: list[StoreSCP] = []
    yield started
    for scp in started:
        scp.stop()


def store(port: int, *paths: Path, extra: tuple[str, ...] = ()) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiodimse", "store", LOCAL, str(port), *map(str, paths), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def study_uid(paths: list[Path]) -> str:
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def test_eostudy_hook_runs_once_per_study_with_its_folder(
    tmp_path: Path, scps: list[StoreSCP], studies: list[list[Path]]
) -> None:
    record = tmp_path / "eostudy.jsonl"
    received = tmp_path / "reception.jsonl"
    scp = StoreSCP(
        tmp_path,
        "--sort-on-study",
        "--exec-on-eostudy",
        f'{sys.executable} -c "{RECORDER}" {record} #p {{study}} #n #a',
        "--exec-on-reception",
        f'{sys.executable} -c "{RECORDER}" {received} #f',
        "--eostudy-timeout",
        "120",
    )
    scps.append(scp)
    a, b, c = studies
    # Two studies, one after the other, on one association: A ends when B's first
    # instance arrives, B when the association ends.
    store(scp.port, *a, *b, extra=("--aet", "MODALITY"))
    ended = wait_for_lines(record, 2)
    # Then a third study, over two associations at once, each with a window.
    store(scp.port, *c, extra=("--associations", "2"))
    ended = wait_for_lines(record, 3)
    by_study = {line[1]: line for line in ended}
    assert len(ended) == 3 and len(by_study) == 3, ended  # once per study
    for files in studies:
        uid = study_uid(files)
        folder, _, count, _ = by_study[uid]
        assert Path(folder) == scp.out / uid
        assert int(count) == len(files)
        assert sorted(p.name for p in Path(folder).iterdir()) == sorted(
            f"{read_part10(f).sop_instance_uid}.dcm" for f in files
        )
    assert by_study[study_uid(a)][3] == "MODALITY"
    # The reception hook: one run per file, with the file's final path.
    files = wait_for_lines(received, 7)
    assert sorted(Path(f[0]).name for f in files) == sorted(
        f"{read_part10(p).sop_instance_uid}.dcm" for s in studies for p in s
    )
    assert all(Path(f[0]).is_file() for f in files)


def test_filepath_pattern_and_hook_failures_do_not_stop_reception(
    tmp_path: Path, scps: list[StoreSCP], studies: list[list[Path]]
) -> None:
    scp = StoreSCP(
        tmp_path,
        "--filepath",
        "{0020000D}/{SeriesInstanceUID}/{PatientID}-{00080018}",
        "--filename-extension",
        ".dcm",
        "--exec-on-reception",
        "/nonexistent/hook #f",
        "--json",
    )
    scps.append(scp)
    a = studies[0]
    store(scp.port, *a)
    for path in a:
        ds = dcmread(path, stop_before_pixels=True)
        expected = (
            scp.out
            / ds.StudyInstanceUID
            / ds.SeriesInstanceUID
            / f"{ds.PatientID}-{ds.SOPInstanceUID}.dcm"
        )
        assert expected.is_file()
    scp.stop()
    log = scp.log_path.read_text()
    assert "reception hook /nonexistent/hook" in log  # logged, not fatal
    assert "Traceback" not in log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len([e for e in events if e["event"] == "received"]) == len(a)


# -- in-process: the pattern's checks, the idle rule ------------------------------------------


@pytest.mark.parametrize("bad", ["/etc/{00080018}", "../{00080018}", "a/../../b", "{Nope}", ""])
def test_patterns_that_could_leave_the_folder_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        PathPattern(bad)


def test_values_from_the_peer_are_checked_before_they_become_paths() -> None:
    pattern = PathPattern("{StudyInstanceUID}/{PatientID}/{SOPInstanceUID}")
    study, sop = 0x0020000D, 0x00080018
    patient = 0x00100020
    ok = pattern.render({study: "1.2.3", patient: "ID 7/../x", sop: "1.2.4"})
    assert ok == "1.2.3/ID_7_.._x/1.2.4"
    for bad_uid in ("../../etc", "1.2.3/4", "", "1..2", "01.2"):
        with pytest.raises(StatusError):
            pattern.render({study: bad_uid, patient: "p", sop: "1.2.4"})
    assert pattern.render({study: "1.2", patient: "..", sop: "1.3"}) == "1.2/unknown/1.3"


def test_placeholders_are_replaced_inside_arguments_never_split() -> None:
    argv = expand(["tool", "--in=#p", "{study}", "#f"], {"dir": "/a b", "study": "1.2", "path": ""})
    assert argv == ["tool", "--in=/a b", "1.2", ""]
    # For /bin/sh (--exec-shell) a value is quoted: it can never become shell syntax.
    line = expand(["cd #p && make {study}"], {"dir": "/x; rm -rf ~", "study": "$(id)"}, quote=True)
    assert line == ["cd '/x; rm -rf ~' && make '$(id)'"]


async def test_a_study_ends_after_the_idle_timeout_while_its_association_stays(
    tmp_path: Path, studies: list[list[Path]]
) -> None:
    done = tmp_path / "done.jsonl"
    runner = HookRunner(timeout=30)
    sink = LayoutSink(tmp_path / "out", "{StudyInstanceUID}/{SOPInstanceUID}")
    async with aiodimse.StorageServer(sink, LOCAL, 0) as server:
        tracker = StudyTracker(
            runner,
            called_ae="AIODIMSE",
            on_reception=None,
            on_study=[sys.executable, "-c", RECORDER, str(done), "#p", "#n"],
            idle=0.3,
            associations=lambda: list(server.associations),
        )
        server.add_listener(tracker)
        contexts = aiodimse.contexts.for_files(studies[1])
        async with aiodimse.connect(LOCAL, server.port, contexts=contexts) as assoc:
            for path in studies[1]:
                await assoc.store(path)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not tracker.ended:  # the idle timer, not the association's end
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
            assert assoc.is_established
        await runner.drain(20)
        tracker.close()
    ((study, folder, count),) = tracker.ended
    assert study == study_uid(studies[1]) and count == 2
    assert folder == tmp_path / "out" / study
    assert runner.ran == 1 and runner.failed == 0
    assert json.loads(done.read_text()) == [str(folder), "2"]


def test_qrscp_runs_the_same_hooks_once_its_instances_are_indexed(
    tmp_path: Path, studies: list[list[Path]]
) -> None:
    record = tmp_path / "eostudy.jsonl"
    received = tmp_path / "reception.jsonl"
    port = peers.free_port()
    qr = peers.start_aiodimse_qrscp(
        port,
        tmp_path / "archive",
        work_dir=tmp_path,
        extra=[
            "--exec-on-eostudy",
            f'{sys.executable} -c "{RECORDER}" {record} #s #n #a',
            "--exec-on-reception",
            f'{sys.executable} -c "{RECORDER}" {received} #f #s',
            "--eostudy-timeout",
            "120",
        ],
    )
    try:
        a, b, _ = studies
        store(port, *a, *b, extra=("--aet", "MODALITY", "--aec", "QRSCP"))
        ended = wait_for_lines(record, 2)
        files = wait_for_lines(received, 5)
    finally:
        qr.stop()
    assert sorted((s, int(n), ae) for s, n, ae in ended) == sorted(
        (study_uid(s), len(s), "MODALITY") for s in (a, b)
    )
    # Each file run once, in the archive, after it was indexed.
    assert sorted(Path(f).name for f, _ in files) == sorted(
        f"{read_part10(p).sop_instance_uid}.dcm" for s in (a, b) for p in s
    )
    assert all(Path(f).is_file() and (tmp_path / "archive") in Path(f).parents for f, _ in files)
