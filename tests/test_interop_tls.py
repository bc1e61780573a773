"""DICOM TLS (PS3.15 B.9) and User Identity Negotiation (PS3.7 D.3.3.7) against DCMTK 3.6.7.

DCMTK's options, as its tools document them: ``+tls KEY CERT`` turns TLS on with our key
and certificate (PEM by default), ``+cf CA`` adds a trusted CA, and the peer certificate is
required by default (``-rc``); the default profile is Non-downgrading BCP 195 (``+py``).
storescu's identity options are ``--user NAME`` (``-usr``), ``--password PW`` (``-pwd``),
``-kt FILE`` (Kerberos), ``--saml FILE``, ``--jwt FILE`` and ``-rsp`` (expect a positive
response). The certificates come from ``_pki.py``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from _pki import Pki, make_pki
from _settings import require_dcmtk

import aiodimse
from aiodimse import tls
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.enums import UserIdentityType
from aiodimse.pdu import UserIdentityRQ
from aiodimse.testing.peers import PeerProcess, run_dcmtk_async

pytestmark = pytest.mark.interop

CT = Path(str(pydicom.data.get_testdata_file("CT_small.dcm")))
#: storescu drops Data Set Trailing Padding (FFFC,FFFC), which CT_small carries; this file
#: has none, so what DCMTK sends is the file's data set to the byte.
MR_IMPLICIT = Path(str(pydicom.data.get_testdata_file("MR_small_implicit.dcm")))
LOCAL = "127.0.0.1"
FAST = aiodimse.Timeouts(connect=5, acse=5, dimse=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki, *, rogue: bool = False) -> list[str]:
    """DCMTK's options for TLS with our client (or the rogue) certificate, trusting our CA."""
    cert, key = (
        (pki.rogue_client_cert, pki.rogue_client_key)
        if rogue
        else (pki.client_cert, pki.client_key)
    )
    return ["+tls", str(key), str(cert), "+cf", str(pki.ca)]


async def storescu(*args: str | Path | int, timeout: float = 30) -> tuple[int, str]:
    """Run DCMTK's storescu without blocking the loop (our server runs on it)."""
    require_dcmtk("storescu")
    return await run_dcmtk_async("storescu", *args, timeout=timeout)


def tls_server(pki: Pki, directory: Path, **options: Any) -> aiodimse.StorageServer:
    ctx = tls.server_context(cert=pki.server_cert, key=pki.server_key, ca=pki.ca)
    return aiodimse.StorageServer(
        directory, LOCAL, 0, ae_title="AIODIMSE", ssl=ctx, timeouts=FAST, **options
    )


# -- TLS -----------------------------------------------------------------------------------


async def test_storescu_over_tls_to_aiodimse(pki: Pki, tmp_path: Path) -> None:
    received: list[aiodimse.StoredInstance] = []
    calling_certs: list[object] = []

    srv = tls_server(pki, tmp_path / "in")
    srv.add_listener(received.append)
    srv.add_listener(lambda _: calling_certs.extend(a.peer_certificate for a in srv.associations))
    async with srv:
        rc, out = await storescu(*tls_args(pki), "-aet", "DCMTK", LOCAL, srv.port, MR_IMPLICIT)
        assert rc == 0, out
    (instance,) = received
    assert instance.calling_ae == "DCMTK"
    assert instance.path is not None and instance.path.is_file()
    # DCMTK sent the data set of the file as it is; we wrote it as it arrived.
    assert instance.read_dataset_bytes() == dataset_bytes(MR_IMPLICIT, read_part10(MR_IMPLICIT))
    # Mutual authentication: DCMTK presented the client certificate.
    (cert,) = calling_certs
    assert isinstance(cert, dict) and (("commonName", "client"),) in cert["subject"]


async def test_storescu_with_an_untrusted_certificate_is_refused(pki: Pki, tmp_path: Path) -> None:
    srv = await tls_server(pki, tmp_path / "in").start()
    try:
        rc, out = await storescu(*tls_args(pki, rogue=True), LOCAL, srv.port, CT)
        assert rc != 0, out
        assert not list((tmp_path / "in").iterdir())
    finally:
        srv.close()
        await asyncio.wait_for(srv.wait_closed(), 5)
    assert not srv.associations


