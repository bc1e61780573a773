"""Servers: the acceptor that negotiates associations and hands requests to a handler.

Every association is a task on the one event loop; a slow handler on one association
never stops another from being served. :class:`Server` takes any handler;
:class:`StorageServer` is a Server whose handler stores into a sink, and which collects
the instances of C-MOVEs made from this loop (it is a :class:`~aiodimse.sinks.MoveReceiver`).
All servers take the same arguments in the same order: handler (or sink, or storage
folder) first, then ``host``, ``port``, then keywords.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import os
import ssl as _ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from . import uids
from .association import Association
from .config import (
    DEFAULT_HOST,
    DEFAULT_MAX_IN_MEMORY,
    DEFAULT_MAX_PDU,
    MIN_UNASSOCIATED,
    UNASSOCIATED_GRACE,
    Timeouts,
)
from .errors import check_ae_title
from .pdu import AAssociateRQ, UserIdentityRQ
from .results import StoredInstance
from .scp.retrieve import SUB_OPERATION_WINDOW
from .sinks import DirectorySink, MoveTracker, Query, Sink, StorageHandler
from .ul.negotiation import (
    LOCAL_LIMIT_EXCEEDED,
    USER_IDENTITY_REJECTED,
    AcceptorPolicy,
    Rejection,
    negotiate,
)

__all__ = ["Server", "StorageServer", "serve"]

log = logging.getLogger("aiodimse.server")

#: What the SCP prefers for the Verification and Q/R classes (explicit VR LE first).
QUERY_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
    uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
)
#: What a storage SCP accepts: everything it can write as received (it never decodes the
#: data set), uncompressed first.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = QUERY_TRANSFER_SYNTAXES + tuple(
    uid for uid, ts in uids.TRANSFER_SYNTAXES.items() if ts.is_encapsulated
)

UserIdentityCheck = Callable[[UserIdentityRQ, Association], "Awaitable[bool | bytes | None]"]


class Server:
    """A DICOM SCP listening on ``host:port``.

    ``handler`` is a plain object with the ``on_*`` methods of the services it offers (see
    :mod:`aiodimse.scp`); Verification is always offered. The policy arguments decide which
    associations are accepted: ``check_called_ae`` refuses a called AE title other than
    ``ae_title``, ``allowed_calling`` lists the calling AE titles let in (None = anyone),
    ``max_associations`` bounds concurrent associations (the rest are refused as
    "local-limit-exceeded"), ``user_identity`` (or ``handler.on_user_identity``) checks
    PS3.7 D.3.3.7 credentials: ``async (identity, assoc)`` returning True (accept), bytes
    (accept with this server response, for Kerberos/SAML/JWT) or False/None (refuse:
    rejected-permanent by the ACSE service-provider, D.3.3.7.3); with
    ``require_user_identity`` a request that presents none is refused the same way. ``ssl`` is an
    ``ssl.SSLContext`` for DICOM TLS (see :mod:`aiodimse.tls`). ``destinations`` maps C-MOVE
    destination AE titles to (host, port); ``move_ssl`` is the TLS context for the C-MOVE
    sub-associations to them (None: plain TCP). ``max_unassociated`` bounds the
    connections that have not associated yet (default twice ``max_associations``, at
    least ``config.MIN_UNASSOCIATED``): past it
    the oldest is closed if it has been silent for ``unassociated_grace`` seconds (so a
    burst of clients is not cut), so idle connections cannot lock legitimate clients out.
    ``sub_operation_window`` bounds the C-STORE sub-operations a C-GET or C-MOVE keeps
    outstanding (within what the peer grants); ``move_window`` (> 1) makes a C-MOVE propose
    that window on its sub-association (off by default: some SCPs drop associations that
    offer one). ``reuse_port`` sets SO_REUSEPORT, so that several processes can listen on
    one port and the kernel spread connections among them (Linux; ``aiodimse qrscp
    --workers N``).

    It listens on ``host`` (127.0.0.1 unless told otherwise) and behaves like
    ``asyncio.Server``: ``await start()`` (or ``async with``), ``is_serving()``,
    ``close()`` then ``await wait_closed()``; ``port=0`` picks a free port (``.port``).
    Defaults: :mod:`aiodimse.config`.
    """

    def __init__(
        self,
        handler: object | None = None,
        host: str = DEFAULT_HOST,
        port: int = 11112,
        *,
        ae_title: str = "AIODIMSE",
        check_called_ae: bool = False,
        allowed_calling: Iterable[str] | None = None,
        max_associations: int = 100,
        max_pdu: int = DEFAULT_MAX_PDU,
        max_in_memory: int = DEFAULT_MAX_IN_MEMORY,
        timeouts: Timeouts | None = None,
        ssl: _ssl.SSLContext | None = None,
        storage_classes: Iterable[str] | None = None,
        accept_unknown_storage: bool = True,
        storage_transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
        query_transfer_syntaxes: Sequence[str] = QUERY_TRANSFER_SYNTAXES,
        async_window: tuple[int, int] | None = None,
        destinations: Mapping[str, tuple[str, int]] | None = None,
        user_identity: UserIdentityCheck | None = None,
        require_user_identity: bool = False,
        backlog: int = 128,
        move_ssl: _ssl.SSLContext | None = None,
        max_unassociated: int | None = None,
        unassociated_grace: float = UNASSOCIATED_GRACE,
        reuse_port: bool = False,
        sub_operation_window: int = SUB_OPERATION_WINDOW,
        move_window: int = 1,
    ) -> None:
        check_ae_title(ae_title, "ae_title")
        self.handler = handler
        self.host = host
        self._port = port
        self.ae_title = ae_title
        self.check_called_ae = check_called_ae
        self.allowed_calling = frozenset(allowed_calling) if allowed_calling is not None else None
        self.max_associations = max_associations
        self.max_pdu = max_pdu
        self.max_in_memory = max_in_memory
        self.timeouts = Timeouts.for_server(timeouts)
        self.ssl = ssl
        self.storage_classes = (
            frozenset(storage_classes)
            if storage_classes is not None
            else frozenset(uids.STORAGE_SOP_CLASSES.values())
        )
        self.accept_unknown_storage = accept_unknown_storage
        self.storage_transfer_syntaxes = tuple(storage_transfer_syntaxes)
        self.query_transfer_syntaxes = tuple(query_transfer_syntaxes)
        self.async_window = async_window
        self.destinations: dict[str, tuple[str, int]] = dict(destinations or {})
        self.user_identity = user_identity
        self.require_user_identity = require_user_identity
        self.backlog = backlog
        self.reuse_port = reuse_port
        if sub_operation_window < 1 or move_window < 1:
            raise ValueError("sub_operation_window and move_window must be at least 1")
        self.sub_operation_window = sub_operation_window
        self.move_window = move_window
        self.move_ssl = move_ssl
        #: Connections that have not (yet) associated, at most: past it the oldest is
        #: closed, so that idle connections cannot lock legitimate clients out.
        self.max_unassociated = (
            max_unassociated
            if max_unassociated is not None
            else max(2 * max_associations, MIN_UNASSOCIATED)
        )
        self.unassociated_grace = unassociated_grace
        #: Connections not associated yet, oldest first, with the time each came.
        self._unassociated: dict[Association, float] = {}
        self.associations: set[Association] = set()
        self._server: asyncio.Server | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (as ``asyncio.Server.sockets``); empty until started."""
        return tuple(self._server.sockets) if self._server is not None else ()

    def is_serving(self) -> bool:
        """Whether the server is accepting connections (as ``asyncio.Server.is_serving``)."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> Self:
        """Start listening. Returns self, so ``server = await Server(...).start()`` works."""
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()
        _quiet_accept_errors(loop)
        self._server = await loop.create_server(
            self._new_connection,
            self.host,
            self._port,
            ssl=self.ssl,
            ssl_handshake_timeout=self.timeouts.connect if self.ssl else None,
            backlog=self.backlog,
            reuse_address=True,
            # Several processes listening on one port, the kernel spreading the connections.
            reuse_port=self.reuse_port or None,
        )
        log.info(
            "%s listening on %s:%d%s",
            self.ae_title,
            self.host,
            self.port,
            " (TLS)" if self.ssl else "",
        )
        return self

    def close(self) -> None:
        """Stop listening and abort the associations in progress."""
        if self._server is not None:
            self._server.close()
        for assoc in list(self.associations):
            assoc.link.abort_now("server shutting down")

    async def wait_closed(self) -> None:
        """Wait until the listener and every association are closed."""
        if self._server is not None:
            self._server.close()
        await self._idle.wait()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop listening, give running associations ``timeout`` seconds, then abort them."""
        if self._server is not None:
            self._server.close()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            self.close()
            await self._idle.wait()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    # -- associations ----------------------------------------------------------------------

    def _new_connection(self) -> asyncio.Protocol:
        assoc = Association(
            local_ae=self.ae_title,
            timeouts=self.timeouts,
            max_pdu=self.max_pdu,
            max_in_memory=self.max_in_memory,
            handler=self.handler,
            destinations=self.destinations,
            sub_association_ssl=self.move_ssl,
            sub_operation_window=self.sub_operation_window,
            move_window=self.move_window,
        )
        link = assoc.link

        def connected() -> None:
            # Counted only from here: with TLS this runs after a successful handshake; a
            # failed one never gets here, nor to the close callback, and would be kept
            # (and waited for) forever.
            self.associations.add(assoc)
            self._idle.clear()
            now = assoc.link.loop.time()
            self._unassociated[assoc] = now
            if len(self._unassociated) > self.max_unassociated:
                oldest, since = next(iter(self._unassociated.items()))
                # A burst of clients whose requests are still unread is no reason to close
                # one: only a connection silent for the grace period is.
                if now - since >= self.unassociated_grace:
                    self._unassociated.pop(oldest)
                    log.warning(
                        "#%d %d connections have not associated: closing the oldest, from %s,"
                        " silent for %.1f s",
                        oldest.id,
                        self.max_unassociated + 1,
                        oldest.link.peer_name(),
                        now - since,
                    )
                    oldest.link.abort_now("too many connections that do not associate")

        def established() -> None:
            self._unassociated.pop(assoc, None)

        async def decide(rq: AAssociateRQ) -> None:
            await self._answer(assoc, rq)

        link.on_connected = connected
        link.on_established = established
        link.acceptor = decide
        link.add_close_callback(lambda: self._forget(assoc))
        return link.protocol()

    def _forget(self, assoc: Association) -> None:
        self.associations.discard(assoc)
        self._unassociated.pop(assoc, None)
        if not self.associations:
            self._idle.set()

    def policy(self, rq: AAssociateRQ) -> AcceptorPolicy:
        """The acceptor policy for this request: what the handler can do, in our order."""
        handler = self.handler
        query_ts = self.query_transfer_syntaxes
        supported: dict[str, Sequence[str]] = {uids.VERIFICATION_SOP_CLASS: query_ts}
        scu_roles: dict[str, Sequence[str]] = {}
        stores = _has(handler, "on_store") or _has(handler, "open_store")
        if stores:
            for uid in self.storage_classes:
                supported[uid] = self.storage_transfer_syntaxes
        if _has(handler, "on_find"):
            for model in (
                uids.PATIENT_ROOT_QR_FIND,
                uids.STUDY_ROOT_QR_FIND,
                uids.PATIENT_STUDY_ONLY_QR_FIND,
            ):
                supported[model] = query_ts
        if _has(handler, "on_move"):
            for model in uids.MOVE_SOP_CLASSES:
                supported[model] = query_ts
        if _has(handler, "on_get"):
            for model in uids.GET_SOP_CLASSES:
                supported[model] = query_ts
            # C-GET: the requestor proposes the SCP role for the storage classes it wants
            # to receive; we play their SCU.
            for uid in self.storage_classes:
                scu_roles[uid] = self.storage_transfer_syntaxes
        held = _method(handler, "retrieve_transfer_syntaxes")
        if scu_roles and held is not None:
            # For the contexts on which we will send (C-GET), prefer the syntaxes the
            # instances are held in: one that must be converted may not be convertible.
            for uid, syntaxes in dict(held()).items():
                order = list(dict.fromkeys(syntaxes))
                base = scu_roles.get(uid, self.storage_transfer_syntaxes)
                scu_roles[uid] = tuple(order + [t for t in base if t not in order])
        known = set(supported) | set(scu_roles) | set(uids.QUERY_RETRIEVE_SOP_CLASSES)
        if self.accept_unknown_storage:
            for ctx in rq.presentation_contexts:
                if ctx.abstract_syntax in known:
                    continue
                if stores:
                    supported[ctx.abstract_syntax] = self.storage_transfer_syntaxes
                if _has(handler, "on_get"):
                    scu_roles[ctx.abstract_syntax] = self.storage_transfer_syntaxes
        return AcceptorPolicy(
            supported=supported,
            ae_title=self.ae_title if self.check_called_ae else None,
            allowed_calling=self.allowed_calling,
            scu_roles=scu_roles,
            max_pdu=self.max_pdu,
            implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
            implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME,
            async_window=self.async_window,
        )

    async def _answer(self, assoc: Association, rq: AAssociateRQ) -> None:
        where = f"{assoc.peer_address[0]}:{assoc.peer_address[1]}" if assoc.peer_address else "?"
        rejection: Rejection | None = None
        identity_response: bytes | None = None

        def full() -> bool:
            established = sum(1 for a in self.associations if a.negotiated is not None)
            return established >= self.max_associations

        if full():
            rejection = LOCAL_LIMIT_EXCEEDED
        identity = rq.user_information.user_identity if rq.user_information else None
        check = self.user_identity or _method(self.handler, "on_user_identity")
        if rejection is None and identity is None and self.require_user_identity:
            # PS3.7 D.3.3.7.3: an acceptor that requires an identity rejects a request
            # without one as it rejects a wrong one.
            log.warning("#%d refused: no user identity presented", assoc.id)
            rejection = USER_IDENTITY_REJECTED
        if rejection is None and identity is not None and check is not None:
            try:
                verdict = check(identity, assoc)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
            except Exception:
                log.exception("#%d user identity check failed", assoc.id)
                verdict = False
            if verdict is False or verdict is None:
                # PS3.7 D.3.3.7.3: rejected-permanent, source ACSE related function.
                rejection = USER_IDENTITY_REJECTED
            else:
                # PS3.7 D.3.3.7.2: the AC carries the sub-item whenever a positive response
                # was requested; its server response is empty for username (and passcode).
                identity_response = verdict if isinstance(verdict, bytes) else b""
        # Counted again after the (awaited) identity check, with no await until _accept(),
        # so that requests arriving together cannot all slip under the limit.
        if rejection is None and full():
            rejection = LOCAL_LIMIT_EXCEEDED
        outcome = (
            rejection
            if rejection is not None
            else negotiate(rq, self.policy(rq), user_identity_response=identity_response)
        )
        if isinstance(outcome, Rejection):
            log.info(
                "#%d refused association %s -> %s from %s: %s",
                assoc.id,
                rq.calling_ae_title,
                rq.called_ae_title,
                where,
                outcome.pdu().reason_name,
            )
            assoc.link.reject(outcome.pdu())
            return
        ac, negotiated = outcome
        log.info(
            "#%d accepted association %s -> %s from %s (%d of %d contexts)",
            assoc.id,
            rq.calling_ae_title,
            rq.called_ae_title,
            where,
            len(negotiated.accepted),
            len(negotiated.contexts),
        )
        assoc.link.accept(ac, negotiated)


