"""aiodimse SCU against aiodimse SCP, both on the test's event loop: C-ECHO, C-STORE, C-FIND,
transfer syntaxes, PDU sizes, concurrency, cancellation, handler failures, release, abort,
timeouts and rejection.

Servers listen on 127.0.0.1, port 0. Every wait that could hang is bounded by a small
:class:`~aiodimse.Timeouts` or ``asyncio.wait_for``; ordering is made deterministic with
events rather than sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _association_support import (
    LOCAL,
    StoredFiles,
    assert_dcmdump_reads,
    assert_same_content,
    assert_stored_exactly,
    by_instance,
    data_set_of,
    exact_contexts,
    pydicom_file,
    pydicom_files,
    sop_instance_of,
    transfer_syntax_of,
)
from pydicom import Dataset, dcmread
from pydicom.uid import UID

import aiodimse
from aiodimse import contexts, uids
from aiodimse.enums import AbortReason, AbortSource, PDUType, RejectResult, RejectSource
from aiodimse.errors import (
    AiodimseError,
    AssociationAborted,
    AssociationRejected,
    AssociationTimeout,
    ConnectionLost,
    StatusError,
    TransferSyntaxError,
)
from aiodimse.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    PDataTF,
    PDUReader,
    PresentationDataValue,
    decode_pdu,
)
from aiodimse.requests import FindRequest, Request, StoreRequest
from aiodimse.results import StoredInstance
from aiodimse.testing.peers import free_port
from aiodimse.testing.synthetic import SUPPORTED_TRANSFER_SYNTAXES, make_study, write_study
from aiodimse.transport.link import READ_SIZE
from aiodimse.ul.negotiation import (
    AcceptorPolicy,
    ContextRequest,
    Rejection,
    build_request,
    negotiate,
)

SUCCESS, CANCEL = 0x0000, 0xFE00
PROCESSING_FAILURE, UNABLE_TO_PROCESS, OUT_OF_RESOURCES = 0x0110, 0xC001, 0xA700
#: Quick, but far above anything loopback needs: a lost answer fails in seconds, not minutes.
QUICK = aiodimse.Timeouts(connect=5, acse=5, dimse=5)
SHORT = 0.5
CT = "1.2.840.10008.5.1.4.1.1.2"


def storage_server(directory: Path, **options: Any) -> aiodimse.StorageServer:
    options.setdefault("timeouts", QUICK)
    return aiodimse.StorageServer(directory, LOCAL, 0, ae_title="STORE", **options)


def connect(port: int, **options: Any) -> Any:
    options.setdefault("timeouts", QUICK)
    options.setdefault("called_ae", "STORE")
    options.setdefault("calling_ae", "TESTSCU")
    return aiodimse.connect(LOCAL, port, **options)


async def server_side(server: aiodimse.Server) -> aiodimse.Association:
    """The server's half of the one association it has."""
    assert len(server.associations) == 1
    return next(iter(server.associations))


# -- C-ECHO ------------------------------------------------------------------------------------


async def test_echo(tmp_path: Path) -> None:
    async with storage_server(tmp_path) as scp, connect(scp.port) as assoc:
        status = await assoc.echo()
        assert status.code == SUCCESS and status.category is aiodimse.StatusCategory.SUCCESS
        assert assoc.is_established
        assert (assoc.calling_ae, assoc.called_ae) == ("TESTSCU", "STORE")
        peer = await server_side(scp)
        assert peer.calling_ae == "TESTSCU" and peer.peer_ae == "TESTSCU"
    assert assoc.is_closed and assoc.end_reason is None


async def test_both_sides_read_the_socket_in_small_pieces(tmp_path: Path) -> None:
    """Each side reads at most READ_SIZE bytes at a time: asyncio's default 256 KiB reads
    made glibc map fresh pages for every read of a large data set."""
    async with storage_server(tmp_path) as scp, connect(scp.port) as assoc:
        peer = await server_side(scp)
        for side in (assoc, peer):
            transport = side.link.transport
            assert transport is not None
            assert transport.max_size == READ_SIZE  # type: ignore[attr-defined]
        assert READ_SIZE <= 64 * 1024


# -- C-STORE -----------------------------------------------------------------------------------


async def test_store_pydicom_files_exactly(tmp_path: Path) -> None:
    files = pydicom_files()
    stored: list[StoredInstance] = []
    kept: list[Path] = []
    inbox = tmp_path / "in"
    async with storage_server(inbox) as scp:
        scp.add_listener(stored.append)
        async with connect(scp.port, contexts=exact_contexts(files)) as assoc:
            for i, original in enumerate(files):
                status = await assoc.store(original)
                assert status.code == SUCCESS
                # (The three MR_small files share one SOP Instance UID: check each copy
                # before the next replaces it.)
                copy = inbox / f"{sop_instance_of(original)}.dcm"
                # Sent as it is, written as it came: the data set is untouched, whatever
                # its syntax (deflated included).
                assert_stored_exactly(copy, original)
                assert len(data_set_of(copy)) % 2 == 0  # PS3.5 7.1 / A.5: even length
                assert dcmread(copy).SOPInstanceUID == dcmread(original).SOPInstanceUID
                kept.append(copy.rename(tmp_path / f"{i}.dcm"))
    assert_dcmdump_reads(kept)
    assert [s.sop_instance_uid for s in stored] == [sop_instance_of(p) for p in files]
    assert [s.transfer_syntax for s in stored] == [transfer_syntax_of(p) for p in files]
    assert all(s.calling_ae == "TESTSCU" and s.path is not None for s in stored)
    assert list(inbox.iterdir()) == []  # no temporary file left behind


