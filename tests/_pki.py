"""A throw-away PKI for TLS tests, made at run time with the ``openssl`` command-line tool.

``make_pki(directory)`` writes a CA, a server certificate (for ``localhost`` and
``127.0.0.1``) and a client certificate signed by it, plus a second, untrusted CA with a
client certificate of its own, all PEM, RSA 2048 (the key size DCMTK's BCP 195 profiles
accept), valid for two days. Test modules import it as ``from _pki import make_pki``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from _settings import require_peer

from aiodimse.testing.peers import PeerMissing

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files ``make_pki`` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A CA nobody trusts, and a client certificate it signed.
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def openssl() -> str:
    """Path of the openssl tool; skips the test (fails under CI) when it is missing."""

    def lookup() -> str:
        path = shutil.which("openssl")
        if path is None:
            raise PeerMissing("the openssl command-line tool is not installed")
        return path

    return require_peer(lookup)


def _run(*args: str | Path) -> None:
    subprocess.run(
        [openssl(), *map(str, args)],
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", key, "-out", cert, "-subj", f"/CN=aiodimse test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(_LEAF_EXTENSIONS, encoding="ascii")
    _run(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", f"/CN={name}",
    )  # fmt: skip
    _run(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-days", "2", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, server and client certificates (and a rogue CA) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    rogue = _ca(directory, "rogue-ca")
    server = _leaf(directory, "server", ca)
    client = _leaf(directory, "client", ca)
    rogue_client = _leaf(directory, "rogue-client", rogue)
    return Pki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        rogue_ca=rogue[0],
        rogue_client_cert=rogue_client[0],
        rogue_client_key=rogue_client[1],
    )
