"""docker-compose.yml: valid for Compose, and consistent with the two files it mounts.

No Docker engine is needed: ``docker compose config -q`` (or Debian's ``docker-compose``
v1) only validates the file. The files the services mount, docker/qrscp.toml and
docker/orthanc.json, are the ones tests/test_interop_orthanc.py runs for real on
loopback; here they are checked against each other and against the compose file (service
names as host names, ports, AE titles, folders).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from _settings import require_peer

import aiodimse
from aiodimse.cli import build_parser, load_qrscp_config
from aiodimse.testing import peers
from aiodimse.testing.peers import LOOPBACK, PeerMissing

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
QRSCP_TOML = REPO / "docker" / "qrscp.toml"
ORTHANC_JSON = REPO / "docker" / "orthanc.json"
ARCHIVE, ORTHANC = "aiodimse", "orthanc"  # the service names


def compose_command() -> list[str]:
    """``docker compose`` (v2 plugin) if it works here, else ``docker-compose`` (v1)."""
    docker = shutil.which("docker")
    if docker is not None:
        try:
            probe = subprocess.run(
                [docker, "compose", "version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    raise PeerMissing("neither `docker compose` nor `docker-compose` is installed")


@pytest.fixture(scope="module")
def compose_tool() -> list[str]:
    """The Compose CLI; skips when missing, fails under CI=true (like a missing peer)."""
    found: list[str] = []

    def lookup() -> str:
        found[:] = compose_command()
        return found[0]

    require_peer(lookup)
    return found


def run_config(tool: list[str], compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tool, "-f", str(compose_file), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=compose_file.parent,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def orthanc_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ORTHANC_JSON.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def qrscp_toml() -> dict[str, Any]:
    with QRSCP_TOML.open("rb") as fh:
        return tomllib.load(fh)


def qrscp_settings(*argv: str) -> dict[str, Any]:
    return load_qrscp_config(build_parser().parse_args(["qrscp", *argv]))


def bind_mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Host path (resolved against the compose file's folder) -> container path."""
    out: dict[Path, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[(COMPOSE_FILE.parent / source).resolve()] = target
    return out


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            out[source] = target
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).split(":")[-1].split("/")[0]) for mapping in service["ports"]}


# -- the compose file is valid -----------------------------------------------------------------


def test_compose_config_validates(compose_tool: list[str]) -> None:
    done = run_config(compose_tool, COMPOSE_FILE)
    assert done.returncode == 0, done.stderr + done.stdout


def test_compose_config_rejects_a_broken_file(compose_tool: list[str], tmp_path: Path) -> None:
    """The validator really validates: an unknown option in a service fails it."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        text.replace("    build: .\n", "    build: .\n    not_an_option: 1\n"), encoding="utf-8"
    )
    assert broken.read_text(encoding="utf-8") != text
    done = run_config(compose_tool, broken)
    assert done.returncode != 0
    assert "not_an_option" in done.stderr + done.stdout


# -- the services run the files the Orthanc interop test runs ----------------------------------


def test_services_mount_the_tested_files(
    compose: dict[str, Any], qrscp_toml: dict[str, Any], orthanc_json: dict[str, Any]
) -> None:
    services = compose["services"]
    archive_mounts = bind_mounts(services[ARCHIVE])
    assert QRSCP_TOML in archive_mounts
    config_path = archive_mounts[QRSCP_TOML]
    command = services[ARCHIVE]["command"]
    assert command[:2] == ["aiodimse", "qrscp"]
    assert command[command.index("--config") + 1] == config_path
    # The archive's storage folder is a volume (kept across restarts).
    assert qrscp_toml["storage"] in named_volumes(services[ARCHIVE]).values()

    orthanc_mounts = bind_mounts(services[ORTHANC])
    assert ORTHANC_JSON in orthanc_mounts
    target = orthanc_mounts[ORTHANC_JSON]
    assert target.startswith("/etc/orthanc/") and target.endswith(".json")  # the image's
    # configuration folder; its storage and index live in a volume.
    kept = set(named_volumes(services[ORTHANC]).values())
    assert orthanc_json["StorageDirectory"] in kept
    assert orthanc_json["IndexDirectory"] in kept


def test_dockerfile_runs_the_same_command(compose: dict[str, Any]) -> None:
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert json.loads(cmd[4:]) == compose["services"][ARCHIVE]["command"]
    assert compose["services"][ARCHIVE]["build"] in (".", "./")


# -- Orthanc and the archive know each other ---------------------------------------------------


def test_orthanc_and_archive_point_at_each_other(
    compose: dict[str, Any], qrscp_toml: dict[str, Any], orthanc_json: dict[str, Any]
) -> None:
    services = compose["services"]
    archive = qrscp_settings("--config", str(QRSCP_TOML))

    # Orthanc's modality AIODIMSE is the archive service: its AE title and listening port.
    modality = orthanc_json["DicomModalities"]["AIODIMSE"]
    assert modality == [archive["aet"], ARCHIVE, archive["port"]]
    assert archive["port"] in container_ports(services[ARCHIVE])
    assert archive["host"] == "0.0.0.0"  # reachable from the other container

    # The archive's C-MOVE destination named like Orthanc's AE title is Orthanc's DICOM port
    # (Orthanc's Query/Retrieve moves to its own AE title).
    assert archive["destinations"][orthanc_json["DicomAet"]] == (
        ORTHANC,
        orthanc_json["DicomPort"],
    )
    ports = container_ports(services[ORTHANC])
    assert {orthanc_json["DicomPort"], orthanc_json["HttpPort"]} <= ports
    # The web UI is reached from the host through the container network.
    assert orthanc_json["RemoteAccessAllowed"] is True

    # Both services on one network, so that the service names resolve.
    shared = set(services[ARCHIVE]["networks"]) & set(services[ORTHANC]["networks"])
    assert shared and shared <= set(compose["networks"])


def test_qrscp_config_parses(qrscp_toml: dict[str, Any]) -> None:
    settings = qrscp_settings("--config", str(QRSCP_TOML))
    for key in ("aet", "port", "host", "storage", "max_associations"):
        assert settings[key] == qrscp_toml[key]
    assert settings["destinations"] == {
        ae: (address.rpartition(":")[0], int(address.rpartition(":")[2]))
        for ae, address in qrscp_toml["destinations"].items()
    }
    assert settings["allow"] is None and settings["check_called_ae"] is False
    # Command-line options override the file, as in `docker compose run aiodimse ... --port`.
    override = qrscp_settings("--config", str(QRSCP_TOML), "--port", "2000", "--aet", "OTHER")
    assert (override["port"], override["aet"]) == (2000, "OTHER")
    assert override["destinations"] == settings["destinations"]


async def test_qrscp_command_serves_with_the_compose_config(
    qrscp_toml: dict[str, Any], tmp_path: Path
) -> None:
    """The container's command, with only the folder and address changed for loopback."""
    port = peers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiodimse", "qrscp", "--config", str(QRSCP_TOML),
         "--storage", str(tmp_path / "data"), "--host", LOOPBACK, "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        peers.wait_for_port(LOOPBACK, port, 30.0, proc=proc)
        async with aiodimse.connect(
            LOOPBACK, port, calling_ae="COMPOSE-TEST", called_ae=qrscp_toml["aet"]
        ) as assoc:
            status = await assoc.echo()
            assert status.code == 0x0000
            assert assoc.peer_ae.strip() == qrscp_toml["aet"]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert (tmp_path / "data" / "index.sqlite").exists()
