#!/usr/bin/env python3
"""Record the PDUs that DCMTK's tools exchange, as test fixtures for the PDU codec.

A relay on 127.0.0.1 sits between a DCMTK SCU and a DCMTK SCP, passes the bytes through
unchanged, and cuts each direction into whole PDUs using only the 6-byte PDU header
(PS3.8 9.3.1: PDU-type, reserved byte, 4-byte big-endian PDU-length). Every PDU is written to

    tests/fixtures/pdus/<scenario>/<NNN>-<rq|ac>-<pdu type hex>.bin

where NNN orders the PDUs of the scenario as the relay saw them, ``rq`` is the association
requestor's direction and ``ac`` the acceptor's. Run ``python scripts/record_pdus.py`` (all
scenarios) or name some scenarios; ``--list`` shows them. UIDs of the DICOM files used are
fixed, so re-running gives nearly the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.data import get_testdata_file

from aiodimse.testing.peers import (
    LOOPBACK,
    PeerProcess,
    dcmtk_tool,
    free_port,
    peer_env,
    run_dcmtk,
    start_dcmqrscp,
    start_storescp,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "pdus"
HEADER = 6  # PS3.8 9.3.1: type (1), reserved (1), length (4, big endian)
MAX_PDU_LENGTH = 1 << 24  # a sanity bound for the relay, far above any tool's max PDU
TOOL_TIMEOUT = 60.0


class Recorder:
    """Numbers and writes the PDUs of one scenario into its directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self.connections = 0
        self.problems: list[str] = []
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

    def pdu(self, direction: str, data: bytes) -> None:
        self.count += 1
        name = f"{self.count:03d}-{direction}-{data[0]:02x}.bin"
        (self.directory / name).write_bytes(data)


@dataclass
class Relay:
    """A loopback TCP relay to ``target_port`` that records into whatever ``recorder`` is set."""

    target_port: int
    recorder: Recorder | None = None
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        await self.settle()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every relayed connection has closed in both directions."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _accept(
        self, rq_reader: asyncio.StreamReader, rq_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        recorder = self.recorder
        try:
            ac_reader, ac_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError as exc:
            if recorder:
                recorder.problems.append(f"relay could not reach port {self.target_port}: {exc}")
            rq_writer.close()
            self._tasks.discard(task)
            return
        if recorder:
            recorder.connections += 1
        try:
            await asyncio.gather(
                _pump(rq_reader, ac_writer, "rq", recorder),
                _pump(ac_reader, rq_writer, "ac", recorder),
            )
        finally:
            for writer in (rq_writer, ac_writer):
                writer.close()
            self._tasks.discard(task)


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    direction: str,
    recorder: Recorder | None,
) -> None:
    """Copy one direction unchanged; record each complete PDU before forwarding its bytes."""
    buf = bytearray()
    try:
        while data := await reader.read(1 << 16):
            buf += data
            while len(buf) >= HEADER:
                length = int.from_bytes(buf[2:HEADER], "big")
                if length > MAX_PDU_LENGTH:
                    raise ValueError(f"{direction}: PDU length {length} is beyond any sane value")
                if len(buf) < HEADER + length:
                    break
                # Record first: once forwarded, the answer could be recorded before this PDU.
                if recorder:
                    recorder.pdu(direction, bytes(buf[: HEADER + length]))
                del buf[: HEADER + length]
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, ValueError) as exc:
        if recorder:
            recorder.problems.append(f"{direction}: {exc!r}")
        writer.transport.abort()
    if buf and recorder:
        recorder.problems.append(f"{direction}: {len(buf)} bytes of an incomplete PDU at close")


async def run_tool(tool: str, *args: str, cwd: Path, expect_ok: bool = True) -> str:
    """Run a DCMTK tool (absolute path, TCP_NODELAY=1), bounded in time; return its output."""
    proc = await asyncio.create_subprocess_exec(
        dcmtk_tool(tool),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=peer_env(),
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TOOL_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{tool} {' '.join(args)} did not finish in {TOOL_TIMEOUT} s") from None
    text = out.decode(errors="replace")
    if expect_ok and proc.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} exited {proc.returncode}:\n{text}")
    if not expect_ok and proc.returncode == 0:
        raise RuntimeError(f"{tool} {' '.join(args)} was expected to fail:\n{text}")
    return text


@dataclass
class Lab:
    """The peers and files shared by all scenarios."""

    work: Path
    out: Path
    ct: str
    mr: str
    ct_study: str
    mr_study: str
    ct_series: str
    storescp: PeerProcess
    storescp_abort: PeerProcess
    dcmqrscp: PeerProcess
    move_relay: Relay


Scenario = Callable[[Lab, Relay], Awaitable[str]]
SCENARIOS: dict[str, tuple[str, str, Scenario]] = {}


