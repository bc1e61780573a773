"""Tests of Part 10 file handling and transfer syntax (re-)encoding."""

from __future__ import annotations

import io
import os
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from _settings import require_dcmtk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from aiodimse.completeness import TruncatedDatasetError, check_complete
from aiodimse.dicomfile import (
    SMALL_FILE,
    InvalidDatasetError,
    NotDicomError,
    Part10Info,
    build_file_meta,
    convert_dataset_bytes,
    dataset_bytes,
    decode_dataset,
    encode_dataset,
    read_part10,
)
from aiodimse.errors import AiodimseError, TransferSyntaxError
from aiodimse.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000,
    JPEG_BASELINE_8BIT,
    NATIVE_TRANSFER_SYNTAXES,
)

NATIVE_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
]
ENCAPSULATED_FILES = ["JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_rle.dcm"]
ALL_FILES = NATIVE_FILES + ENCAPSULATED_FILES


def _testfile(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom ships {name}"
    return str(path)


def _pydicom_dataset_offset(path: str) -> int:
    """Where pydicom's own reader stops reading the file meta."""
    with open(path, "rb") as fp:
        pydicom.filereader.read_preamble(fp, False)
        pydicom.filereader._read_file_meta_info(fp)
        return fp.tell()


def _dcmdump(path: Path) -> str:
    """DCMTK's dump of ``path``, which must succeed (skipped without DCMTK, failed in CI)."""
    dcmdump = require_dcmtk("dcmdump")
    done = subprocess.run([dcmdump, "-q", str(path)], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("latin-1")


# -- read_part10 -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILES)
def test_read_part10_agrees_with_pydicom(name: str) -> None:
    path = _testfile(name)
    info = read_part10(path)
    ref = pydicom.dcmread(path)
    meta = ref.file_meta
    assert info.sop_class_uid == meta.MediaStorageSOPClassUID
    assert info.sop_instance_uid == meta.MediaStorageSOPInstanceUID
    assert info.transfer_syntax_uid == meta.TransferSyntaxUID
    assert info.dataset_offset == _pydicom_dataset_offset(path)
    assert info.file_size == os.path.getsize(path)
    assert info.dataset_length == info.file_size - info.dataset_offset
    assert info.implementation_class_uid == meta.get("ImplementationClassUID")
    assert {e.tag for e in info.meta} == {int(tag) for tag in meta.keys()}  # noqa: SIM118

    # The dataset really starts at that offset: pydicom reads the same dataset from there.
    with open(path, "rb") as fp:
        fp.seek(info.dataset_offset)
        raw = fp.read()
    ts = ref.file_meta.TransferSyntaxUID
    if ts.is_deflated:
        raw = zlib.decompress(raw, -zlib.MAX_WBITS)
    from_offset = read_dataset(io.BytesIO(raw), ts.is_implicit_VR, ts.is_little_endian)
    assert from_offset == ref


def test_read_part10_reads_only_the_head(tmp_path: Path) -> None:
    """A 32 MiB file costs one small read: the dataset is not read."""
    path = tmp_path / "big.dcm"
    head = build_file_meta("1.2.840.10008.5.1.4.1.1.7", "1.2.3", EXPLICIT_VR_LITTLE_ENDIAN)
    path.write_bytes(head + bytes(32 << 20))
    read_sizes: list[int] = []
    real_open = open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        fp = real_open(*args, **kwargs)
        real_read = fp.read

        def read(size: int = -1) -> bytes:
            data: bytes = real_read(size)
            read_sizes.append(len(data))
            return data

        fp.read = read
        return fp

    with mock.patch("aiodimse.dicomfile.open", counting_open, create=True):
        info = read_part10(path)
    assert info.dataset_offset == len(head)
    assert info.dataset_length == 32 << 20
    assert sum(read_sizes) <= 64 * 1024


@pytest.mark.parametrize("name", ALL_FILES)
def test_read_part10_whole_agrees_and_keeps_small_files(name: str) -> None:
    """``whole=True`` learns the same from one read, and keeps the bytes of a small file
    (what the C-STORE SCU then checks and sends) but never of a large one."""
    path = _testfile(name)
    head, whole = read_part10(path), read_part10(path, whole=True)
    assert whole == head  # content takes no part in equality: compare it below
    raw = Path(path).read_bytes()
    if len(raw) <= SMALL_FILE:
        assert whole.content == raw
    else:
        assert whole.content is None
    assert head.content is None


@pytest.mark.parametrize("size", [9 * 1024, SMALL_FILE + 4096])
def test_a_cut_short_copy_is_found_whole_or_not(tmp_path: Path, size: int) -> None:
    """The completeness walk finds a cut-short copy from the bytes read whole (small) and
    from the file itself (large), and passes the whole file both ways."""
    pixels = size - 512
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "CUT"
    ds.PixelData = bytes(pixels)
    ds["PixelData"].VR = "OB"
    body = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    meta = build_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, EXPLICIT_VR_LITTLE_ENDIAN)
    whole, cut = tmp_path / "whole.dcm", tmp_path / "cut.dcm"
    whole.write_bytes(meta + body)
    cut.write_bytes((meta + body)[:-100])
    for read_whole in (True, False):
        check_complete(whole, read_part10(whole, whole=read_whole))
        info = read_part10(cut, whole=read_whole)
        assert (info.content is not None) == (read_whole and size <= SMALL_FILE)
        with pytest.raises(TruncatedDatasetError, match="ends early, in \\(7FE0,0010\\)"):
            check_complete(cut, info)


def test_large_file_meta_is_read_across_chunks(tmp_path: Path) -> None:
    """A file meta larger than the first read (a long private information value)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    meta.ImplementationClassUID = UID("1.2.3")
    meta.PrivateInformationCreatorUID = UID("1.2.3.5")
    meta.PrivateInformation = b"\x01" * 20000
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    ds = Dataset()
    ds.PatientName = "LARGE^META"
    body = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    path = tmp_path / "large_meta.dcm"
    path.write_bytes(bytes(128) + b"DICM" + fp.getvalue() + body)
    info = read_part10(path)
    assert info.sop_instance_uid == "1.2.3.4"
    assert info.dataset_offset == 132 + len(fp.getvalue())
    assert dataset_bytes(path, info) == body


@pytest.mark.parametrize("name", ["CT_small.dcm", "image_dfl.dcm"])
def test_dataset_bytes(name: str) -> None:
    path = _testfile(name)
    info = read_part10(path)
    with open(path, "rb") as fp:
        expected = fp.read()[info.dataset_offset :]
    assert dataset_bytes(path, info) == expected


def _not_dicom_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    text = tmp_path / "notes.txt"
    text.write_text("just some text, long enough to have 132 bytes ... " * 5)
    yield "text", text
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    yield "empty", empty
    yield "no preamble", Path(_testfile("no_meta.dcm"))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(Path(_testfile("CT_small.dcm")).read_bytes()[:140])
    yield "truncated meta", truncated
    yield "meta without transfer syntax", Path(_testfile("meta_missing_tsyntax.dcm"))
    undefined = tmp_path / "undefined.dcm"
    undefined.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\xff")
    yield "undefined length in meta", undefined
    implicit = tmp_path / "implicit_meta.dcm"
    implicit.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00\x04\x00\x00\x001.2\x00")
    yield "implicit VR meta", implicit
    yield "directory", tmp_path


def test_not_dicom_raises_not_dicom_error(tmp_path: Path) -> None:
    for label, path in _not_dicom_files(tmp_path):
        with pytest.raises(NotDicomError) as caught:
            read_part10(path)
        assert str(path) in str(caught.value), label
        assert isinstance(caught.value, AiodimseError)
    with pytest.raises(NotDicomError, match="Transfer Syntax"):
        read_part10(_testfile("meta_missing_tsyntax.dcm"))


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_part10(tmp_path / "nope.dcm")


# -- build_file_meta -------------------------------------------------------------------------


def test_file_meta_bytes_match_pydicom() -> None:
    """Byte for byte what pydicom writes for the same file meta (PS3.10 7.1)."""
    for source_ae, uid in (("STORESCU", "1.2.3.4"), (None, "1.2.3.45"), ("ODD", "1.2")):
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
        meta.MediaStorageSOPInstanceUID = UID(uid)
        meta.TransferSyntaxUID = UID(IMPLICIT_VR_LITTLE_ENDIAN)
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        if source_ae is not None:
            meta.SourceApplicationEntityTitle = source_ae
        fp = DicomBytesIO()
        write_file_meta_info(fp, meta, enforce_standard=True)
        ours = build_file_meta(
            "1.2.840.10008.5.1.4.1.1.2", uid, IMPLICIT_VR_LITTLE_ENDIAN, source_ae=source_ae
        )
        assert ours[:128] == bytes(128)
        assert ours[128:132] == b"DICM"
        assert ours[132:] == fp.getvalue()


def test_file_meta_options() -> None:
    plain = build_file_meta(
        "1.2", "1.3", EXPLICIT_VR_LITTLE_ENDIAN, implementation_version_name=None
    )
    path_info = _info_of(plain)
    assert path_info.meta_text(0x00020013) is None
    assert path_info.source_ae_title is None
    custom = build_file_meta(
        "1.2", "1.3", EXPLICIT_VR_LITTLE_ENDIAN, implementation_class_uid="1.2.3.4", source_ae="ME"
    )
    custom_info = _info_of(custom)
    assert custom_info.implementation_class_uid == "1.2.3.4"
    assert custom_info.source_ae_title == "ME"
    with pytest.raises(ValueError):
        build_file_meta("1.2", "1.\u00e9", EXPLICIT_VR_LITTLE_ENDIAN)


def _info_of(blob: bytes) -> Part10Info:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".dcm", delete=False) as fp:
        fp.write(blob)
    try:
        return read_part10(fp.name)
    finally:
        os.unlink(fp.name)


@pytest.mark.parametrize("name", ALL_FILES)
def test_meta_plus_dataset_bytes_is_a_valid_file(name: str, tmp_path: Path) -> None:
    """What a storage SCP writes: our meta + the dataset bytes as received."""
    path = _testfile(name)
    info = read_part10(path)
    out = tmp_path / "out.dcm"
    out.write_bytes(
        build_file_meta(
            info.sop_class_uid,
            info.sop_instance_uid,
            info.transfer_syntax_uid,
            source_ae="STORESCU",
        )
        + dataset_bytes(path, info)
    )
    original = pydicom.dcmread(path)
    written = pydicom.dcmread(out)
    assert written == original
    assert written.file_meta.MediaStorageSOPClassUID == info.sop_class_uid
    assert written.file_meta.MediaStorageSOPInstanceUID == info.sop_instance_uid
    assert written.file_meta.TransferSyntaxUID == info.transfer_syntax_uid
    assert written.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert written.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert written.file_meta.SourceApplicationEntityTitle == "STORESCU"
    assert read_part10(out).dataset_offset == _pydicom_dataset_offset(str(out))
    dump = _dcmdump(out)
    assert "STORESCU" in dump
    assert info.sop_instance_uid in dump


# -- encode / decode -------------------------------------------------------------------------


def _assert_equivalent(a: Dataset, b: Dataset) -> None:
    """Same elements and values; VRs lost to implicit VR (UN, OB/OW) are not compared."""
    assert sorted(a.keys()) == sorted(b.keys())
    for ea in a:
        eb = b[ea.tag]
        if ea.VR == "SQ":
            assert eb.VR == "SQ" and len(ea.value) == len(eb.value)
            for ia, ib in zip(ea.value, eb.value, strict=True):
                _assert_equivalent(ia, ib)
        elif "UN" in (ea.VR, eb.VR):
            continue  # a private element read from implicit VR: its VR is unknown
        elif {ea.VR, eb.VR} & {"OB", "OW"}:
            assert ea.value == eb.value, ea.tag
        else:
            assert (ea.VR, ea.value) == (eb.VR, eb.value), ea.tag


@pytest.mark.parametrize("target", NATIVE_TRANSFER_SYNTAXES)
@pytest.mark.parametrize("name", NATIVE_FILES)
def test_encode_decode_round_trip(name: str, target: str) -> None:
    ds = pydicom.dcmread(_testfile(name))
    encoded = encode_dataset(ds, target)
    decoded = decode_dataset(encoded, target)
    assert decoded.file_meta.TransferSyntaxUID == target
    # Compared in one byte order: both re-encoded as explicit VR little endian.
    _assert_equivalent(
        decode_dataset(
            encode_dataset(decoded, EXPLICIT_VR_LITTLE_ENDIAN), EXPLICIT_VR_LITTLE_ENDIAN
        ),
        decode_dataset(encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN), EXPLICIT_VR_LITTLE_ENDIAN),
    )
    if "PixelData" in ds:
        import numpy as np  # a test dependency: pixel data compared as arrays

        assert np.array_equal(decoded.pixel_array, ds.pixel_array)


@pytest.mark.parametrize("target", NATIVE_TRANSFER_SYNTAXES)
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm"])
def test_conversion_there_and_back_is_byte_exact(name: str, target: str) -> None:
    path = _testfile(name)
    info = read_part10(path)
    data = dataset_bytes(path, info)
    there = convert_dataset_bytes(data, info.transfer_syntax_uid, target)
    assert convert_dataset_bytes(there, target, info.transfer_syntax_uid) == data


def test_deflate_is_raw_deflate_of_explicit_le(tmp_path: Path) -> None:
    """PS3.5 A.5: RFC 1951 deflate of the explicit VR little endian encoding, even length."""
    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    deflated = encode_dataset(ds, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    assert len(deflated) % 2 == 0
    explicit = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(deflated) == explicit
    assert len(deflated) < len(explicit)
    out = tmp_path / "deflated.dcm"
    out.write_bytes(
        build_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
        + deflated
    )
    assert pydicom.dcmread(out) == ds
    _dcmdump(out)


def test_big_endian_matches_the_reference_file() -> None:
    """Our big endian encoding of MR_small decodes to the pixels of pydicom's BE file."""
    import numpy as np  # a test dependency: pixel data compared as arrays

    le = pydicom.dcmread(_testfile("MR_small.dcm"))
    be_ref = pydicom.dcmread(_testfile("MR_small_bigendian.dcm"))
    ours = encode_dataset(le, EXPLICIT_VR_BIG_ENDIAN)
    be_read = read_dataset(io.BytesIO(ours), False, False)
    assert be_read["PixelData"].value == be_ref["PixelData"].value  # raw big endian words
    be_read.file_meta = FileMetaDataset()
    be_read.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_BIG_ENDIAN)
    assert np.array_equal(be_read.pixel_array, le.pixel_array)


