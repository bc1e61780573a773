"""The loopback-only rule of the fuzzer and the conformance checks."""

from __future__ import annotations

import pytest

from aiodimse.fuzz.safety import OWN_HOST_FLAG, check_target


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.3.4.5"])
def test_loopback_targets_are_allowed(host: str) -> None:
    check_target(host)


@pytest.mark.parametrize("host", ["192.0.2.7", "10.1.2.3", "2001:db8::1"])
def test_other_hosts_need_the_explicit_flag(host: str) -> None:
    with pytest.raises(ValueError, match=OWN_HOST_FLAG):
        check_target(host)
    check_target(host, i_own_this_host=True)


def test_unresolvable_host_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot resolve"):
        check_target("no-such-host.invalid")
