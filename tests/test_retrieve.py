"""C-GET, C-MOVE, C-CANCEL and the asynchronous operations window, aiodimse <-> aiodimse.

Everything runs on the test's event loop: the Q/R SCP (a :class:`FileArchive` handler), the
C-MOVE destination (a StorageServer) and the SCU. Cancellations are made deterministic by a
sink that holds one instance until the SCP has seen the C-CANCEL (no sleeps, no races).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _retrieve_support import (
    FileArchive,
    HoldingSink,
    IndexEntry,
    originals,
    received,
    study_uid,
)
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

import aiodimse
from aiodimse import contexts
from aiodimse.dicomfile import read_part10
from aiodimse.requests import FindRequest, StoreRequest
from aiodimse.results import Progress, StoredInstance
from aiodimse.scu.retrieve import Retrieval
from aiodimse.sinks import DirectorySink
from aiodimse.testing.peers import free_port
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"
SUCCESS = 0x0000
CANCEL = 0xFE00
#: PS3.4 Tables C.4-2 / C.4-3: the final statuses of a retrieve with sub-operations.
SOME_FAILED = 0xB000
UNABLE_TO_PERFORM = 0xA702
DESTINATION_UNKNOWN = 0xA801
#: Short DIMSE timeout: a request that is never answered fails the test in seconds.
QUICK = aiodimse.Timeouts(dimse=10)


def _study_query(path: Path) -> dict[str, str]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid(path)}


def _image_query(path: Path) -> dict[str, str]:
    ds = dcmread(path, stop_before_pixels=True)
    return {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "SOPInstanceUID": str(ds.SOPInstanceUID),
    }


def _uids(paths: list[Path]) -> set[str]:
    return {read_part10(p).sop_instance_uid for p in paths}


@contextlib.asynccontextmanager
async def qr_with_destination(
    archive: object,
    dest: DirectorySink | HoldingSink,
    *,
    window: tuple[int, int] | None = None,
    destinations: dict[str, tuple[str, int]] | None = None,
) -> AsyncIterator[tuple[aiodimse.Server, aiodimse.StorageServer]]:
    """A Q/R SCP "QR" serving ``archive`` whose move destination "DEST" is a StorageServer."""
    async with aiodimse.StorageServer(dest, LOCAL, 0, ae_title="DEST") as scp:
        table = {"DEST": (LOCAL, scp.port), **(destinations or {})}
        async with aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", destinations=table, async_window=window
        ) as qr:
            yield qr, scp


def _consistent(progress: list[Progress], total: int) -> None:
    """Every pending response accounts for every sub-operation (PS3.4 C.4.2.3.1)."""
    assert progress, "no pending response"
    for p in progress:
        assert p.remaining is not None
        assert p.remaining + p.completed + p.failed + p.warning == total


# -- data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ten_studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """Ten disjoint studies of 3 small instances each (different seeds: no shared UID)."""
    root = tmp_path_factory.mktemp("ten")
    return [
        write_study(root / f"s{i}", make_study(3, rows=16, cols=16, seed=f"ten-{i}"))
        for i in range(10)
    ]


@pytest.fixture(scope="module")
def big_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """300 tiny instances in one study (for cancelling midway)."""
    root = tmp_path_factory.mktemp("big")
    return write_study(root, make_study(300, rows=8, cols=8, seed="big", series_count=3))


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """1,000 instances of 64x64 in one study."""
    root = tmp_path_factory.mktemp("thousand")
    return write_study(root, make_study(1000, rows=64, cols=64, seed="thousand"))


# -- C-MOVE ----------------------------------------------------------------------------------


async def test_move_delivers_exactly_the_study_byte_identical(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    archive = FileArchive([p for s in ten_studies for p in s])
    wanted = ten_studies[3]
    progress: list[Progress] = []
    async with (
        qr_with_destination(archive, DirectorySink(tmp_path / "dest")) as (qr, scp),
        aiodimse.connect(LOCAL, qr.port, calling_ae="MOVER", called_ae="QR") as assoc,
    ):
        result = await assoc.move(
            _study_query(wanted[0]), "DEST", receiver=scp, on_progress=progress.append
        )
        assert result.ok
        assert (result.completed, result.failed, result.warning) == (3, 0, 0)
        assert {i.sop_instance_uid for i in result.instances} == _uids(wanted)
        for inst in result.instances:
            assert inst.move_originator_ae_title == "MOVER"
            assert inst.calling_ae == "QR"
        # Every data set as sent, bit for bit, and nothing else in the destination.
        assert received(tmp_path / "dest") == originals(wanted)
        assert [p.remaining for p in progress] == [2, 1]
        _consistent(progress, 3)
        await assoc.echo()


async def test_move_instances_by_async_iteration(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """Iterating a C-MOVE yields each instance as the receiver commits it, as a C-GET does;
    the counts come through ``on_progress`` and ``.progress``."""
    archive = FileArchive(ten_studies[0])
    progress: list[Progress] = []
    async with (
        qr_with_destination(archive, DirectorySink(tmp_path / "dest")) as (qr, scp),
        aiodimse.connect(LOCAL, qr.port, called_ae="QR") as assoc,
    ):
        retrieval = assoc.move(
            _study_query(ten_studies[0][0]), "DEST", receiver=scp, on_progress=progress.append
        )
        seen = [instance async for instance in retrieval]
        assert all(isinstance(i, StoredInstance) for i in seen)
        assert sorted(i.sop_instance_uid for i in seen) == sorted(
            read_part10(p).sop_instance_uid for p in ten_studies[0]
        )
        assert all(i.path is not None and i.path.exists() for i in seen)
        _consistent(progress, 3)
        assert retrieval.progress == progress[-1]
        assert retrieval.result is not None and retrieval.result.ok
        assert retrieval.result.instances == seen


async def test_ten_moves_on_ten_associations_with_one_ae_title(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """Ten associations from the same AE title each start with Message ID 1: the C-STORE
    sub-operations' Move Originator (AE, Message ID) must still tell the moves apart."""
    archive = FileArchive([p for s in ten_studies for p in s])
    async with qr_with_destination(archive, DirectorySink(tmp_path / "dest"), window=(16, 16)) as (
        qr,
        scp,
    ):

        async def one(study: list[Path]) -> set[str]:
            async with aiodimse.connect(LOCAL, qr.port, calling_ae="SAME", called_ae="QR") as a:
                result = await a.move(_study_query(study[0]), "DEST", receiver=scp)
                assert result.ok and result.completed == len(study)
                return {i.sop_instance_uid for i in result.instances}

        results = await asyncio.wait_for(asyncio.gather(*(one(s) for s in ten_studies)), 20)
    assert results == [_uids(s) for s in ten_studies]
    assert received(tmp_path / "dest") == originals([p for s in ten_studies for p in s])


