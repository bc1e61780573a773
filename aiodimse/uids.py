"""Well-known DICOM UIDs (transfer syntaxes, SOP classes) and the UID grammar of PS3.5 9.1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET",
    "COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET",
    "COMPOSITE_INSTANCE_ROOT_RETRIEVE_MOVE",
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "FIND_SOP_CLASSES",
    "GET_SOP_CLASSES",
    "HTJ2K",
    "HTJ2K_LOSSLESS",
    "HTJ2K_LOSSLESS_RPCL",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "JPEG_2000",
    "JPEG_2000_LOSSLESS",
    "JPEG_2000_MC",
    "JPEG_2000_MC_LOSSLESS",
    "JPEG_BASELINE_8BIT",
    "JPEG_EXTENDED_12BIT",
    "JPEG_LOSSLESS",
    "JPEG_LOSSLESS_SV1",
    "JPEG_LS_LOSSLESS",
    "JPEG_LS_NEAR_LOSSLESS",
    "MODALITY_WORKLIST_FIND",
    "MOVE_SOP_CLASSES",
    "NATIVE_TRANSFER_SYNTAXES",
    "NON_PATIENT_STORAGE_SOP_CLASSES",
    "PATIENT_ROOT_QR_FIND",
    "PATIENT_ROOT_QR_GET",
    "PATIENT_ROOT_QR_MOVE",
    "PATIENT_STUDY_ONLY_QR_FIND",
    "PATIENT_STUDY_ONLY_QR_GET",
    "PATIENT_STUDY_ONLY_QR_MOVE",
    "QUERY_RETRIEVE_SOP_CLASSES",
    "RLE_LOSSLESS",
    "STORAGE_SOP_CLASSES",
    "STUDY_ROOT_QR_FIND",
    "STUDY_ROOT_QR_GET",
    "STUDY_ROOT_QR_MOVE",
    "TRANSFER_SYNTAXES",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "TransferSyntax",
    "generate_uid",
    "is_storage_sop_class",
    "is_valid_uid",
    "transfer_syntax",
    "uid_name",
]

# -- the UID grammar -------------------------------------------------------------------

# PS3.5 9.1: components of ASCII digits separated by ".", each either "0" or without a
# leading zero, at most 64 characters in all. ``[0-9]`` rather than ``\d``, which would
# also accept non-ASCII digits.
_UID_RE: Final = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
UID_MAX_LENGTH: Final = 64


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` follows the PS3.5 9.1 UID grammar (safe to use as a file name)."""
    if not isinstance(value, str) or not 0 < len(value) <= UID_MAX_LENGTH:
        return False
    return _UID_RE.fullmatch(value) is not None


def generate_uid() -> str:
    """A new UID under the ``2.25`` root, derived from a random UUID (PS3.5 B.2)."""
    # Here, not at the top: uuid loads platform, ~5 ms that every start-up would pay.
    import uuid

    return f"2.25.{uuid.uuid4().int}"


# PS3.7 D.3.3.2: identifies this implementation in A-ASSOCIATE and in the file meta
# (0002,0012). A fixed UUID-derived UID (PS3.5 B.2), so it needs no registered root.
IMPLEMENTATION_CLASS_UID: Final = "2.25.84252623144504106138160014346070494869"
# PS3.7 D.3.3.2.1: 1 to 16 characters of the default repertoire.
IMPLEMENTATION_VERSION_NAME: Final = "AIODIMSE_010"

# -- transfer syntaxes (PS3.5 section 10 and Annex A; UIDs in PS3.6 Annex A) -----------

IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.98"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"  # retired (PS3.5 A.3)
JPEG_BASELINE_8BIT: Final = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED_12BIT: Final = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS: Final = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
JPEG_2000: Final = "1.2.840.10008.1.2.4.91"
JPEG_2000_MC_LOSSLESS: Final = "1.2.840.10008.1.2.4.92"
JPEG_2000_MC: Final = "1.2.840.10008.1.2.4.93"
HTJ2K_LOSSLESS: Final = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL: Final = "1.2.840.10008.1.2.4.202"
HTJ2K: Final = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """How a transfer syntax encodes a dataset (PS3.5 section 10)."""

    uid: str
    name: str
    is_implicit_vr: bool = False
    is_little_endian: bool = True
    is_deflated: bool = False
    is_encapsulated: bool = False
    is_retired: bool = False

    @property
    def is_native(self) -> bool:
        """Native (unencapsulated) pixel data, whether or not the stream is deflated."""
        return not self.is_encapsulated


def _encapsulated(uid: str, name: str) -> TransferSyntax:
    # PS3.5 A.4: every encapsulated syntax is explicit VR little endian around the
    # encapsulated Pixel Data.
    return TransferSyntax(uid, name, is_encapsulated=True)


TRANSFER_SYNTAXES: Final[dict[str, TransferSyntax]] = {
    ts.uid: ts
    for ts in (
        TransferSyntax(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", is_implicit_vr=True),
        TransferSyntax(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian"),
        TransferSyntax(
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            "Deflated Explicit VR Little Endian",
            is_deflated=True,
        ),
        TransferSyntax(
            EXPLICIT_VR_BIG_ENDIAN,
            "Explicit VR Big Endian",
            is_little_endian=False,
            is_retired=True,
        ),
        _encapsulated(
            ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
            "Encapsulated Uncompressed Explicit VR Little Endian",
        ),
        _encapsulated(JPEG_BASELINE_8BIT, "JPEG Baseline (Process 1)"),
        _encapsulated(JPEG_EXTENDED_12BIT, "JPEG Extended (Process 2 & 4)"),
        _encapsulated(JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical (Process 14)"),
        _encapsulated(
            JPEG_LOSSLESS_SV1,
            "JPEG Lossless, Non-Hierarchical, First-Order Prediction "
            "(Process 14 [Selection Value 1])",
        ),
        _encapsulated(JPEG_LS_LOSSLESS, "JPEG-LS Lossless Image Compression"),
        _encapsulated(JPEG_LS_NEAR_LOSSLESS, "JPEG-LS Lossy (Near-Lossless) Image Compression"),
        _encapsulated(JPEG_2000_LOSSLESS, "JPEG 2000 Image Compression (Lossless Only)"),
        _encapsulated(JPEG_2000, "JPEG 2000 Image Compression"),
        _encapsulated(
            JPEG_2000_MC_LOSSLESS,
            "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
        ),
        _encapsulated(JPEG_2000_MC, "JPEG 2000 Part 2 Multi-component Image Compression"),
        _encapsulated(
            HTJ2K_LOSSLESS, "High-Throughput JPEG 2000 Image Compression (Lossless Only)"
        ),
        _encapsulated(
            HTJ2K_LOSSLESS_RPCL,
            "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
        ),
        _encapsulated(HTJ2K, "High-Throughput JPEG 2000 Image Compression"),
        _encapsulated(RLE_LOSSLESS, "RLE Lossless"),
        _encapsulated("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
        _encapsulated("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
        _encapsulated("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1"),
        _encapsulated(
            "1.2.840.10008.1.2.4.103",
            "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        ),
        _encapsulated(
            "1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"
        ),
        _encapsulated(
            "1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"
        ),
        _encapsulated(
            "1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"
        ),
        _encapsulated("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1"),
        _encapsulated("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1"),
    )
}

# Our default proposal/preference order for uncompressed data. Explicit VR little endian
# first: it carries the VRs (no dictionary needed to read private or new elements) and is
# the local byte order on every machine we run on, like DCMTK's default preference.
# Implicit VR little endian second: the default syntax every implementation must accept
# (PS3.5 10.1). Explicit VR big endian last: retired since 2004 (PS3.5 A.3), rarely
# supported, and costly to produce (multi-byte binary values must be byte-swapped).
UNCOMPRESSED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
# Syntaxes whose pixel data is native, i.e. a dataset can be re-encoded freely among them.
NATIVE_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    *UNCOMPRESSED_TRANSFER_SYNTAXES,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
)


def transfer_syntax(uid: str) -> TransferSyntax | None:
    """The :class:`TransferSyntax` for ``uid``, or None when it is not one we know."""
    return TRANSFER_SYNTAXES.get(uid)


# -- SOP classes -----------------------------------------------------------------------

VERIFICATION_SOP_CLASS: Final = "1.2.840.10008.1.1"  # PS3.4 A.4

# PS3.4 C.6: Query/Retrieve information models.
PATIENT_ROOT_QR_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_QR_MOVE: Final = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_QR_GET: Final = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_QR_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_QR_MOVE: Final = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_QR_GET: Final = "1.2.840.10008.5.1.4.1.2.2.3"
# Patient/Study Only (PS3.4 C.6.3) is retired but still met in the field.
PATIENT_STUDY_ONLY_QR_FIND: Final = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_QR_MOVE: Final = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_QR_GET: Final = "1.2.840.10008.5.1.4.1.2.3.3"
# PS3.4 C.6.4 / Z.1: Composite Instance Root and Without Bulk Data retrieve.
COMPOSITE_INSTANCE_ROOT_RETRIEVE_MOVE: Final = "1.2.840.10008.5.1.4.1.2.4.2"
COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET: Final = "1.2.840.10008.5.1.4.1.2.4.3"
COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET: Final = "1.2.840.10008.5.1.4.1.2.5.3"
# PS3.4 K.6.1: Basic Worklist Management.
MODALITY_WORKLIST_FIND: Final = "1.2.840.10008.5.1.4.31"

FIND_SOP_CLASSES: Final[tuple[str, ...]] = (
    PATIENT_ROOT_QR_FIND,
    STUDY_ROOT_QR_FIND,
    PATIENT_STUDY_ONLY_QR_FIND,
)
MOVE_SOP_CLASSES: Final[tuple[str, ...]] = (
    PATIENT_ROOT_QR_MOVE,
    STUDY_ROOT_QR_MOVE,
    PATIENT_STUDY_ONLY_QR_MOVE,
    COMPOSITE_INSTANCE_ROOT_RETRIEVE_MOVE,
)
GET_SOP_CLASSES: Final[tuple[str, ...]] = (
    PATIENT_ROOT_QR_GET,
    STUDY_ROOT_QR_GET,
    PATIENT_STUDY_ONLY_QR_GET,
    COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET,
    COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET,
)

_OTHER_SOP_CLASS_NAMES: Final[dict[str, str]] = {
    VERIFICATION_SOP_CLASS: "Verification SOP Class",
    PATIENT_ROOT_QR_FIND: "Patient Root Query/Retrieve Information Model - FIND",
    PATIENT_ROOT_QR_MOVE: "Patient Root Query/Retrieve Information Model - MOVE",
    PATIENT_ROOT_QR_GET: "Patient Root Query/Retrieve Information Model - GET",
    STUDY_ROOT_QR_FIND: "Study Root Query/Retrieve Information Model - FIND",
    STUDY_ROOT_QR_MOVE: "Study Root Query/Retrieve Information Model - MOVE",
    STUDY_ROOT_QR_GET: "Study Root Query/Retrieve Information Model - GET",
    PATIENT_STUDY_ONLY_QR_FIND: "Patient/Study Only Query/Retrieve Information Model - FIND",
    PATIENT_STUDY_ONLY_QR_MOVE: "Patient/Study Only Query/Retrieve Information Model - MOVE",
    PATIENT_STUDY_ONLY_QR_GET: "Patient/Study Only Query/Retrieve Information Model - GET",
    COMPOSITE_INSTANCE_ROOT_RETRIEVE_MOVE: "Composite Instance Root Retrieve - MOVE",
    COMPOSITE_INSTANCE_ROOT_RETRIEVE_GET: "Composite Instance Root Retrieve - GET",
    COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET: (
        "Composite Instance Retrieve Without Bulk Data - GET"
    ),
    MODALITY_WORKLIST_FIND: "Modality Worklist Information Model - FIND",
}

QUERY_RETRIEVE_SOP_CLASSES: Final[dict[str, str]] = {
    uid: name for uid, name in _OTHER_SOP_CLASS_NAMES.items() if uid != VERIFICATION_SOP_CLASS
}

# PS3.4 Table B.5-1: the Storage Service Class SOP classes (non-retired), as
# (UID, keyword, name). Keywords are those of PS3.6 Annex A.
_STORAGE_TABLE: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "1.2.840.10008.5.1.4.1.1.1",
        "ComputedRadiographyImageStorage",
        "Computed Radiography Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.1",
        "DigitalXRayImageStorageForPresentation",
        "Digital X-Ray Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.1.1",
        "DigitalXRayImageStorageForProcessing",
        "Digital X-Ray Image Storage - For Processing",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.2",
        "DigitalMammographyXRayImageStorageForPresentation",
        "Digital Mammography X-Ray Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.2.1",
        "DigitalMammographyXRayImageStorageForProcessing",
        "Digital Mammography X-Ray Image Storage - For Processing",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.3",
        "DigitalIntraOralXRayImageStorageForPresentation",
        "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.1.3.1",
        "DigitalIntraOralXRayImageStorageForProcessing",
        "Digital Intra-Oral X-Ray Image Storage - For Processing",
    ),
    ("1.2.840.10008.5.1.4.1.1.2", "CTImageStorage", "CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2.1", "EnhancedCTImageStorage", "Enhanced CT Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.2.2",
        "LegacyConvertedEnhancedCTImageStorage",
        "Legacy Converted Enhanced CT Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.3.1",
        "UltrasoundMultiFrameImageStorage",
        "Ultrasound Multi-frame Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.4", "MRImageStorage", "MR Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4.1", "EnhancedMRImageStorage", "Enhanced MR Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4.2", "MRSpectroscopyStorage", "MR Spectroscopy Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.4.3",
        "EnhancedMRColorImageStorage",
        "Enhanced MR Color Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.4.4",
        "LegacyConvertedEnhancedMRImageStorage",
        "Legacy Converted Enhanced MR Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.6.1", "UltrasoundImageStorage", "Ultrasound Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.6.2", "EnhancedUSVolumeStorage", "Enhanced US Volume Storage"),
    ("1.2.840.10008.5.1.4.1.1.6.3", "PhotoacousticImageStorage", "Photoacoustic Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.7",
        "SecondaryCaptureImageStorage",
        "Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.1",
        "MultiFrameSingleBitSecondaryCaptureImageStorage",
        "Multi-frame Single Bit Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.2",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.3",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.4",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
        "Multi-frame True Color Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.1.1",
        "TwelveLeadECGWaveformStorage",
        "12-lead ECG Waveform Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.9.1.2", "GeneralECGWaveformStorage", "General ECG Waveform Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.9.1.3",
        "AmbulatoryECGWaveformStorage",
        "Ambulatory ECG Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.1.4",
        "General32bitECGWaveformStorage",
        "General 32-bit ECG Waveform Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.9.2.1", "HemodynamicWaveformStorage", "Hemodynamic Waveform Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.9.3.1",
        "CardiacElectrophysiologyWaveformStorage",
        "Cardiac Electrophysiology Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.4.1",
        "BasicVoiceAudioWaveformStorage",
        "Basic Voice Audio Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.4.2",
        "GeneralAudioWaveformStorage",
        "General Audio Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.5.1",
        "ArterialPulseWaveformStorage",
        "Arterial Pulse Waveform Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.9.6.1", "RespiratoryWaveformStorage", "Respiratory Waveform Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.9.6.2",
        "MultichannelRespiratoryWaveformStorage",
        "Multi-channel Respiratory Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.7.1",
        "RoutineScalpElectroencephalogramWaveformStorage",
        "Routine Scalp Electroencephalogram Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.7.2",
        "ElectromyogramWaveformStorage",
        "Electromyogram Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.7.3",
        "ElectrooculogramWaveformStorage",
        "Electrooculogram Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.7.4",
        "SleepElectroencephalogramWaveformStorage",
        "Sleep Electroencephalogram Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.9.8.1",
        "BodyPositionWaveformStorage",
        "Body Position Waveform Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.1",
        "GrayscaleSoftcopyPresentationStateStorage",
        "Grayscale Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.2",
        "ColorSoftcopyPresentationStateStorage",
        "Color Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.3",
        "PseudoColorSoftcopyPresentationStateStorage",
        "Pseudo-Color Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.4",
        "BlendingSoftcopyPresentationStateStorage",
        "Blending Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.5",
        "XAXRFGrayscaleSoftcopyPresentationStateStorage",
        "XA/XRF Grayscale Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.6",
        "GrayscalePlanarMPRVolumetricPresentationStateStorage",
        "Grayscale Planar MPR Volumetric Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.7",
        "CompositingPlanarMPRVolumetricPresentationStateStorage",
        "Compositing Planar MPR Volumetric Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.8",
        "AdvancedBlendingPresentationStateStorage",
        "Advanced Blending Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.9",
        "VolumeRenderingVolumetricPresentationStateStorage",
        "Volume Rendering Volumetric Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.10",
        "SegmentedVolumeRenderingVolumetricPresentationStateStorage",
        "Segmented Volume Rendering Volumetric Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.11",
        "MultipleVolumeRenderingVolumetricPresentationStateStorage",
        "Multiple Volume Rendering Volumetric Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.11.12",
        "VariableModalityLUTSoftcopyPresentationStateStorage",
        "Variable Modality LUT Softcopy Presentation State Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.12.1",
        "XRayAngiographicImageStorage",
        "X-Ray Angiographic Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.12.1.1", "EnhancedXAImageStorage", "Enhanced XA Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.12.2",
        "XRayRadiofluoroscopicImageStorage",
        "X-Ray Radiofluoroscopic Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.12.2.1", "EnhancedXRFImageStorage", "Enhanced XRF Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.1",
        "XRay3DAngiographicImageStorage",
        "X-Ray 3D Angiographic Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.2",
        "XRay3DCraniofacialImageStorage",
        "X-Ray 3D Craniofacial Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.3",
        "BreastTomosynthesisImageStorage",
        "Breast Tomosynthesis Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.4",
        "BreastProjectionXRayImageStorageForPresentation",
        "Breast Projection X-Ray Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.5",
        "BreastProjectionXRayImageStorageForProcessing",
        "Breast Projection X-Ray Image Storage - For Processing",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.14.1",
        "IntravascularOpticalCoherenceTomographyImageStorageForPresentation",
        "Intravascular Optical Coherence Tomography Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.14.2",
        "IntravascularOpticalCoherenceTomographyImageStorageForProcessing",
        "Intravascular Optical Coherence Tomography Image Storage - For Processing",
    ),
    ("1.2.840.10008.5.1.4.1.1.20", "NuclearMedicineImageStorage", "Nuclear Medicine Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.30", "ParametricMapStorage", "Parametric Map Storage"),
    ("1.2.840.10008.5.1.4.1.1.66", "RawDataStorage", "Raw Data Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.1", "SpatialRegistrationStorage", "Spatial Registration Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.2", "SpatialFiducialsStorage", "Spatial Fiducials Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.66.3",
        "DeformableSpatialRegistrationStorage",
        "Deformable Spatial Registration Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.66.4", "SegmentationStorage", "Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.5", "SurfaceSegmentationStorage", "Surface Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.66.6", "TractographyResultsStorage", "Tractography Results Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.67",
        "RealWorldValueMappingStorage",
        "Real World Value Mapping Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.68.1", "SurfaceScanMeshStorage", "Surface Scan Mesh Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.68.2",
        "SurfaceScanPointCloudStorage",
        "Surface Scan Point Cloud Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.77.1.1", "VLEndoscopicImageStorage", "VL Endoscopic Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "VideoEndoscopicImageStorage",
        "Video Endoscopic Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.77.1.2", "VLMicroscopicImageStorage", "VL Microscopic Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",
        "VideoMicroscopicImageStorage",
        "Video Microscopic Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.3",
        "VLSlideCoordinatesMicroscopicImageStorage",
        "VL Slide-Coordinates Microscopic Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "VLPhotographicImageStorage",
        "VL Photographic Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "VideoPhotographicImageStorage",
        "Video Photographic Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",
        "OphthalmicPhotography8BitImageStorage",
        "Ophthalmic Photography 8 Bit Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",
        "OphthalmicPhotography16BitImageStorage",
        "Ophthalmic Photography 16 Bit Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.3",
        "StereometricRelationshipStorage",
        "Stereometric Relationship Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.4",
        "OphthalmicTomographyImageStorage",
        "Ophthalmic Tomography Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.5",
        "WideFieldOphthalmicPhotographyStereographicProjectionImageStorage",
        "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.6",
        "WideFieldOphthalmicPhotography3DCoordinatesImageStorage",
        "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.7",
        "OphthalmicOpticalCoherenceTomographyEnFaceImageStorage",
        "Ophthalmic Optical Coherence Tomography En Face Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.5.8",
        "OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage",
        "Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.6",
        "VLWholeSlideMicroscopyImageStorage",
        "VL Whole Slide Microscopy Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.7",
        "DermoscopicPhotographyImageStorage",
        "Dermoscopic Photography Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.8",
        "ConfocalMicroscopyImageStorage",
        "Confocal Microscopy Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.77.1.9",
        "ConfocalMicroscopyTiledPyramidalImageStorage",
        "Confocal Microscopy Tiled Pyramidal Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.1",
        "LensometryMeasurementsStorage",
        "Lensometry Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.2",
        "AutorefractionMeasurementsStorage",
        "Autorefraction Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.3",
        "KeratometryMeasurementsStorage",
        "Keratometry Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.4",
        "SubjectiveRefractionMeasurementsStorage",
        "Subjective Refraction Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.5",
        "VisualAcuityMeasurementsStorage",
        "Visual Acuity Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.6",
        "SpectaclePrescriptionReportStorage",
        "Spectacle Prescription Report Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.7",
        "OphthalmicAxialMeasurementsStorage",
        "Ophthalmic Axial Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.78.8",
        "IntraocularLensCalculationsStorage",
        "Intraocular Lens Calculations Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.79.1",
        "MacularGridThicknessAndVolumeReportStorage",
        "Macular Grid Thickness and Volume Report Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.80.1",
        "OphthalmicVisualFieldStaticPerimetryMeasurementsStorage",
        "Ophthalmic Visual Field Static Perimetry Measurements Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.81.1",
        "OphthalmicThicknessMapStorage",
        "Ophthalmic Thickness Map Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.82.1",
        "CornealTopographyMapStorage",
        "Corneal Topography Map Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.88.11", "BasicTextSRStorage", "Basic Text SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.22", "EnhancedSRStorage", "Enhanced SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.33", "ComprehensiveSRStorage", "Comprehensive SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.34", "Comprehensive3DSRStorage", "Comprehensive 3D SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.35", "ExtensibleSRStorage", "Extensible SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.40", "ProcedureLogStorage", "Procedure Log Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.50", "MammographyCADSRStorage", "Mammography CAD SR Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.88.59",
        "KeyObjectSelectionDocumentStorage",
        "Key Object Selection Document Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.88.65", "ChestCADSRStorage", "Chest CAD SR Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.88.67",
        "XRayRadiationDoseSRStorage",
        "X-Ray Radiation Dose SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.68",
        "RadiopharmaceuticalRadiationDoseSRStorage",
        "Radiopharmaceutical Radiation Dose SR Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.88.69", "ColonCADSRStorage", "Colon CAD SR Storage"),
    ("1.2.840.10008.5.1.4.1.1.88.70", "ImplantationPlanSRStorage", "Implantation Plan SR Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.88.71",
        "AcquisitionContextSRStorage",
        "Acquisition Context SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.72",
        "SimplifiedAdultEchoSRStorage",
        "Simplified Adult Echo SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.73",
        "PatientRadiationDoseSRStorage",
        "Patient Radiation Dose SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.74",
        "PlannedImagingAgentAdministrationSRStorage",
        "Planned Imaging Agent Administration SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.75",
        "PerformedImagingAgentAdministrationSRStorage",
        "Performed Imaging Agent Administration SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.76",
        "EnhancedXRayRadiationDoseSRStorage",
        "Enhanced X-Ray Radiation Dose SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.88.77",
        "WaveformAnnotationSRStorage",
        "Waveform Annotation SR Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.90.1",
        "ContentAssessmentResultsStorage",
        "Content Assessment Results Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.91.1",
        "MicroscopyBulkSimpleAnnotationsStorage",
        "Microscopy Bulk Simple Annotations Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.104.1", "EncapsulatedPDFStorage", "Encapsulated PDF Storage"),
    ("1.2.840.10008.5.1.4.1.1.104.2", "EncapsulatedCDAStorage", "Encapsulated CDA Storage"),
    ("1.2.840.10008.5.1.4.1.1.104.3", "EncapsulatedSTLStorage", "Encapsulated STL Storage"),
    ("1.2.840.10008.5.1.4.1.1.104.4", "EncapsulatedOBJStorage", "Encapsulated OBJ Storage"),
    ("1.2.840.10008.5.1.4.1.1.104.5", "EncapsulatedMTLStorage", "Encapsulated MTL Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.128",
        "PositronEmissionTomographyImageStorage",
        "Positron Emission Tomography Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.128.1",
        "LegacyConvertedEnhancedPETImageStorage",
        "Legacy Converted Enhanced PET Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.130", "EnhancedPETImageStorage", "Enhanced PET Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.131",
        "BasicStructuredDisplayStorage",
        "Basic Structured Display Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.200.2",
        "CTPerformedProcedureProtocolStorage",
        "CT Performed Procedure Protocol Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.200.8",
        "XAPerformedProcedureProtocolStorage",
        "XA Performed Procedure Protocol Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.1", "RTImageStorage", "RT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.2", "RTDoseStorage", "RT Dose Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTStructureSetStorage", "RT Structure Set Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.4",
        "RTBeamsTreatmentRecordStorage",
        "RT Beams Treatment Record Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.5", "RTPlanStorage", "RT Plan Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.6",
        "RTBrachyTreatmentRecordStorage",
        "RT Brachy Treatment Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.7",
        "RTTreatmentSummaryRecordStorage",
        "RT Treatment Summary Record Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.8", "RTIonPlanStorage", "RT Ion Plan Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.9",
        "RTIonBeamsTreatmentRecordStorage",
        "RT Ion Beams Treatment Record Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.10", "RTPhysicianIntentStorage", "RT Physician Intent Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.11",
        "RTSegmentAnnotationStorage",
        "RT Segment Annotation Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.12", "RTRadiationSetStorage", "RT Radiation Set Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.13",
        "CArmPhotonElectronRadiationStorage",
        "C-Arm Photon-Electron Radiation Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.14",
        "TomotherapeuticRadiationStorage",
        "Tomotherapeutic Radiation Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.15",
        "RoboticArmRadiationStorage",
        "Robotic-Arm Radiation Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.16",
        "RTRadiationRecordSetStorage",
        "RT Radiation Record Set Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.17",
        "RTRadiationSalvageRecordStorage",
        "RT Radiation Salvage Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.18",
        "TomotherapeuticRadiationRecordStorage",
        "Tomotherapeutic Radiation Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.19",
        "CArmPhotonElectronRadiationRecordStorage",
        "C-Arm Photon-Electron Radiation Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.20",
        "RoboticRadiationRecordStorage",
        "Robotic Radiation Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.21",
        "RTRadiationSetDeliveryInstructionStorage",
        "RT Radiation Set Delivery Instruction Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.22",
        "RTTreatmentPreparationStorage",
        "RT Treatment Preparation Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.23", "EnhancedRTImageStorage", "Enhanced RT Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.24",
        "EnhancedContinuousRTImageStorage",
        "Enhanced Continuous RT Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.25",
        "RTPatientPositionAcquisitionInstructionStorage",
        "RT Patient Position Acquisition Instruction Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.501.1", "DICOSCTImageStorage", "DICOS CT Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.501.2.1",
        "DICOSDigitalXRayImageStorageForPresentation",
        "DICOS Digital X-Ray Image Storage - For Presentation",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.501.2.2",
        "DICOSDigitalXRayImageStorageForProcessing",
        "DICOS Digital X-Ray Image Storage - For Processing",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.501.3",
        "DICOSThreatDetectionReportStorage",
        "DICOS Threat Detection Report Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.501.4", "DICOS2DAITStorage", "DICOS 2D AIT Storage"),
    ("1.2.840.10008.5.1.4.1.1.501.5", "DICOS3DAITStorage", "DICOS 3D AIT Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.501.6",
        "DICOSQuadrupoleResonanceStorage",
        "DICOS Quadrupole Resonance (QR) Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.601.1", "EddyCurrentImageStorage", "Eddy Current Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.601.2",
        "EddyCurrentMultiFrameImageStorage",
        "Eddy Current Multi-frame Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.34.7",
        "RTBeamsDeliveryInstructionStorage",
        "RT Beams Delivery Instruction Storage",
    ),
    (
        "1.2.840.10008.5.1.4.34.10",
        "RTBrachyApplicationSetupDeliveryInstructionStorage",
        "RT Brachy Application Setup Delivery Instruction Storage",
    ),
)

# PS3.4 Annex GG: Non-Patient Object Storage (also sent with C-STORE, but not patient data).
_NON_PATIENT_STORAGE_TABLE: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "1.2.840.10008.5.1.4.1.1.200.1",
        "CTDefinedProcedureProtocolStorage",
        "CT Defined Procedure Protocol Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.200.3", "ProtocolApprovalStorage", "Protocol Approval Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.200.7",
        "XADefinedProcedureProtocolStorage",
        "XA Defined Procedure Protocol Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.201.1", "InventoryStorage", "Inventory Storage"),
    ("1.2.840.10008.5.1.4.38.1", "HangingProtocolStorage", "Hanging Protocol Storage"),
    ("1.2.840.10008.5.1.4.39.1", "ColorPaletteStorage", "Color Palette Storage"),
    (
        "1.2.840.10008.5.1.4.43.1",
        "GenericImplantTemplateStorage",
        "Generic Implant Template Storage",
    ),
    (
        "1.2.840.10008.5.1.4.44.1",
        "ImplantAssemblyTemplateStorage",
        "Implant Assembly Template Storage",
    ),
    ("1.2.840.10008.5.1.4.45.1", "ImplantTemplateGroupStorage", "Implant Template Group Storage"),
)

# keyword -> UID
STORAGE_SOP_CLASSES: Final[dict[str, str]] = {kw: uid for uid, kw, _ in _STORAGE_TABLE}
NON_PATIENT_STORAGE_SOP_CLASSES: Final[dict[str, str]] = {
    kw: uid for uid, kw, _ in _NON_PATIENT_STORAGE_TABLE
}
_STORAGE_UIDS: Final[frozenset[str]] = frozenset(
    uid for uid, _, _ in (*_STORAGE_TABLE, *_NON_PATIENT_STORAGE_TABLE)
)

_NAMES: Final[dict[str, str]] = {
    **{ts.uid: ts.name for ts in TRANSFER_SYNTAXES.values()},
    **_OTHER_SOP_CLASS_NAMES,
    **{uid: name for uid, _, name in (*_STORAGE_TABLE, *_NON_PATIENT_STORAGE_TABLE)},
}


def is_storage_sop_class(uid: str) -> bool:
    """Whether ``uid`` is one of our known Storage SOP classes (B.5-1 or Annex GG)."""
    return uid in _STORAGE_UIDS


def uid_name(uid: str) -> str:
    """A readable name for ``uid``: our tables, then pydicom's dictionary, else the UID."""
    name = _NAMES.get(uid)
    if name is not None:
        return name
    # Deferred: pydicom's dictionary is only wanted for a UID our tables lack, and pydicom
    # takes ~0.3 s to import (the codec and the command line must start without it).
    from pydicom.uid import UID

    try:
        return str(UID(uid).name)
    except Exception:  # pydicom rejects odd input in its own ways; the UID is still a name
        return uid
