"""Synthetic studies: deterministic, valid UIDs, the sizes and attributes tests rely on."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from aiodimse.testing.synthetic import (
    make_archive_population,
    make_ct_instance,
    make_study,
    uid_from,
    write_study,
)

# PS3.5 9.1: components of digits without leading zeros (except "0"), dot-separated, <= 64.
UID_GRAMMAR = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@given(st.text())
def test_uid_from_is_a_valid_deterministic_2_25_uid(seed: str) -> None:
    uid = uid_from(seed)
    assert uid == uid_from(seed)
    assert uid.startswith("2.25.")
    assert len(uid) <= 64
    assert UID_GRAMMAR.fullmatch(uid)
    # The integer is a version-8 UUID (RFC 9562): version nibble 8, variant bits 10.
    value = int(uid[5:])
    assert value < 1 << 128
    assert (value >> 76) & 0xF == 8
    assert (value >> 62) & 0b11 == 0b10


def test_uid_from_differs_between_seeds() -> None:
    uids = {uid_from(f"seed-{i}") for i in range(1000)}
    assert len(uids) == 1000


def test_study_is_deterministic_and_well_formed() -> None:
    a = make_study(7, rows=8, cols=8, seed="det", series_count=3)
    b = make_study(7, rows=8, cols=8, seed="det", series_count=3)
    assert a == b
    assert len(a) == 7
    assert len({ds.SOPInstanceUID for ds in a}) == 7
    assert len({ds.StudyInstanceUID for ds in a}) == 1
    series = [ds.SeriesNumber for ds in a]
    assert series == [1, 1, 1, 2, 2, 3, 3]  # contiguous series, earlier ones take the rest
    assert [ds.InstanceNumber for ds in a] == [1, 2, 3, 1, 2, 1, 2]
    assert len({ds.SeriesInstanceUID for ds in a}) == 3
    for ds in a:
        assert ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
        # BitsStored = 12: the high byte of every little-endian word stays below 0x10.
        assert max(ds.PixelData[1::2]) <= 0x0F
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyID",
            "StudyDescription",
            "Modality",
            "SeriesDescription",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "RescaleIntercept",
        ):
            assert ds.get(keyword) not in (None, ""), keyword
    assert make_study(2, rows=8, cols=8, seed="other")[0].SOPInstanceUID != a[0].SOPInstanceUID


def test_pixels_differ_between_instances() -> None:
    a, b = make_study(2, rows=8, cols=8, seed="pixels")
    assert a.PixelData != b.PixelData


def test_mr_uses_mr_image_storage() -> None:
    ds = make_ct_instance(modality="MR", rows=4, cols=4)
    assert ds.SOPClassUID == MRImageStorage
    assert ds.Modality == "MR"
    assert "RescaleIntercept" not in ds
    with pytest.raises(ValueError):
        make_ct_instance(modality="US")
    with pytest.raises(ValueError):
        make_ct_instance(transfer_syntax=JPEGBaseline8Bit)


@pytest.mark.parametrize(
    ("rows", "low", "high"),
    [(512, 512 * 1024, 520 * 1024), (64, 8 * 1024, 10 * 1024)],
    ids=["512x512", "64x64"],
)
def test_file_sizes(tmp_path: Path, rows: int, low: int, high: int) -> None:
    (path,) = write_study(tmp_path, make_study(1, rows=rows, cols=rows))
    assert low <= path.stat().st_size <= high


@pytest.mark.parametrize(
    "ts",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ],
)
def test_write_and_read_back(tmp_path: Path, ts: str) -> None:
    datasets = make_study(2, rows=6, cols=5, seed="rw", transfer_syntax=ts)
    reference = make_study(2, rows=6, cols=5, seed="rw")  # same seed, little endian
    paths = write_study(tmp_path / "out", datasets)
    assert [p.name for p in paths] == [f"{ds.SOPInstanceUID}.dcm" for ds in datasets]
    for path, ds, ref in zip(paths, datasets, reference, strict=True):
        back = pydicom.dcmread(path)
        assert path.read_bytes()[128:132] == b"DICM"
        assert back.file_meta.TransferSyntaxUID == ts
        assert back.SOPInstanceUID == ds.SOPInstanceUID == ref.SOPInstanceUID
        assert back.PatientName == "DOE^JANE"
        assert (back.Rows, back.Columns) == (6, 5)
        raw = bytes(back.PixelData)
        if ts == ExplicitVRBigEndian:
            swapped = bytearray(len(raw))
            swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
            raw = bytes(swapped)
        assert raw == ref.PixelData


def test_archive_population_shape_and_variety() -> None:
    pop = make_archive_population(4, 3, 2, 2, rows=4, cols=4, seed="pop")
    assert len(pop) == 4 * 3 * 2 * 2
    assert len({ds.PatientID for ds in pop}) == 4
    assert len({ds.StudyInstanceUID for ds in pop}) == 12
    assert len({ds.SeriesInstanceUID for ds in pop}) == 24
    assert len({ds.SOPInstanceUID for ds in pop}) == 48
    assert {ds.Modality for ds in pop} == {"CT", "MR"}
    assert len({ds.StudyDate for ds in pop}) > 1
    assert len({str(ds.PatientName) for ds in pop}) > 1
    for study_uid in {ds.StudyInstanceUID for ds in pop}:
        members = [ds for ds in pop if ds.StudyInstanceUID == study_uid]
        assert len({(ds.PatientID, ds.Modality, ds.StudyDate) for ds in members}) == 1
    again = make_archive_population(4, 3, 2, 2, rows=4, cols=4, seed="pop")
    assert [ds.SOPInstanceUID for ds in again] == [ds.SOPInstanceUID for ds in pop]
