"""The command line's DICOM TLS, user identity and transfer-syntax options against DCMTK
3.6.7: ``storescu +tls`` into ``aiodimse storescp +tls``, ``aiodimse store +tls`` into
``storescp +tls`` (mutual authentication required, and refused), user identity against
``aiodimse qrscp --require-identity``, and each proposal option of ``aiodimse store``
checked in the file DCMTK's storescp wrote. Certificates are made at test time."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom.data
import pytest
from _cli_support import Service, run_aiodimse
from _pki import Pki, make_pki
from _settings import require_dcmtk
from pydicom import dcmread

from aiodimse import uids
from aiodimse.cli import main
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.testing import peers

pytestmark = pytest.mark.interop

LOCAL = "127.0.0.1"
#: Implicit VR little endian, no trailing padding: converted by every option below.
MR_IMPLICIT = Path(str(pydicom.data.get_testdata_file("MR_small_implicit.dcm")))
JLS = Path(str(pydicom.data.get_testdata_file("MR_small_jpeg_ls_lossless.dcm")))


aiodimse = run_aiodimse


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_tls(pki: Pki, *, rogue: bool = False) -> list[str]:
    cert, key = (
        (pki.rogue_client_cert, pki.rogue_client_key)
        if rogue
        else (pki.client_cert, pki.client_key)
    )
    return ["+tls", str(key), str(cert), "+cf", str(pki.ca)]


def server_tls(pki: Pki) -> list[str]:
    return ["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]


def storescu(*args: str | Path | int) -> subprocess.CompletedProcess[str]:
    require_dcmtk("storescu")
    return peers.run_dcmtk("storescu", *(str(a) for a in args), timeout=30)


# -- TLS: DCMTK's storescu into aiodimse storescp ----------------------------------------------


def test_storescu_tls_into_aiodimse_storescp(
    pki: Pki, tmp_path: Path, services: list[Service]
) -> None:
    out = tmp_path / "in"
    scp = Service(tmp_path, "storescp", "--out", out, *server_tls(pki), "--require-peer-cert")
    services.append(scp)
    done = storescu(*client_tls(pki), "-aec", "STORESCP", LOCAL, scp.port, MR_IMPLICIT)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.dcm")
    assert dataset_bytes(path, read_part10(path)) == dataset_bytes(
        MR_IMPLICIT, read_part10(MR_IMPLICIT)
    )

    # Mutual authentication: a client certificate from a CA we do not trust is refused.
    rogue = storescu(*client_tls(pki, rogue=True), LOCAL, scp.port, MR_IMPLICIT)
    assert rogue.returncode != 0
    assert len(list(out.glob("*.dcm"))) == 1
    # And DCMTK without TLS at all gets nothing in either.
    plain = storescu(LOCAL, scp.port, MR_IMPLICIT)
    assert plain.returncode != 0
    assert len(list(out.glob("*.dcm"))) == 1


# -- TLS: aiodimse store into DCMTK's storescp --------------------------------------------------


def test_aiodimse_store_tls_into_dcmtk_storescp(
    pki: Pki, storescp_peer: Callable[..., peers.PeerProcess]
) -> None:
    peer = storescp_peer(extra=server_tls(pki))
    assert peer.data_dir is not None
    ok = aiodimse("store", LOCAL, peer.port, MR_IMPLICIT, *client_tls(pki), "--aec", peer.aet)
    assert ok.returncode == 0, ok.stderr
    assert "sent 1, failed 0" in ok.stdout
    assert len(list(peer.data_dir.iterdir())) == 1

    # storescp requires a client certificate signed by its CA (-rc, its default).
    refused = aiodimse("store", LOCAL, peer.port, MR_IMPLICIT, *client_tls(pki, rogue=True))
    assert refused.returncode == 1
    assert "TLS" in one_error_line(refused)
    no_cert = aiodimse("store", LOCAL, peer.port, MR_IMPLICIT, "--tls", "+cf", pki.ca)
    assert no_cert.returncode == 1
    assert "certificate" in one_error_line(no_cert)
    # We do not trust a server whose CA we were not given.
    untrusted = aiodimse(
        "echo", LOCAL, peer.port, "+tls", pki.client_key, pki.client_cert, "+cf", pki.rogue_ca
    )
    assert untrusted.returncode == 1
    assert "certificate" in one_error_line(untrusted)
    # A TLS client against a plain storescp: one line saying so.
    plain = storescp_peer()
    no_tls = aiodimse("echo", LOCAL, plain.port, *client_tls(pki))
    assert no_tls.returncode == 1
    one_error_line(no_tls)
    assert len(list(peer.data_dir.iterdir())) == 1


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """Run the command line in this process; it must exit 2 with one line after usage."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_tls_option_errors_are_one_line(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, "echo", LOCAL, "104", "+tls", pki.client_key, pki.server_cert)
    assert "does not belong to the certificate" in line
    line = usage_error(capsys, "echo", LOCAL, "104", "+tls", "nope.key", pki.client_cert)
    assert "nope.key: no such file" in line
    line = usage_error(capsys, "echo", LOCAL, "104", "+tls", MR_IMPLICIT, MR_IMPLICIT)
    assert "TLS" in line
    line = usage_error(capsys, "storescp", "--port", "0", "--out", "x", "+cf", pki.ca)
    assert "+tls" in line
    line = usage_error(
        capsys, "storescp", "--port", "0", "--out", "x", "+tls", pki.server_key,
        pki.server_cert, "--require-peer-cert",
    )  # fmt: skip
    assert "+cf" in line


