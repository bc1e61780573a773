"""Known-answer checks of association establishment and of PDUs in an established
association (PS3.8 9.3, Table 9-10; PS3.7 Annex D)."""

from __future__ import annotations

import struct
from dataclasses import replace

from .. import uids
from ..dimse.commands import (
    CEchoRQ,
    encode_command,
)
from ..enums import AbortSource, ContextResult
from ..pdu import (
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    RawPDU,
    RoleSelection,
)
from ..ul.negotiation import ContextRequest
from .probe import (
    CT,
    MR,
    UNKNOWN_UID,
    VERIFY,
    Check,
    DimseMessage,
    Outcome,
    Probe,
    Verdict,
    abort_outcome,
    baseline_of,
    describe,
    established_then,
    message_pdata,
    registry,
    summary,
)
from .session import CLOSED, TIMEOUT, Received

__all__ = ["CHECKS"]

#: These checks, in the order the battery runs them.
CHECKS: list[Check] = []
check = registry(CHECKS)


# -- association establishment (PS3.8 9.3.2-9.3.4, PS3.7 Annex D) ---------------------------


@check(
    "ac-echo",
    "A-ASSOCIATE-AC echoes AE titles, application context, version",
    "PS3.8 9.3.3 (Table 9-17)",
    "A-ASSOCIATE-RQ: Verification, Q/R FIND and GET, CT storage",
    "A-ASSOCIATE-AC: called/calling AE titles as sent, the DICOM application context, "
    "protocol version bit 0 set",
)
async def ac_echo(probe: Probe) -> Outcome:
    rq, ac = baseline_of(probe)
    wrong = []
    if ac.called_ae_title.strip() != rq.called_ae_title.strip():
        wrong.append(f"called AE {ac.called_ae_title!r} (sent {rq.called_ae_title!r})")
    if ac.calling_ae_title.strip() != rq.calling_ae_title.strip():
        wrong.append(f"calling AE {ac.calling_ae_title!r} (sent {rq.calling_ae_title!r})")
    if ac.application_context_name != rq.application_context_name:
        wrong.append(f"application context {ac.application_context_name}")
    if not ac.protocol_version & 1:
        wrong.append(f"protocol version 0x{ac.protocol_version:04X}")
    got = (
        f"called {ac.called_ae_title!r}, calling {ac.calling_ae_title!r}, "
        f"context {ac.application_context_name}, version 0x{ac.protocol_version:04X}"
    )
    if wrong:
        return Outcome(Verdict.FAIL, got, "; ".join(wrong))
    return Outcome(Verdict.PASS, got)


@check(
    "ac-contexts",
    "Every proposed presentation context answered once",
    "PS3.8 9.3.3.2 (Table 9-18)",
    "A-ASSOCIATE-RQ with 5 presentation contexts (IDs 1-9)",
    "one answer per proposed ID, no other IDs; an accepted context names one of the "
    "transfer syntaxes proposed for it",
)
async def ac_contexts(probe: Probe) -> Outcome:
    rq, ac = baseline_of(probe)
    proposed = {c.context_id: c for c in rq.presentation_contexts}
    answered = [c.context_id for c in ac.presentation_contexts]
    wrong = []
    for cid in sorted(set(answered) - set(proposed)):
        wrong.append(f"answer for context {cid}, never proposed")
    for cid in sorted(set(proposed) - set(answered)):
        wrong.append(f"no answer for context {cid}")
    for cid in sorted({c for c in answered if answered.count(c) > 1}):
        wrong.append(f"context {cid} answered {answered.count(cid)} times")
    for c in ac.presentation_contexts:
        offered = proposed[c.context_id].transfer_syntaxes if c.context_id in proposed else ()
        if c.accepted and offered and c.transfer_syntax not in offered:
            wrong.append(f"context {c.context_id} accepted with {c.transfer_syntax}")
    got = ", ".join(
        f"{c.context_id}:{'accepted' if c.accepted else f'rejected({int(c.result)})'}"
        for c in ac.presentation_contexts
    )
    return Outcome(Verdict.FAIL if wrong else Verdict.PASS, got, "; ".join(wrong))


