"""Helpers for the C-GET / C-MOVE tests: a Q/R handler over files, sinks that hold a transfer.

Test modules import it as ``from _retrieve_support import FileArchive`` (``tests/`` is on
``sys.path``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.multival import MultiValue

import aiodimse
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.requests import FindRequest, RetrieveRequest, StoreRequest
from aiodimse.sinks import DirectorySink

#: PS3.4 C.6.1.1 / C.6.2.1: the unique key of each Query/Retrieve level.
LEVEL_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_LEVELS = tuple(LEVEL_KEYS)


@dataclass(frozen=True)
class IndexEntry:
    """What an archive index knows of an instance: where it is and its UID (so that a file
    that turns out to be unreadable can still be named in the Failed SOP Instance UID List)."""

    path: Path
    sop_instance_uid: str


@dataclass(frozen=True)
class Record:
    """One file of the archive with the keys used to match it."""

    path: Path
    keys: dict[str, str]


def _values(value: Any) -> set[str]:
    """A key's values: PS3.4 C.2.2.2.2 list of UID matching (backslash-separated)."""
    if value is None:
        return set()
    if isinstance(value, (list, tuple, MultiValue)):
        return {str(v).strip() for v in value if str(v).strip()}
    text = str(value).strip()
    return {v.strip() for v in text.split("\\") if v.strip()} if text else set()


class FileArchive:
    """A Query/Retrieve handler over a set of Part 10 files (PS3.4 C.4, unique keys only).

    ``on_find`` answers at the requested level with the keys asked for; ``on_get`` and
    ``on_move`` return the paths whose unique keys match. Every retrieve request is kept in
    :attr:`requests` so that tests can look at ``request.cancelled`` afterwards.
    """

    def __init__(self, paths: Iterable[Path], *, extra: Sequence[Any] = ()) -> None:
        self.records: list[Record] = []
        for path in paths:
            ds = dcmread(path, stop_before_pixels=True)
            keys = {kw: str(ds.get(kw, "")) for kw in LEVEL_KEYS.values()}
            self.records.append(Record(Path(path), keys))
        #: Items added to every retrieve answer (e.g. an unreadable file).
        self.extra = list(extra)
        self.requests: list[RetrieveRequest] = []
        self.find_requests: list[FindRequest] = []
        self.retrieved = asyncio.Event()

    def match(self, identifier: Dataset) -> list[Record]:
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in LEVEL_KEYS:
            raise aiodimse.StatusError(0xA900, detail=f"no such level {level!r}")
        depth = _LEVELS.index(level)
        wanted = {
            kw: _values(identifier.get(kw))
            for kw in (LEVEL_KEYS[lv] for lv in _LEVELS[: depth + 1])
        }
        return [
            r
            for r in self.records
            if all(not values or r.keys[kw] in values for kw, values in wanted.items())
        ]

    async def on_find(self, request: FindRequest) -> Any:
        self.find_requests.append(request)
        level = str(request.identifier.get("QueryRetrieveLevel", "")).strip().upper()
        key = LEVEL_KEYS.get(level)
        seen: set[str] = set()
        for record in self.match(request.identifier):
            assert key is not None
            if record.keys[key] in seen:
                continue
            seen.add(record.keys[key])
            found = Dataset()
            found.QueryRetrieveLevel = level
            for lv in _LEVELS[: _LEVELS.index(level) + 1]:
                kw = LEVEL_KEYS[lv]
                setattr(found, kw, record.keys[kw])
            yield found

    def _retrieve(self, request: RetrieveRequest) -> list[Any]:
        self.requests.append(request)
        self.retrieved.set()
        return [r.path for r in self.match(request.identifier)] + self.extra

    def on_get(self, request: RetrieveRequest) -> list[Any]:
        return self._retrieve(request)

    def on_move(self, request: RetrieveRequest) -> list[Any]:
        return self._retrieve(request)


class _HeldWriter:
    """A DirectorySink writer whose commit may wait on a gate first."""

    def __init__(self, inner: Any, gate: Callable[[], Awaitable[None]] | None) -> None:
        self.inner = inner
        self.gate = gate

    @property
    def final(self) -> Path:
        return Path(self.inner.final)

    def write(self, data: bytes | memoryview) -> None:
        self.inner.write(data)

    async def commit(self) -> int | None:
        if self.gate is not None:
            await self.gate()
        result: int | None = await self.inner.commit()
        return result

    def discard(self) -> None:
        self.inner.discard()


class HoldingSink:
    """A DirectorySink that makes the ``hold_at``-th instance (1-based) wait for ``gate()``
    before it is committed: a transfer stopped at a known point, with no timing guesses."""

    def __init__(
        self,
        directory: Path,
        hold_at: int | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        self.inner = DirectorySink(directory)
        self.hold_at = hold_at
        self.gate = gate
        self.delay = delay
        self.opened = 0
        self.reached = asyncio.Event()

    async def _hold(self) -> None:
        self.reached.set()
        if self.gate is not None:
            await asyncio.wait_for(self.gate(), 20)

    async def _sleep(self) -> None:
        await asyncio.sleep(self.delay)

    def open(self, request: StoreRequest) -> _HeldWriter:
        self.opened += 1
        inner = self.inner.open(request)
        if self.opened == self.hold_at:
            return _HeldWriter(inner, self._hold)
        return _HeldWriter(inner, self._sleep if self.delay else None)


def data_set_of(path: Path) -> bytes:
    """The bytes of a Part 10 file after its meta information (from ``dataset_offset``)."""
    info = read_part10(path)
    with open(path, "rb") as fh:
        fh.seek(info.dataset_offset)
        data = fh.read()
    assert data == dataset_bytes(path, info)
    return data


def originals(paths: Iterable[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of each file."""
    return {read_part10(p).sop_instance_uid: data_set_of(p) for p in paths}


def received(directory: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every Part 10 file in a folder (any name)."""
    out: dict[str, bytes] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            out[read_part10(path).sop_instance_uid] = data_set_of(path)
    return out


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