def scenario(name: str, target: str, doc: str) -> Callable[[Scenario], Scenario]:
    """Register a scenario run through a relay to ``target`` (a Lab peer attribute name)."""

    def register(func: Scenario) -> Scenario:
        SCENARIOS[name] = (target, doc, func)
        return func

    return register


def _peer(lab: Lab, name: str) -> PeerProcess:
    peer = getattr(lab, name)
    assert isinstance(peer, PeerProcess)
    return peer


def _to(relay: Relay, aec: str) -> list[str]:
    return ["-aec", aec, LOOPBACK, str(relay.port)]


@scenario("echo", "storescp", "echoscu -> storescp: C-ECHO, then release")
async def _echo(lab: Lab, relay: Relay) -> str:
    return await run_tool("echoscu", "-aet", "ECHOSCU", *_to(relay, "STORESCP"), cwd=lab.work)


@scenario("echo-abort", "storescp", "echoscu --abort -> storescp: C-ECHO, then A-ABORT (requestor)")
async def _echo_abort(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "ECHOSCU", "--abort", *_to(relay, "STORESCP")]
    return await run_tool("echoscu", *args, cwd=lab.work)


@scenario(
    "store",
    "storescp",
    "storescu CT_small + MR_small -> storescp +xa: all storage SOP classes proposed with three "
    "uncompressed transfer syntaxes each (one context per TS); multi-PDU P-DATA",
)
async def _store(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "STORESCU", *_to(relay, "STORESCP"), lab.ct, lab.mr]
    return await run_tool("storescu", *args, cwd=lab.work)


@scenario(
    "store-combined-ts",
    "storescp",
    "storescu -R +C -xd MR_small -> storescp +xa: only the needed SOP class, deflated plus "
    "uncompressed transfer syntaxes combined in one context; deflated P-DATA",
)
async def _store_combined(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "STORESCU", "-R", "+C", "-xd", *_to(relay, "STORESCP"), lab.mr]
    return await run_tool("storescu", *args, cwd=lab.work)


@scenario(
    "store-user-identity",
    "storescp",
    "storescu --user alice --password secret -> storescp: User Identity sub-item (0x58), "
    "type 2 (username and passcode), no response asked; full exchange",
)
async def _store_user(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "STORESCU", "-R", "--user", "alice", "--password", "secret"]
    return await run_tool("storescu", *args, *_to(relay, "STORESCP"), lab.mr, cwd=lab.work)


@scenario(
    "store-user-identity-rsp",
    "storescp",
    "storescu --user bob -rsp -> storescp: User Identity type 1 asking for a positive "
    "response; storescp sends none (no 0x59), so storescu gives up and closes the connection",
)
async def _store_user_rsp(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "STORESCU", "-R", "--user", "bob", "-rsp", *_to(relay, "STORESCP"), lab.mr]
    return await run_tool("storescu", *args, cwd=lab.work, expect_ok=False)


@scenario(
    "store-scp-abort",
    "storescp_abort",
    "storescu -> storescp --abort-after: the SCP sends A-ABORT instead of the C-STORE response",
)
async def _store_scp_abort(lab: Lab, relay: Relay) -> str:
    args = ["-aet", "STORESCU", "-R", *_to(relay, "STORESCP"), lab.mr]
    return await run_tool("storescu", *args, cwd=lab.work, expect_ok=False)


@scenario(
    "reject-called-ae",
    "dcmqrscp",
    "echoscu -aec WRONG_AE -> dcmqrscp: A-ASSOCIATE-RJ (permanent, service user, "
    "called AE title not recognized)",
)
async def _reject(lab: Lab, relay: Relay) -> str:
    return await run_tool("echoscu", *_to(relay, "WRONG_AE"), cwd=lab.work, expect_ok=False)


def _find_args(lab: Lab, relay: Relay, model: str, *keys: str) -> list[str]:
    args = ["-aet", "FINDSCU", model, *_to(relay, lab.dcmqrscp.aet)]
    for key in keys:
        args += ["-k", key]
    return args


@scenario("find-study-root-study", "dcmqrscp", "findscu -S, STUDY level -> dcmqrscp: 2 matches")
async def _find_study(lab: Lab, relay: Relay) -> str:
    keys = ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "StudyDate")
    return await run_tool("findscu", *_find_args(lab, relay, "-S", *keys), cwd=lab.work)


