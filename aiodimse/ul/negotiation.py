"""Association negotiation, pure: proposals + policy -> accepted contexts, roles, limits.

Requestor side: :func:`build_request` turns what the user wants to do into an
A-ASSOCIATE-RQ, and :func:`requestor_result` reads the A-ASSOCIATE-AC against it.
Acceptor side: :func:`negotiate` answers an A-ASSOCIATE-RQ from an :class:`AcceptorPolicy`
with an A-ASSOCIATE-AC or -RJ. Both ends produce the same :class:`Negotiated` summary,
from their own point of view (which roles *we* may play on each context).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..enums import ContextResult, RejectResult, RejectSource
from ..pdu import (
    APPLICATION_CONTEXT_NAME,
    AAssociateAC,
    AAssociateRJ,
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
    UserItem,
)

__all__ = [
    "AcceptorPolicy",
    "ContextRequest",
    "Negotiated",
    "NegotiatedContext",
    "Rejection",
    "build_request",
    "negotiate",
    "requestor_result",
]

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
#: What a requestor proposes unless told otherwise; implicit VR LE is the one every SCP must
#: accept (PS3.5 10.1), explicit VR LE the one most prefer.
DEFAULT_TRANSFER_SYNTAXES: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)

#: PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255, so 128 at most.
MAX_CONTEXTS = 128


@dataclass(frozen=True, slots=True)
class ContextRequest:
    """One abstract syntax a requestor proposes, with its transfer syntaxes and, optionally,
    the roles it wants to play (PS3.7 D.3.3.4). ``scu_role=True, scp_role=False`` is the
    default and sends no role selection sub-item; C-GET needs ``scp_role=True`` for the
    storage classes it expects to receive."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    scu_role: bool = True
    scp_role: bool = False

    @property
    def proposes_roles(self) -> bool:
        return not (self.scu_role and not self.scp_role)


