"""Fuzzing and conformance checks of other DICOM implementations (and of our own)."""

from .engine import Finding, FuzzReport, replay, run

__all__ = ["Finding", "FuzzReport", "replay", "run"]
