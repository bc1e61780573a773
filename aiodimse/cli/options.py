"""Option groups shared by the DCMTK-shaped commands: DICOM TLS, user identity and transfer
syntaxes (proposed by clients, accepted by servers), and the association a client command
asks for with them. Spellings follow DCMTK where they do not clash (``+tls``,
``+cf``, ``-xe``/``-xb``/``-xi``, ``--user``/``--password``/``-rsp``) with long names too."""

from __future__ import annotations

import argparse
import os
import ssl
from pathlib import Path
from typing import Any

from .. import tls, uids
from ..association import connect
from ..pdu import UserIdentityRQ
from ..ul.negotiation import ContextRequest
from .common import UsageError, timeouts

__all__ = [
    "CLIENT_SYNTAXES",
    "SERVER_SYNTAXES",
    "accepted_syntaxes",
    "add_accept_options",
    "add_client_security",
    "add_client_tls",
    "add_identity_options",
    "add_propose_options",
    "add_server_tls",
    "check_identity_response",
    "client_ssl",
    "connect_with",
    "identity_from",
    "proposed_syntaxes",
    "security_from",
    "server_ssl",
]

_ELE = uids.EXPLICIT_VR_LITTLE_ENDIAN
_EBE = uids.EXPLICIT_VR_BIG_ENDIAN
_ILE = uids.IMPLICIT_VR_LITTLE_ENDIAN
_UNCOMPRESSED = (_ELE, _EBE, _ILE)

#: The requestor's presets, as DCMTK's storescu/findscu/getscu/movescu name them:
#: (short option, long option, dcm4che alias or None, syntaxes in proposal order, help).
CLIENT_SYNTAXES: tuple[tuple[str, str, str | None, tuple[str, ...], str], ...] = (
    ("-xe", "--propose-little", "--explicit-vr", _UNCOMPRESSED, "explicit VR little endian first"),
    ("-xb", "--propose-big", "--big-endian", (_EBE, _ELE, _ILE), "explicit VR big endian first"),
    ("-xi", "--propose-implicit", "--implicit-vr", (_ILE,), "implicit VR little endian only"),
    (
        "-xd",
        "--propose-deflated",
        "--deflated",
        (uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, *_UNCOMPRESSED),
        "deflated explicit VR little endian, then uncompressed",
    ),
    (
        "-xs",
        "--propose-lossless",
        None,
        (uids.JPEG_LOSSLESS_SV1, *_UNCOMPRESSED),
        "JPEG lossless SV1 for files already in it (sent as they are; nothing is"
        " compressed here) and uncompressed for the others",
    ),
    (
        "-xt",
        "--propose-jls-lossless",
        None,
        (uids.JPEG_LS_LOSSLESS, *_UNCOMPRESSED),
        "JPEG-LS lossless for files already in it, uncompressed for the others (as -xs)",
    ),
)

#: The acceptor's presets, as DCMTK's storescp names them (accepted in this order).
SERVER_SYNTAXES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("+xe", "--prefer-little", _UNCOMPRESSED, "uncompressed, explicit VR little endian first"),
    ("+xb", "--prefer-big", (_EBE, _ELE, _ILE), "uncompressed, explicit VR big endian first"),
    ("+xi", "--implicit", (_ILE,), "implicit VR little endian only"),
    (
        "+xd",
        "--prefer-deflated",
        (uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, *_UNCOMPRESSED),
        "deflated explicit VR little endian first, then uncompressed",
    ),
    (
        "+xs",
        "--prefer-lossless",
        (uids.JPEG_LOSSLESS_SV1, *_UNCOMPRESSED),
        "JPEG lossless SV1 first, then uncompressed",
    ),
)


def transfer_syntax_uid(value: str) -> str:
    """argparse type: a transfer syntax by UID or by name (``ExplicitVRBigEndian``)."""
    if value in uids.TRANSFER_SYNTAXES:
        return value
    wanted = value.replace(" ", "").replace("-", "").replace(",", "").lower()
    for uid, ts in uids.TRANSFER_SYNTAXES.items():
        if ts.name.replace(" ", "").replace("-", "").replace(",", "").lower() == wanted:
            return uid
    raise argparse.ArgumentTypeError(f"{value!r} is not a transfer syntax UID or name we know")


# -- transfer syntaxes ------------------------------------------------------------------------


def add_propose_options(parser: argparse.ArgumentParser) -> None:
    """The transfer syntaxes a client proposes (default: each file's own, then
    uncompressed; for queries explicit then implicit VR little endian)."""
    group = parser.add_argument_group("proposed transfer syntaxes (like DCMTK's storescu)")
    mutex = group.add_mutually_exclusive_group()
    for short, long, alias, syntaxes, text in CLIENT_SYNTAXES:
        names = [short, long] + ([alias] if alias else [])
        mutex.add_argument(
            *names, dest="ts_preset", action="store_const", const=syntaxes, help=f"propose {text}"
        )
    mutex.add_argument(
        "--propose-ts",
        dest="ts_list",
        action="append",
        type=transfer_syntax_uid,
        metavar="UID",
        help="propose this transfer syntax (UID or name; repeat, in order of preference)",
    )


