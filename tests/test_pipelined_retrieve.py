"""Pipelined C-STORE sub-operations of the C-MOVE and C-GET SCP (PS3.7 D.3.3.3).

The SCP keeps as many sub-operations outstanding as the receiver's window allows (the C-MOVE
destination's grant on the sub-association, the C-GET requestor's "performed" limit). A
receiver that holds its first commits until that many are in progress shows the overlap and
its bound exactly; counts, the Failed SOP Instance UID List and C-CANCEL are checked with
the same deterministic holds (no sleeps, no timing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _retrieve_support import FileArchive, IndexEntry, originals, received, study_uid

import aiodimse
from aiodimse import contexts
from aiodimse.requests import StoreRequest
from aiodimse.results import Progress, RetrieveResult
from aiodimse.scp.retrieve import SUB_OPERATION_WINDOW
from aiodimse.scu.retrieve import Retrieval
from aiodimse.sinks import DirectorySink
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"
SUCCESS = 0x0000
SOME_FAILED = 0xB000
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
QUICK = aiodimse.Timeouts(dimse=10)
#: Upper bound on a hold: a receiver that never sees the overlap it waits for fails the
#: test (its count stays short) instead of hanging it.
HOLD_LIMIT = 10.0

Gate = Callable[[], Awaitable[None]]


class _Writer:
    """A DirectorySink writer whose commit may be held, or answered with a failure."""

    def __init__(self, sink: GatedSink, inner: Any, arrival: int, uid: str) -> None:
        self.sink = sink
        self.inner = inner
        self.arrival = arrival
        self.uid = uid

    @property
    def final(self) -> Path:
        return Path(self.inner.final)

    def write(self, data: bytes | memoryview) -> None:
        self.inner.write(data)

    async def commit(self) -> int | None:
        sink = self.sink
        sink.inside += 1
        sink.most = max(sink.most, sink.inside)
        try:
            if self.arrival in sink.hold:
                sink.held += 1
                if sink.held == len(sink.hold):
                    sink.full.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sink.gate(), HOLD_LIMIT)
            if self.arrival in sink.fail_at:
                sink.failed_uids.append(self.uid)
                return OUT_OF_RESOURCES
            result: int | None = await self.inner.commit()
            sink.committed += 1
            return result
        finally:
            sink.inside -= 1

    def discard(self) -> None:
        self.inner.discard()


class GatedSink:
    """A DirectorySink that counts the commits in progress (``most``: the most at once).

    The instances arriving in positions ``hold`` (1-based) wait in their commit for
    ``gate()`` (by default: until all of them are waiting, ``full``); those in ``fail_at``
    are answered with Out of Resources (A700) and recorded in ``failed_uids``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        hold: range = range(0),
        fail_at: frozenset[int] = frozenset(),
        gate: Gate | None = None,
    ) -> None:
        self.inner = DirectorySink(directory)
        self.directory = directory
        self.hold = hold
        self.fail_at = fail_at
        self.full = asyncio.Event()
        self.gate: Gate = gate if gate is not None else self.full.wait
        self.opened = self.inside = self.most = self.held = self.committed = 0
        self.failed_uids: list[str] = []
        #: SOP Instance UIDs in the order their C-STOREs arrived.
        self.arrived: list[str] = []

    def open(self, request: StoreRequest) -> _Writer:
        self.opened += 1
        self.arrived.append(request.sop_instance_uid)
        return _Writer(self, self.inner.open(request), self.opened, request.sop_instance_uid)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """30 small instances in one study."""
    root = tmp_path_factory.mktemp("pipelined")
    return write_study(root, make_study(30, rows=16, cols=16, seed="pipelined"))


def _query(study: list[Path]) -> dict[str, str]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid(study[0])}


