"""Association negotiation (aiodimse/ul/negotiation.py), pure: requests built by the requestor,
answers chosen by the acceptor, and both sides' reading of the outcome (PS3.7 Annex D,
PS3.8 9.3.2-9.3.4).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from aiodimse.enums import ContextResult, RejectResult, RejectSource
from aiodimse.errors import AssociationRejected
from aiodimse.pdu import (
    APPLICATION_CONTEXT_NAME,
    AAssociateAC,
    AAssociateRQ,
    AsyncOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    decode_pdu,
)
from aiodimse.ul.negotiation import (
    APPLICATION_CONTEXT_NOT_SUPPORTED,
    CALLED_AE_NOT_RECOGNIZED,
    CALLING_AE_NOT_RECOGNIZED,
    LOCAL_LIMIT_EXCEEDED,
    MAX_CONTEXTS,
    NO_REASON_GIVEN,
    PROTOCOL_VERSION_NOT_SUPPORTED,
    AcceptorPolicy,
    ContextRequest,
    Negotiated,
    Rejection,
    build_request,
    negotiate,
    requestor_result,
)

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"

IMPL_UID = "1.2.826.0.1.3680043.9.9999.1"


def request(
    contexts: list[ContextRequest],
    *,
    calling: str = "CALLING",
    called: str = "CALLED",
    max_pdu: int = 16384,
    async_window: tuple[int, int] | None = None,
    user_identity: UserIdentityRQ | None = None,
) -> AAssociateRQ:
    return build_request(
        calling,
        called,
        contexts,
        max_pdu=max_pdu,
        implementation_class_uid=IMPL_UID,
        implementation_version_name="TEST_01",
        async_window=async_window,
        user_identity=user_identity,
    )


def accept(
    rq: AAssociateRQ, policy: AcceptorPolicy, user_identity_response: bytes | None = None
) -> tuple[AAssociateAC, Negotiated]:
    outcome = negotiate(rq, policy, user_identity_response=user_identity_response)
    assert not isinstance(outcome, Rejection), outcome
    ac, negotiated = outcome
    # Whatever we answer must survive the wire.
    assert decode_pdu(ac.encode()) == ac
    return ac, negotiated


def roles_in(ac: AAssociateAC) -> dict[str, tuple[bool, bool]]:
    ui = ac.user_information
    assert ui is not None
    return {r.sop_class_uid: (r.scu_role, r.scp_role) for r in ui.role_selections}


# -- requestor: building the A-ASSOCIATE-RQ ------------------------------------------------


def test_request_context_ids_are_odd_and_in_order() -> None:
    contexts = [ContextRequest(VERIFICATION), ContextRequest(CT), ContextRequest(MR)]
    rq = request(contexts)
    # PS3.8 9.3.2.2: presentation context IDs are odd integers 1-255.
    assert [c.context_id for c in rq.presentation_contexts] == [1, 3, 5]
    assert [c.abstract_syntax for c in rq.presentation_contexts] == [VERIFICATION, CT, MR]
    assert rq.presentation_contexts[1].transfer_syntaxes == (EXPLICIT, IMPLICIT)
    assert rq.application_context_name == APPLICATION_CONTEXT_NAME
    assert (rq.calling_ae_title, rq.called_ae_title) == ("CALLING", "CALLED")
    assert decode_pdu(rq.encode()) == rq


def test_request_allows_128_contexts_and_no_more() -> None:
    contexts = [ContextRequest(f"1.2.3.{i}") for i in range(MAX_CONTEXTS)]
    rq = request(contexts)
    ids = [c.context_id for c in rq.presentation_contexts]
    assert MAX_CONTEXTS == 128
    assert ids[0] == 1 and ids[-1] == 255 and len(set(ids)) == 128
    assert all(i % 2 == 1 for i in ids)
    with pytest.raises(ValueError, match="128"):
        request([*contexts, ContextRequest("1.2.3.999")])
    with pytest.raises(ValueError):
        request([])


def test_request_user_information_items() -> None:
    rq = request([ContextRequest(VERIFICATION)], max_pdu=4096)
    ui = rq.user_information
    assert ui is not None
    assert ui.max_length == 4096
    assert ui.implementation_class_uid == IMPL_UID
    assert ui.implementation_version_name == "TEST_01"
    # PS3.7 D.3.3.3: the window sub-item only when asked for (some SCPs refuse it).
    assert ui.async_ops_window is None
    assert ui.role_selections == ()
    assert ui.user_identity is None
    # PS3.7 D.1: Maximum Length and Implementation Class UID are always present.
    assert isinstance(ui.items[0], MaximumLength)
    assert any(isinstance(i, ImplementationClassUID) for i in ui.items)
    assert any(isinstance(i, ImplementationVersionName) for i in ui.items)


def test_request_async_window_only_when_asked() -> None:
    rq = request([ContextRequest(VERIFICATION)], async_window=(5, 0))
    assert rq.user_information is not None
    assert rq.user_information.async_ops_window == AsyncOperationsWindow(5, 0)


def test_request_role_selection_only_when_roles_differ_from_default() -> None:
    contexts = [
        ContextRequest(STUDY_GET),  # default roles: SCU only -> no item
        ContextRequest(CT, scu_role=False, scp_role=True),
        ContextRequest(CT, (JPEG_LOSSLESS,), scu_role=False, scp_role=True),  # same class
        ContextRequest(MR, scu_role=True, scp_role=True),
    ]
    rq = request(contexts)
    assert rq.user_information is not None
    # PS3.7 D.3.3.4: at most one role selection item per SOP class.
    assert rq.user_information.role_selections == (
        RoleSelection(CT, False, True),
        RoleSelection(MR, True, True),
    )
    assert len(rq.presentation_contexts) == 4


def test_request_refuses_conflicting_roles_for_one_class() -> None:
    with pytest.raises(ValueError, match="conflicting roles"):
        request(
            [
                ContextRequest(CT, scu_role=False, scp_role=True),
                ContextRequest(CT, (IMPLICIT,), scu_role=True, scp_role=True),
            ]
        )


def test_request_carries_user_identity() -> None:
    identity = UserIdentityRQ(1, b"alice", positive_response_requested=True)
    rq = request([ContextRequest(VERIFICATION)], user_identity=identity)
    assert rq.user_information is not None
    assert rq.user_information.user_identity == identity


# -- acceptor: per-context results and transfer syntax choice -------------------------------


def test_acceptor_chooses_first_syntax_in_its_own_order() -> None:
    rq = request(
        [
            ContextRequest(CT, (IMPLICIT, EXPLICIT, BIG)),
            ContextRequest(MR, (IMPLICIT, EXPLICIT, BIG)),
            ContextRequest(VERIFICATION, (EXPLICIT, IMPLICIT)),
        ]
    )
    policy = AcceptorPolicy(
        supported={
            CT: (BIG, EXPLICIT, IMPLICIT),
            MR: (DEFLATED, EXPLICIT, IMPLICIT),
            VERIFICATION: (IMPLICIT,),
        }
    )
    ac, negotiated = accept(rq, policy)
    chosen = {c.context_id: c.transfer_syntax for c in ac.presentation_contexts}
    # The requestor's order does not matter: the acceptor's preference decides.
    assert chosen == {1: BIG, 3: EXPLICIT, 5: IMPLICIT}
    assert all(c.result == ContextResult.ACCEPTANCE for c in ac.presentation_contexts)
    assert [c.transfer_syntax for c in negotiated.contexts] == [BIG, EXPLICIT, IMPLICIT]
    # Acceptor's view: it is the SCP on default-role contexts, never the SCU.
    assert all(c.scp and not c.scu for c in negotiated.contexts)


def test_acceptor_context_results() -> None:
    rq = request(
        [
            ContextRequest(VERIFICATION, (EXPLICIT,)),
            ContextRequest(MR, (EXPLICIT,)),  # not supported at all
            ContextRequest(CT, (JPEG_LOSSLESS,)),  # supported, not in that syntax
            ContextRequest(STUDY_GET, (EXPLICIT,), scu_role=False, scp_role=True),
        ]
    )
    policy = AcceptorPolicy(
        supported={VERIFICATION: (EXPLICIT,), CT: (EXPLICIT, IMPLICIT), STUDY_GET: (EXPLICIT,)}
    )
    ac, negotiated = accept(rq, policy)
    results = {c.context_id: c.result for c in ac.presentation_contexts}
    # PS3.8 Table 9-18: Result/Reason values.
    assert results == {
        1: ContextResult.ACCEPTANCE,
        3: ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
        5: ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED,
        # the requestor wants only the SCP role for a class we can only be the SCP of
        7: ContextResult.USER_REJECTION,
    }
    assert [c.context_id for c in negotiated.accepted] == [1]
    assert [c.result for c in negotiated.contexts] == list(results.values())
    rejected = [c for c in negotiated.contexts if not c.accepted]
    assert all(c.transfer_syntax is None and not c.scu and not c.scp for c in rejected)
    # The requestor reads the same outcome from the AC.
    seen = requestor_result(rq, ac)
    assert [(c.context_id, c.result) for c in seen.contexts] == list(results.items())


def test_acceptor_answers_every_proposed_context_once() -> None:
    rq = request([ContextRequest(f"1.2.3.{i}") for i in range(20)])
    ac, _ = accept(rq, AcceptorPolicy(supported={"1.2.3.4": (EXPLICIT,)}))
    ids = [c.context_id for c in ac.presentation_contexts]
    assert ids == [c.context_id for c in rq.presentation_contexts]


def test_acceptor_rejects_a_request_without_presentation_contexts() -> None:
    # PS3.8 Table 9-11: an A-ASSOCIATE-RQ carries one or more Presentation Context Items;
    # one without any is refused, never accepted with nothing in it.
    rq = replace(request([ContextRequest(VERIFICATION)]), presentation_contexts=())
    outcome = negotiate(rq, AcceptorPolicy(supported={VERIFICATION: (EXPLICIT,)}))
    assert outcome == NO_REASON_GIVEN


def test_acceptor_refuses_even_context_ids() -> None:
    # PS3.8 9.3.2.2: IDs are odd; an even one cannot be accepted.
    rq = request([ContextRequest(VERIFICATION)])
    bad = replace(rq, presentation_contexts=(PresentationContextRQ(2, VERIFICATION, (EXPLICIT,)),))
    ac, negotiated = accept(bad, AcceptorPolicy(supported={VERIFICATION: (EXPLICIT,)}))
    assert ac.presentation_contexts[0].result != ContextResult.ACCEPTANCE
    assert negotiated.accepted == ()


# -- SCP/SCU role selection (PS3.7 D.3.3.4) --------------------------------------------------
#
# From the standard's text:
#  (a) no role selection item from the requestor: requestor SCU, acceptor SCP, and the
#      acceptor returns no item ("If the SCP/SCU Role Selection items do not exist in the
#      A-ASSOCIATE indication they shall be omitted in the A-ASSOCIATE response");
#  (b) the acceptor returns 1 to accept a proposed role, 0 to turn it down, and "shall not
#      return the value (1) if the Association-requestor has not proposed the role";
#  (c) roles on the context are those proposed and granted: requestor SCU <=> acceptor SCP,
#      requestor SCP <=> acceptor SCU.
#
# Columns: requestor's item (None = absent, else (scu, scp)); the acceptor's abilities
# (serves the class as SCP / agrees to be its SCU); expected context result; expected item
# in the AC (None = absent); requestor's roles; acceptor's roles (each (scu, scp)).

A, R = ContextResult.ACCEPTANCE, ContextResult.USER_REJECTION
ROLE_TABLE: list[
    tuple[
        tuple[bool, bool] | None,
        bool,
        bool,
        ContextResult,
        tuple[bool, bool] | None,
        tuple[bool, bool],
        tuple[bool, bool],
    ]
] = [
    # item      acc-SCP acc-SCU result item-in-AC     requestor       acceptor
    (None, True, False, A, None, (True, False), (False, True)),
    (None, True, True, A, None, (True, False), (False, True)),
    ((True, False), True, False, A, (True, False), (True, False), (False, True)),
    ((True, False), True, True, A, (True, False), (True, False), (False, True)),
    ((False, True), False, True, A, (False, True), (False, True), (True, False)),
    ((False, True), True, True, A, (False, True), (False, True), (True, False)),
    ((False, True), True, False, R, (False, False), (False, False), (False, False)),
    ((True, True), True, True, A, (True, True), (True, True), (True, True)),
    ((True, True), True, False, A, (True, False), (True, False), (False, True)),
    ((True, True), False, True, A, (False, True), (False, True), (True, False)),
    ((False, False), True, True, R, (False, False), (False, False), (False, False)),
]


@pytest.mark.parametrize(
    ("item", "acc_scp", "acc_scu", "result", "answer", "requestor", "acceptor"), ROLE_TABLE
)
def test_role_selection_table(
    item: tuple[bool, bool] | None,
    acc_scp: bool,
    acc_scu: bool,
    result: ContextResult,
    answer: tuple[bool, bool] | None,
    requestor: tuple[bool, bool],
    acceptor: tuple[bool, bool],
) -> None:
    if item is None:
        ctx = ContextRequest(CT, (EXPLICIT,))
        assert not ctx.proposes_roles
    else:
        ctx = ContextRequest(CT, (EXPLICIT,), scu_role=item[0], scp_role=item[1])
    rq = request([ctx])
    if item == (True, False):
        # The default roles send no item; put one on the wire explicitly.
        assert rq.user_information is not None
        rq = replace(
            rq,
            user_information=UserInformation(
                (*rq.user_information.items, RoleSelection(CT, True, False))
            ),
        )
    policy = AcceptorPolicy(
        supported={CT: (EXPLICIT,)} if acc_scp else {},
        scu_roles={CT: (EXPLICIT,)} if acc_scu else {},
    )
    ac, at_acceptor = accept(rq, policy)
    assert ac.presentation_contexts[0].result == result
    returned = roles_in(ac).get(CT)
    assert returned == answer
    if item is not None and returned is not None:
        # (b): never a 1 for a role that was not proposed.
        assert not (returned[0] and not item[0]) and not (returned[1] and not item[1])
    c = at_acceptor.contexts[0]
    assert (c.scu, c.scp) == acceptor
    r = requestor_result(rq, ac).contexts[0]
    assert r.result == result
    assert (r.scu, r.scp) == requestor


# The requestor's reading of whatever the acceptor returned (requestor_result).
# Columns: proposed item (None = absent); item the AC carries (None = absent); roles.
REQUESTOR_TABLE: list[
    tuple[tuple[bool, bool] | None, tuple[bool, bool] | None, tuple[bool, bool]]
] = [
    # "If the SCP/SCU Role Selection item is not returned by the Association-acceptor then
    # the role of the Association-requestor shall be SCU".
    ((False, True), None, (True, False)),
    ((True, True), None, (True, False)),
    # granted as proposed / turned down
    ((False, True), (False, True), (False, True)),
    ((True, True), (True, True), (True, True)),
    ((True, True), (True, False), (True, False)),
    ((True, True), (False, True), (False, True)),
    ((True, True), (False, False), (False, False)),
    # "The Association-requestor shall ignore the response if it has not proposed the role."
    ((False, True), (True, True), (False, True)),
    ((False, True), (True, False), (False, False)),
    ((True, False), (True, True), (True, False)),
    # an item for a class we proposed no role for: default roles
    (None, (True, True), (True, False)),
    (None, (False, True), (True, False)),
]


@pytest.mark.parametrize(("proposed", "returned", "roles"), REQUESTOR_TABLE)
def test_requestor_reads_role_answers(
    proposed: tuple[bool, bool] | None,
    returned: tuple[bool, bool] | None,
    roles: tuple[bool, bool],
) -> None:
    ctx = (
        ContextRequest(CT, (EXPLICIT,))
        if proposed is None
        else ContextRequest(CT, (EXPLICIT,), scu_role=proposed[0], scp_role=proposed[1])
    )
    rq = request([ctx])
    if proposed == (True, False):
        assert rq.user_information is not None
        rq = replace(
            rq,
            user_information=UserInformation(
                (*rq.user_information.items, RoleSelection(CT, True, False))
            ),
        )
    items: list[MaximumLength | RoleSelection] = [MaximumLength(16384)]
    if returned is not None:
        items.append(RoleSelection(CT, *returned))
    ac = AAssociateAC(
        "CALLED",
        "CALLING",
        (PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT),),
        UserInformation(tuple(items)),
    )
    c = requestor_result(rq, ac).contexts[0]
    assert c.accepted
    assert (c.scu, c.scp) == roles


def test_acceptor_prefers_its_scu_role_syntaxes_for_scp_only_requests() -> None:
    # C-GET style: the requestor wants to be the storage SCP; the acceptor's SCU-role list
    # decides the syntax.
    rq = request([ContextRequest(CT, (IMPLICIT, EXPLICIT), scu_role=False, scp_role=True)])
    policy = AcceptorPolicy(supported={CT: (IMPLICIT,)}, scu_roles={CT: (EXPLICIT, IMPLICIT)})
    ac, negotiated = accept(rq, policy)
    assert ac.presentation_contexts[0].transfer_syntax == EXPLICIT
    assert negotiated.find(CT, role="scu") is not None
    assert negotiated.find(CT, role="scp") is None


def test_role_item_omitted_when_none_was_proposed() -> None:
    rq = request([ContextRequest(CT), ContextRequest(MR)])
    ac, _ = accept(rq, AcceptorPolicy(supported={CT: (EXPLICIT,)}, scu_roles={MR: (EXPLICIT,)}))
    assert roles_in(ac) == {}


# -- whole-association rejection (PS3.8 Table 9-21) ------------------------------------------


def test_rejection_constants_match_table_9_21() -> None:
    P, T = RejectResult.REJECTED_PERMANENT, RejectResult.REJECTED_TRANSIENT
    user = RejectSource.SERVICE_USER
    acse = RejectSource.SERVICE_PROVIDER_ACSE
    presentation = RejectSource.SERVICE_PROVIDER_PRESENTATION
    assert (CALLED_AE_NOT_RECOGNIZED.result, CALLED_AE_NOT_RECOGNIZED.source) == (P, user)
    assert CALLED_AE_NOT_RECOGNIZED.reason == 7
    assert (CALLING_AE_NOT_RECOGNIZED.result, CALLING_AE_NOT_RECOGNIZED.source) == (P, user)
    assert CALLING_AE_NOT_RECOGNIZED.reason == 3
    assert (NO_REASON_GIVEN.source, NO_REASON_GIVEN.reason) == (user, 1)
    assert (APPLICATION_CONTEXT_NOT_SUPPORTED.source, APPLICATION_CONTEXT_NOT_SUPPORTED.reason) == (
        user,
        2,
    )
    assert Rejection(P, acse, 2) == PROTOCOL_VERSION_NOT_SUPPORTED
    assert Rejection(T, presentation, 2) == LOCAL_LIMIT_EXCEEDED
    rj = LOCAL_LIMIT_EXCEEDED.pdu()
    # PS3.8 Table 9-21: bytes 8, 9, 10 are result, source, reason.
    assert rj.encode()[7:10] == bytes((2, 3, 2))
    assert decode_pdu(rj.encode()) == rj


@pytest.mark.parametrize(
    ("rejection", "words"),
    [
        (CALLED_AE_NOT_RECOGNIZED, ("permanent", "service-user", "called-AE-title-not-recognized")),
        (
            CALLING_AE_NOT_RECOGNIZED,
            ("permanent", "service-user", "calling-AE-title-not-recognized"),
        ),
        (LOCAL_LIMIT_EXCEEDED, ("transient", "Presentation", "local-limit-exceeded")),
        (PROTOCOL_VERSION_NOT_SUPPORTED, ("permanent", "ACSE", "protocol-version-not-supported")),
        (
            APPLICATION_CONTEXT_NOT_SUPPORTED,
            ("permanent", "service-user", "application-context-name-not-supported"),
        ),
    ],
)
def test_rejections_read_as_words(rejection: Rejection, words: tuple[str, ...]) -> None:
    rj = rejection.pdu()
    message = str(AssociationRejected(rj.result, rj.source, rj.reason))
    for word in words:
        assert word in message


def test_called_ae_checked_only_when_configured() -> None:
    rq = request([ContextRequest(VERIFICATION)], called="SOMEONE")
    supported = {VERIFICATION: (EXPLICIT,)}
    assert negotiate(rq, AcceptorPolicy(supported, ae_title="ME")) == CALLED_AE_NOT_RECOGNIZED
    assert not isinstance(negotiate(rq, AcceptorPolicy(supported)), Rejection)
    # PS3.8 9.3.2: trailing spaces in an AE title are padding.
    padded = replace(rq, called_ae_title="ME  ")
    assert not isinstance(negotiate(padded, AcceptorPolicy(supported, ae_title="ME")), Rejection)


def test_calling_ae_allow_list() -> None:
    supported = {VERIFICATION: (EXPLICIT,)}
    policy = AcceptorPolicy(supported, allowed_calling=frozenset({"FRIEND"}))
    stranger = request([ContextRequest(VERIFICATION)], calling="STRANGER")
    friend = request([ContextRequest(VERIFICATION)], calling="FRIEND")
    assert negotiate(stranger, policy) == CALLING_AE_NOT_RECOGNIZED
    assert not isinstance(negotiate(friend, policy), Rejection)


def test_called_ae_is_checked_before_calling_ae() -> None:
    rq = request([ContextRequest(VERIFICATION)], calling="STRANGER", called="WRONG")
    policy = AcceptorPolicy(
        {VERIFICATION: (EXPLICIT,)}, ae_title="ME", allowed_calling=frozenset({"FRIEND"})
    )
    assert negotiate(rq, policy) == CALLED_AE_NOT_RECOGNIZED


def test_protocol_version_and_application_context() -> None:
    rq = request([ContextRequest(VERIFICATION)])
    policy = AcceptorPolicy({VERIFICATION: (EXPLICIT,)})
    # PS3.8 9.3.2: bit 0 (version 1) must be set; other bits may be too.
    assert negotiate(replace(rq, protocol_version=2), policy) == PROTOCOL_VERSION_NOT_SUPPORTED
    assert not isinstance(negotiate(replace(rq, protocol_version=3), policy), Rejection)
    other = replace(rq, application_context_name="1.2.3.4")
    assert negotiate(other, policy) == APPLICATION_CONTEXT_NOT_SUPPORTED


# -- asynchronous operations window (PS3.7 D.3.3.3) ------------------------------------------


def test_no_window_item_means_synchronous() -> None:
    rq = request([ContextRequest(VERIFICATION)])
    ac, at_acceptor = accept(rq, AcceptorPolicy({VERIFICATION: (EXPLICIT,)}, async_window=(8, 8)))
    # "If this negotiation is not present in the A-ASSOCIATE indication it shall be omitted
    # in the A-ASSOCIATE response."
    assert ac.user_information is not None and ac.user_information.async_ops_window is None
    assert (at_acceptor.max_invoked, at_acceptor.max_performed) == (1, 1)
    at_requestor = requestor_result(rq, ac)
    assert (at_requestor.max_invoked, at_requestor.max_performed) == (1, 1)


def test_window_not_answered_by_an_acceptor_without_support() -> None:
    rq = request([ContextRequest(VERIFICATION)], async_window=(5, 3))
    ac, at_acceptor = accept(rq, AcceptorPolicy({VERIFICATION: (EXPLICIT,)}))
    assert ac.user_information is not None and ac.user_information.async_ops_window is None
    assert (at_acceptor.max_invoked, at_acceptor.max_performed) == (1, 1)
    # No window in the AC: the requestor falls back to synchronous operations.
    at_requestor = requestor_result(rq, ac)
    assert (at_requestor.max_invoked, at_requestor.max_performed) == (1, 1)


# Columns: requestor's (invoked, performed); acceptor's own (invoked, performed); the AC's
# sub-item (from the requestor's point of view, PS3.7 D.3.3.3.2); requestor's limits;
# acceptor's limits. 0 = unlimited; the acceptor may only lower what was offered.
WINDOW_TABLE = [
    ((0, 0), (0, 0), (0, 0), (0, 0), (0, 0)),
    ((0, 0), (2, 4), (4, 2), (4, 2), (2, 4)),
    ((3, 0), (0, 0), (3, 0), (3, 0), (0, 3)),
    ((3, 5), (10, 1), (1, 5), (1, 5), (5, 1)),
    ((3, 5), (0, 0), (3, 5), (3, 5), (5, 3)),
    ((1, 1), (0, 0), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize(("offered", "ours", "answer", "requestor", "acceptor"), WINDOW_TABLE)
def test_window_arithmetic(
    offered: tuple[int, int],
    ours: tuple[int, int],
    answer: tuple[int, int],
    requestor: tuple[int, int],
    acceptor: tuple[int, int],
) -> None:
    rq = request([ContextRequest(VERIFICATION)], async_window=offered)
    ac, at_acceptor = accept(rq, AcceptorPolicy({VERIFICATION: (EXPLICIT,)}, async_window=ours))
    assert ac.user_information is not None
    assert ac.user_information.async_ops_window == AsyncOperationsWindow(*answer)
    assert (at_acceptor.max_invoked, at_acceptor.max_performed) == acceptor
    at_requestor = requestor_result(rq, ac)
    assert (at_requestor.max_invoked, at_requestor.max_performed) == requestor


def test_requestor_keeps_its_own_limit_when_acceptor_says_unlimited() -> None:
    rq = request([ContextRequest(VERIFICATION)], async_window=(4, 2))
    ac = AAssociateAC(
        "CALLED",
        "CALLING",
        (PresentationContextAC(1, ContextResult.ACCEPTANCE, EXPLICIT),),
        UserInformation((MaximumLength(0), AsyncOperationsWindow(0, 0))),
    )
    n = requestor_result(rq, ac)
    assert (n.max_invoked, n.max_performed) == (4, 2)
    assert n.peer_max_pdu == 0 and n.local_max_pdu == 16384


# -- user identity (PS3.7 D.3.3.7) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("positive", "response", "expected"),
    [
        (True, b"token", UserIdentityAC(b"token")),
        (True, b"", UserIdentityAC(b"")),
        (True, None, None),
        (False, b"token", None),
        (False, None, None),
    ],
)
def test_user_identity_response_only_when_positive_response_requested(
    positive: bool, response: bytes | None, expected: UserIdentityAC | None
) -> None:
    identity = UserIdentityRQ(2, b"alice", b"secret", positive_response_requested=positive)
    rq = request([ContextRequest(VERIFICATION)], user_identity=identity)
    ac, at_acceptor = accept(
        rq, AcceptorPolicy({VERIFICATION: (EXPLICIT,)}), user_identity_response=response
    )
    assert ac.user_information is not None
    assert ac.user_information.user_identity_response == expected
    assert at_acceptor.user_identity == identity
    assert requestor_result(rq, ac).user_identity_response == expected


# -- the requestor's reading of the AC --------------------------------------------------------


def test_requestor_result_limits_and_unanswered_contexts() -> None:
    rq = request([ContextRequest(VERIFICATION), ContextRequest(CT), ContextRequest(MR)])
    ac = AAssociateAC(
        "CALLED",
        "CALLING",
        (
            PresentationContextAC(1, ContextResult.ACCEPTANCE, IMPLICIT),
            # accepted in a syntax we never proposed: not usable (PS3.8 9.3.3.2)
            PresentationContextAC(3, ContextResult.ACCEPTANCE, BIG),
            # an answer to a context ID we did not propose: ignored
            PresentationContextAC(7, ContextResult.ACCEPTANCE, EXPLICIT),
        ),
        UserInformation((MaximumLength(32768), ImplementationClassUID("1.2.3"))),
    )
    n = requestor_result(rq, ac)
    assert [c.context_id for c in n.contexts] == [1, 3, 5]
    assert n.contexts[0].accepted and n.contexts[0].transfer_syntax == IMPLICIT
    assert n.contexts[0].scu and not n.contexts[0].scp
    assert not n.contexts[1].accepted and n.contexts[1].transfer_syntax is None
    assert n.contexts[2].result == ContextResult.NO_REASON  # never answered
    assert n.peer_max_pdu == 32768 and n.local_max_pdu == 16384
    assert n.peer_implementation_class_uid == "1.2.3"
    assert n.find(VERIFICATION) is n.contexts[0]
    assert n.find(CT) is None


def test_find_prefers_the_requested_transfer_syntax() -> None:
    rq = request([ContextRequest(CT, (EXPLICIT,)), ContextRequest(CT, (IMPLICIT,))])
    ac, _ = accept(rq, AcceptorPolicy({CT: (EXPLICIT, IMPLICIT)}))
    n = requestor_result(rq, ac)
    found = n.find(CT, transfer_syntax=IMPLICIT)
    assert found is not None and found.context_id == 3
    fallback = n.find(CT, transfer_syntax=BIG)
    assert fallback is not None and fallback.context_id == 1
    assert n.by_id(3) is found and n.by_id(9) is None
