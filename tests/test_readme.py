"""The README's examples run as they are written (only the addresses are made local)."""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from _retrieve_support import data_set_of

import aiodimse
from aiodimse.dicomfile import dataset_bytes, read_part10
from aiodimse.testing.peers import free_ports
from aiodimse.testing.synthetic import make_study, write_study

README = Path(__file__).resolve().parent.parent / "README.md"
LOCAL = "127.0.0.1"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _localised(code: str, ports: dict[str, int]) -> str:
    """The example with its addresses on loopback and its ports free ones."""
    code = code.replace('"pacs.example"', f'"{LOCAL}"').replace('"0.0.0.0"', f'"{LOCAL}"')
    code = code.replace('"10.0.0.5"', f'"{LOCAL}"')
    for written, port in ports.items():
        code = re.sub(rf"\b{written}\b", str(port), code)
    return code


def test_the_readme_has_the_examples_this_file_runs() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 3
    assert "asyncio.run(main())" in blocks[0]
    assert "class Handler" in blocks[1]
    assert "RetrieveJob.create" in blocks[2]


async def test_the_program_example_stores_finds_moves_and_gets(tmp_path: Path) -> None:
    """The first example against the embedded archive (as "PACS"): the instance it stores
    comes back byte-identical by C-MOVE into its own StorageServer and by C-GET."""
    (study,) = [make_study(1, rows=32, cols=32, seed="readme", patient_id="12345")]
    (written,) = write_study(tmp_path / "made", study)
    work = tmp_path / "work"
    work.mkdir()
    (work / "ct.dcm").write_bytes(written.read_bytes())
    uid = read_part10(written).sop_instance_uid
    pacs_port, move_port = free_ports(2)
    script = work / "example.py"
    script.write_text(_localised(_python_blocks()[0], {"11112": pacs_port, "11113": move_port}))
    async with aiodimse.ArchiveServer(
        tmp_path / "archive",
        LOCAL,
        pacs_port,
        ae_title="PACS",
        destinations={"ACME1": (LOCAL, move_port)},
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=work,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("0x0000 Success") and "1 completed, 0 failed" in lines[0]
    assert f"{uid}.dcm" in lines[0]
    size = len(dataset_bytes(written, read_part10(written)))
    assert lines[1] == f"{uid} {size}"
    moved = work / "incoming" / f"{uid}.dcm"
    assert dataset_bytes(moved, read_part10(moved)) == dataset_bytes(written, read_part10(written))


async def test_the_handler_example_serves(tmp_path: Path, capsys: Any) -> None:
    """The second example starts a server; it answers C-ECHO, C-STORE and C-FIND."""
    (study,) = [make_study(1, rows=16, cols=16, seed="readme-handler")]
    (path,) = write_study(tmp_path, study)
    code = _localised(_python_blocks()[1], {"11112": 0}).replace('"ct.dcm"', repr(str(path)))
    namespace: dict[str, Any] = {"aiodimse": aiodimse}
    compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(compiled, namespace)
    if asyncio.iscoroutine(result):
        await result
    server = namespace["server"]
    assert isinstance(server, aiodimse.Server) and server.is_serving()
    assert server.host == LOCAL
    try:
        async with aiodimse.connect(LOCAL, server.port, called_ae="QRSCP") as assoc:
            assert (await assoc.echo()).code == 0
            assert (await assoc.store(path)).code == 0
            found = await assoc.find({"QueryRetrieveLevel": "STUDY", "PatientID": "X"})
        assert [str(m.PatientID) for m in found.matches] == ["X"]
    finally:
        server.close()
        await server.wait_closed()
    assert not server.is_serving()
    assert f"received {read_part10(path).sop_instance_uid}" in capsys.readouterr().out


async def test_the_job_example_fetches_and_verifies_a_study(tmp_path: Path) -> None:
    """The bulk job example against the embedded archive (as "pacs.example"): the study
    dated in its range comes back byte-identical, the other one is not fetched."""
    inside = make_study(2, rows=16, cols=16, seed="readme-job", study_date="20240115")
    outside = make_study(1, rows=16, cols=16, seed="readme-old", study_date="20230115")
    files = write_study(tmp_path / "made", inside + outside)
    work = tmp_path / "work"
    work.mkdir()
    (pacs_port,) = free_ports(1)
    code = _localised(_python_blocks()[2], {"11112": pacs_port}).replace("pacs.example", LOCAL)
    (work / "job_example.py").write_text(code)
    async with aiodimse.ArchiveServer(
        tmp_path / "archive", LOCAL, pacs_port, ae_title="PACS"
    ) as server:
        try:
            server.archive.ingest(files)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "job_example.py",
                cwd=work,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            server.archive.close()
    assert proc.returncode == 0, err.decode()
    assert "1 studies: 1 done; 2 of 2 expected instances on hand" in out.decode()
    got = {p.name: data_set_of(p) for p in (work / "exports").rglob("*.dcm")}
    want = {f.name: data_set_of(f) for f in files[:2]}
    assert got == want