async def test_ten_moves_at_once_on_one_association(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    archive = FileArchive([p for s in ten_studies for p in s])
    async with (
        qr_with_destination(archive, DirectorySink(tmp_path / "dest"), window=(16, 16)) as (
            qr,
            scp,
        ),
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", async_window=(16, 16)) as assoc,
    ):
        assert assoc.negotiated is not None and assoc.negotiated.max_invoked == 16
        results = await asyncio.wait_for(
            asyncio.gather(
                *(assoc.move(_study_query(s[0]), "DEST", receiver=scp) for s in ten_studies)
            ),
            20,
        )
    for result, study in zip(results, ten_studies, strict=True):
        assert result.ok and result.completed == 3
        assert {i.sop_instance_uid for i in result.instances} == _uids(study)
    assert len({i.move_originator_message_id for r in results for i in r.instances}) == 10


async def test_unknown_move_destination(ten_studies: list[list[Path]], tmp_path: Path) -> None:
    archive = FileArchive(ten_studies[0])
    async with (
        qr_with_destination(archive, DirectorySink(tmp_path / "dest")) as (qr, _scp),
        aiodimse.connect(LOCAL, qr.port, called_ae="QR") as assoc,
    ):
        with pytest.raises(aiodimse.StatusError) as info:
            await assoc.move(_study_query(ten_studies[0][0]), "NOWHERE")
        assert info.value.status == DESTINATION_UNKNOWN
        assert "move destination unknown" in str(info.value).lower()
        assert "NOWHERE" in str(info.value)
        assert archive.requests == []  # refused before the handler was asked
        await assoc.echo()


@pytest.mark.parametrize("why", ["unreachable", "rejects-association", "refuses-every-store"])
async def test_destination_that_cannot_take_anything(
    why: str, ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """PS3.4 C.4.2.2.1: all sub-operations unsuccessful -> a Failure status (not Warning),
    with the counts and every UID in the Failed SOP Instance UID List."""
    study = ten_studies[1]
    archive = FileArchive(study)

    class Refuses:
        async def on_store(self, request: StoreRequest) -> int:
            return 0xA700

    async with contextlib.AsyncExitStack() as stack:
        if why == "unreachable":
            address = (LOCAL, free_port())  # nothing listens there
        elif why == "rejects-association":
            picky = aiodimse.StorageServer(
                tmp_path / "x", LOCAL, 0, ae_title="SOMEONE", check_called_ae=True
            )
            await stack.enter_async_context(picky)
            address = (LOCAL, picky.port)
        else:
            refuses = aiodimse.Server(Refuses(), LOCAL, 0, ae_title="BAD")
            await stack.enter_async_context(refuses)
            address = (LOCAL, refuses.port)
        qr, _ = await stack.enter_async_context(
            qr_with_destination(
                archive, DirectorySink(tmp_path / "dest"), destinations={"BAD": address}
            )
        )
        assoc = await stack.enter_async_context(
            aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=QUICK)
        )
        retrieval = assoc.move(_study_query(study[0]), "BAD")
        with pytest.raises(aiodimse.StatusError) as info:
            await retrieval
        assert info.value.status == UNABLE_TO_PERFORM
        result = retrieval.result
        assert result is not None
        assert (result.completed, result.failed, result.warning) == (0, 3, 0)
        assert set(result.failed_instances) == _uids(study)
        # check=False gives the same result without raising
        result = await assoc.move(_study_query(study[0]), "BAD", check=False)
        assert result.status.code == UNABLE_TO_PERFORM and result.failed == 3
        await assoc.echo()


async def test_destination_refusing_some_instances_gives_warning_with_their_uids(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    study = ten_studies[2]
    refused = read_part10(study[1]).sop_instance_uid

    class Picky:
        async def on_store(self, request: StoreRequest) -> int | None:
            return 0xA700 if request.sop_instance_uid == refused else None

    archive = FileArchive(study)
    async with (
        aiodimse.Server(Picky(), LOCAL, 0, ae_title="PICKY") as picky,
        qr_with_destination(
            archive, DirectorySink(tmp_path / "dest"), destinations={"PICKY": (LOCAL, picky.port)}
        ) as (qr, _),
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=QUICK) as assoc,
    ):
        # B000 is not a failure status, but the move did not bring everything: by default
        # that raises, and the error carries the result.
        with pytest.raises(aiodimse.IncompleteRetrieval) as info:
            await assoc.move(_study_query(study[0]), "PICKY")
        result = info.value.result
        assert isinstance(result, aiodimse.RetrieveResult)
        assert info.value.status == SOME_FAILED and refused in str(info.value)
        assert (await assoc.move(_study_query(study[0]), "PICKY", check=False)).failed == 1
        assert result.status.code == SOME_FAILED
        assert (result.completed, result.failed, result.warning) == (2, 1, 0)
        assert result.failed_instances == [refused]
        assert not result.ok


# -- C-GET -----------------------------------------------------------------------------------


async def test_get_thousand_small_instances(thousand: list[Path], tmp_path: Path) -> None:
    archive = FileArchive(thousand)
    progress: list[Progress] = []
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(
            LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get(), timeouts=QUICK
        ) as assoc,
    ):
        result = await assoc.get(
            _study_query(thousand[0]),
            receiver=DirectorySink(tmp_path / "got"),
            on_progress=progress.append,
        )
        assert result.ok
        assert (result.completed, result.failed, result.warning) == (1000, 0, 0)
        assert len(result.instances) == 1000
        assert {i.sop_instance_uid for i in result.instances} == _uids(thousand)
        assert all(
            i.path is not None and i.path.parent == tmp_path / "got" for i in result.instances
        )
        _consistent(progress, 1000)
        assert len(progress) == 999  # one pending response per sub-operation but the last
        await assoc.echo()
    assert received(tmp_path / "got") == originals(thousand)


