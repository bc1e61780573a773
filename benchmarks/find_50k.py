"""One C-FIND with 50,000 matches from the archive: the server's memory growth and the
longest time its event loop was held, while ``aiodimse find`` reads the matches.

    python benchmarks/find_50k.py [--matches 50000]

The archive runs in this process (its index filled directly, no files needed for a
C-FIND); a ticker task measures the longest gap between its turns on the loop. The client
is the command line, in a process of its own.
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

from aiodimse.archive import ArchiveServer  # noqa: E402
from aiodimse.archive.index import Record  # noqa: E402

STUDY = "1.2.826.0.1.3680043.2.1143.8"


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def main(matches: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="aiodimse-find50k-"))
    server = ArchiveServer(work / "archive", port=0, ae_title="QRSCP")
    index = server.archive.index
    index.begin()
    for i in range(matches):
        index.upsert(
            Record(
                sop_instance_uid=f"1.2.826.0.1.3680043.2.1143.9.{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax="1.2.840.10008.1.2.1",
                patient_id="BIG",
                patient_name="BIG^FIND",
                study_uid=STUDY,
                series_uid="1.2.826.0.1.3680043.2.1143.7",
                instance_number=str(i),
            ),
            f"files/x/{i}.dcm",
            1000,
        )
    index.commit()
    longest = 0.0
    peak_rss = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest, peak_rss
        loop = asyncio.get_running_loop()
        last = loop.time()
        turns = 0
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = loop.time()
            longest = max(longest, now - last - 0.001)
            last = now
            turns += 1
            if turns % 20 == 0:
                peak_rss = max(peak_rss, _status()["VmRSS"])

    async with server:
        before = _status()
        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiodimse",
            "find",
            "127.0.0.1",
            str(server.port),
            "--aec",
            "QRSCP",
            "--level",
            "IMAGE",
            "-k",
            f"StudyInstanceUID={STUDY}",
            "-k",
            "SOPInstanceUID=",
            "-k",
            "InstanceNumber=",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await client.communicate()
        wall = time.perf_counter() - started
        stop.set()
        await tick
    server.archive.close()
    print(
        f"C-FIND of {matches} matches from the archive, read by 'aiodimse find':"
        f" {wall:.1f} s ({matches / wall:,.0f} responses/s); {err.decode().strip()}"
    )
    print(
        f"  server RSS {before['VmRSS'] / 1024:.1f} MiB before, at most"
        f" {peak_rss / 1024:.1f} MiB during (+{(peak_rss - before['VmRSS']) / 1024:.1f});"
        f" longest time the loop was held: {longest * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matches", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().matches))
