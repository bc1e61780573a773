"""The stateful fuzz engine: cases run one at a time against an SCP, judged by the oracles
(crash, hang, leak, conformance), grouped by signature, minimised and saved as replay
files.

``await run("127.0.0.1", 11112, aec="ANY-SCP", cases=500)`` returns a :class:`FuzzReport`;
the ``aiodimse fuzz`` command wraps it.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import uids
from ..association import connect
from ..config import Timeouts
from ..errors import AiodimseError, AssociationRejected
from ..ul.negotiation import ContextRequest
from .cases import Case, Step, build_case
from .oracle import Answer, Association, Problem, StepRecord, completes, judge
from .safety import check_target
from .session import CLOSED, TIMEOUT, RawSession

__all__ = [
    "REPLAY_FORMAT",
    "Finding",
    "FuzzReport",
    "Replay",
    "execute",
    "load_replay",
    "replay",
    "run",
]

#: The "format" field of every replay file.
REPLAY_FORMAT = "aiodimse-fuzz-replay/1"

Restart = Callable[[], Awaitable[None]]
OnEvent = Callable[[dict[str, Any]], None]


@dataclass
class Finding:
    """One bug: every case with the same signature (kind, step, what came back)."""

    kind: str
    step: str
    came_back: str
    detail: str
    clause: str
    seed: int
    index: int
    case: str
    steps: tuple[Step, ...]
    count: int = 1
    minimised: bool = False
    reproduced: bool | None = None
    replay_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.kind, self.step, self.came_back)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "came_back": self.came_back,
            "detail": self.detail,
            "clause": self.clause,
            "seed": self.seed,
            "index": self.index,
            "case": self.case,
            "count": self.count,
            "steps": len(self.steps),
            "bytes": sum(len(s.data) for s in self.steps),
            "minimised": self.minimised,
            "reproduced": self.reproduced,
            "replay_file": self.replay_file,
            **self.extra,
        }


@dataclass
class FuzzReport:
    """What a run did and found."""

    host: str
    port: int
    seed: int
    cases: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    stopped_by: str = ""
    layers: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    findings: list[Finding] = field(default_factory=list)
    rss_kib: tuple[int, int] | None = None
    fds: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def rate(self) -> float:
        return self.cases / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "report",
            "target": f"{self.host}:{self.port}",
            "seed": self.seed,
            "cases": self.cases,
            "elapsed_s": round(self.elapsed, 3),
            "cases_per_s": round(self.rate, 1),
            "interrupted": self.interrupted,
            "stopped_by": self.stopped_by,
            "layers": dict(sorted(self.layers.items())),
            "answered": self.answered,
            "rss_kib": list(self.rss_kib) if self.rss_kib else None,
            "fds": list(self.fds) if self.fds else None,
            "findings": [f.to_json() for f in self.findings],
        }

    def summary(self) -> str:
        lines = [
            f"fuzz {self.host}:{self.port} seed {self.seed}: {self.cases} cases in "
            f"{self.elapsed:.1f} s ({self.rate:.1f} cases/s)"
            + (" - interrupted" if self.interrupted else "")
            + (f" - stopped: {self.stopped_by}" if self.stopped_by else ""),
            "layers: " + ", ".join(f"{k} {v}" for k, v in sorted(self.layers.items())),
        ]
        if self.rss_kib:
            lines.append(f"target RSS {self.rss_kib[0]} -> {self.rss_kib[1]} KiB (after warm-up)")
        if self.fds:
            lines.append(f"target open files {self.fds[0]} -> {self.fds[1]}")
        lines.append(f"findings: {len(self.findings)}")
        for i, f in enumerate(self.findings, 1):
            lines.append(
                f"  {i}. {f.kind}: {f.detail} [{f.step} -> {f.came_back}] x{f.count}, "
                f"case {f.seed}/{f.index} ({f.case})"
            )
            lines.append(f"     breaks: {f.clause}")
            state = "minimised" if f.minimised else "not minimised"
            repro = {True: "reproduces", False: "did not reproduce", None: "not re-run"}
            lines.append(
                f"     {len(f.steps)} steps, {sum(len(s.data) for s in f.steps)} bytes, {state}, "
                f"{repro[f.reproduced]}" + (f"; replay: {f.replay_file}" if f.replay_file else "")
            )
        return "\n".join(lines)


# -- running one script ---------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How long to wait: for an owed answer (the hang bound), for anything else."""

    hang: float = 10.0
    quiet: float = 0.01
    connect: float = 5.0
    #: After an owed answer came: anything sent right behind it (e.g. a PDU after the RP).
    drain: float = 0.003