@dataclass(frozen=True, slots=True)
class NegotiatedContext:
    """The outcome for one presentation context, seen from this side of the association.

    ``scu`` means *we* may send requests on it; ``scp`` means *we* may receive them.
    """

    context_id: int
    abstract_syntax: str
    result: ContextResult
    transfer_syntax: str | None
    scu: bool
    scp: bool
    proposed_transfer_syntaxes: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.result == ContextResult.ACCEPTANCE


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What both sides agreed, from this side's point of view."""

    contexts: tuple[NegotiatedContext, ...]
    #: The peer's Maximum Length: the largest P-DATA-TF variable field we may send (0 = any).
    peer_max_pdu: int
    #: Our own Maximum Length as advertised.
    local_max_pdu: int
    #: Operations we may have outstanding as invoker, and as performer (0 = unlimited).
    max_invoked: int = 1
    max_performed: int = 1
    peer_implementation_class_uid: str | None = None
    peer_implementation_version_name: str | None = None
    user_identity: UserIdentityRQ | None = None
    user_identity_response: UserIdentityAC | None = None

    @property
    def accepted(self) -> tuple[NegotiatedContext, ...]:
        return tuple(c for c in self.contexts if c.accepted)

    def by_id(self, context_id: int) -> NegotiatedContext | None:
        for c in self.contexts:
            if c.context_id == context_id:
                return c
        return None

    def find(
        self,
        abstract_syntax: str,
        *,
        transfer_syntax: str | None = None,
        role: str = "scu",
    ) -> NegotiatedContext | None:
        """The first accepted context for an abstract syntax on which we may play ``role``,
        preferring one whose transfer syntax is ``transfer_syntax`` when given."""
        found: NegotiatedContext | None = None
        for c in self.contexts:
            if not c.accepted or c.abstract_syntax != abstract_syntax:
                continue
            if (role == "scu" and not c.scu) or (role == "scp" and not c.scp):
                continue
            if transfer_syntax is None or c.transfer_syntax == transfer_syntax:
                return c
            if found is None:
                found = c
        return found

    def describe(self) -> str:
        """A multi-line dump of the negotiation, like DCMTK's ``-d`` output."""
        lines = [
            f"  our max PDU {self.local_max_pdu or 'unlimited'},"
            f" peer max PDU {self.peer_max_pdu or 'unlimited'},"
            f" async window invoked {self.max_invoked or 'unlimited'}"
            f" / performed {self.max_performed or 'unlimited'}",
            f"  peer implementation {self.peer_implementation_class_uid}"
            f" {self.peer_implementation_version_name or ''}".rstrip(),
        ]
        for c in self.contexts:
            roles = "/".join(r for r, on in (("SCU", c.scu), ("SCP", c.scp)) if on) or "none"
            outcome = c.result.name.lower().replace("_", "-")
            lines.append(
                f"  context {c.context_id:3d} {c.abstract_syntax} -> {outcome}"
                + (f", {c.transfer_syntax}" if c.accepted else "")
                + f", our roles {roles}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# requestor


def build_request(
    calling_ae: str,
    called_ae: str,
    contexts: Sequence[ContextRequest],
    *,
    max_pdu: int,
    implementation_class_uid: str,
    implementation_version_name: str | None = None,
    async_window: tuple[int, int] | None = None,
    user_identity: UserIdentityRQ | None = None,
    extra_items: Iterable[UserItem] = (),
) -> AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing ``contexts`` with IDs 1, 3, 5...

    The Asynchronous Operations Window sub-item is sent only when ``async_window`` is given:
    some SCPs drop associations that carry it.
    """
    if not contexts:
        raise ValueError("an association needs at least one presentation context")
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts requested; PS3.8 allows {MAX_CONTEXTS}"
        )
    rq_contexts = tuple(
        PresentationContextRQ(2 * i + 1, c.abstract_syntax, tuple(c.transfer_syntaxes))
        for i, c in enumerate(contexts)
    )
    items: list[UserItem] = [
        MaximumLength(max_pdu),
        ImplementationClassUID(implementation_class_uid),
    ]
    if async_window is not None:
        items.append(AsyncOperationsWindow(*async_window))
    # PS3.7 D.3.3.4: at most one role selection sub-item per SOP class.
    seen_roles: dict[str, RoleSelection] = {}
    for c in contexts:
        if not c.proposes_roles:
            continue
        previous = seen_roles.get(c.abstract_syntax)
        item = RoleSelection(c.abstract_syntax, c.scu_role, c.scp_role)
        if previous is not None and previous != item:
            raise ValueError(f"conflicting roles requested for {c.abstract_syntax}")
        seen_roles[c.abstract_syntax] = item
    items.extend(seen_roles.values())
    if implementation_version_name:
        items.append(ImplementationVersionName(implementation_version_name))
    items.extend(extra_items)
    if user_identity is not None:
        items.append(user_identity)
    return AAssociateRQ(
        called_ae_title=called_ae,
        calling_ae_title=calling_ae,
        presentation_contexts=rq_contexts,
        user_information=UserInformation(tuple(items)),
        application_context_name=APPLICATION_CONTEXT_NAME,
    )


def _window(ui: UserInformation | None) -> tuple[int, int] | None:
    w = ui.async_ops_window if ui is not None else None
    return None if w is None else (w.max_operations_invoked, w.max_operations_performed)


def requestor_result(rq: AAssociateRQ, ac: AAssociateAC) -> Negotiated:
    """Combine our request with the peer's accept: contexts, roles, limits (our view)."""
    proposed = {c.context_id: c for c in rq.presentation_contexts}
    rq_ui = rq.user_information
    ac_ui = ac.user_information
    asked_roles = {r.sop_class_uid: r for r in (rq_ui.role_selections if rq_ui else ())}
    given_roles = {r.sop_class_uid: r for r in (ac_ui.role_selections if ac_ui else ())}
    out: list[NegotiatedContext] = []
    for c in ac.presentation_contexts:
        p = proposed.get(c.context_id)
        if p is None:
            continue  # an answer to nothing we asked: ignore it
        scu, scp = _requestor_roles(asked_roles.get(p.abstract_syntax), given_roles)
        accepted = c.result == ContextResult.ACCEPTANCE
        ts = c.transfer_syntax if accepted else None
        if accepted and ts not in p.transfer_syntaxes:
            # PS3.8 9.3.3.2: the accepted transfer syntax must be one we proposed.
            accepted, ts = False, None
        out.append(
            NegotiatedContext(
                c.context_id,
                p.abstract_syntax,
                c.result if accepted else _not_accepted(c.result),
                ts,
                scu and accepted,
                scp and accepted,
                p.transfer_syntaxes,
            )
        )
    # Contexts the acceptor did not answer at all count as rejected (no reason).
    answered = {c.context_id for c in out}
    for cid, p in proposed.items():
        if cid not in answered:
            out.append(
                NegotiatedContext(
                    cid,
                    p.abstract_syntax,
                    ContextResult.NO_REASON,
                    None,
                    False,
                    False,
                    p.transfer_syntaxes,
                )
            )
    out.sort(key=lambda c: c.context_id)
    our_window = _window(rq_ui)
    their_window = _window(ac_ui)
    invoked, performed = _requestor_window(our_window, their_window)
    local_max = rq_ui.max_length if rq_ui and rq_ui.max_length is not None else 0
    return Negotiated(
        contexts=tuple(out),
        peer_max_pdu=(ac_ui.max_length or 0) if ac_ui else 0,
        local_max_pdu=local_max,
        max_invoked=invoked,
        max_performed=performed,
        peer_implementation_class_uid=ac_ui.implementation_class_uid if ac_ui else None,
        peer_implementation_version_name=ac_ui.implementation_version_name if ac_ui else None,
        user_identity=rq_ui.user_identity if rq_ui else None,
        user_identity_response=ac_ui.user_identity_response if ac_ui else None,
    )


def _not_accepted(result: ContextResult) -> ContextResult:
    return ContextResult.NO_REASON if result == ContextResult.ACCEPTANCE else result


def _requestor_roles(
    asked: RoleSelection | None, given: Mapping[str, RoleSelection]
) -> tuple[bool, bool]:
    """PS3.7 D.3.3.4: the requestor's roles after the acceptor's answer."""
    if asked is None:
        return True, False
    answer = given.get(asked.sop_class_uid)
    if answer is None:
        # Not returned: default roles, requestor SCU and acceptor SCP.
        return True, False
    # A role not proposed is never granted, whatever the acceptor returned.
    return asked.scu_role and answer.scu_role, asked.scp_role and answer.scp_role


def _requestor_window(
    ours: tuple[int, int] | None, theirs: tuple[int, int] | None
) -> tuple[int, int]:
    """PS3.7 D.3.3.3: without the sub-item on both sides operations are synchronous (1, 1).

    Both PDUs state the window from the requestor's point of view: *invoked* = outstanding
    operations the requestor may invoke, *performed* = those it may perform; 0 = unlimited.
    The acceptor may only lower what was offered.
    """
    if ours is None or theirs is None:
        return 1, 1
    return _min_window(ours[0], theirs[0]), _min_window(ours[1], theirs[1])


def _min_window(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


# ---------------------------------------------------------------------------------------
# acceptor


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an acceptor refuses a whole association (PS3.8 Table 9-21)."""

    result: RejectResult
    source: RejectSource
    reason: int

    def pdu(self) -> AAssociateRJ:
        return AAssociateRJ(self.result, self.source, self.reason)


CALLED_AE_NOT_RECOGNIZED = Rejection(RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 7)
CALLING_AE_NOT_RECOGNIZED = Rejection(RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 3)
NO_REASON_GIVEN = Rejection(RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 1)
APPLICATION_CONTEXT_NOT_SUPPORTED = Rejection(
    RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_USER, 2
)
PROTOCOL_VERSION_NOT_SUPPORTED = Rejection(
    RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, 2
)
LOCAL_LIMIT_EXCEEDED = Rejection(
    RejectResult.REJECTED_TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 2
)
TEMPORARY_CONGESTION = Rejection(
    RejectResult.REJECTED_TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 1
)
#: PS3.7 D.3.3.7.3: an authorization failure is rejected-permanent (retrying with the same
#: identity cannot succeed), source "DICOM UL service-provider (ACSE related function)",
#: whose only fitting reason in PS3.8 Table 9-21 is no-reason-given.
USER_IDENTITY_REJECTED = Rejection(
    RejectResult.REJECTED_PERMANENT, RejectSource.SERVICE_PROVIDER_ACSE, 1
)


@dataclass(frozen=True)
class AcceptorPolicy:
    """What an acceptor supports.

    ``supported`` maps each abstract syntax we serve as SCP to our transfer syntaxes in order
    of preference; ``scu_roles`` lists the abstract syntaxes for which we agree to be the SCU
    when the requestor proposes the SCP role (C-GET sub-operations); ``ae_title`` (None =
    answer to any called AE title) and ``allowed_calling`` (None = anyone) check the titles.
    """

    supported: Mapping[str, Sequence[str]]
    ae_title: str | None = None
    allowed_calling: frozenset[str] | None = None
    scu_roles: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_pdu: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str | None = None
    #: (invoked, performed) we allow, or None to never answer the window sub-item.
    async_window: tuple[int, int] | None = None


def _choose_ts(proposed: Sequence[str], preference: Sequence[str]) -> str | None:
    offered = set(proposed)
    for ts in preference:
        if ts in offered:
            return ts
    return None


def negotiate(
    rq: AAssociateRQ,
    policy: AcceptorPolicy,
    *,
    user_identity_response: bytes | None = None,
) -> tuple[AAssociateAC, Negotiated] | Rejection:
    """Answer an A-ASSOCIATE-RQ: a Rejection of the whole association, or the AC and the
    negotiated outcome (from the acceptor's point of view).

    Per context: the first of *our* transfer syntaxes (in our order) that the requestor
    offered; abstract syntax not supported / transfer syntaxes not supported otherwise.
    Role selection is answered per PS3.7 D.3.3.4: a role not proposed is never granted.
    """
    if rq.protocol_version & 0x0001 == 0:
        # PS3.8 9.3.2: bit 0 (version 1) must be set.
        return PROTOCOL_VERSION_NOT_SUPPORTED
    if rq.application_context_name != APPLICATION_CONTEXT_NAME:
        return APPLICATION_CONTEXT_NOT_SUPPORTED
    if policy.ae_title is not None and rq.called_ae_title.strip() != policy.ae_title.strip():
        return CALLED_AE_NOT_RECOGNIZED
    if policy.allowed_calling is not None and rq.calling_ae_title.strip() not in {
        a.strip() for a in policy.allowed_calling
    }:
        return CALLING_AE_NOT_RECOGNIZED
    if not rq.presentation_contexts:
        # PS3.8 Table 9-11: one or more Presentation Context Items; without any there is
        # nothing to accept.
        return NO_REASON_GIVEN

    ui = rq.user_information
    asked_roles = {r.sop_class_uid: r for r in (ui.role_selections if ui else ())}
    answered_roles: dict[str, RoleSelection] = {}
    ac_contexts: list[PresentationContextAC] = []
    outcome: list[NegotiatedContext] = []
    seen_ids: set[int] = set()
    for c in rq.presentation_contexts:
        result, ts = ContextResult.ACCEPTANCE, None
        asked = asked_roles.get(c.abstract_syntax)
        req_scu, req_scp = (asked.scu_role, asked.scp_role) if asked else (True, False)
        # Roles the requestor may play = what it asked for and we allow.
        serve_as_scp = policy.supported.get(c.abstract_syntax)
        serve_as_scu = policy.scu_roles.get(c.abstract_syntax)
        grant_scu = req_scu and serve_as_scp is not None
        grant_scp = req_scp and serve_as_scu is not None
        if c.context_id in seen_ids or c.context_id % 2 == 0:
            result = ContextResult.NO_REASON
        elif serve_as_scp is None and serve_as_scu is None:
            result = ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
        elif not (grant_scu or grant_scp):
            result = ContextResult.USER_REJECTION
        else:
            preference: list[str] = []
            if grant_scu and serve_as_scp is not None:
                preference.extend(serve_as_scp)
            if grant_scp and serve_as_scu is not None:
                preference.extend(t for t in serve_as_scu if t not in preference)
            ts = _choose_ts(c.transfer_syntaxes, preference)
            if ts is None:
                result = ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
        seen_ids.add(c.context_id)
        accepted = result == ContextResult.ACCEPTANCE
        if asked is not None and accepted:
            answered_roles[c.abstract_syntax] = RoleSelection(
                c.abstract_syntax, grant_scu, grant_scp
            )
        # PS3.8 9.3.3.2: on a rejected context the transfer syntax is not significant;
        # send the first proposed one, as most implementations do.
        ac_contexts.append(
            PresentationContextAC(
                c.context_id, result, ts if accepted else (c.transfer_syntaxes or ("",))[0]
            )
        )
        outcome.append(
            NegotiatedContext(
                c.context_id,
                c.abstract_syntax,
                result,
                ts,
                scu=accepted and grant_scp,  # requestor as SCP -> we are the SCU
                scp=accepted and grant_scu,
                proposed_transfer_syntaxes=c.transfer_syntaxes,
            )
        )
    # A role-selection item for a class whose every context was rejected still gets an answer
    # ("not granted") so that the requestor knows the item was understood.
    for uid in asked_roles:
        if uid not in answered_roles:
            answered_roles[uid] = RoleSelection(uid, False, False)

    items: list[UserItem] = [MaximumLength(policy.max_pdu)]
    if policy.implementation_class_uid:
        items.append(ImplementationClassUID(policy.implementation_class_uid))
    their_window = _window(ui)
    invoked = performed = 1
    if their_window is not None and policy.async_window is not None:
        # PS3.7 D.3.3.3: the acceptor answers with what it allows; from our side the
        # requestor's invoked operations are the ones we perform, and vice versa.
        allowed_invoked = _min_window(their_window[0], policy.async_window[1])
        allowed_performed = _min_window(their_window[1], policy.async_window[0])
        items.append(AsyncOperationsWindow(allowed_invoked, allowed_performed))
        invoked, performed = allowed_performed, allowed_invoked
    items.extend(answered_roles.values())
    if policy.implementation_version_name:
        items.append(ImplementationVersionName(policy.implementation_version_name))
    identity = ui.user_identity if ui else None
    identity_ac: UserIdentityAC | None = None
    if (
        identity is not None
        and identity.positive_response_requested
        and (user_identity_response is not None)
    ):
        identity_ac = UserIdentityAC(user_identity_response)
        items.append(identity_ac)
    ac = AAssociateAC(
        called_ae_title=rq.called_ae_title,
        calling_ae_title=rq.calling_ae_title,
        presentation_contexts=tuple(ac_contexts),
        user_information=UserInformation(tuple(items)),
        application_context_name=APPLICATION_CONTEXT_NAME,
    )
    negotiated = Negotiated(
        contexts=tuple(outcome),
        peer_max_pdu=(ui.max_length or 0) if ui else 0,
        local_max_pdu=policy.max_pdu,
        max_invoked=invoked,
        max_performed=performed,
        peer_implementation_class_uid=ui.implementation_class_uid if ui else None,
        peer_implementation_version_name=ui.implementation_version_name if ui else None,
        user_identity=identity,
        user_identity_response=identity_ac,
    )
    return ac, negotiated
