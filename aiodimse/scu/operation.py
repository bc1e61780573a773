"""One shape for every multi-response operation (C-FIND, C-GET, C-MOVE).

An :class:`Operation` is both awaitable and async-iterable::

    result = await assoc.find(query)             # FindResult: .status, .matches
    async for match in assoc.find(query): ...    # each identifier as it arrives
    result = await assoc.get(query)              # RetrieveResult: .status, counts, .instances
    async for instance in assoc.get(query): ...  # each StoredInstance as it is committed

Its fields are the same whatever the service: ``status`` (a StatusInfo once the final
response is in), ``result``, ``progress`` (the last pending counts of a C-GET/C-MOVE),
``cancelled``, ``final`` (the final response message). It is cancelled the same way:
``await op.cancel()`` (or ``aclose()``), leaving ``async with op``, the awaiting task being
cancelled, or dropping an iterator part-way: C-CANCEL-RQ is sent and the final response
collected, so the association is clean for the next request. A request still waiting for
a slot of the operations window is withdrawn instead: never sent, its result is Cancel.
With ``check=True`` (the default) a Failure status raises StatusError when the operation
is awaited or its iteration ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from ..dimse.commands import Message
from ..dimse.status import CANCEL, StatusInfo, is_pending, status_info
from ..errors import AiodimseError
from ..results import OperationResult, Progress
from ..transport.exchange import Exchange, Outgoing

__all__ = ["Operation", "OperationCore"]

log = logging.getLogger("aiodimse.scu")

T = TypeVar("T")
R = TypeVar("R", bound=OperationResult)

#: Items (matches, instances) handed to a slow iterator before the driver waits for it.
_CHANNEL_LIMIT = 128

_END: Any = object()


class _Channel:
    """A bounded hand-off from the driver to the iterator. ``divert()`` turns it off (the
    operation is awaited as a whole, or nobody iterates any more): puts then return False
    and the caller keeps the item elsewhere."""

    __slots__ = ("_closed", "_diverted", "_getter", "_items", "_limit", "_putters")

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._limit = limit
        self._getter: asyncio.Future[None] | None = None
        self._putters: list[asyncio.Future[None]] = []
        self._closed = False
        self._diverted = False

    async def put(self, item: Any) -> bool:
        while len(self._items) >= self._limit and not self._diverted:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._putters:
                    self._putters.remove(waiter)
        if self._diverted:
            return False
        self._items.append(item)
        self._wake_getter()
        return True

    async def get(self) -> Any:
        while not self._items:
            if self._closed:
                return _END
            waiter = asyncio.get_running_loop().create_future()
            self._getter = waiter
            try:
                await waiter
            finally:
                self._getter = None
        item = self._items.popleft()
        if self._putters:
            waiter = self._putters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
        return item

    def divert(self) -> list[Any]:
        """Stop handing items out; what was waiting to be taken is returned."""
        self._diverted = True
        items = list(self._items)
        self._items.clear()
        putters, self._putters = self._putters, []
        for waiter in putters:
            if not waiter.done():
                waiter.set_result(None)
        return items

    def close(self) -> None:
        self._closed = True
        self._wake_getter()

    def _wake_getter(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)


class OperationCore(Generic[R]):
    """The state of one operation, driven by one task (the public :class:`Operation`
    wraps it, so that dropping the wrapper can cancel the operation)."""

    def __init__(
        self,
        exchange: Exchange,
        service: str,
        run: Callable[[OperationCore[R]], Awaitable[R]],
        cancelled_result: Callable[[StatusInfo], R],
    ) -> None:
        self.exchange = exchange
        self.service = service
        self._run = run
        self._cancelled_result = cancelled_result
        self.task: asyncio.Task[R] | None = None
        self.channel = _Channel(_CHANNEL_LIMIT)
        #: Items nobody iterated (the operation was awaited as a whole).
        self.unclaimed: list[Any] = []
        self.op: Outgoing | None = None
        self._cancel_sent = False
        #: Set once the request has a Message ID: from then on it is (being) sent, and
        #: only a C-CANCEL-RQ can stop it.
        self.sending = False
        self._running = False
        #: Stopped before anything was sent: the request is withdrawn, never sent.
        self._withdrawn = False
        self._cancel_requested = False
        self.progress: Progress | None = None
        self.result: R | None = None
        self.final: Message | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[R]:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._main())
            self.task.add_done_callback(self._ended)
        return self.task

    def _ended(self, task: asyncio.Task[R]) -> None:
        self.channel.close()
        if not task.cancelled():
            task.exception()  # retrieved here; whoever awaits the operation still sees it

    async def _main(self) -> R:
        self._running = True
        try:
            if not self._withdrawn:
                return await self._run(self)
        except asyncio.CancelledError:
            if not self._withdrawn:
                raise
        # Withdrawn while waiting for a slot of the operations window (or before that):
        # nothing reached the peer, so nothing was done.
        self.result = self._cancelled_result(status_info(CANCEL, self.service))
        return self.result

    async def wait(self) -> R:
        """The result (awaiting the operation as a whole)."""
        task = self.start()
        self.unclaimed.extend(self.channel.divert())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.shield(self.cancel_and_wait())
            raise

    async def next_item(self) -> Any:
        """The next item for an iterator, or ``_END`` once the operation has ended."""
        task = self.start()
        try:
            item = await self.channel.get()
        except asyncio.CancelledError:
            # Our task is being cancelled: cancel the operation on the peer too, and let a
            # background task collect its final response.
            self.abandon_iteration()
            raise
        if item is _END:
            await task  # re-raise what ended it (a StatusError with check=True)
        return item

    def abandon_iteration(self) -> None:
        """Nobody iterates any more (an iterator was dropped part-way): cancel in the
        background."""
        self.channel.divert()
        task = self.task
        if task is None or task.done():
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone
            self.exchange.link.spawn(self._cancel_quietly())

    async def _cancel_quietly(self) -> None:
        with contextlib.suppress(AiodimseError):
            await self.cancel_and_wait()

    async def cancel_and_wait(self) -> None:
        task = self.start()
        self.channel.divert()
        if not task.done():
            if not self.sending:
                # Not sent yet (waiting for a window slot): withdraw it. Cancelling the
                # task is safe only here, before any byte of the request is written.
                self._withdrawn = True
                if self._running:
                    task.cancel()
            else:
                self._cancel_requested = True
                await self.send_cancel()
        # Wait for the final response without taking on the task's outcome (an error is
        # the awaiting caller's to see), nor hiding our own cancellation.
        await asyncio.wait({task})

    async def send_cancel(self) -> None:
        """C-CANCEL-RQ (PS3.7 9.3.2.3 / 9.3.3.3), once, if the request is out."""
        if self.op is None or self._cancel_sent:
            return  # not yet: sent as soon as the request is (see drive)
        self._cancel_sent = True
        try:
            await self.exchange.cancel(self.op)
        except AiodimseError as exc:
            log.debug("C-CANCEL not sent: %s", exc)

    # -- for the drivers ------------------------------------------------------------------

    async def emit(self, item: Any) -> bool:
        """Hand ``item`` to the iterator; False if nobody iterates (the caller keeps it)."""
        return await self.channel.put(item)

    def sending_now(self, _message_id: int) -> None:
        """The request has its Message ID and is about to go out."""
        self.sending = True

    async def drive(
        self,
        start: Callable[[], Awaitable[Outgoing]],
        pending: Callable[[Message, bytes | None], Awaitable[None]],
    ) -> tuple[Message, bytes | None]:
        """Send the request (``start``) and read responses until the final one, calling
        ``pending`` for each pending response. Returns the final response."""
        exchange = self.exchange
        op = await start()
        self.op = op
        if self._cancel_requested:
            await self.send_cancel()  # asked for while the request was being sent
        try:
            while True:
                message, data = await exchange.response(op)
                if is_pending(int(getattr(message, "status", 0))):
                    await pending(message, data)
                    continue
                self.final = message
                return message, data
        except BaseException:
            self._give_up(op)
            raise

    def _give_up(self, op: Outgoing) -> None:
        """Nobody will read the rest of the responses (a callback raised, the task was
        cancelled): ask the peer to stop (C-CANCEL) and let the final response complete
        the operation in the background, so that its window slot is not held forever."""
        exchange = self.exchange
        if not exchange.is_outstanding(op):
            return  # complete already
        exchange.abandon(op)
        if exchange.is_outstanding(op) and exchange.link.is_established:
            exchange.link.spawn(self.send_cancel())


class Operation(Generic[T, R]):
    """A multi-response operation in progress (see the module docstring)."""

    __slots__ = ("__weakref__", "_core", "service")

    def __init__(self, core: OperationCore[R]) -> None:
        self._core = core
        self.service = core.service

    # -- what it tells ----------------------------------------------------------------------

    @property
    def result(self) -> R | None:
        """The result once the operation has ended."""
        return self._core.result

    @property
    def status(self) -> StatusInfo | None:
        """The final status once the final response is in."""
        result = self._core.result
        return result.status if result is not None else None

    @property
    def cancelled(self) -> bool:
        """Whether it ended with the Cancel status."""
        result = self._core.result
        return result is not None and result.cancelled

    @property
    def progress(self) -> Progress | None:
        """The sub-operation counts of the last pending response (C-GET, C-MOVE)."""
        return self._core.progress

    @property
    def final(self) -> Message | None:
        """The final response message."""
        return self._core.final

    # -- awaiting -------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, R]:
        return self._core.wait().__await__()

    # -- iterating ------------------------------------------------------------------------

    def __aiter__(self) -> Operation[T, R]:
        return self

    async def __anext__(self) -> T:
        item = await self._core.next_item()
        if item is _END:
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    async def collect(self) -> list[T]:
        """Every item, then the final status (convenience for small results)."""
        return [item async for item in self]

    # -- stopping -------------------------------------------------------------------------

    async def __aenter__(self) -> Operation[T, R]:
        self._core.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    async def cancel(self) -> R | None:
        """Stop early: C-CANCEL-RQ (or withdraw a request not sent yet), then wait for the
        final response. Returns the result (None if the operation never started)."""
        core = self._core
        if core.task is None:
            return None
        if not core.task.done():
            await core.cancel_and_wait()
        return core.result

    aclose = cancel

    def __del__(self) -> None:
        # Dropped part-way (a bare ``break``): cancel in the background so that the
        # association does not stay busy with it.
        core = self._core
        if core.task is not None and not core.task.done():
            core.abandon_iteration()

    def __repr__(self) -> str:
        state = self.status or ("running" if self._core.task else "not started")
        return f"<{self.service} {state}>"