async def _send(session: RawSession, step: Step) -> bool:
    if step.chunk:
        for i in range(0, len(step.data), step.chunk):
            if i and step.pause:
                await asyncio.sleep(step.pause)
            if not await session.send(step.data[i : i + step.chunk]):
                return False
        return True
    if step.pause:
        await asyncio.sleep(step.pause)
    return await session.send(step.data)


async def execute(
    host: str, port: int, steps: Sequence[Step], timing: Timing = Timing()
) -> list[StepRecord]:
    """Run the steps on a fresh connection and record what comes back after each."""
    try:
        session = await RawSession.open(host, port, timeout=timing.connect)
    except (OSError, TimeoutError):
        return [StepRecord(steps[0], False, None, [Answer("refused", 0.0)])] if steps else []
    assoc = Association()
    records: list[StepRecord] = []
    async with session:
        for step in steps:
            if assoc.closed:
                break
            expected = assoc.expectation(step)
            sent = await _send(session, step)
            if step.close:
                session.half_close()
            record = StepRecord(step, sent, expected if sent else None)
            records.append(record)
            deadline = time.monotonic() + (timing.hang if record.expected else timing.quiet)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    record.answers.append(Answer(TIMEOUT, session.elapsed))
                    break
                item = await session.receive(left)
                answer = assoc.absorb(item, session.elapsed)
                record.answers.append(answer)
                if isinstance(item, str):
                    break
                if record.expected and not record.completed:
                    if completes(record.expected, answer, step):
                        record.completed = True
                        deadline = time.monotonic() + timing.drain
                else:
                    deadline = time.monotonic() + timing.quiet
            if (not sent and assoc.closed) or (record.expected and not record.completed):
                break  # the peer is gone or stuck: later steps would show nothing new
    return records


# -- the target's health ----------------------------------------------------------------------


async def _accepts(host: str, port: int, timeout: float = 2.0) -> bool:
    for attempt in range(3):
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return True
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1 * (attempt + 1))
    return False


