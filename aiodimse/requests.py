"""The requests a handler sees: what the peer asked for, with its data set or identifier.

A server's handler is a plain object; aiodimse calls the hooks it has (the full list, with
which are synchronous and which may be async, is in ``docs/handlers.md`` and in
:mod:`aiodimse.scp`). Each hook gets one of these request objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Protocol

from .dicomfile import decode_dataset, empty_dataset
from .dimse.commands import Message
from .errors import AiodimseError
from .transport.exchange import Incoming
from .transport.targets import MemoryTarget
from .ul.negotiation import NegotiatedContext

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import, decode_dataset imports it when used.
    from pydicom import Dataset

__all__ = [
    "AssociationInfo",
    "FindRequest",
    "Request",
    "RetrieveRequest",
    "StoreRequest",
    "StoreWriter",
]


class AssociationInfo(Protocol):
    """What a request tells of the association it came on (an :class:`aiodimse.Association`)."""

    @property
    def id(self) -> int: ...

    @property
    def peer_ae(self) -> str: ...

    @property
    def local_ae(self) -> str: ...

    async def abort(self) -> None: ...


class StoreWriter(Protocol):
    """Receives one instance's data set as it arrives, then commits it (or discards it)."""

    def write(self, data: bytes | memoryview) -> None: ...

    async def commit(self) -> int | None: ...

    def discard(self) -> None: ...


@dataclass(eq=False)
class Request:
    """A request the peer invoked, as a handler sees it."""

    association: Any  # an aiodimse.Association (see AssociationInfo)
    context: NegotiatedContext
    message: Message
    _incoming: Incoming = field(repr=False)

    @property
    def message_id(self) -> int:
        return int(getattr(self.message, "message_id", 0))

    @property
    def sop_class_uid(self) -> str:
        return str(getattr(self.message, "affected_sop_class_uid", "") or "")

    @property
    def transfer_syntax(self) -> str:
        assert self.context.transfer_syntax is not None
        return self.context.transfer_syntax

    @property
    def calling_ae(self) -> str:
        return str(self.association.peer_ae)

    @property
    def cancelled(self) -> bool:
        """True once the peer sent C-CANCEL-RQ for this request (or the association ended)."""
        return self._incoming.cancelled.is_set()

    async def wait_cancelled(self) -> None:
        await self._incoming.cancelled.wait()


@dataclass(eq=False)
class StoreRequest(Request):
    """A C-STORE-RQ. The data set is available once the handler's ``on_store`` runs."""

    _data: MemoryTarget | None = field(default=None, repr=False)

    @property
    def sop_instance_uid(self) -> str:
        return str(getattr(self.message, "affected_sop_instance_uid", ""))

    @property
    def move_originator_ae_title(self) -> str | None:
        value = getattr(self.message, "move_originator_ae_title", None)
        return None if value is None else str(value)

    @property
    def move_originator_message_id(self) -> int | None:
        value = getattr(self.message, "move_originator_message_id", None)
        return None if value is None else int(value)

    @property
    def dataset_bytes(self) -> bytes:
        """The data set exactly as received, in :attr:`transfer_syntax`."""
        if self._data is None:
            raise AiodimseError("the data set went to the handler's store writer")
        return self._data.getvalue()

    def open_dataset(self) -> IO[bytes]:
        """The data set as a binary file object (spilled to disk when large)."""
        if self._data is None:
            raise AiodimseError("the data set went to the handler's store writer")
        return self._data.open()

    @cached_property
    def dataset(self) -> Dataset:
        """The data set decoded by pydicom (costly for large instances; use bytes to move)."""
        return decode_dataset(self.dataset_bytes, self.transfer_syntax)


@dataclass(eq=False)
class FindRequest(Request):
    """A C-FIND-RQ with its decoded identifier."""

    identifier: Dataset = field(default_factory=empty_dataset)

    @property
    def query_level(self) -> str:
        return str(self.identifier.get("QueryRetrieveLevel", "") or "")


@dataclass(eq=False)
class RetrieveRequest(FindRequest):
    """A C-GET-RQ or C-MOVE-RQ; ``destination`` is the Move Destination AE (C-MOVE only)."""

    destination: str | None = None
