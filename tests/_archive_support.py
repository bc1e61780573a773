"""Helpers for the archive tests: header-only instances with chosen attribute values."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from aiodimse.testing.synthetic import uid_from

_serial = itertools.count(1)

#: Attribute keyword -> value for an instance, with sensible defaults.
DEFAULTS: dict[str, Any] = {
    "PatientID": "PAT-1",
    "PatientName": "DOE^JANE",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyDate": "20240115",
    "StudyTime": "101500",
    "AccessionNumber": "ACC1",
    "StudyID": "1",
    "StudyDescription": "CT Chest",
    "ReferringPhysicianName": "WHO^REFERRED",
    "Modality": "CT",
    "SeriesNumber": "1",
    "SeriesDescription": "Axial",
    "BodyPartExamined": "CHEST",
    "InstanceNumber": "1",
}


def instance(
    *,
    study: str = "s1",
    series: str = "1",
    sop: str | None = None,
    sop_class: str = CTImageStorage,
    **attrs: Any,
) -> Dataset:
    """A small CT header (no pixel data) with file meta; UIDs derived from the names given."""
    sop_uid = uid_from(f"sop/{sop}") if sop else uid_from(f"sop/auto/{next(_serial)}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    values = {**DEFAULTS, **attrs}
    if any(isinstance(v, str) and not v.isascii() for v in values.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uid_from(f"study/{study}")
    ds.SeriesInstanceUID = uid_from(f"study/{study}/series/{series}")
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    return ds


def save(directory: Path, datasets: list[Dataset]) -> list[Path]:
    """Write each dataset as a Part 10 file named after its SOP Instance UID."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
