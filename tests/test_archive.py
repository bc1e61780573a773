"""The archive over the network with aiodimse as the peer: store, replace, atomicity, C-FIND,
C-GET, C-MOVE, limits and concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from _archive_support import instance, save
from pydicom.data import get_testdata_file

import aiodimse
from aiodimse.archive import Archive, ArchiveServer
from aiodimse.archive.index import Record
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.dimse.commands import CStoreRQ
from aiodimse.errors import AssociationRejected, StatusError
from aiodimse.testing.synthetic import make_archive_population, write_study

HOST = "127.0.0.1"
# Query values may break their VR's rules (ranges, wild cards, PS3.4 C.2.2.2); pydicom warns.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """2 patients x 2 studies x 2 series x 3 instances of 8x8 CT/MR images."""
    datasets = make_archive_population(2, 2, 2, 3, rows=8, cols=8, seed="archive-tests")
    return write_study(tmp_path_factory.mktemp("population"), datasets)


def _files(root: Path) -> list[Path]:
    """Every file under the archive's files area (temporary ones included)."""
    return sorted(p for p in (root / "files").rglob("*") if p.is_file())


def _payload(path: Path) -> bytes:
    return dataset_bytes(path, read_part10(path))


def connect(server: ArchiveServer, **kwargs: Any) -> Any:
    return aiodimse.connect(HOST, server.port, calling_ae="TESTSCU", called_ae="QRSCP", **kwargs)


async def store_all(server: ArchiveServer, paths: list[Path]) -> None:
    async with connect(server, contexts=aiodimse.contexts.for_files(paths)) as assoc:
        for path in paths:
            await assoc.store(path)


async def test_stored_instances_are_indexed_and_kept_byte_for_byte(
    tmp_path: Path, population: list[Path]
) -> None:
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        await store_all(server, population)
        archive = server.archive
        assert [archive.count(level) for level in ("PATIENT", "STUDY", "SERIES", "IMAGE")] == [
            2,
            4,
            8,
            24,
        ]
        stored = {p.name: p for p in _files(archive.root)}
        assert len(stored) == 24
        for source in population:
            assert _payload(stored[source.name]) == _payload(source)
    archive.close()


