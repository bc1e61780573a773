"""What a bulk retrieval job is, as data: its sources, method, destination, work and
limits. A spec is written to the journal before any transfer starts, so that a job can be
resumed from the journal alone."""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import check_ae_title
from ..query import MODELS

__all__ = [
    "DEFAULT_ASSOCIATIONS",
    "METHODS",
    "WORK_KEYS",
    "JobSpec",
    "Limits",
    "Source",
    "TimeWindow",
    "WorkItem",
    "parse_rate",
    "read_work_file",
]

#: Associations per source unless the job says otherwise.
DEFAULT_ASSOCIATIONS = 4

#: How instances are brought: C-MOVE to our own storage server, C-GET on the association,
#: or C-MOVE to a third-party AE (PACS-to-PACS migration).
Method = Literal["move", "get", "move-to"]
METHODS: tuple[str, ...] = ("move", "get", "move-to")

#: The keys a list of work items may name (one per line of a text or CSV file).
WORK_KEYS: tuple[str, ...] = ("StudyInstanceUID", "AccessionNumber", "PatientID")


@dataclass(frozen=True)
class Source:
    """A PACS to retrieve from: its address and called AE title; ``associations`` open at
    once (the per-source limit)."""

    host: str
    port: int
    called_ae: str
    associations: int = DEFAULT_ASSOCIATIONS
    model: str = "study"

    def __post_init__(self) -> None:
        check_ae_title(self.called_ae, "called AE")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range 1-65535")
        if self.associations < 1:
            raise ValueError(f"associations must be at least 1, not {self.associations}")
        if self.model.lower() not in MODELS:
            raise ValueError(f"unknown query model {self.model!r}")

    @property
    def name(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"


@dataclass(frozen=True)
class WorkItem:
    """One line of the work list: a key (StudyInstanceUID, AccessionNumber or PatientID)
    and its value; ``priority`` orders the work (higher first)."""

    key: str
    value: str
    priority: int = 0


@dataclass(frozen=True)
class TimeWindow:
    """Hours when transfers may start, e.g. 19:00-07:00 (across midnight)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if match is None:
            raise ValueError(f"time window {text!r}: expected HH:MM-HH:MM, e.g. 19:00-07:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"time window {text!r}: not a time of day")
        return cls(dt.time(h1, m1), dt.time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, when: dt.datetime) -> bool:
        now = when.time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def seconds_until_open(self, when: dt.datetime) -> float:
        """0 inside the window; otherwise the seconds until it opens."""
        if self.contains(when):
            return 0.0
        opening = when.replace(
            hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0
        )
        if opening <= when:
            opening += dt.timedelta(days=1)
        return (opening - when).total_seconds()


def parse_rate(text: str) -> tuple[float | None, float | None]:
    """``50/s`` (instances per second) or ``20MiB/s`` (MiB per second) ->
    (instances_per_second, bytes_per_second)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(MiB|MB|KiB|kB)?\s*/\s*s\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r}: expected e.g. 50/s (instances) or 20MiB/s")
    value, unit = float(match.group(1)), match.group(2)
    if unit is None:
        return value, None
    scale = {"MiB": 1 << 20, "MB": 10**6, "KiB": 1 << 10, "kB": 10**3}[unit]
    return None, value * scale


@dataclass(frozen=True)
class Limits:
    """Politeness: at most ``instances_per_second`` / ``bytes_per_second`` received, and
    transfers started only inside ``window``; transient failures retried up to
    ``max_attempts`` times per study, waiting ``backoff`` seconds doubled each time (with
    jitter), at most ``max_backoff``."""

    instances_per_second: float | None = None
    bytes_per_second: float | None = None
    window: TimeWindow | None = None
    max_attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 300.0
    #: Seconds a C-MOVE may stay without a response (it restarts on each pending one).
    dimse_timeout: float = 120.0


