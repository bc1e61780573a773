"""Calling a handler's hooks: found by name, synchronous or async, results iterated."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable
from typing import Any

__all__ = ["aiter_results", "call_hook", "handler_hook"]


def handler_hook(handler: object, name: str) -> Any:
    """The handler's hook ``name`` if it has one (None otherwise)."""
    method = getattr(handler, name, None)
    return method if callable(method) else None


async def call_hook(call: Any) -> Any:
    """The result of a hook that may be synchronous or a coroutine."""
    return await call if inspect.isawaitable(call) else call


async def aiter_results(result: Any) -> AsyncIterator[Any]:
    """Iterate what a handler returned: an async iterator, an awaitable, or an iterable."""
    result = await call_hook(result)
    if result is None:
        return
    if hasattr(result, "__aiter__"):
        agen = result
        try:
            async for item in agen:
                yield item
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    if isinstance(result, Iterable):
        for item in result:
            yield item
        return
    raise TypeError(f"handler returned {type(result).__name__}, not an iterable")
