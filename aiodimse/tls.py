"""Ready-made TLS contexts for DICOM TLS (PS3.15 B.1, the BCP 195 secure transport profiles).

Pass the result as ``ssl=`` to :func:`aiodimse.connect` or :class:`aiodimse.Server`::

    ctx = aiodimse.tls.client_context(ca="ca.pem", cert="me.pem", key="me.key")
    async with aiodimse.connect("pacs", 2762, ssl=ctx, called_ae="PACS") as assoc: ...

    srv = aiodimse.Server(handler, port=2762, ssl=aiodimse.tls.server_context(
        cert="server.pem", key="server.key", ca="ca.pem"))

Both sides default to what PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile,
RFC 9325) asks for: TLS 1.2 or later, only forward-secret AEAD cipher suites on TLS 1.2, no
TLS compression or renegotiation, and authentication of both nodes by certificate: the
client always verifies the server, and a server given ``ca=`` requires a client certificate
signed by it. A handshake that fails surfaces as :class:`aiodimse.AssociationError`
saying why (untrusted certificate, wrong host name, no client certificate...).
"""

from __future__ import annotations

import os
import ssl

__all__ = ["BCP195_CIPHERS", "client_context", "server_context", "tls_reason"]

#: TLS 1.2 cipher suites (OpenSSL names) in the spirit of RFC 9325 4.2: ephemeral key
#: exchange (forward secrecy) with AEAD encryption only. TLS 1.3 suites are all AEAD and
#: are left to OpenSSL's defaults.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)

StrPath = str | os.PathLike[str]


def _harden(ctx: ssl.SSLContext, minimum_version: ssl.TLSVersion) -> None:
    # RFC 9325 3.1.1: TLS 1.2 at the least; 3.3: no compression; 3.5: no renegotiation.
    if minimum_version < ssl.TLSVersion.TLSv1_2:
        raise ValueError("PS3.15 B.9 (BCP 195) requires TLS 1.2 or later")
    ctx.minimum_version = minimum_version
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION


def client_context(
    *,
    ca: StrPath | None = None,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    password: str | bytes | None = None,
    check_hostname: bool = True,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A context for the requestor (SCU) side: verifies the server's certificate.

    ``ca`` is a PEM file of the authorities to trust (the system's store when None);
    ``cert``/``key`` are our own certificate chain and private key, for servers that require
    a client certificate (``key`` may be omitted when it is in the ``cert`` file).
    ``check_hostname`` matches the host (or IP address) given to ``connect`` against the
    certificate's subjectAltName; the certificate itself is always verified.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    _harden(ctx, minimum_version)
    ctx.check_hostname = check_hostname
    if key is not None and cert is None:
        raise ValueError("a client key needs its certificate (cert=)")
    if cert is not None:
        ctx.load_cert_chain(cert, key, password)
    return ctx


def server_context(
    *,
    cert: StrPath,
    key: StrPath | None = None,
    ca: StrPath | None = None,
    require_client_cert: bool | None = None,
    password: str | bytes | None = None,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A context for the acceptor (SCP) side, presenting ``cert``/``key``.

    With ``ca`` (the authorities whose client certificates we accept) every client must
    present a certificate signed by one of them, unless ``require_client_cert=False`` (then
    a certificate is checked only if one is sent). Without ``ca`` no client certificate is
    asked for, which PS3.15 B.9 permits but node authentication is then one-sided; asking
    for ``require_client_cert=True`` without ``ca`` is an error, never a silent downgrade.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum_version)
    ctx.load_cert_chain(cert, key, password)
    if ca is not None:
        ctx.load_verify_locations(cafile=ca)
        optional = require_client_cert is False
        ctx.verify_mode = ssl.CERT_OPTIONAL if optional else ssl.CERT_REQUIRED
    elif require_client_cert:
        raise ValueError(
            "require_client_cert=True needs ca= (the authorities that sign client certificates)"
        )
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


#: Hints for the TLS failures people meet most (OpenSSL reason codes).
_TLS_HINTS = {
    "WRONG_VERSION_NUMBER": "is the peer listening without TLS?",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate; we sent none",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer did not accept our certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no common TLS version or cipher suite, or no certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version that both sides allow",
}


def tls_reason(exc: OSError) -> str:
    """Why a TLS handshake or connection failed, in words (not an OpenSSL error string)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the peer's certificate was not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        hint = _TLS_HINTS.get(exc.reason)
        return exc.reason.lower().replace("_", " ") + (f" ({hint})" if hint else "")
    if not exc.args:
        # asyncio's handshake saw the connection close: the peer gave up on the handshake.
        return (
            "the peer closed the connection during the handshake (it may not accept our"
            " client certificate, or we sent none, or it does not speak TLS)"
        )
    return str(exc)
