"""C-GET, C-MOVE and C-CANCEL against DCMTK: dcmqrscp as the SCP, movescu/getscu as the SCU.

What DCMTK 3.6.7 does here (seen in these tests):

- ``dcmqrscp`` answers a C-MOVE by opening one sub-association to the destination from its
  HostTable, puts our AE title and the C-MOVE's Message ID in every C-STORE's Move Originator
  fields, and sends a Pending response after every sub-operation, the last one included
  (Remaining 0), before the final Success. It honours C-CANCEL between sub-operations with
  FE00 and the counts so far.
- ``dcmqrscp`` supports C-GET by default: it accepts the GET models, answers our SCP/SCU role
  selection items granting us the SCP role for the storage classes, sends the C-STORE
  sub-operations on the same association in the transfer syntax it stored them in, and
  honours a C-CANCEL that arrives while it waits for a C-STORE response.
- ``movescu --cancel N`` sends C-CANCEL-RQ after N responses; ``getscu`` 3.6.7 has no
  cancel option. ``movescu --port`` receives the sub-operations itself on a sub-association
  it accepts from the SCP.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from _retrieve_support import FileArchive, HoldingSink, originals, received, study_uid
from _settings import require_dcmtk

import aiodimse
from aiodimse import contexts
from aiodimse.dicomfile import read_part10
from aiodimse.results import Progress
from aiodimse.sinks import DirectorySink
from aiodimse.testing import peers
from aiodimse.testing.peers import PeerProcess
from aiodimse.testing.synthetic import make_study, write_study

pytestmark = pytest.mark.interop

LOCAL = "127.0.0.1"
CANCEL = 0xFE00
QUICK = aiodimse.Timeouts(dimse=15)


def _uids(paths: list[Path]) -> set[str]:
    return {read_part10(p).sop_instance_uid for p in paths}


def _study_query(path: Path) -> dict[str, str]:
    return {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid(path)}


async def run_tool(tool: str, *args: str | Path, timeout: float = 60) -> tuple[int, str]:
    """Run a DCMTK tool without blocking the loop (our SCPs run on it): (exit code, output)."""
    require_dcmtk(tool)
    return await peers.run_dcmtk_async(tool, *args, timeout=timeout)


@pytest.fixture(scope="module")
def three_studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """Three studies of two patients (3, 4 and 2 instances of 32x32)."""
    root = tmp_path_factory.mktemp("studies")
    spec = [("q-1", "PAT-A", 3), ("q-2", "PAT-A", 4), ("q-3", "PAT-B", 2)]
    return [
        write_study(root / seed, make_study(n, rows=32, cols=32, seed=seed, patient_id=pid))
        for seed, pid, n in spec
    ]


async def _fill(peer: PeerProcess, files: list[Path]) -> None:
    """dcmqrscp only knows what it received by C-STORE."""
    async with aiodimse.connect(
        LOCAL,
        peer.port,
        calling_ae="FILLER",
        called_ae=peer.aet,
        contexts=contexts.for_files(files),
    ) as assoc:
        for path in files:
            await assoc.store(path)


# -- aiodimse SCU -> dcmqrscp ----------------------------------------------------------------


async def test_find_then_move_each_study_from_dcmqrscp(
    dcmqrscp_peer: Any, three_studies: list[list[Path]], tmp_path: Path
) -> None:
    every = [p for s in three_studies for p in s]
    async with aiodimse.StorageServer(tmp_path / "dest", LOCAL, 0, ae_title="DEST") as scp:
        peer = dcmqrscp_peer(hosts={"DEST": (LOCAL, scp.port)})
        await _fill(peer, every)
        async with aiodimse.connect(
            LOCAL, peer.port, calling_ae="MOVER", called_ae=peer.aet, timeouts=QUICK
        ) as assoc:
            studies = [
                str(m.StudyInstanceUID)
                async for m in assoc.find({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""})
            ]
            assert sorted(studies) == sorted(study_uid(s[0]) for s in three_studies)
            by_uid = {study_uid(s[0]): s for s in three_studies}
            for uid in studies:
                wanted = by_uid[uid]
                progress: list[Progress] = []
                result = await assoc.move(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid},
                    destination="DEST",
                    receiver=scp,
                    on_progress=progress.append,
                )
                assert result.ok and result.completed == len(wanted)
                assert {i.sop_instance_uid for i in result.instances} == _uids(wanted)
                assert all(i.move_originator_ae_title == "MOVER" for i in result.instances)
                assert all(i.calling_ae == peer.aet for i in result.instances)
                assert len({i.move_originator_message_id for i in result.instances}) == 1
                for p in progress:
                    assert (p.remaining or 0) + p.completed + p.failed + p.warning == len(wanted)
            # A destination missing from dcmqrscp's HostTable: A801, named.
            with pytest.raises(aiodimse.StatusError) as info:
                await assoc.move(_study_query(every[0]), destination="NOWHERE")
            assert info.value.status == 0xA801
            assert "move destination unknown" in str(info.value).lower()
            await assoc.echo()
    # Every data set exactly as we stored it into dcmqrscp, and nothing more.
    assert received(tmp_path / "dest") == originals(every)


async def test_get_from_dcmqrscp(
    dcmqrscp_peer: Any, three_studies: list[list[Path]], tmp_path: Path
) -> None:
    every = [p for s in three_studies for p in s]
    peer = dcmqrscp_peer()
    await _fill(peer, every)
    async with aiodimse.connect(
        LOCAL,
        peer.port,
        calling_ae="GETTER",
        called_ae=peer.aet,
        contexts=contexts.for_get(),
        timeouts=QUICK,
    ) as assoc:
        # dcmqrscp grants the SCP role we asked for on the storage contexts (role selection
        # answered on the wire, PS3.7 D.3.3.4); the CT context is the one it will use.
        assert assoc.negotiated is not None
        ct = assoc.negotiated.find(aiodimse.uids.STORAGE_SOP_CLASSES["CTImageStorage"], role="scp")
        assert ct is not None and ct.scp and not ct.scu
        for study in three_studies:
            result = await assoc.get(
                _study_query(study[0]), receiver=DirectorySink(tmp_path / "got")
            )
            assert result.ok and result.completed == len(study)
            assert {i.sop_instance_uid for i in result.instances} == _uids(study)
        await assoc.echo()
    assert received(tmp_path / "got") == originals(every)


@pytest.mark.parametrize("service", ["move", "get"])
async def test_cancel_against_dcmqrscp(
    service: str, dcmqrscp_peer: Any, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The 5th instance is held until our C-CANCEL is out; dcmqrscp then stops: Cancel,
    with counts that add up, and the association still works."""
    study = write_study(
        tmp_path_factory.mktemp("c"), make_study(30, rows=8, cols=8, seed="dcmqrscp-cancel")
    )
    hold_at = 5
    cancel_sent = asyncio.Event()

    async def after_cancel() -> None:
        await cancel_sent.wait()
        await asyncio.sleep(0.2)  # let the C-CANCEL-RQ reach dcmqrscp first

    sink = HoldingSink(tmp_path / "in", hold_at, after_cancel)
    async with aiodimse.StorageServer(sink, LOCAL, 0, ae_title="DEST") as scp:
        peer = dcmqrscp_peer(hosts={"DEST": (LOCAL, scp.port)})
        await _fill(peer, study)
        async with aiodimse.connect(
            LOCAL,
            peer.port,
            called_ae=peer.aet,
            contexts=contexts.for_get() + contexts.query_retrieve(find=False, get=False),
            timeouts=QUICK,
        ) as assoc:
            query = _study_query(study[0])
            if service == "move":
                retrieval = assoc.move(query, "DEST", receiver=scp)
            else:
                retrieval = assoc.get(query, receiver=sink)

            async def run() -> Any:
                return await retrieval

            task = asyncio.create_task(run())
            await asyncio.wait_for(sink.reached.wait(), 15)
            task.cancel()
            for _ in range(5):
                await asyncio.sleep(0)  # the C-CANCEL-RQ is written in these steps
            cancel_sent.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            result = retrieval.result
            assert result is not None and result.status.code == CANCEL
            assert hold_at <= result.completed < len(study)
            assert result.remaining is not None
            total = result.completed + result.failed + result.warning + result.remaining
            assert total == len(study)
            assert len(result.instances) == result.completed
            assert len(received(tmp_path / "in")) == result.completed
            await assoc.echo()


