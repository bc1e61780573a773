"""Sinks: where received instances go, safely. Used by the C-GET SCU and storage servers.

:class:`DirectorySink` writes each instance as a Part 10 file without decoding it: the
preamble and file meta are built from the C-STORE command and the negotiated transfer
syntax, then the data set bytes follow as they arrive. The file appears under its final
name (the validated SOP Instance UID) only once it is complete; a transfer cut short leaves
nothing behind. :class:`MoveTracker` collects, wherever C-MOVE sub-operations arrive, the
instances of one C-MOVE (matched by Move Originator AE Title and Message ID).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import itertools
import logging
import os
import re
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .dicomfile import build_file_meta
from .dimse.status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, is_completed
from .errors import StatusError
from .requests import StoreRequest, StoreWriter
from .results import StoredInstance
from .transport.targets import MemoryTarget
from .uids import is_valid_uid

if TYPE_CHECKING:
    # pydicom takes ~0.3 s to import: only reading a received header needs it (below).
    from pydicom import Dataset

__all__ = [
    "DirectorySink",
    "FileWriter",
    "MemorySink",
    "MoveReceiver",
    "MoveTracker",
    "Sink",
    "StorageHandler",
    "remove_stale_temporaries",
    "temp_path_for",
]

log = logging.getLogger("aiodimse.storage")

_tmp_ids = itertools.count(1)

#: The rule for an instance whose Move Originator AE Title and Message ID are the move's.
EXACT = "Move Originator AE Title and Message ID"

Query: TypeAlias = "Mapping[str, Any] | Dataset"


#: ``.<name>.<pid>.<n>.part``: the temporary files of temp_path_for().
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.\d+\.part$")


def remove_stale_temporaries(directory: Path) -> int:
    """Remove the temporary files (``temp_path_for``) in ``directory`` and its immediate
    sub-folders that belong to a process that no longer runs (killed mid-transfer);
    another live process's, and this process's own, are left alone. Returns how many."""
    removed = 0
    folders = [directory, *(p for p in directory.iterdir() if p.is_dir())]
    for folder in folders:
        for path in folder.glob(".*.part"):
            match = _TEMPORARY.match(path.name)
            if match is None:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or _alive(pid):
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def temp_path_for(final: Path) -> Path:
    """A temporary name next to ``final``, unique to this process and write, hidden (a
    leading dot) and ending in ``.part``: renamed to ``final`` once complete."""
    return final.parent / f".{final.stem}.{os.getpid()}.{next(_tmp_ids)}.part"


class Sink(Protocol):
    """Somewhere to put received instances: ``open`` is called when a C-STORE-RQ command
    arrives and returns the writer that receives its data set."""

    def open(self, request: StoreRequest) -> StoreWriter: ...


class _Spares:
    """Empty unnamed files (Linux ``O_TMPFILE``) made ahead of need in one folder, by a
    thread of the event loop's executor, a few at a time.

    Creating a file is the slowest step of receiving a small instance, and it can stall
    for a millisecond or more while the file system writes back what came before; an
    unnamed file made ahead takes that off the event loop. It gets its name only when the
    instance is complete (a link to the final name), and one that is never used vanishes
    with its descriptor: a process that stops or dies leaves nothing behind, and nothing
    shows in the folder before an instance is complete. Where the platform cannot make
    them (no ``O_TMPFILE``) or name them (no ``/proc``, a security policy), the pool turns
    itself off (a file already taken is copied out instead) and every writer creates its
    own temporary file.
    """

    #: How many unnamed files are kept ready; refilled once fewer than half are left.
    KEEP = 8

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ready: collections.deque[int] = collections.deque()
        self.making = False
        #: The latest batch being made (or made).
        self.refill: asyncio.Future[list[int]] | None = None
        self.usable: bool | None = None if _TMPFILE else False  # None: not tried yet
        self.pid = os.getpid()
        weakref.finalize(self, _close_all, self.ready)

    def take(self) -> int | None:
        """A ready descriptor (to be linked or closed by the taker), or None."""
        if self.usable is False:
            return None
        if self.pid != os.getpid():  # forked: the descriptors are the parent's too
            self.ready.clear()
            self.pid, self.making = os.getpid(), False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # not on an event loop: nothing made ahead
        fd = self.ready.popleft() if self.ready else None
        if not self.making and len(self.ready) < self.KEEP // 2:
            self.making = True
            wanted = self.KEEP - len(self.ready)
            made = loop.run_in_executor(None, _make_unnamed, self.directory, wanted)
            made.add_done_callback(self._made)
            self.refill = made
        return fd

    def disable(self, error: OSError) -> None:
        """Naming an unnamed file failed here: make no more (writers create .part files)."""
        if self.usable is not False:
            log.info("%s: receiving through .part files: %s", self.directory, error)
        self.usable = False
        _close_all(self.ready)
        self.ready.clear()

    def _made(self, future: asyncio.Future[list[int]]) -> None:
        self.making = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if self.usable is None:
                log.debug("%s: no unnamed files made ahead: %s", self.directory, error)
                self.usable = False
            return
        if self.usable is False:  # disabled meanwhile
            _close_all(future.result())
            return
        self.usable = True
        self.ready.extend(future.result())


#: Why linking an unnamed file can fail where a copy still works: no /proc (ENOENT), a
#: policy (EPERM, EACCES), another file system (EXDEV), no support (EOPNOTSUPP, EINVAL).
_CANNOT_LINK = frozenset(
    {errno.ENOENT, errno.EPERM, errno.EACCES, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL}
)

#: Linux: an unnamed file in a folder, given a name later (open(2), O_TMPFILE).
_TMPFILE = getattr(os, "O_TMPFILE", 0) if sys.platform == "linux" else 0


def _make_unnamed(directory: Path, count: int) -> list[int]:
    """``count`` new unnamed files in ``directory`` (run off the event loop). Nothing shows
    in the folder: whether they can be named here is learnt at the first commit."""
    flags = _TMPFILE | os.O_RDWR | getattr(os, "O_CLOEXEC", 0)  # readable: see _copy_out
    made: list[int] = []
    try:
        for _ in range(count):
            made.append(os.open(directory, flags, 0o644))
    except BaseException:
        _close_all(made)
        raise
    return made


def _link_unnamed(fd: int, name: Path) -> None:
    """Give the unnamed file open as ``fd`` the name ``name`` (linkat(2) through /proc,
    which needs no privilege; FileExistsError if the name is taken)."""
    os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=_root_fd(os.getpid()), follow_symlinks=True)


@functools.lru_cache(maxsize=1)
def _root_fd(pid: int) -> int:
    """A descriptor of ``/`` for this process (``pid``: a forked child opens its own).
    os.link calls linkat(2), which follows /proc's link, only when given a folder
    descriptor (ignored here: the source path is absolute)."""
    return os.open("/", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def _close_all(fds: Iterable[int]) -> None:
    for fd in list(fds):
        with contextlib.suppress(OSError):
            os.close(fd)


class FileWriter:
    """Writes one instance to a temporary file, then gives it its final name.

    Unbuffered OS-level writes: the data set arrives in PDV-sized pieces that go straight
    to the file, with no Python file object in between. The temporary file is an unnamed
    one made ahead by the sink (see :class:`_Spares`; ``tmp`` is then its ``/proc`` path,
    readable like any file), else a hidden ``.part`` file next to the final name.
    """

    __slots__ = ("_fd", "_unnamed", "final", "fsync", "request", "sink", "tmp")

    def __init__(
        self, sink: DirectorySink, request: StoreRequest, final: Path, fsync: bool
    ) -> None:
        self.sink = sink
        self.request = request
        self.final = final
        self.fsync = fsync
        spare = sink.spares.take()
        self._unnamed = spare is not None
        if spare is not None:
            self._fd: int | None = spare
            self.tmp = Path(f"/proc/self/fd/{spare}")
        else:
            self.tmp = temp_path_for(final)
            # O_EXCL: a temporary name is never shared; closed in commit/discard.
            self._fd = os.open(self.tmp, _CREATE_FLAGS, 0o644)
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
            raise StatusError(OUT_OF_RESOURCES, detail="writer already closed", service="C-STORE")
        try:
            if self.fsync:
                os.fsync(fd)
            if self._unnamed:
                self._name_unnamed(fd)
        finally:
            os.close(fd)
        if not self._unnamed:
            self._into_place(self.tmp)
        if self.fsync:
            _fsync_dir(self.final.parent)
        return None

    def _name_unnamed(self, fd: int) -> None:
        """Link the complete unnamed file to its final name; a name already taken (an
        instance sent again) is replaced through a temporary name, atomically. Where
        linking cannot work (no /proc, a security policy, the final folder on another file
        system), the file is copied out under a temporary name instead."""
        try:
            try:
                _link_unnamed(fd, self.final)
                return
            except FileExistsError:
                tmp = temp_path_for(self.final)
                _link_unnamed(fd, tmp)
        except OSError as exc:
            if exc.errno not in _CANNOT_LINK:
                raise  # (a full disk, an I/O error: the store fails, as any write would)
            self.sink.spares.disable(exc)
            tmp = self._copy_out(fd)
        self._into_place(tmp)

    def _into_place(self, tmp: Path) -> None:
        """Rename the complete temporary file to the final name (removed if that fails)."""
        try:
            os.replace(tmp, self.final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _copy_out(self, fd: int) -> Path:
        """The unnamed file's bytes in a new temporary file next to the final name."""
        tmp = temp_path_for(self.final)
        out = os.open(tmp, _CREATE_FLAGS, 0o644)
        try:
            offset = 0
            while chunk := os.pread(fd, 1 << 20, offset):
                _write_all(out, chunk)
                offset += len(chunk)
            if self.fsync:
                os.fsync(out)
        except BaseException:
            os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(out)
        return tmp

    def discard(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # an unnamed file is gone with its descriptor
        if not self._unnamed:
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

    #: The writer class (a subclass may index what it commits, as the archive does).
    writer: type[FileWriter] = FileWriter

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        #: Unnamed files made ahead for the writers (see :class:`_Spares`).
        self.spares = _Spares(self.directory)
        removed = remove_stale_temporaries(self.directory)
        if removed:
            log.warning(
                "%s: removed %d temporary file(s) left by a process that is gone",
                self.directory,
                removed,
            )

    def path_for(self, sop_instance_uid: str) -> Path:
        if not is_valid_uid(sop_instance_uid):
            raise StatusError(
                CANNOT_UNDERSTAND,
                detail=f"SOP Instance UID {sop_instance_uid[:40]!r} is not a valid UID",
                service="C-STORE",
            )
        return self.directory / f"{sop_instance_uid}.dcm"

    def open(self, request: StoreRequest) -> FileWriter:
        final = self.path_for(request.sop_instance_uid)
        if not is_valid_uid(request.sop_class_uid) or not is_valid_uid(request.transfer_syntax):
            raise StatusError(CANNOT_UNDERSTAND, detail="invalid SOP Class UID", service="C-STORE")
        return self.writer(self, request, final, self.fsync)


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
        if not is_completed(status):
            return
        instance = StoredInstance.from_store(request, writer)
        for listener in list(self.listeners):
            result = listener(instance)
            if asyncio.iscoroutine(result):
                await result


class MoveTracker:
    """The instances of one C-MOVE arriving at a receiver (a storage server on this loop)."""

    def __init__(
        self,
        key: tuple[str, int],
        release: Callable[[MoveTracker], None],
        query: Query | None = None,
    ) -> None:
        self.key = key
        #: The UIDs the C-MOVE asked for, by keyword (StudyInstanceUID, SeriesInstanceUID,
        #: SOPInstanceUID): the last way to tell whose an instance is.
        self.wanted: dict[str, frozenset[str]] = _wanted_uids(query or {})
        #: How the instances were matched to this move when not by the exact originator.
        self.rules: set[str] = set()
        self.instances: list[StoredInstance] = []
        #: Called with each instance as it arrives (the C-MOVE's iterator listens here).
        self.on_instance: Callable[[StoredInstance], None] | None = None
        self._release = release
        self._changed = asyncio.Event()

    @staticmethod
    def key_for(ae: str, message_id: int) -> tuple[str, int]:
        return (ae.strip(), message_id)

    def add(self, instance: StoredInstance, rule: str = EXACT) -> None:
        if rule != EXACT and rule not in self.rules:
            self.rules.add(rule)
            log.info(
                "C-MOVE %s #%d: instance %s matched by %s",
                self.key[0],
                self.key[1],
                instance.sop_instance_uid,
                rule,
            )
        self.instances.append(instance)
        if self.on_instance is not None:
            self.on_instance(instance)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` instances have arrived, at most ``timeout`` seconds; whether
        they did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.instances) < count:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "C-MOVE reported %d completed sub-operations but %d arrived here",
                    count,
                    len(self.instances),
                )
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def close(self) -> None:
        """Stop tracking (the C-MOVE is over)."""
        self._release(self)

    def wants(self, instance: StoredInstance) -> bool:
        """Whether the instance's UIDs are among those the C-MOVE asked for (False when
        the query named none, or they cannot be read)."""
        if not self.wanted:
            return False
        found = {"SOPInstanceUID": instance.sop_instance_uid}
        if self.wanted.keys() - found.keys():
            found.update(_instance_uids(instance))
        return all(found.get(key) in values for key, values in self.wanted.items())


def _wanted_uids(query: Query) -> dict[str, frozenset[str]]:
    wanted: dict[str, frozenset[str]] = {}
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = query.get(key)
        if value is None or value == "":
            continue
        # PS3.4 C.2.2.2.2: a list of UIDs, as a multi-value or backslash-separated text.
        values = str(value).split("\\") if isinstance(value, str) else list(value)
        cleaned = frozenset(str(v).strip() for v in values if str(v).strip())
        if cleaned:
            wanted[key] = cleaned
    return wanted


def _instance_uids(instance: StoredInstance) -> dict[str, str]:
    """The Study and Series Instance UIDs of a received instance (its header read)."""
    # Deferred: pydicom takes ~0.3 s to import; only a move whose SCP misnames the
    # originator gets here.
    from pydicom import dcmread

    ds: Dataset
    try:
        if instance.path is not None:
            ds = dcmread(
                instance.path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID"],
            )
        else:
            ds = instance.dataset
    except Exception as exc:
        log.debug("cannot read the UIDs of %s: %s", instance.sop_instance_uid, exc)
        return {}
    return {
        key: str(ds.get(key, "") or "").strip() for key in ("StudyInstanceUID", "SeriesInstanceUID")
    }


class MoveReceiver(Protocol):
    """Where a C-MOVE's sub-operations arrive, on this loop (a StorageServer)."""

    def expect_move(self, ae: str, message_id: int, query: Query | None = None) -> MoveTracker:
        """Start collecting the instances of the move ``(ae, message_id)`` (``query``, its
        identifier, helps match instances whose SCP misnames the originator)."""

    def expects_move(self, ae: str, message_id: int) -> bool:
        """Whether a move with this originator and Message ID is being collected."""
