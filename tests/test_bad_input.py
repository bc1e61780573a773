"""Hostile and broken clients against an aiodimse server, over raw sockets.

Each case reads back what the server answered (an A-ABORT's source and reason, PS3.8 Table
9-26, or just the connection closing) and then checks that a normal client is still served.

Which A-ABORT is right depends on the state (PS3.8 Table 9-10): before an association is
established (Sta2) an invalid or unexpected PDU is answered by AA-1, "send A-ABORT PDU
(service-user source)", whose reason field is not significant (sent as 0); once it is
established (Sta6) by AA-8, "send A-ABORT PDU (service-provider source)" with the reason
that names the problem.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from _association_support import LOCAL
from pydicom import Dataset

import aiodimse
from aiodimse import uids
from aiodimse.dicomfile import encode_dataset
from aiodimse.dimse.commands import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CStoreRQ,
    CStoreRSP,
    decode_command,
    encode_command,
)
from aiodimse.enums import AbortReason, AbortSource, PDUType
from aiodimse.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUReader,
    PresentationDataValue,
    RawPDU,
)
from aiodimse.requests import StoreRequest
from aiodimse.sinks import DirectorySink
from aiodimse.testing.peers import free_port, wait_for_port
from aiodimse.ul.negotiation import ContextRequest, build_request

CT = "1.2.840.10008.5.1.4.1.1.2"
QUICK = aiodimse.Timeouts(connect=5, acse=5, dimse=5, idle=30)
CMD_LAST, DATA, DATA_LAST = 0x03, 0x00, 0x02
#: The first bytes of an explicit VR LE data set: (0008,0005) CS, and more to come.
PARTIAL_DATA_SET = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"


class RawClient:
    """A DICOM peer written by hand: it sends whatever bytes it is told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = PDUReader(max_pdata_length=1 << 24)

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection(LOCAL, port)
        return cls(reader, writer)

    def send(self, data: bytes | PDU | RawPDU) -> None:
        self.writer.write(data if isinstance(data, bytes) else data.encode())

    async def associate(
        self,
        contexts: list[ContextRequest] | None = None,
        async_window: tuple[int, int] | None = None,
    ) -> AAssociateAC:
        rq = build_request(
            "RAW",
            "STORE",
            contexts or [ContextRequest(uids.VERIFICATION_SOP_CLASS), ContextRequest(CT)],
            max_pdu=1 << 20,
            implementation_class_uid="1.2.826.0.1.3680043.9.9999.2",
            async_window=async_window,
        )
        self.send(rq)
        ac = await self.next_pdu()
        assert isinstance(ac, AAssociateAC)
        return ac

    async def next_pdu(self) -> PDU | None:
        """The next PDU from the server, or None once it closed the connection."""
        while (pdu := self.framer.next_pdu()) is None:
            data = await asyncio.wait_for(self.reader.read(1 << 16), 10)
            if not data:
                assert self.framer.buffered == 0, "connection closed inside a PDU"
                return None
            self.framer.feed(data)
        return pdu

    async def rest(self) -> list[PDU]:
        """Every PDU until the server closes the connection."""
        out: list[PDU] = []
        while (pdu := await self.next_pdu()) is not None:
            out.append(pdu)
        return out

    def command(self, context_id: int, message: Any, dataset: bytes | None = None) -> None:
        items = [PresentationDataValue(context_id, CMD_LAST, encode_command(message))]
        if dataset is not None:
            items.append(PresentationDataValue(context_id, DATA_LAST, dataset))
        self.send(PDataTF(tuple(items)))

    async def response(self) -> Any:
        pdu = await self.next_pdu()
        assert isinstance(pdu, PDataTF), pdu
        (pdv,) = pdu.items
        assert pdv.control == CMD_LAST
        return decode_command(pdv.data)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[aiodimse.StorageServer]:
    async with aiodimse.StorageServer(
        tmp_path / "store", LOCAL, 0, ae_title="STORE", timeouts=QUICK
    ) as scp:
        yield scp


async def still_serves(server: aiodimse.Server) -> None:
    """A normal client gets an association and an answer."""
    async with aiodimse.connect(
        LOCAL,
        server.port,
        called_ae="STORE",
        timeouts=QUICK,
        contexts=aiodimse.contexts.verification(),
    ) as assoc:
        assert (await assoc.echo()).code == 0x0000


async def abort_from(client: RawClient) -> AAbort:
    """The A-ABORT the server answers with; then we close, as PS3.8 AA-3/AA-4 have a peer
    do (the server would otherwise wait for ARTIM in Sta13)."""
    pdu = await client.next_pdu()
    assert isinstance(pdu, AAbort), pdu
    client.close()
    return pdu


