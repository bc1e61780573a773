"""Why a connection failed or ended, in words for people (PS3.15 B.9 for TLS)."""

from __future__ import annotations

import os
import socket
import ssl

from ..errors import AiodimseError, AssociationError, AssociationTimeout
from ..tls import tls_reason

__all__ = ["connect_error", "lost_message", "peer_name"]


def peer_name(ae: str, address: tuple[str, int] | None) -> str:
    """``AE at host:port``, or whichever of the two is known."""
    where = f"{address[0]}:{address[1]}" if address else ""
    if ae and where:
        return f"{ae} at {where}"
    return ae or where or "the peer"


def connect_error(
    exc: OSError | TimeoutError, host: str, port: int, timeout: float | None, *, tls: bool
) -> AiodimseError:
    """The error for a TCP (or TLS) connection that could not be made."""
    if isinstance(exc, TimeoutError):
        return AssociationTimeout(f"cannot connect to {host}:{port}: no answer within {timeout} s")
    if tls and (isinstance(exc, ssl.SSLError) or not exc.args):
        # PS3.15 B.9: a failed handshake says so, and why (never a bare SSLError).
        return AssociationError(f"TLS handshake with {host}:{port} failed: {tls_reason(exc)}")
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        why = exc.strerror or str(exc)
    else:
        why = os.strerror(exc.errno)
    return AssociationError(f"cannot connect to {host}:{port}: {why}")


def lost_message(ae: str, address: tuple[str, int] | None, *, tls_refused: bool) -> str:
    """Why a connection closed without a release or an abort."""
    if tls_refused:
        # TLS 1.3 servers check the client certificate after our side of the handshake
        # has completed; many (asyncio's among them) then just close the connection.
        return (
            f"TLS failed: {peer_name(ae, address)} closed the connection after the TLS"
            " handshake without answering the association request; it probably did not"
            " accept our client certificate (or we sent none)"
        )
    peer = ae or (f"{address[0]}:{address[1]}" if address else "the peer")
    return f"connection to {peer} closed without a release or an abort"
