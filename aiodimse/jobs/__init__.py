"""Bulk retrieval jobs: thousands of studies from one or more sources, over many
associations on one event loop, journalled (resumable after a crash) and verified
instance by instance.

``job = await RetrieveJob.create("job.db", JobSpec(...))``, then
``async for event in job.run(): ...``; ``RetrieveJob.open("job.db")`` resumes it.
"""

from .journal import FINAL_STATES, STATES, Journal, JournalError, SQLiteJournal, StudyRow
from .runner import JobError, JobEvent, JobReport, RetrieveJob, open_or_create
from .spec import JobSpec, Limits, Source, TimeWindow, WorkItem, parse_rate, read_work_file

__all__ = [
    "FINAL_STATES",
    "STATES",
    "JobError",
    "JobEvent",
    "JobReport",
    "JobSpec",
    "Journal",
    "JournalError",
    "Limits",
    "RetrieveJob",
    "SQLiteJournal",
    "Source",
    "StudyRow",
    "TimeWindow",
    "WorkItem",
    "open_or_create",
    "parse_rate",
    "read_work_file",
]