async def test_get_in_memory_by_async_iteration(
    ten_studies: list[list[Path]],
) -> None:
    study = ten_studies[4]
    archive = FileArchive(study)
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get()) as assoc,
    ):
        retrieval = assoc.get(_study_query(study[0]))
        got: list[StoredInstance] = [i async for i in retrieval]
        assert {i.sop_instance_uid: i.data for i in got} == originals(study)
        assert all(i.path is None for i in got)
        assert retrieval.result is not None and retrieval.result.ok
        # the association is clean for the next C-GET
        again = await assoc.get(_image_query(study[2]))
        assert [i.sop_instance_uid for i in again.instances] == [
            read_part10(study[2]).sop_instance_uid
        ]


async def test_get_without_scp_role_proposed(ten_studies: list[list[Path]]) -> None:
    archive = FileArchive(ten_studies[0])
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR") as assoc,  # default(): no roles
    ):
        with pytest.raises(aiodimse.NegotiationError) as info:
            await assoc.get(_study_query(ten_studies[0][0]))
        text = str(info.value)
        assert "SCP role" in text and "for_get" in text
        assert "not propose" in text  # our side never asked for it
        assert archive.requests == []
        await assoc.echo()


async def test_get_when_peer_refuses_scp_role(ten_studies: list[list[Path]]) -> None:
    archive = FileArchive(ten_studies[0])
    async with (
        # Knows no storage class and refuses unknown ones: it can grant the SCP role for none.
        aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", storage_classes=(), accept_unknown_storage=False
        ) as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get()) as assoc,
    ):
        with pytest.raises(aiodimse.NegotiationError) as info:
            await assoc.get(_study_query(ten_studies[0][0]))
        text = str(info.value)
        assert "SCP role" in text and "granted it for none" in text
        assert archive.requests == []


