"""pynetdicom's Query/Retrieve SCP over a folder of Part 10 files, as a peer for tests.

``python -m aiodimse.testing.pynetdicom_qr --port P --ae AE --dest AE=HOST:PORT FILE...``
serves C-GET and C-MOVE by StudyInstanceUID with pynetdicom's own handlers, the way
pynetdicom's documentation shows (the FIND model is accepted but has no handler, so
pynetdicom answers a C-FIND with a failure status). It bends the standard as pynetdicom
3 does (its C-STORE sub-operations carry its *own* AE title as Move Originator AE Title),
which is why aiodimse tests against it. It prints ``ready`` once listening and stops on
SIGTERM. pynetdicom is the "bench" extra; this module is only run as a subprocess.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from .. import uids

#: The Study Root models the peer accepts by default.
STUDY_ROOT_MODELS = (uids.STUDY_ROOT_QR_FIND, uids.STUDY_ROOT_QR_MOVE, uids.STUDY_ROOT_QR_GET)


def qr_ae(
    ae_title: str,
    files: Sequence[Path],
    destinations: Mapping[str, tuple[str, int]],
    *,
    models: Sequence[str] = (
        uids.STUDY_ROOT_QR_FIND,
        uids.STUDY_ROOT_QR_MOVE,
        uids.STUDY_ROOT_QR_GET,
    ),
    timeout: float = 30,
    sub_association_handlers: Sequence[Any] = (),
) -> tuple[Any, list[Any]]:
    """pynetdicom's AE serving C-GET and C-MOVE by StudyInstanceUID over ``files``, and its
    event handlers: the storage contexts of the files' classes (SCP role for C-GET, asked
    for on the C-MOVE sub-association, whose ``sub_association_handlers`` are given to
    pynetdicom's ``associate()``). The sub-operations yield pydicom Datasets, read with
    ``dcmread``: pynetdicom 3 accepts nothing else for them."""
    from pynetdicom import AE, evt  # the peer itself: only its own process needs it

    index: list[tuple[Path, str]] = []
    classes: dict[str, str] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        index.append((path, str(ds.StudyInstanceUID)))
        classes[str(ds.SOPClassUID)] = str(ds.file_meta.TransferSyntaxUID)

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for model in models:
        ae.add_supported_context(model)
    for sop_class, syntax in classes.items():
        # C-GET: the requestor proposes the SCP role for storage, we take the SCU role.
        ae.add_supported_context(sop_class, syntax, scu_role=True, scp_role=True)
        # C-MOVE: the sub-association to the destination.
        ae.add_requested_context(sop_class, syntax)

    def matches(identifier: Any) -> list[Path]:
        wanted = str(getattr(identifier, "StudyInstanceUID", "") or "")
        return [path for path, study in index if not wanted or study == wanted]

    def sub_operations(event: Any) -> Iterator[Any]:
        """How many instances match, then each as a data set (until cancelled)."""
        found = matches(event.identifier)
        yield len(found)
        for path in found:
            if event.is_cancelled:
                yield (0xFE00, None)
                return
            yield (0xFF00, dcmread(path))

    def handle_move(event: Any) -> Iterator[Any]:
        destination = destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield (None, None)
            return
        if sub_association_handlers:
            yield (*destination, {"evt_handlers": list(sub_association_handlers)})
        else:
            yield destination
        yield from sub_operations(event)

    def handle_get(event: Any) -> Iterator[Any]:
        yield from sub_operations(event)

    return ae, [(evt.EVT_C_MOVE, handle_move), (evt.EVT_C_GET, handle_get)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiodimse.testing.pynetdicom_qr")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ae", default="PYNETDICOM")
    parser.add_argument("--dest", action="append", default=[], help="AE=HOST:PORT")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)

    destinations: dict[str, tuple[str, int]] = {}
    for item in args.dest:
        ae_title, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        destinations[ae_title] = (host, int(port))
    ae, handlers = qr_ae(args.ae, args.files, destinations)
    server = ae.start_server(("127.0.0.1", args.port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False returns the server
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
