"""Commands run when an instance, or a whole study, has arrived (DCMTK storescp's
``--exec-on-reception`` / ``--exec-on-eostudy``), off the reception's path.

A command line is split like a shell would (``shlex``) and run with
``asyncio.create_subprocess_exec``, its placeholders replaced in each argument (a value
never becomes more than one argument). With ``--exec-shell`` the line is given to
``/bin/sh -c`` as it is, each value shell-quoted where it is put. The placeholders:

====================  ==============================================================
``#p`` / ``{dir}``    the folder: the file's (reception) or the study's (end of study)
``#f`` / ``{path}``   the file (reception only)
``#a`` / ``{ae}``     the calling AE title
``#c`` / ``{called}`` our AE title
``#s`` / ``{study}``  the Study Instance UID (UID grammar checked)
``#n`` / ``{count}``  instances of the study received (end of study only)
====================  ==============================================================

At most ``concurrency`` commands run at once (the rest queue, bounded), each is killed
after ``timeout`` seconds; a failure, a timeout or a full queue is logged, never fatal.

End of study, as DCMTK decides it: a study ends on an association when an instance of
another study arrives on it, or when that association ends; and, in addition, when no
instance of it has arrived for ``idle`` seconds (DCMTK's ``--eostudy-timeout``). A study
sent over several associations at once ends when the last of them has moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import StoredInstance
from ..uids import is_valid_uid

__all__ = ["HookRunner", "StudyTracker", "expand"]

log = logging.getLogger("aiodimse.cli.hooks")

_PLACEHOLDERS = {
    "#p": "dir",
    "#f": "path",
    "#a": "ae",
    "#c": "called",
    "#s": "study",
    "#n": "count",
}


def expand(template: Sequence[str], values: dict[str, str], *, quote: bool = False) -> list[str]:
    """Each argument of ``template`` with its placeholders replaced (never re-split);
    ``quote`` shell-quotes each value (for a line run by ``/bin/sh``)."""
    out = []
    for arg in template:
        for short, name in _PLACEHOLDERS.items():
            value = values.get(name, "")
            arg = arg.replace(short, shlex.quote(value) if quote else value)
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", shlex.quote(value) if quote else value)
        out.append(arg)
    return out


class HookRunner:
    """Runs commands with bounded concurrency, a bounded queue and a timeout each."""

    def __init__(
        self, *, concurrency: int = 4, timeout: float = 60.0, shell: bool = False, queue: int = 1000
    ) -> None:
        self.timeout = timeout
        self.shell = shell
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._queue_limit = queue
        self._tasks: set[asyncio.Task[None]] = set()
        self.ran = self.failed = 0

    def submit(self, what: str, template: Sequence[str], values: dict[str, str]) -> None:
        """Start ``template`` (placeholders filled) in the background; returns at once."""
        if len(self._tasks) >= self._queue_limit:
            log.error("%s hook not run: %d commands already waiting", what, len(self._tasks))
            self.failed += 1
            return
        argv = expand(template, values, quote=self.shell)
        task = asyncio.get_running_loop().create_task(self._run(what, argv))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, what: str, argv: list[str]) -> None:
        async with self._slots:
            try:
                if self.shell:
                    proc = await asyncio.create_subprocess_shell(
                        " ".join(argv), stdin=asyncio.subprocess.DEVNULL
                    )
                else:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL
                    )
            except OSError as exc:
                self.failed += 1
                log.error("%s hook %s: %s", what, argv[0], exc.strerror or exc)
                return
            try:
                code = await asyncio.wait_for(proc.wait(), self.timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                self.failed += 1
                log.error("%s hook %s killed after %.0f s", what, argv[0], self.timeout)
                return
            self.ran += 1
            if code != 0:
                self.failed += 1
                log.error("%s hook %s exited with %d", what, shlex.join(argv)[:200], code)
            else:
                log.info("%s hook %s done", what, argv[0])

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for the commands started so far."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


def study_uid(instance: StoredInstance) -> str | None:
    """The instance's Study Instance UID from its file header, or None (not a valid UID)."""
    if instance.path is None:
        return None
    # Deferred: pydicom takes ~0.3 s to import; a plain `storescp` never reads a header.
    from pydicom import dcmread

    try:
        ds = dcmread(instance.path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception as exc:
        log.warning("%s: cannot read StudyInstanceUID: %s", instance.path, exc)
        return None
    value = str(ds.get("StudyInstanceUID", "") or "").strip()
    return value if is_valid_uid(value) else None


@dataclass
class _Study:
    uid: str
    folder: Path
    calling_ae: str
    count: int = 0
    #: Associations currently sending it.
    senders: set[int] = field(default_factory=set)
    idle: asyncio.TimerHandle | None = None


class StudyTracker:
    """Tells when a study has ended (rule in the module docstring) and runs the hooks.

    ``associations`` looks an association up by id (to wait for its end);
    ``on_reception``/``on_study`` are command templates (or None).
    """

    def __init__(
        self,
        runner: HookRunner,
        *,
        called_ae: str,
        on_reception: Sequence[str] | None,
        on_study: Sequence[str] | None,
        idle: float,
        associations: Any,
    ) -> None:
        self.runner = runner
        self.called_ae = called_ae
        self.on_reception = on_reception
        self.on_study = on_study
        self.idle = idle
        self._associations = associations
        self._studies: dict[str, _Study] = {}
        self._current: dict[int, str] = {}
        self._watched: set[int] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        #: Studies ended so far, in order (folder, count), for the log and the tests.
        self.ended: list[tuple[str, Path, int]] = []

    def __call__(self, instance: StoredInstance) -> None:
        """A StorageServer listener: each committed instance."""
        if instance.path is None:
            return
        study = study_uid(instance) if self.on_study is not None else None
        if self.on_reception is not None:
            self.runner.submit(
                "reception",
                self.on_reception,
                {
                    "dir": str(instance.path.parent),
                    "path": str(instance.path),
                    "ae": instance.calling_ae,
                    "called": self.called_ae,
                    "study": study or "",
                    "count": "1",
                },
            )
        if self.on_study is None or study is None:
            return
        assoc_id = instance.association_id
        previous = self._current.get(assoc_id)
        if previous is not None and previous != study:
            self._leave(previous, assoc_id)
        self._current[assoc_id] = study
        record = self._studies.get(study)
        if record is None:
            record = _Study(study, self._study_folder(instance.path, study), instance.calling_ae)
            self._studies[study] = record
        record.count += 1
        record.senders.add(assoc_id)
        self._arm_idle(record)
        self._watch(assoc_id)

    @staticmethod
    def _study_folder(path: Path, study: str) -> Path:
        """The study's folder: the nearest parent named by its UID, else the file's folder."""
        for parent in path.parents:
            if parent.name == study:
                return parent
        return path.parent

    def _arm_idle(self, record: _Study) -> None:
        if record.idle is not None:
            record.idle.cancel()
        if self.idle > 0:
            loop = asyncio.get_running_loop()
            record.idle = loop.call_later(self.idle, self._end, record.uid, "idle timeout")

    def _watch(self, assoc_id: int) -> None:
        if assoc_id in self._watched:
            return
        assoc = next((a for a in self._associations() if a.id == assoc_id), None)
        if assoc is None:
            return
        self._watched.add(assoc_id)

        async def watch() -> None:
            await assoc.wait_closed()
            self._watched.discard(assoc_id)
            study = self._current.pop(assoc_id, None)
            if study is not None:
                self._leave(study, assoc_id)

        task = asyncio.get_running_loop().create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _leave(self, study: str, assoc_id: int) -> None:
        record = self._studies.get(study)
        if record is None:
            return
        record.senders.discard(assoc_id)
        if not record.senders:
            self._end(
                study,
                "the association moved on"
                if assoc_id in self._current
                else "the association ended",
            )

    def _end(self, study: str, why: str) -> None:
        record = self._studies.pop(study, None)
        if record is None:
            return
        if record.idle is not None:
            record.idle.cancel()
        for assoc_id in list(record.senders):
            if self._current.get(assoc_id) == study:
                del self._current[assoc_id]
        log.info("end of study %s (%d instances, %s)", study, record.count, why)
        self.ended.append((study, record.folder, record.count))
        assert self.on_study is not None
        self.runner.submit(
            "end-of-study",
            self.on_study,
            {
                "dir": str(record.folder),
                "path": str(record.folder),
                "ae": record.calling_ae,
                "called": self.called_ae,
                "study": study,
                "count": str(record.count),
            },
        )

    def close(self) -> None:
        """End every open study (the server stops) and stop watching."""
        for study in list(self._studies):
            self._end(study, "the server stopped")
        for task in self._watchers:
            task.cancel()