@pytest.mark.parametrize(
    "max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_aiodimse_over_tls_to_storescp(
    pki: Pki, storescp_peer: Callable[..., PeerProcess], max_version: ssl.TLSVersion
) -> None:
    """Our BCP 195 cipher suites meet DCMTK's (Non-downgrading BCP 195 profile) on TLS 1.2
    as well as 1.3, and the data set arrives as sent."""
    # +B: storescp writes the data set exactly as it arrived (bit-preserving).
    peer = storescp_peer(
        extra=["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca), "+B"]
    )
    ctx = tls.client_context(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    ctx.maximum_version = max_version
    # Offer the file's own transfer syntax only, so that it is sent as it is.
    info = read_part10(CT)
    contexts = [
        *aiodimse.contexts.verification(),
        aiodimse.ContextRequest(info.sop_class_uid, (info.transfer_syntax_uid,)),
    ]
    async with aiodimse.connect(
        LOCAL, peer.port, called_ae=peer.aet, ssl=ctx, contexts=contexts, timeouts=FAST
    ) as assoc:
        assert assoc.tls_version == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[max_version.name]
        assert (await assoc.echo()).code == 0
        assert (await assoc.store(CT)).code == 0
    assert peer.data_dir is not None
    (path,) = peer.data_dir.iterdir()
    assert dataset_bytes(path, read_part10(path)) == dataset_bytes(CT, info)


@pytest.mark.parametrize(
    "max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_aiodimse_without_certificate_to_storescp(
    pki: Pki, storescp_peer: Callable[..., PeerProcess], max_version: ssl.TLSVersion
) -> None:
    peer = storescp_peer(
        extra=["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]
    )
    ctx = tls.client_context(ca=pki.ca)
    ctx.maximum_version = max_version
    with pytest.raises(aiodimse.AssociationError, match="TLS") as info:
        await aiodimse.connect(LOCAL, peer.port, called_ae=peer.aet, ssl=ctx, timeouts=FAST)
    assert "certificate" in str(info.value)
    assert peer.alive()


async def test_aiodimse_not_trusting_storescp(
    pki: Pki, storescp_peer: Callable[..., PeerProcess]
) -> None:
    peer = storescp_peer(
        extra=["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]
    )
    ctx = tls.client_context(ca=pki.rogue_ca, cert=pki.client_cert, key=pki.client_key)
    with pytest.raises(aiodimse.AssociationError, match=r"TLS handshake .* certificate"):
        await aiodimse.connect(LOCAL, peer.port, called_ae=peer.aet, ssl=ctx, timeouts=FAST)


# -- User identity ----------------------------------------------------------------------------


class Hook:
    def __init__(self, verdict: bool | bytes) -> None:
        self.verdict = verdict
        self.seen: list[UserIdentityRQ] = []

    async def __call__(self, identity: UserIdentityRQ, assoc: aiodimse.Association) -> bool | bytes:
        self.seen.append(identity)
        return self.verdict


def identity_args(kind: str, tmp_path: Path) -> tuple[list[str], UserIdentityType, bytes, bytes]:
    """storescu options for one identity type, and what the acceptor must then receive."""
    if kind == "username":
        return ["--user", "bob"], UserIdentityType.USERNAME, b"bob", b""
    if kind == "username+passcode":
        return (
            ["--user", "bob", "--password", "pw"],
            UserIdentityType.USERNAME_AND_PASSCODE,
            b"bob",
            b"pw",
        )
    payload = {
        "kerberos": b"\x6e\x82\x01\x02ticket",
        "saml": b"<saml:Assertion/>",
        "jwt": b"aaa.bbb.ccc",
    }[kind]
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(payload)
    option = {"kerberos": "-kt", "saml": "--saml", "jwt": "--jwt"}[kind]
    kind_code = {
        "kerberos": UserIdentityType.KERBEROS,
        "saml": UserIdentityType.SAML,
        "jwt": UserIdentityType.JWT,
    }[kind]
    return [option, str(path)], kind_code, payload, b""


@pytest.mark.parametrize("kind", ["username", "username+passcode", "kerberos", "saml", "jwt"])
async def test_storescu_identity_accepted(kind: str, tmp_path: Path) -> None:
    args, kind_code, primary, secondary = identity_args(kind, tmp_path)
    hook = Hook(True)
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIODIMSE", user_identity=hook, timeouts=FAST
    ) as srv:
        rc, out = await storescu(*args, LOCAL, srv.port, CT)
    assert rc == 0, out
    (seen,) = hook.seen
    assert (seen.identity_type, seen.primary_field, seen.secondary_field) == (
        kind_code,
        primary,
        secondary,
    )
    assert len(list((tmp_path / "in").iterdir())) == 1


@pytest.mark.parametrize("verdict", [True, b"server-ticket"], ids=["username", "kerberos"])
async def test_storescu_positive_response(verdict: bool | bytes, tmp_path: Path) -> None:
    """storescu -rsp fails the association when the AC lacks the User Identity sub-item."""
    kind = "username" if verdict is True else "kerberos"
    args, *_ = identity_args(kind, tmp_path)
    hook = Hook(verdict)
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIODIMSE", user_identity=hook, timeouts=FAST
    ) as srv:
        rc, out = await storescu(*args, "-rsp", LOCAL, srv.port, CT)
    assert rc == 0, out
    assert hook.seen[0].positive_response_requested


async def test_storescu_identity_rejected(tmp_path: Path) -> None:
    hook = Hook(False)
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIODIMSE", user_identity=hook, timeouts=FAST
    ) as srv:
        rc, out = await storescu("--user", "bob", "--password", "wrong", LOCAL, srv.port, CT)
    assert rc != 0
    # DCMTK's words for PS3.7 D.3.3.7.3: rejected-permanent by the ACSE service-provider.
    assert "Association Rejected" in out, out
    assert "Rejected Permanent" in out and "ACSE" in out, out
    assert [s.secondary_field for s in hook.seen] == [b"wrong"]
    assert not list((tmp_path / "in").iterdir())


async def test_storescu_hits_the_association_limit(tmp_path: Path) -> None:
    async with aiodimse.StorageServer(
        tmp_path / "in", LOCAL, 0, ae_title="AIODIMSE", max_associations=1, timeouts=FAST
    ) as srv:
        async with aiodimse.connect(LOCAL, srv.port, timeouts=FAST):
            rc, out = await storescu(LOCAL, srv.port, CT, timeout=15)
            assert rc != 0
            assert "Rejected Transient" in out and "Local Limit Exceeded" in out, out
        rc, out = await storescu(LOCAL, srv.port, CT, timeout=15)
        assert rc == 0, out
