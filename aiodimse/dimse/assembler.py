"""Reassembly of PDVs into DIMSE messages (PS3.7 8.1, PS3.8 Annex E), pure.

A message is its command fragments (command bit set) followed, when the command's Command
Data Set Type says so, by its data set fragments; all on one presentation context, the last
fragment of each part flagged. Messages are never interleaved. Anything else is a
:class:`~aiodimse.errors.DIMSEError`, which the association answers with an A-ABORT.

The data set is not collected here: each fragment is handed on as it arrives, so that a
receiver can stream it to disk and memory stays flat however large the instance.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from ..enums import AbortReason
from ..errors import DIMSEError
from ..pdu import PresentationDataValue
from .commands import Message, decode_command

__all__ = ["MessageAssembler"]

_IDLE, _COMMAND, _DATASET = 0, 1, 2


class MessageAssembler:
    """Feed PDVs in arrival order; get ``on_command(context_id, message)`` once a command is
    complete and ``on_data(context_id, fragment, last)`` for each data set fragment."""

    __slots__ = (
        "_command_parts",
        "_command_size",
        "_context_id",
        "_state",
        "max_command_size",
        "on_command",
        "on_data",
        "valid_contexts",
    )

    def __init__(
        self,
        valid_contexts: Container[int],
        on_command: Callable[[int, Message], None],
        on_data: Callable[[int, memoryview | bytes, bool], None],
        max_command_size: int = 1 << 16,
    ) -> None:
        self.valid_contexts = valid_contexts
        self.on_command = on_command
        self.on_data = on_data
        self.max_command_size = max_command_size
        self._state = _IDLE
        self._context_id = 0
        self._command_parts: list[bytes | memoryview] = []
        self._command_size = 0

    @property
    def idle(self) -> bool:
        """True between messages (no command or data set partly received)."""
        return self._state == _IDLE

    def feed(self, pdv: PresentationDataValue) -> None:
        context_id = pdv.context_id
        control = pdv.control
        if control & 0xFC:
            # PS3.8 E.2: bits 2-7 of the message control header are always 0.
            raise DIMSEError(f"message control header 0x{control:02X} has reserved bits set")
        state = self._state
        if state == _DATASET:
            if control & 0x01:
                raise DIMSEError(
                    "a command fragment arrived while a data set was expected",
                    AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
            if context_id != self._context_id:
                raise DIMSEError(
                    f"data set fragment on presentation context {context_id}, "
                    f"but the message started on {self._context_id}"
                )
            last = bool(control & 0x02)
            if last:
                self._state = _IDLE
            self.on_data(context_id, pdv.data, last)
            return
        if not control & 0x01:
            raise DIMSEError(
                "a data set fragment arrived without a command before it",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        if state == _IDLE:
            if context_id not in self.valid_contexts:
                raise DIMSEError(f"presentation context {context_id} was not accepted")
            self._context_id = context_id
            self._command_parts = []
            self._command_size = 0
        elif context_id != self._context_id:
            raise DIMSEError(
                f"command fragment on presentation context {context_id}, "
                f"but the message started on {self._context_id}"
            )
        self._command_parts.append(pdv.data)
        self._command_size += len(pdv.data)
        if self._command_size > self.max_command_size:
            raise DIMSEError(f"command set larger than {self.max_command_size} bytes")
        if not control & 0x02:
            self._state = _COMMAND
            return
        parts = self._command_parts
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        self._command_parts = []
        message = decode_command(raw)
        self._state = _DATASET if message.has_dataset else _IDLE
        self.on_command(context_id, message)