def test_encapsulated_pass_through() -> None:
    path = _testfile("JPEG2000.dcm")
    info = read_part10(path)
    data = dataset_bytes(path, info)
    ds = pydicom.dcmread(path)
    assert encode_dataset(ds, JPEG_2000) == data
    assert encode_dataset(decode_dataset(data, JPEG_2000), JPEG_2000) == data


def test_dataset_without_pixel_data_goes_into_any_syntax() -> None:
    ds = pydicom.dcmread(_testfile("test-SR.dcm"))
    as_jpeg = encode_dataset(ds, JPEG_BASELINE_8BIT)
    assert as_jpeg == encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)  # PS3.5 A.4
    assert decode_dataset(as_jpeg, JPEG_BASELINE_8BIT) == ds
    assert convert_dataset_bytes(as_jpeg, JPEG_BASELINE_8BIT, JPEG_2000) == as_jpeg


@pytest.mark.parametrize(
    ("name", "target", "words"),
    [
        ("JPEG2000.dcm", EXPLICIT_VR_LITTLE_ENDIAN, ("JPEG 2000", "Explicit VR Little Endian")),
        ("JPEG2000.dcm", IMPLICIT_VR_LITTLE_ENDIAN, ("JPEG 2000", "Implicit VR Little Endian")),
        ("JPEG2000.dcm", JPEG_BASELINE_8BIT, ("JPEG 2000", "JPEG Baseline")),
        ("CT_small.dcm", JPEG_BASELINE_8BIT, ("Explicit VR Little Endian", "JPEG Baseline")),
        ("SC_rgb_rle.dcm", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, ("RLE", "Deflated")),
    ],
)
def test_impossible_encodings_raise(name: str, target: str, words: tuple[str, str]) -> None:
    path = _testfile(name)
    ds = pydicom.dcmread(path)
    with pytest.raises(TransferSyntaxError) as caught:
        encode_dataset(ds, target)
    for word in words:
        assert word in str(caught.value)
    info = read_part10(path)
    with pytest.raises(TransferSyntaxError):
        convert_dataset_bytes(dataset_bytes(path, info), info.transfer_syntax_uid, target)


