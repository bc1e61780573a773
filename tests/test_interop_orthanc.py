"""Orthanc and the aiodimse archive, configured by the files docker-compose.yml runs.

``docker/orthanc.json`` and ``docker/qrscp.toml`` are loaded from the repository and only
what must change on one machine is substituted: ports (free ones), folders (``tmp_path``),
the compose service names ``aiodimse``/``orthanc`` (-> 127.0.0.1) and
``RemoteAccessAllowed``. Orthanc (Debian's 1.10 package) is started once per module; the
archive runs on each test's event loop on a port reserved for it, the one Orthanc knows as
modality AIODIMSE. Orthanc is driven by its REST API with urllib, in a thread, so that the
archive keeps serving on the loop while Orthanc talks to it. Expected answers are computed
from the source data sets with pydicom.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from _settings import require_orthanc
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

import aiodimse
from aiodimse.archive import ArchiveServer
from aiodimse.cli import build_parser, load_qrscp_config
from aiodimse.dicomfile import dataset_bytes, decode_dataset, read_part10
from aiodimse.dimse.status import StatusCategory
from aiodimse.requests import StoreRequest
from aiodimse.testing import peers
from aiodimse.testing.peers import LOOPBACK, PeerProcess
from aiodimse.testing.synthetic import make_study, write_study

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
ORTHANC_JSON = REPO / "docker" / "orthanc.json"
QRSCP_TOML = REPO / "docker" / "qrscp.toml"
#: docker-compose.yml's service names, which the two files use as host names.
ARCHIVE_SERVICE, ORTHANC_SERVICE = "aiodimse", "orthanc"
SCU_AET = "ORTH-TEST-SCU"


# -- the configuration of docker-compose.yml, on loopback --------------------------------------


def loopback_orthanc_config(
    compose: dict[str, Any], *, dicom_port: int, http_port: int, archive_port: int, work: Path
) -> dict[str, Any]:
    """docker/orthanc.json with what one machine needs substituted, nothing else."""
    config: dict[str, Any] = json.loads(json.dumps(compose))  # a deep copy
    config["DicomPort"] = dicom_port
    config["HttpPort"] = http_port
    config["RemoteAccessAllowed"] = False  # REST on loopback only
    folders: dict[str, Path] = {}  # one folder per distinct path (storage and index may share)
    for key in ("StorageDirectory", "IndexDirectory"):
        if key in config:
            config[key] = str(folders.setdefault(config[key], work / f"db{len(folders)}"))
    for name, modality in config["DicomModalities"].items():
        if modality[1] == ARCHIVE_SERVICE:
            config["DicomModalities"][name] = [modality[0], LOOPBACK, archive_port]
    return config


def load_archive_settings() -> dict[str, Any]:
    """docker/qrscp.toml as ``aiodimse qrscp --config`` reads it."""
    args = build_parser().parse_args(["qrscp", "--config", str(QRSCP_TOML)])
    return load_qrscp_config(args)


@dataclass
class Deployment:
    """Orthanc running with the derived config, and the archive's settings for it."""

    orthanc: PeerProcess
    orthanc_config: dict[str, Any]
    archive_port: int
    archive_aet: str
    archive_options: dict[str, Any]
    destinations: dict[str, tuple[str, int]]
    rest: Rest


