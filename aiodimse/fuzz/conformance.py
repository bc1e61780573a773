"""``aiodimse conformance``: a fixed battery of known-answer checks of a DICOM SCP, each
drawn from a clause of PS3.8 or PS3.7/PS3.4 (the checks are in :mod:`.checks`).

:func:`check` runs the battery and returns a :class:`ConformanceReport`: per check its
clause, what was sent, what the standard expects, what came back and a verdict (pass,
fail, n/a when the peer does not offer what the check needs, inconclusive when the
standard allows the answer seen but it is not the precise one, or nothing could be
concluded). Every check opens its own connection(s) and is bounded in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import checks_association, checks_dimse
from .probe import Check, Outcome, Probe, Stop, Verdict

#: Every check, in the order the battery runs them.
BATTERY: list[Check] = [*checks_association.CHECKS, *checks_dimse.CHECKS]

__all__ = ["CheckResult", "ConformanceReport", "Verdict", "check", "check_ids", "format_table"]

#: A check's own bound, in multiples of the probe timeout (a few waits each at most).
CHECK_BOUND = 4


@dataclass(frozen=True)
class CheckResult:
    """One check as it ran against the peer."""

    id: str
    title: str
    clause: str
    verdict: Verdict
    sent: str
    expected: str
    got: str
    why: str
    seconds: float


@dataclass
class ConformanceReport:
    """The whole battery against one peer."""

    host: str
    port: int
    aec: str
    aet: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, verdict: Verdict) -> int:
        return sum(1 for r in self.results if r.verdict == verdict)

    @property
    def failed(self) -> bool:
        return self.count(Verdict.FAIL) > 0

    def by_id(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.id == check_id:
                return r
        raise KeyError(check_id)

    def summary(self) -> str:
        return (
            f"{self.count(Verdict.PASS)} pass, {self.count(Verdict.FAIL)} fail, "
            f"{self.count(Verdict.NOT_APPLICABLE)} n/a, "
            f"{self.count(Verdict.INCONCLUSIVE)} inconclusive "
            f"({len(self.results)} checks, {self.seconds:.1f} s)"
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [{**asdict(r), "verdict": str(r.verdict)} for r in self.results]
        out["summary"] = {str(v): self.count(v) for v in Verdict}
        return out


def check_ids() -> list[str]:
    """The ids of every check, in battery order."""
    return [c.id for c in BATTERY]


async def _run_one(probe: Probe, spec: Check) -> CheckResult:
    started = time.monotonic()
    bound = CHECK_BOUND * probe.timeout + 5.0
    try:
        async with asyncio.timeout(bound):
            outcome = await spec.run(probe)
    except Stop as stop:
        outcome = stop.outcome
    except TimeoutError:
        outcome = Outcome(Verdict.INCONCLUSIVE, f"the check did not end within {bound:g} s")
    except Exception as exc:  # the battery always completes: a check that broke says so
        outcome = Outcome(
            Verdict.INCONCLUSIVE, f"the check could not complete: {type(exc).__name__}: {exc}"
        )
    return CheckResult(
        spec.id,
        spec.title,
        spec.clause,
        outcome.verdict,
        spec.sent,
        spec.expected,
        outcome.got,
        outcome.why,
        round(time.monotonic() - started, 3),
    )


async def check(
    host: str,
    port: int,
    *,
    aec: str,
    aet: str = "AIODIMSE",
    timeout: float = 5.0,
    only: Iterable[str] = (),
) -> ConformanceReport:
    """Run the battery (or the checks named in ``only``) against ``host:port``.

    ValueError for an unknown check id. The caller decides whether the target may be
    probed (:func:`aiodimse.fuzz.safety.check_target`).
    """
    wanted = list(only)
    unknown = sorted(set(wanted) - set(check_ids()))
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(check_ids())}")
    selected = [c for c in BATTERY if not wanted or c.id in wanted]
    probe = Probe(host, port, aec, aet, timeout)
    started = time.monotonic()
    await probe.learn()
    report = ConformanceReport(host, port, aec, aet)
    for spec in selected:
        report.results.append(await _run_one(probe, spec))
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(report: ConformanceReport, *, width: int = 60) -> str:
    """The report as a text table (id, check, clause, verdict, expected, got) and a summary."""
    rows: list[Sequence[str]] = [("id", "check", "clause", "verdict", "expected", "got")]
    for r in report.results:
        got = r.got + (f" — {r.why}" if r.why and r.verdict != Verdict.PASS else "")
        rows.append(
            (
                r.id,
                _cut(r.title, 44),
                _cut(r.clause, 34),
                str(r.verdict),
                _cut(r.expected, width),
                _cut(got, width + 20),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 3)
    head = f"conformance of {report.aec} at {report.host}:{report.port} (calling AE {report.aet})"
    return "\n".join([head, *lines, report.summary()])
