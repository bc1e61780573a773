"""Known-answer checks of DIMSE services (PS3.7, PS3.4): C-ECHO, an unknown command,
C-FIND with C-CANCEL and unsupported keys, the maximum length honoured by the peer."""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset

from .. import uids
from ..contexts import COMMON_STORAGE, storage
from ..dicomfile import encode_dataset
from ..dimse.commands import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CGetRQ,
    CGetRSP,
    CStoreRQ,
    CStoreRSP,
    encode_command,
)
from ..dimse.status import is_failure
from ..ul.negotiation import ContextRequest
from .probe import (
    VERIFY,
    Check,
    DimseMessage,
    Established,
    Outcome,
    Probe,
    Verdict,
    abort_outcome,
    decode_identifier,
    describe,
    message_pdata,
    raw_command,
    registry,
    summary,
)
from .session import TIMEOUT, Received

__all__ = ["CHECKS"]

#: These checks, in the order the battery runs them.
CHECKS: list[Check] = []
check = registry(CHECKS)


# -- DIMSE (PS3.7, PS3.4) --------------------------------------------------------------------


@check(
    "c-echo",
    "C-ECHO answered with Success",
    "PS3.7 9.1.5, 9.3.5 (Table 9.3-13); PS3.4 A.4",
    "C-ECHO-RQ, Message ID 1",
    "C-ECHO-RSP: Message ID Being Responded To 1, status 0000, on the same context",
)
async def c_echo(probe: Probe) -> Outcome:
    assoc = await probe.establish(VERIFY)
    found = assoc.context_for(uids.VERIFICATION_SOP_CLASS)
    if found is None:
        assoc.session.close()
        return Outcome(Verdict.NOT_APPLICABLE, "Verification not accepted")
    await assoc.send_message(found[0], CEchoRQ(message_id=1))
    answer = await assoc.next_message(probe.timeout)
    await assoc.release()
    if not isinstance(answer, DimseMessage):
        return Outcome(Verdict.FAIL, describe(answer, probe.timeout), "no C-ECHO-RSP")
    got = summary(answer)
    rsp = answer.command
    if not isinstance(rsp, CEchoRSP):
        return Outcome(Verdict.FAIL, got, "not a C-ECHO-RSP")
    if rsp.message_id_being_responded_to != 1 or answer.context_id != found[0]:
        return Outcome(Verdict.FAIL, got, "wrong Message ID Being Responded To or context")
    if rsp.status != 0:
        return Outcome(Verdict.FAIL, got, "Verification succeeds with 0000")
    return Outcome(Verdict.PASS, got)


UNKNOWN_COMMAND_FIELD = 0x0055


@check(
    "unknown-command",
    "Unknown Command Field",
    "PS3.7 9.3, C.4.23 (0211H Unrecognized operation)",
    f"a command set with Command Field {UNKNOWN_COMMAND_FIELD:04X}H on the Verification "
    "context (or another the peer accepts)",
    "a response with status 0211 (Unrecognized operation) or an A-ABORT; never Success, "
    "never silence",
)
async def unknown_command(probe: Probe) -> Outcome:
    syntax = probe.usable_syntax()
    assoc = await probe.establish([ContextRequest(syntax)])
    found = assoc.context_for(syntax)
    if found is None:
        assoc.session.close()
        return Outcome(Verdict.NOT_APPLICABLE, f"{uids.uid_name(syntax)} not accepted")
    uid = syntax.encode("ascii")
    command = raw_command(
        [
            (0x0002, uid + b"\x00" * (len(uid) % 2)),  # PS3.5 9.1: UI padded to even length
            (0x0100, struct.pack("<H", UNKNOWN_COMMAND_FIELD)),
            (0x0110, struct.pack("<H", 9)),
            (0x0800, struct.pack("<H", 0x0101)),
        ]
    )
    await assoc.send_message(found[0], command)
    answer = await assoc.next_message(probe.timeout)
    assoc.session.close()
    if isinstance(answer, DimseMessage):
        status = _raw_status(answer.command_bytes)
        got = f"DIMSE answer, status {status:04X}" if status is not None else summary(answer)
        if status == 0x0211:
            return Outcome(Verdict.PASS, got)
        if status is not None and is_failure(status):
            return Outcome(Verdict.INCONCLUSIVE, got, "a failure, though 0211 is the precise one")
        return Outcome(Verdict.FAIL, got, "an unknown operation cannot succeed")
    if answer == TIMEOUT:
        return Outcome(Verdict.FAIL, describe(answer, probe.timeout), "the request went unanswered")
    return abort_outcome(
        answer,
        probe.timeout,
        source=None,
        reason=None,
        action="PS3.8 7.3 (an association ends by release or abort)",
    )