async def test_odd_length_deflated_stream_travels_padded(tmp_path: Path) -> None:
    original = pydicom_file("image_dfl.dcm")
    assert transfer_syntax_of(original) == uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    assert len(data_set_of(original)) % 2 == 1  # this file lacks the PS3.5 A.5 padding
    async with (
        storage_server(tmp_path) as scp,
        connect(scp.port, contexts=exact_contexts([original])) as assoc,
    ):
        await assoc.store(original)
    copy = tmp_path / f"{sop_instance_of(original)}.dcm"
    # PS3.5 A.5: "a single trailing NULL byte shall be added" to an odd deflated stream.
    assert data_set_of(copy) == data_set_of(original) + b"\x00"
    assert dcmread(copy).PixelData == dcmread(original).PixelData


@pytest.mark.parametrize("syntax", [str(ts) for ts in SUPPORTED_TRANSFER_SYNTAXES])
async def test_store_synthetic_instances(tmp_path: Path, syntax: str) -> None:
    study = make_study(4, rows=32, cols=32, seed=f"assoc-{syntax}", transfer_syntax=syntax)
    files = write_study(tmp_path / "src", study)
    async with (
        storage_server(tmp_path / "in") as scp,
        connect(scp.port, contexts=exact_contexts(files)) as assoc,
    ):
        for path in files:
            await assoc.store(path)
    received = by_instance((tmp_path / "in").glob("*.dcm"))
    assert len(received) == 4
    for original in files:
        assert_stored_exactly(received[sop_instance_of(original)], original)
    assert_dcmdump_reads(list(received.values()))


async def test_store_dataset(tmp_path: Path) -> None:
    original = pydicom_file("CT_small.dcm")
    ds = dcmread(original)
    built = make_study(1, rows=16, cols=16, seed="in-memory")[0]
    async with storage_server(tmp_path) as scp, connect(scp.port) as assoc:
        assert (await assoc.store(ds)).code == SUCCESS
        assert (await assoc.store(built)).code == SUCCESS
    copy = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    assert_same_content(copy, original)
    again = dcmread(tmp_path / f"{built.SOPInstanceUID}.dcm")
    assert again.PixelData == built.PixelData
    assert again.PatientName == built.PatientName


async def test_server_offering_only_implicit_forces_conversion(tmp_path: Path) -> None:
    files = [p for p in pydicom_files() if transfer_syntax_of(p) != uids.IMPLICIT_VR_LITTLE_ENDIAN]
    kept: list[Path] = []
    inbox = tmp_path / "in"
    async with (
        storage_server(inbox, transfer_syntaxes=[uids.IMPLICIT_VR_LITTLE_ENDIAN]) as scp,
        connect(scp.port, contexts=contexts.for_files(files)) as assoc,
    ):
        for i, original in enumerate(files):
            await assoc.store(original)
            copy = inbox / f"{sop_instance_of(original)}.dcm"
            assert transfer_syntax_of(copy) == uids.IMPLICIT_VR_LITTLE_ENDIAN
            assert_same_content(copy, original)
            kept.append(copy.rename(tmp_path / f"{i}.dcm"))
    assert_dcmdump_reads(kept)


async def test_unconvertible_file_names_both_syntaxes(tmp_path: Path) -> None:
    jpeg = pydicom_file("JPEG2000.dcm")
    async with (
        storage_server(tmp_path, transfer_syntaxes=[uids.IMPLICIT_VR_LITTLE_ENDIAN]) as scp,
        connect(scp.port, contexts=contexts.for_files([jpeg])) as assoc,
    ):
        with pytest.raises(TransferSyntaxError) as info:
            await assoc.store(jpeg)
        message = str(info.value)
        assert "JPEG 2000" in message and "Implicit VR Little Endian" in message
        # Nothing was sent: the association is as good as before.
        assert (await assoc.echo()).code == SUCCESS
    assert list(tmp_path.iterdir()) == []


async def test_store_of_an_unproposed_class_says_why(tmp_path: Path) -> None:
    async with (
        storage_server(tmp_path) as scp,
        connect(scp.port, contexts=contexts.verification()) as assoc,
    ):
        with pytest.raises(aiodimse.NegotiationError, match="not proposed"):
            await assoc.store(pydicom_file("CT_small.dcm"))


# -- PDU sizes on the wire ---------------------------------------------------------------------