def assert_wire_abort(abort: AAbort, source: AbortSource, reason: AbortReason) -> None:
    # PS3.8 Table 9-26: byte 9 is the source, byte 10 the reason/diag.
    raw = abort.encode()
    assert raw[0] == PDUType.A_ABORT
    assert (raw[8], raw[9]) == (source, reason)


# -- before the association (Sta2): AA-1 -------------------------------------------------------

OVERSIZE = 2**31  # a header that claims 2 GiB

BEFORE: dict[str, bytes] = {
    "garbage": b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n",
    "oversize A-ASSOCIATE-RQ": RawPDU(PDUType.A_ASSOCIATE_RQ, length=OVERSIZE).encode(),
    "oversize P-DATA-TF": RawPDU(PDUType.P_DATA_TF, length=OVERSIZE).encode(),
    "unknown PDU type": RawPDU(0x42, b"\x00\x00\x00\x00").encode(),
    "P-DATA-TF before the association": PDataTF(
        (PresentationDataValue(1, CMD_LAST, encode_command(CEchoRQ(message_id=1))),)
    ).encode(),
    "A-RELEASE-RQ before the association": AReleaseRQ().encode(),
    "malformed A-ASSOCIATE-RQ": RawPDU(PDUType.A_ASSOCIATE_RQ, b"\x00\x01" + b"\x00" * 20).encode(),
}


@pytest.mark.parametrize("name", list(BEFORE))
async def test_bad_first_pdu_is_aborted_as_aa1(server: aiodimse.Server, name: str) -> None:
    client = await RawClient.open(server.port)
    client.send(BEFORE[name])
    abort = await abort_from(client)
    # PS3.8 Table 9-10, Sta2: Evt10/Evt12/Evt19 -> AA-1 (service-user source, reason 0).
    assert_wire_abort(abort, AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED)
    await still_serves(server)


async def test_truncated_pdu_then_close(server: aiodimse.Server, tmp_path: Path) -> None:
    client = await RawClient.open(server.port)
    # An A-ASSOCIATE-RQ that says 100 bytes follow, 10 of which do.
    client.send(RawPDU(PDUType.A_ASSOCIATE_RQ, b"\x00" * 10, length=100))
    await client.writer.drain()
    client.writer.write_eof()
    # Evt17 in Sta2: AA-5, the connection just closes.
    assert await client.rest() == []
    client.close()
    await still_serves(server)


# -- after the association (Sta6): AA-8 with the reason ----------------------------------------