async def test_a_resent_instance_replaces_the_old_one(tmp_path: Path) -> None:
    first = instance(study="s1", sop="x", StudyDescription="before", PatientName="OLD^NAME")
    second = instance(study="s1", sop="x", StudyDescription="after", PatientName="NEW^NAME")
    other = instance(study="s1", sop="y")
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        for ds in (first, other, first, second):
            async with connect(server) as assoc:
                await assoc.store(ds)
        archive = server.archive
        assert archive.count("IMAGE") == 2 and archive.count("STUDY") == 1
        (study,) = archive.query(
            {"QueryRetrieveLevel": "STUDY", "StudyDescription": "", "PatientName": ""}
        )
        assert (study.StudyDescription, str(study.PatientName)) == ("after", "NEW^NAME")
        (row,) = archive.index.db.execute(
            "SELECT COUNT(*) FROM instances WHERE sop_uid = ?", (str(first.SOPInstanceUID),)
        ).fetchall()
        assert row == (1,)
        assert len(_files(archive.root)) == 2
        (path,) = archive.retrieve_paths(
            {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": str(first.SOPInstanceUID)}
        )
        assert pydicom.dcmread(path).StudyDescription == "after"
    archive.close()


async def test_an_instance_resent_with_another_study_moves_and_empty_entities_go(
    tmp_path: Path,
) -> None:
    moved_before = instance(study="old", series="1", sop="m", PatientID="P-OLD")
    stays = instance(study="old", series="2", sop="s", PatientID="P-OLD")
    moved_after = instance(study="new", series="9", sop="m", PatientID="P-NEW")
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        async with connect(server) as assoc:
            for ds in (moved_before, stays, moved_after):
                await assoc.store(ds)
        archive = server.archive
        studies = archive.query(
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": "",
             "NumberOfStudyRelatedInstances": ""}
        )  # fmt: skip
        got = {
            (s.StudyInstanceUID, s.PatientID, int(s.NumberOfStudyRelatedInstances)) for s in studies
        }
        assert got == {
            (stays.StudyInstanceUID, "P-OLD", 1),
            (moved_after.StudyInstanceUID, "P-NEW", 1),
        }
        # The series the instance left is gone; the instance is in its new series only.
        series = archive.query({"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""})
        assert {s.SeriesInstanceUID for s in series} == {
            stays.SeriesInstanceUID,
            moved_after.SeriesInstanceUID,
        }
        assert len(_files(archive.root)) == 2
        # A whole study moving to another patient leaves no empty patient behind.
        async with connect(server) as assoc:
            await assoc.store(instance(study="old", series="2", sop="s", PatientID="P-NEW"))
        patients = archive.query(
            {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}, model="patient"
        )
        assert [p.PatientID for p in patients] == ["P-NEW"]
    archive.close()


async def test_a_failing_index_insert_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        archive = server.archive

        def broken(*args: Any, **kwargs: Any) -> None:
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(archive.index, "upsert", broken)
        async with connect(server) as assoc:
            status = await assoc.store(instance(sop="fails"), check=False)
        assert status.code == 0xA700
        assert _files(archive.root) == []
        assert archive.count() == 0
        monkeypatch.undo()
        async with connect(server) as assoc:
            status = await assoc.store(instance(sop="fails"))
        assert status.code == 0x0000 and archive.count() == 1
    archive.close()


async def test_a_failing_index_insert_on_a_resent_instance_leaves_no_dangling_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        archive = server.archive
        async with connect(server) as assoc:
            await assoc.store(instance(sop="again"))

            def broken(*args: Any, **kwargs: Any) -> None:
                raise OSError("disk full (simulated)")

            monkeypatch.setattr(archive.index, "upsert", broken)
            status = await assoc.store(instance(sop="again"), check=False)
        assert status.code == 0xA700
        # The index never points at a file that is not there.
        for (path,) in archive.index.db.execute("SELECT path FROM instances"):
            assert (archive.root / path).is_file()
        assert not [p for p in _files(archive.root) if p.suffix == ".part"]
    archive.close()


async def test_a_data_set_without_study_uid_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    ds = instance(sop="nostudy")
    del ds.StudyInstanceUID
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        async with connect(server) as assoc:
            status = await assoc.store(ds, check=False)
        assert status.code == 0xC000
        assert _files(server.archive.root) == [] and server.archive.count() == 0
    server.archive.close()


async def test_an_interrupted_transfer_leaves_nothing(tmp_path: Path) -> None:
    ds = instance(sop="cut")
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        assoc = await connect(server)
        context = assoc.context_for(str(ds.SOPClassUID))

        def pieces() -> Iterator[bytes]:
            # Two big pieces go out (the first is sent), then the sender fails.
            yield b"\x08\x00" + b"\x00" * (4 * 1024 * 1024)
            yield b"\x00" * (4 * 1024 * 1024)
            raise RuntimeError("the sender died")

        with pytest.raises(RuntimeError):
            await assoc.exchange.invoke(
                context,
                lambda mid: CStoreRQ(
                    message_id=mid,
                    affected_sop_class_uid=str(ds.SOPClassUID),
                    affected_sop_instance_uid=str(ds.SOPInstanceUID),
                ),
                pieces(),
            )
        for _ in range(200):  # the server sees the abort and discards the writer
            if not server.associations:
                break
            await asyncio.sleep(0.01)
        assert not server.associations
        assert _files(server.archive.root) == []
        assert server.archive.count() == 0
    server.archive.close()


async def test_find_get_and_move_over_the_network(tmp_path: Path, population: list[Path]) -> None:
    receiver = aiodimse.StorageServer(tmp_path / "moved", HOST, 0, ae_title="RECEIVER")
    async with receiver:
        server = ArchiveServer(
            tmp_path / "arch",
            port=0,
            host=HOST,
            destinations={"RECEIVER": (HOST, receiver.port)},
        )
        async with server:
            await store_all(server, population)
            async with connect(server, contexts=aiodimse.contexts.for_get()) as assoc:
                patients = [
                    m
                    async for m in assoc.find(
                        {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": ""},
                        model="patient",
                    )
                ]
                assert len(patients) == 2
                studies = [
                    m
                    async for m in assoc.find(
                        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "",
                         "PatientID": patients[0].PatientID, "RetrieveAETitle": ""}
                    )
                ]  # fmt: skip
                assert len(studies) == 2 and all(s.RetrieveAETitle == "QRSCP" for s in studies)
                study = str(studies[0].StudyInstanceUID)
                result = await assoc.get(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
                    receiver=aiodimse.DirectorySink(tmp_path / "got"),
                )
                assert result.ok and result.completed == 6
                sources = {p.name: p for p in population}
                for got in (tmp_path / "got").iterdir():
                    assert _payload(got) == _payload(sources[got.name])
            async with connect(server) as assoc:
                result = await assoc.move(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
                    "RECEIVER",
                    receiver=receiver,
                )
                assert result.ok and len(result.instances) == 6
                with pytest.raises(StatusError) as caught:
                    await assoc.move(
                        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}, "NOWHERE"
                    )
                assert caught.value.status == 0xA801
                with pytest.raises(StatusError) as caught:
                    await assoc.move({"QueryRetrieveLevel": "STUDY", "PatientID": ""}, "RECEIVER")
                assert caught.value.status == 0xA900
        server.archive.close()
    moved = {p.name for p in (tmp_path / "moved").iterdir()}
    assert moved == {p.name for p in (tmp_path / "got").iterdir()}


async def test_refused_levels_answer_a900_over_the_network(tmp_path: Path) -> None:
    server = ArchiveServer(tmp_path / "arch", port=0, host=HOST)
    async with server, connect(server) as assoc:
        with pytest.raises(StatusError) as caught:
            await assoc.find({"QueryRetrieveLevel": "PATIENT", "PatientID": ""}).collect()
        assert caught.value.status == 0xA900
    server.archive.close()


async def test_calling_ae_allow_list_and_association_limit(tmp_path: Path) -> None:
    server = ArchiveServer(
        tmp_path / "arch", port=0, host=HOST, allowed_calling=["TESTSCU"], max_associations=1
    )
    async with server:
        with pytest.raises(AssociationRejected):
            async with aiodimse.connect(HOST, server.port, calling_ae="STRANGER"):
                pass
        async with connect(server) as first:
            await first.echo()
            with pytest.raises(AssociationRejected):
                async with connect(server):
                    pass
    server.archive.close()


async def test_many_associations_store_at_once(tmp_path: Path) -> None:
    datasets = [instance(study=f"c{a}", sop=f"c{a}-{i}", PatientID=f"C{a % 3}") for a in range(12)
                for i in range(4)]  # fmt: skip
    paths = save(tmp_path / "src", datasets)
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:

        async def one(chunk: list[Path]) -> None:
            async with connect(server, contexts=aiodimse.contexts.for_files(chunk)) as assoc:
                for path in chunk:
                    await assoc.store(path)

        await asyncio.gather(*(one(paths[i : i + 4]) for i in range(0, len(paths), 4)))
        archive = server.archive
        assert (archive.count("PATIENT"), archive.count("STUDY"), archive.count()) == (3, 12, 48)
        assert len(_files(archive.root)) == 48
    archive.close()


def test_the_index_persists_and_ingest_skips_what_is_not_dicom(
    tmp_path: Path, population: list[Path]
) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    with Archive(tmp_path / "arch") as archive:
        assert archive.ingest([*population[:10], tmp_path / "notes.txt"], batch=3) == 10
        assert archive.ingest(population) == 24  # 10 of them again: replaced, not duplicated
    assert (tmp_path / "arch" / "index.sqlite").is_file()
    with Archive(tmp_path / "arch") as archive:
        assert archive.count() == 24 and archive.count("STUDY") == 4
        assert len(_files(archive.root)) == 24
        with pytest.raises(ValueError):
            archive.count("FRAME")


def test_a_failing_ingest_batch_leaves_no_files(
    tmp_path: Path, population: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Archive(tmp_path / "arch") as archive:
        calls = 0
        real = archive.index.upsert

        def fail_on_third(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise OSError("simulated")
            real(*args, **kwargs)

        monkeypatch.setattr(archive.index, "upsert", fail_on_third)
        with pytest.raises(OSError):
            archive.ingest(population[:5])
        assert archive.count() == 0 and _files(archive.root) == []


def test_archive_close_is_idempotent(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "arch")
    archive.close()
    archive.close()
    with pytest.raises(sqlite3.ProgrammingError):
        archive.count()


@pytest.mark.parametrize(
    "syntax",
    [
        aiodimse.uids.IMPLICIT_VR_LITTLE_ENDIAN,
        aiodimse.uids.EXPLICIT_VR_LITTLE_ENDIAN,
        aiodimse.uids.EXPLICIT_VR_BIG_ENDIAN,
    ],
)
def test_directly_encoded_responses_decode_like_the_dataset_ones(
    tmp_path: Path, syntax: str
) -> None:
    from aiodimse.archive.encode import encode_identifier
    from aiodimse.archive.index import plan_query
    from aiodimse.archive.scp import _response_values
    from aiodimse.dicomfile import decode_dataset
    from aiodimse.query import to_dataset

    paths = save(
        tmp_path / "src",
        [instance(sop="u1", PatientName="MÜLLER^ÄNNE", StudyDescription="odd"),
         instance(sop="a2", study="s2", PatientName="DOE^JO", StudyDescription="even")],
    )  # fmt: skip
    with Archive(tmp_path / "arch", ae_title="QRSCP") as archive:
        archive.ingest(paths)
        query = to_dataset(
            {"QueryRetrieveLevel": "IMAGE", "PatientName": "", "StudyInstanceUID": "",
             "SOPInstanceUID": "", "StudyDescription": "", "InstanceNumber": "",
             "ModalitiesInStudy": "", "RetrieveAETitle": "", "PatientAge": "",
             "ReferencedStudySequence": None, "NumberOfStudyRelatedInstances": ""}
        )  # fmt: skip
        plan = plan_query(query, "IMAGE", retrieve_ae_title="QRSCP")
        rows = archive.index.rows(plan)
        assert len(rows) == 2
        ts = aiodimse.uids.transfer_syntax(syntax)
        assert ts is not None
        for row in rows:
            reference = Archive._response(plan, row)
            values, utf8 = _response_values(plan, row)
            data = encode_identifier(values, utf8, ts)
            assert data is not None
            decoded = decode_dataset(data, syntax)
            assert [e.tag for e in decoded] == [e.tag for e in reference]
            for elem in reference:
                assert decoded[elem.tag].VR == elem.VR or ts.is_implicit_vr
                assert str(decoded[elem.tag].value or "") == str(elem.value or ""), elem.keyword


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        # The data set cannot be read: the sender's problem, a retry cannot help (C000).
        (ValueError("a mangled element"), 0xC000),
        (NotImplementedError("Unknown Value Representation 'ZZ'"), 0xC000),
        # We ran out of file descriptors reading it: ours, the sender may retry (A700).
        (OSError(24, "Too many open files"), 0xA700),
        (MemoryError(), 0xA700),
    ],
    ids=["mangled element", "unknown VR", "no file descriptor", "no memory"],
)
async def test_store_failures_get_the_status_that_says_whose_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, expected: int
) -> None:
    """PS3.4 B.2.3: A700 (Refused: out of resources) tells the sender to try again later,
    C000 (Error: cannot understand) that the data set itself is at fault."""
    import aiodimse.archive.scp as archive_scp

    def fails(path: Any, tags: Any) -> Any:
        raise failure

    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        monkeypatch.setattr(archive_scp, "read_header", fails)
        async with connect(server) as assoc:
            status = await assoc.store(instance(sop="x"), check=False)
        assert status.code == expected
        assert _files(server.archive.root) == [] and server.archive.count() == 0
    server.archive.close()