class Relay:
    """A TCP relay that records every PDU (type, PDU-length) in each direction, framed with
    the public :class:`~aiodimse.pdu.PDUReader`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.pdus: dict[str, list[tuple[int, int]]] = {"up": [], "down": []}
        self.raw: dict[str, list[bytes]] = {"up": [], "down": []}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, LOCAL, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOCAL, self.upstream_port)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, "up")),
            asyncio.create_task(self._pipe(up_reader, writer, "down")),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self.done.set()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: str
    ) -> None:
        framer = PDUReader(max_pdata_length=1 << 30, max_other_length=1 << 30)
        try:
            while data := await source.read(1 << 16):
                framer.feed(data)
                while (raw := framer.next_raw()) is not None:
                    self.pdus[direction].append((raw[0], len(raw) - 6))
                    self.raw[direction].append(bytes(raw))
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    def pdata_lengths(self, direction: str) -> list[int]:
        return [n for t, n in self.pdus[direction] if t == PDUType.P_DATA_TF]

    def pdvs(self, direction: str) -> list[PresentationDataValue]:
        return [
            pdv
            for raw in self.raw[direction]
            if raw[0] == PDUType.P_DATA_TF
            for pdv in decode_pdu(raw).items  # type: ignore[union-attr]
        ]

    def first(self, direction: str, kind: type[Any]) -> Any:
        for raw in self.raw[direction]:
            if raw[0] == kind.pdu_type:
                return decode_pdu(raw)
        raise AssertionError(f"no {kind.__name__} went {direction}")


class BigMatches:
    """A C-FIND handler whose matches are ~20 KB each (to make the SCP send large PDUs)."""

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        for i in range(3):
            ds = Dataset()
            ds.QueryRetrieveLevel = "PATIENT"
            ds.PatientID = f"P{i}"
            ds.TextValue = chr(ord("a") + i) * 20_000  # UT: unlimited text
            yield ds


async def test_scu_max_pdu_4096_bounds_what_the_scp_sends() -> None:
    async with (
        aiodimse.Server(BigMatches(), LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        Relay(qr.port) as relay,
    ):
        async with connect(relay.port, called_ae="QR", max_pdu=4096) as assoc:
            matches = await assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient").collect()
        await asyncio.wait_for(relay.done.wait(), 5)
    assert [len(m.TextValue) for m in matches] == [20_000] * 3
    assert matches[2].TextValue[-1] == "c"
    rq = relay.first("up", AAssociateRQ)
    assert rq.user_information.max_length == 4096
    down = relay.pdata_lengths("down")
    # PS3.8 D.1: no P-DATA-TF variable field beyond the receiver's Maximum Length; the
    # 60 KB of matches had to be split, so some PDUs are full.
    assert max(down) == 4096
    assert len(down) >= 3 * 20_000 // 4096


async def test_scp_max_pdu_4096_bounds_what_the_scu_sends(tmp_path: Path) -> None:
    study = make_study(2, rows=64, cols=64, seed="pdu")  # 8 KiB of pixels each
    files = write_study(tmp_path / "src", study)
    async with (
        storage_server(tmp_path / "in", max_pdu=4096) as scp,
        Relay(scp.port) as relay,
    ):
        async with connect(relay.port, contexts=exact_contexts(files)) as assoc:
            for path in files:
                await assoc.store(path)
        await asyncio.wait_for(relay.done.wait(), 5)
    ac = relay.first("down", AAssociateAC)
    assert ac.user_information.max_length == 4096
    up = relay.pdata_lengths("up")
    assert max(up) == 4096
    assert sum(up) > 2 * 64 * 64 * 2
    for original in files:
        assert_stored_exactly(tmp_path / "in" / original.name, original)


async def test_both_sides_at_4096(tmp_path: Path) -> None:
    study = make_study(1, rows=64, cols=64, seed="pdu-both")
    async with (
        aiodimse.Server(
            _StoreAndFind(tmp_path), LOCAL, 0, ae_title="STORE", max_pdu=4096, timeouts=QUICK
        ) as scp,
        Relay(scp.port) as relay,
    ):
        async with connect(relay.port, max_pdu=4096) as assoc:
            await assoc.store(study[0])
            found = await assoc.find(
                {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""},
                model="patient",
            ).collect()
        await asyncio.wait_for(relay.done.wait(), 5)
    assert len(found) == 1 and found[0].PixelData == study[0].PixelData
    assert max(relay.pdata_lengths("up")) == 4096
    assert max(relay.pdata_lengths("down")) == 4096


class _StoreAndFind:
    """Keeps stored instances in memory and returns them whole from C-FIND."""

    def __init__(self, directory: Path) -> None:
        self.instances: list[Dataset] = []

    async def on_store(self, request: StoreRequest) -> None:
        self.instances.append(request.dataset)

    async def on_find(self, request: FindRequest) -> list[Dataset]:
        return list(self.instances)


# -- large data sets -----------------------------------------------------------------------------


async def test_store_streams_files_into_the_pdus(tmp_path: Path) -> None:
    # Files are read straight into the outgoing PDUs, fragment by fragment.
    study = make_study(
        2, rows=64, cols=64, seed="streamed", transfer_syntax=uids.EXPLICIT_VR_BIG_ENDIAN
    )
    files = write_study(tmp_path / "src", study) + [pydicom_file("image_dfl.dcm")]
    async with (
        storage_server(tmp_path / "in", max_pdu=4096) as scp,
        Relay(scp.port) as relay,
    ):
        async with connect(relay.port, contexts=exact_contexts(files)) as assoc:
            for path in files:
                await assoc.store(path)
        await asyncio.wait_for(relay.done.wait(), 5)
    assert max(relay.pdata_lengths("up")) == 4096
    # Every fragment has an even length, the padded deflated stream's included.
    assert all(len(pdv.data) % 2 == 0 for pdv in relay.pdvs("up"))
    for original in files:
        assert_stored_exactly(tmp_path / "in" / f"{sop_instance_of(original)}.dcm", original)


async def test_store_of_an_instance_larger_than_a_write_batch(tmp_path: Path) -> None:
    # ~5 MiB: more than one batch of writes (each followed by a drain of the transport).
    big = make_study(1, rows=1600, cols=1600, seed="big")[0]
    files = write_study(tmp_path / "src", [big])
    async with (
        storage_server(tmp_path / "in", max_pdu=16384) as scp,
        connect(scp.port, contexts=exact_contexts(files)) as assoc,
    ):
        await assoc.store(files[0])
        await assoc.store(big)  # and the same as a Dataset, encoded in memory
    assert_stored_exactly(tmp_path / "in" / files[0].name, files[0])


class KeepsBytes:
    """An on_store handler that keeps each data set as received."""

    def __init__(self) -> None:
        self.received: dict[str, tuple[str, bytes]] = {}

    async def on_store(self, request: StoreRequest) -> None:
        with request.open_dataset() as fp:
            data = fp.read()
        assert data == request.dataset_bytes
        self.received[request.sop_instance_uid] = (request.transfer_syntax, data)


async def test_on_store_handler_gets_spilled_data_sets(tmp_path: Path) -> None:
    handler = KeepsBytes()
    files = write_study(tmp_path, make_study(2, rows=64, cols=64, seed="spill"))
    # A data set above max_in_memory is spilled to a temporary file while it arrives.
    async with (
        aiodimse.Server(
            handler, LOCAL, 0, ae_title="SCP", max_in_memory=1024, timeouts=QUICK
        ) as scp,
        connect(scp.port, called_ae="SCP", contexts=exact_contexts(files)) as assoc,
    ):
        for path in files:
            await assoc.store(path)
    for path in files:
        ts, data = handler.received[sop_instance_of(path)]
        assert ts == transfer_syntax_of(path)
        assert data == data_set_of(path)


# -- concurrency -------------------------------------------------------------------------------


async def test_fifty_concurrent_associations(tmp_path: Path) -> None:
    study = make_study(150, rows=16, cols=16, seed="fifty", series_count=5)
    files = write_study(tmp_path / "src", study)
    started = asyncio.Event()
    entered = 0

    async with storage_server(tmp_path / "in", max_associations=60) as scp:

        async def client(i: int) -> None:
            nonlocal entered
            mine = files[3 * i : 3 * i + 3]
            async with connect(scp.port, calling_ae=f"SCU{i:02d}") as assoc:
                entered += 1
                if entered == 50:
                    started.set()
                # Every association is open at the same time before any stores.
                await asyncio.wait_for(started.wait(), 10)
                assert len(scp.associations) == 50
                for path in mine:
                    await assoc.store(path)

        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 60)
    received = by_instance((tmp_path / "in").glob("*.dcm"))
    assert len(received) == 150
    for original in files:
        assert_stored_exactly(received[sop_instance_of(original)], original)
    assert scp.associations == set()


# -- C-FIND ------------------------------------------------------------------------------------


async def test_find_matches_from_stored_files(tmp_path: Path) -> None:
    study_a = make_study(3, rows=8, cols=8, seed="find-a", patient_id="PAT-A", series_count=2)
    study_b = make_study(2, rows=8, cols=8, seed="find-b", patient_id="PAT-B")
    files = write_study(tmp_path, study_a + study_b)
    index = StoredFiles(files)
    async with (
        aiodimse.Server(index, LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        images = await assoc.find(
            {
                "QueryRetrieveLevel": "IMAGE",
                "PatientID": "PAT-A",
                "SOPInstanceUID": "",
                "InstanceNumber": "",
            },
            model="patient",
        ).collect()
        series = await assoc.find(
            {"QueryRetrieveLevel": "SERIES", "PatientID": "PAT-A", "SeriesInstanceUID": ""},
            model="patient",
        ).collect()
        patients = assoc.find(
            {"QueryRetrieveLevel": "PATIENT", "PatientID": "PAT-*", "PatientName": ""},
            model="patient",
        )
        names = {str(m.PatientID): str(m.PatientName) async for m in patients}
        nothing = await assoc.find(
            {"QueryRetrieveLevel": "STUDY", "PatientID": "NOBODY", "StudyInstanceUID": ""}
        ).collect()
    assert {m.SOPInstanceUID for m in images} == {ds.SOPInstanceUID for ds in study_a}
    assert sorted(int(m.InstanceNumber) for m in images) == sorted(
        int(ds.InstanceNumber) for ds in study_a
    )
    assert all(m.QueryRetrieveLevel == "IMAGE" and "PatientName" not in m for m in images)
    assert {m.SeriesInstanceUID for m in series} == {ds.SeriesInstanceUID for ds in study_a}
    assert len(series) == 2
    assert names == {"PAT-A": "DOE^JANE", "PAT-B": "DOE^JANE"}
    assert patients.status is not None and patients.status.code == SUCCESS
    assert nothing == []
    assert [r.sop_class_uid for r in index.requests[:2]] == [uids.PATIENT_ROOT_QR_FIND] * 2
    assert index.requests[-1].sop_class_uid == uids.STUDY_ROOT_QR_FIND


class WaitsForCancel:
    """Yields one match, then waits (bounded) for the C-CANCEL and records what it saw."""

    def __init__(self) -> None:
        self.saw_cancel: list[bool] = []
        self.finished = asyncio.Event()

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        try:
            for i in range(1000):
                ds = Dataset()
                ds.QueryRetrieveLevel = "PATIENT"
                ds.PatientID = str(i)
                yield ds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(request.wait_cancelled(), 5)
                self.saw_cancel.append(request.cancelled)
                if request.cancelled:
                    return
        finally:
            self.finished.set()


async def test_find_early_break_sends_cancel() -> None:
    handler = WaitsForCancel()
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        matches = assoc.find({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="patient")
        async with matches:
            async for match in matches:
                assert match.PatientID == "0"
                break
        # PS3.7 9.1.2.1.1 / C.4.1.2: the SCP answers the C-CANCEL with a Cancel status.
        assert matches.cancelled
        assert matches.status is not None and matches.status.code == CANCEL
        assert handler.saw_cancel == [True]
        await asyncio.wait_for(handler.finished.wait(), 5)
        # The association is clean for the next operations.
        assert (await assoc.echo()).code == SUCCESS
        handler.finished.clear()
        again = assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient")
        async with again:
            first = await anext(again)
        assert first.PatientID == "0" and again.cancelled


async def test_find_bare_break_still_cancels() -> None:
    handler = WaitsForCancel()
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        async for _ in assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient"):
            break
        # The dropped iterator cancels in the background; the next request waits for it.
        assert (await asyncio.wait_for(assoc.echo(), 5)).code == SUCCESS
        await asyncio.wait_for(handler.finished.wait(), 5)
        assert handler.saw_cancel == [True]


class FastMatches:
    """A handler that never awaits: thousands of matches, checking for a cancel in between."""

    def __init__(self) -> None:
        self.produced = 0
        self.saw_cancel = False

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        for i in range(5000):
            if request.cancelled:
                self.saw_cancel = True
                return
            ds = Dataset()
            ds.QueryRetrieveLevel = "PATIENT"
            ds.PatientID = f"P{i:05d}"
            self.produced += 1
            yield ds


async def test_find_cancel_reaches_a_handler_that_never_awaits() -> None:
    handler = FastMatches()
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        matches = assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient")
        got: list[Dataset] = []
        async with matches:
            async for match in matches:
                got.append(match)
                if len(got) == 5:
                    break
        assert [m.PatientID for m in got] == [f"P{i:05d}" for i in range(5)]
        # The SCP reads the C-CANCEL while it sends matches, not after all of them.
        assert matches.status is not None and matches.status.code == CANCEL
        assert handler.saw_cancel and handler.produced < 5000
        assert (await assoc.echo()).code == SUCCESS


class ManyMatches:
    """More matches than the SCU queues before it stops reading (its back-pressure)."""

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        for i in range(600):
            ds = Dataset()
            ds.QueryRetrieveLevel = "PATIENT"
            ds.PatientID = f"P{i:05d}"
            yield ds


async def test_requests_made_while_iterating_a_find_do_not_deadlock() -> None:
    # With one operation at a time, a request made inside ``async for ... in find()`` can
    # only go out once the C-FIND is over: the SCU reads on (lifting its back-pressure) and
    # frees the slot as soon as the final response arrives, unread or not.
    async with (
        aiodimse.Server(ManyMatches(), LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        matches = assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient")
        seen = 0
        async for _match in matches:
            seen += 1
            if seen <= 3:
                status = await asyncio.wait_for(assoc.echo(), 5)
                assert status.code == SUCCESS
        assert seen == 600
        assert matches.status is not None and matches.status.code == SUCCESS


async def test_find_collect_and_status() -> None:
    async with (
        aiodimse.Server(BigMatches(), LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr,
        connect(qr.port, called_ae="QR") as assoc,
    ):
        found = assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient")
        assert [m.PatientID for m in await found.collect()] == ["P0", "P1", "P2"]
        assert found.status is not None and found.status.code == SUCCESS
        assert found.final is not None and not found.cancelled


# -- handler failures --------------------------------------------------------------------------


class Faulty:
    """Each request's identifier or SOP Instance UID says how to fail."""

    def __init__(self) -> None:
        self.echo_mode = "ok"

    async def on_echo(self, request: Request) -> int | None:
        if self.echo_mode == "raise":
            raise RuntimeError("echo handler broke")
        if self.echo_mode == "aiodimse":
            raise AiodimseError("a library error inside the handler")
        return None

    async def on_store(self, request: StoreRequest) -> Any:
        uid = request.sop_instance_uid
        if uid.endswith(".1"):
            raise ValueError("cannot store this")
        if uid.endswith(".2"):
            raise StatusError(OUT_OF_RESOURCES, detail="disk full")
        if uid.endswith(".3"):
            raise AiodimseError("a library error inside the handler")
        if uid.endswith(".4"):
            return "not a status"
        if uid.endswith(".5"):
            raise aiodimse.AssociationAborted(AbortSource.SERVICE_USER, 0, "another association")
        return None

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        mode = str(request.identifier.get("PatientID", ""))
        ds = Dataset()
        ds.PatientID = "X"
        ds.QueryRetrieveLevel = "PATIENT"
        yield ds
        if mode == "raise":
            raise RuntimeError("find handler broke")
        if mode == "status":
            raise StatusError(OUT_OF_RESOURCES, detail="too many matches")
        if mode == "aiodimse":
            raise AiodimseError("a library error inside the handler")


