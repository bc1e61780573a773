"""CPU per instance of the embedded archive taking instances in: ``Archive.ingest`` of files,
and C-STORE over loopback with the archive and the SCU on one event loop.

    python benchmarks/archive_cpu.py [--instances 2000] [--size 64] [--dir /dev/shm]

Steadier than rates on a busy machine for comparing two versions of the code: run it
alternately against each (``PYTHONPATH=<checkout>``) and compare the microseconds per
instance. ``--dir`` chooses where the archives go (a tmpfs such as /dev/shm leaves out most
of the file system's cost, which varies from one moment to the next on some machines).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

import aiodimse  # noqa: E402
from aiodimse.archive import Archive, ArchiveServer  # noqa: E402
from aiodimse.testing.synthetic import make_study, write_study  # noqa: E402


def ingest_cpu(files: list[Path], work: Path) -> tuple[float, int]:
    with Archive(work / "ingested") as archive:
        cpu = time.process_time()
        n = archive.ingest(files)
        return time.process_time() - cpu, n


async def store_cpu(files: list[Path], work: Path) -> tuple[float, int]:
    async with ArchiveServer(work / "stored", port=0, ae_title="QRSCP") as server:
        contexts = aiodimse.contexts.for_files(files[:1])
        async with aiodimse.connect(
            "127.0.0.1", server.port, called_ae="QRSCP", contexts=contexts
        ) as assoc:
            cpu = time.process_time()
            for path in files:
                await assoc.store(path)
            spent = time.process_time() - cpu
        return spent, server.archive.count("IMAGE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="rows = columns (default 64)")
    parser.add_argument("--dir", type=Path, default=None, help="where the archives go")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiodimse-archive-cpu-", dir=args.dir))
    try:
        study = make_study(args.instances, rows=args.size, cols=args.size, seed="archive-cpu")
        files = write_study(work / "src", study)
        cpu, n = ingest_cpu(files, work)
        print(f"ingest: {n} instances, {cpu / n * 1e6:.0f} us CPU per instance")
        cpu, n = asyncio.run(store_cpu(files, work))
        print(f"store: {n} instances, {cpu / n * 1e6:.0f} us CPU per instance (SCU + archive)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
