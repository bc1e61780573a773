"""The command line's new options: the credentials file, transfer-syntax and identity
options as parsed, ``store --window/--associations/--repeat``, ``--cancel-after`` on
find/get/move, ``--json`` events, accept lists and the progress figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli_support import Service, run_aiodimse

from aiodimse import uids
from aiodimse.cli import build_parser
from aiodimse.cli.common import UsageError
from aiodimse.cli.credentials import Credentials
from aiodimse.cli.options import (
    identity_from,
    proposed_syntaxes,
    transfer_syntax_uid,
)
from aiodimse.cli.progress import LiveProgress
from aiodimse.enums import UserIdentityType
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"


run = run_aiodimse


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("studies")
    for i in range(4):
        write_study(base / f"s{i}", make_study(3, rows=8, cols=8, seed=f"opt{i}", patient_id="P1"))
    return base


# -- parsing --------------------------------------------------------------------------------


def parse(*argv: str) -> object:
    return build_parser().parse_args(list(argv))


def test_transfer_syntax_options_map_to_dcmtk_orders() -> None:
    args = parse("store", "h", "1", "x.dcm", "-xb")
    assert proposed_syntaxes(args) == (
        uids.EXPLICIT_VR_BIG_ENDIAN,
        uids.EXPLICIT_VR_LITTLE_ENDIAN,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
    )
    assert proposed_syntaxes(parse("store", "h", "1", "x.dcm", "--implicit-vr")) == (
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
    )
    assert proposed_syntaxes(parse("store", "h", "1", "x.dcm")) is None
    listed = parse("find", "h", "1", "--propose-ts", "DeflatedExplicitVRLittleEndian",
                   "--propose-ts", uids.IMPLICIT_VR_LITTLE_ENDIAN)  # fmt: skip
    assert proposed_syntaxes(listed) == (
        uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
    )
    accepted = parse("storescp", "--port", "1", "--out", "o", "+xi")
    assert proposed_syntaxes(accepted) == (uids.IMPLICIT_VR_LITTLE_ENDIAN,)
    with pytest.raises(Exception):  # noqa: B017 - argparse's own error type
        transfer_syntax_uid("1.2.3.4")
    with pytest.raises(SystemExit):
        parse("store", "h", "1", "x.dcm", "-xb", "-xi")  # mutually exclusive


def test_identity_options_build_the_sub_item(tmp_path: Path) -> None:
    rq = identity_from(parse("echo", "h", "1", "--user", "bob", "--password", "pw", "-rsp"))
    assert rq is not None
    assert rq.identity_type == UserIdentityType.USERNAME_AND_PASSCODE
    assert (rq.primary_field, rq.secondary_field) == (b"bob", b"pw")
    assert rq.positive_response_requested
    token = tmp_path / "token.jwt"
    token.write_text("aaa.bbb.ccc\n")
    rq = identity_from(parse("echo", "h", "1", "--jwt", str(token)))
    assert rq is not None and rq.identity_type == UserIdentityType.JWT
    assert rq.primary_field == b"aaa.bbb.ccc"
    assert identity_from(parse("echo", "h", "1")) is None
    with pytest.raises(UsageError):
        identity_from(parse("echo", "h", "1", "-rsp"))
    with pytest.raises(UsageError):
        identity_from(parse("echo", "h", "1", "--jwt", str(tmp_path / "missing")))


def test_credentials_file_holds_salted_hashes(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    creds = Credentials(path)
    creds.add("bob", "pw1")
    creds.add("carol", "pw1")
    text = path.read_text()
    assert "pw1" not in text
    bob, carol = (line.split(":", 1)[1] for line in text.splitlines()[1:])
    assert bob != carol  # the same passcode, different salts
    again = Credentials.load(path)
    assert again.verify("bob", b"pw1") and again.verify("carol", b"pw1")
    assert not again.verify("bob", b"pw2") and not again.verify("dave", b"pw1")
    path.write_text("bob:plaintext\n")
    with pytest.raises(UsageError, match=r"users\.txt:1"):
        Credentials(path)
    with pytest.raises(UsageError):
        Credentials.load(tmp_path / "none.txt")
    with pytest.raises(UsageError):
        Credentials(tmp_path / "x").add("a:b", "pw")


def test_progress_figures() -> None:
    progress = LiveProgress("C-STORE", 10, enabled=False)
    for _ in range(4):
        progress.step(size=2**20)
    progress.step(failed=True)
    assert (progress.done, progress.failed, progress.bytes) == (4, 1, 4 * 2**20)
    assert progress.rate > 0 and progress.mib_per_s > 0
    assert progress.eta is not None and progress.eta > 0
    line = progress.line()
    assert line.startswith("C-STORE 4/10 (") and "MiB/s" in line and "1 failed" in line
    assert progress.summary()["failed"] == 1


@pytest.mark.parametrize("command", ["echo", "store", "find", "get", "move", "storescp", "qrscp"])
def test_help_shows_examples(command: str) -> None:
    text = build_parser()._subparsers._group_actions[0].choices[command].format_help()  # type: ignore[union-attr]
    assert "examples:" in text and f"aiodimse {command}" in text


# -- against aiodimse's archive ---------------------------------------------------------------


def test_store_window_associations_repeat_then_cancel_after(
    tmp_path: Path, services: list[Service], folder: Path
) -> None:
    qr = Service(tmp_path, "qrscp", "--storage", tmp_path / "archive", "--async-window", "8")
    services.append(qr)
    sent = run(
        "store", LOCAL, qr.port, folder, "-r", "--window", "4", "--associations", "2",
        "--repeat", "2", "--json", "-v",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    events = [json.loads(line) for line in sent.stdout.splitlines()]
    stored = [e for e in events if e["event"] == "stored"]
    assert len(stored) == 24 and all(e["ok"] for e in stored)
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["sent"] == 24 and summary["failed"] == 0
    # Two associations, each granted the window it asked for.
    assert sent.stderr.count("operations window: 4 outstanding") == 2

    found = run("find", LOCAL, qr.port, "-k", "PatientID=P1", "-k", "StudyInstanceUID",
                "--cancel-after", "2")  # fmt: skip
    assert found.returncode == 0, found.stderr
    # Two printed; the status is Cancel, or Success when the archive's final response
    # crossed our C-CANCEL-RQ on the wire (PS3.7 9.3.2.3 allows either).
    assert len(found.stdout.splitlines()) == 2
    assert "C-FIND: 2 match(es)" in found.stderr
    assert "Cancel" in found.stderr or "Success" in found.stderr

    all_found = run("find", LOCAL, qr.port, "-k", "PatientID=P1", "-k", "StudyInstanceUID")
    assert len(all_found.stdout.splitlines()) == 4

    got = run("get", LOCAL, qr.port, "-k", "PatientID=P1", "--level", "PATIENT", "-m",
              "patient", "--out", tmp_path / "got", "--cancel-after", "3", "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    (summary,) = [json.loads(x) for x in got.stdout.splitlines() if '"summary"' in x]
    assert summary["cancelled"] is True
    assert 3 <= summary["received"] < 12
    assert len(list((tmp_path / "got").glob("*.dcm"))) == summary["received"]


def test_echo_json_and_storescp_accept_list(tmp_path: Path, services: list[Service]) -> None:
    scp = Service(tmp_path, "storescp", "--out", tmp_path / "in", "--allow", "GOOD")
    services.append(scp)
    good = run("echo", LOCAL, scp.port, "--aet", "GOOD", "--json", "--repeat", "2")
    assert good.returncode == 0, good.stderr
    events = [json.loads(line) for line in good.stdout.splitlines()]
    assert [e["event"] for e in events] == ["echo", "echo"] and events[0]["status"] == 0
    bad = run("echo", LOCAL, scp.port, "--aet", "OTHER")
    assert bad.returncode == 1
    assert "calling-AE-title-not-recognized" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
