"""Tests of DIMSE status names and categories (PS3.7 Annex C, PS3.4 B.2.3, C.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodimse.dimse.status import (
    SERVICES,
    StatusCategory,
    is_cancel,
    is_failure,
    is_final,
    is_pending,
    is_success,
    is_warning,
    status_category,
    status_info,
)
from aiodimse.errors import StatusError, check_status

S, P, W, F, C = (
    StatusCategory.SUCCESS,
    StatusCategory.PENDING,
    StatusCategory.WARNING,
    StatusCategory.FAILURE,
    StatusCategory.CANCEL,
)


@pytest.mark.parametrize(
    ("code", "service", "category", "words"),
    [
        # PS3.7 Annex C, general
        (0x0000, None, S, "success"),
        (0x0001, None, W, "optional attributes"),
        (0x0107, None, W, "attribute list error"),
        (0x0116, None, W, "out of range"),
        (0x0105, None, F, "no such attribute"),
        (0x0106, None, F, "invalid attribute value"),
        (0x0110, None, F, "processing failure"),
        (0x0112, None, F, "no such sop instance"),
        (0x0117, None, F, "invalid object instance"),
        (0x0118, None, F, "no such sop class"),
        (0x0119, None, F, "class-instance conflict"),
        (0x0122, None, F, "sop class not supported"),
        (0x0124, None, F, "not authorized"),
        (0x0210, None, F, "duplicate invocation"),
        (0x0211, None, F, "unrecognized operation"),
        (0x0212, None, F, "mistyped argument"),
        (0x0213, None, F, "resource limitation"),
        (0xFE00, None, C, "cancel"),
        # PS3.4 Table B.2-1, C-STORE
        (0xA700, "C-STORE", F, "out of resources"),
        (0xA7C3, "C-STORE", F, "out of resources"),
        (0xA900, "C-STORE", F, "does not match sop class"),
        (0xA9FF, "C-STORE", F, "does not match sop class"),
        (0xC000, "C-STORE", F, "cannot understand"),
        (0xCFFF, "C-STORE", F, "cannot understand"),
        (0xB000, "C-STORE", W, "coercion of data elements"),
        (0xB007, "C-STORE", W, "does not match sop class"),
        (0xB006, "C-STORE", W, "elements discarded"),
        (0x0122, "C-STORE", F, "sop class not supported"),  # falls back to PS3.7
        # PS3.4 Table C.4-1, C-FIND
        (0x0000, "C-FIND", S, "matching is complete"),
        (0xA700, "C-FIND", F, "out of resources"),
        (0xA900, "C-FIND", F, "identifier does not match sop class"),
        (0xC123, "C-FIND", F, "unable to process"),
        (0xFE00, "C-FIND", C, "cancel"),
        (0xFF00, "C-FIND", P, "matches are continuing"),
        (0xFF01, "C-FIND", P, "optional keys were not supported"),
        # PS3.4 Table C.4-2, C-MOVE
        (0xA701, "C-MOVE", F, "unable to calculate number of matches"),
        (0xA702, "C-MOVE", F, "unable to perform sub-operations"),
        (0xA801, "C-MOVE", F, "move destination unknown"),
        (0xA900, "C-MOVE", F, "identifier does not match sop class"),
        (0xC001, "C-MOVE", F, "unable to process"),
        (0xFE00, "C-MOVE", C, "cancel"),
        (0xB000, "C-MOVE", W, "one or more failures"),
        (0xFF00, "C-MOVE", P, "sub-operations are continuing"),
        (0x0000, "C-MOVE", S, "no failures"),
        # PS3.4 Table C.4-3, C-GET
        (0xA701, "C-GET", F, "unable to calculate number of matches"),
        (0xA702, "C-GET", F, "unable to perform sub-operations"),
        (0xB000, "C-GET", W, "failures or warnings"),
        (0xFF00, "C-GET", P, "sub-operations are continuing"),
        # C-ECHO: general codes only
        (0x0000, "C-ECHO", S, "success"),
        (0x0211, "C-ECHO", F, "unrecognized operation"),
    ],
)
def test_known_codes(code: int, service: str | None, category: StatusCategory, words: str) -> None:
    info = status_info(code, service)
    assert info.code == code
    assert info.category is category
    assert words in info.name.lower()


def test_service_names_take_precedence_over_general_ones() -> None:
    assert "coercion" in status_info(0xB000, "C-STORE").name.lower()
    assert "sub-operations" in status_info(0xB000, "C-MOVE").name.lower()
    assert status_info(0xC000, "C-STORE").name != status_info(0xC000, "C-FIND").name


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (0x0000, S),
        (0xFF00, P),
        (0xFF01, P),
        (0xFE00, C),
        (0x0001, W),
        (0x0107, W),
        (0x0116, W),
        (0xB123, W),
        (0xBFFF, W),
        (0xA123, F),
        (0xC9AB, F),
        (0x0150, F),
        (0x0299, F),
        (0xD000, F),
        (0x0002, F),
    ],
)
def test_unknown_codes_get_a_category_from_ps37_ranges(code: int, category: StatusCategory) -> None:
    assert status_category(code) is category
    assert status_info(code, None).category is category
    assert status_info(code, "no-such-service").category is category


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0xFFFF), st.sampled_from([None, *SERVICES]))
def test_tables_agree_with_the_ps37_categories(code: int, service: str | None) -> None:
    """Every name a table gives sits in the category PS3.7 C.1 gives its code."""
    info = status_info(code, service)
    assert info.code == code
    assert info.name
    assert info.category is status_category(code)


def test_check_status_raises_for_failure_and_cancel() -> None:
    with pytest.raises(StatusError) as caught:
        check_status(0xA801, "C-MOVE", "no such AE")
    assert caught.value.status == 0xA801
    assert "destination unknown" in caught.value.status_name.lower()
    assert "0xA801" in str(caught.value)
    assert "no such AE" in str(caught.value)
    with pytest.raises(StatusError):
        check_status(0xFE00, "C-FIND")
    with pytest.raises(StatusError):
        check_status(0xC000)
    for ok in (0x0000, 0xFF00, 0xFF01, 0xB000, 0x0107):
        check_status(ok, "C-STORE")  # success, pending and warning do not raise


def test_predicates() -> None:
    assert is_success(0) and not is_success(0xB000)
    assert is_pending(0xFF00) and is_pending(0xFF01) and not is_pending(0)
    assert is_warning(0xB007) and is_warning(0x0001) and not is_warning(0xA700)
    assert is_failure(0xA700) and is_failure(0x0122) and not is_failure(0xFE00)
    assert is_cancel(0xFE00) and not is_cancel(0xFF00)
    assert is_final(0) and is_final(0xA700) and not is_final(0xFF00)


def test_str_shows_code_category_and_name() -> None:
    assert str(status_info(0xA702, "C-GET")).startswith("0xA702 Failure: Refused")
