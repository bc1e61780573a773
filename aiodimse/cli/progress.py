"""Live progress for long commands (instances, rate, MiB/s, ETA, failures) and ``--json``
events, one JSON object per line on standard output.

On a terminal the display uses ``rich`` when it is installed (the ``cli`` extra), else a
plain line rewritten in place; off a terminal it prints nothing until the summary, so
logs and pipes stay clean.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

__all__ = ["LiveProgress", "emit"]


def emit(event: str, **fields: Any) -> None:
    """One ``--json`` event: a JSON object on a line of its own, flushed at once."""
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LiveProgress:
    """Counts done / failed instances and bytes; shows them live on a terminal.

    ``total`` may be None (a C-MOVE/C-GET learns it from the pending responses: call
    :meth:`set_total`). Never raises from a display problem: progress is a courtesy.
    """

    def __init__(self, label: str, total: int | None, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.failed = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last_draw = 0.0
        self._rich: Any = None
        self._task: Any = None
        if self.enabled:
            self._start_rich()

    def _start_rich(self) -> None:
        try:
            import rich.progress as rp  # the optional "cli" extra; only on a terminal
            from rich.console import Console
        except ImportError:
            return
        columns = (
            rp.TextColumn("{task.description}"),
            rp.BarColumn(),
            rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[rate]}"),
            rp.TextColumn("[red]{task.fields[failures]}"),
            rp.TimeRemainingColumn(),
        )
        self._rich = rp.Progress(*columns, console=Console(stderr=True), transient=False)
        self._task = self._rich.add_task(self.label, total=self.total, rate="", failures="")
        self._rich.start()

    # -- counting ---------------------------------------------------------------------------

    def set_total(self, total: int | None) -> None:
        if total is not None and total != self.total:
            self.total = total
            if self._rich is not None:
                self._rich.update(self._task, total=total)

    def step(self, *, size: int = 0, failed: bool = False) -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
            self.bytes += size
        self._draw()

    def advance_to(self, done: int, failed: int = 0) -> None:
        """Counts from a C-GET/C-MOVE pending response."""
        self.done, self.failed = done, failed
        self._draw()

    # -- figures ------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        """Instances a second so far."""
        return self.done / self.elapsed

    @property
    def mib_per_s(self) -> float:
        return self.bytes / self.elapsed / 2**20

    @property
    def eta(self) -> float | None:
        if self.total is None or self.done == 0:
            return None
        left = self.total - self.done - self.failed
        return max(left, 0) / self.rate

    def line(self) -> str:
        """The progress as one line of text (also the summary's figures)."""
        of = f"/{self.total}" if self.total is not None else ""
        mib = f", {self.mib_per_s:.1f} MiB/s" if self.bytes else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.label} {self.done}{of} ({self.rate:,.0f}/s{mib}{failed}, ETA {_eta(self.eta)})"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "failed": self.failed,
            "total": self.total,
            "bytes": self.bytes,
            "seconds": round(self.elapsed, 3),
            "per_second": round(self.rate, 1),
            "mib_per_second": round(self.mib_per_s, 2),
        }

    # -- display ------------------------------------------------------------------------------

    def _draw(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.total is not None and self.done + self.failed >= self.total
        if now - self._last_draw < 0.1 and not finished:
            return
        self._last_draw = now
        if self._rich is not None:
            mib = f"{self.mib_per_s:.1f} MiB/s" if self.bytes else ""
            self._rich.update(
                self._task,
                completed=self.done + self.failed,
                rate=f"{self.rate:,.0f}/s {mib}",
                failures=f"{self.failed} failed" if self.failed else "",
            )
        else:
            print(f"\r{self.line()}\x1b[K", end="", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line on stderr (an error, say) that does not tangle with the live display."""
        if self._rich is not None and self.enabled:
            self._rich.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(f"\r{text}\x1b[K", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._draw()
            self._rich.stop()
        else:
            print(f"\r{self.line()}\x1b[K", file=sys.stderr, flush=True)
        self.enabled = False
