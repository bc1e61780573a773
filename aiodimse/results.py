"""What operations end with: their results, progress, and the instances that arrived."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .dicomfile import dataset_bytes, decode_dataset, read_part10
from .dimse.status import StatusCategory, StatusInfo
from .requests import StoreRequest

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import, decode_dataset imports it when used.
    from pydicom import Dataset

__all__ = ["FindResult", "OperationResult", "Progress", "RetrieveResult", "StoredInstance"]


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance that was received and committed."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae: str
    path: Path | None
    #: The data set bytes as received, when it was kept in memory rather than in a file.
    data: bytes | None = None
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    association_id: int = 0

    @classmethod
    def from_store(cls, request: StoreRequest, writer: object) -> StoredInstance:
        """The instance a C-STORE request committed through ``writer`` (a file writer's
        ``final`` path, or a memory writer's ``data``)."""
        path = getattr(writer, "final", None)
        data = getattr(writer, "data", None)
        return cls(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax=request.transfer_syntax,
            calling_ae=request.calling_ae,
            path=path if isinstance(path, Path) else None,
            data=data if isinstance(data, bytes) else None,
            move_originator_ae_title=request.move_originator_ae_title,
            move_originator_message_id=request.move_originator_message_id,
            association_id=int(request.association.id),
        )

    def read_dataset_bytes(self) -> bytes:
        """The data set bytes (from memory, or from the file after its meta header)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("this instance was neither kept in memory nor written to a file")
        return dataset_bytes(self.path, read_part10(self.path))

    @property
    def dataset(self) -> Dataset:
        """The instance decoded by pydicom."""
        return decode_dataset(self.read_dataset_bytes(), self.transfer_syntax)


@dataclass(frozen=True, slots=True)
class Progress:
    """The sub-operation counts of one C-GET/C-MOVE pending response."""

    status: StatusInfo
    remaining: int | None
    completed: int
    failed: int
    warning: int


@dataclass
class OperationResult:
    """How an operation ended: its final status (every result has these fields)."""

    status: StatusInfo

    @property
    def ok(self) -> bool:
        """Success (for C-GET/C-MOVE: with every sub-operation completed)."""
        return self.status.category is StatusCategory.SUCCESS

    @property
    def cancelled(self) -> bool:
        """Ended by a C-CANCEL (the Cancel status)."""
        return self.status.category is StatusCategory.CANCEL

    def __str__(self) -> str:
        return str(self.status)


@dataclass
class FindResult(OperationResult):
    """How a C-FIND ended. ``matches`` holds the identifiers when the find was awaited
    (when it was iterated, the iterator had them); ``count`` is how many there were."""

    matches: list[Dataset] = field(default_factory=list)
    count: int = 0

    def __str__(self) -> str:
        return f"{self.status}: {self.count} matches"


@dataclass
class RetrieveResult(OperationResult):
    """How a C-GET or C-MOVE ended."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int | None = None
    failed_instances: list[str] = field(default_factory=list)
    #: Instances received for this retrieval (C-GET always; C-MOVE with ``receiver=``).
    instances: list[StoredInstance] = field(default_factory=list)
    #: C-MOVE with ``receiver=``: sub-operations the SCP reported completed (or warning)
    #: whose instance never arrived at the receiver.
    undelivered: int = 0

    @property
    def ok(self) -> bool:
        """Success, with every sub-operation completed and (for a C-MOVE into a receiver)
        every completed instance arrived."""
        return (
            self.status.category is StatusCategory.SUCCESS
            and not self.failed
            and not self.undelivered
        )

    @property
    def complete(self) -> bool:
        """Nothing failed and nothing went missing (a warning status may still apply)."""
        return (
            self.status.category in (StatusCategory.SUCCESS, StatusCategory.WARNING)
            and not self.failed
            and not self.undelivered
            and not self.remaining
        )

    def __str__(self) -> str:
        text = (
            f"{self.status}: {self.completed} completed, {self.failed} failed, "
            f"{self.warning} warning"
        )
        if self.undelivered:
            text += f", {self.undelivered} reported completed but never arrived"
        return text