def _instance(uid: str) -> Dataset:
    ds = make_study(1, rows=4, cols=4, seed="faulty")[0]
    ds.SOPInstanceUID = UID(uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    return ds


async def test_handler_failures_become_statuses() -> None:
    handler = Faulty()
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="SCP", timeouts=QUICK) as scp:
        async with connect(scp.port, called_ae="SCP") as assoc:
            expected = {
                "1.2.3.1": PROCESSING_FAILURE,
                "1.2.3.2": OUT_OF_RESOURCES,
                "1.2.3.3": PROCESSING_FAILURE,
                "1.2.3.4": PROCESSING_FAILURE,
                "1.2.3.5": PROCESSING_FAILURE,
            }
            for uid, code in expected.items():
                with pytest.raises(StatusError) as info:
                    await assoc.store(_instance(uid))
                assert info.value.status == code, uid
                assert uid in str(info.value)
                assert (await assoc.echo()).code == SUCCESS
            assert (await assoc.store(_instance("1.2.3.9"))).code == SUCCESS
            info2 = await assoc.store(_instance("1.2.3.2"), check=False)
            assert info2.code == OUT_OF_RESOURCES and "disk full" not in info2.name

            for mode, code in (
                ("raise", UNABLE_TO_PROCESS),
                ("status", OUT_OF_RESOURCES),
                ("aiodimse", UNABLE_TO_PROCESS),
            ):
                found = assoc.find({"QueryRetrieveLevel": "PATIENT", "PatientID": mode})
                got: list[Dataset] = []
                with pytest.raises(StatusError) as info:
                    async for m in found:
                        got.append(m)
                assert info.value.status == code, mode
                assert len(got) == 1  # the match sent before the failure arrived
                assert (await assoc.echo()).code == SUCCESS

            for mode in ("raise", "aiodimse"):
                handler.echo_mode = mode
                status = await assoc.echo(check=False)
                assert status.code == PROCESSING_FAILURE
                with pytest.raises(StatusError):
                    await assoc.echo()
            handler.echo_mode = "ok"
            assert assoc.is_established
        # The server lives on for the next association.
        async with connect(scp.port, called_ae="SCP") as again:
            assert (await again.echo()).code == SUCCESS


