"""The archive with DCMTK's tools as peers: storescu in; findscu, getscu and movescu out.

The archive runs on the test's event loop (127.0.0.1, a free port); the DCMTK tools run as
subprocesses awaited with asyncio, so that the loop keeps serving them. Expected answers
are computed from the source data sets with pydicom, independently of the archive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset

from aiodimse.archive import ArchiveServer
from aiodimse.dicomfile import NotDicomError, dataset_bytes, read_part10
from aiodimse.testing import peers
from aiodimse.testing.peers import PeerProcess
from aiodimse.testing.synthetic import make_archive_population, write_study

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
AET = "QRSCP"


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """3 patients x 2 studies x 2 series x 2 instances (8x8 CT/MR)."""
    datasets = make_archive_population(3, 2, 2, 2, rows=8, cols=8, seed="interop-archive")
    return write_study(tmp_path_factory.mktemp("interop-population"), datasets)


@pytest.fixture(scope="module")
def sources(population: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in population]


async def run_tool(tool: str, *args: str | os.PathLike[str], cwd: Path, timeout: float = 60) -> str:
    """Run a DCMTK tool without blocking the loop (the archive serves it on this loop)."""
    code, text = await peers.run_dcmtk_async(tool, *args, timeout=timeout, cwd=cwd)
    assert code == 0, f"{tool} exited with {code}:\n{text}"
    return text


async def storescu(server: ArchiveServer, files: Sequence[Path], cwd: Path) -> None:
    await run_tool("storescu", "-aet", "STORESCU", "-aec", AET, HOST, str(server.port), *files,
                   cwd=cwd)  # fmt: skip


async def findscu(
    server: ArchiveServer, model: str, keys: dict[str, str], work: Path
) -> list[Dataset]:
    """findscu with ``-X``: the response identifiers it received, read back."""
    out = work / f"find-{len(list(work.iterdir()))}"
    out.mkdir()
    args: list[str] = [model, "-aet", "FINDSCU", "-aec", AET, "-X", "-od", str(out)]
    for keyword, value in keys.items():
        args += ["-k", f"{keyword}={value}"]
    await run_tool("findscu", *args, HOST, str(server.port), cwd=work)
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def payloads(directory: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every Part 10 file in ``directory``."""
    out: dict[str, bytes] = {}
    for path in directory.iterdir():
        try:
            info = read_part10(path)
        except NotDicomError:
            continue
        out[info.sop_instance_uid] = dataset_bytes(path, info)
    return out


def source_payloads(
    population: list[Path], keep: Callable[[Dataset], bool], sources: list[Dataset]
) -> dict[str, bytes]:
    return {
        str(ds.SOPInstanceUID): dataset_bytes(path, read_part10(path))
        for path, ds in zip(population, sources, strict=True)
        if keep(ds)
    }


async def test_storescu_in_findscu_out(
    tmp_path: Path, dcmtk: Any, population: list[Path], sources: list[Dataset]
) -> None:
    dcmtk("findscu")
    async with ArchiveServer(tmp_path / "arch", ae_title=AET, port=0, host=HOST) as server:
        await storescu(server, population, tmp_path)
        assert server.archive.count() == len(population)

        # Patient root, PATIENT level, universal + wildcard
        found = await findscu(
            server, "-P", {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "*"},
            tmp_path,
        )  # fmt: skip
        assert sorted((d.PatientID, str(d.PatientName)) for d in found) == sorted(
            {(s.PatientID, str(s.PatientName)) for s in sources}
        )

        # Study root, STUDY level, wildcard on PatientName in lower case (PN is matched
        # case-insensitively by the archive)
        initial = str(sources[0].PatientName)[0]
        found = await findscu(
            server, "-S",
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
             "PatientName": f"{initial.lower()}*", "NumberOfStudyRelatedInstances": ""},
            tmp_path,
        )  # fmt: skip
        expected = {s.StudyInstanceUID for s in sources if str(s.PatientName).startswith(initial)}
        assert {d.StudyInstanceUID for d in found} == expected
        assert all(int(d.NumberOfStudyRelatedInstances) == 4 for d in found)

        # Study root, STUDY level, date range
        dates = sorted({s.StudyDate for s in sources})
        low, high = dates[1], dates[-2]
        found = await findscu(
            server, "-S",
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": f"{low}-{high}"},
            tmp_path,
        )  # fmt: skip
        expected = {s.StudyInstanceUID for s in sources if low <= s.StudyDate <= high}
        assert {d.StudyInstanceUID for d in found} == expected
        assert all(low <= d.StudyDate <= high for d in found)

        # Open-ended range, and the response carries only the keys asked for
        found = await findscu(
            server, "-S",
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": f"-{low}"},
            tmp_path,
        )  # fmt: skip
        assert {d.StudyInstanceUID for d in found} == {
            s.StudyInstanceUID for s in sources if s.StudyDate <= low
        }
        assert {e.keyword for e in found[0]} == {
            "QueryRetrieveLevel", "StudyInstanceUID", "StudyDate"
        }  # fmt: skip

        # Study root, SERIES level within one study
        study = sources[0].StudyInstanceUID
        found = await findscu(
            server, "-S",
            {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": "",
             "Modality": "", "NumberOfSeriesRelatedInstances": ""},
            tmp_path,
        )  # fmt: skip
        assert {(d.SeriesInstanceUID, d.Modality) for d in found} == {
            (s.SeriesInstanceUID, s.Modality) for s in sources if s.StudyInstanceUID == study
        }

        # Patient root, IMAGE level with the unique keys above it
        series = sources[0].SeriesInstanceUID
        found = await findscu(
            server, "-P",
            {"QueryRetrieveLevel": "IMAGE", "PatientID": sources[0].PatientID,
             "StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": "",
             "InstanceNumber": ""},
            tmp_path,
        )  # fmt: skip
        assert sorted((d.SOPInstanceUID, int(d.InstanceNumber)) for d in found) == sorted(
            (s.SOPInstanceUID, int(s.InstanceNumber))
            for s in sources
            if s.SeriesInstanceUID == series
        )
    server.archive.close()


