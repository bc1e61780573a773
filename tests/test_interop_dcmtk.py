"""aiodimse against DCMTK, both ways: DCMTK's echoscu/storescu/findscu against an aiodimse
server, and the aiodimse SCU against DCMTK's storescp and dcmqrscp.

DCMTK tools run by absolute path with ``TCP_NODELAY=1`` (``aiodimse.testing.peers``); SCU
tools run as subprocesses awaited on the test's loop, so that the aiodimse server on the
same loop keeps serving them. Servers listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from _association_support import (
    LOCAL,
    StoredFiles,
    assert_dcmdump_reads,
    assert_same_content,
    assert_stored_exactly,
    data_set_of,
    exact_contexts,
    pydicom_file,
    pydicom_files,
    sop_instance_of,
    transfer_syntax_of,
    wire_data_set,
)
from _settings import require_dcmtk
from pydicom import Dataset, dcmread

import aiodimse
from aiodimse import contexts, uids
from aiodimse.dicomfile import read_part10
from aiodimse.requests import FindRequest
from aiodimse.results import StoredInstance
from aiodimse.sinks import DirectorySink, StorageHandler
from aiodimse.testing.peers import PeerProcess, run_dcmtk, run_dcmtk_async
from aiodimse.testing.synthetic import make_ct_instance, make_study, write_study

pytestmark = pytest.mark.interop

QUICK = aiodimse.Timeouts(connect=5, acse=10, dimse=10)
ILE = uids.IMPLICIT_VR_LITTLE_ENDIAN
ELE = uids.EXPLICIT_VR_LITTLE_ENDIAN
BE = uids.EXPLICIT_VR_BIG_ENDIAN
DEFLATED = uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN


async def dcmtk(tool: str, *args: str | Path | int, timeout: float = 60) -> tuple[int, str]:
    """Run a DCMTK tool without blocking the loop (the aiodimse peer runs on it)."""
    require_dcmtk(tool)
    return await run_dcmtk_async(tool, *args, timeout=timeout)


def dcmtk_canonical(directory: Path) -> list[Path]:
    """Give every file in ``directory`` a new SOP Instance UID with DCMTK's dcmodify.

    DCMTK's SCUs read a file and write its data set again when they send it; a file that
    DCMTK itself wrote comes out of that unchanged, so what storescu sends is, byte for
    byte, the data set of the file in the directory. (New UIDs: pydicom's MR_small files
    share one.)
    """
    files = sorted(directory.iterdir())
    result = run_dcmtk("dcmodify", "-nb", "-gin", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    return files


def copy_pydicom(names: Iterable[str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (directory / f"{i:02d}_{name}").write_bytes(pydicom_file(name).read_bytes())


def mixed_directory(directory: Path) -> list[Path]:
    """CT and MR files in every native syntax: pydicom's real files and synthetic ones."""
    copy_pydicom(
        ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"],
        directory,
    )
    synthetic = [
        make_ct_instance(seed="dcmtk-1", rows=32, cols=32, transfer_syntax=ILE),
        make_ct_instance(seed="dcmtk-2", rows=32, cols=32, modality="MR", transfer_syntax=BE),
        make_ct_instance(seed="dcmtk-3", rows=32, cols=32, transfer_syntax=DEFLATED),
        make_ct_instance(seed="dcmtk-4", rows=32, cols=32, modality="MR", transfer_syntax=ELE),
    ]
    write_study(directory, synthetic)
    return dcmtk_canonical(directory)


