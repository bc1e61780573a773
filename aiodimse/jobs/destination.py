"""Where a job's instances go, and how it checks what is there.

Instances land in ``<folder>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, written through a
temporary file and renamed only once complete (a half-received instance leaves no
file). The study of an instance is known before it arrives when the job has listed the
study's instances; otherwise it is read from the received header before the rename.
What is on disk is the truth the job verifies against: a file counts only if it exists
and its data set is complete.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pydicom import dcmread

from ..archive import Archive
from ..completeness import check_complete
from ..dicomfile import NotDicomError, read_part10
from ..requests import StoreRequest
from ..sinks import DirectorySink, FileWriter, remove_stale_temporaries
from ..uids import is_valid_uid
from .policy import RateLimiter

__all__ = ["ArchiveDestination", "Destination", "StudyFolders"]

log = logging.getLogger("aiodimse.jobs")

#: Local write errors no retry can cure: the destination is full (or refuses the size).
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: Where instances wait while their study is not known yet (renamed from there).
INCOMING = ".incoming"
#: Where an instance goes whose study cannot be read from its header.
UNATTRIBUTED = "unattributed"


class _StudyWriter(FileWriter):
    """A file writer that files the instance under its study when it commits."""

    __slots__ = ("folders",)

    def __init__(
        self, folders: StudyFolders, request: StoreRequest, final: Path, fsync: bool
    ) -> None:
        super().__init__(folders, request, final, fsync)
        self.folders = folders

    def write(self, data: bytes | memoryview) -> None:
        try:
            super().write(data)
        except OSError as exc:
            self.folders.failed(exc)
            raise

    async def commit(self) -> int | None:
        folders = self.folders
        try:
            if self.final.parent.name == INCOMING:
                study = folders.study_from_header(self.tmp)
                self.final = folders.final_for(study, self.final.name)
            size = os.path.getsize(self.tmp)
            await folders.limiter.take(size)
            status = await super().commit()
        except OSError as exc:
            folders.failed(exc)
            raise
        folders.committed(self.request.sop_instance_uid, self.final, size)
        return status


class StudyFolders(DirectorySink):
    """A sink that files instances by study, with an optional rate limit, and the
    checks of what is on disk."""

    writer = _StudyWriter

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        limiter: RateLimiter | None = None,
        fsync: bool = False,
        on_commit: Callable[[str, Path, int], None] | None = None,
    ) -> None:
        super().__init__(directory, fsync=fsync)
        self.limiter = limiter or RateLimiter(None, None)
        self.on_commit = on_commit
        self._study_of: dict[str, str] = {}
        #: The first local write error that no retry can cure (the disk is full).
        self.full: OSError | None = None
        incoming = self.directory / INCOMING
        incoming.mkdir(exist_ok=True)
        remove_stale_temporaries(incoming)

    def open(self, request: StoreRequest) -> FileWriter:
        try:
            return super().open(request)
        except OSError as exc:
            self.failed(exc)
            raise

    def failed(self, exc: OSError) -> None:
        """A write failed here: remember it if it means the destination is full."""
        if exc.errno in FULL and self.full is None:
            self.full = exc
            log.error("%s: %s", self.directory, exc.strerror or exc)

    def expect(self, study_uid: str, sop_instance_uids: Iterable[str]) -> None:
        """Instances about to arrive for ``study_uid`` (filed there without reading them)."""
        for uid in sop_instance_uids:
            self._study_of[uid] = study_uid

    def forget(self, sop_instance_uids: Iterable[str]) -> None:
        for uid in sop_instance_uids:
            self._study_of.pop(uid, None)

    def study_folder(self, study_uid: str) -> Path:
        if not is_valid_uid(study_uid):
            return self.directory / UNATTRIBUTED
        return self.directory / study_uid

    def final_for(self, study_uid: str | None, name: str) -> Path:
        folder = self.study_folder(study_uid or "")
        folder.mkdir(exist_ok=True)
        return folder / name

    def path_for(self, sop_instance_uid: str) -> Path:
        name = super().path_for(sop_instance_uid).name  # checks the UID grammar
        study = self._study_of.get(sop_instance_uid)
        if study is None:
            return self.directory / INCOMING / name
        return self.final_for(study, name)

    @staticmethod
    def study_from_header(path: Path) -> str | None:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except Exception as exc:  # a header pydicom cannot read: filed as unattributed
            log.warning("%s: cannot read its StudyInstanceUID: %s", path.name, exc)
            return None
        return str(ds.get("StudyInstanceUID", "") or "").strip() or None

    def committed(self, sop_instance_uid: str, path: Path, size: int) -> None:
        if self.on_commit is not None:
            self.on_commit(sop_instance_uid, path, size)

    def present(self, study_uid: str, expected: Iterable[str] | None = None) -> set[str]:
        """SOP Instance UIDs of the study that are on disk, complete (all of the study's
        files when ``expected`` is None). An incomplete file is removed: it is fetched
        again."""
        folder = self.study_folder(study_uid)
        if expected is None:
            with contextlib.suppress(FileNotFoundError):
                names = [p.stem for p in folder.glob("*.dcm")]
                return {uid for uid in names if self.complete(folder / f"{uid}.dcm")}
            return set()
        return {uid for uid in expected if self.complete(folder / f"{uid}.dcm")}

    @staticmethod
    def complete(path: Path) -> bool:
        """Whether the file is there with its whole data set (an incomplete one is
        removed: it is fetched again)."""
        try:
            check_complete(path, read_part10(path))
        except FileNotFoundError:
            return False
        except (NotDicomError, OSError) as exc:
            log.warning("%s: %s; it will be fetched again", path, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        return True


class _Counted:
    """An archive writer, with the job's rate limit, full-disk watch and counting."""

    __slots__ = ("dest", "size", "uid", "writer")

    def __init__(self, dest: ArchiveDestination, writer: FileWriter, uid: str) -> None:
        self.dest = dest
        self.writer = writer
        self.uid = uid
        self.size = 0

    @property
    def final(self) -> Path:
        return self.writer.final

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.writer.write(data)
        except OSError as exc:
            self.dest.failed(exc)
            raise
        self.size += len(data)

    async def commit(self) -> int | None:
        await self.dest.limiter.take(self.size)
        try:
            status = await self.writer.commit()
        except OSError as exc:
            self.dest.failed(exc)
            raise
        if self.dest.on_commit is not None:
            self.dest.on_commit(self.uid, self.writer.final, self.size)
        return status

    def discard(self) -> None:
        self.writer.discard()