@contextlib.asynccontextmanager
async def scp_and_receiver(
    archive: FileArchive,
    sink: GatedSink,
    service: str,
    grant: int | None,
    move_window: int = SUB_OPERATION_WINDOW,
) -> AsyncIterator[tuple[aiodimse.Association, aiodimse.StorageServer]]:
    """A Q/R SCP "QR" serving ``archive``, a C-MOVE destination "DEST" storing into ``sink``
    and an SCU association to "QR". ``grant`` is the window the receiver allows the SCP
    (None: no window sub-item, operations one at a time): for C-MOVE, what the destination
    answers on the sub-association; for C-GET, the "performed" side the SCU proposes."""
    dest_window = (1, grant) if grant is not None and service == "move" else None
    async with (
        aiodimse.StorageServer(sink, LOCAL, 0, ae_title="DEST", async_window=dest_window) as dest,
        aiodimse.Server(
            archive,
            LOCAL,
            0,
            ae_title="QR",
            destinations={"DEST": (LOCAL, dest.port)},
            async_window=(SUB_OPERATION_WINDOW, 1),
            move_window=move_window,
        ) as qr,
    ):
        scu_window = (1, grant) if grant is not None and service == "get" else None
        async with aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
            async_window=scu_window,
        ) as assoc:
            yield assoc, dest


def _retrieve(
    assoc: aiodimse.Association,
    dest: aiodimse.StorageServer,
    sink: GatedSink,
    service: str,
    query: dict[str, str],
    on_progress: Callable[[Progress], None],
) -> Retrieval:
    if service == "move":
        return assoc.move(query, "DEST", receiver=dest, on_progress=on_progress, check=False)
    return assoc.get(query, receiver=sink, on_progress=on_progress, check=False)


def _honest(progress: list[Progress], total: int) -> None:
    """Every pending response accounts for every sub-operation (PS3.4 C.4.2.3.1)."""
    for p in progress:
        assert p.remaining is not None
        assert p.remaining + p.completed + p.failed + p.warning == total


@pytest.mark.parametrize(
    ("grant", "expected"),
    [(8, 8), (3, 3), (None, 1)],
    ids=["window-8", "window-3", "no-window"],
)
@pytest.mark.parametrize("service", ["move", "get"])
async def test_sub_operations_overlap_up_to_the_granted_window(
    service: str, grant: int | None, expected: int, study: list[Path], tmp_path: Path
) -> None:
    """The first ``expected`` commits wait until all of them are in progress: the SCP must
    have had that many C-STOREs outstanding, and never more (``most``). No pending response
    counts an instance completed before the receiver committed it."""
    sink = GatedSink(tmp_path / "in", hold=range(1, expected + 1))
    archive = FileArchive(study)
    progress: list[Progress] = []

    def seen(p: Progress) -> None:
        # A sub-operation is completed only once its C-STORE-RSP arrived, which the
        # receiver sends after its commit.
        assert p.completed <= sink.committed
        progress.append(p)

    async with scp_and_receiver(archive, sink, service, grant) as (assoc, dest):
        result = await _retrieve(assoc, dest, sink, service, _query(study), seen)
    assert isinstance(result, RetrieveResult)
    assert result.status.code == SUCCESS
    assert (result.completed, result.failed, result.warning) == (len(study), 0, 0)
    assert sink.held == expected and sink.full.is_set()
    assert sink.most == expected
    assert received(tmp_path / "in") == originals(study)
    assert progress
    _honest(progress, len(study))


async def test_a_move_proposes_no_window_unless_the_server_is_told_to(
    study: list[Path], tmp_path: Path
) -> None:
    """Some SCPs drop associations that offer a window: by default (``move_window=1``) a
    C-MOVE proposes none, and sends one sub-operation at a time even to a destination
    that would grant eight."""
    sink = GatedSink(tmp_path / "in", hold=range(1, 2))
    async with scp_and_receiver(FileArchive(study), sink, "move", 8, move_window=1) as (
        assoc,
        dest,
    ):
        result = await _retrieve(assoc, dest, sink, "move", _query(study), lambda p: None)
    assert result.status.code == SUCCESS and result.completed == len(study)
    assert sink.most == 1