@check(
    "ac-user-info",
    "A-ASSOCIATE-AC carries Maximum Length and Implementation Class UID",
    "PS3.7 D.3.3.1, D.3.3.2; PS3.8 D.1",
    "A-ASSOCIATE-RQ (Maximum Length 65536, Implementation Class UID)",
    "User Information with a Maximum Length and an Implementation Class UID sub-item",
)
async def ac_user_info(probe: Probe) -> Outcome:
    _rq, ac = baseline_of(probe)
    ui = ac.user_information
    if ui is None:
        return Outcome(Verdict.FAIL, "no User Information item")
    got = f"Maximum Length {ui.max_length}, Implementation Class UID {ui.implementation_class_uid}"
    missing = [
        name
        for name, value in (
            ("Maximum Length", ui.max_length),
            ("Implementation Class UID", ui.implementation_class_uid),
        )
        if value is None
    ]
    if missing:
        return Outcome(Verdict.FAIL, got, "missing: " + ", ".join(missing))
    return Outcome(Verdict.PASS, got)


def _with_version(rq: AAssociateRQ, version: int) -> bytes:
    data = bytearray(rq.encode())
    data[6:8] = version.to_bytes(2, "big")  # PS3.8 Table 9-11: bytes 7-8
    return bytes(data)


@check(
    "version-unsupported",
    "Protocol version without bit 0 rejected",
    "PS3.8 9.3.2 (Table 9-11), 9.3.4 (Table 9-21)",
    "A-ASSOCIATE-RQ with Protocol-version 0002H (bit 0 clear: not version 1)",
    "A-ASSOCIATE-RJ, source 2 (ACSE) / reason 2 (protocol-version-not-supported)",
)
async def version_unsupported(probe: Probe) -> Outcome:
    session, answer = await probe.exchange(_with_version(probe.request(VERIFY), 0x0002))
    session.close()
    got = describe(answer, probe.timeout)
    if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateRJ):
        if answer.pdu.source == 2 and answer.pdu.reason == 2:
            return Outcome(Verdict.PASS, got)
        return Outcome(Verdict.FAIL, got, "Table 9-21 has a reason for this: source 2 / reason 2")
    return Outcome(Verdict.FAIL, got, "a version-1 acceptor cannot support this request")


@check(
    "version-extra-bits",
    "Protocol version: only bit 0 tested",
    "PS3.8 9.3.2 (Table 9-11)",
    "A-ASSOCIATE-RQ with Protocol-version 0003H (bit 0 and bit 1 set)",
    "A-ASSOCIATE-AC: a version-1 receiver shall only test that bit 0 is set",
)
async def version_extra_bits(probe: Probe) -> Outcome:
    session, answer = await probe.exchange(_with_version(probe.request(VERIFY), 0x0003))
    session.close()
    return _expect_ac(answer, probe.timeout, "bits other than bit 0 must not be tested")


def _expect_ac(answer: Received | str, timeout: float, why: str) -> Outcome:
    got = describe(answer, timeout)
    if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateAC):
        return Outcome(Verdict.PASS, got)
    return Outcome(Verdict.FAIL, got, why)


@check(
    "reserved-fields",
    "Reserved fields not tested",
    "PS3.8 9.3.1, 9.3.2 (Table 9-11)",
    "A-ASSOCIATE-RQ with A5H in the PDU header's reserved byte and the reserved fields "
    "of bytes 9-10 and 43-74",
    "A-ASSOCIATE-AC: reserved fields are sent as 00H but not tested when received",
)
async def reserved_fields(probe: Probe) -> Outcome:
    data = bytearray(probe.request(VERIFY).encode())
    data[1] = 0xA5
    data[8:10] = b"\xa5\xa5"
    data[42:74] = b"\xa5" * 32
    session, answer = await probe.exchange(bytes(data))
    session.close()
    return _expect_ac(answer, probe.timeout, "the receiver tested a reserved field")


@check(
    "called-ae-unknown",
    "Unknown called AE title",
    "PS3.8 9.3.4 (Table 9-21)",
    "A-ASSOCIATE-RQ to called AE 'NO-SUCH-AE-XYZ'",
    "A-ASSOCIATE-RJ source 1 / reason 7 (called-AE-title-not-recognized); n/a when the SCP "
    "accepts any called AE title (PS3.8 lets it)",
)
async def called_ae_unknown(probe: Probe) -> Outcome:
    session, answer = await probe.exchange(probe.request(VERIFY, called="NO-SUCH-AE-XYZ").encode())
    session.close()
    got = describe(answer, probe.timeout)
    if isinstance(answer, Received):
        if isinstance(answer.pdu, AAssociateAC):
            return Outcome(Verdict.NOT_APPLICABLE, got, "the SCP accepts any called AE title")
        if isinstance(answer.pdu, AAssociateRJ):
            if answer.pdu.source == 1 and answer.pdu.reason == 7:
                return Outcome(Verdict.PASS, got)
            return Outcome(
                Verdict.INCONCLUSIVE, got, "rejected, but not with called-AE-title-not-recognized"
            )
    return Outcome(Verdict.FAIL, got, "an A-ASSOCIATE-RQ is answered with AC or RJ (AE-6)")