AFTER: dict[str, tuple[bytes, AbortReason]] = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n", AbortReason.INVALID_PDU_PARAMETER_VALUE),
    "oversize P-DATA-TF": (
        RawPDU(PDUType.P_DATA_TF, length=OVERSIZE).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "oversize A-RELEASE-RQ": (
        RawPDU(PDUType.A_RELEASE_RQ, length=OVERSIZE).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "unknown PDU type": (RawPDU(0x42, b"\x00\x00\x00\x00").encode(), AbortReason.UNRECOGNIZED_PDU),
    "PDU type 0": (RawPDU(0x00, b"").encode(), AbortReason.UNRECOGNIZED_PDU),
    "second A-ASSOCIATE-RQ": (b"", AbortReason.UNEXPECTED_PDU),
    "A-RELEASE-RQ of length 8": (
        RawPDU(PDUType.A_RELEASE_RQ, b"\x00" * 8).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "P-DATA-TF with a PDV longer than the PDU": (
        RawPDU(PDUType.P_DATA_TF, b"\x00\x00\x01\x00\x01\x03abc").encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "reserved bits in the message control header": (
        PDataTF((PresentationDataValue(1, 0x83, encode_command(CEchoRQ(message_id=1))),)).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "command on a context never proposed": (
        PDataTF(
            (PresentationDataValue(99, CMD_LAST, encode_command(CEchoRQ(message_id=1))),)
        ).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
    "data set without a command": (
        PDataTF((PresentationDataValue(1, DATA_LAST, b"\x00" * 8),)).encode(),
        AbortReason.UNEXPECTED_PDU_PARAMETER,
    ),
    "undecodable command set": (
        PDataTF((PresentationDataValue(1, CMD_LAST, b"\x00\x00\x01"),)).encode(),
        AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ),
}


@pytest.mark.parametrize("name", list(AFTER))
async def test_bad_pdu_after_association_is_aborted_with_its_reason(
    server: aiodimse.Server, name: str
) -> None:
    client = await RawClient.open(server.port)
    await client.associate()
    payload, reason = AFTER[name]
    if name == "second A-ASSOCIATE-RQ":
        payload = build_request(
            "RAW",
            "STORE",
            [ContextRequest(uids.VERIFICATION_SOP_CLASS)],
            max_pdu=0,
            implementation_class_uid="1.2.3",
        ).encode()
    client.send(payload)
    abort = await abort_from(client)
    assert_wire_abort(abort, AbortSource.SERVICE_PROVIDER, reason)
    await still_serves(server)


# -- C-STORE cut short -------------------------------------------------------------------------


async def test_client_closing_inside_a_data_set_leaves_no_file(
    server: aiodimse.StorageServer, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    client = await RawClient.open(server.port)
    ac = await client.associate()
    ct = next(c.context_id for c in ac.presentation_contexts if c.context_id == 3)
    rq = CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4")
    client.send(
        PDataTF(
            (
                PresentationDataValue(ct, CMD_LAST, encode_command(rq)),
                PresentationDataValue(ct, DATA, PARTIAL_DATA_SET),
            )
        )
    )
    await client.writer.drain()
    peer = await _only_association(server)
    # The data set streams to a temporary file as it arrives (a file that is not the
    # instance's name), then the client goes away.
    await _wait_for(lambda: any(store.iterdir()))
    assert not (store / "1.2.3.4.dcm").exists()
    client.close()
    await asyncio.wait_for(peer.wait_closed(), 5)
    await _settled(peer)
    assert list(store.iterdir()) == []
    await still_serves(server)


class HeldWriter:
    """Wraps a DirectorySink writer; ``commit`` waits until released."""

    def __init__(self, inner: Any, gate: asyncio.Event, committing: asyncio.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.committing = committing

    def write(self, data: bytes | memoryview) -> None:
        self.inner.write(data)

    async def commit(self) -> int | None:
        self.committing.set()
        await self.gate.wait()
        return await self.inner.commit()  # type: ignore[no-any-return]

    def discard(self) -> None:
        self.inner.discard()


class HoldingStore:
    def __init__(self, directory: Path) -> None:
        self.sink = DirectorySink(directory)
        self.gate = asyncio.Event()
        self.committing = asyncio.Event()
        self.opened = 0

    def open_store(self, request: StoreRequest) -> HeldWriter:
        self.opened += 1
        return HeldWriter(self.sink.open(request), self.gate, self.committing)


async def test_client_closing_with_stores_queued_leaves_no_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    handler = HoldingStore(store)
    async with aiodimse.Server(
        handler, LOCAL, 0, ae_title="STORE", timeouts=QUICK, async_window=(2, 2)
    ) as server:
        client = await RawClient.open(server.port)
        await client.associate(async_window=(2, 2))
        # Two complete C-STOREs back to back (the window allows two): the first is being
        # committed, the second is open too.
        for mid, uid in ((1, "1.2.3.1"), (2, "1.2.3.2")):
            rq = CStoreRQ(message_id=mid, affected_sop_class_uid=CT, affected_sop_instance_uid=uid)
            client.command(3, rq, PARTIAL_DATA_SET)
        await asyncio.wait_for(handler.committing.wait(), 5)
        await _wait_for(lambda: handler.opened == 2)
        peer = await _only_association(server)
        client.close()
        await asyncio.wait_for(peer.wait_closed(), 5)
        await _settled(peer)
        assert list(store.iterdir()) == []
        assert peer.end_reason is not None


async def test_a_peer_exceeding_the_operations_window_is_aborted(tmp_path: Path) -> None:
    """PS3.7 D.3.3.3: with a window of one negotiated, a second request while the first is
    being performed gets an A-ABORT, and a request whose data set has not started to
    arrive holds no file."""
    store = tmp_path / "store"
    handler = HoldingStore(store)
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="STORE", timeouts=QUICK) as server:
        client = await RawClient.open(server.port)
        await client.associate()
        # A C-STORE command alone: nothing is opened until its data set starts.
        first = CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.9")
        client.send(PDataTF((PresentationDataValue(3, CMD_LAST, encode_command(first)),)))
        peer = await _only_association(server)
        await _wait_for(lambda: peer.exchange.busy)  # the command is in, being received
        assert handler.opened == 0 and list(store.iterdir()) == []
        client.send(PDataTF((PresentationDataValue(3, DATA_LAST, PARTIAL_DATA_SET),)))
        await asyncio.wait_for(handler.committing.wait(), 5)
        assert handler.opened == 1
        # While it is performed, a C-ECHO: one operation too many.
        client.command(1, CEchoRQ(message_id=2))
        abort = await abort_from(client)
        assert_wire_abort(abort, AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU)
        await asyncio.wait_for(peer.wait_closed(), 5)
        await _settled(peer)
        assert isinstance(peer.end_reason, aiodimse.AssociationAborted)
        assert "window allows 1" in str(peer.end_reason)
        assert list(store.iterdir()) == []
        await still_serves(server)


async def test_store_request_without_a_data_set_is_refused(server: aiodimse.Server) -> None:
    client = await RawClient.open(server.port)
    await client.associate()
    rq = CStoreRQ(
        message_id=5,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid="1.2.3",
        has_dataset=False,
    )
    client.command(3, rq)
    rsp = await client.response()
    assert isinstance(rsp, CStoreRSP) and rsp.message_id_being_responded_to == 5
    assert 0xC000 <= rsp.status <= 0xCFFF  # PS3.4 B.2.3: Error, cannot understand
    # The association carries on.
    client.command(1, CEchoRQ(message_id=6))
    echo = await client.response()
    assert isinstance(echo, CEchoRSP) and echo.status == 0
    client.send(AReleaseRQ())
    assert isinstance(await client.next_pdu(), AReleaseRP)
    client.close()


async def test_requests_after_the_release_are_ignored(tmp_path: Path) -> None:
    timeouts = aiodimse.Timeouts(connect=5, acse=0.3, dimse=5)
    async with aiodimse.StorageServer(
        tmp_path, LOCAL, 0, ae_title="STORE", timeouts=timeouts
    ) as server:
        client = await RawClient.open(server.port)
        await client.associate()
        client.send(AReleaseRQ())
        assert isinstance(await client.next_pdu(), AReleaseRP)
        # Sta13 (AR-4 started ARTIM): a P-DATA-TF is ignored (AA-6), never answered, and
        # the server closes the connection when ARTIM expires.
        client.command(1, CEchoRQ(message_id=1))
        assert await client.rest() == []
        client.close()
        await still_serves(server)


# -- helpers -----------------------------------------------------------------------------------


async def _only_association(server: aiodimse.Server) -> aiodimse.Association:
    await _wait_for(lambda: len(server.associations) == 1)
    return next(iter(server.associations))


async def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the loop run until ``condition`` holds (state changes that have no event)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def _settled(assoc: aiodimse.Association) -> None:
    """Wait for the tasks the association was running when it ended."""
    tasks = list(assoc.link.tasks)
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


@pytest.mark.parametrize(
    "after",
    [AReleaseRQ(), AAbort(AbortSource.SERVICE_USER, 0), PDataTF(())],
    ids=["A-RELEASE-RQ", "A-ABORT", "P-DATA-TF"],
)
async def test_a_pdu_after_an_abort_in_the_same_write_is_no_error(
    server: aiodimse.Server, after: PDU, caplog: pytest.LogCaptureFixture
) -> None:
    """An A-ABORT followed by more PDUs in one write: the association ends at the abort,
    the rest is ignored, and nothing is logged at ERROR (protocol noise from a peer is
    never a traceback)."""
    client = await RawClient.open(server.port)
    await client.associate()
    with caplog.at_level("DEBUG", logger="aiodimse"):
        client.send(AAbort(AbortSource.SERVICE_USER, 0).encode() + after.encode())
        assert await client.rest() == []
        await _wait_for(lambda: not server.associations)
    client.writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    await still_serves(server)


class ManyBigMatches:
    """C-FIND answers that fill any socket buffer: 2,000 matches of ~64 KiB each."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def on_find(self, request: Any) -> AsyncIterator[Dataset]:
        try:
            for i in range(2000):
                ds = Dataset()
                ds.QueryRetrieveLevel = "PATIENT"
                ds.PatientID = str(i)
                ds.PatientComments = "x" * 65000
                yield ds
        finally:
            self.stopped.set()


@pytest.mark.filterwarnings("ignore:The value length")
async def test_a_peer_that_stops_reading_is_aborted_after_the_dimse_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that sends a C-FIND and never reads the matches: once nothing it was sent
    has been read for the DIMSE timeout, the association is aborted and its buffers go."""
    handler = ManyBigMatches()
    timeouts = aiodimse.Timeouts(dimse=1.0, acse=5.0)
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="QR", timeouts=timeouts) as server:
        client = await RawClient.open(server.port)
        ac = await client.associate(
            [ContextRequest(uids.VERIFICATION_SOP_CLASS), ContextRequest(uids.PATIENT_ROOT_QR_FIND)]
        )
        context_id = next(c.context_id for c in ac.presentation_contexts if c.result == 0)
        identifier = encode_dataset(Dataset(), uids.IMPLICIT_VR_LITTLE_ENDIAN)
        find = CFindRQ(message_id=1, affected_sop_class_uid=uids.PATIENT_ROOT_QR_FIND)
        with caplog.at_level("WARNING", logger="aiodimse"):
            client.command(context_id, find, identifier)
            await _wait_for(lambda: len(server.associations) == 1)
            await asyncio.wait_for(handler.stopped.wait(), 20)
            await _wait_for(lambda: not server.associations, 5)
        assert any("read nothing we sent for 1.0 s" in r.getMessage() for r in caplog.records)
        client.writer.close()
        await still_serves_qr(server)


async def still_serves_qr(server: aiodimse.Server) -> None:
    async with aiodimse.connect(LOCAL, server.port, called_ae="QR", timeouts=QUICK) as assoc:
        assert (await assoc.echo()).code == 0x0000


async def test_connections_that_never_associate_cannot_lock_clients_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``max_unassociated`` idle connections the oldest are closed: a legitimate
    client still gets in at once, long before the ARTIM timer would free anything."""
    timeouts = aiodimse.Timeouts(acse=60.0, dimse=10.0)
    async with aiodimse.StorageServer(
        tmp_path,
        LOCAL,
        0,
        ae_title="STORE",
        timeouts=timeouts,
        max_unassociated=3,
        unassociated_grace=0.0,  # (a burst of real clients has a grace period)
    ) as server:
        idle = [await asyncio.open_connection(LOCAL, server.port) for _ in range(6)]
        with caplog.at_level("WARNING", logger="aiodimse.server"):
            # The three oldest are closed by the server: they read end-of-file.
            for reader, _ in idle[:3]:
                assert await asyncio.wait_for(reader.read(), 5) == b""
        await still_serves(server)
        assert sum("have not associated" in r.getMessage() for r in caplog.records) >= 3
        for _, writer in idle:
            writer.close()


def test_out_of_descriptors_the_server_backs_off_with_one_line(tmp_path: Path) -> None:
    """A storescp limited to 40 file descriptors, flooded with idle connections: accept()
    fails with EMFILE; the server says so in a warning line, no traceback, and serves
    again once the connections are gone."""
    port = free_port()
    log_path = tmp_path / "storescp.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiodimse",
                "storescp",
                "--port",
                str(port),
                "--out",
                str(tmp_path / "in"),
                "--aet",
                "STORE",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
    try:
        wait_for_port(LOCAL, port, 20.0, proc)
        flood = []
        for _ in range(80):
            sock = socket.create_connection((LOCAL, port), timeout=5)
            flood.append(sock)
        # An echo cannot get through while the descriptors are gone; once they are
        # released, it does (asyncio retries accept() every second).
        for sock in flood:
            sock.close()
        echo = subprocess.run(
            [sys.executable, "-m", "aiodimse", "echo", LOCAL, str(port), "--aec", "STORE"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert echo.returncode == 0, echo.stderr
    finally:
        proc.terminate()
        proc.wait(10)
    log = log_path.read_text()
    assert "Traceback" not in log, log
    assert "cannot accept connections: too many open files; backing off" in log


async def test_a_burst_of_clients_is_refused_properly_not_cut(tmp_path: Path) -> None:
    """Twelve clients at once into a server that takes two associations and keeps four
    connections that have not associated: none is cut for being unassociated (their
    requests are merely unread yet); two associate, ten get local-limit-exceeded."""
    async with aiodimse.StorageServer(
        tmp_path,
        LOCAL,
        0,
        ae_title="STORE",
        timeouts=QUICK,
        max_associations=2,
        max_unassociated=4,
    ) as server:
        results = await asyncio.gather(
            *(
                aiodimse.connect(LOCAL, server.port, called_ae="STORE", timeouts=QUICK)
                for _ in range(12)
            ),
            return_exceptions=True,
        )
        accepted = [r for r in results if isinstance(r, aiodimse.Association)]
        refused = [
            r for r in results if isinstance(r, aiodimse.AssociationRejected) and r.reason == 2
        ]
        assert (len(accepted), len(refused)) == (2, 10), results
        for assoc in accepted:
            await assoc.release()