class ArchiveDestination:
    """Instances go into an embedded archive (``aiodimse qrscp --storage DIR`` serves
    them): each is indexed as it commits, and what is there is asked of its index."""

    def __init__(
        self,
        storage_dir: str | os.PathLike[str],
        *,
        limiter: RateLimiter | None = None,
        fsync: bool = False,
        on_commit: Callable[[str, Path, int], None] | None = None,
    ) -> None:
        self.archive = Archive(storage_dir, fsync=fsync)
        self.limiter = limiter or RateLimiter(None, None)
        self.on_commit = on_commit
        self.full: OSError | None = None

    def open(self, request: StoreRequest) -> _Counted:
        try:
            writer = self.archive.open_store(request)
        except OSError as exc:
            self.failed(exc)
            raise
        return _Counted(self, writer, request.sop_instance_uid)

    def failed(self, exc: OSError) -> None:
        if exc.errno in FULL and self.full is None:
            self.full = exc
            log.error("%s: %s", self.archive.root, exc.strerror or exc)

    def expect(self, study_uid: str, sop_instance_uids: Iterable[str]) -> None:
        """Nothing to prepare: the archive files an instance by its own header."""

    def forget(self, sop_instance_uids: Iterable[str]) -> None:
        """Nothing to forget (see :meth:`expect`)."""

    def present(self, study_uid: str, expected: Iterable[str] | None = None) -> set[str]:
        """SOP Instance UIDs of the study that the archive holds, complete on disk."""
        paths = self.archive.retrieve_paths(
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}
        )
        held = {p.stem: p for p in paths if StudyFolders.complete(p)}
        if expected is None:
            return set(held)
        return {uid for uid in expected if uid in held}

    def close(self) -> None:
        self.archive.close()


#: Where a job's instances go: study folders, or an embedded archive.
Destination = StudyFolders | ArchiveDestination