@pytest.mark.parametrize("service", ["move", "get"])
async def test_failures_in_the_middle_are_counted_and_named(
    service: str, study: list[Path], tmp_path: Path
) -> None:
    """With eight outstanding, the receiver refuses three instances in the middle and one
    item cannot be read on the SCP's side: each fails alone, by name."""
    sink = GatedSink(tmp_path / "in", hold=range(1, 9), fail_at=frozenset({3, 9, 17}))
    unreadable = IndexEntry(tmp_path / "gone.dcm", "1.2.826.0.1.3680043.8.498.999")
    archive = FileArchive(study, extra=[unreadable])
    progress: list[Progress] = []
    async with scp_and_receiver(archive, sink, service, 8) as (assoc, dest):
        result = await _retrieve(assoc, dest, sink, service, _query(study), progress.append)
    total = len(study) + 1
    assert result.status.code == SOME_FAILED
    assert (result.completed, result.failed, result.warning) == (total - 4, 4, 0)
    assert len(sink.failed_uids) == 3
    assert sorted(result.failed_instances) == sorted(
        [*sink.failed_uids, unreadable.sop_instance_uid]
    )
    assert sink.most == 8
    got = received(tmp_path / "in")
    assert set(got) == set(originals(study)) - set(sink.failed_uids)
    _honest(progress, total)


@pytest.mark.parametrize(("grant", "window"), [(4, 4), (None, 1)], ids=["window-4", "no-window"])
@pytest.mark.parametrize("service", ["move", "get"])
async def test_cancel_midway_awaits_the_outstanding_and_starts_nothing_more(
    service: str, grant: int | None, window: int, study: list[Path], tmp_path: Path
) -> None:
    """Arrivals 5 to 4 + window are held until the SCP has seen the C-CANCEL; the window is
    then full of held sub-operations, so exactly 4 + window complete and nothing else is
    started (PS3.4 C.4.2.3.1: Cancel, Remaining = sub-operations never initiated)."""
    first = 5
    archive = FileArchive(study)

    async def until_scp_saw_cancel() -> None:
        await archive.retrieved.wait()
        await archive.requests[-1].wait_cancelled()

    sink = GatedSink(tmp_path / "in", hold=range(first, first + window), gate=until_scp_saw_cancel)
    progress: list[Progress] = []
    total = len(study)
    async with scp_and_receiver(archive, sink, service, grant) as (assoc, dest):
        retrieval = _retrieve(assoc, dest, sink, service, _query(study), progress.append)
        async with retrieval:
            await asyncio.wait_for(sink.full.wait(), HOLD_LIMIT)
        result = retrieval.result
        assert result is not None
        done = first - 1 + window
        assert result.status.code == CANCEL
        assert (result.completed, result.failed, result.warning) == (done, 0, 0)
        assert result.remaining == total - done
        assert archive.requests[-1].cancelled
        assert sink.opened == done  # no sub-operation started after the C-CANCEL
        assert len(received(tmp_path / "in")) == done
        _honest(progress, total)
        # The association is clean for the next request.
        await assoc.echo()


async def test_destination_lost_with_sub_operations_outstanding(
    study: list[Path], tmp_path: Path
) -> None:
    """The destination is aborted while arrivals 5 to 8 (the whole window of 4) wait in
    their commit: those four and every sub-operation never started fail, by name; the four
    answered before stay completed."""
    lost = asyncio.Event()
    sink = GatedSink(tmp_path / "in", hold=range(5, 9), gate=lost.wait)
    archive = FileArchive(study)
    progress: list[Progress] = []
    async with scp_and_receiver(archive, sink, "move", 4) as (assoc, dest):
        retrieval = _retrieve(assoc, dest, sink, "move", _query(study), progress.append)
        task = asyncio.ensure_future(retrieval)
        await asyncio.wait_for(sink.full.wait(), HOLD_LIMIT)
        for association in list(dest.associations):
            await association.abort()
        lost.set()
        result = await asyncio.wait_for(task, HOLD_LIMIT)
    total = len(study)
    assert result.status.code == SOME_FAILED
    assert (result.completed, result.failed, result.warning) == (4, total - 4, 0)
    assert sink.opened == 8  # nothing was sent after the loss
    assert sorted(result.failed_instances) == sorted(set(originals(study)) - set(sink.arrived[:4]))
    _honest(progress, total)
