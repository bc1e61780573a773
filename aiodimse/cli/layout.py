"""Where ``storescp`` puts a received file: a path pattern over the data set's elements,
like dcm4che's ``--filepath {0020000D}/{0020000E}/{00080018}.dcm`` (DCMTK's ``-su`` sort on
study is ``{StudyInstanceUID}/{SOPInstanceUID}.dcm``).

The file is written to a temporary name as it arrives; once complete its header is read,
the pattern filled in and the file renamed, before Success is answered. A value becomes
part of a path only once checked: a UID against the UID grammar (PS3.5 9.1), anything
else reduced to letters, digits, ``.``, ``_`` and ``-``; an empty, ``.`` or ``..``
component, or a result outside the output folder, is refused (C000).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..dimse.status import CANNOT_UNDERSTAND
from ..errors import StatusError
from ..requests import StoreRequest
from ..sinks import DirectorySink, FileWriter
from ..uids import is_valid_uid

__all__ = ["SORT_ON_STUDY", "LayoutSink", "PathPattern"]

log = logging.getLogger("aiodimse.cli.layout")

SORT_ON_STUDY = "{StudyInstanceUID}/{SOPInstanceUID}"

_FIELD = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PathPattern:
    """A validated pattern: ``{GGGGEEEE}`` or ``{Keyword}`` fields between literal text."""

    def __init__(self, pattern: str) -> None:
        if not pattern or pattern.startswith(("/", "\\")) or ".." in Path(pattern).parts:
            raise ValueError(f"--filepath {pattern!r}: must be a relative path without '..'")
        self.pattern = pattern
        self.tags: dict[str, int] = {}
        for name in _FIELD.findall(pattern):
            self.tags[name] = self._tag(name)
        if _FIELD.sub("", pattern).count("{") or _FIELD.sub("", pattern).count("}"):
            raise ValueError(f"--filepath {pattern!r}: unbalanced braces")

    @staticmethod
    def _tag(name: str) -> int:
        # Deferred: pydicom takes ~0.3 s to import; a plain `storescp` never reads a header.
        from pydicom.datadict import tag_for_keyword
        from pydicom.tag import Tag

        if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
            return int(Tag(int(name, 16)))
        tag = tag_for_keyword(name)
        if tag is None:
            raise ValueError(f"--filepath: {{{name}}} is neither a tag (GGGGEEEE) nor a keyword")
        return int(tag)

    def render(self, values: dict[int, str]) -> str:
        """The relative path for these element values; StatusError C000 when a value
        cannot safely be part of a path."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            tag = self.tags[name]
            value = values.get(tag, "").strip().strip("\0")
            if _is_uid(tag):
                if not is_valid_uid(value):
                    raise _refuse(f"{name} {value[:64]!r} is not a valid UID")
                return value
            cleaned = _UNSAFE.sub("_", value).strip("._")
            return cleaned or "unknown"

        rendered = _FIELD.sub(fill, self.pattern)
        parts = Path(rendered).parts
        if not parts or Path(rendered).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise _refuse(f"the file path {rendered[:120]!r} is not a safe relative path")
        return rendered


def _is_uid(tag: int) -> bool:
    # Deferred: pydicom takes ~0.3 s to import; a plain `storescp` never reads a header.
    from pydicom.datadict import dictionary_VR

    try:
        return bool(dictionary_VR(tag) == "UI")
    except KeyError:
        return False


def _refuse(detail: str) -> StatusError:
    return StatusError(CANNOT_UNDERSTAND, detail=detail, service="C-STORE")


class _LayoutWriter(FileWriter):
    """A FileWriter that picks its final name from the data set once it is complete."""

    __slots__ = ()

    async def commit(self) -> int | None:
        sink = self.sink
        assert isinstance(sink, LayoutSink)
        # The header is read from the complete temporary file (elements before the
        # pixel data only); the final name is set before the rename in FileWriter.commit.
        self.final = sink.final_path(self.tmp, self.request)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        return await super().commit()


class LayoutSink(DirectorySink):
    """A DirectorySink whose file names follow a :class:`PathPattern` (``extension`` is
    appended when the pattern does not end with it)."""

    writer = _LayoutWriter

    def __init__(
        self,
        directory: str | os.PathLike[str],
        pattern: str | None,
        *,
        extension: str = ".dcm",
        fsync: bool = False,
    ) -> None:
        super().__init__(directory, fsync=fsync)
        self.pattern = PathPattern(pattern) if pattern else None
        self.extension = extension
        if self.pattern is not None and 0x00080018 not in self.pattern.tags.values():
            log.warning(
                "--filepath %s has no {00080018} (SOP Instance UID): instances may replace"
                " each other",
                pattern,
            )

    def path_for(self, sop_instance_uid: str) -> Path:
        path = super().path_for(sop_instance_uid)
        return path.with_name(f"{sop_instance_uid}{self.extension}")

    def final_path(self, written: Path, request: StoreRequest) -> Path:
        if self.pattern is None:
            return self.path_for(request.sop_instance_uid)
        # Deferred: pydicom takes ~0.3 s to import; a plain `storescp` never reads a header.
        from pydicom import dcmread

        try:
            ds = dcmread(
                written, stop_before_pixels=True, specific_tags=list(self.pattern.tags.values())
            )
        except Exception as exc:
            raise _refuse(f"cannot read the data set header: {exc}") from None
        values = {
            tag: str(ds[tag].value if ds[tag].value is not None else "")
            for tag in self.pattern.tags.values()
            if tag in ds
        }
        relative = self.pattern.render(values)
        if self.extension and not relative.endswith(self.extension):
            relative += self.extension
        final = (self.directory / relative).resolve()
        root = self.directory.resolve()
        if root not in final.parents:
            raise _refuse(f"the file path {relative[:120]!r} leaves the output folder")
        return final
