"""Start-up of the command line: what ``aiodimse echo`` imports, and the lazy command table.

The time itself is measured by benchmarks/bench_startup.py; here a fresh interpreter runs
the command and reports ``sys.modules``, so that a module-level import of something heavy
(pydicom, the archive and its sqlite3, the jobs, the fuzzer) on the echo path fails a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path

import pytest
from _cli_support import LOCAL, Service, run_aiodimse

from aiodimse.cli import COMMAND_MODULES, build_parser, main
from aiodimse.dicomfile import read_part10
from aiodimse.testing.peers import free_port
from aiodimse.testing.synthetic import make_study, write_study

REPO = Path(__file__).resolve().parent.parent

#: Never needed to start ``aiodimse echo`` or ``aiodimse --version``.
HEAVY = (
    "sqlite3",
    "aiodimse.archive",
    "aiodimse.jobs",
    "aiodimse.fuzz",
    "aiodimse.server",
    "rich",
    "procrastinate",
)

_PROBE = """
import contextlib, io, json, sys
from aiodimse.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*argv: str) -> tuple[object, set[str]]:
    """Run ``aiodimse argv`` in a fresh interpreter: its exit code and every module loaded."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


def echo_to_nobody() -> tuple[object, set[str]]:
    """``aiodimse echo`` to a port nothing listens on: the whole echo path, connect
    included, ending in one refused connection (exit 1)."""
    code, modules = imported_by("echo", "127.0.0.1", str(free_port()), "--timeout", "5")
    assert code == 1  # it really tried: refused, not a usage error
    assert "aiodimse.association" in modules
    return code, modules


def test_echo_starts_without_the_archive_jobs_or_fuzzer() -> None:
    _, modules = echo_to_nobody()
    assert loaded(modules, HEAVY) == []


def test_echo_starts_without_pydicom() -> None:
    _, modules = echo_to_nobody()
    assert loaded(modules, ("pydicom", "numpy")) == []


# -- C-GET and C-MOVE of ordinary -k keys: no pydicom either ---------------------------------

#: The AE title ``move --port`` receives under, known to the archive as a destination.
MOVE_AE = "STARTUPME"


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Generator[tuple[Service, int, list[list[Path]]], None, None]:
    """``aiodimse qrscp`` holding two studies of two instances, with MOVE_AE as a move
    destination on a port of its own: (the service, that port, the studies' files)."""
    root = tmp_path_factory.mktemp("startup")
    studies = [
        write_study(root / f"s{i}", make_study(2, rows=8, cols=8, seed=f"startup-{i}"))
        for i in range(2)
    ]
    move_port = free_port()
    service = Service(
        root,
        "qrscp",
        "--storage",
        root / "archive",
        "--host",
        LOCAL,
        "--dest",
        f"{MOVE_AE}={LOCAL}:{move_port}",
    )
    try:
        files = [str(p) for study in studies for p in study]
        stored = run_aiodimse("store", LOCAL, str(service.port), *files)
        assert stored.returncode == 0, stored.stderr + service.log()
        yield service, move_port, studies
    finally:
        service.stop()


def _study_key(study: list[Path]) -> str:
    # (pydicom here, in the test's process: the command runs in a fresh one)
    from pydicom import dcmread

    return f"StudyInstanceUID={dcmread(study[0], stop_before_pixels=True).StudyInstanceUID}"


def _arrived(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _names(study: list[Path]) -> set[str]:
    return {f"{read_part10(p).sop_instance_uid}.dcm" for p in study}


def test_get_starts_without_pydicom(
    archive: tuple[Service, int, list[list[Path]]], tmp_path: Path
) -> None:
    service, _, studies = archive
    out = tmp_path / "got"
    code, modules = imported_by(
        "get", LOCAL, str(service.port), "-k", _study_key(studies[1]), "--out", str(out)
    )
    assert code == 0, service.log()
    assert _arrived(out) == _names(studies[1])  # that study, and only that one
    assert loaded(modules, ("pydicom", "numpy")) == []


def test_move_to_ourselves_starts_without_pydicom(
    archive: tuple[Service, int, list[list[Path]]], tmp_path: Path
) -> None:
    service, move_port, studies = archive
    out = tmp_path / "moved"
    code, modules = imported_by(
        "move",
        LOCAL,
        str(service.port),
        "-k",
        _study_key(studies[0]),
        "--aet",
        MOVE_AE,
        "--port",
        str(move_port),
        "--out",
        str(out),
    )
    assert code == 0, service.log()
    assert _arrived(out) == _names(studies[0])
    assert "aiodimse.server" in modules  # it received them itself
    assert loaded(modules, ("pydicom", "numpy")) == []


def test_get_of_a_key_given_as_a_tag_still_works_through_pydicom(
    archive: tuple[Service, int, list[list[Path]]], tmp_path: Path
) -> None:
    """A query the light form does not take (a tag as hex) goes the pydicom way, as before."""
    service, _, studies = archive
    key = _study_key(studies[1]).replace("StudyInstanceUID", "(0020,000D)")
    out = tmp_path / "got"
    code, modules = imported_by("get", LOCAL, str(service.port), "-k", key, "--out", str(out))
    assert code == 0, service.log()
    assert _arrived(out) == _names(studies[1])
    assert "pydicom" in modules


def test_version_imports_no_command() -> None:
    code, modules = imported_by("--version")
    assert code == 0
    assert loaded(modules, ("pydicom", "aiodimse.association", *HEAVY)) == []


def test_the_command_table_names_what_each_module_registers() -> None:
    full = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(full) == {c for names in COMMAND_MODULES.values() for c in names}
    for commands in COMMAND_MODULES.values():
        for command in commands:
            # Only the command's own module is registered, and all of its commands are.
            parser = build_parser([command])
            choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
            assert set(choices) == set(commands), command


def test_an_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ehco", "127.0.0.1", "104"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'ehco'" in err and "storescp" in err and "retrieve" in err