# -- DCMTK SCU -> aiodimse Q/R SCP -------------------------------------------------------------


def _final_counts(output: str) -> dict[str, int]:
    """The counts of the last C-MOVE/C-GET response in a DCMTK ``-d`` log."""
    found: dict[str, int] = {}
    for key in ("Remaining", "Completed", "Failed", "Warning"):
        values = re.findall(rf"{key} Suboperations\s*:\s*(\d+)", output)
        if values:
            found[key.lower()] = int(values[-1])
    return found


async def test_movescu_to_storescp(
    storescp_peer: Any, three_studies: list[list[Path]], tmp_path: Path
) -> None:
    every = [p for s in three_studies for p in s]
    archive = FileArchive(every)
    store = storescp_peer()
    assert store.data_dir is not None
    wanted = three_studies[1]
    async with aiodimse.Server(
        archive, LOCAL, 0, ae_title="QR", destinations={"STORESCP": (LOCAL, store.port)}
    ) as qr:
        code, out = await run_tool(
            "movescu",
            "-v",
            "-S",
            "-aec",
            "QR",
            "-aem",
            "STORESCP",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid(wanted[0])}",
            LOCAL,
            str(qr.port),
        )
    assert code == 0, out
    assert "Final Move Response (Success)" in out, out
    assert archive.requests[-1].destination == "STORESCP"
    assert received(store.data_dir) == originals(wanted)