def add_accept_options(parser: argparse.ArgumentParser) -> None:
    """The transfer syntaxes a server accepts, in its order of preference."""
    group = parser.add_argument_group("accepted transfer syntaxes (like DCMTK's storescp)")
    mutex = group.add_mutually_exclusive_group()
    mutex.add_argument(
        "+xa",
        "--accept-all",
        dest="ts_preset",
        action="store_const",
        const=None,
        help="accept every syntax we can store as received, uncompressed first (default)",
    )
    for short, long, syntaxes, text in SERVER_SYNTAXES:
        mutex.add_argument(
            short,
            long,
            dest="ts_preset",
            action="store_const",
            const=syntaxes,
            help=f"accept {text}",
        )
    mutex.add_argument(
        "--accept-ts",
        dest="ts_list",
        action="append",
        type=transfer_syntax_uid,
        metavar="UID",
        help="accept this transfer syntax (UID or name; repeat, most preferred first)",
    )


def proposed_syntaxes(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The syntaxes the command line asks to propose, or None for the default."""
    listed = getattr(args, "ts_list", None)
    if listed:
        return tuple(dict.fromkeys(listed))
    preset = getattr(args, "ts_preset", None)
    return tuple(preset) if preset else None


accepted_syntaxes = proposed_syntaxes


# -- TLS -------------------------------------------------------------------------------------


def _add_tls_common(group: Any) -> None:
    group.add_argument(
        "+tls",
        "--enable-tls",
        nargs=2,
        metavar=("KEY", "CERT"),
        dest="tls_key_cert",
        help="DICOM TLS with this private key and certificate (PEM files)",
    )
    group.add_argument(
        "+cf",
        "--add-cert-file",
        "--trust",
        action="append",
        dest="tls_ca",
        metavar="PEM",
        help="trust the certificates (CAs) in this PEM file (repeatable)",
    )
    group.add_argument(
        "--tls-profile",
        choices=["bcp195", "bcp195-nd", "tls1.3"],
        default="bcp195",
        help="bcp195 / bcp195-nd: TLS 1.2 or later with BCP 195 (RFC 9325) cipher suites"
        " (default); tls1.3: TLS 1.3 only",
    )


def add_client_tls(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DICOM TLS (PS3.15 B.9)")
    _add_tls_common(group)
    group.add_argument(
        "--tls",
        action="store_true",
        help="DICOM TLS without a client certificate (the server's is still verified)",
    )
    group.add_argument(
        "--tls-no-hostname-check",
        action="store_true",
        help="do not match the host name against the server certificate (DCMTK never does);"
        " the certificate itself is still verified",
    )


def add_server_tls(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DICOM TLS (PS3.15 B.9)")
    _add_tls_common(group)
    mutex = group.add_mutually_exclusive_group()
    mutex.add_argument(
        "--require-peer-cert",
        "-rc",
        dest="tls_peer_cert",
        action="store_const",
        const="require",
        help="every client must present a certificate signed by a +cf CA (default with +cf)",
    )
    mutex.add_argument(
        "--verify-peer-cert",
        "-vc",
        dest="tls_peer_cert",
        action="store_const",
        const="optional",
        help="check a client certificate only when one is sent",
    )


def _minimum(args: argparse.Namespace) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if args.tls_profile == "tls1.3" else ssl.TLSVersion.TLSv1_2


def _pem_files(args: argparse.Namespace) -> list[str]:
    files = [*(args.tls_key_cert or ()), *(args.tls_ca or ())]
    for name in files:
        if not Path(name).is_file():
            raise UsageError(f"TLS: {name}: no such file")
    return files


def _tls_error(exc: ssl.SSLError, args: argparse.Namespace) -> UsageError:
    reason = exc.reason or ""
    if reason == "KEY_VALUES_MISMATCH":
        key, cert = args.tls_key_cert
        return UsageError(f"+tls: the private key {key} does not belong to the certificate {cert}")
    if reason in ("NO_START_LINE", "PEM_LIB", "BAD_BASE64_DECODE", "ASN1_LIB"):
        return UsageError(f"TLS: a key or certificate file is not PEM ({reason.lower()})")
    return UsageError(f"TLS: {reason.lower().replace('_', ' ') or exc}")


def client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client's TLS context from ``+tls``/``--tls``/``+cf``, or None for plain TCP."""
    key_cert = getattr(args, "tls_key_cert", None)
    if not key_cert and not getattr(args, "tls", False):
        if getattr(args, "tls_ca", None):
            raise UsageError("+cf needs +tls KEY CERT or --tls (it only matters with TLS)")
        return None
    _pem_files(args)
    cas = list(args.tls_ca or ())
    try:
        ctx = tls.client_context(
            ca=cas[0] if cas else None,
            cert=key_cert[1] if key_cert else None,
            key=key_cert[0] if key_cert else None,
            check_hostname=not args.tls_no_hostname_check,
            minimum_version=_minimum(args),
        )
        for extra in cas[1:]:
            ctx.load_verify_locations(cafile=extra)
    except ssl.SSLError as exc:
        raise _tls_error(exc, args) from None
    return ctx


def server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from ``+tls``/``+cf``/``--require-peer-cert``, or None."""
    key_cert = getattr(args, "tls_key_cert", None)
    peer_cert = getattr(args, "tls_peer_cert", None)
    if not key_cert:
        if getattr(args, "tls_ca", None) or peer_cert:
            raise UsageError("+cf and --require-peer-cert need +tls KEY CERT")
        return None
    _pem_files(args)
    cas = list(args.tls_ca or ())
    if peer_cert is not None and not cas:
        raise UsageError(f"--{peer_cert}-peer-cert needs +cf CA (the CAs of client certificates)")
    try:
        ctx = tls.server_context(
            cert=key_cert[1],
            key=key_cert[0],
            ca=cas[0] if cas else None,
            require_client_cert=peer_cert != "optional" if cas else None,
            minimum_version=_minimum(args),
        )
        for extra in cas[1:]:
            ctx.load_verify_locations(cafile=extra)
    except ssl.SSLError as exc:
        raise _tls_error(exc, args) from None
    return ctx


# -- user identity ---------------------------------------------------------------------------


def add_identity_options(parser: argparse.ArgumentParser) -> None:
    """PS3.7 D.3.3.7 user identity, as DCMTK's (``--user``, ``-pwd``) and dcm4che's names."""
    group = parser.add_argument_group("user identity (PS3.7 D.3.3.7)")
    kind = group.add_mutually_exclusive_group()
    kind.add_argument("--user", "-usr", metavar="NAME", help="user name (type 1, or 2 with -pwd)")
    kind.add_argument("--jwt", metavar="FILE", help="a JSON Web Token, read from FILE (type 5)")
    kind.add_argument("--saml", metavar="FILE", help="a SAML assertion, read from FILE (type 4)")
    kind.add_argument("--kerberos", "-kt", metavar="FILE", help="a Kerberos ticket (type 3)")
    secret = group.add_mutually_exclusive_group()
    secret.add_argument("--password", "-pwd", "--user-pass", metavar="PW", help="the passcode")
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the passcode from this environment variable (not visible in ps)",
    )
    group.add_argument(
        "--pos-response",
        "-rsp",
        "--user-rsp",
        action="store_true",
        help="ask the peer to confirm it accepted the identity; fail if it does not",
    )


def identity_from(args: argparse.Namespace) -> UserIdentityRQ | None:
    """The User Identity sub-item the command line asks for, or None."""
    positive = bool(getattr(args, "pos_response", False))
    password: str | None = getattr(args, "password", None)
    env = getattr(args, "password_env", None)
    if env:
        password = os.environ.get(env)
        if password is None:
            raise UsageError(f"--password-env: {env} is not set")
    user = getattr(args, "user", None)
    try:
        if user is not None:
            return UserIdentityRQ.username(user, password, positive_response=positive)
        if password is not None:
            raise UsageError("--password needs --user")
        for option, make in (
            ("jwt", UserIdentityRQ.jwt),
            ("saml", UserIdentityRQ.saml),
            ("kerberos", UserIdentityRQ.kerberos),
        ):
            name = getattr(args, option, None)
            if name:
                try:
                    data = Path(name).read_bytes().strip()
                except OSError as exc:
                    raise UsageError(f"--{option} {name}: {exc.strerror or exc}") from None
                return make(data, positive_response=positive)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if positive:
        raise UsageError("--pos-response needs an identity (--user, --jwt, --saml or -kt)")
    return None


def check_identity_response(args: argparse.Namespace, assoc: Any) -> None:
    """With ``-rsp``, the peer must have confirmed the identity (PS3.7 D.3.3.7.2)."""
    if getattr(args, "pos_response", False):
        negotiated = assoc.negotiated
        if negotiated is None or negotiated.user_identity_response is None:
            raise ValueError("the peer did not confirm our user identity (asked for with -rsp)")


def security_from(args: argparse.Namespace) -> dict[str, Any]:
    """``ssl`` and ``user_identity`` for ``connect()`` from the command line, built once
    (a command opening several associations reuses them); UsageError for bad options."""
    cached: dict[str, Any] | None = getattr(args, "_connect_security", None)
    if cached is None:
        cached = {"ssl": client_ssl(args), "user_identity": identity_from(args)}
        args._connect_security = cached
    return cached


def connect_with(
    args: argparse.Namespace, proposal: list[ContextRequest], *, window: int = 1
) -> Any:
    """The association an SCU command asks for: ``connect_from``'s options plus TLS, user
    identity and the asynchronous operations window (PS3.7 D.3.3.3) when ``window`` > 1."""
    return connect(
        args.host,
        args.port,
        calling_ae=args.aet,
        called_ae=args.aec,
        contexts=proposal,
        max_pdu=args.max_pdu,
        timeouts=timeouts(args),
        async_window=(window, window) if window > 1 else None,
        **security_from(args),
    )


def add_client_security(parser: argparse.ArgumentParser) -> None:
    """TLS and user identity, for every client command."""
    add_client_tls(parser)
    add_identity_options(parser)
