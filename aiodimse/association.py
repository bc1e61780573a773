"""The public association object and :func:`connect`, the requestor's entry point.

An :class:`Association` composes the layers below it: a :class:`~.transport.link.Link`
(transport and state machine), an :class:`~.transport.exchange.Exchange` (DIMSE messages
and the operations table), the SCU services (:mod:`.scu`) and the SCP services
(:mod:`.scp`), which answer what the peer asks on this association (a C-GET's C-STORE
sub-operations, or everything, on a server's associations).
"""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import uids
from .config import DEFAULT_MAX_IN_MEMORY, DEFAULT_MAX_PDU, Timeouts
from .contexts import default as default_contexts
from .dimse.commands import Message, Priority
from .dimse.status import StatusInfo
from .errors import NegotiationError, check_ae_title
from .pdu import AAssociateRQ, UserIdentityRQ
from .results import Progress
from .scp.provider import ServiceProvider
from .scp.retrieve import SUB_OPERATION_WINDOW
from .scu.retrieve import Retrieval, RetrieveUser
from .scu.services import Find, ServiceUser, StoreSource
from .sinks import MoveReceiver, Sink
from .transport.exchange import Exchange
from .transport.link import Link
from .transport.wire import WireData
from .ul.fsm import State
from .ul.negotiation import ContextRequest, Negotiated, NegotiatedContext, build_request

if TYPE_CHECKING:
    # Annotations only: pydicom takes ~0.3 s to import, and `aiodimse echo` needs none of it.
    from pydicom import Dataset

__all__ = ["Association", "connect"]

log = logging.getLogger("aiodimse.association")