async def alive(host: str, port: int, *, calling: str, called: str) -> str | None:
    """None if a fresh association is accepted (and answers a C-ECHO when Verification is
    accepted), else why not."""
    contexts = [
        ContextRequest(uids.VERIFICATION_SOP_CLASS),
        ContextRequest(uids.STUDY_ROOT_QR_FIND),
        ContextRequest(uids.STORAGE_SOP_CLASSES["CTImageStorage"]),
    ]
    try:
        async with asyncio.timeout(15):
            async with connect(
                host,
                port,
                calling_ae=calling,
                called_ae=called,
                contexts=contexts,
                timeouts=Timeouts(connect=5, acse=5, dimse=5),
            ) as assoc:
                negotiated = assoc.negotiated
                if negotiated is not None and any(
                    c.abstract_syntax == uids.VERIFICATION_SOP_CLASS for c in negotiated.accepted
                ):
                    await assoc.echo()
    except (AiodimseError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def health(
    host: str, port: int, *, calling: str, called: str, patience: float = 10.0
) -> tuple[str, str] | None:
    """None when the target serves a fresh association; else ("crash", why) when nothing
    answers, or ("unavailable", why) when it keeps refusing associations (A-ASSOCIATE-RJ)
    for ``patience`` seconds: alive, but not serving others."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        why = await alive(host, port, calling=calling, called=called)
        if why is None:
            return None
        if not why.startswith(AssociationRejected.__name__):
            return ("crash", why)
        if time.monotonic() + delay > deadline:
            return ("unavailable", why)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def _proc_sample(pid: int) -> tuple[int, int] | None:
    """(VmRSS in KiB, open file descriptors) of a process, None if it is gone."""
    try:
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None


# -- the run ------------------------------------------------------------------------------------


@dataclass
class _Target:
    host: str
    port: int
    calling: str
    called: str
    timing: Timing
    restart: Restart | None

    async def run_case(self, steps: Sequence[Step]) -> tuple[list[StepRecord], list[Problem]]:
        """Run the steps; the problems they show, a crash included."""
        records = await execute(self.host, self.port, steps, self.timing)
        problems = judge(records)
        answers = {a.what for r in records for a in r.answers}
        ended = {"A-ABORT", "A-ASSOCIATE-RJ", "A-RELEASE-RP"} & answers
        # Only a connection that ended without a word (closed, refused) hints at a crash;
        # the liveness check every ``check_every`` cases covers the rest. A probe is not
        # free: some peers hold even an empty connection for their ARTIM time.
        if (CLOSED in answers or "refused" in answers) and not ended:
            # A dying process may still complete handshakes for a moment: look a bit later.
            await asyncio.sleep(0.05)
            if await _accepts(self.host, self.port):
                return records, problems
            why = await alive(self.host, self.port, calling=self.calling, called=self.called)
            if why is not None:
                # The step the connection had reached when the target went away.
                label = records[-1].step.label if records else _fault_label(steps)
                problems.append(
                    Problem(
                        "crash",
                        label,
                        "port closed",
                        f"the target stopped accepting connections ({why})",
                        "robustness: the SCP must survive any input (PS3.8 9.2: bad input "
                        "ends one association, not the service)",
                    )
                )
                if self.restart is not None:
                    await self.restart()
        return records, problems


def _fault_label(steps: Sequence[Step]) -> str:
    for s in steps:
        if s.fault:
            return s.label
    return steps[0].label if steps else "nothing"


def _replay_doc(finding: Finding, calling: str, called: str) -> dict[str, Any]:
    return {
        "format": REPLAY_FORMAT,
        "seed": finding.seed,
        "index": finding.index,
        "case": finding.case,
        "calling_ae": calling,
        "called_ae": called,
        "finding": {
            "kind": finding.kind,
            "step": finding.step,
            "came_back": finding.came_back,
            "detail": finding.detail,
            "clause": finding.clause,
            **finding.extra,
        },
        "steps": [s.to_json() for s in finding.steps],
    }


async def _reproduces(
    target: _Target,
    steps: Sequence[Step],
    signature: tuple[str, str, str],
    *,
    pid: int | None,
    leak_repeat: int,
    leak_kib_per_case: float,
) -> bool:
    if signature[0] == "leak":
        if pid is None:
            return False
        before = _proc_sample(pid)
        for _ in range(leak_repeat):
            await execute(target.host, target.port, steps, target.timing)
        after = _proc_sample(pid)
        if before is None or after is None:
            return False
        if signature[2] == "open files":
            return after[1] - before[1] >= leak_repeat // 2
        return after[0] - before[0] >= leak_repeat * leak_kib_per_case / 2
    _, problems = await target.run_case(steps)
    return any(p.signature == signature for p in problems)


async def _minimise(
    target: _Target,
    finding: Finding,
    *,
    pid: int | None,
    attempts: int,
    leak_repeat: int,
    leak_kib_per_case: float,
) -> None:
    """Fewest steps, then shortest bytes, while the same signature still reproduces."""

    async def check(steps: Sequence[Step]) -> bool:
        return await _reproduces(
            target,
            steps,
            finding.signature,
            pid=pid,
            leak_repeat=leak_repeat,
            leak_kib_per_case=leak_kib_per_case,
        )

    left = attempts
    finding.reproduced = await check(finding.steps)
    left -= 1
    if not finding.reproduced:
        return
    steps = list(finding.steps)
    # Fewest steps: drop one at a time, last first (the association RQ goes last).
    i = len(steps) - 1
    while i >= 0 and left > 0 and len(steps) > 1:
        candidate = steps[:i] + steps[i + 1 :]
        left -= 1
        if await check(candidate):
            steps = candidate
        i -= 1
    # Shortest bytes: no pauses, then cut each step's tail (halves, then quarters).
    if any(s.pause or s.chunk for s in steps) and left > 0:
        candidate = [replace(s, pause=0.0, chunk=None) for s in steps]
        left -= 1
        if await check(candidate):
            steps = candidate
    for k in range(len(steps)):
        # A step the oracles judge keeps its bytes: cutting it would change what is owed.
        if steps[k].expect or steps[k].fault:
            continue
        for fraction in (2, 4):
            if left <= 0:
                break
            data = steps[k].data
            cut = len(data) - len(data) // fraction
            if cut <= 6 or cut >= len(data):
                continue
            # The PDU length follows the cut, so that the shorter PDU is still whole.
            shorter = data[:2] + struct.pack(">L", cut - 6) + data[6:cut]
            candidate = [*steps[:k], replace(steps[k], data=shorter), *steps[k + 1 :]]
            left -= 1
            if await check(candidate):
                steps = candidate
                break
    finding.minimised = len(steps) < len(finding.steps) or sum(len(s.data) for s in steps) < sum(
        len(s.data) for s in finding.steps
    )
    finding.steps = tuple(steps)


async def run(
    host: str,
    port: int,
    *,
    aec: str,
    aet: str = "AIODIMSE-FUZZ",
    seed: int = 1,
    cases: int | None = None,
    duration: float | None = None,
    out: Path | str | None = None,
    pid: int | None = None,
    i_own_this_host: bool = False,
    hang_timeout: float = 10.0,
    quiet: float = 0.01,
    check_every: int = 25,
    minimise: bool = True,
    max_attempts: int = 24,
    patience: float = 10.0,
    leak_rss_mib: float = 64.0,
    leak_fds: int = 32,
    warmup: int | None = None,
    restart: Restart | None = None,
    on_event: OnEvent | None = None,
    stop: asyncio.Event | None = None,
    first_index: int = 0,
) -> FuzzReport:
    """Fuzz the SCP at ``host:port`` with cases (seed, first_index...) until ``cases`` (default
    1,000 when neither bound is given) or ``duration`` seconds, or ``stop`` is set.

    ``pid`` (the target's process) turns on the leak oracle; ``restart`` is awaited after a
    crash to bring the target back (else the run ends at the first crash); ``out`` is the
    directory for replay files; ``patience`` is how long a target may refuse the liveness
    association (A-ASSOCIATE-RJ) before it is "unavailable". ValueError for a target that is
    not ours to probe.
    """
    check_target(host, i_own_this_host=i_own_this_host)
    if cases is None and duration is None:
        cases = 1000
    emit = on_event or (lambda _e: None)
    out_dir = Path(out) if out is not None else None
    timing = Timing(hang=hang_timeout, quiet=quiet)
    target = _Target(host, port, aet, aec, timing, restart)
    report = FuzzReport(host, port, seed)
    started = time.monotonic()
    deadline = started + duration if duration is not None else None
    found: dict[tuple[str, str, str], Finding] = {}
    warm = warmup if warmup is not None else max(10, (cases or 200) // 20)
    baseline: tuple[int, int] | None = None
    growth: dict[str, list[int]] = {}  # case name -> RSS growth (KiB) per case
    fd_growth: dict[str, int] = {}
    exemplar: dict[str, tuple[int, Case]] = {}

    why = await alive(host, port, calling=aet, called=aec)
    if why is not None:
        raise ValueError(f"{host}:{port} does not accept an association before fuzzing: {why}")

    def record(case: Case, problem: Problem) -> None:
        key = problem.signature
        if key in found:
            found[key].count += 1
            return
        finding = Finding(
            problem.kind, problem.step, problem.came_back, problem.detail, problem.clause,
            case.seed, case.index, case.name, case.steps,
        )  # fmt: skip
        found[key] = finding
        emit({"event": "finding", **finding.to_json()})

    index = first_index
    try:
        while True:
            if cases is not None and report.cases >= cases:
                break
            if deadline is not None and time.monotonic() >= deadline:
                report.stopped_by = "time"
                break
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            case = build_case(seed, index, calling_ae=aet, called_ae=aec)
            before = _proc_sample(pid) if pid is not None else None
            records, problems = await target.run_case(case.steps)
            report.cases += 1
            report.layers[case.layer] = report.layers.get(case.layer, 0) + 1
            report.answered += any(a.is_pdu for r in records for a in r.answers)
            for p in problems:
                record(case, p)
            crashed = any(p.kind == "crash" for p in problems)
            if crashed and restart is None:
                report.stopped_by = "crash"
                break
            if pid is not None:
                after = _proc_sample(pid)
                if after is None:
                    if not crashed:
                        record(case, Problem("crash", case.steps[0].label, "process gone",
                                             f"process {pid} is gone", "robustness"))  # fmt: skip
                    report.stopped_by = "target process gone"
                    break
                if report.cases == warm:
                    baseline = after
                elif baseline is not None and before is not None:
                    delta = after[0] - before[0]
                    growth.setdefault(case.name, []).append(delta)
                    fd_growth[case.name] = fd_growth.get(case.name, 0) + after[1] - before[1]
                    if delta > exemplar.get(case.name, (-(1 << 60), case))[0]:
                        exemplar[case.name] = (delta, case)
            if report.cases % check_every == 0:
                bad = await health(host, port, calling=aet, called=aec, patience=patience)
                if bad is not None:
                    kind, why = bad
                    came_back = "no association" if kind == "crash" else "A-ASSOCIATE-RJ"
                    # Not attributable to one case: one signature for the whole run.
                    label = _fault_label(case.steps) if kind == "crash" else "liveness check"
                    record(case, Problem(kind, label, came_back,
                                         f"a fresh association failed: {why}",
                                         "robustness: the SCP keeps serving others"))  # fmt: skip
                    if kind == "crash":
                        if restart is None:
                            report.stopped_by = "crash"
                            break
                        await restart()
                emit({"event": "progress", "cases": report.cases, "findings": len(found)})
            index += 1
    except asyncio.CancelledError:
        report.interrupted = True
    report.elapsed = time.monotonic() - started

    # The leak oracle: growth over the run after warm-up, blamed on the case family
    # that grew the most.
    leak_per_case = 0.0
    if pid is not None and baseline is not None:
        end = _proc_sample(pid)
        if end is not None:
            report.rss_kib = (baseline[0], end[0])
            report.fds = (baseline[1], end[1])
            rss_up = end[0] - baseline[0]
            fds_up = end[1] - baseline[1]
            if (rss_up > leak_rss_mib * 1024 or fds_up > leak_fds) and exemplar:
                by_fds = fds_up > leak_fds
                if by_fds:
                    name = max(fd_growth, key=lambda k: fd_growth[k])
                else:
                    name = max(growth, key=lambda k: sum(growth[k]))
                per_case = sum(growth[name]) / max(1, len(growth[name]))
                leak_per_case = max(per_case, 256.0)
                _, case = exemplar[name]
                what = "open files" if by_fds else "RSS"
                problem = Problem(
                    "leak",
                    case.name,
                    "open files" if by_fds else "rss",
                    f"target {what} grew by {fds_up if by_fds else rss_up // 1024} "
                    f"{'' if by_fds else 'MiB '}after warm-up, most after {name} cases "
                    f"({per_case:.0f} KiB each)",
                    "robustness: resources held per association must be released",
                )
                record(case, problem)
                found[problem.signature].extra["kib_per_case"] = round(per_case, 1)

    report.findings = list(found.values())
    # Re-running needs a live target: after a crash with no way to restart it (or once
    # the user asked to stop), the findings are saved as found.
    target_down = report.stopped_by in ("crash", "target process gone")
    for finding in report.findings:
        stopping = stop is not None and stop.is_set()
        if minimise and finding.kind != "unavailable" and not target_down and not stopping:
            await _minimise(
                target,
                finding,
                pid=pid,
                attempts=max_attempts,
                leak_repeat=8,
                leak_kib_per_case=leak_per_case,
            )
        # "unavailable" is the state of the target over many cases, not one case to replay.
        if out_dir is not None and finding.kind != "unavailable":
            out_dir.mkdir(parents=True, exist_ok=True)
            n = report.findings.index(finding) + 1
            path = out_dir / f"finding-{seed}-{n:02d}-{finding.kind}.json"
            path.write_text(json.dumps(_replay_doc(finding, aet, aec), indent=1) + "\n")
            finding.replay_file = str(path)
    return report


# -- replay -------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A replay file: the steps and the finding they showed."""

    steps: tuple[Step, ...]
    signature: tuple[str, str, str]
    doc: dict[str, Any]


def load_replay(path: Path | str) -> Replay:
    """Read a replay file; ValueError (one line) if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != REPLAY_FORMAT:
            raise ValueError(f"{path}: not an aiodimse fuzz replay file")
        steps = tuple(Step.from_json(s) for s in doc["steps"])
        f = doc["finding"]
        signature = (str(f["kind"]), str(f["step"]), str(f["came_back"]))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the replay file ({exc})") from None
    if not steps:
        raise ValueError(f"{path}: the replay file has no steps")
    return Replay(steps, signature, doc)


async def replay(
    path: Path | str,
    host: str,
    port: int,
    *,
    pid: int | None = None,
    i_own_this_host: bool = False,
    hang_timeout: float = 10.0,
    quiet: float = 0.01,
) -> tuple[bool, list[StepRecord]]:
    """Send a replay file's steps again; whether the same finding shows, and the records."""
    check_target(host, i_own_this_host=i_own_this_host)
    r = load_replay(path)
    doc = r.doc
    target = _Target(
        host,
        port,
        str(doc.get("calling_ae", "AIODIMSE-FUZZ")),
        str(doc.get("called_ae", "ANY-SCP")),
        Timing(hang=hang_timeout, quiet=quiet),
        None,
    )
    if r.signature[0] == "leak":
        per_case = float(doc["finding"].get("kib_per_case", 256.0))
        ok = await _reproduces(
            target, r.steps, r.signature, pid=pid, leak_repeat=8, leak_kib_per_case=per_case
        )
        return ok, []
    records, problems = await target.run_case(r.steps)
    return any(p.signature == r.signature for p in problems), records
