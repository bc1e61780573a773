"""The two inactivity timers of a link: idle and stalled.

Idle: an association with no traffic and nothing outstanding for ``Timeouts.idle`` is
released. Stalled: once a message (or PDU) has started arriving, each further piece must
come within ``Timeouts.dimse``, or the association is aborted (a silent peer must not hold
it forever). Both are re-armed lazily from the time of the last activity, so noting
activity costs a clock read per received chunk, not a timer reschedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from ..config import Timeouts
from ..errors import AiodimseError, AssociationTimeout

__all__ = ["Watchdog"]

log = logging.getLogger("aiodimse.association")


class _Busy(Protocol):
    @property
    def busy(self) -> bool: ...

    @property
    def mid_message(self) -> bool: ...


class Watched(Protocol):
    """What the watchdog reads of its link (a :class:`~.link.Link`)."""

    id: int
    loop: asyncio.AbstractEventLoop
    timeouts: Timeouts
    peer_ae: str
    releasing: bool
    reading_paused: bool

    @property
    def upper(self) -> _Busy | None: ...

    @property
    def negotiated(self) -> object | None: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def is_established(self) -> bool: ...

    @property
    def receive_buffered(self) -> bool: ...

    async def release(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def abort_now(self, detail: str = "", reason: AiodimseError | None = None) -> None: ...


class Watchdog:
    """The idle and stall timers of one link."""

    __slots__ = ("_idle", "_last_activity", "_last_received", "_stall", "link")

    def __init__(self, link: Watched) -> None:
        self.link = link
        self._idle: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._last_received = 0.0

    def stop(self) -> None:
        for timer in (self._idle, self._stall):
            if timer is not None:
                timer.cancel()
        self._idle = self._stall = None

    # -- idle ----------------------------------------------------------------------------

    def touch(self) -> None:
        """Note activity."""
        link = self.link
        if link.timeouts.idle is None or link.is_closed:
            return
        self._last_activity = link.loop.time()
        if self._idle is None:
            self._idle = link.loop.call_later(link.timeouts.idle, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle = None
        link = self.link
        idle = link.timeouts.idle
        if idle is None or link.is_closed:
            return
        left = self._last_activity + idle - link.loop.time()
        if left > 0:
            self._idle = link.loop.call_later(left, self._idle_expired)
            return
        if link.upper is not None and link.upper.busy:
            self.touch()
            return
        if link.is_established and not link.releasing:
            log.info("#%d idle for %s s: releasing", link.id, idle)
            link.spawn(link.release())

    # -- stalled messages ---------------------------------------------------------------------

    def received(self, pdu_incomplete: bool) -> None:
        """Bytes arrived; ``pdu_incomplete`` if part of a PDU waits for the rest."""
        if self._idle is not None:
            self.touch()
        link = self.link
        upper = link.upper
        if (
            link.negotiated is not None
            and upper is not None
            and (upper.mid_message or pdu_incomplete)
        ):
            self._watch_stall()

    def _watch_stall(self) -> None:
        link = self.link
        self._last_received = link.loop.time()
        if self._stall is None and link.timeouts.dimse is not None and not link.is_closed:
            self._stall = link.loop.call_later(link.timeouts.dimse, self._stall_expired)

    def _stall_expired(self) -> None:
        self._stall = None
        link = self.link
        timeout = link.timeouts.dimse
        upper = link.upper
        if timeout is None or link.is_closed or upper is None or link.negotiated is None:
            return
        if not upper.mid_message and not link.receive_buffered:
            return  # the message was completed; the next one re-arms the timer
        if link.reading_paused:
            # We stopped reading ourselves (a slow consumer): not the peer's fault.
            self._watch_stall()
            return
        left = self._last_received + timeout - link.loop.time()
        if left > 0:
            self._stall = link.loop.call_later(left, self._stall_expired)
            return
        peer = link.peer_ae or "the peer"
        detail = f"{peer} sent part of a message, then nothing for {timeout} s"
        log.warning("#%d %s; aborting", link.id, detail)
        link.abort_now(detail, AssociationTimeout(f"{detail}; association aborted"))