async def test_getscu_gets_byte_identical_data_sets(
    tmp_path: Path, dcmtk: Any, population: list[Path], sources: list[Dataset]
) -> None:
    dcmtk("getscu")
    study = str(sources[-1].StudyInstanceUID)
    async with ArchiveServer(tmp_path / "arch", ae_title=AET, port=0, host=HOST) as server:
        await storescu(server, population, tmp_path)
        out = tmp_path / "got"
        out.mkdir()
        await run_tool(
            "getscu", "-S", "-aet", "GETSCU", "-aec", AET,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "-od", str(out), HOST, str(server.port), cwd=tmp_path,
        )  # fmt: skip
    server.archive.close()
    expected = source_payloads(population, lambda ds: ds.StudyInstanceUID == study, sources)
    assert len(expected) == 4
    assert payloads(out) == expected


async def test_movescu_to_a_dcmtk_storescp(
    tmp_path: Path,
    storescp_peer: Callable[..., PeerProcess],
    population: list[Path],
    sources: list[Dataset],
) -> None:
    # Uncompressed syntaxes only, explicit VR little endian preferred (storescp's default):
    # with +xa it picks deflate from the proposal and the data sets arrive re-encoded.
    dest = storescp_peer(aet="STORESCP", accept_all=False)
    patient = str(sources[0].PatientID)
    async with ArchiveServer(
        tmp_path / "arch",
        ae_title=AET,
        port=0,
        host=HOST,
        destinations={"STORESCP": (HOST, dest.port)},
    ) as server:
        await storescu(server, population, tmp_path)
        await run_tool(
            "movescu", "-P", "-aet", "MOVESCU", "-aec", AET, "-aem", "STORESCP",
            "-k", "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={patient}",
            HOST, str(server.port), cwd=tmp_path,
        )  # fmt: skip
    server.archive.close()
    assert dest.data_dir is not None
    expected = source_payloads(population, lambda ds: ds.PatientID == patient, sources)
    assert len(expected) == 8
    assert payloads(dest.data_dir) == expected


async def test_movescu_receives_its_own_move(
    tmp_path: Path, dcmtk: Any, population: list[Path], sources: list[Dataset]
) -> None:
    dcmtk("movescu")
    port = peers.free_port()
    series = str(sources[1].SeriesInstanceUID)
    async with ArchiveServer(
        tmp_path / "arch",
        ae_title=AET,
        port=0,
        host=HOST,
        destinations={"MOVESCU": (HOST, port)},
    ) as server:
        await storescu(server, population, tmp_path)
        out = tmp_path / "moved"
        out.mkdir()
        await run_tool(
            "movescu", "-S", "-aet", "MOVESCU", "-aec", AET, "-aem", "MOVESCU",
            "--port", str(port), "-od", str(out),
            "-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={series}",
            HOST, str(server.port), cwd=tmp_path,
        )  # fmt: skip
    server.archive.close()
    expected = source_payloads(population, lambda ds: ds.SeriesInstanceUID == series, sources)
    assert len(expected) == 2
    assert payloads(out) == expected
