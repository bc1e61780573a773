"""A real PostgreSQL server for the tests: ``initdb`` in a temporary folder, ``postgres``
on a free loopback port (its socket in that folder too), stopped by PID.

The binaries are looked up on PATH, then in Debian's ``/usr/lib/postgresql/<N>/bin``.
PostgreSQL refuses to run as root: as root, the cluster is made and run as the
``postgres`` user when there is one, else ``nobody`` (``Popen(user=...)``, so the PID we
hold is the server's own).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiodimse.testing.peers import PeerMissing, free_port, wait_for_port

__all__ = ["PostgresServer", "find_binary", "postgres_server"]


def find_binary(name: str) -> str:
    """``initdb``, ``postgres``... on PATH or under /usr/lib/postgresql/*/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
        reverse=True,
    )
    if candidates:
        return str(candidates[0])
    raise PeerMissing(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


@dataclass
class PostgresServer:
    """A running server: ``dsn(dbname)`` to connect, ``stop()`` to end it."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes]
    user: str

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def log(self) -> str:
        try:
            return (self.directory / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        psql = find_binary("psql")
        subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres"]
            + ["-v", "ON_ERROR_STOP=1", "-q", "-c", f'CREATE DATABASE "{name}"'],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by PID, then SIGKILL if it lingers; removes the folder."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _run_as() -> tuple[int | None, int | None, str]:
    """(uid, gid, name) to run PostgreSQL as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None, None, pwd.getpwuid(os.geteuid()).pw_name
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid, name
    raise PeerMissing("running as root and there is no postgres or nobody user to run as")


def start_postgres(timeout: float = 30.0) -> PostgresServer:
    initdb, postgres = find_binary("initdb"), find_binary("postgres")
    find_binary("psql")
    uid, gid, user = _run_as()
    # Not under pytest's tmp_path: its parents are private to root.
    directory = Path(tempfile.mkdtemp(prefix="aiodimse-pg-"))
    if uid is not None:
        os.chown(directory, uid, gid if gid is not None else -1)
    as_user: dict[str, object] = {} if uid is None else {"user": uid, "group": gid}
    data = directory / "data"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        subprocess.run(
            [initdb, "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=directory,
            env=env,
            extra_groups=[] if uid is not None else None,
            **as_user,  # type: ignore[call-overload]
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from None
    port = free_port()
    log = open(directory / "postgres.log", "wb")
    argv = [postgres, "-D", str(data), "-k", str(directory), "-h", "127.0.0.1", "-p", str(port)]
    argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"]
    argv += ["-c", "full_page_writes=off"]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
        env=env,
        extra_groups=[] if uid is not None else None,
        **as_user,  # type: ignore[call-overload]
    )
    log.close()
    server = PostgresServer(port, directory, proc, user)
    try:
        wait_for_port("127.0.0.1", port, timeout, proc=proc)
        _wait_accepting(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_accepting(server: PostgresServer, timeout: float) -> None:
    """The port opens before recovery ends: wait until a query is answered."""
    psql = find_binary("psql")
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [psql, "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user, "-d", "postgres"]
            + ["-Atqc", "SELECT 1"],
            capture_output=True,
            timeout=10,
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"PostgreSQL did not start: {server.log()}")
        time.sleep(0.1)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
