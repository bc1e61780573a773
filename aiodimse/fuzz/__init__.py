"""Fuzzing and conformance checks of other DICOM implementations (and of our own)."""