async def test_failing_store_listener_keeps_success_and_association(tmp_path: Path) -> None:
    def broken(instance: StoredInstance) -> None:
        raise RuntimeError("listener broke")

    study = make_study(2, rows=8, cols=8, seed="listener")
    async with storage_server(tmp_path) as scp:
        scp.add_listener(broken)
        async with connect(scp.port) as assoc:
            for ds in study:
                assert (await assoc.store(ds)).code == SUCCESS
            assert (await assoc.echo()).code == SUCCESS
    assert len(list(tmp_path.glob("*.dcm"))) == 2


class Gated:
    """C-ECHO and C-STORE handlers that wait for a gate, telling when they have started."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def _wait(self) -> None:
        self.started.set()
        await self.gate.wait()

    async def on_echo(self, request: Request) -> None:
        await self._wait()

    async def on_store(self, request: StoreRequest) -> None:
        await self._wait()


@pytest.mark.parametrize("operation", ["echo", "store"])
async def test_cancelled_operation_does_not_block_the_next(operation: str) -> None:
    handler = Gated()
    instance = make_study(1, rows=4, cols=4, seed="gated")[0]

    async def invoke(assoc: aiodimse.Association) -> aiodimse.StatusInfo:
        if operation == "echo":
            return await assoc.echo()
        return await assoc.store(instance)

    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="SCP", timeouts=QUICK) as scp,
        connect(scp.port, called_ae="SCP") as assoc,
    ):
        first = asyncio.create_task(invoke(assoc))
        await asyncio.wait_for(handler.started.wait(), 5)
        first.cancel()  # e.g. the caller's asyncio.timeout() expired
        with pytest.raises(asyncio.CancelledError):
            await first
        handler.gate.set()  # the first response arrives now, and nobody wants it
        assert (await asyncio.wait_for(invoke(assoc), 5)).code == SUCCESS
        assert (await asyncio.wait_for(invoke(assoc), 5)).code == SUCCESS


# -- release -----------------------------------------------------------------------------------


async def test_scu_release(tmp_path: Path) -> None:
    async with storage_server(tmp_path) as scp:
        assoc = await connect(scp.port)
        peer = await server_side(scp)
        await assoc.echo()
        await asyncio.wait_for(assoc.release(), 5)
        assert assoc.is_closed and assoc.end_reason is None
        await asyncio.wait_for(peer.wait_closed(), 5)
        assert peer.end_reason is None
        assert scp.associations == set()
        with pytest.raises(ConnectionLost):
            await assoc.echo()
        await assoc.release()  # twice is harmless


async def test_release_collision(tmp_path: Path) -> None:
    async with storage_server(tmp_path) as scp:
        assoc = await connect(scp.port)
        peer = await server_side(scp)
        # Both sides ask at once (PS3.8 9.2.3 release collision): both end cleanly.
        await asyncio.wait_for(asyncio.gather(assoc.release(), peer.release()), 5)
        assert assoc.is_closed and peer.is_closed
        assert assoc.end_reason is None and peer.end_reason is None


async def test_server_idle_timeout_releases(tmp_path: Path) -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=5, dimse=5, idle=0.2)
    async with storage_server(tmp_path, timeouts=timeouts) as scp:
        async with connect(scp.port) as assoc:
            await assoc.echo()
            started = time.monotonic()
            await asyncio.wait_for(assoc.wait_closed(), 5)
            assert time.monotonic() - started >= 0.15
            # A release, not an abort.
            assert assoc.end_reason is None
            with pytest.raises(ConnectionLost, match="released by STORE"):
                await assoc.echo()
        assert scp.associations == set()


async def test_idle_timer_waits_for_running_requests() -> None:
    handler = Gated()
    timeouts = aiodimse.Timeouts(connect=5, acse=5, dimse=5, idle=0.1)
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="SCP", timeouts=timeouts) as scp,
        connect(scp.port, called_ae="SCP") as assoc,
    ):
        echo = asyncio.create_task(assoc.echo())
        await asyncio.wait_for(handler.started.wait(), 5)
        # Well past the idle timeout while the request runs: still established.
        await asyncio.sleep(0.3)
        assert assoc.is_established
        handler.gate.set()
        assert (await echo).code == SUCCESS
        await asyncio.wait_for(assoc.wait_closed(), 5)
        assert assoc.end_reason is None


# -- abort -------------------------------------------------------------------------------------


async def test_scu_abort_reaches_the_server_handler() -> None:
    handler = WaitsForCancel()
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="QR", timeouts=QUICK) as qr:
        assoc = await connect(qr.port, called_ae="QR")
        peer = await server_side(qr)
        matches = assoc.find({"QueryRetrieveLevel": "PATIENT"}, model="patient")
        await anext(matches)
        await assoc.abort()
        assert isinstance(assoc.end_reason, AssociationAborted) and assoc.end_reason.local
        await asyncio.wait_for(peer.wait_closed(), 5)
        reason = peer.end_reason
        assert isinstance(reason, AssociationAborted)
        assert reason.source == AbortSource.SERVICE_USER and not reason.local
        assert "aborted by the peer" in str(reason)
        await asyncio.wait_for(handler.finished.wait(), 5)
        assert handler.saw_cancel == [True]  # the handler learns it through request.cancelled
        with pytest.raises(AssociationAborted):
            await anext(matches)
        with pytest.raises(AssociationAborted):
            await assoc.echo()


class AbortsFromHandler:
    async def on_echo(self, request: Request) -> None:
        await request.association.abort()


async def test_server_abort_surfaces_as_association_aborted(tmp_path: Path) -> None:
    async with (
        aiodimse.Server(AbortsFromHandler(), LOCAL, 0, ae_title="SCP", timeouts=QUICK) as s,
        connect(s.port, called_ae="SCP") as assoc,
    ):
        with pytest.raises(AssociationAborted) as info:
            await assoc.echo()
        assert info.value.source == AbortSource.SERVICE_USER and not info.value.local
        assert assoc.is_closed and assoc.end_reason is info.value
    # Closing a server aborts the associations it still has.
    async with storage_server(tmp_path) as scp:
        assoc = await connect(scp.port)
        scp.close()
        await asyncio.wait_for(assoc.wait_closed(), 5)
        assert isinstance(assoc.end_reason, AssociationAborted)
        with pytest.raises(AssociationAborted):
            await assoc.echo()


# -- timeouts: peers that stop answering -------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_peer(
    answer_association: bool, answer_release: bool = False
) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A peer that accepts TCP connections and then answers (at most) the association
    request, never a DIMSE message; ``closed`` is set when the requestor's connection ends."""
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = PDUReader()
        try:
            while data := await reader.read(1 << 16):
                framer.feed(data)
                for pdu in framer:
                    if isinstance(pdu, AAssociateRQ) and answer_association:
                        policy = AcceptorPolicy(
                            {uids.VERIFICATION_SOP_CLASS: (uids.IMPLICIT_VR_LITTLE_ENDIAN,)}
                        )
                        outcome = negotiate(pdu, policy)
                        assert not isinstance(outcome, Rejection)
                        writer.write(outcome[0].encode())
                    elif pdu.pdu_type == PDUType.A_RELEASE_RQ and answer_release:
                        writer.write(b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(serve, LOCAL, 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), closed
    finally:
        server.close()
        await server.wait_closed()


async def test_nobody_listening() -> None:
    port = free_port()
    with pytest.raises(aiodimse.AssociationError, match=f"cannot connect to 127.0.0.1:{port}"):
        await connect(port)


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (b"", ConnectionLost, "closed without a release or an abort"),
        (
            AAbort(AbortSource.SERVICE_PROVIDER, AbortReason.UNRECOGNIZED_PDU).encode(),
            AssociationAborted,
            "service-provider: unrecognized-PDU",
        ),
        (
            AAssociateRJ(
                RejectResult.REJECTED_TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 1
            ).encode(),
            AssociationRejected,
            "temporary-congestion",
        ),
    ],
)
async def test_association_request_answered_otherwise(
    reply: bytes, error: type[Exception], words: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(6)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LOCAL, 0)
    try:
        with pytest.raises(error, match=words):
            await connect(int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()
        await server.wait_closed()


async def test_peer_that_never_answers_the_association_request() -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=SHORT, dimse=5)
    async with fake_peer(answer_association=False) as (port, closed):
        started = time.monotonic()
        with pytest.raises(AssociationTimeout, match="did not answer the association request"):
            await connect(port, timeouts=timeouts, contexts=contexts.verification())
        assert SHORT <= time.monotonic() - started < SHORT + 2
        await asyncio.wait_for(closed.wait(), 5)


