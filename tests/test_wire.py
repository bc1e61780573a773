"""How the association lays out outgoing P-DATA-TF PDUs (aiodimse.transport.wire.wire_images)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodimse.pdu import PDataTF, PDUReader
from aiodimse.transport.wire import FileRegion, wire_images


def parse(images: list[bytearray]) -> list[PDataTF]:
    reader = PDUReader(max_other_length=1 << 30)
    for image in images:
        reader.feed(bytes(image))
    pdus = list(reader)
    assert reader.buffered == 0
    assert all(isinstance(p, PDataTF) for p in pdus)
    return pdus  # type: ignore[return-value]


def check(pdus: list[PDataTF], head_pdus: int, room: int, expected: bytes) -> None:
    data = pdus[head_pdus:]
    got = b""
    for i, pdu in enumerate(data):
        (pdv,) = pdu.items
        assert pdv.context_id == 5
        assert not pdv.is_command
        assert pdv.is_last == (i == len(data) - 1)
        assert len(pdv.data) <= room
        got += bytes(pdv.data)
    assert got == expected


@settings(max_examples=60)
@given(
    st.binary(max_size=3000), st.sampled_from([2, 10, 64, 1000]), st.sampled_from([16, 100, 5000])
)
def test_buffers_are_laid_out_as_pdus(data: bytes, room: int, batch: int) -> None:
    head = bytes.fromhex("04000000000600000002 0503")
    images = list(wire_images(5, room, head, data, batch))
    check(parse(images), 1, room, data)


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("batch", [40, 1 << 20])
def test_file_regions_are_read_into_place(tmp_path: Path, pad: bool, batch: int) -> None:
    path = tmp_path / "f.bin"
    content = bytes(range(256)) * 10
    path.write_bytes(content)
    region = FileRegion(str(path), offset=100, length=1001, pad=pad)
    head = bytes.fromhex("04000000000600000002 0503")
    images = list(wire_images(5, 64, head, region, batch))
    expected = content[100:1101] + (b"\x00" if pad else b"")
    check(parse(images), 1, 64, expected)


def test_a_file_shorter_than_promised_fails_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 50)
    images = wire_images(5, 64, b"", FileRegion(str(path), 0, 500))
    with pytest.raises(OSError, match="ended"):
        next(images)
