"""aiodimse against pynetdicom as a Query/Retrieve SCP, in a process of its own on loopback.

pynetdicom bends the standard the way some PACS do: its C-MOVE sub-operations carry its
own AE title as Move Originator AE Title. A C-MOVE to ourselves must still be matched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from _settings import CI
from pydicom import dcmread

import aiodimse
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.testing import peers
from aiodimse.testing.synthetic import make_study, write_study

pytestmark = pytest.mark.interop

LOCAL = "127.0.0.1"
QUICK = aiodimse.Timeouts(dimse=20)


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    return write_study(tmp_path / "src", make_study(3, rows=16, cols=16, seed="pynetdicom"))


@pytest.fixture
def receiver_port() -> int:
    return peers.free_port()


@pytest.fixture
def pynetdicom_qr(
    tmp_path: Path, study: list[Path], receiver_port: int
) -> Iterator[peers.PeerProcess]:
    try:
        peer = peers.start_pynetdicom_qrscp(
            peers.free_port(),
            study,
            aet="PYNETQR",
            destinations={"ME": (LOCAL, receiver_port)},
            work_dir=tmp_path / "peer",
        )
    except peers.PeerMissing as exc:
        if CI:  # interop peers are mandatory under CI=true
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield peer
    finally:
        peer.stop()


async def test_move_to_ourselves_through_pynetdicom_is_matched(
    tmp_path: Path,
    study: list[Path],
    receiver_port: int,
    pynetdicom_qr: peers.PeerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every instance arrives and is counted for the move (the Message ID rule matches),
    the move is ok without waiting for its arrival timeout, and the log says how."""
    query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": read_uid(study[0])}
    async with (
        aiodimse.StorageServer(tmp_path / "in", LOCAL, receiver_port, ae_title="ME") as scp,
        aiodimse.connect(
            LOCAL, pynetdicom_qr.port, calling_ae="ME", called_ae="PYNETQR", timeouts=QUICK
        ) as assoc,
    ):
        with caplog.at_level("INFO", logger="aiodimse.storage"):
            result = await asyncio.wait_for(
                assoc.move(query, "ME", receiver=scp, arrival_timeout=30), 20
            )
    assert result.ok and result.completed == 3 and result.undelivered == 0
    assert sorted(i.sop_instance_uid for i in result.instances) == sorted(
        read_part10(p).sop_instance_uid for p in study
    )
    originators = {i.move_originator_ae_title for i in result.instances}
    assert originators == {"PYNETQR"}  # pynetdicom names itself, not us
    assert any("matched by Move Originator Message ID" in r.getMessage() for r in caplog.records)
    for path in study:
        got = tmp_path / "in" / f"{read_part10(path).sop_instance_uid}.dcm"
        assert read_part10(got).sop_instance_uid == read_part10(path).sop_instance_uid
        assert len(dataset_bytes(got, read_part10(got))) > 0


async def test_get_from_pynetdicom(
    tmp_path: Path, study: list[Path], pynetdicom_qr: peers.PeerProcess
) -> None:
    query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": read_uid(study[0])}
    async with aiodimse.connect(
        LOCAL,
        pynetdicom_qr.port,
        called_ae="PYNETQR",
        contexts=aiodimse.contexts.for_get(),
        timeouts=QUICK,
    ) as assoc:
        result = await assoc.get(query, receiver=aiodimse.DirectorySink(tmp_path / "got"))
    assert result.ok and len(result.instances) == 3


def read_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