def _unsendable_jpeg_ls(folder: Path, study_of: Path) -> Path:
    """A real JPEG-LS MR image moved into ``study_of``'s study: it can only be sent as
    JPEG-LS (pydicom cannot re-encode it), so a peer that accepts MR only uncompressed
    cannot receive it."""
    source = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    assert isinstance(source, str)
    ds = dcmread(source)
    ds.StudyInstanceUID = study_uid(study_of)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "jpeg-ls.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("service", ["get", "move"])
async def test_sub_operation_failures_are_counted_and_named(
    service: str, ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """Local failures of single sub-operations (a file that cannot be read, one that cannot
    be sent in any accepted transfer syntax, a SOP class the peer did not accept, a broken
    data set) fail those sub-operations only: the rest is sent, the association survives,
    every sub-operation gets its Pending response, the final status is B000 and the Failed
    SOP Instance UID List names every failed instance whose UID is known."""
    study = ten_studies[5]
    jpeg_ls = _unsendable_jpeg_ls(tmp_path / "bad", study[0])
    garbage = tmp_path / "bad" / "garbage.dcm"
    garbage.write_bytes(b"this is not DICOM" * 20)
    indexed_garbage = IndexEntry(garbage, "1.2.826.0.1.3680043.2.1143.4242")
    unknown_class = Dataset()  # a SOP class no peer here accepts: no presentation context
    unknown_class.SOPClassUID = "1.2.826.0.1.3680043.2.1143.99"
    unknown_class.SOPInstanceUID = "1.2.826.0.1.3680043.2.1143.4444"
    unknown_class.PatientID = "ODD"
    broken = Dataset()  # no SOP Class UID: cannot be sent
    broken.SOPInstanceUID = "1.2.826.0.1.3680043.2.1143.4343"
    # The JPEG-LS file comes first: its failure must not stop the others.
    archive = FileArchive(
        [jpeg_ls, *study], extra=[indexed_garbage, unknown_class, garbage, broken]
    )
    uncompressed = contexts.STORAGE_TRANSFER_SYNTAXES
    progress: list[Progress] = []
    async with (
        aiodimse.StorageServer(
            tmp_path / "dest",
            LOCAL,
            0,
            ae_title="DEST",
            transfer_syntaxes=uncompressed,
            accept_unknown_storage=False,
        ) as scp,
        aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", destinations={"DEST": (LOCAL, scp.port)}
        ) as qr,
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
        ) as assoc,
    ):
        query = _study_query(study[0])
        retrieval: Retrieval
        if service == "get":
            sink = DirectorySink(tmp_path / "dest")
            retrieval = assoc.get(query, receiver=sink, on_progress=progress.append)
        else:
            retrieval = assoc.move(query, "DEST", receiver=scp, on_progress=progress.append)
        with pytest.raises(aiodimse.IncompleteRetrieval) as info:
            await retrieval
        assert "3 completed, 5 failed, 0 warning" in str(info.value)
        result = retrieval.result
        assert result is not None and info.value.result is result
        assert result.status.code == SOME_FAILED
        assert (result.completed, result.failed, result.warning) == (3, 5, 0)
        assert set(result.failed_instances) == {
            read_part10(jpeg_ls).sop_instance_uid,
            indexed_garbage.sop_instance_uid,
            str(unknown_class.SOPInstanceUID),
            str(broken.SOPInstanceUID),
        }
        _consistent(progress, 8)
        assert [p.remaining for p in progress] == list(range(7, 0, -1))
        assert received(tmp_path / "dest") == originals(study)
        await assoc.echo()


async def test_all_get_sub_operations_failing_is_a_failure(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """C-GET whose every sub-operation fails: A702 (PS3.4 C.4.3.2: Failure indicates all
    sub-operations were unsuccessful), raised as StatusError with the result kept."""
    jpeg_ls = _unsendable_jpeg_ls(tmp_path / "bad", ten_studies[0][0])
    archive = FileArchive([jpeg_ls])
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(
            LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get(), timeouts=QUICK
        ) as assoc,
    ):
        retrieval = assoc.get(_study_query(jpeg_ls))
        with pytest.raises(aiodimse.StatusError) as info:
            await retrieval
        assert info.value.status == UNABLE_TO_PERFORM
        assert retrieval.result is not None
        assert retrieval.result.failed_instances == [read_part10(jpeg_ls).sop_instance_uid]
        await assoc.echo()