def _raw_status(command: bytes) -> int | None:
    """Status (0000,0900) from any command set, even one our codec refuses."""
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHI", command, pos)
        if group == 0 and elem == 0x0900 and length == 2:
            return int(struct.unpack_from("<H", command, pos + 8)[0])
        pos += 8 + length
    return None


def _study_query(**extra: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = ""
    ds.StudyInstanceUID = ""
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


async def _open_study_find(probe: Probe) -> tuple[Established, tuple[int, str]] | Outcome:
    """An association with the Study Root FIND context and that context, or N/A."""
    probe.needs(uids.STUDY_ROOT_QR_FIND)
    assoc = await probe.establish([ContextRequest(uids.STUDY_ROOT_QR_FIND)])
    found = assoc.context_for(uids.STUDY_ROOT_QR_FIND)
    if found is None:
        assoc.session.close()
        return Outcome(Verdict.NOT_APPLICABLE, "Study Root FIND not accepted")
    return assoc, found


async def _find(
    assoc: Established,
    context: tuple[int, str],
    query: Dataset,
    timeout: float,
    *,
    cancel: bool = False,
) -> tuple[list[DimseMessage], DimseMessage | Received | str]:
    """Send a C-FIND (and at once a C-CANCEL when asked); collect the pending responses
    and the final answer (a response, a PDU that is not P-DATA, or the end)."""
    context_id, ts = context
    msg = CFindRQ(message_id=11, affected_sop_class_uid=uids.STUDY_ROOT_QR_FIND)
    data = message_pdata(
        context_id,
        encode_command(msg),
        encode_dataset(query, ts),
        max_pdu=assoc.peer_max_pdu,
    )
    if cancel:
        cancel_rq = CCancelRQ(message_id_being_responded_to=11)
        data += message_pdata(context_id, encode_command(cancel_rq))
    await assoc.session.send(data)
    pending: list[DimseMessage] = []
    while True:
        answer = await assoc.next_message(timeout)
        if not isinstance(answer, DimseMessage):
            return pending, answer
        status = getattr(answer.command, "status", None)
        if status in (0xFF00, 0xFF01):
            pending.append(answer)
            continue
        return pending, answer


@check(
    "c-find-cancel",
    "C-CANCEL of a C-FIND honoured",
    "PS3.7 9.3.2.3 (C-CANCEL-FIND-RQ); PS3.4 C.4.1.3.1",
    "C-FIND-RQ (Study Root, STUDY level, universal) and a C-CANCEL-RQ right behind it",
    "pending responses, then a final status FE00 (Cancel), or 0000 if matching was done "
    "before the cancel arrived",
)
async def c_find_cancel(probe: Probe) -> Outcome:
    opened = await _open_study_find(probe)
    if isinstance(opened, Outcome):
        return opened
    assoc, found = opened
    pending, final = await _find(assoc, found, _study_query(), probe.timeout, cancel=True)
    await assoc.release()
    if not isinstance(final, DimseMessage):
        return Outcome(
            Verdict.FAIL,
            f"{len(pending)} pending, then {describe(final, probe.timeout)}",
            "the C-FIND ends with a final response",
        )
    status = getattr(final.command, "status", None)
    got = f"{len(pending)} pending, final {summary(final)}"
    if status == 0xFE00:
        return Outcome(Verdict.PASS, got)
    if status == 0x0000:
        if not pending:
            return Outcome(Verdict.INCONCLUSIVE, got, "no match: nothing to cancel")
        return Outcome(Verdict.PASS, got, "matching was complete before the cancel")
    return Outcome(Verdict.FAIL, got, "the final status is Cancel or Success")


@check(
    "c-find-unsupported-key",
    "C-FIND with an optional key the SCP may not support",
    "PS3.4 C.2.2.1.3, C.4.1.3.1 (FF01)",
    "C-FIND-RQ (Study Root, STUDY level) with PatientMotherBirthName = ZZZNOMATCH^ZZZ",
    "final status 0000; either no match (the key was matched) or matches where the key is "
    "absent or empty (it was ignored, pending FF00/FF01); never a failure",
)
async def c_find_unsupported_key(probe: Probe) -> Outcome:
    opened = await _open_study_find(probe)
    if isinstance(opened, Outcome):
        return opened
    assoc, found = opened
    query = _study_query(PatientMotherBirthName="ZZZNOMATCH^ZZZ")
    pending, final = await _find(assoc, found, query, probe.timeout)
    await assoc.release()
    if not isinstance(final, DimseMessage):
        return Outcome(
            Verdict.FAIL, f"{len(pending)} pending, then {describe(final, probe.timeout)}"
        )
    got = f"{len(pending)} pending, final {summary(final)}"
    if getattr(final.command, "status", None) != 0x0000:
        return Outcome(Verdict.FAIL, got, "an optional key is no reason to fail")
    for msg in pending:
        ds = decode_identifier(msg.dataset or b"", found[1])
        value = str(getattr(ds, "PatientMotherBirthName", "") or "") if ds is not None else ""
        if value and value != "ZZZNOMATCH^ZZZ":
            return Outcome(Verdict.FAIL, got, f"a match returned the key as {value!r}")
    return Outcome(Verdict.PASS, got)


MAX_LENGTH_PROPOSED = 4096


@check(
    "max-pdu",
    "Our Maximum Length honoured by the peer's P-DATA-TF",
    "PS3.8 D.1; PS3.7 D.3.3.1",
    f"Maximum Length {MAX_LENGTH_PROPOSED}; C-FIND for a study, then C-GET of it (storage "
    "SCP role proposed), C-STORE-RSP 0000 to each sub-operation",
    f"every P-DATA-TF received has a PDU-length <= {MAX_LENGTH_PROPOSED}",
)
async def max_pdu(probe: Probe) -> Outcome:
    probe.needs(uids.STUDY_ROOT_QR_GET)
    contexts = [
        ContextRequest(uids.STUDY_ROOT_QR_FIND),
        ContextRequest(uids.STUDY_ROOT_QR_GET),
        *storage(COMMON_STORAGE[:40], scu_role=False, scp_role=True),
    ]
    assoc = await probe.establish(contexts, max_pdu=MAX_LENGTH_PROPOSED)
    try:
        return await _max_pdu_get(probe, assoc)
    finally:
        await assoc.abort()


async def _max_pdu_get(probe: Probe, assoc: Established) -> Outcome:
    find, get = (
        assoc.context_for(uids.STUDY_ROOT_QR_FIND),
        assoc.context_for(uids.STUDY_ROOT_QR_GET),
    )
    if find is None or get is None:
        return Outcome(Verdict.NOT_APPLICABLE, "Study Root FIND/GET not accepted")
    pending, _final = await _find(assoc, find, _study_query(), probe.timeout)
    study = None
    for msg in pending:
        ds = decode_identifier(msg.dataset or b"", find[1])
        study = str(getattr(ds, "StudyInstanceUID", "") or "") or None
        if study:
            break
    stores = 0
    if study:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        rq = CGetRQ(message_id=21, affected_sop_class_uid=uids.STUDY_ROOT_QR_GET)
        await assoc.send_message(get[0], rq, encode_dataset(query, get[1]))
        while stores < 3:
            answer = await assoc.next_message(probe.timeout)
            if not isinstance(answer, DimseMessage):
                break
            cmd = answer.command
            if isinstance(cmd, CStoreRQ):
                stores += 1
                rsp = CStoreRSP(
                    message_id_being_responded_to=cmd.message_id,
                    affected_sop_class_uid=cmd.affected_sop_class_uid,
                    affected_sop_instance_uid=cmd.affected_sop_instance_uid,
                )
                await assoc.send_message(answer.context_id, rsp)
            elif isinstance(cmd, CGetRSP) and cmd.status not in (0xFF00, 0xFF01):
                break
    sizes = assoc.messages.pdata_sizes
    biggest = max(sizes, default=0)
    got = f"{len(sizes)} P-DATA-TF, largest {biggest}; {stores} C-STORE sub-operation(s)"
    if biggest > MAX_LENGTH_PROPOSED:
        return Outcome(Verdict.FAIL, got, f"a P-DATA-TF above {MAX_LENGTH_PROPOSED}")
    if not study:
        return Outcome(Verdict.NOT_APPLICABLE, got, "the peer holds no study to send")
    if stores == 0:
        return Outcome(Verdict.INCONCLUSIVE, got, "no sub-operation came: nothing large was sent")
    return Outcome(Verdict.PASS, got)
