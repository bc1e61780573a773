"""Servers share one shape: arguments, defaults, the asyncio.Server life cycle, hooks."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from _retrieve_support import FileArchive

import aiodimse
from aiodimse.config import SERVER_IDLE_TIMEOUT
from aiodimse.dicomfile import read_part10
from aiodimse.requests import RetrieveRequest
from aiodimse.testing.synthetic import make_study, write_study

LOCAL = "127.0.0.1"


def test_every_public_name_is_exported() -> None:
    missing = [name for name in aiodimse.__all__ if not hasattr(aiodimse, name)]
    assert missing == []
    for name in ("Operation", "FindResult", "RetrieveResult", "ArchiveServer", "MoveReceiver"):
        assert name in aiodimse.__all__


@pytest.mark.parametrize(
    ("server", "first"),
    [
        (aiodimse.Server, "handler"),
        (aiodimse.StorageServer, "sink"),
        (aiodimse.ArchiveServer, "storage_dir"),
    ],
)
def test_servers_take_the_same_arguments_in_the_same_order(server: Any, first: str) -> None:
    params = list(inspect.signature(server).parameters.values())
    assert [p.name for p in params[:3]] == [first, "host", "port"]
    assert params[1].default == aiodimse.DEFAULT_HOST == LOCAL
    assert params[2].default == 11112
    keywords = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert "ae_title" in keywords
    serve = list(inspect.signature(aiodimse.serve).parameters)
    assert serve[:3] == ["handler", "host", "port"]


async def test_a_server_binds_loopback_and_serves_like_asyncio_server(tmp_path: Path) -> None:
    server = aiodimse.StorageServer(tmp_path / "in", port=0, ae_title="STORE")
    assert not server.is_serving()
    assert isinstance(server.sink, aiodimse.DirectorySink)
    assert server.timeouts.idle == SERVER_IDLE_TIMEOUT
    await server.start()
    try:
        assert server.is_serving()
        assert {s.getsockname()[0] for s in server.sockets} == {LOCAL}
        async with aiodimse.connect(LOCAL, server.port, called_ae="STORE") as assoc:
            assert assoc.timeouts.idle is None  # a client never releases on its own
            assert (await assoc.echo()).code == 0
    finally:
        server.close()
        await server.wait_closed()
    assert not server.is_serving()


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: aiodimse.connect(LOCAL, 1, calling_ae="A" * 17), "calling_ae"),
        (lambda: aiodimse.connect(LOCAL, 1, called_ae="   "), "called_ae"),
        (lambda: aiodimse.connect(LOCAL, 1, called_ae="BACK\\SLASH"), "called_ae"),
        (lambda: aiodimse.Server(None, ae_title=""), "ae_title"),
        (lambda: aiodimse.StorageServer(Path("x"), ae_title="É"), "ae_title"),
    ],
)
def test_a_bad_ae_title_is_one_clear_line(call: Any, names: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert names in message and "\n" not in message and "16" in message


class Resolving(FileArchive):
    """A Q/R handler that knows its move destinations itself (sync or async hook)."""

    def __init__(self, paths: list[Path], address: tuple[str, int], is_async: bool) -> None:
        super().__init__(paths)
        self.address = address
        self.is_async = is_async
        self.asked: list[str] = []

    def resolve_destination(self, ae: str) -> Any:
        self.asked.append(ae)
        found = self.address if ae.strip() == "ELSEWHERE" else None
        if not self.is_async:
            return found

        async def later() -> tuple[str, int] | None:
            return found

        return later()

    def on_move(self, request: RetrieveRequest) -> list[Path]:
        return super().on_move(request)  # type: ignore[no-any-return]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_resolve_destination_hook(tmp_path: Path, is_async: bool) -> None:
    study = make_study(2, rows=16, cols=16, seed="resolve")
    files = write_study(tmp_path / "src", study)
    async with aiodimse.StorageServer(tmp_path / "dest", port=0, ae_title="ELSEWHERE") as dest:
        handler = Resolving(files, (LOCAL, dest.port), is_async)
        async with (
            aiodimse.Server(handler, port=0, ae_title="QR") as qr,
            aiodimse.connect(LOCAL, qr.port, called_ae="QR") as assoc,
        ):
            query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study[0].StudyInstanceUID}
            result = await assoc.move(query, "ELSEWHERE", receiver=dest)
            assert result.ok and result.completed == 2
            assert sorted(i.sop_instance_uid for i in result.instances) == sorted(
                read_part10(f).sop_instance_uid for f in files
            )
            with pytest.raises(aiodimse.StatusError) as info:
                await assoc.move(query, "NOWHERE")
            assert info.value.status == 0xA801
        assert handler.asked == ["ELSEWHERE", "NOWHERE"]


async def test_a_storage_server_refuses_the_query_retrieve_models(tmp_path: Path) -> None:
    """A StorageServer serves storage only: the FIND/GET/MOVE models are not unknown
    storage classes to accept (it could only answer them "SOP class not supported")."""
    proposal = aiodimse.contexts.query_retrieve() + aiodimse.contexts.verification()
    async with (
        aiodimse.StorageServer(tmp_path, "127.0.0.1", 0) as server,
        aiodimse.connect("127.0.0.1", server.port, contexts=proposal) as assoc,
    ):
        assert assoc.negotiated is not None
        accepted = {c.abstract_syntax for c in assoc.negotiated.accepted}
    assert accepted == {aiodimse.uids.VERIFICATION_SOP_CLASS}
