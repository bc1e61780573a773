"""The table of outstanding operations of one association (pure: no event loop).

PS3.7 9.3.1.1: a Message ID identifies an operation among those outstanding on the
association; it is reused only once that operation is complete. The table hands out IDs
(1 to 65535, cycling) and maps each to whatever the caller tracks for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ..errors import AssociationError

__all__ = ["OperationTable"]

T = TypeVar("T")


class OperationTable(Generic[T]):
    """Outstanding operations by Message ID."""

    __slots__ = ("_ids", "_ops")

    def __init__(self) -> None:
        self._ops: dict[int, T] = {}
        self._ids = itertools.cycle(range(1, 0x10000))

    def allocate(self, avoid: Callable[[int], bool] | None = None) -> int:
        """A Message ID not outstanding here (and not refused by ``avoid``)."""
        for _ in range(0x10000):
            mid = next(self._ids)
            if mid not in self._ops and (avoid is None or not avoid(mid)):
                return mid
        raise AssociationError("no free message ID: 65535 operations outstanding")

    def add(self, message_id: int, op: T) -> None:
        self._ops[message_id] = op

    def get(self, message_id: int) -> T | None:
        return self._ops.get(message_id)

    def pop(self, message_id: int) -> T | None:
        return self._ops.pop(message_id, None)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ops

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._ops.values()))
