"""Deterministic synthetic CT/MR studies for tests, benchmarks and demos (pydicom only).

Everything is derived from a seed string: the same seed gives the same UIDs, attributes and
pixel values. Pixel data are random 12-bit values (in 16-bit words) from a seeded
:class:`random.Random`, so a 512x512 instance is about 512 KiB and a 64x64 one about 9 KiB.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from ..uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "make_archive_population",
    "make_ct_instance",
    "make_study",
    "uid_from",
    "write_study",
]

#: Native (uncompressed) transfer syntaxes the generator can write.
SUPPORTED_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
# Clears the top 4 bits of a byte: applied to every high byte, it keeps 16-bit little-endian
# words within 12 bits, matching BitsStored = 12 (PS3.5 8.1.1).
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))

_FAMILY = ("DOE", "SMITH", "MUELLER", "GARCIA", "NGUYEN", "ROSSI", "KOWALSKI", "TANAKA", "SILVA")
_GIVEN = ("JANE", "JOHN", "ANNA", "LUIS", "MEI", "PAOLO", "EWA", "KENJI", "ANA", "OMAR")
_BODY_PARTS = ("HEAD", "CHEST", "ABDOMEN", "PELVIS", "KNEE", "SPINE")


def uid_from(seed: str) -> str:
    """A deterministic UID ``2.25.<n>`` where n is a version-8 UUID made from sha256(seed).

    PS3.5 B.2: a UUID's 128-bit integer under the root 2.25 gives a UID of at most 44
    characters (within the 64 allowed), with no leading zeros.
    """
    raw = bytearray(hashlib.sha256(seed.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # RFC 9562 5.8: version 8 (custom)
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return f"2.25.{int.from_bytes(raw, 'big')}"


def _pixel_data(seed: str, rows: int, cols: int, little_endian: bool) -> bytes:
    """rows x cols 16-bit words with random 12-bit values; fast: no per-pixel Python loop."""
    data = bytearray(random.Random(seed).randbytes(rows * cols * 2))
    data[1::2] = data[1::2].translate(_LOW_NIBBLE)
    if not little_endian:
        data[0::2], data[1::2] = data[1::2], data[0::2]
    return bytes(data)


def _accession(seed: str) -> str:
    """An Accession Number (SH, <= 16 chars) derived from the seed."""
    return f"A{int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % 10**8:08d}"


def _ds_number(value: float) -> str:
    """A DS value (PS3.5 6.2: at most 16 characters)."""
    text = f"{value + 0.0:.6g}"  # + 0.0 turns -0.0 into 0.0

    return text if len(text) <= 16 else f"{value:.8e}"[:16]


def make_ct_instance(
    *,
    seed: str = "study-1",
    instance_number: int = 1,
    rows: int = 512,
    cols: int = 512,
    modality: str = "CT",
    patient_id: str = "SYN-0001",
    patient_name: str = "DOE^JANE",
    patient_birth_date: str = "19700101",
    patient_sex: str = "F",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    sop_instance_uid: str | None = None,
    study_date: str = "20240115",
    study_time: str = "101500",
    accession_number: str | None = None,
    study_id: str = "1",
    study_description: str | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    body_part: str = "CHEST",
    slice_thickness: float = 1.25,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """One CT (or MR, with ``modality="MR"``) image with file meta, ready to save or send.

    UIDs not given are derived from ``seed`` (and the series/instance numbers), so a study built
    from one seed is stable across runs.
    """
    if modality not in _SOP_CLASSES:
        raise ValueError(f"modality must be one of {sorted(_SOP_CLASSES)}, not {modality!r}")
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"cannot write transfer syntax {transfer_syntax!r} (native only)")
    if not (1 <= rows <= 0xFFFF and 1 <= cols <= 0xFFFF):
        raise ValueError("rows and cols must be within 1..65535 (US)")
    study_uid = study_uid or uid_from(f"{seed}/study")
    series_uid = series_uid or uid_from(f"{seed}/series/{series_number}")
    frame_uid = frame_of_reference_uid or uid_from(f"{seed}/frame")
    sop_uid = sop_instance_uid or uid_from(f"{seed}/series/{series_number}/{instance_number}")
    sop_class = _SOP_CLASSES[modality]

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    texts = (patient_name, study_description or "", series_description or "")
    if not all(t.isascii() for t in texts):
        ds.SpecificCharacterSet = "ISO_IR 192"  # PS3.3 C.12.1.1.2: UTF-8
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.AcquisitionDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = study_time
    ds.SeriesTime = study_time
    ds.AcquisitionTime = study_time
    ds.ContentTime = study_time
    ds.AccessionNumber = accession_number or _accession(seed)
    ds.Modality = modality
    ds.Manufacturer = "aiodimse"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = "WHO^REFERRED"
    ds.StationName = "SYNTH01"
    ds.StudyDescription = study_description or f"{modality} {body_part.title()}"
    ds.SeriesDescription = series_description or f"{body_part.title()} {slice_thickness} mm"
    ds.ManufacturerModelName = "Synthetic"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = patient_sex
    ds.BodyPartExamined = body_part
    ds.SliceThickness = _ds_number(slice_thickness)
    if modality == "CT":
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = "1"
        ds.MagneticFieldStrength = "1.5"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    z = (instance_number - 1) * slice_thickness
    spacing = 0.7
    ds.ImagePositionPatient = [
        _ds_number(-cols * spacing / 2),
        _ds_number(-rows * spacing / 2),
        _ds_number(-z),
    ]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds_number(-z)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds_number(spacing), _ds_number(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    else:
        ds.WindowCenter = "2048"
        ds.WindowWidth = "4096"
    little = transfer_syntax != ExplicitVRBigEndian
    ds.PixelData = _pixel_data(f"{sop_uid}/pixels", rows, cols, little)
    # pydicom would guess OB for PixelData; 16-bit native pixels are OW (PS3.5 8.1.2, 8.2).
    ds["PixelData"].VR = "OW"
    return ds


def make_study(
    n_instances: int,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: str = "study-1",
    patient_id: str = "SYN-0001",
    patient_name: str = "DOE^JANE",
    patient_birth_date: str = "19700101",
    patient_sex: str = "F",
    study_date: str = "20240115",
    study_time: str = "101500",
    modality: str = "CT",
    series_count: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Dataset]:
    """A study of ``n_instances`` images split into ``series_count`` contiguous series."""
    if n_instances < 0 or series_count < 1:
        raise ValueError("n_instances must be >= 0 and series_count >= 1")
    base, extra = divmod(n_instances, series_count)
    study_uid = uid_from(f"{seed}/study")
    frame_uid = uid_from(f"{seed}/frame")
    accession = _accession(seed)
    out: list[Dataset] = []
    for s in range(series_count):
        series_number = s + 1
        thickness = (1.25, 2.5, 5.0)[s % 3]
        for i in range(base + (1 if s < extra else 0)):
            out.append(
                make_ct_instance(
                    seed=seed,
                    instance_number=i + 1,
                    rows=rows,
                    cols=cols,
                    modality=modality,
                    patient_id=patient_id,
                    patient_name=patient_name,
                    patient_birth_date=patient_birth_date,
                    patient_sex=patient_sex,
                    study_uid=study_uid,
                    frame_of_reference_uid=frame_uid,
                    study_date=study_date,
                    study_time=study_time,
                    accession_number=accession,
                    series_number=series_number,
                    slice_thickness=thickness,
                    transfer_syntax=transfer_syntax,
                )
            )
    return out


def write_study(directory: Path | str, datasets: Iterable[Dataset]) -> list[Path]:
    """Save each dataset as a Part 10 file ``<SOPInstanceUID>.dcm`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_archive_population(
    n_patients: int,
    studies_per_patient: int,
    series_per_study: int,
    instances_per_series: int,
    *,
    rows: int = 64,
    cols: int = 64,
    seed: str = "archive-1",
    modalities: Sequence[str] = ("CT", "MR"),
) -> list[Dataset]:
    """Many patients/studies/series with varied names, sexes, dates and modalities (for queries).

    Patient k has ID ``SYN-<seed hash>-<k>``; study dates spread over 2015-2024. Every instance
    of one study shares one modality, cycling through ``modalities``.
    """
    rng = random.Random(seed)
    out: list[Dataset] = []
    tag = hashlib.sha256(seed.encode()).hexdigest()[:6].upper()
    for p in range(n_patients):
        name = f"{_FAMILY[rng.randrange(len(_FAMILY))]}^{_GIVEN[rng.randrange(len(_GIVEN))]}"
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 80))
        sex = rng.choice(("F", "M", "O"))
        patient_id = f"SYN-{tag}-{p + 1:05d}"
        for s in range(studies_per_patient):
            study_seed = f"{seed}/patient/{p}/study/{s}"
            modality = modalities[(p * studies_per_patient + s) % len(modalities)]
            when = date(2015, 1, 1) + timedelta(days=rng.randrange(365 * 10))
            study_time = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
            body_part = _BODY_PARTS[rng.randrange(len(_BODY_PARTS))]
            study_uid = uid_from(f"{study_seed}/study")
            frame_uid = uid_from(f"{study_seed}/frame")
            accession = f"A{rng.randrange(10**8):08d}"
            for se in range(series_per_study):
                for i in range(instances_per_series):
                    out.append(
                        make_ct_instance(
                            seed=study_seed,
                            instance_number=i + 1,
                            rows=rows,
                            cols=cols,
                            modality=modality,
                            patient_id=patient_id,
                            patient_name=name,
                            patient_birth_date=birth.strftime("%Y%m%d"),
                            patient_sex=sex,
                            study_uid=study_uid,
                            frame_of_reference_uid=frame_uid,
                            study_date=when.strftime("%Y%m%d"),
                            study_time=study_time,
                            accession_number=accession,
                            study_id=str(s + 1),
                            study_description=f"{modality} {body_part.title()}",
                            series_number=se + 1,
                            body_part=body_part,
                            slice_thickness=(1.25, 2.5, 5.0)[se % 3],
                        )
                    )
    return out
