"""PDU codec speed: aiodimse.pdu vs pynetdicom.pdu, encode and decode, in one process.

Rows: P-DATA-TF with one PDV of 16 KiB and of 1 MiB, and an A-ASSOCIATE-RQ proposing 120
storage classes x 3 transfer syntaxes with 120 SCP/SCU role selection sub-items (the shape
of a C-GET SCU's request). Both codecs are checked to produce the very same bytes before
anything is timed. Each measurement is ``timeit``-style: the loop count is calibrated to
take at least ``--min-time`` seconds, repeated ``--repeat`` times, and the best repeat is
reported (the least disturbed by other load); the median is kept in the JSON.

Also shown, aiodimse only (ratio against pynetdicom's encode/decode of the same PDU): the
paths the association layer really uses, ``pdata_fragments`` (headers + memoryviews, no
copy) and ``PDUReader`` framing of the bytes as the transport delivers them (reads of
256 KiB) followed by ``decode_pdu``. pynetdicom has no separable framing step (its socket
reader assembles each PDU), so that row compares more work on our side with less on theirs.

    python benchmarks/bench_pdu.py [--quick] [--repeat 7] [--min-time 0.2]
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _common as C
from pynetdicom import pdu as pnd_pdu
from pynetdicom import pdu_items as pnd_items

from aiodimse import pdu, uids
from aiodimse.ul.negotiation import ContextRequest, build_request

TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
)


@dataclass
class Timing:
    """Seconds per call: best and median of the repeats."""

    best: float
    median: float
    loops: int


def time_call(fn: Callable[[], object], repeat: int, min_time: float) -> Timing:
    timer = timeit.Timer(fn)
    loops = 1
    while True:
        elapsed = timer.timeit(loops)
        if elapsed >= min_time:
            break
        loops = max(loops * 2, int(loops * min_time / max(elapsed, 1e-9) * 1.2))
    per_call = [timer.timeit(loops) / loops for _ in range(repeat)]
    return Timing(min(per_call), statistics.median(per_call), loops)


# -- the PDUs ---------------------------------------------------------------------------------


def pdata_pair(size: int) -> tuple[pdu.PDataTF, Any, bytes]:
    """The same P-DATA-TF (one last data-set fragment of ``size`` bytes) in both codecs."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = pdu.PDataTF((pdu.PresentationDataValue(1, 0x02, data),))
    theirs = pnd_pdu.P_DATA_TF()
    item = pnd_items.PresentationDataValueItem()
    item.presentation_context_id = 1
    # pynetdicom keeps the message control header as the first byte of the PDV value.
    item.presentation_data_value = b"\x02" + data
    theirs.presentation_data_value_items = [item]
    raw = ours.encode()
    if theirs.encode() != raw:
        raise SystemExit("P-DATA-TF: the two codecs disagree; nothing to compare")
    return ours, theirs, raw


def associate_rq_pair() -> tuple[pdu.AAssociateRQ, Any, bytes]:
    """An A-ASSOCIATE-RQ with 120 contexts x 3 syntaxes and 120 role selections, both codecs."""
    classes = sorted(uids.STORAGE_SOP_CLASSES.values())[:120]
    contexts = [ContextRequest(c, TRANSFER_SYNTAXES, scu_role=True, scp_role=True) for c in classes]
    ours = build_request(
        "BENCHSCU",
        "BENCHSCP",
        contexts,
        max_pdu=16384,
        implementation_class_uid=uids.IMPLEMENTATION_CLASS_UID,
        implementation_version_name=uids.IMPLEMENTATION_VERSION_NAME,
    )
    raw = ours.encode()
    theirs = pnd_pdu.A_ASSOCIATE_RQ()
    theirs.decode(raw)
    if theirs.encode() != raw:
        raise SystemExit("A-ASSOCIATE-RQ: the two codecs disagree; nothing to compare")
    return ours, theirs, raw


def _pnd_decode(cls: type[Any], raw: bytes) -> Callable[[], object]:
    def decode() -> object:
        p = cls()
        p.decode(raw)
        return p

    return decode


def _decode(raw: bytes) -> Callable[[], object]:
    def decode() -> object:
        return pdu.decode_pdu(raw)

    return decode


def _fragments(data: bytes) -> Callable[[], object]:
    def send_path() -> object:
        return list(pdu.pdata_fragments(1, False, data, 0))

    return send_path


#: What asyncio's selector transport reads per recv() (CPython 3.11: 256 KiB).
_READ_SIZE = 256 * 1024


