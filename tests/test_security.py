"""Security on real sockets: DICOM TLS (PS3.15 B.9), User Identity Negotiation (PS3.7
D.3.3.7) and the server's association limit (PS3.8 Table 9-21 local-limit-exceeded).

Every test runs aiodimse against itself on 127.0.0.1; the certificates are made at run
time by ``openssl`` (see ``_pki.py``). The DCMTK side of the same features is in
``test_interop_tls.py``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from _pki import Pki, make_pki

import aiodimse
from aiodimse import tls
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.enums import RejectResult, RejectSource, UserIdentityType
from aiodimse.pdu import UserIdentityAC, UserIdentityRQ

CT = Path(str(pydicom.data.get_testdata_file("CT_small.dcm")))
LOCAL = "127.0.0.1"
#: Short bounds: a test that hangs fails in seconds instead of minutes.
FAST = aiodimse.Timeouts(connect=5, acse=5, dimse=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_ctx(pki: Pki, **kw: Any) -> ssl.SSLContext:
    return tls.server_context(cert=pki.server_cert, key=pki.server_key, ca=pki.ca, **kw)


def client_ctx(pki: Pki, **kw: Any) -> ssl.SSLContext:
    kw.setdefault("ca", pki.ca)
    kw.setdefault("cert", pki.client_cert)
    kw.setdefault("key", pki.client_key)
    return tls.client_context(**kw)


class Recorder:
    """A storage handler that keeps what it is given, and the associations it met."""

    def __init__(self) -> None:
        self.stored: list[tuple[aiodimse.StoreRequest, bytes]] = []
        self.echoed: list[aiodimse.Association] = []

    async def on_echo(self, req: aiodimse.Request) -> None:
        self.echoed.append(req.association)

    async def on_store(self, req: aiodimse.StoreRequest) -> None:
        self.stored.append((req, bytes(req.dataset_bytes)))


async def closes_promptly(server: aiodimse.Server) -> None:
    """The server lets go of every association and closes within a few seconds."""
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert not server.associations


# -- DICOM TLS -----------------------------------------------------------------------------


async def test_mutual_tls_echo_and_store(pki: Pki) -> None:
    handler = Recorder()
    async with aiodimse.Server(handler, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST) as srv:
        async with aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST) as a:
            assert a.tls_version in ("TLSv1.2", "TLSv1.3")
            # We verified the server: its certificate is the one for localhost/127.0.0.1.
            assert a.peer_certificate is not None
            assert ("IP Address", LOCAL) in a.peer_certificate["subjectAltName"]
            assert (await a.echo()).code == 0x0000
            assert (await a.store(CT)).code == 0x0000
        # ...and the server verified us: the handler saw the client's certificate.
        (server_side,) = handler.echoed
        assert server_side.peer_certificate is not None
        assert (("commonName", "client"),) in server_side.peer_certificate["subject"]
    ((req, data),) = handler.stored
    assert req.sop_instance_uid == pydicom.dcmread(CT).SOPInstanceUID
    assert data == dataset_bytes(CT, read_part10(CT))


@pytest.mark.parametrize(
    "max_version",
    [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
    ids=["tls1.2", "tls1.3"],
)
async def test_client_without_certificate_is_refused_clearly(
    pki: Pki, max_version: ssl.TLSVersion
) -> None:
    """TLS 1.2 fails inside the handshake, TLS 1.3 only after it (the server checks the
    client certificate late): either way the caller gets an AssociationError naming TLS,
    never a bare ssl.SSLError or an unexplained 'connection closed'."""
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    try:
        ctx = tls.client_context(ca=pki.ca)  # trusts the server, has no certificate
        ctx.maximum_version = max_version
        with pytest.raises(aiodimse.AssociationError, match="TLS") as info:
            await aiodimse.connect(LOCAL, srv.port, ssl=ctx, timeouts=FAST)
        assert "certificate" in str(info.value)
        # The server is still fine for a client that does present a certificate.
        async with aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST) as a:
            await a.echo()
    finally:
        await closes_promptly(srv)


async def test_client_certificate_from_an_unknown_ca_is_refused(pki: Pki) -> None:
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    try:
        ctx = client_ctx(pki, cert=pki.rogue_client_cert, key=pki.rogue_client_key)
        with pytest.raises(aiodimse.AssociationError, match="TLS"):
            await aiodimse.connect(LOCAL, srv.port, ssl=ctx, timeouts=FAST)
    finally:
        await closes_promptly(srv)


async def test_client_not_trusting_the_server_fails_with_the_reason(pki: Pki) -> None:
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    try:
        ctx = client_ctx(pki, ca=pki.rogue_ca)
        with pytest.raises(aiodimse.AssociationError, match="TLS") as info:
            await aiodimse.connect(LOCAL, srv.port, ssl=ctx, timeouts=FAST)
        message = str(info.value)
        assert "certificate" in message and f"{LOCAL}:{srv.port}" in message
        assert "Operation not permitted" not in message
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await closes_promptly(srv)


async def test_server_name_is_checked(pki: Pki) -> None:
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    try:
        with pytest.raises(aiodimse.AssociationError, match=r"TLS.*pacs\.example"):
            await aiodimse.connect(
                LOCAL, srv.port, ssl=client_ctx(pki), server_hostname="pacs.example", timeouts=FAST
            )
        # The name in the certificate works in place of the address.
        async with aiodimse.connect(
            LOCAL, srv.port, ssl=client_ctx(pki), server_hostname="localhost", timeouts=FAST
        ) as a:
            await a.echo()
    finally:
        await closes_promptly(srv)


async def test_tls_client_to_plain_server(pki: Pki) -> None:
    async with aiodimse.Server(None, LOCAL, 0, timeouts=FAST) as srv:
        with pytest.raises(aiodimse.AssociationError, match="TLS"):
            await aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST)


async def test_plain_client_to_tls_server(pki: Pki) -> None:
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    try:
        with pytest.raises(aiodimse.AssociationError):
            await aiodimse.connect(LOCAL, srv.port, timeouts=FAST)
    finally:
        await closes_promptly(srv)


async def test_failed_handshakes_leave_nothing_behind(pki: Pki) -> None:
    """A connection whose TLS handshake failed never became an association: the server must
    not keep it (it would count against nothing, but ``wait_closed`` would wait forever)."""
    srv = await aiodimse.Server(None, LOCAL, 0, ssl=server_ctx(pki), timeouts=FAST).start()
    bad = tls.client_context(ca=pki.ca)
    for _ in range(3):
        with pytest.raises(aiodimse.AssociationError):
            await aiodimse.connect(LOCAL, srv.port, ssl=bad, timeouts=FAST)
    await closes_promptly(srv)


def test_tls_contexts_follow_bcp195(pki: Pki) -> None:
    client = client_ctx(pki)
    server = server_ctx(pki)
    for ctx in (client, server):
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
        tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12, "no TLS 1.2 cipher suite left"
        # RFC 9325 4.2: forward secrecy and AEAD only.
        assert all(c["kea"] in ("kx-ecdhe", "kx-dhe") and c["aead"] for c in tls12), tls12
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert server.verify_mode == ssl.CERT_REQUIRED
    optional = tls.server_context(
        cert=pki.server_cert, key=pki.server_key, ca=pki.ca, require_client_cert=False
    )
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    one_sided = tls.server_context(cert=pki.server_cert, key=pki.server_key)
    assert one_sided.verify_mode == ssl.CERT_NONE


def test_tls_contexts_refuse_weak_or_incomplete_settings(pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"TLS 1\.2"):
        tls.client_context(ca=pki.ca, minimum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ValueError, match="ca="):
        tls.server_context(cert=pki.server_cert, key=pki.server_key, require_client_cert=True)
    with pytest.raises(ValueError, match="cert="):
        tls.client_context(ca=pki.ca, key=pki.client_key)


async def test_server_without_client_authentication(pki: Pki) -> None:
    one_sided = tls.server_context(cert=pki.server_cert, key=pki.server_key)
    async with aiodimse.Server(None, LOCAL, 0, ssl=one_sided, timeouts=FAST) as srv:
        ctx = tls.client_context(ca=pki.ca)
        async with aiodimse.connect(LOCAL, srv.port, ssl=ctx, timeouts=FAST) as a:
            assert (await a.echo()).code == 0


# -- User Identity Negotiation (PS3.7 D.3.3.7) ----------------------------------------------


class IdentityServer:
    """A server whose user identity hook records what it saw and answers ``verdict``."""

    def __init__(self, verdict: bool | bytes | Exception | None, delay: float = 0.0) -> None:
        self.verdict = verdict
        self.delay = delay
        self.seen: list[tuple[UserIdentityRQ, str]] = []

    async def check(
        self, identity: UserIdentityRQ, assoc: aiodimse.Association
    ) -> bool | bytes | None:
        self.seen.append((identity, assoc.calling_ae))
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


IDENTITIES = {
    "username": (UserIdentityRQ.username("bob"), UserIdentityType.USERNAME, b"bob", b""),
    "username+passcode": (
        UserIdentityRQ.username("bøb", passcode="pw"),
        UserIdentityType.USERNAME_AND_PASSCODE,
        "bøb".encode(),
        b"pw",
    ),
    "kerberos": (
        UserIdentityRQ.kerberos(b"\x6e\x82\x01\x00ticket"),
        UserIdentityType.KERBEROS,
        b"\x6e\x82\x01\x00ticket",
        b"",
    ),
    "saml": (
        UserIdentityRQ.saml("<saml:Assertion/>"),
        UserIdentityType.SAML,
        b"<saml:Assertion/>",
        b"",
    ),
    "jwt": (UserIdentityRQ.jwt("aaa.bbb.ccc"), UserIdentityType.JWT, b"aaa.bbb.ccc", b""),
}


def test_user_identity_constructors() -> None:
    for identity, kind, primary, secondary in IDENTITIES.values():
        assert identity.identity_type == kind
        assert identity.primary_field == primary
        assert identity.secondary_field == secondary
        assert not identity.positive_response_requested
    asked = UserIdentityRQ.jwt(b"x.y.z", positive_response=True)
    assert asked.positive_response_requested and asked.primary_field == b"x.y.z"
    with pytest.raises(ValueError):
        UserIdentityRQ.username("")
    with pytest.raises(ValueError):
        UserIdentityRQ.jwt(b"")
    with pytest.raises(ValueError):
        UserIdentityRQ.saml("x" * 70_000)


@pytest.mark.parametrize("name", list(IDENTITIES))
async def test_each_identity_type_reaches_the_hook(name: str) -> None:
    identity, kind, primary, secondary = IDENTITIES[name]
    hook = IdentityServer(True)
    async with (
        aiodimse.Server(None, LOCAL, 0, user_identity=hook.check, timeouts=FAST) as srv,
        aiodimse.connect(
            LOCAL, srv.port, calling_ae="BOBS-PC", user_identity=identity, timeouts=FAST
        ) as a,
    ):
        assert (await a.echo()).code == 0
        # No response asked for: none given (D.3.3.7).
        assert a.negotiated is not None and a.negotiated.user_identity_response is None
        (server_side,) = srv.associations
        assert server_side.user_identity == identity
    ((seen, calling),) = hook.seen
    assert (seen.identity_type, seen.primary_field, seen.secondary_field) == (
        kind,
        primary,
        secondary,
    )
    assert calling == "BOBS-PC"


@pytest.mark.parametrize("name", ["kerberos", "saml", "jwt"])
async def test_positive_response_carries_the_server_response(name: str) -> None:
    identity = IDENTITIES[name][0]
    asked = UserIdentityRQ(
        identity.identity_type, identity.primary_field, positive_response_requested=True
    )
    hook = IdentityServer(b"server-ticket-" + name.encode())
    async with (
        aiodimse.Server(None, LOCAL, 0, user_identity=hook.check, timeouts=FAST) as srv,
        aiodimse.connect(LOCAL, srv.port, user_identity=asked, timeouts=FAST) as a,
    ):
        assert a.negotiated is not None
        assert a.negotiated.user_identity_response == UserIdentityAC(
            b"server-ticket-" + name.encode()
        )
        (server_side,) = srv.associations
        assert server_side.negotiated is not None
        assert server_side.negotiated.user_identity_response == UserIdentityAC(
            b"server-ticket-" + name.encode()
        )


async def test_positive_response_for_a_username_is_an_empty_sub_item() -> None:
    """PS3.7 D.3.3.7: when a positive response was requested and the user is accepted, the
    A-ASSOCIATE-AC shall contain the sub-item; for types 1 and 2 its response is empty."""
    hook = IdentityServer(True)
    identity = UserIdentityRQ.username("bob", passcode="pw", positive_response=True)
    async with (
        aiodimse.Server(None, LOCAL, 0, user_identity=hook.check, timeouts=FAST) as srv,
        aiodimse.connect(LOCAL, srv.port, user_identity=identity, timeouts=FAST) as a,
    ):
        assert a.negotiated is not None
        assert a.negotiated.user_identity_response == UserIdentityAC(b"")
        (server_side,) = srv.associations
        assert server_side.negotiated is not None
        assert server_side.negotiated.user_identity_response == UserIdentityAC(b"")


async def test_server_without_a_hook_ignores_the_identity() -> None:
    identity = UserIdentityRQ.username("bob", positive_response=True)
    async with (
        aiodimse.Server(None, LOCAL, 0, timeouts=FAST) as srv,
        aiodimse.connect(LOCAL, srv.port, user_identity=identity, timeouts=FAST) as a,
    ):
        # Not supported -> accepted without a response; the requestor decides.
        assert a.negotiated is not None and a.negotiated.user_identity_response is None


@pytest.mark.parametrize(
    "verdict",
    [False, None, PermissionError("no such user")],
    ids=["false", "none", "raises"],
)
async def test_rejected_identity_is_rejected_permanent_by_the_acse(
    verdict: bool | Exception | None,
) -> None:
    """PS3.7 D.3.3.7.3: rejected-permanent, source DICOM UL service-provider (ACSE related
    function); PS3.8 Table 9-21 gives that source no-reason-given (1) as its only fit."""
    hook = IdentityServer(verdict)
    async with aiodimse.Server(None, LOCAL, 0, user_identity=hook.check, timeouts=FAST) as srv:
        with pytest.raises(aiodimse.AssociationRejected) as info:
            await aiodimse.connect(
                LOCAL, srv.port, user_identity=UserIdentityRQ.username("eve"), timeouts=FAST
            )
        # The server stays usable.
        async with aiodimse.connect(LOCAL, srv.port, timeouts=FAST) as a:
            await a.echo()
    rj = info.value
    assert (rj.result, rj.source, rj.reason) == (
        RejectResult.REJECTED_PERMANENT,
        RejectSource.SERVICE_PROVIDER_ACSE,
        1,
    )
    assert len(hook.seen) == 1  # the second association carried no identity: hook not called


async def test_handler_on_user_identity_is_used() -> None:
    class Handler:
        def __init__(self) -> None:
            self.users: list[bytes] = []

        async def on_user_identity(
            self, identity: UserIdentityRQ, assoc: aiodimse.Association
        ) -> bool:
            self.users.append(identity.primary_field)
            return identity.secondary_field == b"right"

    handler = Handler()
    async with aiodimse.Server(handler, LOCAL, 0, timeouts=FAST) as srv:
        good = UserIdentityRQ.username("bob", passcode="right")
        async with aiodimse.connect(LOCAL, srv.port, user_identity=good, timeouts=FAST) as a:
            await a.echo()
        bad = UserIdentityRQ.username("bob", passcode="wrong")
        with pytest.raises(aiodimse.AssociationRejected):
            await aiodimse.connect(LOCAL, srv.port, user_identity=bad, timeouts=FAST)
    assert handler.users == [b"bob", b"bob"]


# -- The association limit -------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[aiodimse.Server]:
    srv = await aiodimse.Server(None, LOCAL, 0, max_associations=2, timeouts=FAST).start()
    try:
        yield srv
    finally:
        await closes_promptly(srv)


def assert_local_limit(exc: aiodimse.AssociationRejected) -> None:
    # PS3.8 Table 9-21: rejected-transient, service-provider (presentation), local-limit-exceeded.
    assert (exc.result, exc.source, exc.reason) == (
        RejectResult.REJECTED_TRANSIENT,
        RejectSource.SERVICE_PROVIDER_PRESENTATION,
        2,
    )
    assert "local-limit-exceeded" in str(exc)


async def test_limit_rejects_the_one_too_many_then_accepts_again(limited: aiodimse.Server) -> None:
    first = await aiodimse.connect(LOCAL, limited.port, timeouts=FAST)
    second = await aiodimse.connect(LOCAL, limited.port, timeouts=FAST)
    with pytest.raises(aiodimse.AssociationRejected) as info:
        # Answered at once: well inside the 5 s ACSE timeout, never left hanging.
        await asyncio.wait_for(aiodimse.connect(LOCAL, limited.port, timeouts=FAST), 2)
    assert_local_limit(info.value)
    # The two that were let in are unaffected.
    await first.echo()
    await second.echo()
    await first.release()
    third = await aiodimse.connect(LOCAL, limited.port, timeouts=FAST)
    await third.echo()
    await asyncio.gather(second.release(), third.release())


async def test_limit_holds_against_simultaneous_requests() -> None:
    """Requests that arrive together (here: while a slow identity check runs) must not all
    slip under the limit."""
    hook = IdentityServer(True, delay=0.2)
    srv = await aiodimse.Server(
        None, LOCAL, 0, max_associations=1, user_identity=hook.check, timeouts=FAST
    ).start()
    try:
        identity = UserIdentityRQ.username("bob")
        results = await asyncio.gather(
            *(
                aiodimse.connect(LOCAL, srv.port, user_identity=identity, timeouts=FAST)
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        accepted = [r for r in results if isinstance(r, aiodimse.Association)]
        rejected = [r for r in results if isinstance(r, aiodimse.AssociationRejected)]
        assert len(accepted) == 1, results
        assert len(rejected) == 2, results
        for exc in rejected:
            assert_local_limit(exc)
        await accepted[0].release()
    finally:
        await closes_promptly(srv)


async def test_released_slot_is_free_at_once(limited: aiodimse.Server) -> None:
    """Once release() has returned, the slot is free: no retry loop needed."""
    keep = await aiodimse.connect(LOCAL, limited.port, timeouts=FAST)
    for _ in range(20):
        a = await aiodimse.connect(LOCAL, limited.port, timeouts=FAST)
        await a.release()
    await keep.release()


async def test_limit_counts_tls_associations(pki: Pki) -> None:
    srv = await aiodimse.Server(
        None, LOCAL, 0, ssl=server_ctx(pki), max_associations=1, timeouts=FAST
    ).start()
    try:
        async with aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST):
            with pytest.raises(aiodimse.AssociationRejected) as info:
                await aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST)
            assert_local_limit(info.value)
        async with aiodimse.connect(LOCAL, srv.port, ssl=client_ctx(pki), timeouts=FAST) as a:
            await a.echo()
    finally:
        await closes_promptly(srv)
