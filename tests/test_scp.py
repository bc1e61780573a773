"""The SCP services answer every request with a final status, whatever the handler or the
identifier does (real servers and associations on loopback)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

import aiodimse
from aiodimse import uids
from aiodimse.dicomfile import NotDicomError
from aiodimse.dimse.commands import CFindRQ, CMoveRQ
from aiodimse.errors import AiodimseError, ConnectionLost
from aiodimse.requests import FindRequest, RetrieveRequest

LOCAL = "127.0.0.1"
QUICK = aiodimse.Timeouts(dimse=10)


class Raising:
    """C-GET / C-MOVE / C-FIND handlers that raise what they are told to."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.find_calls = 0

    def on_move(self, request: RetrieveRequest) -> list[Path]:
        raise self.error

    def on_get(self, request: RetrieveRequest) -> list[Path]:
        raise self.error

    async def on_find(self, request: FindRequest) -> Any:
        self.find_calls += 1
        yield request.identifier


@pytest.mark.parametrize(
    "error",
    [
        ConnectionLost("the index database went away"),
        NotDicomError("/srv/x.dcm: not DICOM"),
        AiodimseError("something of ours"),
        RuntimeError("a bug"),
    ],
    ids=["ConnectionLost", "NotDicomError", "AiodimseError", "RuntimeError"],
)
@pytest.mark.parametrize("service", ["move", "get"])
async def test_a_retrieve_handler_that_raises_gets_a_failure_status(
    error: Exception, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        aiodimse.Server(
            Raising(error), LOCAL, 0, ae_title="QR", destinations={"DEST": (LOCAL, 9)}
        ) as qr,
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            contexts=aiodimse.contexts.for_get() + aiodimse.contexts.query_retrieve(),
            timeouts=QUICK,
        ) as assoc,
    ):
        query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"}
        with caplog.at_level("WARNING", logger="aiodimse"):
            if service == "move":
                retrieval = assoc.move(query, "DEST", check=False)
            else:
                retrieval = assoc.get(query, check=False)
            result = await retrieval
        assert result.status.code == 0xC001
        assert retrieval.final is not None
        assert type(error).__name__ in (retrieval.final.error_comment or "")
        assert (await assoc.echo()).code == 0  # the association goes on
    service_name = "C-MOVE" if service == "move" else "C-GET"
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "the handler failed" in r.getMessage()
    ]
    assert len(warned) == 1 and service_name in warned[0] and "message 1 " in warned[0]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def _find_raw(assoc: aiodimse.Association, identifier: bytes) -> Any:
    context = assoc.context_for(uids.STUDY_ROOT_QR_FIND)
    op = await assoc.exchange.invoke(
        context,
        lambda mid: CFindRQ(message_id=mid, affected_sop_class_uid=uids.STUDY_ROOT_QR_FIND),
        identifier,
    )
    message, _ = await assoc.exchange.response(op)
    return message


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


@pytest.mark.parametrize(
    "identifier",
    [
        _element(0x0008, 0x0052, b"ZZ", b"STUDY "),  # an unknown VR in the level itself
        _element(0x0008, 0x0052, b"CS", b"STUDY ") + _element(0x0010, 0x0010, b"ZZ", b"X "),
    ],
    ids=["unknown VR in the level", "unknown VR in a key"],
)
async def test_a_malformed_find_identifier_gets_a_failure_status(
    identifier: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Raising(RuntimeError("unused"))
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=QUICK) as assoc,
    ):
        with caplog.at_level("WARNING", logger="aiodimse"):
            response = await _find_raw(assoc, identifier)
        assert response.status == 0xC000
        assert "cannot decode the identifier" in (response.error_comment or "")
        assert handler.find_calls == 0
        assert assoc.is_established and (await assoc.echo()).code == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_malformed_move_identifier_gets_a_failure_status() -> None:
    async with (
        aiodimse.Server(Raising(RuntimeError("unused")), LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(LOCAL, qr.port, called_ae="QR", timeouts=QUICK) as assoc,
    ):
        context = assoc.context_for(uids.STUDY_ROOT_QR_MOVE)
        op = await assoc.exchange.invoke(
            context,
            lambda mid: CMoveRQ(
                message_id=mid,
                affected_sop_class_uid=uids.STUDY_ROOT_QR_MOVE,
                move_destination="QR",
            ),
            _element(0x0008, 0x0052, b"ZZ", b"STUDY "),
        )
        response, _ = await assoc.exchange.response(op)
        assert response.status == 0xA900
        assert (await assoc.echo()).code == 0


async def test_a_deflated_identifier_that_inflates_too_far_is_refused() -> None:
    """1 MiB or less of Deflated identifier that would inflate to 256 MiB: a failure
    status at the ceiling, the loop not held, the association kept."""
    handler = Raising(RuntimeError("unused"))
    body = _element(0x0008, 0x0052, b"CS", b"STUDY ")
    huge = 256 * 1024 * 1024
    body += struct.pack("<HH2s2xL", 0x0010, 0x4000, b"UT", huge)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(body)
    chunk = b" " * (1 << 20)
    for _ in range(huge >> 20):
        deflated += packer.compress(chunk)
    deflated += packer.flush()
    if len(deflated) & 1:
        deflated += b"\x00"
    assert len(deflated) < 1 << 20
    find = [
        aiodimse.ContextRequest(uids.STUDY_ROOT_QR_FIND, (uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,))
    ]
    async with (
        aiodimse.Server(handler, LOCAL, 0, ae_title="QR") as qr,
        aiodimse.connect(
            LOCAL,
            qr.port,
            called_ae="QR",
            timeouts=QUICK,
            contexts=aiodimse.contexts.verification() + find,
        ) as assoc,
    ):
        response = await _find_raw(assoc, deflated)
        assert response.status == 0xC000
        assert "inflates beyond" in (response.error_comment or "")
        assert handler.find_calls == 0
        assert (await assoc.echo()).code == 0
