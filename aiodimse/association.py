"""The public association object and :func:`connect`, the requestor's entry point."""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Generator, Sequence
from typing import Any

from . import uids
from .errors import NegotiationError
from .link import DEFAULT_MAX_IN_MEMORY, DEFAULT_MAX_PDU, Timeouts
from .pdu import UserIdentityRQ
from .scp import ServiceProvider
from .scu import ServiceUser
from .ul.negotiation import ContextRequest, build_request

__all__ = ["Association", "connect"]

log = logging.getLogger("aiodimse.association")


class Association(ServiceUser, ServiceProvider):
    """A DICOM association: DIMSE-C operations as coroutines, either side.

    Obtained from :func:`connect` (we are the requestor) or handed to a server's handler
    (we are the acceptor). ``async with`` releases it on exit, or aborts it if the block
    raised.
    """

    async def __aenter__(self) -> Association:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.release()
        else:
            await self.abort()

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


class _Connect:
    """``await connect(...)`` or ``async with connect(...) as assoc``."""

    def __init__(self, coro_factory: Any) -> None:
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
    for name, title in (("calling_ae", calling_ae), ("called_ae", called_ae)):
        if not title.strip() or len(title) > 16:
            raise ValueError(f"{name} {title!r} must be 1 to 16 characters")

    async def establish() -> Association:
        from .contexts import default

        assoc = Association(
            local_ae=calling_ae, timeouts=timeouts, max_pdu=max_pdu, max_in_memory=max_in_memory
        )
        assoc.handler = handler
        rq = build_request(
            calling_ae,
            called_ae,
            list(contexts) if contexts is not None else default(),
            max_pdu=max_pdu,
            implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
            implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME,
            async_window=async_window,
            user_identity=user_identity,
        )
        negotiated = await assoc._request_association(
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
