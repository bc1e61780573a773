"""``aiodimse conformance``: aiodimse's own servers pass every applicable check, the checks
fail against a peer that answers wrongly, and the battery runs to the end against DCMTK,
Orthanc and pynetdicom (whose tables are printed, not judged)."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

import aiodimse
from aiodimse.archive import ArchiveServer
from aiodimse.dicomfile import encode_dataset
from aiodimse.dimse.commands import CEchoRSP, CFindRSP, decode_command, encode_command
from aiodimse.enums import AbortReason, AbortSource, ContextResult
from aiodimse.errors import PDUError
from aiodimse.fuzz.conformance import BATTERY, ConformanceReport, Verdict, check, format_table
from aiodimse.fuzz.probe import message_pdata
from aiodimse.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    ImplementationClassUID,
    MaximumLength,
    PDataTF,
    PDUReader,
    PresentationContextAC,
    RoleSelection,
    UserInformation,
    decode_pdu,
)
from aiodimse.testing import peers
from aiodimse.testing.peers import PeerProcess
from aiodimse.testing.synthetic import make_archive_population, make_study, write_study

HOST = "127.0.0.1"
TIMEOUT = 2.0
ALL_IDS = {c.id for c in BATTERY}


def assert_complete(report: ConformanceReport) -> None:
    """Every check ran and has one of the four verdicts."""
    assert [r.id for r in report.results] == [c.id for c in BATTERY]
    assert all(isinstance(r.verdict, Verdict) for r in report.results)
    assert all(r.got for r in report.results)


def fails(report: ConformanceReport) -> list[str]:
    return [f"{r.id}: {r.got} ({r.why})" for r in report.results if r.verdict == Verdict.FAIL]


@pytest.fixture(scope="module")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One 3-instance CT study (128x128, so a C-GET sends P-DATA beyond 4096 bytes)."""
    return write_study(tmp_path_factory.mktemp("study"), make_study(3, rows=128, cols=128))


# -- aiodimse's own servers: zero fails --------------------------------------------------------


async def test_archive_passes_every_applicable_check(
    tmp_path: Path, study_files: list[Path]
) -> None:
    more = write_study(tmp_path / "more", make_archive_population(3, 3, 1, 1))
    async with ArchiveServer(tmp_path / "store", HOST, 0, ae_title="QRSCP") as server:
        server.archive.ingest([*study_files, *more])
        report = await check(HOST, server.port, aec="QRSCP", timeout=TIMEOUT)
    print(format_table(report))
    assert_complete(report)
    assert fails(report) == []
    for must_pass in ("c-echo", "max-pdu", "c-find-cancel", "c-find-unsupported-key", "release"):
        assert report.by_id(must_pass).verdict == Verdict.PASS, report.by_id(must_pass)


async def test_storage_server_passes_every_applicable_check(tmp_path: Path) -> None:
    async with aiodimse.StorageServer(tmp_path / "in", HOST, 0, ae_title="STORESCP") as server:
        report = await check(HOST, server.port, aec="STORESCP", timeout=TIMEOUT)
    print(format_table(report))
    assert_complete(report)
    assert fails(report) == []
    assert report.by_id("c-echo").verdict == Verdict.PASS
    # A storage SCP offers no C-FIND or C-GET: those checks do not apply.
    for check_id in ("c-find-cancel", "c-find-unsupported-key", "max-pdu"):
        assert report.by_id(check_id).verdict == Verdict.NOT_APPLICABLE


async def test_only_runs_the_named_checks(tmp_path: Path) -> None:
    async with aiodimse.StorageServer(tmp_path / "in", HOST, 0) as server:
        report = await check(HOST, server.port, aec="ANY", timeout=TIMEOUT, only=["c-echo"])
        with pytest.raises(ValueError, match="unknown check"):
            await check(HOST, server.port, aec="ANY", only=["no-such-check"])
    assert [r.id for r in report.results] == ["c-echo"]
    assert report.to_json()["summary"]["pass"] == 1


async def test_nothing_listening_is_inconclusive_not_a_crash() -> None:
    port = peers.free_port()
    report = await check(HOST, port, aec="X", timeout=0.5, only=["c-echo", "unknown-pdu-idle"])
    assert {r.verdict for r in report.results} == {Verdict.INCONCLUSIVE}
    assert "cannot connect" in report.results[0].got


# -- a peer that answers wrongly: the matching checks fail -------------------------------------


