"""A hostile SCP for testing SCUs and storage senders (``aiodimse fuzz --listen PORT``).

Each incoming connection is one case, identified by (seed, index = connection number): it
answers the A-ASSOCIATE-RQ with one behaviour (a broken A-ASSOCIATE-AC, an odd
A-ASSOCIATE-RJ, wrong statuses, truncated or oversize responses, endless pendings,
unrequested C-STORE sub-operations, a release or an abort in mid-operation, silence) and
records what the SCU does. The SCU is flagged only where PS3.8 / PS3.7 clearly forbid
what it did; a flagged case is saved as a replay file that :func:`replay_hostile` serves
again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .hostile_case import BEHAVIOURS, FAILED_BEHAVIOURS, Case, pick_behaviour
from .session import RawSession

__all__ = [
    "BEHAVIOURS",
    "FAILED_BEHAVIOURS",
    "REPLAY_FORMAT",
    "HostileReport",
    "HostileSCP",
    "pick_behaviour",
    "replay_hostile",
    "serve_hostile",
]

#: The ``format`` field of a replay file.
REPLAY_FORMAT = "aiodimse-hostile-replay/1"
#: Seconds a case may last (the SCU's silence, our endless pendings, its close) by default.
DEFAULT_CASE_TIMEOUT = 10.0


@dataclass
class HostileReport:
    """What a run of the hostile SCP saw: one event dict per case, in index order."""

    seed: int
    host: str
    port: int
    cases: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    stopped_by: str = ""
    out: str | None = None

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [c for c in self.cases if c["flags"]]

    def to_json(self) -> dict[str, Any]:
        by_behaviour: dict[str, dict[str, Any]] = {}
        for case in self.cases:
            entry = by_behaviour.setdefault(case["behaviour"], {"cases": 0, "ends": Counter()})
            entry["cases"] += 1
            entry["ends"][case["end"]] += 1
        return {
            "seed": self.seed,
            "listen": f"{self.host}:{self.port}",
            "cases_run": len(self.cases),
            "elapsed": round(self.elapsed, 3),
            "stopped_by": self.stopped_by,
            "flagged": len(self.flagged),
            "flag_counts": dict(Counter(f["code"] for c in self.cases for f in c["flags"])),
            "by_behaviour": {
                name: {"cases": v["cases"], "ends": dict(v["ends"])}
                for name, v in sorted(by_behaviour.items())
            },
            "replay_folder": self.out,
            "cases": self.cases,
        }

    def summary(self) -> str:
        lines = [
            f"hostile SCP on {self.host}:{self.port}, seed {self.seed}: {len(self.cases)} "
            f"case(s) in {self.elapsed:.1f}s (stopped by {self.stopped_by or 'nothing'})",
        ]
        ends = Counter(c["end"] for c in self.cases)
        errors = [c for c in self.cases if c["end"] == "hostile_error"]
        if errors:
            lines.append(
                f"  {len(errors)} case(s) failed inside the hostile SCP itself, e.g. case "
                f"{errors[0]['index']}: {errors[0].get('error')}"
            )
        if ends:
            lines.append("  how the SCU ended: " + ", ".join(f"{k} {v}" for k, v in ends.items()))
        flagged = self.flagged
        if not flagged:
            lines.append("  no case flagged: nothing the SCU did is clearly forbidden")
        else:
            codes = Counter(f["code"] for c in flagged for f in c["flags"])
            lines.append(f"  {len(flagged)} case(s) flagged:")
            for code, n in codes.most_common():
                first = next(c for c in flagged if any(f["code"] == code for f in c["flags"]))
                flag = next(f for f in first["flags"] if f["code"] == code)
                lines.append(
                    f"    {code} x{n} ({flag['clause']}), e.g. case {first['index']} "
                    f"[{first['behaviour']}]: {flag['detail']}"
                )
            if self.out:
                lines.append(f"  replay files in {self.out}")
        return "\n".join(lines)


class HostileSCP:
    """The listening hostile SCP. ``await start()`` binds (``port`` 0 picks a free one,
    then read :attr:`port`); ``await run()`` serves until the end condition."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ae_title: str = "HOSTILE",
        seed: int = 1,
        cases: int | None = None,
        duration: float | None = None,
        out: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        stop: asyncio.Event | None = None,
        case_timeout: float = DEFAULT_CASE_TIMEOUT,
        only_index: int | None = None,
    ) -> None:
        if cases is not None and cases < 1:
            raise ValueError("cases must be at least 1")
        if duration is not None and duration <= 0:
            raise ValueError("duration must be positive")
        if case_timeout <= 0:
            raise ValueError("case_timeout must be positive")
        self.host = host
        self.port = port
        self.ae_title = ae_title
        self.seed = seed
        self.max_cases = cases
        self.duration = duration
        self.out = out
        self.on_event = on_event
        self.stop = stop or asyncio.Event()
        self.case_timeout = case_timeout
        self.only_index = only_index
        self.report = HostileReport(seed, host, port, out=str(out) if out else None)
        self._server: asyncio.Server | None = None
        self._accepted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=1 << 16
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self.report.port = self.port

    async def run(self) -> HostileReport:
        """Serve until ``cases`` connections have been answered, ``duration`` has passed or
        ``stop`` is set; cases in progress then finish (each is bounded by its timeout)."""
        if self._server is None:
            await self.start()
        started = time.monotonic()
        waits = [asyncio.create_task(self.stop.wait()), asyncio.create_task(self._done.wait())]
        try:
            done, _ = await asyncio.wait(
                waits, timeout=self.duration, return_when=asyncio.FIRST_COMPLETED
            )
            if waits[1] in done:
                self.report.stopped_by = "cases"
            elif waits[0] in done:
                self.report.stopped_by = "stop"
            else:
                self.report.stopped_by = "duration"
        finally:
            for w in waits:
                w.cancel()
            await self.close()
            self.report.elapsed = time.monotonic() - started
            self.report.cases.sort(key=lambda c: int(c["index"]))
        return self.report

    async def close(self) -> None:
        """Stop listening and let the cases in progress finish."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if (
            self._done.is_set()
            or self.stop.is_set()
            or (self.max_cases is not None and self._accepted >= self.max_cases)
        ):
            writer.close()
            return
        index = self._accepted if self.only_index is None else self.only_index
        self._accepted += 1
        if self.max_cases is not None and self._accepted >= self.max_cases and self._server:
            self._server.close()  # no more connections: this is the last case
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            case = Case(
                RawSession(reader, writer),
                seed=self.seed,
                index=index,
                ae_title=self.ae_title,
                case_timeout=self.case_timeout,
            )
            try:
                event = await case.run()
            except Exception as exc:  # a fault of ours: record it, keep serving
                event = case.event()
                event["end"] = "hostile_error"
                event["error"] = f"{type(exc).__name__}: {exc}"
            if event["flags"] and self.out is not None:
                event["replay"] = str(write_replay(self.out, case, event, self.case_timeout))
            self.report.cases.append(event)
            if self.on_event is not None:
                self.on_event(event)
        finally:
            self._tasks.discard(task)
            if self.max_cases is not None and len(self.report.cases) >= self.max_cases:
                self._done.set()


def write_replay(folder: Path, case: Case, event: dict[str, Any], case_timeout: float) -> Path:
    """Save one case: its identity, what was judged, and every byte both ways."""
    folder.mkdir(parents=True, exist_ok=True)
    codes = "-".join(sorted(f["code"] for f in event["flags"]))
    path = folder / f"hostile-{case.seed}-{case.index:05d}-{case.behaviour}-{codes}.json"
    doc = {
        "format": REPLAY_FORMAT,
        "seed": case.seed,
        "index": case.index,
        "behaviour": case.behaviour,
        "case_timeout": case_timeout,
        "event": event,
        "exchange": case.exchange,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


async def serve_hostile(
    host: str,
    port: int,
    *,
    ae_title: str = "HOSTILE",
    seed: int = 1,
    cases: int | None = None,
    duration: float | None = None,
    out: Path | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    case_timeout: float = DEFAULT_CASE_TIMEOUT,
) -> HostileReport:
    """Listen on host:port and answer each connection with one hostile behaviour (case
    (seed, connection number)) until ``cases`` connections, ``duration`` seconds or
    ``stop``; flagged cases are written to ``out`` as replay files."""
    scp = HostileSCP(
        host,
        port,
        ae_title=ae_title,
        seed=seed,
        cases=cases,
        duration=duration,
        out=out,
        on_event=on_event,
        stop=stop,
        case_timeout=case_timeout,
    )
    await scp.start()
    return await scp.run()


def load_replay(file: Path | str) -> dict[str, Any]:
    """A replay file's contents; ValueError (one line) if it is not one."""
    try:
        doc = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: not a readable replay file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != REPLAY_FORMAT:
        raise ValueError(f"{file}: not a hostile SCP replay file (format {REPLAY_FORMAT})")
    behaviour, _ = pick_behaviour(int(doc["seed"]), int(doc["index"]))
    if behaviour != doc.get("behaviour"):
        raise ValueError(f"{file}: case ({doc['seed']}, {doc['index']}) is not {behaviour}")
    return doc


async def replay_hostile(
    host: str,
    port: int,
    file: Path | str,
    *,
    timeout: float | None = None,
    ready: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Serve the one recorded case of ``file`` once, to the next SCU that connects; the
    event of that case, with ``reproduced`` (the same flags were raised) and
    ``recorded_flags``. ``ready`` is set once listening; ``timeout`` bounds the wait."""
    doc = load_replay(file)
    scp = HostileSCP(
        host,
        port,
        seed=int(doc["seed"]),
        cases=1,
        duration=timeout,
        case_timeout=float(doc.get("case_timeout", DEFAULT_CASE_TIMEOUT)),
        only_index=int(doc["index"]),
    )
    await scp.start()
    if ready is not None:
        ready.set()
    report = await scp.run()
    recorded = sorted(f["code"] for f in doc["event"]["flags"])
    if not report.cases:
        return {"reproduced": False, "recorded_flags": recorded, "port": scp.port, "event": None}
    event = report.cases[0]
    seen = sorted(f["code"] for f in event["flags"])
    return {"reproduced": seen == recorded, "recorded_flags": recorded, "port": scp.port, **event}
