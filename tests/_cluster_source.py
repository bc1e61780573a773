"""A source PACS for the distributed-job tests, run in a process of its own:
``python tests/_cluster_source.py --port P --storage DIR --input FILES --stats OUT``
(``--destination AE=host:port`` for each C-MOVE destination).

It is aiodimse's archive that also writes, one JSON object a line to ``--stats``, each
association it accepts with how many were established at that moment (this one
included) and each C-GET/C-MOVE with its level and study.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import IO, Any

from aiodimse.archive import ArchiveServer
from aiodimse.requests import RetrieveRequest


class CountingArchiveServer(ArchiveServer):
    """The archive, recording associations and retrieves."""

    def __init__(self, *args: Any, stats: IO[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        archive = self.archive
        plain_get, plain_move = archive.on_get, archive.on_move

        def on_get(request: RetrieveRequest) -> Any:
            self.retrieved("C-GET", request)
            return plain_get(request)

        def on_move(request: RetrieveRequest) -> Any:
            self.retrieved("C-MOVE", request)
            return plain_move(request)

        archive.on_get = on_get  # type: ignore[method-assign]
        archive.on_move = on_move  # type: ignore[method-assign]

    def record(self, **event: Any) -> None:
        self.stats.write(json.dumps(event) + "\n")
        self.stats.flush()

    def retrieved(self, service: str, request: RetrieveRequest) -> None:
        study = str(request.identifier.get("StudyInstanceUID", "") or "")
        self.record(
            event="retrieve",
            service=service,
            level=request.query_level.strip().upper(),
            study=study,
            calling=request.calling_ae.strip(),
            destination=(request.destination or "").strip(),
        )

    def policy(self, rq: Any) -> Any:
        # Called as each association is accepted: the established ones, and this one.
        established = sum(1 for a in self.associations if a.is_established)
        self.record(event="associate", calling=rq.calling_ae_title, concurrent=established + 1)
        return super().policy(rq)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--input", required=True, help="a folder of files to ingest first")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--aet", default="SOURCE")
    parser.add_argument("--destination", action="append", default=[], help="AE=host:port")
    args = parser.parse_args()
    destinations = {}
    for text in args.destination:
        ae, _, address = text.partition("=")
        host, _, port = address.rpartition(":")
        destinations[ae] = (host, int(port))
    with open(args.stats, "a", encoding="utf-8") as stats:
        server = CountingArchiveServer(
            args.storage,
            "127.0.0.1",
            args.port,
            ae_title=args.aet,
            max_associations=64,
            destinations=destinations,
            stats=stats,
        )
        server.archive.ingest([args.input])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
        server.archive.close()


if __name__ == "__main__":
    asyncio.run(main())
