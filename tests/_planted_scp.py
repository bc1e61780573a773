"""A test SCP with one planted fault, for the fuzz engine's tests.

    python tests/_planted_scp.py --port N --fault crash|hang|abort|leak|none [--supervise]

It is a byte-level proxy in front of aiodimse's own Server (in the same process), which
does everything right; the proxy inspects each PDU the client sends and plants the fault:

- ``crash``: an A-ASSOCIATE-RQ whose Maximum Length sub-item is not 4 bytes long makes the
  process exit (``--supervise`` forks the server and forks a new one on SIGUSR1, so a
  test can bring it back quickly);
- ``hang``: a C-ECHO-RQ command split over more than one PDV (on context 1) is never
  answered: the connection stays open and silent;
- ``abort``: a PDU of an unknown type after the A-ASSOCIATE-AC gets A-ABORT reason 2
  (unexpected-PDU) instead of 1 (unrecognized-PDU, PS3.8 Table 9-26);
- ``leak``: every A-ASSOCIATE-RQ with a User Identity sub-item keeps 16 MiB forever.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import sys

from aiodimse.server import Server

LEAKED: list[bytes] = []
LEAK_BYTES = 16 << 20


def _pdus(buf: bytearray) -> list[bytes]:
    """Whole PDUs at the front of ``buf`` (removed from it)."""
    out = []
    while len(buf) >= 6:
        n = struct.unpack(">L", buf[2:6])[0]
        if n > (1 << 22) or len(buf) < 6 + n:
            break
        out.append(bytes(buf[: 6 + n]))
        del buf[: 6 + n]
    return out


def _user_items(rq: bytes) -> list[tuple[int, bytes]]:
    """The sub-items of an A-ASSOCIATE-RQ's user information item, as (type, value)."""
    pos = 74
    items = []
    while pos + 4 <= len(rq):
        t, n = rq[pos], struct.unpack(">H", rq[pos + 2 : pos + 4])[0]
        if t == 0x50:
            sub = rq[pos + 4 : pos + 4 + n]
            j = 0
            while j + 4 <= len(sub):
                st, sn = sub[j], struct.unpack(">H", sub[j + 2 : j + 4])[0]
                items.append((st, sub[j + 4 : j + 4 + sn]))
                j += 4 + sn
        pos += 4 + n
    return items


def _split_echo_command(pdata: bytes) -> bool:
    """A P-DATA-TF holding a command PDV on context 1 that is not the last fragment."""
    pos = 6
    while pos + 6 <= len(pdata):
        n = struct.unpack(">L", pdata[pos : pos + 4])[0]
        ctx, control = pdata[pos + 4], pdata[pos + 5]
        if ctx == 1 and control & 0x01 and not control & 0x02:
            return True
        pos += 4 + n
    return False


async def _proxy(
    fault: str, backend: int, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
) -> None:
    try:
        breader, bwriter = await asyncio.open_connection("127.0.0.1", backend)
    except OSError:
        cwriter.close()
        return
    established = asyncio.Event()

    async def down() -> None:
        first = True
        while chunk := await breader.read(65536):
            if first and chunk[:1] == b"\x02":
                established.set()
            first = False
            cwriter.write(chunk)
            await cwriter.drain()
        cwriter.close()

    async def up() -> None:
        buf = bytearray()
        hung = False
        while chunk := await creader.read(65536):
            if hung:
                continue
            buf += chunk
            for pdu in _pdus(buf):
                kind = pdu[0]
                if kind == 0x01 and fault in ("crash", "leak"):
                    items = _user_items(pdu)
                    if fault == "crash" and any(t == 0x51 and len(v) != 4 for t, v in items):
                        os._exit(3)
                    if fault == "leak" and any(t == 0x58 for t, _ in items):
                        LEAKED.append(b"L" * LEAK_BYTES)
                elif kind == 0x04 and fault == "hang" and _split_echo_command(pdu):
                    hung = True
                elif not 1 <= kind <= 7 and fault == "abort" and established.is_set():
                    cwriter.write(b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02")
                    await cwriter.drain()
                    cwriter.close()
                    bwriter.close()
                    return
            if not hung:
                bwriter.write(chunk)
                await bwriter.drain()
        bwriter.close()

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        cwriter.close()
        bwriter.close()


async def serve(port: int, fault: str) -> None:
    backend = Server(port=0, ae_title="PLANTED")
    async with backend:
        server = await asyncio.start_server(
            lambda r, w: _proxy(fault, backend.port, r, w), "127.0.0.1", port
        )
        async with server:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=["crash", "hang", "abort", "leak", "none"])
    parser.add_argument("--supervise", action="store_true")
    args = parser.parse_args()
    if not args.supervise:
        asyncio.run(serve(args.port, args.fault))
        return 0
    # Fork a server; after it exits, wait for SIGUSR1 before forking the next one.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    while True:
        child = os.fork()
        if child == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGTERM})
            asyncio.run(serve(args.port, args.fault))
            os._exit(0)
        restart = False
        while True:
            info = signal.sigtimedwait({signal.SIGTERM, signal.SIGUSR1}, 0.05)
            if info is not None and info.si_signo == signal.SIGTERM:
                os.kill(child, signal.SIGTERM)
                os.waitpid(child, 0)
                return 0
            restart = restart or info is not None
            done, _ = os.waitpid(child, os.WNOHANG)
            if done:
                break
        if not restart and signal.sigwait({signal.SIGTERM, signal.SIGUSR1}) == signal.SIGTERM:
            return 0


if __name__ == "__main__":
    sys.exit(main())
