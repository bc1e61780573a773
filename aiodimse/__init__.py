"""aiodimse: DICOM networking (DIMSE over the PS3.8 Upper Layer) on native asyncio.

::

    async with aiodimse.connect("pacs", 11112, calling_ae="ME", called_ae="PACS") as assoc:
        await assoc.echo()
        await assoc.store("ct.dcm")
        async for match in assoc.find({"QueryRetrieveLevel": "STUDY", "PatientID": "X"}):
            ...
"""

from __future__ import annotations

from . import contexts, tls, uids
from .association import Association, connect
from .dimse.status import StatusCategory, StatusInfo, status_info
from .errors import (
    AiodimseError,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    AssociationTimeout,
    ConnectionLost,
    DIMSEError,
    NegotiationError,
    PDUError,
    StatusError,
    TransferSyntaxError,
)
from .link import Timeouts
from .pdu import UserIdentityRQ
from .scp import FindRequest, Request, RetrieveRequest, StoreRequest
from .server import Server, serve
from .storage import DirectorySink, MemorySink, StorageHandler, StorageServer, StoredInstance
from .ul.negotiation import ContextRequest

__version__ = "0.1.0"

__all__ = [
    "AiodimseError",
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
    "MemorySink",
    "NegotiationError",
    "PDUError",
    "Request",
    "RetrieveRequest",
    "Server",
    "StatusCategory",
    "StatusError",
    "StatusInfo",
    "StorageHandler",
    "StorageServer",
    "StoreRequest",
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