# -- C-CANCEL --------------------------------------------------------------------------------

HOLD_AT = 10


@pytest.mark.parametrize("how", ["aclose", "async-with", "task-cancel"])
@pytest.mark.parametrize("service", ["move", "get"])
async def test_cancel_midway(service: str, how: str, big_study: list[Path], tmp_path: Path) -> None:
    """The HOLD_AT-th instance is held until the SCP has seen the C-CANCEL, so the outcome
    is exact: HOLD_AT completed, the rest never started (PS3.4 C.4.2.3.1: Cancel with the
    counts so far, Remaining = sub-operations not initiated)."""
    total = len(big_study)
    archive = FileArchive(big_study)

    async def until_scp_saw_cancel() -> None:
        await archive.retrieved.wait()
        await archive.requests[-1].wait_cancelled()

    sink = HoldingSink(tmp_path / "in", HOLD_AT, until_scp_saw_cancel)
    progress: list[Progress] = []
    async with (
        qr_with_destination(archive, sink) as (qr, scp),
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
        ) as assoc,
    ):
        query = _study_query(big_study[0])
        retrieval: Retrieval
        if service == "move":
            retrieval = assoc.move(query, "DEST", receiver=scp, on_progress=progress.append)
        else:
            retrieval = assoc.get(query, receiver=sink, on_progress=progress.append)

        if how == "aclose":
            async for _item in retrieval:
                await sink.reached.wait()
                closed = await retrieval.aclose()
                assert closed is retrieval.result
                break
        elif how == "async-with":
            async with retrieval:
                await sink.reached.wait()
        else:

            async def run() -> Any:
                return await retrieval

            task = asyncio.create_task(run())
            await sink.reached.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        result = retrieval.result
        assert result is not None
        assert result.status.code == CANCEL
        assert (result.completed, result.failed, result.warning) == (HOLD_AT, 0, 0)
        assert result.remaining == total - HOLD_AT
        assert result.completed + result.failed + result.warning + result.remaining == total
        _consistent(progress, total)
        assert archive.requests[-1].cancelled
        assert len(result.instances) == HOLD_AT
        assert len(received(tmp_path / "in")) == HOLD_AT
        # The association is clean: echo, then a complete retrieve of one instance.
        await assoc.echo()
        if service == "move":
            again = await assoc.move(_image_query(big_study[-1]), "DEST", receiver=scp)
        else:
            again = await assoc.get(_image_query(big_study[-1]), receiver=sink)
        assert again.ok and len(again.instances) == 1