# -- user identity against the archive ----------------------------------------------------------


def test_user_identity_accepted_and_refused_by_qrscp(
    tmp_path: Path, services: list[Service]
) -> None:
    users = tmp_path / "users.txt"
    added = aiodimse("qrscp", "--add-user", users, "bob", stdin="s3cret\n")
    assert added.returncode == 0, added.stderr
    assert "s3cret" not in users.read_text() and users.read_text().startswith("#")
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    qr = Service(tmp_path, "qrscp", "--storage", tmp_path / "archive", "--require-identity", users)
    services.append(qr)

    good = aiodimse("echo", LOCAL, qr.port, "--user", "bob", "--password", "s3cret", "-rsp")
    assert good.returncode == 0, good.stderr
    assert "Success" in good.stdout
    # DCMTK's storescu with the same credentials is let in and stores.
    stored = storescu("--user", "bob", "--password", "s3cret", LOCAL, qr.port, MR_IMPLICIT)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    found = aiodimse(
        "find", LOCAL, qr.port, "--user", "bob", "--password-env", "PW", "-k", "PatientID"
    )
    assert found.returncode == 2 and "PW is not set" in found.stderr

    for refused_args in (["--user", "bob", "--password", "wrong"], []):
        refused = aiodimse("echo", LOCAL, qr.port, *refused_args)
        assert refused.returncode == 1, refused_args
        assert "rejected" in one_error_line(refused)
        # Refused for its identity (PS3.7 D.3.3.7.3), not under another reason.
        assert "calling-AE" not in one_error_line(refused)
    dcmtk_refused = storescu("--user", "bob", "--password", "wrong", LOCAL, qr.port, MR_IMPLICIT)
    assert dcmtk_refused.returncode != 0
    assert "no user identity presented" in qr.log()
    assert "bad user name or passcode" in qr.log()


# -- transfer syntaxes: what DCMTK's storescp wrote ------------------------------------------------


@pytest.mark.parametrize(
    ("option", "scp_option", "written"),
    [
        (["-xe"], "+xa", uids.EXPLICIT_VR_LITTLE_ENDIAN),
        (["-xb"], "+xb", uids.EXPLICIT_VR_BIG_ENDIAN),
        (["-xi"], "+xa", uids.IMPLICIT_VR_LITTLE_ENDIAN),
        (["-xd"], "+xa", uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
        (["--propose-ts", "ExplicitVRBigEndian"], "+xa", uids.EXPLICIT_VR_BIG_ENDIAN),
    ],
    ids=["xe", "xb", "xi", "xd", "propose-ts"],
)
def test_store_transfer_syntax_options_against_storescp(
    storescp_peer: Callable[..., peers.PeerProcess],
    option: list[str],
    scp_option: str,
    written: str,
) -> None:
    peer = storescp_peer(accept_all=False, extra=[scp_option])
    assert peer.data_dir is not None
    result = aiodimse("store", LOCAL, peer.port, MR_IMPLICIT, *option)
    assert result.returncode == 0, result.stderr
    (path,) = peer.data_dir.iterdir()
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == written
    assert ds.SOPInstanceUID == read_part10(MR_IMPLICIT).sop_instance_uid
    assert (ds.pixel_array == dcmread(MR_IMPLICIT).pixel_array).all()


def test_store_lossless_options_send_compressed_files_as_they_are(
    storescp_peer: Callable[..., peers.PeerProcess], tmp_path: Path
) -> None:
    """-xt: a JPEG-LS file goes as it is, an implicit VR one (same SOP class) converted to
    an uncompressed syntax, never compressed."""
    peer = storescp_peer()
    assert peer.data_dir is not None
    other = dcmread(MR_IMPLICIT)
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    other.save_as(tmp_path / "other.dcm")
    result = aiodimse("store", LOCAL, peer.port, tmp_path / "other.dcm", JLS, "-xt")
    assert result.returncode == 0, result.stderr
    written = {
        dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
        for p in peer.data_dir.iterdir()
    }
    assert written == {uids.JPEG_LS_LOSSLESS, uids.EXPLICIT_VR_LITTLE_ENDIAN}