async def test_a_writer_that_cannot_be_opened_for_lack_of_descriptors_is_a700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiodimse.sinks as sinks

    def no_descriptors(*args: Any, **kwargs: Any) -> int:
        raise OSError(24, "Too many open files")

    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        monkeypatch.setattr(sinks.os, "open", no_descriptors)
        async with connect(server) as assoc:
            status = await assoc.store(instance(sop="y"), check=False)
        monkeypatch.undo()
        assert status.code == 0xA700
    server.archive.close()


async def test_a_data_set_the_index_cannot_take_apart_is_c000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the header succeeded but an element in it cannot be made sense of."""
    import aiodimse.archive.scp as archive_scp

    def mangled(cls: Any, header: Any, transfer_syntax: str) -> Any:
        raise ValueError("invalid value in (0010,0030)")

    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        monkeypatch.setattr(archive_scp.Record, "from_header", classmethod(mangled))
        async with connect(server) as assoc:
            status = await assoc.store(instance(sop="z"), check=False)
        assert status.code == 0xC000
        assert _files(server.archive.root) == []
    server.archive.close()


def _deflated_instance(tmp_path: Path, comment_size: int) -> Path:
    """A Deflated Explicit VR Little Endian instance whose Patient Comments (group 0010,
    before the archive stops reading) are ``comment_size`` spaces: it compresses to almost
    nothing."""
    ds = instance(sop=f"deflated{comment_size}")
    ds.add_new(0x00104000, "UT", " " * comment_size)  # Patient Comments, as UT: no limit
    ds.file_meta.TransferSyntaxUID = aiodimse.uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    path = tmp_path / f"deflated-{comment_size}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


async def test_a_deflate_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    """A Deflated instance whose header inflates past the ceiling gets C000 quickly;
    a normal Deflated instance is stored and indexed."""
    bomb = _deflated_instance(tmp_path, 64 * 1024 * 1024)
    assert bomb.stat().st_size < 1024 * 1024
    normal = _deflated_instance(tmp_path, 100)
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        async with connect(server, contexts=aiodimse.contexts.for_files([bomb, normal])) as assoc:
            status = await assoc.store(bomb, check=False)
            assert status.code == 0xC000
            assert (await assoc.store(normal)).code == 0
        assert server.archive.count() == 1
    server.archive.close()


async def test_a_big_c_find_streams_from_the_index(tmp_path: Path) -> None:
    """8,000 matching instances: the archive reads its index in batches as responses go
    out, so the memory it allocates stays a small fraction of the result's size."""
    server = ArchiveServer(tmp_path / "arch", port=0, host=HOST)
    index = server.archive.index
    index.begin()
    for i in range(8_000):
        record = Record(
            sop_instance_uid=f"1.2.826.0.1.3680043.2.1143.9.{i}",
            sop_class_uid=pydicom.uid.CTImageStorage,
            transfer_syntax=pydicom.uid.ExplicitVRLittleEndian,
            patient_id="BIG",
            patient_name="BIG^FIND",
            study_uid="1.2.826.0.1.3680043.2.1143.8",
            series_uid="1.2.826.0.1.3680043.2.1143.7",
            instance_number=str(i),
        )
        index.upsert(record, f"files/x/{i}.dcm", 1000)
    index.commit()
    query = {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": "1.2.826.0.1.3680043.2.1143.8",
        "SeriesInstanceUID": "",
        "SOPInstanceUID": "",
        "InstanceNumber": "",
    }
    async with server, connect(server) as assoc:
        tracemalloc.start()
        try:
            count = 0
            async for _match in assoc.find(query):
                count += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 8_000
    # All rows at once were ~3 MiB of tuples and strings here; a batch is a few hundred.
    assert peak < 1536 * 1024, peak
    server.archive.close()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
