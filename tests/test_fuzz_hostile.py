"""The hostile SCP (``aiodimse fuzz --listen``): SCUs against broken answers.

aiodimse's own SCU must end every case with a clear AiodimseError (or a result that is
right), never hang and never call a failed operation a success; DCMTK and pynetdicom SCUs
must not bring the hostile SCP down; and the hostile SCP's own judgment must be able to
flag a misbehaving SCU (raw sockets playing one), and replay what it flagged.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _settings import require_dcmtk
from pydicom.data import get_testdata_file

import aiodimse
from aiodimse.config import Timeouts
from aiodimse.dimse.commands import CEchoRQ, encode_command
from aiodimse.errors import AiodimseError
from aiodimse.fuzz.hostile import (
    BEHAVIOURS,
    FAILED_BEHAVIOURS,
    HostileSCP,
    pick_behaviour,
    replay_hostile,
    serve_hostile,
)
from aiodimse.fuzz.session import CLOSED, RawSession, Received
from aiodimse.pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    ImplementationClassUID,
    MaximumLength,
    PDataTF,
    PresentationContextRQ,
    PresentationDataValue,
    UserInformation,
)
from aiodimse.testing.peers import free_port, peer_env, run_dcmtk_async
from aiodimse.uids import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS

LOCAL = "127.0.0.1"
SEED = 11
QUICK = Timeouts(connect=2.0, acse=1.0, dimse=1.0)
CT = Path(get_testdata_file("CT_small.dcm"))
KINDS = ("echo", "store", "find", "get")


def index_of(behaviour: str, seed: int = SEED) -> int:
    """The first case index whose behaviour, for ``seed``, is ``behaviour``."""
    return next(i for i in range(100_000) if pick_behaviour(seed, i)[0] == behaviour)


def must_fail(behaviour: str, kind: str) -> bool:
    """True when the hostile SCP never answered this kind of request with a success for it."""
    if behaviour == "wrong_sop_instance":
        return kind == "store"  # only a C-STORE-RSP names the instance (PS3.7 9.3.1.2)
    return behaviour in FAILED_BEHAVIOURS


# -- aiodimse's own SCU -------------------------------------------------------------------


async def aiodimse_client(port: int, n: int, kind: str) -> tuple[str, object]:
    """One association doing one operation: ("ok", result), ("error", exc) or ("hang", None)."""
    contexts = aiodimse.contexts.for_get() if kind == "get" else None
    guard = asyncio.timeout(20)  # aiodimse's own timeouts must end every case far earlier
    try:
        async with (
            guard,
            aiodimse.connect(
                LOCAL,
                port,
                calling_ae=f"C{n}",
                called_ae="HOSTILE",
                timeouts=QUICK,
                contexts=contexts,
            ) as assoc,
        ):
            result: object
            if kind == "echo":
                result = await assoc.echo()
            elif kind == "store":
                result = await assoc.store(CT)
            elif kind == "find":
                result = await assoc.find({"QueryRetrieveLevel": "STUDY", "PatientID": ""})
            else:
                result = await assoc.get(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"}
                )
        return "ok", result
    except TimeoutError as exc:
        if guard.expired():
            return "hang", None
        return "error", exc
    except Exception as exc:  # judged by the test: anything but an AiodimseError is a defect
        return "error", exc


async def run_against(
    scp: HostileSCP, clients: Callable[[int], Awaitable[Any]], n: int, parallel: int = 4
) -> tuple[dict[int, Any], Any]:
    """Start ``scp``, run ``clients(i)`` for i < n, ``parallel`` at a time, then its report."""
    await scp.start()
    serving = asyncio.create_task(scp.run())
    sem = asyncio.Semaphore(parallel)
    results: dict[int, Any] = {}

    async def one(i: int) -> None:
        async with sem:
            results[i] = await clients(i)

    await asyncio.gather(*(one(i) for i in range(n)))
    report = await asyncio.wait_for(serving, 60)
    assert [c for c in report.cases if c["end"] == "hostile_error"] == []  # never our fault
    return results, report


async def test_aiodimse_scu_survives_every_hostile_behaviour() -> None:
    cases = 120
    events: dict[str, dict[str, Any]] = {}
    scp = HostileSCP(
        LOCAL,
        0,
        seed=SEED,
        cases=cases,
        case_timeout=3.0,
        on_event=lambda e: events.__setitem__(str(e["calling_ae"]), e),
    )
    results, report = await run_against(
        scp, lambda i: aiodimse_client(scp.port, i, KINDS[i % 4]), cases
    )
    assert len(report.cases) == cases and report.stopped_by == "cases"
    assert len({e["behaviour"] for e in report.cases}) == len(BEHAVIOURS)  # all exercised
    problems = []
    for i, (outcome, value) in sorted(results.items()):
        kind, event = KINDS[i % 4], events[f"C{i}"]
        behaviour = event["behaviour"]
        where = f"case {event['index']} {behaviour} {kind}"
        if outcome == "hang":
            problems.append(f"{where}: the SCU hung")
        elif outcome == "error" and not isinstance(value, AiodimseError):
            problems.append(f"{where}: {type(value).__name__}: {value}")
        elif outcome == "ok" and must_fail(behaviour, kind):
            problems.append(f"{where}: reported {value!r} for an operation the SCP failed")
        if event["flags"]:
            problems.append(f"{where}: flagged {event['flags']}")
    assert not problems, "\n".join(problems)


async def one_forced_case(behaviour: str, kind: str) -> tuple[tuple[str, object], dict[str, Any]]:
    scp = HostileSCP(LOCAL, 0, seed=SEED, cases=1, only_index=index_of(behaviour), case_timeout=3)
    results, report = await run_against(scp, lambda i: aiodimse_client(scp.port, i, kind), 1)
    return results[0], report.cases[0]


async def test_aiodimse_scu_never_exceeds_the_peers_maximum_length() -> None:
    (_outcome, _value), event = await one_forced_case("ac_max_pdu_1", "echo")
    assert event["flags"] == []


async def test_aiodimse_store_rejects_a_response_for_another_instance() -> None:
    (outcome, value), event = await one_forced_case("wrong_sop_instance", "store")
    assert event["behaviour"] == "wrong_sop_instance"
    assert outcome == "error" and isinstance(value, AiodimseError), value


@pytest.mark.parametrize("kind", ["store", "echo"])
async def test_aiodimse_treats_pending_store_or_echo_as_failure(kind: str) -> None:
    (outcome, value), event = await one_forced_case("endless_pending", kind)
    assert event["behaviour"] == "endless_pending"
    assert outcome == "error" and isinstance(value, AiodimseError), value


async def test_serve_hostile_ends_on_stop_and_reports() -> None:
    stop = asyncio.Event()
    seen: list[dict[str, Any]] = []
    port = free_port()

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        stop.set()

    serving = asyncio.create_task(
        serve_hostile(LOCAL, port, seed=SEED, on_event=on_event, stop=stop, case_timeout=2)
    )
    for _ in range(250):  # until the SCP listens: the first SCU that gets in is its case
        await aiodimse_client(port, 0, "echo")
        if seen:
            break
        await asyncio.sleep(0.02)
    report = await asyncio.wait_for(serving, 30)
    assert report.stopped_by == "stop" and len(report.cases) == 1 == len(seen)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["cases_run"] == 1 and doc["cases"][0]["behaviour"] == pick_behaviour(SEED, 0)[0]
    assert "1 case(s)" in report.summary()


# -- the hostile SCP's own oracles, against SCUs played by raw sockets --------------------


def association_rq(calling: str = "ROGUE") -> bytes:
    return AAssociateRQ(
        "HOSTILE",
        calling,
        (PresentationContextRQ(1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
        UserInformation((MaximumLength(16384), ImplementationClassUID("1.2.826.0.1.3680043.9"))),
    ).encode()


def echo_pdata(message_id: int) -> bytes:
    command = encode_command(CEchoRQ(message_id=message_id))
    return PDataTF((PresentationDataValue(1, 0x03, command),)).encode()


async def rogue_after_abort(port: int, *, keep_sending: bool) -> list[str]:
    """A C-ECHO; when the A-ABORT comes, either stop or keep sending new requests."""
    seen = []
    async with await RawSession.open(LOCAL, port) as s:
        await s.send(association_rq())
        ac = await s.receive(2)
        assert isinstance(ac, Received) and isinstance(ac.pdu, AAssociateAC)
        await s.send(echo_pdata(1))
        abort = await s.receive(2)
        assert isinstance(abort, Received) and isinstance(abort.pdu, AAbort), abort
        seen.append("abort")
        if keep_sending:
            for mid in (2, 3, 4):
                await s.send(echo_pdata(mid))
            seen.append(str(await s.receive(5)))  # the SCP closes: PS3.8 AA-1 / ARTIM
    return seen


async def one_raw_case(
    behaviour: str, rogue: Callable[[int], Awaitable[Any]], out: Path | None = None
) -> dict[str, Any]:
    scp = HostileSCP(
        LOCAL, 0, seed=SEED, cases=1, only_index=index_of(behaviour), case_timeout=2.0, out=out
    )
    _results, report = await run_against(scp, lambda i: rogue(scp.port), 1)
    event: dict[str, Any] = report.cases[0]
    assert event["behaviour"] == behaviour
    return event


async def test_new_requests_after_our_abort_are_flagged() -> None:
    event = await one_raw_case(
        "abort_after_request", lambda p: rogue_after_abort(p, keep_sending=True)
    )
    assert [f["code"] for f in event["flags"]] == ["request_after_abort"]
    assert "sent P-DATA after our A-ABORT" in event["scu"]


async def test_an_scu_that_stops_after_our_abort_is_not_flagged() -> None:
    event = await one_raw_case(
        "abort_after_request", lambda p: rogue_after_abort(p, keep_sending=False)
    )
    assert event["flags"] == [] and event["end"] == "closed"


async def rogue_on_rejected_context(port: int) -> None:
    async with await RawSession.open(LOCAL, port) as s:
        await s.send(association_rq())
        ac = await s.receive(2)
        assert isinstance(ac, Received) and isinstance(ac.pdu, AAssociateAC)
        assert not any(pc.accepted for pc in ac.pdu.presentation_contexts)
        await s.send(echo_pdata(1))  # on context 1, which was just rejected
        await s.send(AAbort().encode())


async def test_data_on_a_rejected_context_is_flagged() -> None:
    event = await one_raw_case("ac_all_contexts_rejected", rogue_on_rejected_context)
    assert [f["code"] for f in event["flags"]] == ["pdata_on_unusable_context"]
    assert event["flags"][0]["clause"] == "PS3.8 9.3.5.1"


async def rogue_release(port: int, *, close: bool) -> object:
    async with await RawSession.open(LOCAL, port) as s:
        await s.send(association_rq())
        assert isinstance(await s.receive(2), Received)
        await s.send(AReleaseRQ().encode())
        rp = await s.receive(2)
        assert isinstance(rp, Received) and isinstance(rp.pdu, AReleaseRP)
        if close:
            return "closed by us"
        return await s.receive(10)  # stay open: the SCP gives up after its case timeout


async def test_no_close_after_our_release_rp_is_flagged() -> None:
    event = await one_raw_case("conforming", lambda p: rogue_release(p, close=False))
    assert [f["code"] for f in event["flags"]] == ["no_close_after_release_rp"]
    assert event["end"] == "hung"


async def test_a_requestor_that_closes_after_release_is_not_flagged() -> None:
    event = await one_raw_case("conforming", lambda p: rogue_release(p, close=True))
    assert event["flags"] == [] and event["end"] == "released"


async def test_replay_reproduces_a_flagged_case(tmp_path: Path) -> None:
    event = await one_raw_case(
        "abort_after_request", lambda p: rogue_after_abort(p, keep_sending=True), out=tmp_path
    )
    files = list(tmp_path.glob("*.json"))
    assert [Path(event["replay"])] == files
    doc = json.loads(files[0].read_text())
    assert doc["behaviour"] == "abort_after_request" and doc["index"] == event["index"]
    sent = [bytes.fromhex(x["hex"]) for x in doc["exchange"] if x["dir"] == "out"]
    assert sent[0][0] == 0x02 and sent[-1] == AAbort().encode()  # the AC ... our A-ABORT

    port = free_port()
    ready = asyncio.Event()
    replay = asyncio.create_task(replay_hostile(LOCAL, port, files[0], timeout=20, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    assert await rogue_after_abort(port, keep_sending=True) == ["abort", CLOSED]
    result = await replay
    assert result["reproduced"] is True and result["recorded_flags"] == ["request_after_abort"]
    assert result["behaviour"] == "abort_after_request"


async def test_replay_refuses_a_file_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a hostile SCP replay file"):
        await replay_hostile(LOCAL, free_port(), bad)


# -- third-party SCUs ---------------------------------------------------------------------

DCMTK_TIMEOUTS = ("-to", "2", "-ta", "1", "-td", "1")


def dcmtk_args(tool: str, port: int, n: int, tmp: Path) -> list[str | int | Path]:
    common: list[str | int | Path] = ["-aet", f"C{n}", "-aec", "HOSTILE", *DCMTK_TIMEOUTS]
    if tool == "echoscu":
        return [*common, LOCAL, port]
    if tool == "storescu":
        return [*common, LOCAL, port, CT]
    if tool == "findscu":
        return [*common, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID", LOCAL, port]
    return [
        *common,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID=1.2.3",
        "-od",
        tmp,
        LOCAL,
        port,
    ]


@pytest.mark.interop
@pytest.mark.parametrize("tool", ["echoscu", "storescu", "findscu", "getscu"])
async def test_hostile_scp_survives_dcmtk_scus(tool: str, tmp_path: Path) -> None:
    require_dcmtk(tool)
    cases = 24
    scp = HostileSCP(LOCAL, 0, seed=SEED, cases=cases, case_timeout=2.0, out=tmp_path / "out")

    async def client(n: int) -> int:
        target = tmp_path / f"get{n}"
        target.mkdir()
        rc, _log = await run_dcmtk_async(tool, *dcmtk_args(tool, scp.port, n, target), timeout=30)
        return rc

    results, report = await run_against(scp, client, cases)
    assert len(results) == cases and len(report.cases) == cases
    assert sorted(c["calling_ae"] for c in report.cases) == sorted(f"C{n}" for n in range(cases))
    assert all(c["end"] for c in report.cases)
    # A right answer (or a harmless variation of one) must satisfy DCMTK: exit code 0.
    benign = [
        int(c["calling_ae"][1:])
        for c in report.cases
        if c["behaviour"] in {"conforming", "ac_async_window_larger", "ac_max_pdu_0"}
    ]
    assert benign and {results[n] for n in benign} == {0}
    flagged = {Path(c["replay"]) for c in report.flagged}
    assert flagged == set((tmp_path / "out").glob("*.json"))
    json.dumps(report.to_json())
    assert f"{cases} case(s)" in report.summary()


PYNETDICOM_SCU = """
import sys
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (CTImageStorage, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet, Verification)
port, ct, numbers = int(sys.argv[1]), sys.argv[2], [int(n) for n in sys.argv[3:]]
for n in numbers:
    kind = ("echo", "store", "find", "get")[n % 4]
    ae = AE(ae_title=f"C{n}")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 1
    for c in (Verification, StudyRootQueryRetrieveInformationModelFind,
              StudyRootQueryRetrieveInformationModelGet, CTImageStorage):
        ae.add_requested_context(c)
    roles = [build_role(CTImageStorage, scp_role=True)] if kind == "get" else []
    a = ae.associate("127.0.0.1", port, ae_title="HOSTILE", ext_neg=roles,
                     evt_handlers=[(evt.EVT_C_STORE, lambda e: 0)])
    if a.is_established:
        q = Dataset(); q.QueryRetrieveLevel = "STUDY"; q.PatientID = ""
        q.StudyInstanceUID = "1.2.3"
        if kind == "echo": a.send_c_echo()
        elif kind == "store": a.send_c_store(dcmread(ct))
        elif kind == "find": list(a.send_c_find(q, StudyRootQueryRetrieveInformationModelFind))
        else: list(a.send_c_get(q, StudyRootQueryRetrieveInformationModelGet))
        if a.is_established: a.release()
    print(n, flush=True)