async def test_movescu_to_itself(three_studies: list[list[Path]], tmp_path: Path) -> None:
    """``movescu --port``: the move destination is movescu's own listening port."""
    every = [p for s in three_studies for p in s]
    archive = FileArchive(every)
    wanted = three_studies[0] + three_studies[1]  # both studies of PAT-A
    port = peers.free_port()
    out_dir = tmp_path / "moved"
    out_dir.mkdir()
    async with aiodimse.Server(
        archive, LOCAL, 0, ae_title="QR", destinations={"MOVESCU": (LOCAL, port)}
    ) as qr:
        code, out = await run_tool(
            "movescu",
            "-v",
            "-P",
            "-aec",
            "QR",
            "--port",
            str(port),
            "-od",
            out_dir,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PAT-A",
            LOCAL,
            str(qr.port),
        )
    assert code == 0, out
    assert "Final Move Response (Success)" in out, out
    assert received(out_dir) == originals(wanted)


async def test_getscu_from_aiodimse(three_studies: list[list[Path]], tmp_path: Path) -> None:
    every = [p for s in three_studies for p in s]
    archive = FileArchive(every)
    wanted = three_studies[2]
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    async with aiodimse.Server(archive, LOCAL, 0, ae_title="QR") as qr:
        code, out = await run_tool(
            "getscu",
            "-d",
            "-S",
            "-aec",
            "QR",
            "-od",
            out_dir,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid(wanted[0])}",
            LOCAL,
            str(qr.port),
        )
    assert code == 0, out
    assert _final_counts(out) == {"remaining": 0, "completed": 2, "failed": 0, "warning": 0}
    assert received(out_dir) == originals(wanted)


async def test_movescu_cancel_against_aiodimse(tmp_path: Path) -> None:
    """``movescu --cancel 2`` after two Pending responses; the third instance is held until
    our SCP has seen the C-CANCEL, so exactly 3 are completed and 27 never started."""
    study = write_study(tmp_path / "src", make_study(30, rows=8, cols=8, seed="movescu-cancel"))
    archive = FileArchive(study)

    async def until_cancelled() -> None:
        await archive.requests[-1].wait_cancelled()

    sink = HoldingSink(tmp_path / "in", 3, until_cancelled)
    async with (
        aiodimse.StorageServer(sink, LOCAL, 0, ae_title="DEST") as scp,
        aiodimse.Server(
            archive, LOCAL, 0, ae_title="QR", destinations={"DEST": (LOCAL, scp.port)}
        ) as qr,
    ):
        code, out = await run_tool(
            "movescu",
            "-d",
            "-S",
            "-aec",
            "QR",
            "-aem",
            "DEST",
            "--cancel",
            "2",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid(study[0])}",
            LOCAL,
            str(qr.port),
        )
    assert code == 0, out
    assert "Sending Cancel Request" in out, out
    assert re.search(r"DIMSE Status\s*:\s*0xfe00", out), out
    assert _final_counts(out) == {"remaining": 27, "completed": 3, "failed": 0, "warning": 0}
    assert archive.requests[-1].cancelled
    assert len(received(tmp_path / "in")) == 3
