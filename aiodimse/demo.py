"""``aiodimse demo``: the embedded archive and the five classic DIMSE-C operations, end to end.

Starts the archive on a free loopback port with a temporary storage folder, generates a
small CT study, then C-ECHO, C-STORE the study, C-FIND the studies, C-MOVE each study to
a storage server running on this same event loop, and C-GET the study back. It succeeds
only when every instance came back byte-identical both ways.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import contexts
from .archive import ArchiveServer
from .association import connect
from .dicomfile import dataset_bytes, read_part10
from .errors import AiodimseError
from .server import StorageServer
from .sinks import DirectorySink
from .testing.synthetic import make_study, write_study

ARCHIVE_AE = "QRSCP"
CLIENT_AE = "DEMO-SCU"
RECEIVER_AE = "DEMO-STORE"


def _say(text: str) -> None:
    print(text, flush=True)


def _datasets_by_uid(paths: list[Path]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in paths:
        info = read_part10(path)
        out[info.sop_instance_uid] = dataset_bytes(path, info)
    return out


def _compare(what: str, originals: dict[str, bytes], received: list[Path]) -> bool:
    got = _datasets_by_uid(received)
    missing = sorted(set(originals) - set(got))
    different = sorted(uid for uid in originals.keys() & got.keys() if got[uid] != originals[uid])
    if missing or different:
        _say(f"   {what}: {len(missing)} missing, {len(different)} different - FAILED")
        return False
    _say(f"   {what}: all {len(originals)} instances byte-identical")
    return True


async def run_demo(instances: int = 12, keep: Path | None = None) -> int:
    """Run the demo; 0 when everything came back byte-identical, 1 otherwise."""
    if instances < 1:
        print("aiodimse demo: --instances must be at least 1", file=sys.stderr)
        return 2
    scratch = None
    if keep is None:
        scratch = tempfile.TemporaryDirectory(prefix="aiodimse-demo-")
        base = Path(scratch.name)
    else:
        base = keep
        base.mkdir(parents=True, exist_ok=True)
    try:
        return await _run(base, instances, ArchiveServer)
    finally:
        if scratch is not None:
            scratch.cleanup()


async def _run(base: Path, instances: int, archive_server: Any) -> int:
    source = base / "source"
    t0 = time.perf_counter()
    study = make_study(instances, rows=256, cols=256, seed="aiodimse-demo", modality="CT")
    files = write_study(source, study)
    originals = _datasets_by_uid(files)
    size = sum(p.stat().st_size for p in files)
    study_uid = str(study[0].StudyInstanceUID)
    _say(
        f"aiodimse demo: a CT study of {len(files)} instances ({size / 2**20:.1f} MiB) in {source}"
    )

    receiver = StorageServer(base / "moved", "127.0.0.1", 0, ae_title=RECEIVER_AE)
    await receiver.start()
    archive = archive_server(
        base / "archive",
        ae_title=ARCHIVE_AE,
        port=0,
        host="127.0.0.1",
        destinations={RECEIVER_AE: ("127.0.0.1", receiver.port)},
    )
    ok = True
    try:
        async with archive:
            _say(
                f"archive {ARCHIVE_AE} listening on 127.0.0.1:{archive.port}, "
                f"storage {base / 'archive'}; receiver {RECEIVER_AE} on 127.0.0.1:{receiver.port}"
            )
            async with connect(
                "127.0.0.1",
                archive.port,
                calling_ae=CLIENT_AE,
                called_ae=ARCHIVE_AE,
                contexts=contexts.verification()
                + contexts.query_retrieve(get=False)
                + contexts.storage(),
            ) as assoc:
                t = time.perf_counter()
                status = await assoc.echo()
                ms = (time.perf_counter() - t) * 1e3
                _say(f"1. C-ECHO  {ARCHIVE_AE}: {status.name} ({ms:.1f} ms)")

                t = time.perf_counter()
                for path in files:
                    await assoc.store(path)
                dt = time.perf_counter() - t
                _say(
                    f"2. C-STORE {len(files)} instances: all Success "
                    f"({len(files) / dt:.0f} instances/s, {size / 2**20 / dt:.1f} MiB/s)"
                )

                matches = assoc.find(
                    {
                        "QueryRetrieveLevel": "STUDY",
                        "PatientName": "",
                        "PatientID": "",
                        "StudyDate": "",
                        "StudyDescription": "",
                        "StudyInstanceUID": "",
                        "NumberOfStudyRelatedInstances": "",
                    }
                )
                studies = [m async for m in matches]
                _say(f"3. C-FIND  STUDY level: {len(studies)} study(ies), {matches.status}")
                for m in studies:
                    _say(
                        f"   {m.get('PatientName', '')} {m.get('PatientID', '')}"
                        f" {m.get('StudyDate', '')} {m.get('StudyDescription', '')}"
                        f" {m.get('StudyInstanceUID', '')}"
                    )
                found_uids = [str(m.StudyInstanceUID) for m in studies if "StudyInstanceUID" in m]
                if study_uid not in found_uids:
                    _say("   the stored study was not found - FAILED")
                    ok = False

                moved: list[Path] = []
                for uid in found_uids:
                    t = time.perf_counter()
                    result = await assoc.move(
                        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid},
                        RECEIVER_AE,
                        receiver=receiver,
                    )
                    paths = [i.path for i in result.instances if i.path is not None]
                    moved.extend(paths)
                    _say(
                        f"4. C-MOVE  study {uid} -> {RECEIVER_AE} (a storage server on this "
                        f"event loop): {result}; {len(paths)} received "
                        f"({time.perf_counter() - t:.2f} s)"
                    )
                ok = _compare("moved", originals, moved) and ok

            async with connect(
                "127.0.0.1",
                archive.port,
                calling_ae=CLIENT_AE,
                called_ae=ARCHIVE_AE,
                contexts=contexts.for_get(),
            ) as assoc:
                t = time.perf_counter()
                result = await assoc.get(
                    {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid},
                    receiver=DirectorySink(base / "got"),
                )
                got = [i.path for i in result.instances if i.path is not None]
                _say(
                    f"5. C-GET   study {study_uid}: {result}; {len(got)} received on the same "
                    f"association ({time.perf_counter() - t:.2f} s)"
                )
                ok = _compare("got", originals, got) and ok
    except AiodimseError as exc:
        print(f"aiodimse demo: {exc}", file=sys.stderr)
        ok = False
    finally:
        receiver.close()
        await receiver.wait_closed()
        archive.archive.close()
    verdict = "OK" if ok else "FAILED"
    _say(f"demo {verdict} in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