async def test_files_gone_behind_the_index_are_named_as_failed(
    tmp_path: Path, population: list[Path], damage: str
) -> None:
    """The index knows the UID of an instance whose file is missing or corrupt: the
    C-GET ends with it in the Failed SOP Instance UID List (PS3.4 C.4.3.1.3.1)."""
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        await store_all(server, population)
        archive = server.archive
        query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": _study_uid(population[0])}
        files = archive.retrieve_paths(query)
        victim = files[0]
        victim_uid = victim.stem
        if damage == "missing":
            victim.unlink()
        else:
            victim.write_bytes(b"not DICOM any more" * 10)
        async with connect(server, contexts=aiodimse.contexts.for_get()) as assoc:
            result = await assoc.get(query, check=False)
        assert result.failed == 1 and result.completed == len(files) - 1
        assert result.failed_instances == [victim_uid]
    server.archive.close()


def _study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


async def test_compressed_instances_come_back_by_c_get(tmp_path: Path) -> None:
    """contexts.for_get() proposes the common compressed syntaxes for the image classes,
    and the archive accepts a C-GET association in the syntaxes it holds: a JPEG and a
    JPEG 2000 instance come back byte for byte, next to an uncompressed one. (One
    compressed syntax per SOP class and association: the one most of the class is held in.)
    """
    names = ["SC_jpeg_no_color_transform.dcm", "MR_small_jp2klossless.dcm"]
    files = [Path(get_testdata_file(n)) for n in names] + [Path(get_testdata_file("CT_small.dcm"))]
    async with ArchiveServer(tmp_path / "arch", port=0, host=HOST) as server:
        await store_all(server, files)
        got = aiodimse.DirectorySink(tmp_path / "got")
        async with connect(server, contexts=aiodimse.contexts.for_get()) as assoc:
            for path in files:
                uid = read_part10(path).sop_instance_uid
                result = await assoc.get(
                    {
                        "QueryRetrieveLevel": "IMAGE",
                        "StudyInstanceUID": _study_uid(path),
                        "SeriesInstanceUID": str(pydicom.dcmread(path).SeriesInstanceUID),
                        "SOPInstanceUID": uid,
                    },
                    receiver=got,
                )
                assert result.ok and [i.sop_instance_uid for i in result.instances] == [uid]
                (instance,) = result.instances
                assert instance.transfer_syntax == read_part10(path).transfer_syntax_uid
                assert instance.path is not None and _payload(instance.path) == _payload(path)
    server.archive.close()
