"""Storage: sinks that put received instances somewhere safely, and a storage server.

:class:`DirectorySink` writes each instance as a Part 10 file without decoding it: the
preamble and file meta are built from the C-STORE command and the negotiated transfer
syntax, then the data set bytes follow as they arrive. The file appears under its final
name (the validated SOP Instance UID) only once it is complete; a transfer cut short leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom import Dataset

from .dicomfile import build_file_meta
from .errors import StatusError
from .link import MemoryTarget, Timeouts
from .scp import StoreRequest, StoreWriter
from .server import Server
from .uids import is_valid_uid

__all__ = [
    "DirectorySink",
    "MemorySink",
    "Sink",
    "StorageHandler",
    "StorageServer",
    "StoredInstance",
]

log = logging.getLogger("aiodimse.storage")

_tmp_ids = itertools.count(1)

#: PS3.4 B.2.3: "Cannot understand" - used for a SOP Instance UID that is not a UID.
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance that was received and committed."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae: str
    path: Path | None
    #: The data set bytes as received, when it was kept in memory rather than in a file.
    data: bytes | None = None
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    association_id: int = 0

    @classmethod
    def from_store(cls, request: StoreRequest, writer: object) -> StoredInstance:
        """The instance a C-STORE request committed through ``writer`` (a file writer's
        ``final`` path, or a memory writer's ``data``)."""
        path = getattr(writer, "final", None)
        data = getattr(writer, "data", None)
        return cls(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax=request.transfer_syntax,
            calling_ae=request.calling_ae,
            path=path if isinstance(path, Path) else None,
            data=data if isinstance(data, bytes) else None,
            move_originator_ae_title=request.move_originator_ae_title,
            move_originator_message_id=request.move_originator_message_id,
            association_id=request.association.id,
        )

    def read_dataset_bytes(self) -> bytes:
        """The data set bytes (from memory, or from the file after its meta header)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("this instance was neither kept in memory nor written to a file")
        from .dicomfile import dataset_bytes, read_part10

        return dataset_bytes(self.path, read_part10(self.path))

    @property
    def dataset(self) -> Dataset:
        """The instance decoded by pydicom."""
        from .dicomfile import decode_dataset

        return decode_dataset(self.read_dataset_bytes(), self.transfer_syntax)


class Sink(Protocol):
    """Somewhere to put received instances: ``open`` is called when a C-STORE-RQ command
    arrives and returns the writer that receives its data set."""

    def open(self, request: StoreRequest) -> StoreWriter: ...


class _FileWriter:
    """Writes one instance to a temporary file next to its final name, then renames it.

    Unbuffered OS-level writes: the data set arrives in PDV-sized pieces that go straight
    to the file, with no Python file object in between.
    """

    __slots__ = ("_fd", "final", "fsync", "request", "sink", "tmp")

    def __init__(
        self, sink: DirectorySink, request: StoreRequest, final: Path, tmp: Path, fsync: bool
    ) -> None:
        self.sink = sink
        self.request = request
        self.final = final
        self.tmp = tmp
        self.fsync = fsync
        # O_EXCL: a temporary name is never shared; closed in commit/discard.
        self._fd: int | None = os.open(tmp, _CREATE_FLAGS, 0o644)
        try:
            _write_all(
                self._fd,
                build_file_meta(
                    request.sop_class_uid,
                    request.sop_instance_uid,
                    request.transfer_syntax,
                    source_ae=request.calling_ae or None,
                ),
            )
        except BaseException:
            self.discard()
            raise

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        _write_all(self._fd, data)

    async def commit(self) -> int | None:
        fd, self._fd = self._fd, None
        if fd is None:
            raise StatusError(0xA700, detail="writer already closed", service="C-STORE")
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(self.tmp, self.final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            raise
        if self.fsync:
            _fsync_dir(self.final.parent)
        return None

    def discard(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DirectorySink:
    """Writes each received instance to ``directory/<SOP Instance UID>.dcm``, atomically.

    The SOP Instance UID is checked against the UID grammar (PS3.5 9.1) before it becomes
    a file name; an invalid one is refused with status C000 (cannot understand). A re-sent
    instance replaces the earlier file. ``fsync=True`` flushes each file (and the folder
    entry) to stable storage before Success is answered.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def path_for(self, sop_instance_uid: str) -> Path:
        if not is_valid_uid(sop_instance_uid):
            raise StatusError(
                CANNOT_UNDERSTAND,
                detail=f"SOP Instance UID {sop_instance_uid[:40]!r} is not a valid UID",
                service="C-STORE",
            )
        return self.directory / f"{sop_instance_uid}.dcm"

    def open(self, request: StoreRequest) -> _FileWriter:
        final = self.path_for(request.sop_instance_uid)
        if not is_valid_uid(request.sop_class_uid) or not is_valid_uid(request.transfer_syntax):
            raise StatusError(CANNOT_UNDERSTAND, detail="invalid SOP Class UID", service="C-STORE")
        tmp = self.directory / f".{request.sop_instance_uid}.{os.getpid()}.{next(_tmp_ids)}.part"
        return _FileWriter(self, request, final, tmp, self.fsync)


class _MemoryWriter:
    """Keeps one received data set in memory (spilling past a limit, see MemoryTarget)."""

    __slots__ = ("_target", "data")

    def __init__(self) -> None:
        self._target = MemoryTarget()
        self.data: bytes | None = None

    def write(self, data: bytes | memoryview) -> None:
        self._target.write(data)

    async def commit(self) -> int | None:
        self.data = self._target.getvalue()
        self._target.discard()
        return None

    def discard(self) -> None:
        self._target.discard()


class MemorySink:
    """Keeps received instances in memory (``StoredInstance.data``) instead of files."""

    def open(self, request: StoreRequest) -> _MemoryWriter:
        return _MemoryWriter()


Listener = Callable[[StoredInstance], Any]


class StorageHandler:
    """A handler that stores every instance in a sink and tells listeners about it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.listeners: list[Listener] = []

    def open_store(self, request: StoreRequest) -> StoreWriter:
        return self.sink.open(request)

    async def stored(self, request: StoreRequest, status: int, writer: object) -> None:
        if status != 0 and not 0xB000 <= status <= 0xBFFF:
            return
        instance = StoredInstance.from_store(request, writer)
        for listener in list(self.listeners):
            result = listener(instance)
            if asyncio.iscoroutine(result):
                await result


class StorageServer(Server):
    """A storage SCP in one line: ``async with StorageServer(port=1235, sink=DirectorySink(d))``.

    It runs as tasks on the current loop, so it can receive the C-MOVE sub-operations that
    an association on the same loop asks for (see ``Association.move(receive=...)``).
    """

    def __init__(
        self,
        ae_title: str = "AIODIMSE",
        port: int = 11112,
        sink: Sink | None = None,
        *,
        host: str = "0.0.0.0",
        directory: str | os.PathLike[str] | None = None,
        storage_classes: Iterable[str] | None = None,
        transfer_syntaxes: Sequence[str] | None = None,
        timeouts: Timeouts | None = None,
        **options: Any,
    ) -> None:
        if sink is None:
            if directory is None:
                raise ValueError("StorageServer needs a sink or a directory")
            sink = DirectorySink(directory)
        self.storage = StorageHandler(sink)
        extra: dict[str, Any] = {}
        if transfer_syntaxes is not None:
            extra["storage_transfer_syntaxes"] = tuple(transfer_syntaxes)
        super().__init__(
            self.storage,
            host,
            port,
            ae_title=ae_title,
            storage_classes=storage_classes,
            timeouts=timeouts,
            **extra,
            **options,
        )

    @property
    def sink(self) -> Sink:
        return self.storage.sink

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(StoredInstance)`` for every committed instance."""
        self.storage.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self.storage.listeners.remove(listener)
