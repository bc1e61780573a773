"""The asynchronous operations window (PS3.7 D.3.3.3) as an awaitable counter."""

from __future__ import annotations

import asyncio

__all__ = ["Window"]


class Window:
    """A counting semaphore for the asynchronous operations window that fails its waiters
    when the association ends (a plain Semaphore would leave them waiting forever)."""

    __slots__ = ("_error", "_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[asyncio.Future[None]] = []
        self._error: BaseException | None = None

    @property
    def full(self) -> bool:
        return self._free <= 0

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    async def acquire(self) -> None:
        if self._error is not None:
            raise self._error
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not waiter.cancelled() and waiter.exception() is None:
                self.release()  # we were handed a slot just as we were cancelled
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def close(self, error: BaseException) -> None:
        self._error = error
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(error)