class Rest:
    """Orthanc's REST API over urllib; calls run in a thread so the loop keeps serving."""

    def __init__(self, peer: PeerProcess) -> None:
        assert peer.http_port is not None
        self.peer = peer
        self.base = f"http://{LOOPBACK}:{peer.http_port}"

    def call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise AssertionError(
                f"{method} {path}: HTTP {exc.code} {detail}\n"
                f"----- Orthanc log -----\n{self.peer.log()[-6000:]}"
            ) from None

    async def raw(self, method: str, path: str, body: bytes | None = None) -> bytes:
        return await asyncio.to_thread(self.call, method, path, body)

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return json.loads(await self.raw(method, path, data) or b"null")

    async def clear(self) -> None:
        for patient in await self.json("GET", "/patients"):
            await self.json("DELETE", f"/patients/{patient}")

    async def upload(self, paths: Iterable[Path]) -> None:
        for path in paths:
            answer = json.loads(await self.raw("POST", "/instances", path.read_bytes()))
            assert answer["Status"] == "Success", answer

    async def instances(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc's instance ID of everything Orthanc holds."""
        listing = await self.json("GET", "/instances?expand")
        return {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in listing}

    async def answers(self, query_id: str) -> list[dict[str, str]]:
        """A query's answers as {"gggg,eeee": value} (Orthanc's JSON, strings only)."""
        expanded = await self.json("GET", f"/queries/{query_id}/answers?expand")
        return [
            {tag: item["Value"] for tag, item in answer.items() if item["Type"] == "String"}
            for answer in expanded
        ]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_orthanc()
    work = tmp_path_factory.mktemp("orthanc-compose")
    compose = json.loads(ORTHANC_JSON.read_text(encoding="utf-8"))
    settings = load_archive_settings()
    archive_port, dicom_port, http_port = peers.free_ports(3)
    config = loopback_orthanc_config(
        compose, dicom_port=dicom_port, http_port=http_port, archive_port=archive_port, work=work
    )
    orthanc_dicom_port = compose["DicomPort"]
    destinations = {
        ae: (LOOPBACK, dicom_port) if (host, port) == (ORTHANC_SERVICE, orthanc_dicom_port)
        else (host, port)
        for ae, (host, port) in settings["destinations"].items()
    }  # fmt: skip
    peer = peers.start_orthanc(dicom_port, http_port, work / "orthanc", config=config)
    try:
        yield Deployment(
            orthanc=peer,
            orthanc_config=config,
            archive_port=archive_port,
            archive_aet=settings["aet"],
            archive_options={
                "allowed_calling": settings["allow"],
                "max_associations": int(settings["max_associations"]),
                "check_called_ae": bool(settings["check_called_ae"]),
            },
            destinations=destinations,
            rest=Rest(peer),
        )
    finally:
        peer.stop()


# -- source data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    header: Dataset
    transfer_syntax: str
    payload: bytes

    @property
    def uid(self) -> str:
        return str(self.header.SOPInstanceUID)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    """Three patients, one study each, in three transfer syntaxes (7 small images).

    A: CT, 2 series x 2, explicit VR LE; B: MR, 1 series x 2, implicit VR LE;
    C: CT, 1 image, deflated, a non-ASCII patient name.
    """
    folder = tmp_path_factory.mktemp("orthanc-sources")
    datasets = make_study(4, rows=8, cols=8, series_count=2, seed="orthanc-a",
                          patient_id="ORTH-A", patient_name="DOE^JANE")  # fmt: skip
    datasets += make_study(2, rows=8, cols=8, seed="orthanc-b", modality="MR",
                           patient_id="ORTH-B", patient_name="SMITH^JOHN", study_date="20230301",
                           transfer_syntax=ImplicitVRLittleEndian)  # fmt: skip
    datasets += make_study(1, rows=8, cols=8, seed="orthanc-c", patient_id="ORTH-C",
                           patient_name="MÜLLER^ANNA", study_date="20220505",
                           transfer_syntax=DeflatedExplicitVRLittleEndian)  # fmt: skip
    out = []
    for path in write_study(folder, datasets):
        info = read_part10(path)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        out.append(Source(path, header, info.transfer_syntax_uid, dataset_bytes(path, info)))
    assert len({s.uid for s in out}) == len(out) == 7
    return out


def of_patient(sources: list[Source], patient_id: str) -> list[Source]:
    return [s for s in sources if s.header.PatientID == patient_id]


def elements(data: bytes, transfer_syntax: str) -> dict[int, Any]:
    """Tag -> value of a data set, whatever its encoding (to compare transcoded copies)."""
    return {int(e.tag): e.value for e in decode_dataset(data, transfer_syntax)}


def assert_same_instance(source: Source, data: bytes, transfer_syntax: str) -> bool:
    """The data set is the source's: byte for byte when the transfer syntax was kept (and
    it is not deflated: a deflated stream may be compressed again differently), else
    element for element. Returns whether it was byte-identical."""
    if transfer_syntax == source.transfer_syntax and data == source.payload:
        return True
    if (
        transfer_syntax == source.transfer_syntax
        and transfer_syntax != DeflatedExplicitVRLittleEndian
    ):
        raise AssertionError(f"{source.uid}: same syntax {transfer_syntax}, different bytes")
    assert elements(data, transfer_syntax) == elements(source.payload, source.transfer_syntax)
    return False


# -- one archive per test, on the port Orthanc knows ---------------------------------------------


@dataclass
class Env:
    deployment: Deployment
    server: ArchiveServer
    stores: list[StoreRequest] = field(default_factory=list)

    @property
    def rest(self) -> Rest:
        return self.deployment.rest

    @property
    def orthanc_port(self) -> int:
        return self.deployment.orthanc.port

    def archived(self) -> dict[str, tuple[str, bytes]]:
        """SOP Instance UID -> (transfer syntax, data set bytes) of the archive's files."""
        out = {}
        for path in (self.server.archive.root / "files").rglob("*.dcm"):
            info = read_part10(path)
            out[info.sop_instance_uid] = (info.transfer_syntax_uid, dataset_bytes(path, info))
        return out

    async def orthanc_copies(self, tmp: Path) -> dict[str, tuple[str, bytes, dict[str, Any]]]:
        """SOP Instance UID -> (transfer syntax, data set bytes, metadata) of Orthanc's files."""
        out = {}
        for uid, orthanc_id in (await self.rest.instances()).items():
            path = tmp / f"orthanc-{orthanc_id}.dcm"
            path.write_bytes(await self.rest.raw("GET", f"/instances/{orthanc_id}/file"))
            info = read_part10(path)
            metadata = await self.rest.json("GET", f"/instances/{orthanc_id}/metadata?expand")
            out[uid] = (info.transfer_syntax_uid, dataset_bytes(path, info), metadata)
        return out


@pytest.fixture
async def env(deployment: Deployment, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await env(preload=[sources])`` starts the archive (qrscp.toml's settings,
    with its files already ingested) and returns an :class:`Env`; Orthanc starts empty."""
    await deployment.rest.clear()
    started: list[ArchiveServer] = []

    async def start(preload: Iterable[Source] = ()) -> Env:
        server = ArchiveServer(
            tmp_path / "archive",
            ae_title=deployment.archive_aet,
            port=deployment.archive_port,
            host=LOOPBACK,
            destinations=deployment.destinations,
            **deployment.archive_options,
        )
        started.append(server)
        server.archive.ingest([s.path for s in preload])
        env = Env(deployment, server)
        open_store = server.archive.open_store

        def recording(request: StoreRequest) -> Any:
            env.stores.append(request)
            return open_store(request)

        server.archive.open_store = recording  # type: ignore[method-assign]
        await server.start()
        return env

    try:
        yield start
    finally:
        for server in started:
            server.close()
            await asyncio.wait_for(server.wait_closed(), 10)
            server.archive.close()


def values(ds: Dataset, keyword: str) -> list[str]:
    """The values of a (possibly multi-valued, possibly empty) string element."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def scu(port: int, called: str, **kwargs: Any) -> Any:
    return aiodimse.connect(LOOPBACK, port, calling_ae=SCU_AET, called_ae=called, **kwargs)


# -- (a) Orthanc C-STOREs into the archive ------------------------------------------------------


async def test_orthanc_stores_into_the_archive(env: Any, sources: list[Source]) -> None:
    e: Env = await env()
    await e.rest.upload(s.path for s in sources)
    ids = list((await e.rest.instances()).values())
    job = await e.rest.json(
        "POST", "/modalities/AIODIMSE/store", {"Resources": ids, "Synchronous": True}
    )
    assert job["InstancesCount"] == len(sources) and job["FailedInstancesCount"] == 0, job

    archived = e.archived()
    assert set(archived) == {s.uid for s in sources}
    identical = 0
    for source in sources:
        transfer_syntax, data = archived[source.uid]
        # Orthanc offers each file's own syntax; the archive accepts every syntax.
        assert transfer_syntax == source.transfer_syntax
        identical += assert_same_instance(source, data, transfer_syntax)
    # Byte for byte (a deflated stream is only required to inflate to the same data set).
    assert identical >= sum(s.transfer_syntax != DeflatedExplicitVRLittleEndian for s in sources)
    assert e.server.archive.count("STUDY") == 3
    assert {r.calling_ae.strip() for r in e.stores} == {e.deployment.orthanc_config["DicomAet"]}
    # PS3.7 9.3.1.1: Move Originator fields only in the sub-operations of a C-MOVE.
    assert all(r.move_originator_ae_title is None for r in e.stores)
    assert all(r.move_originator_message_id is None for r in e.stores)


# -- (b) Orthanc C-FINDs the archive ----------------------------------------------------------


def expected_studies(sources: Iterable[Source]) -> dict[str, dict[str, str]]:
    studies: dict[str, list[Dataset]] = defaultdict(list)
    for s in sources:
        studies[str(s.header.StudyInstanceUID)].append(s.header)
    return {
        uid: {
            "0010,0010": str(hs[0].PatientName),
            "0010,0020": hs[0].PatientID,
            "0008,0020": hs[0].StudyDate,
            "0008,0050": hs[0].AccessionNumber,
            "0008,1030": hs[0].StudyDescription,
            "0008,0061": "\\".join(sorted({h.Modality for h in hs})),
            "0020,1208": str(len(hs)),
        }
        for uid, hs in studies.items()
    }


async def orthanc_query(e: Env, level: str, query: dict[str, str]) -> tuple[str, list[Any]]:
    answer = await e.rest.json(
        "POST", "/modalities/AIODIMSE/query", {"Level": level, "Query": query}
    )
    return answer["ID"], await e.rest.answers(answer["ID"])


STUDY_KEYS = {
    "PatientID": "",
    "PatientName": "",
    "StudyDate": "",
    "AccessionNumber": "",
    "StudyDescription": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedInstances": "",
}


async def test_orthanc_finds_in_the_archive(env: Any, sources: list[Source]) -> None:
    e: Env = await env(preload=sources)
    studies = expected_studies(sources)

    def by_study(answers: list[dict[str, str]]) -> dict[str, dict[str, str]]:
        return {a["0020,000d"]: {k: a.get(k, "") for k in next(iter(studies.values()))}
                for a in answers}  # fmt: skip

    _, answers = await orthanc_query(e, "Study", {**STUDY_KEYS, "PatientID": "*"})
    assert by_study(answers) == studies  # all three, the UTF-8 name decoded by Orthanc

    _, answers = await orthanc_query(e, "Study", {**STUDY_KEYS, "PatientName": "DOE*"})
    assert by_study(answers) == {
        uid: v for uid, v in studies.items() if v["0010,0010"].startswith("DOE")
    }
    _, answers = await orthanc_query(e, "Study", {**STUDY_KEYS, "StudyDate": "20230101-20231231"})
    assert by_study(answers) == {
        uid: v for uid, v in studies.items() if "20230101" <= v["0008,0020"] <= "20231231"
    }

    # SERIES level within study A
    study_a = str(of_patient(sources, "ORTH-A")[0].header.StudyInstanceUID)
    keys = {"StudyInstanceUID": study_a, "Modality": "", "SeriesNumber": "",
            "SeriesDescription": "", "NumberOfSeriesRelatedInstances": ""}  # fmt: skip
    _, answers = await orthanc_query(e, "Series", keys)
    series: dict[str, list[Dataset]] = defaultdict(list)
    for s in of_patient(sources, "ORTH-A"):
        series[str(s.header.SeriesInstanceUID)].append(s.header)
    assert {
        a["0020,000e"]: (a["0020,000d"], a["0008,0060"], a["0020,0011"], a["0008,103e"],
                         a["0020,1209"])
        for a in answers
    } == {
        uid: (study_a, hs[0].Modality, str(hs[0].SeriesNumber), hs[0].SeriesDescription,
              str(len(hs)))
        for uid, hs in series.items()
    }  # fmt: skip


# -- (c) C-MOVE from the archive to Orthanc ----------------------------------------------------


async def assert_orthanc_holds(e: Env, wanted: list[Source], tmp: Path) -> None:
    copies = await e.orthanc_copies(tmp)
    assert set(copies) == {s.uid for s in wanted}
    for source in wanted:
        transfer_syntax, data, metadata = copies[source.uid]
        assert metadata["RemoteAET"] == e.deployment.archive_aet
        assert metadata["TransferSyntax"] == transfer_syntax == source.transfer_syntax
        assert_same_instance(source, data, transfer_syntax)


async def test_orthanc_retrieves_from_the_archive(
    env: Any, sources: list[Source], tmp_path: Path
) -> None:
    """Orthanc's Query/Retrieve: C-FIND, then C-MOVE to its own AE title ("ORTHANC"),
    which the archive resolves from its destinations."""
    e: Env = await env(preload=sources)
    # STUDY level: every answer of the query
    query_id, answers = await orthanc_query(e, "Study", {"PatientID": "ORTH-B"})
    assert len(answers) == 1
    job = await e.rest.json("POST", f"/queries/{query_id}/retrieve", {"Synchronous": True})
    assert job["RemoteAet"] == e.deployment.archive_aet, job
    wanted = of_patient(sources, "ORTH-B")
    await assert_orthanc_holds(e, wanted, tmp_path)

    # SERIES level: one answer of the query (one of study A's two series)
    study_a = str(of_patient(sources, "ORTH-A")[0].header.StudyInstanceUID)
    query_id, answers = await orthanc_query(
        e, "Series", {"StudyInstanceUID": study_a, "SeriesInstanceUID": ""}
    )
    assert len(answers) == 2
    series = answers[1]["0020,000e"]
    await e.rest.json("POST", f"/queries/{query_id}/answers/1/retrieve", {"Synchronous": True})
    wanted += [s for s in sources if s.header.SeriesInstanceUID == series]
    assert len(wanted) == 4
    await assert_orthanc_holds(e, wanted, tmp_path)


async def test_scu_moves_from_the_archive_to_orthanc(
    env: Any, sources: list[Source], tmp_path: Path
) -> None:
    e: Env = await env(preload=sources)
    wanted = [s for s in sources if s.header.PatientID != "ORTH-A"]
    async with scu(e.server.port, e.deployment.archive_aet) as assoc:
        for patient in ("ORTH-B", "ORTH-C"):
            result = await assoc.move(
                {"QueryRetrieveLevel": "PATIENT", "PatientID": patient},
                "ORTHANC",
                model="patient",
            )
            assert result.ok and result.completed == len(of_patient(sources, patient))
    await assert_orthanc_holds(e, wanted, tmp_path)


# -- (d) aiodimse find / move / get against Orthanc --------------------------------------------


async def test_scu_finds_in_orthanc(env: Any, sources: list[Source]) -> None:
    e: Env = await env()
    await e.rest.upload(s.path for s in sources)
    studies = expected_studies(sources)
    aet = e.deployment.orthanc_config["DicomAet"]
    async with scu(e.orthanc_port, aet) as assoc:
        query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **STUDY_KEYS}
        found = [m async for m in assoc.find(query)]
        got = {
            str(m.StudyInstanceUID): {
                "0010,0010": str(m.PatientName),
                "0010,0020": m.PatientID,
                "0008,0020": m.StudyDate,
                "0008,0050": m.AccessionNumber,
                "0008,1030": m.StudyDescription,
                "0008,0061": "\\".join(sorted(values(m, "ModalitiesInStudy"))),
                "0020,1208": str(m.NumberOfStudyRelatedInstances),
            }
            for m in found
        }  # fmt: skip
        assert got == studies
        assert all(m.RetrieveAETitle == aet for m in found)

        # IMAGE level, patient root, one series of study A
        a = of_patient(sources, "ORTH-A")
        series_uid = str(a[0].header.SeriesInstanceUID)
        query = {"QueryRetrieveLevel": "IMAGE", "PatientID": "ORTH-A",
                 "StudyInstanceUID": str(a[0].header.StudyInstanceUID),
                 "SeriesInstanceUID": series_uid, "SOPInstanceUID": "",
                 "InstanceNumber": ""}  # fmt: skip
        matches = assoc.find(query, model="patient")
        images = {(str(m.SOPInstanceUID), int(m.InstanceNumber)) async for m in matches}
        assert matches.status.category is StatusCategory.SUCCESS
        assert images == {
            (s.uid, int(s.header.InstanceNumber))
            for s in a
            if str(s.header.SeriesInstanceUID) == series_uid
        }


async def test_scu_moves_from_orthanc_to_the_archive(env: Any, sources: list[Source]) -> None:
    """Orthanc resolves the destination AIODIMSE from its DicomModalities (-> the archive)."""
    e: Env = await env()
    await e.rest.upload(s.path for s in sources)
    aet = e.deployment.orthanc_config["DicomAet"]
    moved = of_patient(sources, "ORTH-A") + of_patient(sources, "ORTH-B")
    originator_ids = []
    async with scu(e.orthanc_port, aet) as assoc:
        for s in ("ORTH-A", "ORTH-B"):
            study = str(of_patient(sources, s)[0].header.StudyInstanceUID)
            query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}
            before = len(e.stores)
            result = await assoc.move(query, e.deployment.archive_aet)
            assert result.ok and result.completed == len(of_patient(sources, s)), result
            originator_ids.append({r.move_originator_message_id for r in e.stores[before:]})

    archived = e.archived()
    assert set(archived) == {s.uid for s in moved}
    for source in moved:
        transfer_syntax, data = archived[source.uid]
        assert transfer_syntax == source.transfer_syntax
        assert assert_same_instance(source, data, transfer_syntax)
    # PS3.7 9.3.1.1: C-STORE sub-operations of a C-MOVE name its originator and message.
    assert {r.calling_ae.strip() for r in e.stores} == {aet}
    assert {r.move_originator_ae_title for r in e.stores} == {SCU_AET}
    for ids in originator_ids:  # one Message ID, the C-MOVE's, per move
        assert len(ids) == 1 and isinstance(next(iter(ids)), int)


