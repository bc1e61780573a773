"""DIMSE-C message layer: command sets, statuses, PDV fragmentation and reassembly."""
