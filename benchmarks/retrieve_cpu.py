"""CPU per instance of a C-GET or C-MOVE with everything in one process: the archive, the
SCU and (for C-MOVE) its receiving StorageServer on one event loop.

    python benchmarks/retrieve_cpu.py get|move [--instances 400]

Steadier than rates on a busy machine for comparing two versions of the code: run it
alternately against each (``PYTHONPATH=<checkout>``) and compare the ms per instance.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

import pydicom  # noqa: E402

import aiodimse  # noqa: E402
from aiodimse.testing.synthetic import make_study, write_study  # noqa: E402


async def measure(files: list[Path], work: Path, service: str) -> tuple[float, float, int]:
    async with aiodimse.ArchiveServer(work / "arch", port=0, ae_title="QRSCP") as archive:
        contexts = aiodimse.contexts.for_files(files)
        async with aiodimse.connect(
            "127.0.0.1", archive.port, called_ae="QRSCP", contexts=contexts
        ) as a:
            for path in files:
                await a.store(path)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}
        if service == "get":
            get_contexts = aiodimse.contexts.for_get()
            async with aiodimse.connect(
                "127.0.0.1", archive.port, called_ae="QRSCP", contexts=get_contexts
            ) as a:
                cpu, wall = time.process_time(), time.perf_counter()
                result = await a.get(query, receiver=aiodimse.DirectorySink(work / "got"))
        else:
            async with aiodimse.StorageServer(work / "moved", port=0, ae_title="DEST") as dest:
                archive.destinations["DEST"] = ("127.0.0.1", dest.port)
                async with aiodimse.connect("127.0.0.1", archive.port, called_ae="QRSCP") as a:
                    cpu, wall = time.process_time(), time.perf_counter()
                    result = await a.move(query, "DEST", receiver=dest)
        return time.process_time() - cpu, time.perf_counter() - wall, result.completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=("get", "move"))
    parser.add_argument("--instances", type=int, default=400)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiodimse-retrieve-cpu-"))
    files = write_study(work / "src", make_study(args.instances, rows=128, cols=128, seed="ab"))
    cpu, wall, n = asyncio.run(measure(files, work, args.service))
    print(f"{args.service}: {n} instances, {cpu / n * 1000:.3f} ms CPU per instance, {wall:.2f} s")


if __name__ == "__main__":
    main()
