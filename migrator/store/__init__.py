"""The job table: the only part of migrator that speaks SQL.

``JobStore`` is assembled from one class per concern, each in its own module and
each written against ``Database``'s transaction helpers: the queue the runner
drains, the history of runs, and (in their modules) loading, status and reports.
"""

from __future__ import annotations

from migrator.store.database import Database, describe, utcnow
from migrator.store.loading import LoadCounts, Loading
from migrator.store.queue import (
    Claim,
    Completed,
    Failed,
    Outcome,
    Queue,
    Released,
    Retried,
)
from migrator.store.reports import Reports
from migrator.store.runs import Runs
from migrator.store.schema import Action, State
from migrator.store.status import ErrorCount, RunInfo, Status, StoreStatus


class JobStore(Queue, Runs, Reports, Loading, Status):
    """An open job table, SQLite or PostgreSQL; see ``Database.open``."""


__all__ = [
    "Action",
    "Claim",
    "Completed",
    "Database",
    "ErrorCount",
    "Failed",
    "JobStore",
    "LoadCounts",
    "Outcome",
    "Released",
    "Retried",
    "RunInfo",
    "State",
    "StoreStatus",
    "describe",
    "utcnow",
]