async def test_peer_that_never_answers_a_request() -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=5, dimse=SHORT)
    async with fake_peer(answer_association=True) as (port, closed):
        assoc = await connect(port, timeouts=timeouts, contexts=contexts.verification())
        started = time.monotonic()
        with pytest.raises(AssociationTimeout, match="no C-ECHO response"):
            await assoc.echo()
        assert SHORT <= time.monotonic() - started < SHORT + 2
        # The association cannot be trusted any more: it was aborted.
        await asyncio.wait_for(closed.wait(), 5)
        assert assoc.is_closed
        with pytest.raises(AiodimseError):
            await assoc.echo()


async def test_peer_that_never_confirms_the_release() -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=SHORT, dimse=5)
    async with fake_peer(answer_association=True) as (port, closed):
        assoc = await connect(port, timeouts=timeouts, contexts=contexts.verification())
        started = time.monotonic()
        await assoc.release()  # gives up after the ACSE timeout and aborts
        assert SHORT <= time.monotonic() - started < SHORT + 2
        assert assoc.is_closed
        await asyncio.wait_for(closed.wait(), 5)


async def test_peer_that_confirms_the_release() -> None:
    async with fake_peer(answer_association=True, answer_release=True) as (port, _closed):
        assoc = await connect(port, contexts=contexts.verification())
        await asyncio.wait_for(assoc.release(), 5)
        assert assoc.is_closed and assoc.end_reason is None


