"""Test-suite settings shared by test modules: CI detection, fuzz budgets, the peer policy.

Test modules import it as ``from _settings import FUZZ_EXAMPLES`` (pytest puts ``tests/`` on
``sys.path``, as it has no ``__init__.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from aiodimse.testing.peers import PeerMissing, dcmtk_tool, orthanc_binary

#: True when the environment says ``CI=true`` (as ``.ci/run`` does).
CI: bool = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

#: Examples for fuzz tests that ask for a large budget: ``@settings(max_examples=FUZZ_EXAMPLES)``.
FUZZ_EXAMPLES: int = 10_000 if CI else 1_000


def require_peer(lookup: Callable[[], str]) -> str:
    """Return the peer program path from ``lookup``; skip the test if it is missing.

    Under ``CI=true`` a missing peer FAILS the test instead: interop tests never skip in CI.
    """
    try:
        return lookup()
    except PeerMissing as exc:
        if CI:
            pytest.fail(f"{exc}; interop peers are mandatory when CI=true", pytrace=False)
        pytest.skip(str(exc))


def require_dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool, or skip (fail under CI) when DCMTK is not installed."""
    return require_peer(lambda: dcmtk_tool(tool))


def require_orthanc() -> str:
    """Path of the Orthanc binary, or skip (fail under CI) when Orthanc is not installed."""
    return require_peer(orthanc_binary)