class WrongPeer:
    """A raw SCP that grants every role (even those not proposed), aborts with reason 0
    (not-specified) whatever the fault, and answers a C-FIND with one 10,000-byte P-DATA-TF
    whatever Maximum Length was proposed."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> WrongPeer:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = PDUReader()
        rq: AAssociateRQ | None = None
        try:
            while chunk := await reader.read(65536):
                frames.feed(chunk)
                while (raw := frames.next_raw()) is not None:
                    data = bytes(raw)
                    try:
                        pdu = decode_pdu(data)
                    except PDUError:
                        writer.write(AAbort(AbortSource.SERVICE_PROVIDER).encode())
                        await writer.drain()
                        return
                    if isinstance(pdu, AAssociateRQ):
                        rq = pdu
                        writer.write(self._accept(pdu).encode())
                    elif isinstance(pdu, PDataTF) and rq is not None:
                        writer.write(self._answer(rq, pdu))
                    elif isinstance(pdu, AReleaseRQ):
                        writer.write(AReleaseRP().encode())
                    else:
                        writer.write(AAbort(AbortSource.SERVICE_PROVIDER, AbortReason(0)).encode())
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _accept(rq: AAssociateRQ) -> AAssociateAC:
        contexts = tuple(
            PresentationContextAC(c.context_id, ContextResult.ACCEPTANCE, c.transfer_syntaxes[0])
            for c in rq.presentation_contexts
        )
        asked = rq.user_information.role_selections if rq.user_information else ()
        items = (
            MaximumLength(16384),
            ImplementationClassUID("1.2.3.4"),
            *(RoleSelection(r.sop_class_uid, True, True) for r in asked),  # PS3.7 D.3.3.4 breach
        )
        return AAssociateAC(
            rq.called_ae_title, rq.calling_ae_title, contexts, UserInformation(items)
        )

    @staticmethod
    def _answer(rq: AAssociateRQ, pdu: PDataTF) -> bytes:
        pdv = pdu.items[0]
        if not pdv.is_command:
            return b""
        cmd = decode_command(bytes(pdv.data))
        ts = next(
            c.transfer_syntaxes[0]
            for c in rq.presentation_contexts
            if c.context_id == pdv.context_id
        )
        if cmd.command_field == 0x0030:
            rsp = CEchoRSP(message_id_being_responded_to=cmd.message_id)  # type: ignore[union-attr]
            return message_pdata(pdv.context_id, encode_command(rsp))
        if cmd.command_field == 0x0020:
            mid = cmd.message_id  # type: ignore[union-attr]
            match = Dataset()
            match.StudyInstanceUID = "1.2.3"
            match.TextValue = "X" * 9990  # UT: no length limit
            pending = CFindRSP(message_id_being_responded_to=mid, status=0xFF00, has_dataset=True)
            big = message_pdata(pdv.context_id, encode_command(pending), encode_dataset(match, ts))
            final = CFindRSP(message_id_being_responded_to=mid, status=0)
            return big + message_pdata(pdv.context_id, encode_command(final))
        return AAbort(AbortSource.SERVICE_PROVIDER, AbortReason(0)).encode()


async def test_checks_fail_against_a_peer_that_answers_wrongly() -> None:
    async with WrongPeer() as peer:
        report = await check(
            HOST,
            peer.port,
            aec="WRONG",
            timeout=TIMEOUT,
            only=["role-not-proposed", "unknown-pdu", "bad-pdv-length", "max-pdu", "c-echo"],
        )
    print(format_table(report))
    verdicts = {r.id: r.verdict for r in report.results}
    assert verdicts == {
        "role-not-proposed": Verdict.FAIL,
        "unknown-pdu": Verdict.FAIL,
        "bad-pdv-length": Verdict.FAIL,
        "max-pdu": Verdict.FAIL,
        "c-echo": Verdict.PASS,
    }
    assert "granted a role proposed as 0" in report.by_id("role-not-proposed").why
    assert "reason 0, not 1" in report.by_id("unknown-pdu").why
    assert "largest" in report.by_id("max-pdu").got


# -- the command line --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiodimse", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_table_and_json(tmp_path: Path) -> None:
    qrscp = peers.start_aiodimse_qrscp(peers.free_port(), tmp_path / "st", work_dir=tmp_path)
    try:
        port = str(qrscp.port)
        table = run_cli(HOST, port, "--aec", "QRSCP", "--only", "c-echo", "--only", "release")
        as_json = run_cli(HOST, port, "--aec", "QRSCP", "--only", "unknown-pdu", "--json")
    finally:
        qrscp.stop()
    assert table.returncode == 0, table.stderr
    assert "c-echo" in table.stdout and "release" in table.stdout
    assert "2 pass, 0 fail" in table.stdout.splitlines()[-1]
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    (result,) = doc["results"]
    assert result["id"] == "unknown-pdu" and result["verdict"] == "pass"
    assert result["clause"].startswith("PS3.8")
    assert {"sent", "expected", "got"} <= set(result)


async def test_cli_exits_1_when_a_check_fails() -> None:
    async with WrongPeer() as peer:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "aiodimse", "conformance", HOST, str(peer.port), "--aec", "WRONG"),
            *("--only", "unknown-pdu", "--only", "c-echo", "--timeout", str(TIMEOUT)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err.decode()
    assert "1 pass, 1 fail" in out.decode().splitlines()[-1]


def test_cli_refuses_other_hosts_and_bad_options() -> None:
    remote = run_cli("192.0.2.1", "104", "--aec", "PACS")
    assert remote.returncode == 2
    assert "--i-own-this-host" in remote.stderr and len(remote.stderr.splitlines()) == 1
    assert "Traceback" not in remote.stderr
    unknown = run_cli(HOST, "104", "--only", "no-such-check")
    assert unknown.returncode == 2 and "no-such-check" in unknown.stderr
    assert "Traceback" not in unknown.stderr


# -- third parties: the battery completes; the known-good checks pass --------------------------

KNOWN_GOOD = (
    "ac-echo",
    "ac-user-info",
    "version-unsupported",
    "pdata-before-ac",
    "release",
    "abort",
)


async def _store(port: int, aec: str, files: list[Path]) -> None:
    contexts = aiodimse.contexts.for_files(files)
    async with aiodimse.connect(HOST, port, called_ae=aec, contexts=contexts) as assoc:
        for path in files:
            await assoc.store(path)


def _judge_third_party(report: ConformanceReport, *, echo: bool = True) -> None:
    print(format_table(report))
    assert_complete(report)
    for check_id in KNOWN_GOOD + (("c-echo",) if echo else ()):
        assert report.by_id(check_id).verdict == Verdict.PASS, report.by_id(check_id)


async def test_dcmqrscp_battery_completes(
    dcmqrscp_peer: Callable[..., PeerProcess], study_files: list[Path]
) -> None:
    peer = dcmqrscp_peer()
    await _store(peer.port, "DCMQRSCP", study_files)
    report = await check(HOST, peer.port, aec="DCMQRSCP", timeout=TIMEOUT)
    _judge_third_party(report)
    assert report.by_id("max-pdu").verdict == Verdict.PASS
    assert report.by_id("called-ae-unknown").verdict == Verdict.PASS  # it checks the called AE


async def test_storescp_battery_completes(storescp_peer: Callable[..., PeerProcess]) -> None:
    peer = storescp_peer()
    report = await check(HOST, peer.port, aec="STORESCP", timeout=TIMEOUT)
    _judge_third_party(report)
    assert report.by_id("c-find-cancel").verdict == Verdict.NOT_APPLICABLE


async def test_orthanc_battery_completes(
    orthanc_peer: Callable[..., PeerProcess], study_files: list[Path]
) -> None:
    peer = orthanc_peer()
    await _store(peer.port, "ORTHANC", study_files)
    report = await check(HOST, peer.port, aec="ORTHANC", timeout=TIMEOUT)
    _judge_third_party(report)


@pytest.fixture
async def pynetdicom_qr(tmp_path: Path, study_files: list[Path]) -> AsyncIterator[PeerProcess]:
    try:
        peer = peers.start_pynetdicom_qrscp(peers.free_port(), study_files, work_dir=tmp_path)
    except peers.PeerMissing as exc:
        pytest.fail(str(exc))  # pynetdicom is a test dependency: never skip
    try:
        yield peer
    finally:
        peer.stop()


@pytest.mark.interop
async def test_pynetdicom_battery_completes(pynetdicom_qr: PeerProcess) -> None:
    report = await check(HOST, pynetdicom_qr.port, aec="PYNETDICOM", timeout=TIMEOUT)
    # This Q/R SCP offers no Verification context: C-ECHO does not apply.
    _judge_third_party(report, echo=False)
    assert report.by_id("c-echo").verdict == Verdict.NOT_APPLICABLE


def test_every_check_names_its_clause() -> None:
    assert len(ALL_IDS) == len(BATTERY) >= 25
    for spec in BATTERY:
        assert spec.clause.startswith(("PS3.8", "PS3.7", "PS3.4")), spec
        assert spec.sent and spec.expected and spec.title


def test_p_data_fragments_respect_the_limit() -> None:
    data = message_pdata(1, b"c" * 10, b"d" * 10000, max_pdu=4096)
    sizes = []
    while data:
        (length,) = struct.unpack(">L", data[2:6])
        sizes.append(length)
        data = data[6 + length :]
    assert max(sizes) <= 4096 and len(sizes) == 4