def _reader(raw: bytes) -> Callable[[], object]:
    # The bytes arrive as the transport delivers them, in reads of at most 256 KiB.
    chunks = [raw[i : i + _READ_SIZE] for i in range(0, len(raw), _READ_SIZE)]

    def receive_path() -> object:
        reader = pdu.PDUReader(max_pdata_length=len(raw))
        out = []
        for chunk in chunks:
            reader.feed(chunk)
            while (one := reader.next_raw()) is not None:
                out.append(pdu.decode_pdu(one))
        return out

    return receive_path


@dataclass
class Case:
    pdu: str
    operation: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    size: int


def run_case(
    case: Case, repeat: int, min_time: float, records: list[dict[str, Any]], group: str
) -> list[object]:
    """Time both sides of one row; append its record; return its table cells."""
    t_ours = time_call(case.ours, repeat, min_time)
    t_theirs = time_call(case.theirs, repeat, min_time)
    ours_rate = 1 / t_ours.best
    theirs_rate = 1 / t_theirs.best
    records.append(
        {
            "group": group,
            "pdu": case.pdu,
            "operation": case.operation,
            "pdu_bytes": case.size,
            "aiodimse": {"best_s": t_ours.best, "median_s": t_ours.median, "loops": t_ours.loops},
            "pynetdicom": {
                "best_s": t_theirs.best,
                "median_s": t_theirs.median,
                "loops": t_theirs.loops,
            },
            "ratio_best": ours_rate / theirs_rate,
            "ratio_median": t_theirs.median / t_ours.median,
        }
    )
    return [
        f"{case.pdu} {case.operation}",
        f"{case.size:,}",
        ours_rate * case.size / 1e6,
        ours_rate,
        theirs_rate * case.size / 1e6,
        theirs_rate,
        f"{ours_rate / theirs_rate:.2f}x",
    ]


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=None, help="repeats per row (7; quick 3)")
    parser.add_argument(
        "--min-time", type=float, default=None, help="seconds per repeat (0.2; quick 0.01)"
    )
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    min_time = args.min_time or (0.01 if args.quick else 0.2)

    env = C.environment()
    print(f"bench_pdu: PDU encode/decode, one process; {C.load_caveat()}")
    print(f"best of {repeat} repeats of >= {min_time} s each (median in the JSON)")

    codec: list[Case] = []
    paths: list[Case] = []
    for label, size in (("P-DATA-TF 16 KiB", 16 * 1024), ("P-DATA-TF 1 MiB", 1024 * 1024)):
        ours, theirs, raw = pdata_pair(size)
        data = bytes(ours.items[0].data)
        pnd_decode = _pnd_decode(pnd_pdu.P_DATA_TF, raw)
        codec.append(Case(label, "encode", ours.encode, theirs.encode, len(raw)))
        codec.append(Case(label, "decode", _decode(raw), pnd_decode, len(raw)))
        paths.append(
            Case(label, "pdata_fragments vs encode", _fragments(data), theirs.encode, len(raw))
        )
        paths.append(Case(label, "PDUReader+decode vs decode", _reader(raw), pnd_decode, len(raw)))
    ours_rq, theirs_rq, raw_rq = associate_rq_pair()
    label = "A-ASSOCIATE-RQ 120x3 + roles"
    codec.append(Case(label, "encode", ours_rq.encode, theirs_rq.encode, len(raw_rq)))
    codec.append(
        Case(
            label,
            "decode",
            _decode(raw_rq),
            _pnd_decode(pnd_pdu.A_ASSOCIATE_RQ, raw_rq),
            len(raw_rq),
        )
    )

    records: list[dict[str, Any]] = []
    headers = [
        "PDU / operation",
        "bytes",
        "aiodimse MB/s",
        "PDUs/s",
        "pynetdicom MB/s",
        "PDUs/s",
        "aiodimse / pynetdicom",
    ]
    C.print_table(
        "PDU codec: aiodimse.pdu vs pynetdicom.pdu, best of repeats (MB = 10^6 bytes)",
        headers,
        [run_case(c, repeat, min_time, records, "codec") for c in codec],
    )
    C.print_table(
        "aiodimse's own send/receive paths (no copy of the data on send; framing from a "
        "byte stream on receive), against pynetdicom's encode/decode of the same PDU",
        headers,
        [run_case(c, repeat, min_time, records, "paths") for c in paths],
    )
    print(
        "\nnote: aiodimse's decode is zero-copy (PDV data are memoryviews into the PDU); "
        "pynetdicom copies each PDV value into new bytes."
    )
    payload = {
        "benchmark": "bench_pdu",
        "quick": args.quick,
        "repeat": repeat,
        "min_time": min_time,
        "environment": env,
        "load_after": C.load_caveat(),
        "rows": records,
    }
    C.finish(args, "bench_pdu", payload)


if __name__ == "__main__":
    main()