async def _raw_association(port: int, called: str = "STORE") -> tuple[Any, Any, PDUReader]:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    rq = build_request(
        "RAW",
        called,
        [ContextRequest(CT)],
        max_pdu=16384,
        implementation_class_uid="1.2.3.4",
    )
    writer.write(rq.encode())
    framer = PDUReader()
    ac = await _next_pdu(reader, framer)
    assert isinstance(ac, AAssociateAC)
    return reader, writer, framer


async def _next_pdu(reader: asyncio.StreamReader, framer: PDUReader) -> Any:
    while (pdu := framer.next_pdu()) is None:
        data = await asyncio.wait_for(reader.read(1 << 16), 5)
        if not data:
            return None
        framer.feed(data)
    return pdu


async def test_server_gives_up_on_a_message_that_stops_half_way(tmp_path: Path) -> None:
    from aiodimse.dimse.commands import CStoreRQ, encode_command

    timeouts = aiodimse.Timeouts(connect=5, acse=5, dimse=SHORT, idle=60)
    async with storage_server(tmp_path, timeouts=timeouts) as scp:
        reader, writer, framer = await _raw_association(scp.port)
        peer = await server_side(scp)
        command = CStoreRQ(
            message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3"
        )
        writer.write(PDataTF((PresentationDataValue(1, 0x03, encode_command(command)),)).encode())
        writer.write(
            PDataTF((PresentationDataValue(1, 0x00, b"\x08\x00\x05\x00CS\x00\x00"),)).encode()
        )
        started = time.monotonic()
        abort = await _next_pdu(reader, framer)
        # The rest of the data set never comes: the DIMSE timeout ends the association.
        assert isinstance(abort, AAbort)
        assert SHORT <= time.monotonic() - started < SHORT + 2
        await asyncio.wait_for(peer.wait_closed(), 5)
        assert isinstance(peer.end_reason, AssociationTimeout)
        writer.close()
        assert list(tmp_path.iterdir()) == []  # the partial instance left nothing behind
        async with connect(scp.port) as assoc:
            assert (await assoc.echo()).code == SUCCESS


