"""Ready-made context proposals: what they offer, and that files then travel untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import aiodimse
from aiodimse import contexts, uids
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.testing.peers import PeerProcess
from aiodimse.testing.synthetic import make_study, write_study
from aiodimse.ul.negotiation import MAX_CONTEXTS

CT = uids.STORAGE_SOP_CLASSES["CTImageStorage"]
MR = uids.STORAGE_SOP_CLASSES["MRImageStorage"]
JPEG_LOSSLESS = uids.JPEG_LOSSLESS
EXPLICIT = uids.EXPLICIT_VR_LITTLE_ENDIAN
IMPLICIT = uids.IMPLICIT_VR_LITTLE_ENDIAN


def offered(requests: list[aiodimse.ContextRequest]) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.abstract_syntax, r.transfer_syntaxes) for r in requests]


def test_each_instance_syntax_gets_a_context_of_its_own_then_a_fallback() -> None:
    got = offered(
        contexts.for_instances(
            [(CT, EXPLICIT), (CT, JPEG_LOSSLESS), (MR, IMPLICIT), (CT, EXPLICIT)]
        )
    )
    assert got == [
        (CT, (EXPLICIT,)),
        (CT, (JPEG_LOSSLESS,)),
        (MR, (IMPLICIT,)),
        (CT, (IMPLICIT,)),  # fallback for the explicit file: the other uncompressed syntax
        (CT, (EXPLICIT, IMPLICIT)),  # fallback for the JPEG file: conversion targets
        (MR, (EXPLICIT,)),
    ]


def test_fallbacks_are_dropped_first_when_contexts_run_out() -> None:
    classes = [f"1.2.3.{i}" for i in range(1, 101)]
    got = contexts.for_instances([(c, EXPLICIT) for c in classes])
    assert len(got) == MAX_CONTEXTS
    assert [r.transfer_syntaxes for r in got[:100]] == [(EXPLICIT,)] * 100
    with pytest.raises(ValueError, match=r"PS3\.8 allows 128"):
        contexts.for_instances([(f"1.2.3.{i}", EXPLICIT) for i in range(1, 130)])


def test_default_proposals_fit_and_offer_no_deflate() -> None:
    for proposal in (contexts.default(), contexts.for_get()):
        assert len(proposal) <= MAX_CONTEXTS
        syntaxes = {ts for r in proposal for ts in r.transfer_syntaxes}
        assert uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN not in syntaxes
    roles = {
        (r.scu_role, r.scp_role)
        for r in contexts.for_get()
        if r.abstract_syntax in contexts.COMMON_STORAGE
    }
    assert roles == {(False, True)}


def test_for_files_skips_what_is_not_dicom(tmp_path: Path) -> None:
    files = write_study(tmp_path, make_study(2, rows=8, cols=8, seed="ctx"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    got = offered(contexts.for_files([*files, junk, tmp_path / "missing.dcm"]))
    assert got == [
        (uids.VERIFICATION_SOP_CLASS, (EXPLICIT, IMPLICIT)),
        (CT, (EXPLICIT,)),
        (CT, (IMPLICIT,)),
    ]


@pytest.mark.interop
async def test_files_reach_an_accept_all_storescp_untouched(
    tmp_path: Path, storescp_peer: Callable[..., PeerProcess]
) -> None:
    # storescp +xa picks Deflated when offered next to the file's own syntax; with the
    # file's syntax in a context of its own the data set arrives exactly as stored.
    files = write_study(tmp_path / "src", make_study(3, rows=16, cols=16, seed="xa"))
    implicit = write_study(
        tmp_path / "src-implicit",
        make_study(1, rows=16, cols=16, seed="xa-implicit", transfer_syntax=IMPLICIT),
    )
    peer = storescp_peer(accept_all=True, extra=["+B"])
    sent = [*files, *implicit]
    async with aiodimse.connect(
        "127.0.0.1", peer.port, called_ae="STORESCP", contexts=contexts.for_files(sent)
    ) as assoc:
        for path in sent:
            await assoc.store(path)
    received = {read_part10(p).sop_instance_uid: p for p in Path(peer.data_dir).iterdir()}
    for path in sent:
        info = read_part10(path)
        copy = received[info.sop_instance_uid]
        assert read_part10(copy).transfer_syntax_uid == info.transfer_syntax_uid
        assert dataset_bytes(copy, read_part10(copy)) == dataset_bytes(path, info)
