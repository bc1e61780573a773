"""Shared fixtures: hypothesis profiles, free ports, and real peers (DCMTK, Orthanc) on loopback.

Peer fixtures are factories: call them (with options) to start a peer in the test's
``tmp_path``; every peer started is stopped by PID at teardown, and its log is printed when
the test failed. A test that uses one is marked ``interop`` automatically. A missing peer
skips the test, except under ``CI=true`` where it fails (see ``_settings.require_peer``).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from _cli_support import Service
from _settings import CI, require_dcmtk, require_orthanc
from hypothesis import HealthCheck, settings

from aiodimse.testing import peers
from aiodimse.testing.peers import PeerProcess

# -- hypothesis ------------------------------------------------------------------------------

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))

# -- markers and reports ---------------------------------------------------------------------

PEER_FIXTURES = frozenset({"storescp_peer", "dcmqrscp_peer", "orthanc_peer"})
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(autouse=True)
def _aiodimse_logger_restored() -> Generator[None, None, None]:
    """A command run in-process (``aiodimse.cli.main``) sets up the ``aiodimse`` logger as
    a process would: its own stderr handler, no propagation. Put it back after each test,
    so that later tests' ``caplog`` still sees the records."""
    logger = logging.getLogger("aiodimse")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a real peer as ``interop``."""
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so that fixtures can tell a failure."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


class _Peers:
    """The peers one test started; stops them all (by PID) and shows their logs on failure."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp_path = tmp_path
        self.started: list[PeerProcess] = []
        self._n = itertools.count(1)

    def work_dir(self, name: str) -> Path:
        path = self.tmp_path / f"{name}-{next(self._n)}"
        path.mkdir(parents=True)
        return path

    def add(self, peer: PeerProcess) -> PeerProcess:
        self.started.append(peer)
        return peer

    def close(self) -> None:
        failed = _failed(self.request)
        errors: list[BaseException] = []
        for peer in reversed(self.started):
            try:
                peer.stop()
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
            if failed:
                print(f"\n----- {peer.name} (pid {peer.pid}, port {peer.port}) log -----")
                print(peer.log()[-8000:])
        if errors:
            raise errors[0]


@pytest.fixture
def services() -> Generator[list[Service], None, None]:
    """``aiodimse`` server processes a test started (append them): stopped by PID at the
    end of the test."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for more, call ``aiodimse.testing.peers.free_port()``)."""
    return peers.free_port()


@pytest.fixture
def dcmtk() -> Callable[[str], str]:
    """Look up a DCMTK tool by name (absolute path); skips, or fails under CI, if missing."""
    return require_dcmtk


@pytest.fixture
def _peers(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[_Peers, None, None]:
    started = _Peers(request, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def storescp_peer(_peers: _Peers) -> Callable[..., PeerProcess]:
    """Factory: ``storescp_peer(aet=..., fork=..., accept_all=..., extra=...)`` -> PeerProcess.

    Received files land in ``peer.data_dir``.
    """
    require_dcmtk("storescp")

    def start(
        *,
        aet: str = "STORESCP",
        fork: bool = False,
        accept_all: bool = True,
        extra: Sequence[str] = (),
        port: int | None = None,
    ) -> PeerProcess:
        work = _peers.work_dir("storescp")
        return _peers.add(
            peers.start_storescp(
                port or peers.free_port(),
                work / "received",
                aet=aet,
                fork=fork,
                accept_all=accept_all,
                extra=extra,
                work_dir=work,
            )
        )

    return start


@pytest.fixture
def dcmqrscp_peer(_peers: _Peers) -> Callable[..., PeerProcess]:
    """Factory: ``dcmqrscp_peer(aet=..., hosts={"DEST": ("127.0.0.1", port)})`` -> PeerProcess.

    Its storage area is ``peer.data_dir``; fill it by C-STORE before querying.
    """
    require_dcmtk("dcmqrscp")

    def start(
        *,
        aet: str = "DCMQRSCP",
        hosts: Mapping[str, tuple[str, int]] | None = None,
        extra: Sequence[str] = (),
        port: int | None = None,
        **kwargs: Any,
    ) -> PeerProcess:
        work = _peers.work_dir("dcmqrscp")
        return _peers.add(
            peers.start_dcmqrscp(
                port or peers.free_port(),
                work / "db",
                aet=aet,
                hosts=hosts,
                work_dir=work,
                extra=extra,
                **kwargs,
            )
        )

    return start


@pytest.fixture
def orthanc_peer(_peers: _Peers) -> Callable[..., PeerProcess]:
    """Factory: ``orthanc_peer(aet=..., modalities={"NAME": (AET, host, port)})`` -> PeerProcess.

    ``peer.port`` is the DICOM port, ``peer.http_port`` the REST port (loopback only).
    """
    require_orthanc()

    def start(
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
    ) -> PeerProcess:
        work = _peers.work_dir("orthanc")
        dicom_port, http_port = peers.free_ports(2)
        return _peers.add(
            peers.start_orthanc(dicom_port, http_port, work, aet=aet, modalities=modalities)
        )

    return start
