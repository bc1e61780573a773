"""Response identifiers encoded directly from their text values, without pydicom.

A C-FIND response identifier of the archive is a flat list of short text elements; writing
it element by element (PS3.5 7.1: tag, VR, length, value) is many times faster than
building a pydicom Dataset and writing that, and C-FIND throughput is mostly this cost.
Deflated transfer syntaxes are left to pydicom (the caller falls back).

The encoder lives in :mod:`aiodimse.query` (the C-GET / C-MOVE SCU encodes its light
identifiers with it too); it is named here as well, where the archive has always had it.
"""

from __future__ import annotations

from ..query import encode_identifier

__all__ = ["encode_identifier"]
