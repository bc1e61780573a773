"""One study of a job, start to finish on one association: list what the source has
(IMAGE-level C-FIND), compare with what is on disk, fetch only what is missing (the whole
study at STUDY level, or the missing instances at IMAGE level), and verify again."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..association import Association, connect
from ..config import Timeouts
from ..dimse.status import StatusCategory
from ..errors import AiodimseError, NegotiationError, StatusError
from ..results import RetrieveResult
from ..server import StorageServer
from ..uids import VERIFICATION_SOP_CLASS
from .destination import Destination
from .spec import JobSpec, Source

__all__ = ["UIDS_PER_REQUEST", "Outcome", "StudyFetcher"]

log = logging.getLogger("aiodimse.jobs")

#: SOP Instance UIDs named in one IMAGE-level retrieve (a UID list, PS3.4 C.2.2.2.2).
UIDS_PER_REQUEST = 64


@dataclass
class Outcome:
    """What became of a study on one attempt. ``missing`` lists the expected instances
    that are not on disk; ``error`` is the last failure, if any."""

    expected: int | None
    received: int
    missing: list[str] = field(default_factory=list)
    error: BaseException | None = None
    verified: bool = True
    #: Every expected instance present and verified.
    complete: bool = False


@dataclass
class Expected:
    """The instances a source lists for a study: SOP Instance UID -> Series Instance UID;
    ``count`` alone when the source does not answer IMAGE-level queries."""

    series_of: dict[str, str] | None
    count: int | None


def result_error(result: RetrieveResult, method: str) -> StatusError:
    """A retrieve that did not bring everything, as an error naming its status and counts."""
    detail = f"{result.completed} completed, {result.failed} failed, {result.warning} warning"
    if result.undelivered:
        detail += f", {result.undelivered} reported completed but never arrived"
    return StatusError(
        result.status.code, detail=detail, service="C-GET" if method == "get" else "C-MOVE"
    )


def _check_get_roles(assoc: Association) -> None:
    """PS3.4 C.4.3.1: a C-GET's instances come back as C-STORE requests on the same
    association, which needs the SCP role for storage classes (PS3.7 D.3.3.4). A source
    that grants it for none cannot send anything: no retry will change that."""
    negotiated = assoc.negotiated
    granted = [
        c
        for c in (negotiated.accepted if negotiated else ())
        if c.scp and c.abstract_syntax not in (VERIFICATION_SOP_CLASS,)
    ]
    if not granted:
        raise NegotiationError(
            f"{assoc.peer_ae} granted no SCP role for any storage class: it cannot send"
            " C-GET sub-operations (use --method move, or enable C-GET on the source)"
        )


class StudyFetcher:
    """Fetches studies from one source over one association, opened when first needed
    and kept for the next study; a failure closes it and the next study opens another."""

    def __init__(
        self,
        spec: JobSpec,
        source: Source,
        contexts: Sequence[Any],
        *,
        folders: Destination | None,
        receiver: StorageServer | None,
        timeouts: Timeouts,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.contexts = list(contexts)
        self.folders = folders
        self.receiver = receiver
        self.timeouts = timeouts
        self.on_progress = on_progress
        self._assoc: Association | None = None

    async def association(self) -> Association:
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            self._assoc = assoc = await connect(
                self.source.host,
                self.source.port,
                calling_ae=self.spec.calling_ae,
                called_ae=self.source.called_ae,
                contexts=self.contexts,
                timeouts=self.timeouts,
            )
            if self.spec.method == "get":
                _check_get_roles(assoc)
        return assoc

    async def close(self, *, abort: bool = False) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        try:
            if abort or not assoc.is_established:
                await assoc.abort()
            else:
                await assoc.release()
        except (AiodimseError, OSError):
            pass

    # -- listing ------------------------------------------------------------------------

    async def list_instances(self, study_uid: str, hint: int | None) -> Expected:
        """The study's instances at the source, by IMAGE-level C-FIND; when the source
        refuses that query, the instance count from the STUDY level (``hint``)."""
        assoc = await self.association()
        query = {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": "",
            "SOPInstanceUID": "",
        }
        try:
            result = await assoc.find(query, model=self.source.model)
        except StatusError as exc:
            log.info("%s: IMAGE-level C-FIND refused (%s); counting instead", study_uid, exc)
            return Expected(None, hint if hint is not None else await self._count(study_uid))
        series_of: dict[str, str] = {}
        for match in result.matches:
            sop = str(match.get("SOPInstanceUID", "") or "").strip()
            if sop:
                series_of[sop] = str(match.get("SeriesInstanceUID", "") or "").strip()
        return Expected(series_of, len(series_of))

    async def _count(self, study_uid: str) -> int | None:
        assoc = await self.association()
        query = {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": study_uid,
            "NumberOfStudyRelatedInstances": "",
        }
        try:
            result = await assoc.find(query, model=self.source.model)
        except StatusError:
            return None
        for match in result.matches:
            value = match.get("NumberOfStudyRelatedInstances")
            if value not in (None, ""):
                return int(value)
        return None

    # -- fetching -----------------------------------------------------------------------

    def requests_for(
        self, study_uid: str, expected: Expected, missing: set[str]
    ) -> list[dict[str, str]]:
        """The retrieve identifiers that bring ``missing``: the whole study when nothing
        of it is here, otherwise the missing instances by series, a few dozen at a time."""
        whole = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}
        if expected.series_of is None or len(missing) == len(expected.series_of):
            return [whole]
        by_series: dict[str, list[str]] = defaultdict(list)
        for uid in sorted(missing):
            by_series[expected.series_of[uid]].append(uid)
        requests = []
        for series, uids in sorted(by_series.items()):
            for i in range(0, len(uids), UIDS_PER_REQUEST):
                requests.append(
                    {
                        "QueryRetrieveLevel": "IMAGE",
                        "StudyInstanceUID": study_uid,
                        "SeriesInstanceUID": series,
                        "SOPInstanceUID": "\\".join(uids[i : i + UIDS_PER_REQUEST]),
                    }
                )
        return requests

    async def retrieve(self, query: dict[str, str]) -> RetrieveResult:
        assoc = await self.association()
        spec = self.spec
        model = self.source.model
        if spec.method == "get":
            assert self.folders is not None
            operation = assoc.get(query, model=model, receiver=self.folders, check=False)
        elif spec.method == "move":
            operation = assoc.move(
                query, spec.calling_ae, model=model, receiver=self.receiver, check=False
            )
        else:
            operation = assoc.move(query, spec.destination, model=model, check=False)
        result: RetrieveResult = await operation
        return result

    async def fetch(self, study_uid: str, hint: int | None) -> Outcome:
        """One attempt at a study: list, compare, fetch what is missing, verify."""
        expected = await self.list_instances(study_uid, hint)
        if self.spec.method == "move-to":
            return await self._fetch_elsewhere(study_uid, expected)
        folders = self.folders
        assert folders is not None
        listed = expected.series_of
        present = folders.present(study_uid, None if listed is None else listed.keys())
        missing = set() if listed is None else set(listed) - present
        if listed is not None and not missing:
            return Outcome(len(listed), len(present), complete=True)
        if listed is not None:
            folders.expect(study_uid, missing)
        error: BaseException | None = None
        try:
            for query in self.requests_for(study_uid, expected, missing):
                result = await self.retrieve(query)
                if not result.complete:
                    error = result_error(result, self.spec.method)
                    if result.status.category is StatusCategory.FAILURE:
                        break  # the next request would meet the same refusal
        finally:
            if listed is not None:
                folders.forget(missing)
        if listed is None:
            present = folders.present(study_uid)
            count = expected.count
            done = count is not None and len(present) >= count and error is None
            return Outcome(count, len(present), error=error, complete=done, verified=done)
        present = folders.present(study_uid, listed.keys())
        still = sorted(set(listed) - present)
        return Outcome(len(listed), len(present), still, error=error, complete=not still)

    async def _fetch_elsewhere(self, study_uid: str, expected: Expected) -> Outcome:
        """A move to a third-party AE, verified by an IMAGE-level C-FIND there when the
        job names where it answers queries."""
        result = await self.retrieve({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid})
        error = None if result.complete else result_error(result, self.spec.method)
        count = expected.count
        if self.spec.verify is None or expected.series_of is None:
            ok = error is None and (count is None or result.completed + result.warning >= count)
            return Outcome(
                count, result.completed + result.warning, error=error, verified=False, complete=ok
            )
        host, port, ae = self.spec.verify
        async with connect(
            host, port, calling_ae=self.spec.calling_ae, called_ae=ae, timeouts=self.timeouts
        ) as check:
            found = await check.find(
                {
                    "QueryRetrieveLevel": "IMAGE",
                    "StudyInstanceUID": study_uid,
                    "SeriesInstanceUID": "",
                    "SOPInstanceUID": "",
                }
            )
        there = {str(m.get("SOPInstanceUID", "")).strip() for m in found.matches}
        still = sorted(set(expected.series_of) - there)
        return Outcome(
            len(expected.series_of),
            len(expected.series_of) - len(still),
            still,
            error=error,
            complete=not still,
        )
