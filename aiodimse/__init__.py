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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives. They load on first use (PEP 562): ``import aiodimse`` must
#: not pull in the archive (sqlite3) or pydicom, so that the command line starts fast.
_HOMES: dict[str, str] = {
    "contexts": ".contexts",
    "tls": ".tls",
    "uids": ".uids",
    **dict.fromkeys(("Archive", "ArchiveServer"), ".archive"),
    **dict.fromkeys(("Association", "connect"), ".association"),
    **dict.fromkeys(("DEFAULT_HOST", "Timeouts"), ".config"),
    **dict.fromkeys(("StatusCategory", "StatusInfo", "status_info"), ".dimse.status"),
    **dict.fromkeys(
        (
            "AiodimseError",
            "AssociationAborted",
            "AssociationError",
            "AssociationRejected",
            "AssociationTimeout",
            "ConnectionLost",
            "DIMSEError",
            "IncompleteRetrieval",
            "NegotiationError",
            "PDUError",
            "StatusError",
            "TransferSyntaxError",
        ),
        ".errors",
    ),
    "UserIdentityRQ": ".pdu",
    **dict.fromkeys(
        ("FindRequest", "Request", "RetrieveRequest", "StoreRequest", "StoreWriter"),
        ".requests",
    ),
    **dict.fromkeys(
        ("FindResult", "OperationResult", "Progress", "RetrieveResult", "StoredInstance"),
        ".results",
    ),
    "Operation": ".scu.operation",
    **dict.fromkeys(("Server", "StorageServer", "serve"), ".server"),
    **dict.fromkeys(
        ("DirectorySink", "MemorySink", "MoveReceiver", "MoveTracker", "Sink", "StorageHandler"),
        ".sinks",
    ),
    "ContextRequest": ".ul.negotiation",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and cache the name here (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(home, __name__)
    value = module if name in ("contexts", "tls", "uids") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
