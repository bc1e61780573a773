"""The embedded archive: a Storage and Query/Retrieve SCP over files and a SQLite index.

:class:`Archive` is a handler for :class:`aiodimse.Server`: received instances are streamed
to a temporary file by the :class:`~aiodimse.storage.DirectorySink` writer, their header
(groups up to 0020, never the pixel data) is read once, the file is renamed into place and
its index row committed; only then is Success answered. C-FIND is answered from the index
alone; C-GET and C-MOVE send the files of the matching instances.

Layout of ``storage_dir``: ``index.sqlite`` (WAL mode) and ``files/<xx>/<SOP Instance
UID>.dcm``, where ``xx`` spreads the files over 256 folders (two hex digits of a hash of the
UID), so that a file's place never depends on its study or series: an instance re-sent
with another study keeps its file and only its index rows move.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from .. import uids
from ..config import DEFAULT_HOST
from ..dimse.status import CANNOT_UNDERSTAND, IDENTIFIER_DOES_NOT_MATCH, OUT_OF_RESOURCES
from ..errors import StatusError, store_error_status
from ..query import encode_identifier, to_dataset
from ..requests import FindRequest, RetrieveRequest, StoreRequest
from ..results import StoredInstance
from ..server import Server
from ..sinks import DirectorySink, FileWriter, Listener, temp_path_for
from .header import read_header
from .index import (
    LEVELS,
    RECORD_TAGS,
    UNIQUE_KEYS,
    Index,
    Plan,
    Record,
    element_text,
    format_value,
    is_busy,
    plan_query,
)

__all__ = ["Archive", "ArchiveServer"]

log = logging.getLogger("aiodimse.archive")

#: The levels each information model has (PS3.4 C.6.1, C.6.2, C.6.3).
MODEL_LEVELS: Final = {
    "patient": LEVELS,
    "study": ("STUDY", "SERIES", "IMAGE"),
    "psonly": ("PATIENT", "STUDY"),
}
_MODEL_OF_UID: Final = {
    uids.PATIENT_ROOT_QR_FIND: "patient",
    uids.PATIENT_ROOT_QR_GET: "patient",
    uids.PATIENT_ROOT_QR_MOVE: "patient",
    uids.STUDY_ROOT_QR_FIND: "study",
    uids.STUDY_ROOT_QR_GET: "study",
    uids.STUDY_ROOT_QR_MOVE: "study",
    uids.PATIENT_STUDY_ONLY_QR_FIND: "psonly",
    uids.PATIENT_STUDY_ONLY_QR_GET: "psonly",
    uids.PATIENT_STUDY_ONLY_QR_MOVE: "psonly",
}
#: How many times a store waits the index's busy timeout before failing (A700).
INDEX_RETRIES: Final = 4
_MODEL_NAMES: Final = {
    "patient": "patient root",
    "study": "study root",
    "psonly": "patient/study only",
}


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """An instance a C-GET/C-MOVE sends: its file, and its UID as the index knows it (so
    that a file gone missing or corrupt is still named in the Failed SOP Instance UID
    List, PS3.4 C.4.2.1.5)."""

    path: Path
    sop_instance_uid: str


def _bucket(sop_instance_uid: str) -> str:
    return hashlib.blake2b(sop_instance_uid.encode("ascii"), digest_size=1).hexdigest()


class _ArchiveWriter(FileWriter):
    """The DirectorySink writer, plus: read the header before the rename, index after it.

    Success is answered only once the file is in place and its index row committed; if
    either fails, the file is removed and a failure status answered.
    """

    __slots__ = ()

    async def commit(self) -> int | None:
        if not self.is_open:
            raise StatusError(OUT_OF_RESOURCES, detail="writer already closed", service="C-STORE")
        sink = self.sink
        assert isinstance(sink, _ArchiveSink)
        archive = sink.archive
        uid = self.request.sop_instance_uid
        try:
            header, _ = read_header(self.tmp, RECORD_TAGS)
            record = Record.from_header(header, self.request.transfer_syntax)
        except Exception as exc:
            # A data set we cannot read is the sender's problem (C000); running out of
            # file descriptors or memory while reading it is ours (A700).
            raise StatusError(
                store_error_status(exc),
                detail=f"cannot read the data set: {exc}"[:64],
                service="C-STORE",
            ) from None
        problem = record.problem()
        if problem is None and record.sop_instance_uid != uid:
            problem = "the data set's SOP Instance UID is not the command's"
        if problem is not None:
            raise StatusError(CANNOT_UNDERSTAND, detail=problem, service="C-STORE")
        await super().commit()  # flush (+fsync) and rename into place
        try:
            size = self.final.stat().st_size
            await archive.index_instance(record, archive.relative(self.final), size)
        except Exception as exc:
            log.error("cannot index %s: %s", uid, exc)
            with contextlib.suppress(OSError):
                os.unlink(self.final)
            with contextlib.suppress(Exception):
                archive.index.remove(uid)  # a replaced instance's row would point nowhere
            raise StatusError(
                OUT_OF_RESOURCES, detail=f"cannot index: {exc}"[:64], service="C-STORE"
            ) from None
        archive.stored_count += 1
        if archive.listeners:
            instance = StoredInstance.from_store(self.request, self)
            for listener in list(archive.listeners):
                try:
                    result = listener(instance)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # stored and indexed already: a listener cannot undo it
                    log.exception("a listener failed on %s", uid)
        return None


class _ArchiveSink(DirectorySink):
    """DirectorySink whose files go to ``files/<xx>/`` and whose writer indexes them."""

    writer = _ArchiveWriter

    def __init__(self, archive: Archive, directory: Path, *, fsync: bool) -> None:
        super().__init__(directory, fsync=fsync)
        self.archive = archive
        self._buckets: set[str] = set()

    def path_for(self, sop_instance_uid: str) -> Path:
        flat = super().path_for(sop_instance_uid)  # validates the UID (PS3.5 9.1)
        bucket = _bucket(sop_instance_uid)
        folder = self.directory / bucket
        if bucket not in self._buckets:
            folder.mkdir(exist_ok=True)
            self._buckets.add(bucket)
        return folder / flat.name


class Archive:
    """Files + SQLite index; a handler object for :class:`aiodimse.Server`.

    ``storage_dir`` is created if needed. ``fsync=True`` flushes each file and the index
    to stable storage before Success is answered. ``ae_title`` is returned as Retrieve AE
    Title (0008,0054) when a query asks for it.
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str],
        *,
        fsync: bool = False,
        ae_title: str | None = None,
    ) -> None:
        self.root = Path(storage_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files_dir = self.root / "files"
        self.index = Index(self.root / "index.sqlite", synchronous="FULL" if fsync else "NORMAL")
        self.sink = _ArchiveSink(self, self.files_dir, fsync=fsync)
        self.ae_title = ae_title
        self.stored_count = 0
        #: Called with each instance once it is on disk and indexed (sync or async).
        self.listeners: list[Listener] = []
        #: ((stored_count, the index's data_version) when computed, what
        #: retrieve_transfer_syntaxes answers): other processes may store too.
        self._held: tuple[tuple[int, int], dict[str, list[str]]] | None = None
        self._closed = False

    def close(self) -> None:
        """Close the index (idempotent)."""
        if not self._closed:
            self._closed = True
            self.index.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def index_instance(self, record: Record, path: str, size: int) -> None:
        """Index one stored instance. If another process (``qrscp --workers``) holds the
        write lock past the busy timeout, try again after a pause on the event loop, up to
        :data:`INDEX_RETRIES` times: Success is never answered without the row, and a
        store fails (A700) only if the index stays locked."""
        for attempt in range(INDEX_RETRIES):
            try:
                self.index.put(record, path, size)
                return
            except Exception as exc:
                if not is_busy(exc) or attempt == INDEX_RETRIES - 1:
                    raise
                log.warning("index busy storing %s (try %d): %s", path, attempt + 1, exc)
            await asyncio.sleep(0.05 * 2**attempt)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def count(self, level: str = "IMAGE") -> int:
        """How many patients, studies, series or instances (``level``) are indexed."""
        return self.index.count(level)

    # -- filling it without the network ----------------------------------------------

    def ingest(self, paths: Iterable[str | os.PathLike[str]], *, batch: int = 500) -> int:
        """Copy existing Part 10 files (or the files under folders) into the archive and
        index them, committing every ``batch`` files. Files that are not DICOM, or lack
        the UIDs the index needs, are skipped. Returns how many were ingested.

        Synchronous: call it before serving, not from a running server's loop.
        """
        pending: list[tuple[Record, Path, Path, int]] = []
        done = 0
        for path in _walk(paths):
            staged = self._stage(path)
            if staged is not None:
                pending.append(staged)
            if len(pending) >= batch:
                done += self._commit_batch(pending)
        done += self._commit_batch(pending)
        return done

    def _stage(self, path: Path) -> tuple[Record, Path, Path, int] | None:
        try:
            header, ts = read_header(path, RECORD_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            log.debug("ingest: skipping %s: %s", path, exc)
            return None
        record = Record.from_header(header, ts)
        problem = record.problem()
        if problem is None and not uids.is_valid_uid(record.sop_instance_uid):
            problem = "its SOP Instance UID is not a valid UID"
        if problem is not None:
            log.warning("ingest: skipping %s: %s", path, problem)
            return None
        final = self.sink.path_for(record.sop_instance_uid)
        tmp = temp_path_for(final)
        try:
            shutil.copyfile(path, tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return record, tmp, final, tmp.stat().st_size

    def _commit_batch(self, pending: list[tuple[Record, Path, Path, int]]) -> int:
        if not pending:
            return 0
        self._held = None  # what the index holds changes
        index = self.index
        renamed: list[Path] = []
        index.begin()
        try:
            for record, _, final, size in pending:
                index.upsert(record, self.relative(final), size)
            for _, tmp, final, _ in pending:
                os.replace(tmp, final)
                renamed.append(final)
            index.commit()
        except BaseException:
            index.rollback()
            for _, tmp, _, _ in pending:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for final in renamed:
                with contextlib.suppress(OSError):
                    os.unlink(final)
            raise
        finally:
            n = len(pending)
            pending.clear()
        return n

    # -- queries without the network ---------------------------------------------------

    def query(self, identifier: Dataset | Mapping[str, Any], model: str = "study") -> list[Dataset]:
        """Answer a C-FIND identifier locally: the response identifiers, as the SCP would
        send them. StatusError for an identifier the model does not allow."""
        ds = to_dataset(identifier)
        level = self._level(ds, model, "C-FIND")
        plan = plan_query(ds, level, retrieve_ae_title=self.ae_title)
        return [self._response(plan, row) for row in self.index.rows(plan)]

    def retrieve_paths(
        self, identifier: Dataset | Mapping[str, Any], model: str = "study"
    ) -> list[Path]:
        """The files a C-GET/C-MOVE with this identifier sends (see :meth:`on_get`)."""
        return [f.path for f in self._files(to_dataset(identifier), model, "C-GET")]

    # -- the handler -------------------------------------------------------------------

    def retrieve_transfer_syntaxes(self) -> dict[str, list[str]]:
        """The transfer syntaxes the instances of each SOP class are held in, most
        instances first: a C-GET association is accepted in those where it can be."""
        version = (self.stored_count, self.index.data_version())
        if self._held is None or self._held[0] != version:
            rows = self.index.iter_rows(
                "SELECT sop_class_uid, transfer_syntax, COUNT(*) AS n FROM instances"
                " GROUP BY sop_class_uid, transfer_syntax ORDER BY n DESC"
            )
            held: dict[str, list[str]] = {}
            for sop_class, syntax, _ in rows:
                held.setdefault(str(sop_class), []).append(str(syntax))
            self._held = (version, held)
        return self._held[1]

    def open_store(self, request: StoreRequest) -> FileWriter:
        """C-STORE: stream the data set to a temporary file (see :class:`_ArchiveWriter`)."""
        return self.sink.open(request)

    async def on_find(self, request: FindRequest) -> AsyncIterator[Dataset | bytes]:
        """C-FIND at any level of the request's model, answered from the index. Rows are
        read in batches as the responses go out (never all at once), with a turn of the
        event loop between batches."""
        model = _MODEL_OF_UID.get(request.sop_class_uid, "study")
        started = time.perf_counter()
        level = self._level(request.identifier, model, "C-FIND")
        plan = plan_query(request.identifier, level, retrieve_ae_title=self.ae_title)
        batches = self.index.stream(plan)
        syntax = uids.transfer_syntax(request.transfer_syntax)
        sent = 0
        try:
            for rows in batches:
                for row in rows:
                    values, utf8 = _response_values(plan, row)
                    data = encode_identifier(values, utf8, syntax) if syntax else None
                    yield data if data is not None else self._response(plan, row)
                    sent += 1
                await asyncio.sleep(0)  # a big result must not hold up the others
        finally:
            batches.close()
            log.debug(
                "#%d C-FIND %s level (%s) from %s: %d matches sent, %.1f ms",
                request.association.id,
                level,
                _MODEL_NAMES[model],
                request.calling_ae,
                sent,
                (time.perf_counter() - started) * 1000,
            )

    def on_get(self, request: RetrieveRequest) -> list[IndexedFile]:
        """C-GET: the files of the matching instances, sent back on the association."""
        return self._retrieve(request, "C-GET")

    def on_move(self, request: RetrieveRequest) -> list[IndexedFile]:
        """C-MOVE: the files of the matching instances, sent to ``request.destination``
        (resolved by the server's ``destinations`` table)."""
        return self._retrieve(request, "C-MOVE")

    def _retrieve(self, request: RetrieveRequest, service: str) -> list[IndexedFile]:
        model = _MODEL_OF_UID.get(request.sop_class_uid, "study")
        paths = self._files(request.identifier, model, service)
        log.debug(
            "#%d %s %s level (%s) from %s%s: %d instances",
            request.association.id,
            service,
            request.query_level.strip().upper(),
            _MODEL_NAMES[model],
            request.calling_ae,
            f" to {request.destination.strip()}" if request.destination else "",
            len(paths),
        )
        return paths

    def _files(self, identifier: Dataset, model: str, service: str) -> list[IndexedFile]:
        level = self._level(identifier, model, service)
        # PS3.4 C.4.2.2.1: a retrieve names the entities by the unique key of its level.
        if not element_text(identifier, UNIQUE_KEYS[level]):
            raise StatusError(
                IDENTIFIER_DOES_NOT_MATCH,
                detail=f"a {level} level retrieve needs its unique key",
                service=service,
            )
        plan = plan_query(
            identifier,
            level,
            select=["i.path", "i.sop_uid"],
            from_level="IMAGE",
            order_by="st.id, se.series_number, se.id, i.instance_number, i.id",
        )
        root = self.root
        return [IndexedFile(root / path, uid) for path, uid in self.index.rows(plan)]

    def _level(self, identifier: Dataset, model: str, service: str) -> str:
        level = element_text(identifier, 0x00080052).upper()
        if level not in MODEL_LEVELS[model]:
            allowed = ", ".join(MODEL_LEVELS[model])
            raise StatusError(
                IDENTIFIER_DOES_NOT_MATCH,
                detail=f"Query/Retrieve Level {level!r} is not one of {allowed}"[:64],
                service=service,
            )
        return level

    @staticmethod
    def _response(plan: Plan, row: tuple[Any, ...]) -> Dataset:
        """A response identifier as a pydicom Dataset."""
        values, utf8 = _response_values(plan, row)
        ds = Dataset()
        if utf8:
            # PS3.4 C.4.1.1.3.2: Specific Character Set when values need more than ASCII.
            ds.SpecificCharacterSet = "ISO_IR 192"
        for tag, vr, value in values:
            ds.add_new(tag, vr, [] if vr == "SQ" else value)
        return ds


def _response_values(
    plan: Plan, row: tuple[Any, ...]
) -> tuple[list[tuple[int, str, str | None]], bool]:
    """(tag, VR, text or None for zero length) of each returned key, sorted by tag, and
    whether any value needs UTF-8."""
    values: list[tuple[int, str, str | None]] = []
    utf8 = False
    for item in plan.returned:
        if item.column is not None:
            value: str | None = format_value(item, row[item.column])
        else:
            value = item.constant
        if not value:
            value = None
        elif not utf8 and not value.isascii():
            utf8 = True
        values.append((item.tag, item.vr, value))
    values.sort(key=lambda v: v[0])
    return values, utf8


def _walk(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            for folder, _, names in os.walk(path):
                for name in sorted(names):
                    yield Path(folder) / name
        else:
            yield path


class ArchiveServer(Server):
    """The archive on the network: ``async with ArchiveServer(dir, port=0) as server``.

    Arguments in :class:`~aiodimse.Server`'s order: the storage folder (in place of the
    handler), ``host``, ``port``, then keywords.

    ``server.archive`` is the :class:`Archive`. ``destinations`` maps C-MOVE destination AE
    titles to (host, port); the other options are :class:`~aiodimse.Server`'s. Closing the
    server leaves the archive open (``server.archive.close()`` when done with it).
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str],
        host: str = DEFAULT_HOST,
        port: int = 11112,
        *,
        ae_title: str = "QRSCP",
        destinations: Mapping[str, tuple[str, int]] | None = None,
        allowed_calling: Iterable[str] | None = None,
        max_associations: int = 100,
        check_called_ae: bool = False,
        fsync: bool = False,
        **options: Any,
    ) -> None:
        self.archive = Archive(storage_dir, fsync=fsync, ae_title=ae_title)
        try:
            super().__init__(
                self.archive,
                host,
                port,
                ae_title=ae_title,
                destinations=destinations,
                allowed_calling=allowed_calling,
                max_associations=max_associations,
                check_called_ae=check_called_ae,
                **options,
            )
        except BaseException:
            self.archive.close()
            raise

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(StoredInstance)`` for every instance stored and indexed."""
        self.archive.listeners.append(listener)
