"""Defaults in one place: timeouts, PDU and memory limits, where servers listen.

Clients and servers share :class:`Timeouts`; they differ in one default only, stated here:
a server releases an association that has been idle for :data:`SERVER_IDLE_TIMEOUT`
seconds, a client never does on its own (its program decides when it is done).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_IN_MEMORY",
    "DEFAULT_MAX_PDU",
    "MAX_INFLATED_HEADER",
    "MAX_INFLATED_IDENTIFIER",
    "MIN_UNASSOCIATED",
    "SERVER_IDLE_TIMEOUT",
    "UNASSOCIATED_GRACE",
    "Timeouts",
]

#: Our default Maximum Length (PS3.8 D.1): large PDUs mean fewer headers and system calls.
DEFAULT_MAX_PDU: Final = 262_144
#: Data sets received above this size go to a temporary file rather than memory.
DEFAULT_MAX_IN_MEMORY: Final = 32 * 1024 * 1024
#: Servers listen on loopback unless told otherwise (the CLI's ``--host`` says where).
DEFAULT_HOST: Final = "127.0.0.1"
#: A server releases an association idle for this long (seconds).
SERVER_IDLE_TIMEOUT: Final = 300.0
#: A server keeps at least this many connections that have not associated yet (by
#: default twice its association limit); past it, the oldest is closed.
MIN_UNASSOCIATED: Final = 64
#: ...and closes one only once it has not associated for this long (seconds).
UNASSOCIATED_GRACE: Final = 1.0
#: A Deflated identifier (C-FIND/C-GET/C-MOVE, either side) may inflate to this many
#: bytes; past it the message is refused (a small stream can inflate to gigabytes).
MAX_INFLATED_IDENTIFIER: Final = 16 * 1024 * 1024
#: The archive reads a stored Deflated instance's header (up to group 0020) inflating at
#: most this many bytes; past it the instance is refused (C000).
MAX_INFLATED_HEADER: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every wait on the network is bounded; None disables one (not recommended).

    ``connect``: TCP (and TLS) connection set-up. ``acse``: association negotiation and
    release, and the ARTIM timer (PS3.8 9.1.5). ``dimse``: waiting for each DIMSE response
    message (and for each further fragment once a message has started). ``idle``: an
    association with no traffic and nothing outstanding for this long is released (None
    for a client; :data:`SERVER_IDLE_TIMEOUT` for a server: see :meth:`for_server`).
    """

    connect: float | None = 30.0
    acse: float | None = 30.0
    dimse: float | None = 60.0
    idle: float | None = None

    def for_sub_operations(self) -> Timeouts:
        """The timeouts of a C-MOVE SCP's sub-association: half the DIMSE timeout, so that
        a destination that stops answering fails its sub-operation (reported in the final
        response) before the SCU, which waits for our next response with the same DIMSE
        timeout, gives up on us."""
        dimse = self.dimse / 2 if self.dimse is not None else None
        return replace(self, dimse=dimse, idle=None)

    @classmethod
    def for_server(cls, given: Timeouts | None = None) -> Timeouts:
        """A server's timeouts: ``given`` as it is, or the defaults with the server's idle
        timeout."""
        return given if given is not None else replace(cls(), idle=SERVER_IDLE_TIMEOUT)