@scenario("find-study-root-image", "dcmqrscp", "findscu -S, IMAGE level -> dcmqrscp: 1 match")
async def _find_image(lab: Lab, relay: Relay) -> str:
    keys = (
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={lab.ct_study}",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    return await run_tool("findscu", *_find_args(lab, relay, "-S", *keys), cwd=lab.work)


@scenario(
    "find-patient-root-patient", "dcmqrscp", "findscu -P, PATIENT level -> dcmqrscp: 2 matches"
)
async def _find_patient(lab: Lab, relay: Relay) -> str:
    keys = ("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", "PatientBirthDate")
    return await run_tool("findscu", *_find_args(lab, relay, "-P", *keys), cwd=lab.work)


@scenario("find-patient-root-image", "dcmqrscp", "findscu -P, IMAGE level -> dcmqrscp: 1 match")
async def _find_patient_image(lab: Lab, relay: Relay) -> str:
    keys = (
        "QueryRetrieveLevel=IMAGE",
        "PatientID=1CT1",
        f"StudyInstanceUID={lab.ct_study}",
        f"SeriesInstanceUID={lab.ct_series}",
        "SOPInstanceUID",
    )
    return await run_tool("findscu", *_find_args(lab, relay, "-P", *keys), cwd=lab.work)


@scenario(
    "get",
    "dcmqrscp",
    "getscu -S, STUDY level -> dcmqrscp: ~120 contexts with SCP/SCU role selection (0x54); "
    "C-STORE sub-operations on the same association",
)
async def _get(lab: Lab, relay: Relay) -> str:
    out = lab.work / "get"
    out.mkdir(exist_ok=True)
    args = [
        "-aet",
        "GETSCU",
        "-S",
        *_to(relay, lab.dcmqrscp.aet),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={lab.mr_study}",
        "-od",
        str(out),
    ]
    return await run_tool("getscu", *args, cwd=lab.work)


@scenario(
    "move",
    "dcmqrscp",
    "movescu -S, STUDY level, destination MOVEDEST -> dcmqrscp: the C-MOVE association "
    "(its sub-association is recorded as move-suboperations)",
)
async def _move(lab: Lab, relay: Relay) -> str:
    sub = Recorder(lab.out / "move-suboperations")
    lab.move_relay.recorder = sub
    try:
        args = [
            "-aet",
            "MOVESCU",
            "-S",
            "-aem",
            "MOVEDEST",
            *_to(relay, lab.dcmqrscp.aet),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={lab.mr_study}",
        ]
        text = await run_tool("movescu", *args, cwd=lab.work)
        await lab.move_relay.settle()
    finally:
        lab.move_relay.recorder = None
    _check(sub, "move-suboperations")
    return text


def _check(recorder: Recorder, name: str) -> None:
    if recorder.connections != 1:
        recorder.problems.append(f"expected one association, saw {recorder.connections}")
    if recorder.count == 0:
        recorder.problems.append("no PDU recorded")
    if recorder.problems:
        raise RuntimeError(f"{name}: " + "; ".join(recorder.problems))
    print(f"  {name}: {recorder.count} PDUs")


async def main_async(names: list[str], out: Path, verbose: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="record-pdus-") as tmp:
        work = Path(tmp)
        storescp = start_storescp(free_port(), work / "storescp", work_dir=work)
        storescp_abort = start_storescp(
            free_port(), work / "storescp-abort", extra=("--abort-after",), work_dir=work
        )
        move_relay = await Relay(storescp.port).start()
        dcmqrscp = start_dcmqrscp(
            free_port(),
            work / "db",
            work_dir=work,
            hosts={"MOVEDEST": (LOOPBACK, move_relay.port)},
        )
        try:
            ct = get_testdata_file("CT_small.dcm")
            mr = get_testdata_file("MR_small.dcm")
            if not isinstance(ct, str) or not isinstance(mr, str):
                raise RuntimeError("pydicom's CT_small.dcm / MR_small.dcm are not available")
            # Fill dcmqrscp's archive directly (not recorded): it only knows what it received.
            result = run_dcmtk(
                "storescu", "-R", "-aec", dcmqrscp.aet, LOOPBACK, str(dcmqrscp.port), ct, mr
            )
            if result.returncode != 0:
                raise RuntimeError(f"filling dcmqrscp failed:\n{result.stdout}{result.stderr}")
            lab = Lab(
                work=work,
                out=out,
                ct=ct,
                mr=mr,
                ct_study="1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
                mr_study="1.3.6.1.4.1.5962.1.2.4.20040826185059.5457",
                ct_series="1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
                storescp=storescp,
                storescp_abort=storescp_abort,
                dcmqrscp=dcmqrscp,
                move_relay=move_relay,
            )
            for name in names:
                target, _, func = SCENARIOS[name]
                relay = await Relay(_peer(lab, target).port).start()
                relay.recorder = Recorder(out / name)
                try:
                    text = await func(lab, relay)
                    await relay.settle()
                finally:
                    await relay.close()
                if verbose:
                    print(text)
                _check(relay.recorder, name)
        finally:
            await move_relay.close()
            for peer in (dcmqrscp, storescp_abort, storescp):
                peer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenarios", nargs="*", help="scenarios to record (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture root directory")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the tools' output")
    args = parser.parse_args(argv)
    if args.list:
        for name, (target, doc, _) in SCENARIOS.items():
            print(f"{name:30} -> {target:15} {doc}")
        return 0
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    names = args.scenarios or list(SCENARIOS)
    print(f"recording {len(names)} scenario(s) into {args.out}")
    asyncio.run(main_async(names, args.out, args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