async def test_cancel_before_the_request_was_sent(ten_studies: list[list[Path]]) -> None:
    """A retrieve cancelled while it still waits for a slot of the operations window (the
    peer allows one) is never sent at all."""
    release = asyncio.Event()
    started = asyncio.Event()

    class SlowFind(FileArchive):
        async def on_find(self, request: FindRequest) -> Any:
            started.set()
            await release.wait()
            async for match in super().on_find(request):
                yield match

    archive = SlowFind(ten_studies[0])
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(
            LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get(), timeouts=QUICK
        ) as assoc,
    ):
        finding = asyncio.create_task(
            assoc.find({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}).collect()
        )
        await asyncio.wait_for(started.wait(), 5)
        retrieval = assoc.get(_study_query(ten_studies[0][0]))

        async def run() -> Any:
            return await retrieval

        task = asyncio.create_task(run())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done()
        asyncio.get_running_loop().call_later(0.3, release.set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert len(await finding) == 1
        await assoc.echo()
        assert archive.requests == []  # the C-GET never reached the SCP
        result = retrieval.result
        assert result is not None and result.status.code == CANCEL
        assert (result.completed, result.failed, result.warning, result.instances) == (0, 0, 0, [])
        # Leaving ``async with`` before the request went out withdraws it too.
        async with assoc.get(_study_query(ten_studies[0][0])) as withdrawn:
            pass
        assert withdrawn.result is not None and withdrawn.result.status.code == CANCEL
        await assoc.echo()
        assert archive.requests == []


@pytest.mark.parametrize("service", ["move", "get"])
async def test_cancel_while_the_request_is_being_sent(
    service: str, big_study: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its request is on its way out (it cannot be withdrawn half-sent):
    the C-CANCEL-RQ follows the request as soon as it is out."""
    archive = FileArchive(big_study)

    async def until_scp_saw_cancel() -> None:
        await archive.requests[-1].wait_cancelled()

    sink = HoldingSink(tmp_path / "in", 1, until_scp_saw_cancel)
    async with (
        qr_with_destination(archive, sink) as (qr, scp),
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
        ) as assoc,
    ):
        sending = asyncio.Event()
        go_on = asyncio.Event()
        send = assoc.exchange.send_message

        async def slow_send(context_id: int, message: Any, dataset: Any = None) -> None:
            if type(message).__name__ in ("CGetRQ", "CMoveRQ"):
                sending.set()
                await go_on.wait()
            await send(context_id, message, dataset)

        monkeypatch.setattr(assoc.exchange, "send_message", slow_send)
        query = _study_query(big_study[0])
        retrieval: Retrieval
        if service == "move":
            retrieval = assoc.move(query, "DEST", receiver=scp)
        else:
            retrieval = assoc.get(query, receiver=sink)

        async def run() -> Any:
            return await retrieval

        task = asyncio.create_task(run())
        await asyncio.wait_for(sending.wait(), 5)
        task.cancel()
        for _ in range(10):
            await asyncio.sleep(0)
        assert not task.done()  # waits for the final response
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        result = retrieval.result
        assert result is not None and result.status.code == CANCEL
        # The C-CANCEL-RQ follows the request at once: the SCP sees it before its first
        # sub-operation, or during it (the first instance is held until it has).
        assert result.completed in (0, 1)
        counted = result.completed + result.failed + result.warning + (result.remaining or 0)
        assert counted == len(big_study)
        assert archive.requests[-1].cancelled
        await assoc.echo()


@pytest.mark.parametrize("service", ["move", "get"])
async def test_progress_callback_raising_cancels_and_frees_the_association(
    service: str, big_study: list[Path], tmp_path: Path
) -> None:
    """An exception in ``on_progress`` reaches the caller; the operation is cancelled on the
    peer and its slot of the operations window freed, so the association goes on."""
    archive = FileArchive(big_study)

    async def until_scp_saw_cancel() -> None:
        await archive.requests[-1].wait_cancelled()

    sink = HoldingSink(tmp_path / "in", HOLD_AT, until_scp_saw_cancel)

    def fussy(progress: Progress) -> None:
        if progress.completed == 3:
            raise RuntimeError("enough")

    async with (
        qr_with_destination(archive, sink) as (qr, scp),
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
        ) as assoc,
    ):
        query = _study_query(big_study[0])
        with pytest.raises(RuntimeError, match="enough"):
            if service == "move":
                await assoc.move(query, "DEST", receiver=scp, on_progress=fussy)
            else:
                await assoc.get(query, receiver=sink, on_progress=fussy)
        assert (await asyncio.wait_for(assoc.echo(), 5)).code == SUCCESS
        assert archive.requests[-1].cancelled
        assert len(received(tmp_path / "in")) < len(big_study)


# -- the asynchronous operations window (PS3.7 D.3.3.3) ----------------------------------------


class Probe:
    """A store/find handler that records how many operations it performs at once.

    With ``wait_for=n`` each operation waits until n are in progress (proving they run
    concurrently); without, each yields to the loop for a moment so that overlap would show.
    """

    def __init__(self, wait_for: int | None = None) -> None:
        self.wait_for = wait_for
        self.inflight = 0
        self.most = 0
        self.full = asyncio.Event()
        self.stored: list[str] = []

    @contextlib.asynccontextmanager
    async def _performing(self) -> AsyncIterator[None]:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            if self.wait_for is not None:
                if self.inflight >= self.wait_for:
                    self.full.set()
                await asyncio.wait_for(self.full.wait(), 5)
            else:
                await asyncio.sleep(0.005)
            yield
        finally:
            self.inflight -= 1

    async def on_store(self, request: StoreRequest) -> int | None:
        async with self._performing():
            self.stored.append(request.sop_instance_uid)
        return None

    async def on_find(self, request: FindRequest) -> Any:
        async with self._performing():
            match = Dataset()
            match.QueryRetrieveLevel = "PATIENT"
            match.PatientID = "P1"
        yield match


async def test_window_eight_stores_in_flight(ten_studies: list[list[Path]]) -> None:
    files = [p for s in ten_studies for p in s][:8]
    probe = Probe(wait_for=8)
    async with (
        aiodimse.Server(probe, LOCAL, 0, ae_title="W", async_window=(8, 8)) as server,
        aiodimse.connect(
            LOCAL, server.port, called_ae="W", async_window=(8, 8), timeouts=QUICK
        ) as assoc,
    ):
        assert assoc.negotiated is not None
        assert (assoc.negotiated.max_invoked, assoc.negotiated.max_performed) == (8, 8)
        statuses = await asyncio.gather(*(assoc.store(p) for p in files))
        assert [s.code for s in statuses] == [SUCCESS] * 8
        assert probe.most == 8
        assert sorted(probe.stored) == sorted(_uids(files))


async def test_window_responses_routed_by_message_id(ten_studies: list[list[Path]]) -> None:
    """Store A is answered last and with a different status than store B; the find runs
    while both are outstanding. Each caller gets its own response."""
    first, second = ten_studies[6][0], ten_studies[6][1]
    uid_first = read_part10(first).sop_instance_uid
    second_done = asyncio.Event()
    find_started = asyncio.Event()

    class OutOfOrder:
        async def on_store(self, request: StoreRequest) -> int | None:
            if request.sop_instance_uid == uid_first:
                await asyncio.wait_for(second_done.wait(), 5)
                await asyncio.wait_for(find_started.wait(), 5)
                await asyncio.sleep(0.01)  # let the other responses go first
                return 0xB000  # PS3.4 B.2.3 warning: coercion of data elements
            second_done.set()
            return None

        async def on_find(self, request: FindRequest) -> Any:
            find_started.set()
            for pid in ("P1", "P2"):
                match = Dataset()
                match.QueryRetrieveLevel = "PATIENT"
                match.PatientID = pid
                yield match

    async with (
        aiodimse.Server(OutOfOrder(), LOCAL, 0, ae_title="W", async_window=(4, 4)) as server,
        aiodimse.connect(
            LOCAL, server.port, called_ae="W", async_window=(4, 4), timeouts=QUICK
        ) as assoc,
    ):
        status_first, status_second, matches = await asyncio.gather(
            assoc.store(first),
            assoc.store(second),
            assoc.find(
                {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="patient"
            ).collect(),
        )
        assert status_first.code == 0xB000
        assert status_second.code == SUCCESS
        assert [str(m.PatientID) for m in matches] == ["P1", "P2"]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [((8, 8), None), (None, (8, 8)), ((1, 1), (8, 8)), ((8, 8), (1, 1))],
    ids=["peer-no-window", "we-no-window", "we-1", "peer-1"],
)
async def test_window_of_one_serializes(
    ours: tuple[int, int] | None,
    theirs: tuple[int, int] | None,
    ten_studies: list[list[Path]],
) -> None:
    files = [p for s in ten_studies for p in s][:6]
    probe = Probe()
    async with (
        aiodimse.Server(probe, LOCAL, 0, ae_title="W", async_window=theirs) as server,
        aiodimse.connect(
            LOCAL, server.port, called_ae="W", async_window=ours, timeouts=QUICK
        ) as assoc,
    ):
        assert assoc.negotiated is not None
        assert (assoc.negotiated.max_invoked, assoc.negotiated.max_performed) == (1, 1)
        matching = assoc.find({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="patient")
        matches, statuses = await asyncio.gather(
            matching.collect(), asyncio.gather(*(assoc.store(p) for p in files))
        )
        assert [s.code for s in statuses] == [SUCCESS] * len(files)
        assert len(matches) == 1
    assert probe.most == 1
    assert sorted(probe.stored) == sorted(_uids(files))


async def test_scp_performs_different_operations_concurrently(
    ten_studies: list[list[Path]],
) -> None:
    """With a window, a C-FIND whose handler waits for a C-STORE still running on the same
    association completes: the SCP performs both at once."""
    probe = Probe(wait_for=2)
    async with (
        aiodimse.Server(probe, LOCAL, 0, ae_title="W", async_window=(2, 2)) as server,
        aiodimse.connect(
            LOCAL, server.port, called_ae="W", async_window=(2, 2), timeouts=QUICK
        ) as assoc,
    ):
        status, matches = await asyncio.gather(
            assoc.store(ten_studies[7][0]),
            assoc.find(
                {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="patient"
            ).collect(),
        )
        assert status.code == SUCCESS and len(matches) == 1
    assert probe.most == 2


async def test_get_and_move_at_once_on_one_association(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """A C-GET (sub-operations on this association) and a C-MOVE (sub-operations to the
    StorageServer) in flight together: each gets exactly its own instances."""
    archive = FileArchive([p for s in ten_studies for p in s])
    async with (
        qr_with_destination(archive, DirectorySink(tmp_path / "moved"), window=(4, 4)) as (
            qr,
            scp,
        ),
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(get=False, find=False),
            async_window=(4, 4),
            timeouts=QUICK,
        ) as assoc,
    ):
        got, moved = await asyncio.gather(
            assoc.get(_study_query(ten_studies[8][0]), receiver=DirectorySink(tmp_path / "got")),
            assoc.move(_study_query(ten_studies[9][0]), "DEST", receiver=scp),
        )
    assert {i.sop_instance_uid for i in got.instances} == _uids(ten_studies[8])
    assert {i.sop_instance_uid for i in moved.instances} == _uids(ten_studies[9])
    assert received(tmp_path / "got") == originals(ten_studies[8])
    assert received(tmp_path / "moved") == originals(ten_studies[9])


# -- nothing reported done that is not ------------------------------------------------------


async def test_a_move_whose_instances_never_arrive_is_not_ok(
    ten_studies: list[list[Path]], tmp_path: Path
) -> None:
    """The SCP reports 3 completed but sends them to another server known as "DEST": the
    move into our receiver is not ok, says how many never arrived, and raises by default."""
    study = ten_studies[6]
    archive = FileArchive(study)
    async with (
        aiodimse.StorageServer(tmp_path / "elsewhere", LOCAL, 0, ae_title="DEST") as elsewhere,
        aiodimse.StorageServer(tmp_path / "ours", LOCAL, 0, ae_title="DEST") as ours,
        aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", destinations={"DEST": (LOCAL, elsewhere.port)}
        ) as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=QUICK) as assoc,
    ):
        query = _study_query(study[0])
        result = await assoc.move(query, "DEST", receiver=ours, check=False, arrival_timeout=0.5)
        assert (result.completed, result.failed, result.undelivered) == (3, 0, 3)
        assert result.status.code == 0 and not result.ok and not result.complete
        assert result.instances == []
        assert "3 reported completed but never arrived" in str(result)
        with pytest.raises(aiodimse.IncompleteRetrieval) as info:
            await assoc.move(query, "DEST", receiver=ours, arrival_timeout=0.5)
        assert "3 of 3 reported completed never arrived here (0 did)" in str(info.value)
    assert len(list((tmp_path / "elsewhere").glob("*.dcm"))) == 3


async def test_partial_get_failures_raise_at_the_end_of_iteration(
    ten_studies: list[list[Path]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``async for instance in assoc.get(...)`` with sub-operations failing (B000): every
    instance that came is yielded, then the iteration ends with IncompleteRetrieval naming
    the failed instances, and the client logs a warning."""
    study = ten_studies[7]
    missing = tmp_path / "gone.dcm"
    archive = FileArchive(study, extra=[IndexEntry(missing, "1.2.826.0.1.3680043.2.1143.77")])
    async with (
        aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(
            LOCAL, qr.port, called_ae="QR", contexts=contexts.for_get(), timeouts=QUICK
        ) as assoc,
    ):
        seen: list[StoredInstance] = []
        with (
            caplog.at_level("WARNING", logger="aiodimse.retrieve"),
            pytest.raises(aiodimse.IncompleteRetrieval) as info,
        ):
            async for instance in assoc.get(_study_query(study[0])):
                seen.append(instance)
        assert len(seen) == 3
        assert "1.2.826.0.1.3680043.2.1143.77" in str(info.value)
        assert "3 completed, 1 failed" in str(info.value)
        assert any(
            "C-GET from QR" in r.getMessage() and "1 failed" in r.getMessage()
            for r in caplog.records
            if r.levelname == "WARNING"
        )


class Silent:
    """A C-MOVE destination that accepts the association and never answers a C-STORE."""

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.received = 0

    async def on_store(self, request: StoreRequest) -> None:
        self.received += 1
        await self.never.wait()


async def test_a_silent_move_destination_still_gives_the_scu_a_final_status(
    ten_studies: list[list[Path]],
) -> None:
    """SCU and SCP both wait 2 s for DIMSE messages: the SCP gives up on the stalled
    sub-operation after half that, so the SCU gets a final response (A702: every
    sub-operation failed), not a timeout."""
    study = ten_studies[8]
    silent = Silent()
    timeouts = aiodimse.Timeouts(dimse=2.0, acse=5.0)
    async with (
        aiodimse.Server(silent, LOCAL, 0, ae_title="SILENT", timeouts=timeouts) as dest,
        aiodimse.Server(
            FileArchive(study),
            LOCAL,
            0,
            ae_title="QR",
            destinations={"SILENT": (LOCAL, dest.port)},
            timeouts=timeouts,
        ) as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=timeouts) as assoc,
    ):
        result = await assoc.move(_study_query(study[0]), "SILENT", check=False)
        assert result.status.code == UNABLE_TO_PERFORM
        assert (result.completed, result.failed) == (0, 3)
        assert silent.received == 1
        assert (await assoc.echo()).code == 0