def test_unknown_target_syntax_raises() -> None:
    ds = pydicom.dcmread(_testfile("MR_small.dcm"))
    with pytest.raises(TransferSyntaxError, match=r"1\.2\.3\.4"):
        encode_dataset(ds, "1.2.3.4")


def test_group_0002_elements_are_left_out_of_the_dataset() -> None:
    ds = Dataset()
    ds.PatientName = "A^B"
    ds.add_new(0x00020010, "UI", IMPLICIT_VR_LITTLE_ENDIAN)
    ds.add_new(0x00000100, "US", 1)
    decoded = decode_dataset(
        encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN), EXPLICIT_VR_LITTLE_ENDIAN
    )
    assert [int(tag) for tag in decoded.keys()] == [0x00100010]  # noqa: SIM118
    assert 0x00020010 in ds  # the caller's dataset is not changed


def test_bad_deflate_data_raises() -> None:
    with pytest.raises(InvalidDatasetError):
        decode_dataset(b"\xff\xff\xff\xff not deflate", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    deflated = encode_dataset(ds, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(InvalidDatasetError, match="truncated"):
        decode_dataset(deflated[: len(deflated) // 2], DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(InvalidDatasetError, match="beyond"):
        decode_dataset(deflated, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, max_inflated_size=1000)
    assert (
        decode_dataset(deflated, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, max_inflated_size=10 << 20)
        == ds
    )


def test_dcmdump_reads_converted_files(tmp_path: Path) -> None:
    """Every native syntax we produce is readable by DCMTK, as a Part 10 file."""
    ds = pydicom.dcmread(_testfile("MR_small.dcm"))
    for target in NATIVE_TRANSFER_SYNTAXES:
        out = tmp_path / f"{target}.dcm"
        out.write_bytes(
            build_file_meta(ds.SOPClassUID, ds.SOPInstanceUID, target) + encode_dataset(ds, target)
        )
        assert str(ds.PatientName) in _dcmdump(out)
