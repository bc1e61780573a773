"""A network fuzz run against a DICOM SCP: random, mutated and raw PDUs and DIMSE messages
over real sockets, with a liveness check after every batch.

It answers one question about a server: does it survive bad input (no crash, no hang)
and keep serving others? Each case is identified by (seed, index) and is reproducible.
Used by ``benchmarks/fuzz_network.py`` (long runs) and the test suite (a short run).
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import uids
from ..association import connect
from ..config import Timeouts
from ..dimse.commands import CEchoRQ, CFindRQ, CStoreRQ, encode_command
from ..enums import AbortReason, AbortSource
from ..errors import AiodimseError
from ..pdu import (
    AAbort,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    UserIdentityRQ,
)
from ..ul.negotiation import ContextRequest, build_request

__all__ = ["FuzzReport", "run_cases"]

#: Every case's connection is closed after this long, answered or not.
CASE_TIMEOUT = 0.5

_CONTEXTS = [
    ContextRequest(uids.VERIFICATION_SOP_CLASS),
    ContextRequest(uids.STUDY_ROOT_QR_FIND),
    ContextRequest(uids.STORAGE_SOP_CLASSES["CTImageStorage"]),
]


@dataclass
class FuzzReport:
    """What a run found."""

    seed: int
    cases: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    answered: int = 0  # cases where the server sent anything back
    liveness_checks: int = 0
    failures: list[str] = field(default_factory=list)  # liveness checks that failed

    @property
    def ok(self) -> bool:
        return not self.failures


def _rq(called: str, rng: random.Random) -> bytes:
    identity = UserIdentityRQ.username("fuzz") if rng.random() < 0.2 else None
    window = (rng.randint(0, 3), rng.randint(0, 3)) if rng.random() < 0.3 else None
    return build_request(
        "FUZZ",
        called,
        _CONTEXTS,
        max_pdu=rng.choice([0, 1, 64, 4096, 16384, 1 << 20]),
        implementation_class_uid="1.2.826.0.1.3680043.9.9999.3",
        async_window=window,
        user_identity=identity,
    ).encode()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, insert, delete or truncate a few bytes; or break a length field."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        choice = rng.random()
        pos = rng.randrange(len(out))
        if choice < 0.4:
            out[pos] = rng.randrange(256)
        elif choice < 0.55:
            out.insert(pos, rng.randrange(256))
        elif choice < 0.7:
            del out[pos]
        elif choice < 0.85:
            del out[rng.randrange(len(out)) :]
        elif len(out) >= 6:
            out[2:6] = struct.pack(">L", rng.choice([0, 1, 5, 0xFFFF, 0x7FFFFFFF, len(out) * 2]))
    return bytes(out)


def _dimse(rng: random.Random) -> bytes:
    """A P-DATA-TF with a DIMSE command (and maybe a data set), valid or broken."""
    context = rng.choice([1, 3, 5, 7, 2, 255])
    kind = rng.random()
    if kind < 0.33:
        command = encode_command(CEchoRQ(message_id=rng.randint(0, 65535)))
        data = None
    elif kind < 0.66:
        command = encode_command(
            CFindRQ(
                message_id=rng.randint(1, 65535), affected_sop_class_uid=uids.STUDY_ROOT_QR_FIND
            )
        )
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    else:
        command = encode_command(
            CStoreRQ(
                message_id=rng.randint(1, 65535),
                affected_sop_class_uid=uids.STORAGE_SOP_CLASSES["CTImageStorage"],
                affected_sop_instance_uid=rng.choice(["1.2.3.4", "../../etc/passwd", "1..2", ""]),
            )
        )
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))
    if rng.random() < 0.5:
        command = _mutate(command, rng)
    items = [PresentationDataValue(context, rng.choice([3, 3, 1, 0, 2, 0xFF]), command)]
    if data is not None:
        items.append(PresentationDataValue(context, rng.choice([2, 2, 0, 3]), data))
    pdu = PDataTF(tuple(items)).encode()
    return _mutate(pdu, rng) if rng.random() < 0.3 else pdu


def _script(rng: random.Random, called: str) -> tuple[str, list[bytes]]:
    """One case: what to send, as a few writes."""
    kind = rng.choice(["random", "mutated-rq", "dimse", "dimse-mutated", "sequence"])
    if kind == "random":
        return kind, [bytes(rng.randrange(256) for _ in range(rng.randint(0, 600)))]
    if kind == "mutated-rq":
        return kind, [_mutate(_rq(called, rng), rng)]
    writes = [_rq(called, rng)]
    if kind == "sequence":
        others = [
            AReleaseRQ().encode(),
            AAbort(AbortSource.SERVICE_USER, AbortReason.REASON_NOT_SPECIFIED).encode(),
            _dimse(rng),
            _rq(called, rng),
        ]
        writes += rng.sample(others, rng.randint(1, len(others)))
    else:
        writes += [_dimse(rng) for _ in range(rng.randint(1, 3))]
        if kind == "dimse-mutated":
            writes[-1] = _mutate(writes[-1], rng)
        if rng.random() < 0.5:
            writes.append(AReleaseRQ().encode())
    return kind, writes


async def _one(host: str, port: int, writes: list[bytes], half_close: bool) -> bool:
    """Send the writes, then (with ``half_close``) end our side at once, or wait a moment
    for what comes back; True if anything came back."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        return False
    answered = False
    try:
        async with asyncio.timeout(CASE_TIMEOUT):
            for data in writes:
                writer.write(data)
                await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
            while chunk := await reader.read(65536):
                answered = answered or bool(chunk)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return answered


async def _alive(host: str, port: int, called: str) -> str | None:
    """None if a fresh association answers a C-ECHO, else why not."""
    try:
        async with asyncio.timeout(10):
            async with connect(
                host, port, called_ae=called, timeouts=Timeouts(connect=5, acse=5, dimse=5)
            ) as assoc:
                await assoc.echo()
    except (AiodimseError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def run_cases(
    host: str,
    port: int,
    *,
    called_ae: str = "ANY-SCP",
    seed: int = 1,
    cases: int = 1000,
    concurrency: int = 32,
    check_every: int = 200,
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """Run ``cases`` cases, ``concurrency`` at a time, with a liveness check (a C-ECHO on a
    fresh association) after every ``check_every`` and at the end."""
    report = FuzzReport(seed)
    index = 0
    limit = asyncio.Semaphore(concurrency)

    async def guarded(writes: list[bytes], half_close: bool) -> bool:
        async with limit:
            return await _one(host, port, writes, half_close)

    while index < cases:
        batch = min(check_every, cases - index)
        rngs = [random.Random(f"{seed}/{index + i}") for i in range(batch)]
        scripts = [(*_script(rng, called_ae), rng.random() < 0.5) for rng in rngs]

        answers = await asyncio.gather(*(guarded(w, half) for _, w, half in scripts))
        for (kind, _, _), answered in zip(scripts, answers, strict=True):
            report.kinds[kind] = report.kinds.get(kind, 0) + 1
            report.answered += answered
        index += batch
        report.cases = index
        why = await _alive(host, port, called_ae)
        report.liveness_checks += 1
        if why is not None:
            report.failures.append(f"after case {index} (seed {seed}): {why}")
            break
        if progress is not None:
            progress(report)
    return report