@check(
    "app-context-unknown",
    "Unknown application context name",
    "PS3.8 7.1.1.2, 9.3.4 (Table 9-21); PS3.7 A.2.1",
    "A-ASSOCIATE-RQ with application context name 1.2.3.4.5.6.7.8.1",
    "A-ASSOCIATE-RJ source 1 / reason 2 (application-context-name-not-supported); an AC "
    "naming the DICOM context instead is inconclusive (ACSE lets the acceptor answer with "
    "another name); an AC echoing the unknown name fails",
)
async def app_context_unknown(probe: Probe) -> Outcome:
    unknown = "1.2.3.4.5.6.7.8.1"
    rq = replace(probe.request(VERIFY), application_context_name=unknown)
    session, answer = await probe.exchange(rq.encode())
    session.close()
    got = describe(answer, probe.timeout)
    if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateRJ):
        if answer.pdu.source == 1 and answer.pdu.reason == 2:
            return Outcome(Verdict.PASS, got)
        return Outcome(Verdict.INCONCLUSIVE, got, "rejected, but not for the application context")
    if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateAC):
        name = answer.pdu.application_context_name
        got += f", application context {name}"
        if name == unknown:
            return Outcome(Verdict.FAIL, got, "agreed to an application context DICOM lacks")
        return Outcome(Verdict.INCONCLUSIVE, got, "accepted, naming another context")
    return Outcome(Verdict.FAIL, got, "an A-ASSOCIATE-RQ is answered with AC or RJ (AE-6)")


@check(
    "no-contexts",
    "A-ASSOCIATE-RQ without a presentation context",
    "PS3.8 9.3.2 (Table 9-11); Table 9-10 Sta2/Evt19 AA-1",
    "A-ASSOCIATE-RQ with no Presentation Context item",
    "A-ASSOCIATE-RJ or A-ABORT (the PDU lacks its mandatory items); never an AC",
)
async def no_contexts(probe: Probe) -> Outcome:
    rq = replace(probe.request(VERIFY), presentation_contexts=())
    session, answer = await probe.exchange(rq.encode())
    session.close()
    got = describe(answer, probe.timeout)
    if isinstance(answer, Received) and isinstance(answer.pdu, (AAssociateRJ, AAbort)):
        return Outcome(Verdict.PASS, got)
    if answer == CLOSED:
        return Outcome(Verdict.FAIL, got, "AA-1 sends an A-ABORT PDU (or AE-6 an RJ) first")
    return Outcome(Verdict.FAIL, got, "an RQ with no context cannot be accepted")


@check(
    "bad-item-length",
    "Item length overrunning the PDU",
    "PS3.8 9.3.2.2; Table 9-10 Sta2/Evt19 AA-1",
    "A-ASSOCIATE-RQ whose Presentation Context item claims 65520 bytes",
    "A-ABORT (invalid PDU in Sta2; AA-1); A-ASSOCIATE-RJ is inconclusive",
)
async def bad_item_length(probe: Probe) -> Outcome:
    data = bytearray(probe.request(VERIFY).encode())
    pos = 74  # the first variable item: the application context (PS3.8 Table 9-11)
    pos += 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    assert data[pos] == 0x20
    data[pos + 2 : pos + 4] = (0xFFF0).to_bytes(2, "big")
    session, answer = await probe.exchange(bytes(data))
    session.close()
    if isinstance(answer, Received) and isinstance(answer.pdu, AAssociateRJ):
        return Outcome(
            Verdict.INCONCLUSIVE,
            describe(answer),
            "Table 9-10 treats an invalid PDU as Evt19 (A-ABORT); an RJ refuses it too",
        )
    return abort_outcome(answer, probe.timeout, reason=None, source=None, action="AA-1")


