"""How a job treats failures and how fast it may go: which failures are worth a retry
(and after how long), which mean the source must be fixed first, and the rate limit."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from ..dimse.status import (
    MOVE_DESTINATION_UNKNOWN,
    OUT_OF_RESOURCES,
    SUBOPERATIONS_COMPLETE_WITH_FAILURES,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
)
from ..enums import RejectResult, RejectSource
from ..errors import (
    AssociationError,
    AssociationRejected,
    NegotiationError,
    StatusError,
)

__all__ = ["Failure", "RateLimiter", "backoff_delay", "classify"]


@dataclass(frozen=True)
class Failure:
    """A failure as the job sees it: ``permanent`` stops the source at once (retrying
    cannot help: the message says what to fix); otherwise the study is retried later."""

    message: str
    permanent: bool = False


def classify(exc: BaseException, *, calling_ae: str, called_ae: str, destination: str) -> Failure:
    """Transient or permanent, with a message for a person (PS3.8 Table 9-21 for
    rejections, PS3.4 C.4.2.1.5 / C.4.3.1.4 for retrieve statuses)."""
    if isinstance(exc, AssociationRejected):
        if exc.result == RejectResult.REJECTED_TRANSIENT:
            return Failure(str(exc))
        if exc.source == RejectSource.SERVICE_USER and exc.reason == 7:
            return Failure(
                f"{exc}: the source does not know the called AE title {called_ae!r} (check --aec)",
                permanent=True,
            )
        if exc.source == RejectSource.SERVICE_USER and exc.reason == 3:
            return Failure(
                f"{exc}: the source does not accept our AE title {calling_ae!r}"
                " (add it to the source's known AEs, or use --aet)",
                permanent=True,
            )
        return Failure(str(exc), permanent=True)
    if isinstance(exc, NegotiationError):
        return Failure(str(exc), permanent=True)
    if isinstance(exc, StatusError):
        if exc.status == MOVE_DESTINATION_UNKNOWN:
            return Failure(
                f"{exc}: the source does not know the move destination {destination!r};"
                " configure that AE title (and our host and port) on the source",
                permanent=True,
            )
        if exc.status in (
            OUT_OF_RESOURCES,
            UNABLE_TO_PERFORM_SUBOPERATIONS,
            SUBOPERATIONS_COMPLETE_WITH_FAILURES,
        ):
            return Failure(str(exc))
        return Failure(str(exc))
    if isinstance(exc, (AssociationError, OSError, TimeoutError)):
        return Failure(str(exc) or type(exc).__name__)
    return Failure(f"{type(exc).__name__}: {exc}")


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(cap, base * 2**(n-1))]."""
    high = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(min(base / 2, high), high)


class RateLimiter:
    """A token bucket over instances and bytes (either limit may be None). ``take`` waits
    until the instance may be accepted: the sender waits for our C-STORE response, so
    the whole pipeline slows to the limit without buffering anything."""

    def __init__(self, instances_per_second: float | None, bytes_per_second: float | None) -> None:
        self.ips = instances_per_second
        self.bps = bytes_per_second
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return self.ips is not None or self.bps is not None

    def _cost(self, size: int) -> float:
        cost = 0.0
        if self.ips:
            cost = max(cost, 1.0 / self.ips)
        if self.bps:
            cost = max(cost, size / self.bps)
        return cost

    async def take(self, size: int) -> None:
        if not self.active:
            return
        async with self._lock:
            now = time.monotonic()
            # One second of burst at most, so that an idle period does not bank a flood.
            start = max(self._next, now - 1.0)
            self._next = start + self._cost(size)
            wait = start - now
        if wait > 0:
            await asyncio.sleep(wait)
