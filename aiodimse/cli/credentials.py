"""The credentials file of ``--require-identity``: user names with salted scrypt hashes of
their passcodes (PS3.7 D.3.3.7 username and passcode), checked off the event loop."""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from ..pdu import UserIdentityRQ
from .common import UsageError, log

__all__ = ["Credentials", "read_password"]


#: scrypt cost (RFC 7914): N=2**14, r=8, p=1 takes ~50 ms and 16 MiB; run off the loop.
_SCRYPT = (2**14, 8, 1)


def _hash(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


class Credentials:
    """User names and salted scrypt hashes of their passcodes, one user a line:
    ``NAME:scrypt$N$r$p$SALT$HASH`` (base64). Lines starting with ``#`` are comments."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.users: dict[str, tuple[int, int, int, bytes, bytes]] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                name, _, encoded = line.rpartition(":")
                scheme, n, r, p, salt, digest = encoded.split("$")
                if scheme != "scrypt" or not name:
                    raise ValueError(scheme)
                self.users[name] = (
                    int(n),
                    int(r),
                    int(p),
                    base64.b64decode(salt),
                    base64.b64decode(digest),
                )
            except ValueError:
                raise UsageError(f"{self.path}:{number}: not NAME:scrypt$N$r$p$SALT$HASH") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credentials:
        """Read an existing file (a missing one is a usage error: nobody could log in)."""
        if not Path(path).is_file():
            raise UsageError(f"--require-identity {path}: no such file (write it with --add-user)")
        return cls(path)

    def add(self, name: str, password: str) -> None:
        """Add or replace a user, and rewrite the file (mode 0600)."""
        if not name or ":" in name or any(ch.isspace() for ch in name):
            raise UsageError(f"user name {name!r}: no colon or white space, not empty")
        if not password:
            raise UsageError("an empty passcode is not allowed")
        salt = secrets.token_bytes(16)
        n, r, p = _SCRYPT
        self.users[name] = (n, r, p, salt, _hash(password.encode("utf-8"), salt, n, r, p))
        lines = ["# aiodimse credentials: NAME:scrypt$N$r$p$SALT$HASH"]
        for user, (n, r, p, salt, digest) in sorted(self.users.items()):
            b64 = base64.b64encode
            lines.append(f"{user}:scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def verify(self, name: str, password: bytes) -> bool:
        """Whether ``password`` is ``name``'s (constant-time compare; an unknown user costs
        the same hash, so timing does not tell which names exist)."""
        entry = self.users.get(name)
        n, r, p, salt, digest = entry or (*_SCRYPT, b"\0" * 16, b"")
        computed = _hash(password, salt, n, r, p)
        return entry is not None and hmac.compare_digest(computed, digest)

    async def check(self, identity: UserIdentityRQ, assoc: Any) -> bool:
        """A ``Server(user_identity=...)`` hook: username and passcode (type 2) only."""
        if identity.identity_type != 2:
            log.warning("#%s refused: user identity %s, only username+passcode is accepted",
                        getattr(assoc, "id", "?"), identity.type_name)  # fmt: skip
            return False
        name = identity.primary_field.decode("utf-8", errors="replace")
        ok = await asyncio.to_thread(self.verify, name, identity.secondary_field)
        if not ok:
            log.warning(
                "#%s refused: bad user name or passcode for %r", getattr(assoc, "id", "?"), name
            )
        return ok


def read_password(prompt: str) -> str:
    """A passcode from the terminal (not echoed) or the first line of standard input."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")