async def test_server_closes_a_connection_that_never_asks_for_an_association(
    tmp_path: Path,
) -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=SHORT, dimse=5)
    async with storage_server(tmp_path, timeouts=timeouts) as scp:
        reader, writer = await asyncio.open_connection(LOCAL, scp.port)
        started = time.monotonic()
        # PS3.8 9.1.5 / AE-5: ARTIM runs until the A-ASSOCIATE-RQ; on expiry the
        # connection is closed (AA-2).
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert SHORT <= time.monotonic() - started < SHORT + 2
        writer.close()


# -- rejection ---------------------------------------------------------------------------------


async def test_rejections_say_who_and_why(tmp_path: Path) -> None:
    async with storage_server(
        tmp_path, check_called_ae=True, allowed_calling=["FRIEND"], max_associations=1
    ) as scp:
        with pytest.raises(AssociationRejected) as called:
            await connect(scp.port, calling_ae="FRIEND", called_ae="SOMEONE")
        assert (called.value.result, called.value.source, called.value.reason) == (
            RejectResult.REJECTED_PERMANENT,
            RejectSource.SERVICE_USER,
            7,
        )
        assert "rejected-permanent" in str(called.value)
        assert "service-user" in str(called.value)
        assert "called-AE-title-not-recognized" in str(called.value)

        with pytest.raises(AssociationRejected) as calling:
            await connect(scp.port, calling_ae="STRANGER")
        assert (calling.value.source, calling.value.reason) == (RejectSource.SERVICE_USER, 3)
        assert "calling-AE-title-not-recognized" in str(calling.value)

        first = await connect(scp.port, calling_ae="FRIEND")
        with pytest.raises(AssociationRejected) as limit:
            await connect(scp.port, calling_ae="FRIEND")
        assert (limit.value.result, limit.value.source, limit.value.reason) == (
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            2,
        )
        assert "rejected-transient" in str(limit.value)
        assert "local-limit-exceeded" in str(limit.value)
        assert "Presentation" in str(limit.value)
        assert limit.value.reason_name == "local-limit-exceeded"
        # The first association is unharmed; once it is gone, a new one is welcome.
        assert (await first.echo()).code == SUCCESS
        peer = await server_side(scp)
        await first.release()
        await asyncio.wait_for(peer.wait_closed(), 5)
        async with connect(scp.port, calling_ae="FRIEND") as again:
            assert (await again.echo()).code == SUCCESS


async def test_association_without_any_accepted_context() -> None:
    # A server without a handler offers Verification only.
    async with aiodimse.Server(None, LOCAL, 0, ae_title="ECHO", timeouts=QUICK) as scp:
        with pytest.raises(aiodimse.NegotiationError, match="accepted 0 of 1") as info:
            await connect(scp.port, called_ae="ECHO", contexts=[ContextRequest(CT)])
        assert "abstract-syntax-not-supported" in str(info.value)
        assert "CT Image Storage" in str(info.value) or CT in str(info.value)
