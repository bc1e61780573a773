"""Tools for testing DICOM software: hypothesis strategies, synthetic data, real peers."""