async def test_scu_gets_from_orthanc(env: Any, sources: list[Source]) -> None:
    e: Env = await env()
    await e.rest.upload(s.path for s in sources)
    aet = e.deployment.orthanc_config["DicomAet"]
    by_uid = {s.uid: s for s in sources}
    async with scu(e.orthanc_port, aet, contexts=aiodimse.contexts.for_get()) as assoc:
        received = []
        for patient in ("ORTH-A", "ORTH-B", "ORTH-C"):
            study = str(of_patient(sources, patient)[0].header.StudyInstanceUID)
            result = await assoc.get({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
            assert result.ok and result.completed == len(of_patient(sources, patient)), result
            received += result.instances
    assert sorted(i.sop_instance_uid for i in received) == sorted(by_uid)
    identical = 0
    for instance in received:
        source = by_uid[instance.sop_instance_uid]
        identical += assert_same_instance(
            source, instance.read_dataset_bytes(), instance.transfer_syntax
        )
    # At least study A (explicit VR LE, what both sides prefer) comes back unchanged.
    assert identical >= len(of_patient(sources, "ORTH-A"))


async def test_get_failure_from_orthanc_keeps_the_association(
    env: Any, sources: list[Source]
) -> None:
    """Orthanc cannot send an MR when only CT was negotiated: the C-GET fails (its final
    response carries status detail after the command group) and the association lives on."""
    e: Env = await env()
    await e.rest.upload(s.path for s in sources)
    aet = e.deployment.orthanc_config["DicomAet"]
    contexts = aiodimse.contexts.for_get(sop_classes=[CTImageStorage])
    mr = of_patient(sources, "ORTH-B")
    ct = of_patient(sources, "ORTH-A")
    async with scu(e.orthanc_port, aet, contexts=contexts) as assoc:
        query = {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": str(mr[0].header.StudyInstanceUID),
        }
        result = await assoc.get(query, check=False)
        assert result.status.category is StatusCategory.FAILURE
        # Orthanc 1.10 ends the C-GET at the first failed sub-operation.
        assert 1 <= result.failed <= len(mr) and result.completed == 0 and not result.instances
        assert assoc.is_established
        query = {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": str(ct[0].header.StudyInstanceUID),
        }
        result = await assoc.get(query)
        assert result.ok and {i.sop_instance_uid for i in result.instances} == {s.uid for s in ct}