"""


@pytest.mark.interop
async def test_hostile_scp_survives_pynetdicom_scu(tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    script = tmp_path / "scu.py"
    script.write_text(PYNETDICOM_SCU)
    cases = 12
    scp = HostileSCP(LOCAL, 0, seed=SEED, cases=cases, case_timeout=2.0, out=tmp_path / "out")

    async def client(n: int) -> str:
        """One pynetdicom process for case n; killed (by PID) if it is still there after
        10 s: pynetdicom 3.0.4 can hang in associate() after some broken answers."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(scp.port),
            str(CT),
            str(n),
            env=peer_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "killed"
        return out.decode().strip()

    results, report = await run_against(scp, client, cases)
    assert len(results) == cases and len(report.cases) == cases
    assert sorted(c["calling_ae"] for c in report.cases) == sorted(f"C{n}" for n in range(cases))
    assert all(c["end"] for c in report.cases)
    assert {Path(c["replay"]) for c in report.flagged} == set((tmp_path / "out").glob("*.json"))
    assert f"{cases} case(s)" in report.summary()


async def test_serve_hostile_ends_after_its_duration_without_any_scu() -> None:
    report = await serve_hostile(LOCAL, free_port(), seed=SEED, duration=0.2)
    assert report.stopped_by == "duration" and report.cases == []
    assert "0 case(s)" in report.summary() and report.to_json()["cases_run"] == 0
