"""Hypothesis strategies for every PDU and item of :mod:`aiodimse.pdu`.

Public so that users can fuzz their own code, or other implementations, with them::

    from hypothesis import given
    from aiodimse.testing import strategies as st_dicom

    @given(st_dicom.pdus())
    def test_roundtrip(pdu): ...

``pdus()`` and the item strategies generate well-formed values (``decode(encode(x)) == x``);
``raw_pdus()`` and ``mutated_pdu_bytes()`` generate deliberately broken wire data.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from ..enums import (
    AbortReason,
    AbortSource,
    ContextResult,
    RejectResult,
    RejectSource,
    UserIdentityType,
)
from ..pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsyncOperationsWindow,
    ImplementationClassUID,
    ImplementationVersionName,
    MaximumLength,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationDataValue,
    RawItem,
    RawPDU,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
    UserItem,
)

__all__ = [
    "ae_titles",
    "context_ids",
    "mutated_pdu_bytes",
    "pdus",
    "presentation_contexts_ac",
    "presentation_contexts_rq",
    "raw_items",
    "raw_pdus",
    "uids",
    "user_information",
    "user_items",
]

_AE_CHARS = "".join(c for c in string.printable if c not in "\\\t\n\r\x0b\x0c")


def ae_titles() -> st.SearchStrategy[str]:
    """AE titles as they decode: 1-16 default-repertoire characters, no trailing space."""
    return (
        st.text(alphabet=_AE_CHARS, min_size=1, max_size=16)
        .map(lambda s: s.rstrip(" "))
        .filter(bool)
    )


def _uid_component() -> st.SearchStrategy[str]:
    return st.one_of(st.just("0"), st.integers(1, 10**12).map(str))


def uids() -> st.SearchStrategy[str]:
    """Valid UIDs (PS3.5 9.1): digit components without leading zeros, at most 64 chars."""
    return (
        st.lists(_uid_component(), min_size=2, max_size=10)
        .map(".".join)
        .filter(lambda u: len(u) <= 64)
    )


def context_ids() -> st.SearchStrategy[int]:
    """Presentation context IDs: odd integers 1-255 (PS3.8 9.3.2.2)."""
    return st.integers(0, 127).map(lambda n: 2 * n + 1)


def _u16() -> st.SearchStrategy[int]:
    return st.integers(0, 0xFFFF)


def _short_bytes(max_size: int = 64) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


def user_items() -> st.SearchStrategy[UserItem]:
    """Any one user-information sub-item (PS3.7 Annex D.3.3), unknown ones included."""
    return st.one_of(
        st.builds(MaximumLength, st.integers(0, 0xFFFFFFFF)),
        st.builds(ImplementationClassUID, uids()),
        st.builds(
            ImplementationVersionName,
            st.text(
                alphabet=string.ascii_uppercase + string.digits + "_.", min_size=1, max_size=16
            ),
        ),
        st.builds(AsyncOperationsWindow, _u16(), _u16()),
        st.builds(RoleSelection, uids(), st.booleans(), st.booleans()),
        st.builds(SOPClassExtendedNegotiation, uids(), _short_bytes()),
        st.builds(
            SOPClassCommonExtendedNegotiation,
            uids(),
            uids(),
            st.lists(uids(), max_size=3).map(tuple),
            st.just(0),
        ),
        st.builds(
            UserIdentityRQ,
            st.one_of(st.sampled_from(list(UserIdentityType)).map(int), st.integers(6, 255)),
            _short_bytes(),
            _short_bytes(),
            st.booleans(),
        ),
        st.builds(UserIdentityAC, _short_bytes()),
        raw_items(unknown_only=True),
    )


def raw_items(unknown_only: bool = False) -> st.SearchStrategy[RawItem]:
    """Unchecked items. With ``unknown_only`` the types are ones PS3.7 does not define, so
    they decode back to the same RawItem; otherwise anything goes (for fuzzing)."""
    if unknown_only:
        return st.builds(
            RawItem,
            st.integers(0x5A, 0xFF),
            _short_bytes(),
        )
    return st.builds(
        RawItem,
        st.integers(0, 0xFF),
        _short_bytes(),
        st.integers(0, 0xFF),
        st.one_of(st.none(), _u16()),
    )


def user_information() -> st.SearchStrategy[UserInformation]:
    """A User Information item with a Maximum Length first, as PS3.8 requires, then others."""
    return st.builds(
        lambda first, rest: UserInformation((first, *rest)),
        st.builds(MaximumLength, st.integers(0, 0xFFFFFFFF)),
        st.lists(user_items(), max_size=6),
    )


def presentation_contexts_rq() -> st.SearchStrategy[PresentationContextRQ]:
    return st.builds(
        PresentationContextRQ,
        context_ids(),
        uids(),
        st.lists(uids(), min_size=1, max_size=4).map(tuple),
    )


def presentation_contexts_ac() -> st.SearchStrategy[PresentationContextAC]:
    def build(cid: int, result: ContextResult, ts: str, drop: bool) -> PresentationContextAC:
        if drop and result != ContextResult.ACCEPTANCE:
            return PresentationContextAC(cid, result, None)
        return PresentationContextAC(cid, result, ts)

    return st.builds(
        build, context_ids(), st.sampled_from(list(ContextResult)), uids(), st.booleans()
    )


def _rq() -> st.SearchStrategy[AAssociateRQ]:
    return st.builds(
        AAssociateRQ,
        ae_titles(),
        ae_titles(),
        st.lists(presentation_contexts_rq(), min_size=1, max_size=8).map(tuple),
        st.one_of(st.none(), user_information()),
        st.one_of(st.just("1.2.840.10008.3.1.1.1"), uids()),
        st.integers(0, 0xFFFF),
    )


def _ac() -> st.SearchStrategy[AAssociateAC]:
    return st.builds(
        AAssociateAC,
        ae_titles(),
        ae_titles(),
        st.lists(presentation_contexts_ac(), max_size=8).map(tuple),
        st.one_of(st.none(), user_information()),
        st.one_of(st.just("1.2.840.10008.3.1.1.1"), uids()),
        st.integers(0, 0xFFFF),
    )


def _pdv() -> st.SearchStrategy[PresentationDataValue]:
    return st.builds(
        PresentationDataValue, context_ids(), st.integers(0, 3), st.binary(max_size=256)
    )


def pdus() -> st.SearchStrategy[PDU]:
    """Any well-formed PDU of the seven PS3.8 types."""
    return st.one_of(
        _rq(),
        _ac(),
        st.builds(
            AAssociateRJ,
            st.sampled_from(list(RejectResult)),
            st.sampled_from(list(RejectSource)),
            st.integers(0, 255),
        ),
        st.builds(PDataTF, st.lists(_pdv(), min_size=1, max_size=5).map(tuple)),
        st.just(AReleaseRQ()),
        st.just(AReleaseRP()),
        st.builds(AAbort, st.sampled_from(list(AbortSource)), st.sampled_from(list(AbortReason))),
    )


def raw_pdus() -> st.SearchStrategy[RawPDU]:
    """Unchecked PDUs: any type byte (defined or not), reserved byte, declared length."""
    return st.builds(
        RawPDU,
        st.integers(0, 0xFF),
        st.binary(max_size=512),
        st.integers(0, 0xFF),
        st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)),
    )


@st.composite
def mutated_pdu_bytes(draw: st.DrawFn) -> bytes:
    """A well-formed PDU's bytes with random damage: flipped, inserted, deleted or truncated
    bytes. Most results are malformed; a decoder must answer each with its own error."""
    data = bytearray(draw(pdus()).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            del data[i:]
    return bytes(data)
