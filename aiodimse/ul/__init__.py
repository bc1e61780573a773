"""The DICOM Upper Layer (PS3.8): association state machine and its helpers."""