@check(
    "unknown-pdu-idle",
    "Unknown PDU type before the association",
    "PS3.8 9.3.1; Table 9-10 Sta2/Evt19 AA-1",
    "PDU type 08H (undefined) as the first PDU",
    "A-ABORT, then the close (AA-1)",
)
async def unknown_pdu_idle(probe: Probe) -> Outcome:
    session, answer = await probe.exchange(RawPDU(0x08, b"\x00" * 4).encode())
    session.close()
    return abort_outcome(answer, probe.timeout, reason=None, source=None, action="AA-1")


@check(
    "pdata-before-ac",
    "P-DATA-TF before any association",
    "PS3.8 Table 9-10 Sta2/Evt10 AA-1",
    "P-DATA-TF carrying a C-ECHO-RQ as the first PDU",
    "A-ABORT, then the close (AA-1)",
)
async def pdata_before_ac(probe: Probe) -> Outcome:
    data = message_pdata(1, encode_command(CEchoRQ(message_id=1)))
    session, answer = await probe.exchange(data)
    session.close()
    return abort_outcome(answer, probe.timeout, reason=None, source=None, action="AA-1")


@check(
    "abstract-syntax-unknown",
    "Unknown abstract syntax rejected",
    "PS3.8 9.3.3.2 (Table 9-18)",
    f"A-ASSOCIATE-RQ: Verification (ID 1) and abstract syntax {UNKNOWN_UID} (ID 3)",
    "context 3 rejected with result 3 (abstract-syntax-not-supported); n/a if the SCP "
    "accepts any abstract syntax",
)
async def abstract_syntax_unknown(probe: Probe) -> Outcome:
    assoc = await probe.establish([*VERIFY, ContextRequest(UNKNOWN_UID)])
    await assoc.release()
    answers = {c.context_id: c for c in assoc.ac.presentation_contexts}
    c = answers.get(3)
    if c is None:
        return Outcome(Verdict.FAIL, "no answer for context 3", "every context is answered")
    got = f"context 3 result {int(c.result)} ({ContextResult(c.result).name.lower()})"
    if c.result == ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED:
        return Outcome(Verdict.PASS, got)
    if c.result == ContextResult.ACCEPTANCE:
        return Outcome(Verdict.NOT_APPLICABLE, got, "the SCP accepts unknown abstract syntaxes")
    if c.result == ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED:
        return Outcome(Verdict.FAIL, got, "the transfer syntaxes were standard ones")
    return Outcome(Verdict.INCONCLUSIVE, got, "rejected, with a less precise result")


@check(
    "transfer-syntax",
    "Transfer syntax chosen among those proposed",
    "PS3.8 9.3.3.2 (Table 9-18)",
    "A-ASSOCIATE-RQ: Verification (or another syntax the peer offers) with Explicit and "
    f"Implicit VR LE (ID 1), the same with only the unknown transfer syntax {UNKNOWN_UID} "
    "(ID 3)",
    "context 1 accepted with one of its two syntaxes; context 3 rejected with result 4 "
    "(transfer-syntaxes-not-supported)",
)
async def transfer_syntax(probe: Probe) -> Outcome:
    syntax = probe.usable_syntax()
    contexts = [ContextRequest(syntax), ContextRequest(syntax, (UNKNOWN_UID,))]
    assoc = await probe.establish(contexts)
    await assoc.release()
    answers = {c.context_id: c for c in assoc.ac.presentation_contexts}
    one, three = answers.get(1), answers.get(3)
    if one is None or three is None:
        return Outcome(Verdict.FAIL, "a context was not answered", "every context is answered")
    got = (
        f"context 1 {'accepted ' + str(one.transfer_syntax) if one.accepted else 'rejected'}; "
        f"context 3 result {int(three.result)}"
        + (f" with {three.transfer_syntax}" if three.accepted else "")
    )
    if one.accepted and one.transfer_syntax not in contexts[0].transfer_syntaxes:
        return Outcome(Verdict.FAIL, got, "context 1 accepted with a syntax not proposed")
    if three.accepted:
        return Outcome(Verdict.FAIL, got, "accepted a transfer syntax nobody defines")
    if not one.accepted:
        return Outcome(Verdict.INCONCLUSIVE, got, f"{uids.uid_name(syntax)} refused in both")
    if three.result != ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED:
        return Outcome(Verdict.INCONCLUSIVE, got, "rejected, with a less precise result")
    return Outcome(Verdict.PASS, got)