class Association:
    """A DICOM association: DIMSE-C operations as coroutines, either side.

    Obtained from :func:`connect` (we are the requestor) or handed to a server's handler
    (we are the acceptor). ``async with`` releases it on exit, or aborts it if the block
    raised. ``handler`` answers the requests the peer sends on it (see
    :mod:`aiodimse.scp`); ``sub_operation_window`` is the most C-STORE sub-operations a
    C-GET / C-MOVE it serves keeps outstanding (1: one at a time), ``move_window`` the
    window a C-MOVE proposes on its sub-association (1, the default: none proposed).
    """

    def __init__(
        self,
        *,
        local_ae: str,
        timeouts: Timeouts | None = None,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
        handler: object | None = None,
        destinations: Mapping[str, tuple[str, int]] | None = None,
        sub_association_ssl: _ssl.SSLContext | None = None,
        sub_operation_window: int = SUB_OPERATION_WINDOW,
        move_window: int = 1,
    ) -> None:
        self.link = Link(local_ae=local_ae, timeouts=timeouts, max_pdu=max_pdu)
        self.exchange = Exchange(self.link, max_in_memory=max_in_memory)
        self._sub_ssl = sub_association_ssl
        self.provider = ServiceProvider(
            self.exchange,
            self,
            handler=handler,
            destinations=destinations,
            open_association=self._open_sub_association,
            sub_operation_window=sub_operation_window,
            move_window=move_window,
        )
        self._user = ServiceUser(self.exchange)
        self._retrieve = RetrieveUser(self.exchange, self.provider.divert_stores)

    # -- what it is ---------------------------------------------------------------------

    @property
    def id(self) -> int:
        """A number for log lines (``#id``), unique in this process."""
        return self.link.id

    @property
    def local_ae(self) -> str:
        return self.link.local_ae

    @property
    def peer_ae(self) -> str:
        return self.link.peer_ae

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return self.link.peer_address

    @property
    def timeouts(self) -> Timeouts:
        return self.link.timeouts

    @property
    def negotiated(self) -> Negotiated | None:
        """What was agreed (contexts, roles, window, maximum lengths)."""
        return self.link.negotiated

    @property
    def request(self) -> AAssociateRQ | None:
        """The A-ASSOCIATE-RQ (ours as requestor, the peer's as acceptor)."""
        return self.link.request

    @property
    def tls_version(self) -> str | None:
        return self.link.tls_version

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        return self.link.peer_certificate

    @property
    def state(self) -> State:
        return self.link.state

    @property
    def is_established(self) -> bool:
        return self.link.is_established

    @property
    def is_closed(self) -> bool:
        return self.link.is_closed

    @property
    def end_reason(self) -> Exception | None:
        """Why the association ended abnormally (None while open or after a clean release)."""
        return self.link.end_reason

    @property
    def handler(self) -> object | None:
        return self.provider.handler

    @handler.setter
    def handler(self, handler: object | None) -> None:
        self.provider.handler = handler

    @property
    def calling_ae(self) -> str:
        """The requestor's AE title."""
        return self.request.calling_ae_title if self.request else ""

    @property
    def called_ae(self) -> str:
        """The acceptor's AE title as the requestor addressed it."""
        return self.request.called_ae_title if self.request else ""

    @property
    def user_identity(self) -> UserIdentityRQ | None:
        """The user identity the requestor presented (PS3.7 D.3.3.7), if any."""
        return self.negotiated.user_identity if self.negotiated else None

    def __repr__(self) -> str:
        return f"<Association #{self.id} {self.local_ae}<->{self.peer_ae} {self.state}>"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Association:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.release()
        else:
            await self.abort()

    async def release(self) -> None:
        """Release gracefully (A-RELEASE); aborts if the peer does not confirm in time."""
        await self.link.release()

    async def abort(self) -> None:
        """Abort (A-ABORT, service-user source) and close the connection."""
        await self.link.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, however the association ended."""
        await self.link.wait_closed()

    # -- operations -------------------------------------------------------------------------

    def context_for(
        self, sop_class_uid: str, transfer_syntax: str | None = None, *, role: str = "scu"
    ) -> NegotiatedContext:
        """The accepted context for ``sop_class_uid`` (NegotiationError says why not)."""
        return self._user.context_for(sop_class_uid, transfer_syntax, role=role)

    async def echo(self, *, check: bool = True) -> StatusInfo:
        """C-ECHO (PS3.7 9.1.5): the Verification status."""
        return await self._user.echo(check=check)

    async def store(
        self,
        source: StoreSource,
        *,
        priority: int = Priority.MEDIUM,
        move_originator: tuple[str, int] | None = None,
        check: bool = True,
    ) -> StatusInfo:
        """C-STORE (PS3.7 9.1.1) of a Part 10 file (sent as it is when its transfer
        syntax was accepted) or a pydicom Dataset. StatusError on failure if ``check``."""
        return await self._user.store(
            source, priority=priority, move_originator=move_originator, check=check
        )

    def find(
        self,
        query: Dataset | Mapping[str, Any],
        *,
        model: str = "study",
        priority: int = Priority.MEDIUM,
        check: bool = True,
    ) -> Find:
        """C-FIND (PS3.7 9.1.2): iterate for each match, or await for a FindResult."""
        return self._user.find(query, model=model, priority=priority, check=check)

    def get(
        self,
        query: Dataset | Mapping[str, Any],
        *,
        model: str = "study",
        receiver: Sink | None = None,
        priority: int = Priority.MEDIUM,
        on_progress: Callable[[Progress], Any] | None = None,
        check: bool = True,
    ) -> Retrieval:
        """C-GET (PS3.7 9.1.3): the instances come back on this association, into
        ``receiver`` (a sink; in memory by default). Iterate for each StoredInstance, or
        await for a RetrieveResult. Needs ``contexts=aiodimse.contexts.for_get()``."""
        return self._retrieve.get(
            query,
            model=model,
            receiver=receiver,
            priority=priority,
            on_progress=on_progress,
            check=check,
        )

    def move(
        self,
        query: Dataset | Mapping[str, Any],
        destination: str,
        *,
        model: str = "study",
        receiver: MoveReceiver | None = None,
        priority: int = Priority.MEDIUM,
        on_progress: Callable[[Progress], Any] | None = None,
        check: bool = True,
        arrival_timeout: float = 30.0,
    ) -> Retrieval:
        """C-MOVE (PS3.7 9.1.4) to ``destination``. With ``receiver`` (a StorageServer on
        this loop known to the SCP as ``destination``) it ends only once every completed
        instance is stored there; iterate for each, or await for a RetrieveResult."""
        return self._retrieve.move(
            query,
            destination,
            model=model,
            receiver=receiver,
            priority=priority,
            on_progress=on_progress,
            check=check,
            arrival_timeout=arrival_timeout,
        )

    async def send_message(
        self, context_id: int, message: Message, dataset: WireData | None = None
    ) -> None:
        """Send one DIMSE message as it is (for tests and tools that speak DIMSE directly)."""
        await self.exchange.send_message(context_id, message, dataset)

    # -- the SCP's hook for C-MOVE sub-associations ---------------------------------------------

    async def _open_sub_association(
        self,
        host: str,
        port: int,
        called_ae: str,
        contexts: Sequence[ContextRequest],
        async_window: tuple[int, int] | None,
    ) -> Association:
        # A sub-operation that stalls must fail here, and be reported in a final response,
        # before the SCU that waits for our next response gives up on us (PS3.4 C.4.2.3).
        return await connect(
            host,
            port,
            calling_ae=self.local_ae,
            called_ae=called_ae,
            contexts=contexts,
            timeouts=self.timeouts.for_sub_operations(),
            ssl=self._sub_ssl,
            async_window=async_window,
        )


class _Connect:
    """``await connect(...)`` or ``async with connect(...) as assoc``."""

    def __init__(self, coro_factory: Callable[[], Any]) -> None:
        self._factory = coro_factory
        self._assoc: Association | None = None

    def __await__(self) -> Generator[Any, None, Association]:
        return self._factory().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> Association:
        self._assoc = await self._factory()
        return self._assoc

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._assoc is not None
        await self._assoc.__aexit__(exc_type, exc, tb)


def connect(
    host: str,
    port: int,
    *,
    calling_ae: str = "AIODIMSE",
    called_ae: str = "ANY-SCP",
    contexts: Sequence[ContextRequest] | None = None,
    max_pdu: int = DEFAULT_MAX_PDU,
    timeouts: Timeouts | None = None,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    user_identity: UserIdentityRQ | None = None,
    async_window: tuple[int, int] | None = None,
    handler: object | None = None,
    max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
    require_all_contexts: bool = False,
) -> _Connect:
    """Open an association to ``host:port`` (we are the requestor).

    ``contexts`` defaults to :func:`aiodimse.contexts.default` (Verification, the Q/R models
    and common storage classes). ``async_window=(invoked, performed)`` offers the
    Asynchronous Operations Window (off by default: some SCPs drop associations that carry
    it). ``handler`` serves requests the peer sends us on this association (the C-STORE
    sub-operations of a C-GET). ``ssl`` turns on DICOM TLS (PS3.15 B.9; see
    :func:`aiodimse.tls.client_context`), checked against ``server_hostname`` (default:
    ``host``). ``user_identity`` presents credentials (PS3.7 D.3.3.7), e.g.
    ``UserIdentityRQ.username("bob", passcode="pw")``; the acceptor's answer, when a positive
    response was asked for, is ``assoc.negotiated.user_identity_response``.

    Raises AssociationRejected (who refused and why), AssociationTimeout, or
    AssociationError for an unreachable peer or a failed TLS handshake (saying why).
    """
    check_ae_title(calling_ae, "calling_ae")
    check_ae_title(called_ae, "called_ae")

    async def establish() -> Association:
        assoc = Association(
            local_ae=calling_ae,
            timeouts=timeouts,
            max_pdu=max_pdu,
            max_in_memory=max_in_memory,
            handler=handler,
        )
        rq = build_request(
            calling_ae,
            called_ae,
            list(contexts) if contexts is not None else default_contexts(),
            max_pdu=max_pdu,
            implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
            implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME,
            async_window=async_window,
            user_identity=user_identity,
        )
        negotiated = await assoc.link.request_association(
            host, port, rq, ssl=ssl, server_hostname=server_hostname or host
        )
        log.info(
            "#%d associated %s -> %s at %s:%d (%d of %d contexts accepted)",
            assoc.id,
            calling_ae,
            called_ae,
            host,
            port,
            len(negotiated.accepted),
            len(negotiated.contexts),
        )
        if not negotiated.accepted or (
            require_all_contexts and len(negotiated.accepted) != len(negotiated.contexts)
        ):
            await assoc.release()
            raise NegotiationError(
                f"{called_ae} at {host}:{port} accepted "
                f"{len(negotiated.accepted)} of {len(negotiated.contexts)} presentation"
                " contexts:\n" + negotiated.describe()
            )
        return assoc

    return _Connect(establish)
