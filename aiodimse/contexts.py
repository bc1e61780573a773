"""Ready-made presentation context proposals for :func:`aiodimse.connect`.

At most 128 contexts fit in one association (PS3.8 9.3.2.2), so the storage list is the
common subset of PS3.4 Table B.5-1, not all of it; pass your own classes where needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from . import uids
from .dicomfile import NotDicomError, read_part10
from .ul.negotiation import DEFAULT_TRANSFER_SYNTAXES, MAX_CONTEXTS, ContextRequest

__all__ = [
    "COMMON_STORAGE",
    "default",
    "for_files",
    "for_get",
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

#: What a storage SCU offers for each class: uncompressed syntaxes, the common ones first.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES + (
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
)


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
    from .query import model_uid

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


def for_get(
    sop_classes: Iterable[str] = COMMON_STORAGE,
    *,
    models: Sequence[str] = ("study", "patient"),
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
) -> list[ContextRequest]:
    """What a C-GET SCU proposes: the GET models and the storage classes it expects with
    the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4), plus Verification and FIND."""
    contexts = verification() + query_retrieve(move=False, models=models)
    room = MAX_CONTEXTS - len(contexts)
    classes = list(dict.fromkeys(sop_classes))
    if len(classes) > room:
        raise ValueError(f"{len(classes)} storage classes do not fit; at most {room}")
    return contexts + storage(
        classes, transfer_syntaxes=transfer_syntaxes, scu_role=False, scp_role=True
    )


def for_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
) -> list[ContextRequest]:
    """Contexts to store these files, like DCMTK's storescu: one context per SOP class
    with the uncompressed syntaxes, plus one with the file's own syntax where it is a
    compressed one (so that it can be sent without decoding). Non-DICOM files are skipped."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for path in paths:
        try:
            info = read_part10(path)
        except (NotDicomError, OSError):
            continue
        if info.transfer_syntax_uid in transfer_syntaxes:
            wanted[(info.sop_class_uid, tuple(transfer_syntaxes))] = None
        else:
            wanted[(info.sop_class_uid, (info.transfer_syntax_uid,))] = None
            wanted[(info.sop_class_uid, tuple(transfer_syntaxes))] = None
    contexts = verification() + [ContextRequest(c, ts) for c, ts in wanted]
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(
            f"these files need {len(contexts)} presentation contexts; PS3.8 allows {MAX_CONTEXTS}"
        )
    return contexts