@check(
    "role-not-proposed",
    "SCP/SCU role selection: no role granted that was not proposed",
    "PS3.7 D.3.3.4",
    "Role Selection items: CT Image Storage SCU=0 SCP=1, MR Image Storage SCU=1 SCP=0",
    "each answer returns 1 only for a role proposed with 1 (or no item: default roles)",
)
async def role_not_proposed(probe: Probe) -> Outcome:
    contexts = [
        *VERIFY,
        ContextRequest(CT, scu_role=False, scp_role=True),
        ContextRequest(MR, scu_role=True, scp_role=False),
    ]
    # ContextRequest sends no item for SCU-only; add MR's explicitly.
    assoc = await probe.establish(contexts, extra_items=[RoleSelection(MR, True, False)])
    await assoc.release()
    proposed = {CT: (False, True), MR: (True, False)}
    ui = assoc.ac.user_information
    answers = ui.role_selections if ui is not None else ()
    got = (
        ", ".join(
            f"{uids.uid_name(r.sop_class_uid)} SCU={int(r.scu_role)} SCP={int(r.scp_role)}"
            for r in answers
        )
        or "no Role Selection item"
    )
    wrong = []
    for r in answers:
        asked = proposed.get(r.sop_class_uid)
        if asked is None:
            wrong.append(f"an answer for {r.sop_class_uid}, not proposed")
        elif (r.scu_role and not asked[0]) or (r.scp_role and not asked[1]):
            wrong.append(f"{uids.uid_name(r.sop_class_uid)}: granted a role proposed as 0")
    return Outcome(Verdict.FAIL if wrong else Verdict.PASS, got, "; ".join(wrong))


@check(
    "role-omitted",
    "No role selection answer when none was proposed",
    "PS3.7 D.3.3.4",
    "A-ASSOCIATE-RQ without any Role Selection item",
    "A-ASSOCIATE-AC without any Role Selection item",
)
async def role_omitted(probe: Probe) -> Outcome:
    _rq, ac = baseline_of(probe)
    ui = ac.user_information
    answers = ui.role_selections if ui is not None else ()
    if answers:
        return Outcome(
            Verdict.FAIL,
            f"{len(answers)} Role Selection item(s)",
            "items absent from the indication shall be omitted in the response",
        )
    return Outcome(Verdict.PASS, "no Role Selection item")


@check(
    "async-window",
    "Asynchronous operations window answered within the offer",
    "PS3.7 D.3.3.3",
    "Asynchronous Operations Window sub-item: invoked 3, performed 3",
    "no sub-item (default 1/1) or both values 1-3 (equal or less than offered; 0 = "
    "unlimited is more)",
)
async def async_window(probe: Probe) -> Outcome:
    assoc = await probe.establish(VERIFY, async_window=(3, 3))
    await assoc.release()
    ui = assoc.ac.user_information
    window = ui.async_ops_window if ui is not None else None
    if window is None:
        return Outcome(Verdict.PASS, "no Asynchronous Operations Window sub-item")
    values = (window.max_operations_invoked, window.max_operations_performed)
    got = f"invoked {values[0]}, performed {values[1]}"
    if all(1 <= v <= 3 for v in values):
        return Outcome(Verdict.PASS, got)
    return Outcome(Verdict.FAIL, got, "an answer above the offer (0 means unlimited)")


# -- data transfer: PDUs in Sta6 (PS3.8 Table 9-10) ------------------------------------------


@check(
    "unknown-pdu",
    "Unknown PDU type on an association",
    "PS3.8 Table 9-10 Sta6/Evt19 AA-8; Table 9-26",
    "PDU type 08H (undefined) after the A-ASSOCIATE-AC",
    "A-ABORT source 2 (service-provider) / reason 1 (unrecognized-PDU)",
)
async def unknown_pdu(probe: Probe) -> Outcome:
    answer = await established_then(probe, RawPDU(0x08, b"\x00" * 4).encode())
    return abort_outcome(answer, probe.timeout, source=2, reason=1, action="AA-8")


@check(
    "bad-pdv-length",
    "PDV item length overrunning its P-DATA-TF",
    "PS3.8 9.3.5 (Table 9-23); Table 9-10 Sta6/Evt19 AA-8; Table 9-26",
    "P-DATA-TF of 10 bytes whose PDV item claims 1000",
    "A-ABORT source 2 / reason 6 (invalid-PDU-parameter value)",
)
async def bad_pdv_length(probe: Probe) -> Outcome:
    body = struct.pack(">LBB", 1000, 1, 0x03) + b"\x00" * 4
    answer = await established_then(probe, RawPDU(0x04, body).encode())
    return abort_outcome(answer, probe.timeout, source=2, reason=6, action="AA-8")


