"""The safety rule of every probe: only the host the user names, and only a loopback
host unless the user says, explicitly, that they own it."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["OWN_HOST_FLAG", "check_target"]

#: The command-line flag that lifts the loopback-only rule.
OWN_HOST_FLAG = "--i-own-this-host"


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos})


def check_target(host: str, *, i_own_this_host: bool = False) -> None:
    """ValueError (one line, naming the flag) unless every address of ``host`` is a
    loopback address or the user has said they own the host."""
    if i_own_this_host:
        return
    remote = [a for a in _addresses(host) if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if remote:
        raise ValueError(
            f"{host} ({', '.join(remote)}) is not a loopback address: probing other hosts "
            f"can disrupt a clinical system; add {OWN_HOST_FLAG} if it is yours to test"
        )