class KeepEverything:
    """A listener that moves each stored file aside as it arrives (before the C-STORE
    response), so that every arrival is kept even when SOP Instance UIDs repeat."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.kept: list[Path] = []
        self._n = itertools.count()

    def __call__(self, instance: StoredInstance) -> None:
        assert instance.path is not None
        self.kept.append(instance.path.rename(self.directory / f"{next(self._n):03d}.dcm"))


def check_arrivals(kept: list[Path], originals: list[Path]) -> dict[str, list[Path]]:
    """Every original arrived once; a copy in the original's syntax is byte-identical, a
    converted one has the same content. Returns the originals kept exactly, by syntax."""
    by_uid = {sop_instance_of(p): p for p in originals}
    assert sorted(sop_instance_of(k) for k in kept) == sorted(by_uid)
    exact: dict[str, list[Path]] = {}
    for copy in kept:
        original = by_uid[sop_instance_of(copy)]
        if transfer_syntax_of(copy) == transfer_syntax_of(original):
            assert_stored_exactly(copy, original)
            exact.setdefault(transfer_syntax_of(original), []).append(original)
        else:
            assert_same_content(copy, original)
    assert_dcmdump_reads(kept)
    for copy in kept:
        assert dcmread(copy).SOPInstanceUID == sop_instance_of(copy)
    return exact


# -- DCMTK SCUs -> aiodimse server -------------------------------------------------------------


async def test_echoscu(tmp_path: Path) -> None:
    async with aiodimse.StorageServer(
        tmp_path, LOCAL, 0, ae_title="AIOSCP", check_called_ae=True, timeouts=QUICK
    ) as scp:
        rc, out = await dcmtk(
            "echoscu", "-v", "-aet", "DCMTKSCU", "-aec", "AIOSCP", LOCAL, scp.port
        )
        assert rc == 0, out
        assert "Received Echo Response (Success)" in out
        rc, out = await dcmtk("echoscu", "-aet", "DCMTKSCU", "-aec", "SOMEONE", LOCAL, scp.port)
        assert rc != 0
        assert "Called AE Title Not Recognized" in out


# storescu's network syntax options (all with -R: one proposal per SOP class and syntax
# found in the files) and, for each, the original syntaxes that must arrive untouched
# (storescu proposes the chosen syntax alone in one context and the rest in another; the
# aiodimse SCP takes what is proposed alone, and prefers explicit VR little endian).
STORESCU_OPTIONS: dict[str, tuple[list[str], set[str]]] = {
    "default": ([], {ELE, ILE}),
    "+xd deflated": (["-xd"], {DEFLATED}),
    "+xb big endian": (["-xb"], {BE}),
    "+xi implicit": (["-xi"], {ILE}),
    "+xs jpeg lossless": (["-xs"], {ELE}),
}


@pytest.mark.parametrize("option", list(STORESCU_OPTIONS))
async def test_storescu_directory(tmp_path: Path, option: str) -> None:
    args, kept_as_is = STORESCU_OPTIONS[option]
    originals = mixed_directory(tmp_path / "src")
    keep = KeepEverything(tmp_path / "kept")
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIOSCP", timeouts=QUICK
    ) as scp:
        scp.add_listener(keep)
        rc, out = await dcmtk(
            "storescu", "-R", *args, "-aec", "AIOSCP", "+sd", LOCAL, scp.port, tmp_path / "src"
        )
        assert rc == 0, out
    exact = check_arrivals(keep.kept, originals)
    for syntax in kept_as_is:
        expected = [p for p in originals if transfer_syntax_of(p) == syntax]
        assert expected and sorted(exact.get(syntax, [])) == sorted(expected), syntax
    assert list((tmp_path / "in").iterdir()) == []  # every file was moved aside


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("MR_small_RLE.dcm", "-xr"),
        ("MR_small_jpeg_ls_lossless.dcm", "-xt"),
        ("MR_small_jp2klossless.dcm", "-xv"),
    ],
)
async def test_storescu_compressed_file_arrives_as_is(
    tmp_path: Path, name: str, option: str
) -> None:
    copy_pydicom([name], tmp_path / "src")
    (original,) = dcmtk_canonical(tmp_path / "src")
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIOSCP", timeouts=QUICK
    ) as scp:
        rc, out = await dcmtk("storescu", "-R", option, "-aec", "AIOSCP", LOCAL, scp.port, original)
        assert rc == 0, out
    (copy,) = (tmp_path / "in").glob("*.dcm")
    assert transfer_syntax_of(copy) == transfer_syntax_of(original)
    syntax = uids.transfer_syntax(transfer_syntax_of(copy))
    assert syntax is not None and syntax.is_encapsulated
    assert_stored_exactly(copy, original)
    assert_dcmdump_reads([copy])


class StoreAndFind(StorageHandler):
    """Stores into a directory and answers C-FIND from the files stored there."""

    def __init__(self, directory: Path) -> None:
        super().__init__(DirectorySink(directory))
        self.directory = directory
        self.requests: list[FindRequest] = []

    async def on_find(self, request: FindRequest) -> Any:
        self.requests.append(request)
        return StoredFiles(sorted(self.directory.glob("*.dcm"))).match(request.identifier)


def find_keys(level: str, **keys: str) -> list[str]:
    out = ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        out += ["-k", f"{key}={value}" if value else key]
    return out


def responses(directory: Path) -> list[Dataset]:
    return [dcmread(p) for p in sorted(directory.glob("rsp*.dcm"))]


async def test_findscu_against_stored_files(tmp_path: Path) -> None:
    study_a = make_study(3, rows=8, cols=8, seed="fs-a", patient_id="PID-A", series_count=2)
    study_b = make_study(
        2, rows=8, cols=8, seed="fs-b", patient_id="PID-B", patient_name="ROE^RICHARD"
    )
    files = write_study(tmp_path / "src", study_a + study_b)
    handler = StoreAndFind(tmp_path / "db")
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="AIOQR", timeouts=QUICK) as qr:
        rc, out = await dcmtk("storescu", "-aec", "AIOQR", LOCAL, qr.port, *files)
        assert rc == 0, out

        async def findscu(name: str, model: str, keys: list[str]) -> list[Dataset]:
            out_dir = tmp_path / name
            out_dir.mkdir()
            rc, out = await dcmtk(
                "findscu", model, "-aec", "AIOQR", "-X", "-od", out_dir, *keys, LOCAL, qr.port
            )
            assert rc == 0, out
            return responses(out_dir)

        patients = await findscu(
            "patients", "-P", find_keys("PATIENT", PatientID="PID-*", PatientName="")
        )
        studies = await findscu(
            "studies",
            "-S",
            find_keys("STUDY", PatientID="PID-B", StudyInstanceUID="", PatientName=""),
        )
        series = await findscu(
            "series",
            "-S",
            find_keys(
                "SERIES",
                StudyInstanceUID=str(study_a[0].StudyInstanceUID),
                SeriesInstanceUID="",
                SeriesNumber="",
            ),
        )
        images = await findscu(
            "images",
            "-P",
            find_keys(
                "IMAGE",
                PatientID="PID-A",
                StudyInstanceUID="",
                SeriesInstanceUID="",
                SOPInstanceUID="",
            ),
        )
        nothing = await findscu("nothing", "-P", find_keys("PATIENT", PatientID="NOBODY"))
    assert {(str(p.PatientID), str(p.PatientName)) for p in patients} == {
        ("PID-A", "DOE^JANE"),
        ("PID-B", "ROE^RICHARD"),
    }
    assert [str(s.StudyInstanceUID) for s in studies] == [str(study_b[0].StudyInstanceUID)]
    assert str(studies[0].PatientName) == "ROE^RICHARD"
    assert {str(s.SeriesInstanceUID) for s in series} == {
        str(ds.SeriesInstanceUID) for ds in study_a
    }
    assert sorted(int(s.SeriesNumber) for s in series) == [1, 2]
    assert {str(i.SOPInstanceUID) for i in images} == {str(ds.SOPInstanceUID) for ds in study_a}
    assert all(i.QueryRetrieveLevel == "IMAGE" for i in images)
    assert nothing == []
    assert [r.sop_class_uid for r in handler.requests] == [
        uids.PATIENT_ROOT_QR_FIND,
        uids.STUDY_ROOT_QR_FIND,
        uids.STUDY_ROOT_QR_FIND,
        uids.PATIENT_ROOT_QR_FIND,
        uids.PATIENT_ROOT_QR_FIND,
    ]


class ManyUntilCancelled:
    """Many matches, one at a time; after the second it waits (bounded) for C-CANCEL."""

    def __init__(self) -> None:
        self.saw_cancel = False
        self.sent = 0

    async def on_find(self, request: FindRequest) -> Any:
        for i in range(100):
            ds = Dataset()
            ds.QueryRetrieveLevel = "PATIENT"
            ds.PatientID = f"P{i:03d}"
            yield ds
            self.sent += 1
            if i >= 1:
                try:
                    await asyncio.wait_for(request.wait_cancelled(), 10)
                except TimeoutError:
                    pass
                self.saw_cancel = request.cancelled
                if request.cancelled:
                    return


async def test_findscu_cancel(tmp_path: Path) -> None:
    handler = ManyUntilCancelled()
    async with aiodimse.Server(handler, LOCAL, 0, ae_title="AIOQR", timeouts=QUICK) as qr:
        rc, out = await dcmtk(
            "findscu", "-v", "-P", "--cancel", "2", "-aec", "AIOQR",
            *find_keys("PATIENT", PatientID=""), LOCAL, qr.port,
        )  # fmt: skip
        assert rc == 0, out
    assert handler.saw_cancel
    assert handler.sent == 2
    # PS3.4 C.4.1.1.4: a cancelled C-FIND ends with status FE00.
    assert "Cancel" in out


# -- aiodimse SCU -> DCMTK storescp ------------------------------------------------------------


async def test_scu_against_storescp(
    tmp_path: Path, storescp_peer: Callable[..., PeerProcess]
) -> None:
    # +B: storescp writes each data set exactly as it arrived; +uf: one file per arrival
    # (the MR_small files share a SOP Instance UID).
    peer = storescp_peer(aet="DCMTKSCP", extra=["+B", "+uf"])
    synthetic = make_study(4, rows=32, cols=32, seed="to-storescp", series_count=2)
    originals = pydicom_files() + write_study(tmp_path / "src", synthetic)
    async with aiodimse.connect(
        LOCAL, peer.port, called_ae="DCMTKSCP", contexts=exact_contexts(originals), timeouts=QUICK
    ) as assoc:
        assert (await assoc.echo()).code == 0x0000
        for path in originals:
            assert (await assoc.store(path)).code == 0x0000
        await assoc.store(dcmread(pydicom_file("CT_small.dcm")))  # a Dataset too
    assert peer.data_dir is not None
    received = sorted(peer.data_dir.iterdir())
    assert len(received) == len(originals) + 1
    by_key = {(sop_instance_of(p), transfer_syntax_of(p)): p for p in originals}
    for copy in received:
        key = (sop_instance_of(copy), transfer_syntax_of(copy))
        if key in by_key:
            # The data set storescp received is the original's, byte for byte.
            assert data_set_of(copy) == wire_data_set(by_key[key]), copy
        else:
            assert_same_content(copy, pydicom_file("CT_small.dcm"))
    assert {(sop_instance_of(c), transfer_syntax_of(c)) for c in received} >= set(by_key)


async def test_scu_against_storescp_conversion(
    tmp_path: Path, storescp_peer: Callable[..., PeerProcess]
) -> None:
    # storescp without +xa accepts the uncompressed syntaxes; proposing the default storage
    # syntaxes, big endian and deflated files are converted to what it chose.
    peer = storescp_peer(aet="DCMTKSCP", accept_all=False, extra=["+uf"])
    originals = [pydicom_file("MR_small_bigendian.dcm"), pydicom_file("image_dfl.dcm")]
    async with aiodimse.connect(
        LOCAL,
        peer.port,
        called_ae="DCMTKSCP",
        contexts=contexts.for_files(originals),
        timeouts=QUICK,
    ) as assoc:
        for path in originals:
            await assoc.store(path)
    assert peer.data_dir is not None
    received = sorted(peer.data_dir.iterdir())
    assert len(received) == 2
    for copy in received:
        original = next(p for p in originals if sop_instance_of(p) == sop_instance_of(copy))
        assert_same_content(copy, original)


# -- aiodimse SCU -> DCMTK dcmqrscp ------------------------------------------------------------


async def test_scu_against_dcmqrscp(
    tmp_path: Path, dcmqrscp_peer: Callable[..., PeerProcess]
) -> None:
    peer = dcmqrscp_peer(aet="DCMQR")
    study_a = make_study(4, rows=16, cols=16, seed="qr-a", patient_id="QR-A", series_count=2)
    study_b = make_study(2, rows=16, cols=16, seed="qr-b", patient_id="QR-B", modality="MR")
    files = write_study(tmp_path / "src", study_a + study_b) + [pydicom_file("CT_small.dcm")]
    ct_small = dcmread(pydicom_file("CT_small.dcm"), stop_before_pixels=True)

    # dcmqrscp checks the called AE title, and says so.
    with pytest.raises(aiodimse.AssociationRejected, match="called-AE-title-not-recognized"):
        await aiodimse.connect(LOCAL, peer.port, called_ae="WRONG", timeouts=QUICK)

    async with aiodimse.connect(
        LOCAL,
        peer.port,
        called_ae="DCMQR",
        contexts=contexts.for_files(files) + contexts.query_retrieve(move=False, get=False),
        timeouts=QUICK,
    ) as assoc:
        assert (await assoc.echo()).code == 0x0000
        for path in files:
            assert (await assoc.store(path)).code == 0x0000

        async def find(query: dict[str, str], model: str = "patient") -> list[Dataset]:
            return await assoc.find(query, model=model).collect()

        patients = await find({"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": ""})
        studies = await find(
            {"QueryRetrieveLevel": "STUDY", "PatientID": "QR-A", "StudyInstanceUID": ""}
        )
        series = await find(
            {
                "QueryRetrieveLevel": "SERIES",
                "PatientID": "QR-A",
                "StudyInstanceUID": str(study_a[0].StudyInstanceUID),
                "SeriesInstanceUID": "",
                "Modality": "",
            }
        )
        # IMAGE level: dcmqrscp wants the study and series keys present (empty is fine).
        images = await find(
            {
                "QueryRetrieveLevel": "IMAGE",
                "PatientID": "QR-B",
                "StudyInstanceUID": "",
                "SeriesInstanceUID": "",
                "SOPInstanceUID": "",
            }
        )
        study_root = await find(
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": "QR-*"},
            model="study",
        )
    # dcmqrscp pads PN values with a space.
    assert {(str(p.PatientID), str(p.PatientName).strip()) for p in patients} == {
        ("QR-A", "DOE^JANE"),
        ("QR-B", "DOE^JANE"),
        (str(ct_small.PatientID), str(ct_small.PatientName).strip()),
    }
    assert [str(s.StudyInstanceUID) for s in studies] == [str(study_a[0].StudyInstanceUID)]
    assert {str(s.SeriesInstanceUID) for s in series} == {str(d.SeriesInstanceUID) for d in study_a}
    assert {str(s.Modality) for s in series} == {"CT"}
    assert {str(i.SOPInstanceUID) for i in images} == {str(d.SOPInstanceUID) for d in study_b}
    assert {str(s.StudyInstanceUID) for s in study_root} == {
        str(study_a[0].StudyInstanceUID),
        str(study_b[0].StudyInstanceUID),
    }
    # What dcmqrscp keeps is what was sent.
    assert peer.data_dir is not None
    stored = {
        read_part10(p).sop_instance_uid
        for p in peer.data_dir.rglob("*")
        if p.is_file() and p.suffix != ".dat" and _is_part10(p)
    }
    assert {str(d.SOPInstanceUID) for d in study_a + study_b} <= stored


def _is_part10(path: Path) -> bool:
    with path.open("rb") as fp:
        return fp.read(132)[128:] == b"DICM"