@check(
    "second-rq",
    "A-ASSOCIATE-RQ on an established association",
    "PS3.8 Table 9-10 Sta6/Evt6 AA-8; Table 9-26",
    "a second A-ASSOCIATE-RQ after the A-ASSOCIATE-AC",
    "A-ABORT source 2 / reason 2 (unexpected-PDU)",
)
async def second_rq(probe: Probe) -> Outcome:
    answer = await established_then(probe, probe.request(VERIFY).encode())
    return abort_outcome(answer, probe.timeout, source=2, reason=2, action="AA-8")


@check(
    "unexpected-release-rp",
    "A-RELEASE-RP without a release request",
    "PS3.8 Table 9-10 Sta6/Evt13 AA-8; Table 9-26",
    "A-RELEASE-RP after the A-ASSOCIATE-AC",
    "A-ABORT source 2 / reason 2 (unexpected-PDU)",
)
async def unexpected_release_rp(probe: Probe) -> Outcome:
    answer = await established_then(probe, AReleaseRP().encode())
    return abort_outcome(answer, probe.timeout, source=2, reason=2, action="AA-8")


@check(
    "pdata-unaccepted-context",
    "P-DATA on a presentation context that was not accepted",
    "PS3.8 9.3.5 (Table 9-23), 7.1.1.13",
    f"C-ECHO-RQ on context 3 ({UNKNOWN_UID}) if it was rejected, else on context 5 (never "
    "proposed)",
    "A-ABORT; no DIMSE answer on a context that was not accepted",
)
async def pdata_unaccepted_context(probe: Probe) -> Outcome:
    assoc = await probe.establish([*VERIFY, ContextRequest(UNKNOWN_UID)])
    try:
        three = next((c for c in assoc.ac.presentation_contexts if c.context_id == 3), None)
        target = 5 if three is not None and three.accepted else 3
        await assoc.send_message(target, CEchoRQ(message_id=7))
        answer = await assoc.next_message(probe.timeout)
    finally:
        assoc.session.close()
    if isinstance(answer, DimseMessage):
        got = f"on context {target}: answer on {answer.context_id}: {summary(answer)}"
        if answer.context_id == target:
            return Outcome(Verdict.FAIL, got, "answered on a context that was not accepted")
        return Outcome(Verdict.INCONCLUSIVE, got, "answered on another context")
    got = f"on context {target}: {describe(answer, probe.timeout)}"
    if answer == TIMEOUT:
        return Outcome(Verdict.INCONCLUSIVE, got, "the message was ignored")
    outcome = abort_outcome(
        answer,
        probe.timeout,
        source=None,
        reason=None,
        action="PS3.8 7.3 (an association ends by release or abort)",
    )
    return replace(outcome, got=got)


@check(
    "release",
    "A-RELEASE-RQ answered with A-RELEASE-RP",
    "PS3.8 Table 9-10 Sta6/Evt12 AR-2, Sta8 AR-4; 7.2",
    "A-RELEASE-RQ after the A-ASSOCIATE-AC",
    "A-RELEASE-RP, then nothing more (the requestor closes)",
)
async def release(probe: Probe) -> Outcome:
    answer = await established_then(probe, AReleaseRQ().encode())
    got = describe(answer, probe.timeout)
    if not (isinstance(answer, Received) and isinstance(answer.pdu, AReleaseRP)):
        return Outcome(Verdict.FAIL, got, "AR-2/AR-4: the acceptor answers with A-RELEASE-RP")
    return Outcome(Verdict.PASS, got)


@check(
    "abort",
    "A-ABORT from the requestor",
    "PS3.8 Table 9-10 Sta6/Evt16 AA-3",
    "A-ABORT (source 0) after the A-ASSOCIATE-AC",
    "nothing sent back; the peer closes the connection",
)
async def abort(probe: Probe) -> Outcome:
    answer = await established_then(probe, AAbort(AbortSource.SERVICE_USER).encode())
    got = describe(answer, probe.timeout)
    if answer == CLOSED:
        return Outcome(Verdict.PASS, got)
    if answer == TIMEOUT:
        return Outcome(Verdict.FAIL, got, "AA-3 closes the transport connection")
    return Outcome(Verdict.FAIL, got, "AA-3 sends nothing back")