_QUIETED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Out of file descriptors, asyncio's accept loop backs off for a second and reports
    each failure with a traceback. Make that one warning line (at most every 10 s); every
    other report goes to the loop's own handler as before."""
    if loop in _QUIETED:
        return
    _QUIETED.add(loop)
    previous = loop.get_exception_handler()
    last = [-1e9]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _RESOURCE_ERRNOS
            and str(context.get("message", "")).startswith("socket.accept()")
        ):
            now = loop.time()
            if now - last[0] >= 10.0:
                last[0] = now
                log.warning(
                    "cannot accept connections: %s; backing off",
                    os.strerror(exc.errno or 0).lower(),
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _has(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def _method(obj: object, name: str) -> Any:
    m = getattr(obj, name, None)
    return m if callable(m) else None


async def serve(
    handler: object | None, host: str = DEFAULT_HOST, port: int = 11112, **options: Any
) -> Server:
    """Start a :class:`Server` and return it (``close()`` / ``wait_closed()`` to stop)."""
    return await Server(handler, host, port, **options).start()


Listener = Callable[[StoredInstance], Any]


class StorageServer(Server):
    """A storage SCP in one line: ``async with StorageServer("incoming", port=1235)``.

    ``sink`` is where instances go: a :class:`~aiodimse.sinks.Sink` or a folder (a
    :class:`~aiodimse.sinks.DirectorySink` there). It runs as tasks on the current loop,
    so it can receive the C-MOVE sub-operations that an association on the same loop asks
    for: ``await assoc.move(query, "ME", receiver=server)``. ``transfer_syntaxes`` are the
    storage transfer syntaxes accepted; the other keywords are :class:`Server`'s.
    """

    def __init__(
        self,
        sink: Sink | str | os.PathLike[str],
        host: str = DEFAULT_HOST,
        port: int = 11112,
        *,
        ae_title: str = "AIODIMSE",
        storage_classes: Iterable[str] | None = None,
        transfer_syntaxes: Sequence[str] | None = None,
        timeouts: Timeouts | None = None,
        **options: Any,
    ) -> None:
        if isinstance(sink, (str, os.PathLike)):
            sink = DirectorySink(sink)
        self.storage = StorageHandler(sink)
        extra: dict[str, Any] = {}
        if transfer_syntaxes is not None:
            extra["storage_transfer_syntaxes"] = tuple(transfer_syntaxes)
        super().__init__(
            self.storage,
            host,
            port,
            ae_title=ae_title,
            storage_classes=storage_classes,
            timeouts=timeouts,
            **extra,
            **options,
        )
        self._moves: dict[tuple[str, int], MoveTracker] = {}
        self.storage.listeners.append(self._route)

    @property
    def sink(self) -> Sink:
        return self.storage.sink

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(StoredInstance)`` for every committed instance."""
        self.storage.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self.storage.listeners.remove(listener)

    # -- MoveReceiver -------------------------------------------------------------------

    def expect_move(self, ae: str, message_id: int, query: Query | None = None) -> MoveTracker:
        """Collect the instances that the C-MOVE ``(ae, message_id)`` sends here."""
        tracker = MoveTracker(MoveTracker.key_for(ae, message_id), self._forget_move, query)
        self._moves[tracker.key] = tracker
        return tracker

    def expects_move(self, ae: str, message_id: int) -> bool:
        return MoveTracker.key_for(ae, message_id) in self._moves

    def _forget_move(self, tracker: MoveTracker) -> None:
        if self._moves.get(tracker.key) is tracker:
            del self._moves[tracker.key]

    def _route(self, instance: StoredInstance) -> None:
        """Give an instance to the C-MOVE it belongs to. PS3.7 9.3.1.1: a sub-operation
        names its move by Move Originator AE Title and Message ID; SCPs that misname it
        (pynetdicom 3 puts its own AE title) or omit it are matched, in this order, by the
        Message ID alone, by being the only move in progress, or by the instance's UIDs
        against the move's query. The log says which rule matched."""
        moves = self._moves
        if not moves:
            return
        ae = (instance.move_originator_ae_title or "").strip()
        mid = instance.move_originator_message_id
        tracker = moves.get((ae, mid)) if mid is not None else None
        if tracker is not None:
            tracker.add(instance)
            return
        rule = ""
        if mid is not None:
            same_id = [t for t in moves.values() if t.key[1] == mid]
            if len(same_id) == 1:
                tracker = same_id[0]
                rule = f"Move Originator Message ID (the SCP named {ae or 'no AE title'})"
        if tracker is None and len(moves) == 1:
            tracker = next(iter(moves.values()))
            rule = "being the only C-MOVE in progress"
        if tracker is None:
            wanted = [t for t in moves.values() if t.wants(instance)]
            if len(wanted) == 1:
                tracker = wanted[0]
                rule = "its UIDs against the C-MOVE's query"
        if tracker is None:
            log.warning(
                "%s: received %s (Move Originator %r #%s) matches none of %d C-MOVEs",
                self.ae_title,
                instance.sop_instance_uid,
                ae,
                mid,
                len(moves),
            )
            return
        tracker.add(instance, rule)
