"""What the job table holds: counts by state, common errors, speed and time left.

Every query here is answered from an index, never by reading the rows of the
table: counts by state from ``(state, next_attempt_at)``, error codes from
``(state, error_code)``, and speed from the few newest rows of ``runs``. That keeps
``migrator status`` quick on millions of rows, even beside a running run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, desc, func, select
from sqlalchemy.exc import SQLAlchemyError

from migrator.errors import StoreError
from migrator.store.database import Database, _reason, utcnow
from migrator.store.schema import State, images, runs

TOP_ERROR_CODES = 5
"""Error codes listed per state, most common first."""
RECENT_RUNS = 5
"""Finished runs whose speed is averaged for the estimate of time left."""

# Outcomes in runs.counts that leave a row done.
_FINISHED_OUTCOMES = ("done", "updated")


@dataclass(frozen=True)
class ErrorCount:
    """How many rows in one state carry one error code, and one of their messages."""

    state: State
    code: str | None
    count: int
    sample_message: str | None


@dataclass(frozen=True)
class RunInfo:
    """The newest run: who, when, and how it ended (``ended_at`` None: still on,
    or killed before it could say)."""

    owner: str
    host: str
    pid: int
    started_at: dt.datetime
    ended_at: dt.datetime | None
    exit_reason: str | None


@dataclass(frozen=True)
class StoreStatus:
    """A snapshot of the job table for ``migrator status``."""

    states: dict[State, int]
    errors: list[ErrorCount] = field(default_factory=list)
    throughput: float | None = None
    """Rows done per second over the recent finished runs; None before any."""
    last_run: RunInfo | None = None
    as_of: dt.datetime = field(default_factory=utcnow)

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def remaining(self) -> int:
        """Rows a run still has to process: pending and claimed."""
        return self.states[State.PENDING] + self.states[State.CLAIMED]

    @property
    def eta_seconds(self) -> float | None:
        """Seconds a run at the recent speed would need for the remaining rows."""
        if not self.throughput:
            return None
        return self.remaining / self.throughput

    def to_json(self) -> dict[str, Any]:
        """The snapshot as plain JSON values, for ``--json``."""
        run = self.last_run
        return {
            "as_of": self.as_of.isoformat(),
            "total": self.total,
            "states": {state.value: count for state, count in self.states.items()},
            "remaining": self.remaining,
            "errors": [
                {
                    "state": error.state.value,
                    "code": error.code,
                    "count": error.count,
                    "sample_message": error.sample_message,
                }
                for error in self.errors
            ],
            "throughput_per_second": self.throughput,
            "eta_seconds": self.eta_seconds,
            "last_run": None
            if run is None
            else {
                "owner": run.owner,
                "host": run.host,
                "pid": run.pid,
                "started_at": run.started_at.isoformat(),
                "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                "exit_reason": run.exit_reason,
            },
        }


class Status(Database):
    """Summaries of the job table that stay fast at any size."""

    def status(self) -> StoreStatus:
        """Count rows by state and error, and estimate the time left."""
        try:
            with self.reading() as connection:
                states = {state: _count_in(connection, state) for state in State}
                errors = [
                    *_top_errors(connection, State.FAILED),
                    *_top_errors(connection, State.PENDING),
                ]
                throughput, last_run = _recent_runs(connection)
        except SQLAlchemyError as error:
            raise StoreError(f"job table cannot be read: {_reason(error)}") from error
        return StoreStatus(
            states=states, errors=errors, throughput=throughput, last_run=last_run
        )


def _count_in(connection: Connection, state: State) -> int:
    # One equality per state keeps each count a range of the state index, where a
    # GROUP BY may be planned as a scan of the whole table.
    query = select(func.count()).select_from(images).where(images.c.state == state)
    return int(connection.execute(query).scalar_one())


def _top_errors(connection: Connection, state: State) -> list[ErrorCount]:
    """The most common error codes among rows in ``state``, with a sample each.

    Pending rows count only when they carry an error: they are waiting to retry.
    """
    condition = images.c.state == state
    if state is State.PENDING:
        condition = condition & images.c.error_code.is_not(None)
    count = func.count().label("count")
    query = (
        select(images.c.error_code, count)
        .where(condition)
        .group_by(images.c.error_code)
        .order_by(desc(count), images.c.error_code)
        .limit(TOP_ERROR_CODES)
    )
    found = connection.execute(query).all()
    return [
        ErrorCount(state, code, number, _sample_message(connection, state, code))
        for code, number in found
    ]


def _sample_message(
    connection: Connection, state: State, code: str | None
) -> str | None:
    code_matches = (
        images.c.error_code.is_(None) if code is None else images.c.error_code == code
    )
    query = (
        select(images.c.error_message)
        .where(images.c.state == state, code_matches)
        .limit(1)
    )
    return connection.execute(query).scalar()


def _recent_runs(connection: Connection) -> tuple[float | None, RunInfo | None]:
    """Average speed of the newest finished runs, and the newest run of all."""
    newest = connection.execute(select(runs).order_by(desc(runs.c.id)).limit(1)).first()
    last_run = None
    if newest is not None:
        last_run = RunInfo(
            owner=newest.owner,
            host=newest.host,
            pid=newest.pid,
            started_at=newest.started_at,
            ended_at=newest.ended_at,
            exit_reason=newest.exit_reason,
        )

    finished = connection.execute(
        select(runs.c.started_at, runs.c.ended_at, runs.c.counts)
        .where(runs.c.ended_at.is_not(None))
        .order_by(desc(runs.c.id))
        .limit(RECENT_RUNS)
    ).all()
    rows_done = 0
    seconds = 0.0
    for started_at, ended_at, counts in finished:
        rows_done += _finished_rows(counts)
        seconds += max((ended_at - started_at).total_seconds(), 0.0)
    throughput = rows_done / seconds if rows_done and seconds > 0 else None
    return throughput, last_run


def _finished_rows(counts: str | None) -> int:
    """Rows a run left done, from the outcome counts it recorded."""
    try:
        parsed = json.loads(counts or "{}")
    except ValueError:
        return 0
    if not isinstance(parsed, dict):
        return 0
    return sum(
        value
        for key, value in parsed.items()
        if key in _FINISHED_OUTCOMES and isinstance(value, int)
    )
