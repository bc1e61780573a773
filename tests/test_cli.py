"""The command-line tools, run for real as subprocesses (``python -m aiodimse ...``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_support import Service
from _settings import require_dcmtk
from pydicom import dcmread

from aiodimse.cli import build_parser, load_qrscp_config
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.testing import peers
from aiodimse.testing.synthetic import make_study, write_study

TIMEOUT = 60


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodimse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def storescp(tmp_path: Path, services: list[Service], *extra: str) -> Service:
    port = peers.free_port()
    out = tmp_path / f"scp-{port}"
    service = Service(tmp_path, "storescp", "--out", out, "--host", "127.0.0.1", *extra, port=port)
    service.out = out  # type: ignore[attr-defined]
    services.append(service)
    return service


def qrscp(tmp_path: Path, services: list[Service], *extra: str) -> Service:
    port = peers.free_port()
    storage = tmp_path / f"archive-{port}"
    service = Service(
        tmp_path, "qrscp", "--storage", storage, "--host", "127.0.0.1", *extra, port=port
    )
    services.append(service)
    return service


def same_dataset(a: Path, b: Path) -> bool:
    return dataset_bytes(a, read_part10(a)) == dataset_bytes(b, read_part10(b))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    directory = tmp_path_factory.mktemp("study")
    return write_study(
        directory,
        make_study(6, rows=32, cols=32, seed="cli", patient_name="DOE^JOHN", patient_id="CLI1"),
    )


# -- help and usage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["echo", "store", "find", "get", "move", "storescp", "qrscp", "demo"]
)
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert f"usage: aiodimse {command}" in result.stdout


def test_bad_arguments_name_the_argument() -> None:
    result = run("echo", "127.0.0.1", "notaport")
    assert result.returncode == 2
    assert "notaport" in result.stderr and "port" in result.stderr
    no_traceback(result)
    result = run("echo", "127.0.0.1", "104", "--aet", "THIS-AE-TITLE-IS-TOO-LONG")
    assert result.returncode == 2
    assert "AE title" in result.stderr


def test_unknown_query_keyword_is_one_clear_line() -> None:
    result = run("find", "127.0.0.1", "104", "-k", "PatientNmae=DOE")
    assert result.returncode == 2
    assert "PatientNmae" in result.stderr
    no_traceback(result)


def test_unreachable_host_is_one_clear_line() -> None:
    port = peers.free_port()  # nobody listens there
    result = run("echo", "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "cannot connect" in result.stderr and "refused" in result.stderr.lower()
    no_traceback(result)


# -- storescp, echo, store ---------------------------------------------------------------------


def test_echo_and_store_against_aiodimse_storescp(
    tmp_path: Path, services: list[Service], study: list[Path]
) -> None:
    scp = storescp(tmp_path, services)
    result = run("echo", "127.0.0.1", str(scp.port), "--aec", "STORESCP")
    assert result.returncode == 0, result.stderr
    assert "Success" in result.stdout

    folder = tmp_path / "to-send"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate(study):
        shutil.copy(path, folder / ("sub" if i % 2 else "") / path.name)
    (folder / "notes.txt").write_text("not DICOM")
    result = run("store", "127.0.0.1", str(scp.port), str(folder), "-r")
    assert result.returncode == 0, result.stderr
    assert f"sent {len(study)}, failed 0, skipped 1 non-DICOM" in result.stdout
    no_traceback(result)
    out: Path = scp.out  # type: ignore[attr-defined]
    for path in study:
        received = out / f"{read_part10(path).sop_instance_uid}.dcm"
        assert same_dataset(path, received)


def test_store_reports_missing_and_non_dicom_and_still_sends_the_rest(
    tmp_path: Path, services: list[Service], study: list[Path]
) -> None:
    scp = storescp(tmp_path, services)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 200)
    result = run(
        "store", "127.0.0.1", str(scp.port), str(study[0]), str(junk), str(tmp_path / "nope.dcm")
    )
    assert result.returncode == 1  # a named file was missing
    assert "nope.dcm: no such file" in result.stderr
    assert "sent 1, failed 0, skipped 1 non-DICOM, 1 missing" in result.stdout
    no_traceback(result)
    out: Path = scp.out  # type: ignore[attr-defined]
    assert (out / f"{read_part10(study[0]).sop_instance_uid}.dcm").exists()


def test_store_refuses_a_truncated_file(
    tmp_path: Path, services: list[Service], study: list[Path]
) -> None:
    """A cut-short copy (``head -c 3000``) is not sent: it is counted as failed, saying
    why, and the SCP stores nothing of it."""
    scp = storescp(tmp_path, services)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(study[0].read_bytes()[:3000])
    result = run("store", "127.0.0.1", str(scp.port), str(cut), str(study[1]))
    no_traceback(result)
    assert result.returncode == 1
    assert "cut.dcm: the data set ends early" in result.stderr
    assert "sent 1, failed 1" in result.stdout
    out: Path = scp.out  # type: ignore[attr-defined]
    assert [p.name for p in out.glob("*.dcm")] == [f"{read_part10(study[1]).sop_instance_uid}.dcm"]


def test_a_missing_file_is_reported_once(tmp_path: Path) -> None:
    result = run("store", "127.0.0.1", str(peers.free_port()), str(tmp_path / "nope.dcm"))
    no_traceback(result)
    assert result.returncode == 1
    lines = (result.stderr + result.stdout).strip().splitlines()
    assert lines == [f"aiodimse store: {tmp_path / 'nope.dcm'}: no such file"]


def test_storescp_receives_from_dcmtk_storescu(
    tmp_path: Path, services: list[Service], study: list[Path]
) -> None:
    # Synthetic files: storescu re-encodes what it sends (it drops pydicom's test files'
    # trailing padding element), so only canonical files come through byte for byte.
    require_dcmtk("storescu")
    scp = storescp(tmp_path, services)
    result = peers.run_dcmtk(
        "storescu", "-aec", "STORESCP", "127.0.0.1", str(scp.port), *map(str, study)
    )
    assert result.returncode == 0, result.stderr
    out: Path = scp.out  # type: ignore[attr-defined]
    for path in study:
        assert same_dataset(path, out / f"{read_part10(path).sop_instance_uid}.dcm")


# -- the archive: qrscp with find, get, move ------------------------------------------------------


def test_qrscp_find_get_move(tmp_path: Path, services: list[Service], study: list[Path]) -> None:
    move_port = peers.free_port()
    archive = qrscp(tmp_path, services, "--dest", f"CLIMOVE=127.0.0.1:{move_port}")
    port = str(archive.port)
    result = run("store", "127.0.0.1", port, *map(str, study), "--aec", "QRSCP")
    assert result.returncode == 0, result.stderr + archive.log()

    result = run("find", "127.0.0.1", port, "-k", "PatientName=DOE*", "-k", "StudyInstanceUID")
    assert result.returncode == 0, result.stderr
    study_uid = str(dcmread(study[0], stop_before_pixels=True).StudyInstanceUID)
    assert study_uid in result.stdout
    assert "1 match(es)" in result.stderr

    result = run("find", "127.0.0.1", port, "-k", "PatientName=NOBODY*")
    assert result.returncode == 0
    assert "0 match(es)" in result.stderr

    result = run(
        "find",
        "127.0.0.1",
        port,
        "--level",
        "IMAGE",
        "-k",
        f"StudyInstanceUID={study_uid}",
        "-k",
        "SeriesInstanceUID",
        "-k",
        "SOPInstanceUID",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    matches = json.loads(result.stdout)
    assert len(matches) == len(study)
    # DICOM JSON model (PS3.18 F.2): tags as 8 hex digits, vr and Value.
    sop_uids = {m["00080018"]["Value"][0] for m in matches}
    assert sop_uids == {read_part10(p).sop_instance_uid for p in study}
    assert all(m["00080018"]["vr"] == "UI" for m in matches)

    got = tmp_path / "got"
    result = run("get", "127.0.0.1", port, "-k", f"StudyInstanceUID={study_uid}", "--out", str(got))
    assert result.returncode == 0, result.stderr + archive.log()
    for path in study:
        assert same_dataset(path, got / f"{read_part10(path).sop_instance_uid}.dcm")

    moved = tmp_path / "moved"
    result = run(
        "move",
        "127.0.0.1",
        port,
        "-k",
        f"StudyInstanceUID={study_uid}",
        "--aet",
        "CLIMOVE",
        "--port",
        str(move_port),
        "--out",
        str(moved),
    )
    assert result.returncode == 0, result.stderr + archive.log()
    assert f"{len(study)} received" in result.stdout
    for path in study:
        assert same_dataset(path, moved / f"{read_part10(path).sop_instance_uid}.dcm")

    result = run(
        "move", "127.0.0.1", port, "-k", f"StudyInstanceUID={study_uid}", "--dest", "UNKNOWN"
    )
    assert result.returncode == 1
    assert "A801" in result.stdout + result.stderr
    no_traceback(result)


def test_refused_association_says_why_in_words(tmp_path: Path, services: list[Service]) -> None:
    archive = qrscp(tmp_path, services, "--aet", "QRSCP", "--check-called-ae")
    result = run("echo", "127.0.0.1", str(archive.port), "--aec", "WRONG")
    assert result.returncode == 1
    assert "rejected" in result.stderr and "called-AE-title-not-recognized" in result.stderr
    no_traceback(result)


def test_qrscp_config_file(tmp_path: Path, services: list[Service], study: list[Path]) -> None:
    port = peers.free_port()
    config = tmp_path / "qrscp.toml"
    config.write_text(
        f'aet = "TOMLQR"\nport = {port}\nstorage = "{tmp_path / "tomlarchive"}"\n'
        f'host = "127.0.0.1"\n[destinations]\nSOMEWHERE = "127.0.0.1:11112"\n'
    )
    # The port comes from the file only: no --port on the command line.
    service = Service(tmp_path, "qrscp", "--config", config, port=port, port_option=False)
    services.append(service)
    result = run("echo", "127.0.0.1", str(port), "--aec", "TOMLQR")
    assert result.returncode == 0, result.stderr + service.log()
    assert (tmp_path / "tomlarchive").is_dir()


def test_qrscp_without_storage_is_a_usage_error() -> None:
    result = run("qrscp", "--port", "0")
    assert result.returncode == 2
    assert "--storage" in result.stderr


# -- the demo -------------------------------------------------------------------------------------


def test_demo_runs_every_operation_and_exits_zero(tmp_path: Path) -> None:
    result = run("demo", "--instances", "5", "--keep", str(tmp_path / "demo"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET"):
        assert step in result.stdout
    assert "moved: all 5 instances byte-identical" in result.stdout
    assert "got: all 5 instances byte-identical" in result.stdout
    assert "demo OK" in result.stdout
    assert os.listdir(tmp_path / "demo" / "moved")


def test_servers_started_by_the_cli_listen_on_loopback_unless_told(tmp_path: Path) -> None:
    parser = build_parser()
    storescp = parser.parse_args(["storescp", "--port", "1", "--out", str(tmp_path)])
    assert storescp.host == "127.0.0.1"
    move = parser.parse_args(["move", "h", "1", "-k", "PatientID=X", "--port", "2"])
    assert move.listen_host == "127.0.0.1"
    qrscp = parser.parse_args(["qrscp", "--storage", str(tmp_path)])
    assert load_qrscp_config(qrscp)["host"] == "127.0.0.1"
    told = parser.parse_args(["qrscp", "--storage", str(tmp_path), "--host", "0.0.0.0"])
    assert load_qrscp_config(told)["host"] == "0.0.0.0"
    anywhere = ["move", "h", "1", "-k", "PatientID=X", "--port", "2", "--host", "0.0.0.0"]
    assert parser.parse_args(anywhere).listen_host == "0.0.0.0"


@pytest.mark.parametrize("spec", ["(0010,0010=DOE", "0010,0010)=DOE", "(001G,0010)=X", "NoSuch=1"])
def test_find_refuses_a_malformed_key_in_one_line(spec: str) -> None:
    result = run("find", "127.0.0.1", "9", "-k", spec)
    no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("aiodimse: error:")
    assert "neither a DICOM keyword nor a tag" in result.stderr


def test_find_with_a_private_tag_sends_it_as_un(
    tmp_path: Path, services: list[Service], study: list[Path]
) -> None:
    """A tag the dictionary does not know is sent with VR UN, never a traceback."""
    qr = qrscp(tmp_path, services)
    assert run("store", "127.0.0.1", str(qr.port), *map(str, study)).returncode == 0
    result = run("find", "127.0.0.1", str(qr.port), "--aec", "QRSCP", "-k", "(0009,1010)=X")
    no_traceback(result)
    # The archive does not match on attributes it does not index: the study is found.
    assert result.returncode == 0, result.stderr
    assert "C-FIND: 1 match(es), 0x0000 Success" in result.stderr
    assert result.stdout.count("StudyInstanceUID=") == 1
