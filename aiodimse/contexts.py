"""Ready-made presentation context proposals for :func:`aiodimse.connect`.

At most 128 contexts fit in one association (PS3.8 9.3.2.2), so the storage list is the
common subset of PS3.4 Table B.5-1, not all of it; pass your own classes where needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from . import uids
from .dicomfile import NotDicomError, read_part10
from .query import model_uid
from .ul.negotiation import DEFAULT_TRANSFER_SYNTAXES, MAX_CONTEXTS, ContextRequest

__all__ = [
    "COMMON_STORAGE",
    "default",
    "for_files",
    "for_get",
    "for_instances",
    "query_retrieve",
    "storage",
    "verification",
]

_COMMON_KEYWORDS = (
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "EnhancedMRColorImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
    "MRSpectroscopyStorage",
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation",
    "DigitalIntraOralXRayImageStorageForProcessing",
    "BreastTomosynthesisImageStorage",
    "BreastProjectionXRayImageStorageForPresentation",
    "BreastProjectionXRayImageStorageForProcessing",
    "UltrasoundImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "EnhancedUSVolumeStorage",
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "XRayAngiographicImageStorage",
    "EnhancedXAImageStorage",
    "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage",
    "XRay3DAngiographicImageStorage",
    "XRay3DCraniofacialImageStorage",
    "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedPETImageStorage",
    "ParametricMapStorage",
    "RawDataStorage",
    "SpatialRegistrationStorage",
    "SpatialFiducialsStorage",
    "DeformableSpatialRegistrationStorage",
    "SegmentationStorage",
    "SurfaceSegmentationStorage",
    "RealWorldValueMappingStorage",
    "VLEndoscopicImageStorage",
    "VideoEndoscopicImageStorage",
    "VLMicroscopicImageStorage",
    "VideoMicroscopicImageStorage",
    "VLSlideCoordinatesMicroscopicImageStorage",
    "VLPhotographicImageStorage",
    "VideoPhotographicImageStorage",
    "VLWholeSlideMicroscopyImageStorage",
    "DermoscopicPhotographyImageStorage",
    "OphthalmicPhotography8BitImageStorage",
    "OphthalmicPhotography16BitImageStorage",
    "OphthalmicTomographyImageStorage",
    "IntravascularOpticalCoherenceTomographyImageStorageForPresentation",
    "IntravascularOpticalCoherenceTomographyImageStorageForProcessing",
    "GrayscaleSoftcopyPresentationStateStorage",
    "ColorSoftcopyPresentationStateStorage",
    "PseudoColorSoftcopyPresentationStateStorage",
    "BlendingSoftcopyPresentationStateStorage",
    "XAXRFGrayscaleSoftcopyPresentationStateStorage",
    "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage",
    "AmbulatoryECGWaveformStorage",
    "HemodynamicWaveformStorage",
    "CardiacElectrophysiologyWaveformStorage",
    "BasicVoiceAudioWaveformStorage",
    "ArterialPulseWaveformStorage",
    "RespiratoryWaveformStorage",
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "ExtensibleSRStorage",
    "ProcedureLogStorage",
    "MammographyCADSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "ChestCADSRStorage",
    "XRayRadiationDoseSRStorage",
    "RadiopharmaceuticalRadiationDoseSRStorage",
    "ColonCADSRStorage",
    "ImplantationPlanSRStorage",
    "AcquisitionContextSRStorage",
    "PatientRadiationDoseSRStorage",
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "EncapsulatedSTLStorage",
    "RTImageStorage",
    "RTDoseStorage",
    "RTStructureSetStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTPlanStorage",
    "RTBrachyTreatmentRecordStorage",
    "RTTreatmentSummaryRecordStorage",
    "RTIonPlanStorage",
    "RTIonBeamsTreatmentRecordStorage",
)

#: The storage SOP classes proposed by default (UIDs), in a stable order.
COMMON_STORAGE: tuple[str, ...] = tuple(uids.STORAGE_SOP_CLASSES[k] for k in _COMMON_KEYWORDS)

#: Image storage classes that also get a context for compressed syntaxes in
#: :func:`for_get`, most common first (as many as fit under 128 contexts).
IMAGE_STORAGE: tuple[str, ...] = tuple(
    uids.STORAGE_SOP_CLASSES[k]
    for k in (
        "CTImageStorage",
        "MRImageStorage",
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalMammographyXRayImageStorageForPresentation",
        "UltrasoundImageStorage",
        "UltrasoundMultiFrameImageStorage",
        "SecondaryCaptureImageStorage",
        "XRayAngiographicImageStorage",
        "XRayRadiofluoroscopicImageStorage",
        "NuclearMedicineImageStorage",
        "PositronEmissionTomographyImageStorage",
        "EnhancedCTImageStorage",
        "EnhancedMRImageStorage",
        "DigitalXRayImageStorageForProcessing",
        "DigitalMammographyXRayImageStorageForProcessing",
        "BreastTomosynthesisImageStorage",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "VLPhotographicImageStorage",
        "OphthalmicPhotography8BitImageStorage",
        "EnhancedXAImageStorage",
        "RTImageStorage",
    )
    if k in uids.STORAGE_SOP_CLASSES
)

#: The compressed syntaxes a C-GET SCU offers to receive (PS3.5 A.4), in one context per
#: image class: the SCP picks the one it holds.
COMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uids.JPEG_LOSSLESS_SV1,
    uids.JPEG_BASELINE_8BIT,
    uids.JPEG_EXTENDED_12BIT,
    uids.JPEG_LOSSLESS,
    uids.JPEG_2000_LOSSLESS,
    uids.JPEG_2000,
    uids.JPEG_LS_LOSSLESS,
    uids.JPEG_LS_NEAR_LOSSLESS,
    uids.RLE_LOSSLESS,
    uids.HTJ2K_LOSSLESS,
)

#: What a storage SCU offers for each class: explicit then implicit VR little endian.
#: Deflate and big endian are not offered by default: an SCP that accepts "all syntaxes"
#: may pick Deflated, and every instance would then be re-encoded and compressed.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES


def verification() -> list[ContextRequest]:
    """The Verification SOP class (C-ECHO)."""
    return [ContextRequest(uids.VERIFICATION_SOP_CLASS, DEFAULT_TRANSFER_SYNTAXES)]


def query_retrieve(
    *,
    find: bool = True,
    move: bool = True,
    get: bool = True,
    models: Sequence[str] = ("study", "patient"),
) -> list[ContextRequest]:
    """Query/Retrieve information models (PS3.4 C.6) for the chosen services."""
    out: list[ContextRequest] = []
    for service, wanted in (("find", find), ("move", move), ("get", get)):
        if wanted:
            out.extend(ContextRequest(model_uid(m, service)) for m in models)
    return out


def storage(
    sop_classes: Iterable[str] = COMMON_STORAGE,
    *,
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
    scu_role: bool = True,
    scp_role: bool = False,
) -> list[ContextRequest]:
    """Storage SOP classes; ``scp_role=True`` proposes that *we* receive C-STOREs (C-GET)."""
    return [
        ContextRequest(uid, tuple(transfer_syntaxes), scu_role=scu_role, scp_role=scp_role)
        for uid in sop_classes
    ]


def default() -> list[ContextRequest]:
    """Verification, FIND/MOVE/GET for the study and patient roots, and common storage
    classes as SCU: 107 contexts, no role selection (nothing exotic on the wire)."""
    return verification() + query_retrieve() + storage()


#: Contexts for_get() leaves free for the caller to add (e.g. the C-MOVE models).
_ROOM_LEFT = 8


def for_get(
    sop_classes: Iterable[str] = COMMON_STORAGE,
    *,
    models: Sequence[str] = ("study", "patient"),
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
    compressed: Sequence[str] = COMPRESSED_TRANSFER_SYNTAXES,
) -> list[ContextRequest]:
    """What a C-GET SCU proposes: the GET models and the storage classes it expects with
    the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4), plus Verification and FIND. Each class gets
    a context for ``transfer_syntaxes`` (uncompressed), and the common image classes a
    second one for the ``compressed`` syntaxes, as many as fit while leaving room for 8
    more contexts (the MOVE models, say) under PS3.8's 128: a context carries one syntax
    once accepted, and an instance stored compressed can only be sent in its own."""
    contexts = verification() + query_retrieve(move=False, models=models)
    room = MAX_CONTEXTS - len(contexts)
    classes = list(dict.fromkeys(sop_classes))
    if len(classes) > room:
        raise ValueError(f"{len(classes)} storage classes do not fit; at most {room}")
    contexts += storage(classes, transfer_syntaxes=transfer_syntaxes, scu_role=False, scp_role=True)
    if compressed:
        wanted = set(classes)
        images = [uid for uid in IMAGE_STORAGE if uid in wanted]
        images = images[: MAX_CONTEXTS - _ROOM_LEFT - len(contexts)]
        contexts += storage(images, transfer_syntaxes=compressed, scu_role=False, scp_role=True)
    return contexts


def for_instances(
    described: Iterable[tuple[str, str]],
    *,
    fallback: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
    limit: int = MAX_CONTEXTS,
) -> list[ContextRequest]:
    """Storage contexts for instances given as (SOP class UID, transfer syntax UID) pairs.

    Each instance's own transfer syntax gets a context of its own, so that an SCP that
    accepts it receives the data set exactly as stored, never decoded (an SCP free to pick
    among several syntaxes may prefer another one). A second context per class offers the
    ``fallback`` syntaxes, for conversion when the SCP refuses the instance's own; those
    are dropped first when everything does not fit in ``limit`` contexts.
    """
    own: dict[tuple[str, tuple[str, ...]], None] = {}
    extra: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, ts in described:
        own[(sop_class, (ts,))] = None
        others = tuple(t for t in fallback if t != ts)
        if others:
            extra[(sop_class, others)] = None
    chosen = list(own)
    chosen += [key for key in extra if key not in own][: max(0, limit - len(chosen))]
    if len(chosen) > limit:
        raise ValueError(
            f"these instances need {len(chosen)} presentation contexts; PS3.8 allows {limit}"
        )
    return [ContextRequest(c, ts) for c, ts in chosen]


def for_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
) -> list[ContextRequest]:
    """Verification and the storage contexts to send these files as they are (see
    :func:`for_instances`), like DCMTK's storescu. Non-DICOM files are skipped."""
    described: list[tuple[str, str]] = []
    for path in paths:
        try:
            info = read_part10(path)
        except (NotDicomError, OSError):
            continue
        described.append((info.sop_class_uid, info.transfer_syntax_uid))
    return verification() + for_instances(
        described, fallback=transfer_syntaxes, limit=MAX_CONTEXTS - 1
    )
