"""Where the fragments of a received data set go as they arrive."""

from __future__ import annotations

import io
import os
import tempfile
from typing import IO, Protocol

from ..config import DEFAULT_MAX_IN_MEMORY

__all__ = ["DataTarget", "MemoryTarget", "NullTarget"]


class DataTarget(Protocol):
    """Where the fragments of a received data set go as they arrive."""

    def write(self, data: bytes | memoryview) -> None: ...

    def discard(self) -> None: ...


class MemoryTarget:
    """Collects a data set in memory, spilling to an anonymous temporary file past a limit."""

    __slots__ = ("_file", "_parts", "limit", "size")

    def __init__(self, limit: int = DEFAULT_MAX_IN_MEMORY) -> None:
        self._parts: list[bytes | memoryview] = []
        self._file: IO[bytes] | None = None
        self.size = 0
        self.limit = limit

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        if self.size > self.limit:
            self._file = tempfile.TemporaryFile()
            for part in self._parts:
                self._file.write(part)
            self._parts = []

    def getvalue(self) -> bytes:
        if self._file is not None:
            self._file.seek(0)
            return self._file.read()
        parts = self._parts
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def open(self) -> IO[bytes]:
        """The data set as a binary file object of its own (closing it leaves the data set
        readable): the spill file opened again, or an in-memory copy."""
        if self._file is not None:
            self._file.flush()
            fp = os.fdopen(os.dup(self._file.fileno()), "rb")
            fp.seek(0)
            return fp
        return io.BytesIO(self.getvalue())

    def discard(self) -> None:
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None


class NullTarget:
    """Swallows the rest of a data set whose real target failed."""

    def write(self, data: bytes | memoryview) -> None:
        pass

    def discard(self) -> None:
        pass