@dataclass(frozen=True)
class JobSpec:
    """A whole job. ``destination`` is a folder (method move or get: one sub-folder per
    study, or with ``archive`` an embedded archive's storage) or, for ``move-to``, the AE
    title instances are sent to; ``verify`` is where that AE answers IMAGE-level C-FINDs
    (host, port, AE), if it does. The work is ``query`` (keys
    of a STUDY-level C-FIND run on each source) or ``items``; ``listen`` is the address our
    storage server takes for ``move``, known to the sources as ``calling_ae``."""

    sources: tuple[Source, ...]
    method: Method = "move"
    destination: str = ""
    calling_ae: str = "AIODIMSE"
    query: Mapping[str, str] = field(default_factory=dict)
    items: tuple[WorkItem, ...] = ()
    listen: tuple[str, int] | None = None
    verify: tuple[str, int, str] | None = None
    limits: Limits = field(default_factory=Limits)
    #: The destination folder is an embedded archive's storage (indexed, served by
    #: ``aiodimse qrscp --storage``) rather than one folder per study.
    archive: bool = False

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("a job needs at least one source")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        check_ae_title(self.calling_ae, "calling AE")
        if not self.destination:
            what = "an AE title" if self.method == "move-to" else "a folder"
            raise ValueError(f"a {self.method} job needs a destination ({what})")
        if self.method == "move-to":
            check_ae_title(self.destination, "destination AE")
            if self.archive:
                raise ValueError("a move-to job sends to an AE, not into an archive")
        if self.method == "move" and self.listen is None:
            raise ValueError(
                "a move job needs the port our storage server listens on (the sources "
                f"send to AE {self.calling_ae} there)"
            )
        if bool(self.query) == bool(self.items):
            raise ValueError("a job needs either a query or a list of studies, not both")
        for item in self.items:
            if item.key not in WORK_KEYS:
                raise ValueError(f"work item key {item.key!r} is not one of {WORK_KEYS}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        window = self.limits.window
        data["limits"]["window"] = None if window is None else str(window)
        data["query"] = dict(self.query)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        limits = dict(data.get("limits") or {})
        if limits.get("window"):
            limits["window"] = TimeWindow.parse(limits["window"])
        listen = data.get("listen")
        verify = data.get("verify")
        return cls(
            sources=tuple(Source(**s) for s in data["sources"]),
            method=data["method"],
            destination=data["destination"],
            calling_ae=data.get("calling_ae", "AIODIMSE"),
            query=dict(data.get("query") or {}),
            items=tuple(WorkItem(**i) for i in data.get("items") or ()),
            listen=None if listen is None else (str(listen[0]), int(listen[1])),
            verify=None if verify is None else (str(verify[0]), int(verify[1]), str(verify[2])),
            limits=Limits(**limits),
            archive=bool(data.get("archive", False)),
        )


def _rows(path: Path) -> Iterator[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        if path.suffix.lower() == ".csv":
            yield from csv.reader(fh)
        else:
            for line in fh:
                text = line.split("#", 1)[0].strip()
                if text:
                    yield [text]


def read_work_file(path: str | Path, key: str = "StudyInstanceUID") -> list[WorkItem]:
    """Work items from a text file (one value per line, ``#`` comments) or a CSV file (a
    header row naming ``key``, and optionally ``priority``; without a header, the first
    column). Duplicates are dropped; ValueError names the file and line of a bad row."""
    path = Path(path)
    if key not in WORK_KEYS:
        raise ValueError(f"{key!r} is not one of {', '.join(WORK_KEYS)}")
    items: list[WorkItem] = []
    seen: set[str] = set()
    rows = list(_rows(path))
    column, priority_column, start = 0, None, 0
    if path.suffix.lower() == ".csv" and rows and key in [c.strip() for c in rows[0]]:
        header = [c.strip() for c in rows[0]]
        column = header.index(key)
        priority_column = header.index("priority") if "priority" in header else None
        start = 1
    for number, row in enumerate(rows[start:], start=start + 1):
        if not row or not any(c.strip() for c in row):
            continue
        if column >= len(row):
            raise ValueError(f"{path}:{number}: no {key} column")
        value = row[column].strip()
        priority = 0
        if priority_column is not None and priority_column < len(row):
            try:
                priority = int(row[priority_column] or 0)
            except ValueError:
                raise ValueError(f"{path}:{number}: priority {row[priority_column]!r}") from None
        if key == "StudyInstanceUID" and not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
            raise ValueError(f"{path}:{number}: {value[:64]!r} is not a UID")
        if value and value not in seen:
            seen.add(value)
            items.append(WorkItem(key, value, priority))
    return items


def sources_named(specs: Sequence[str], associations: int) -> tuple[Source, ...]:
    """Sources from ``AE@host:port`` strings."""
    out = []
    for text in specs:
        ae, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not host or not port.isdigit():
            raise ValueError(f"source {text!r}: expected AE@host:port")
        out.append(Source(host, int(port), ae, associations))
    return tuple(out)


def unique(items: Iterable[WorkItem]) -> list[WorkItem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        if (item.key, item.value) not in seen:
            seen.add((item.key, item.value))
            out.append(item)
    return out
