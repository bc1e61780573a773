"""aiodimse: DICOM networking (DIMSE over the PS3.8 Upper Layer) on native asyncio.

::

    async with aiodimse.connect("pacs", 11112, calling_ae="ME", called_ae="PACS") as assoc:
        await assoc.echo()
        await assoc.store("ct.dcm")
        async for match in assoc.find({"QueryRetrieveLevel": "STUDY", "PatientID": "X"}):
            ...

Every public type is exported here; ``docs/architecture.md`` says which module owns what.
"""

from __future__ import annotations

from . import contexts, tls, uids
from .archive import Archive, ArchiveServer
from .association import Association, connect
from .config import DEFAULT_HOST, Timeouts
from .dimse.status import StatusCategory, StatusInfo, status_info
from .errors import (
    AiodimseError,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    AssociationTimeout,
    ConnectionLost,
    DIMSEError,
    IncompleteRetrieval,
    NegotiationError,
    PDUError,
    StatusError,
    TransferSyntaxError,
)
from .pdu import UserIdentityRQ
from .requests import FindRequest, Request, RetrieveRequest, StoreRequest, StoreWriter
from .results import FindResult, OperationResult, Progress, RetrieveResult, StoredInstance
from .scu.operation import Operation
from .server import Server, StorageServer, serve
from .sinks import (
    DirectorySink,
    MemorySink,
    MoveReceiver,
    MoveTracker,
    Sink,
    StorageHandler,
)
from .ul.negotiation import ContextRequest

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_HOST",
    "AiodimseError",
    "Archive",
    "ArchiveServer",
    "Association",
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "AssociationTimeout",
    "ConnectionLost",
    "ContextRequest",
    "DIMSEError",
    "DirectorySink",
    "FindRequest",
    "FindResult",
    "IncompleteRetrieval",
    "MemorySink",
    "MoveReceiver",
    "MoveTracker",
    "NegotiationError",
    "Operation",
    "OperationResult",
    "PDUError",
    "Progress",
    "Request",
    "RetrieveRequest",
    "RetrieveResult",
    "Server",
    "Sink",
    "StatusCategory",
    "StatusError",
    "StatusInfo",
    "StorageHandler",
    "StorageServer",
    "StoreRequest",
    "StoreWriter",
    "StoredInstance",
    "Timeouts",
    "TransferSyntaxError",
    "UserIdentityRQ",
    "connect",
    "contexts",
    "serve",
    "status_info",
    "tls",
    "uids",
]
