"""Reading the job table back out, and the repairs a user asks for by hand.

Reports stream rows of one state in id order, a page at a time, each page its own
short read: an export of millions of rows never holds a transaction (or, on SQLite,
the one shared connection) while the caller writes its output. Repairs move rows
back to pending: failed rows a user wants tried again, and done rows that verify
found missing or different in Cloudflare.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, select, true, update

from migrator.store.database import Database, utcnow
from migrator.store.schema import Action, State, images

PAGE_ROWS = 1000
"""Rows read per query while streaming a report."""

_LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class RowFilter:
    """Which rows a report or a repair applies to; every empty field matches all.

    ``source_glob`` takes ``*`` and ``?`` as in a shell. It is matched with SQL
    ``LIKE``, so on SQLite it ignores the case of ASCII letters, and on PostgreSQL
    it does not. ``changed_before`` and ``changed_after`` compare with the time the
    row last changed: for a failed row, when it failed.
    """

    error_codes: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    source_glob: str | None = None
    changed_before: dt.datetime | None = None
    changed_after: dt.datetime | None = None


@dataclass(frozen=True)
class ReportRow:
    """One row of the job table as reports show it."""

    row_id: int
    source: str
    source_kind: str
    custom_id: str | None
    image_id: str | None
    metadata: dict[str, Any] | None
    require_signed_urls: bool
    creator: str | None
    state: State
    action: Action
    attempts: int
    error_code: str | None
    error_message: str | None
    http_status: int | None
    variants: list[str]
    uploaded_at: dt.datetime | None
    manifest: str | None
    line: int | None
    updated_at: dt.datetime


class MappingRow(NamedTuple):
    """Where a done row's image is in Cloudflare."""

    source: str
    image_id: str
    variants: list[str]
    uploaded_at: dt.datetime | None


@dataclass(frozen=True)
class PlanCounts:
    """What the job table holds for a run, by what the run would do with it."""

    upload: int = 0
    """Pending rows whose next attempt creates the image."""
    update: int = 0
    """Pending rows whose image exists and whose metadata changed."""
    in_doubt: int = 0
    """Pending rows (upload or update) whose earlier attempt must be settled first."""
    claimed: int = 0
    """Rows leased to a run right now; an expired lease is claimed again."""
    done: int = 0
    failed: int = 0


class Reports(Database):
    """Failures, exports, verification input, plans, and putting rows back."""

    def rows_in(
        self, state: State, where: RowFilter = RowFilter(), *, limit: int | None = None
    ) -> Iterator[ReportRow]:
        """Yield the rows in ``state`` that match ``where``, in id order.

        Streams at any size, a page of ``PAGE_ROWS`` per query; rows that change
        state while the iterator runs may be seen or missed, never twice.
        """
        condition = and_(_in_state(state), _matching(where))
        for row in self._stream(_REPORT_COLUMNS, condition, limit):
            yield _report_row(row)

    def mapping(self) -> Iterator[MappingRow]:
        """Yield where each done row's image is, in id order, streamed like ``rows_in``.

        Reads only the four columns of the mapping: an export of millions of
        rows spends its time here.
        """
        for _, source, image_id, variants, uploaded_at in self._stream(
            _MAPPING_COLUMNS, _in_state(State.DONE), None
        ):
            yield MappingRow(
                source, image_id, json.loads(variants) if variants else [], uploaded_at
            )

    def _stream(
        self, columns: Sequence[Any], condition: ColumnElement[bool], limit: int | None
    ) -> Iterator[Sequence[Any]]:
        """Yield the ``columns`` (the id first) of matching rows, a page per read."""
        last_id = 0
        remaining = limit
        while remaining is None or remaining > 0:
            page_size = PAGE_ROWS if remaining is None else min(PAGE_ROWS, remaining)
            query = (
                select(*columns)
                .where(condition, images.c.id > last_id)
                .order_by(images.c.id)
                .limit(page_size)
            )
            with self.reading() as connection:
                page = connection.execute(query).all()
            yield from page
            if len(page) < page_size:
                return
            last_id = page[-1][0]
            if remaining is not None:
                remaining -= len(page)

    def count_in(self, state: State, where: RowFilter = RowFilter()) -> int:
        """How many rows in ``state`` match ``where``."""
        query = (
            select(func.count())
            .select_from(images)
            .where(images.c.state == state.value, _matching(where))
        )
        with self.reading() as connection:
            return int(connection.execute(query).scalar_one())

    def retry_failed(self, where: RowFilter = RowFilter()) -> int:
        """Put failed rows matching ``where`` back to pending; return how many.

        Each gets a full set of attempts again and is due at once. Its last
        error stays on the row until the next attempt replaces it.
        """
        now = utcnow()
        statement = (
            update(images)
            .where(images.c.state == State.FAILED.value, _matching(where))
            .values(
                state=State.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
            )
        )
        with self.transaction() as connection:
            return connection.execute(statement).rowcount

    def requeue_done(self, row_ids: Sequence[int], action: Action) -> int:
        """Put done rows back to pending for ``action``; return how many moved.

        ``Action.UPLOAD`` is for an image missing from Cloudflare: a row without a
        custom ID forgets the ID Cloudflare had assigned, since the new upload gets
        another. ``Action.UPDATE`` is for an image whose metadata differs. Rows no
        longer done (a run claimed them meanwhile) are left alone.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "state": State.PENDING.value,
            "action": action.value,
            "attempts": 0,
            "in_doubt": False,
            "next_attempt_at": now,
            "updated_at": now,
            "done_at": None,
        }
        if action is Action.UPLOAD:
            values["image_id"] = images.c.custom_id
            values["variants"] = None
            values["uploaded_at"] = None
        moved = 0
        with self.transaction() as connection:
            for start in range(0, len(row_ids), PAGE_ROWS):
                page = list(row_ids[start : start + PAGE_ROWS])
                statement = (
                    update(images)
                    .where(images.c.id.in_(page), images.c.state == State.DONE.value)
                    .values(**values)
                )
                moved += connection.execute(statement).rowcount
        return moved

    def plan_counts(self) -> PlanCounts:
        """Count rows by what a run would do with them, in one pass over the table."""
        query = select(
            images.c.state, images.c.action, images.c.in_doubt, func.count()
        ).group_by(images.c.state, images.c.action, images.c.in_doubt)
        with self.reading() as connection:
            groups = connection.execute(query).all()

        tally: dict[str, int] = {
            "upload": 0,
            "update": 0,
            "in_doubt": 0,
            "claimed": 0,
            "done": 0,
            "failed": 0,
        }
        for state, action, in_doubt, count in groups:
            if state == State.PENDING.value:
                tally[action] += count
                tally["in_doubt"] += count if in_doubt else 0
            else:
                tally[state] += count
        return PlanCounts(**tally)


def _in_state(state: State) -> ColumnElement[bool]:
    # The state is compared as an expression, not a column, so that no index on
    # it applies: each page then walks the primary key from where the last one
    # ended, one pass over the table in all. With the state index, SQLite sorts
    # every row in that state for every page, which made an export of 270,000
    # rows take 34 s and grows with the square of the size.
    return (images.c.state + "") == state.value


def _matching(where: RowFilter) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if where.error_codes:
        conditions.append(images.c.error_code.in_(where.error_codes))
    if where.actions:
        conditions.append(images.c.action.in_(where.actions))
    if where.source_glob is not None:
        conditions.append(
            images.c.source.like(_like_pattern(where.source_glob), escape=_LIKE_ESCAPE)
        )
    if where.changed_before is not None:
        conditions.append(images.c.updated_at < where.changed_before)
    if where.changed_after is not None:
        conditions.append(images.c.updated_at >= where.changed_after)
    return and_(true(), *conditions)


def _like_pattern(glob: str) -> str:
    """Translate a shell glob (``*``, ``?``) to a LIKE pattern, escaping the rest."""
    out = []
    for char in glob:
        if char in ("%", "_", _LIKE_ESCAPE):
            out.append(_LIKE_ESCAPE + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


_MAPPING_COLUMNS = (
    images.c.id,
    images.c.source,
    images.c.image_id,
    images.c.variants,
    images.c.uploaded_at,
)

_REPORT_COLUMNS = (
    images.c.id,
    images.c.source,
    images.c.source_kind,
    images.c.custom_id,
    images.c.image_id,
    images.c.metadata,
    images.c.require_signed_urls,
    images.c.creator,
    images.c.state,
    images.c.action,
    images.c.attempts,
    images.c.error_code,
    images.c.error_message,
    images.c.http_status,
    images.c.variants,
    images.c.uploaded_at,
    images.c.manifest,
    images.c.line,
    images.c.updated_at,
)
"""What a report reads of a row, in ``ReportRow``'s order."""


def _report_row(row: Sequence[Any]) -> ReportRow:
    # Unpacked by position: named access on SQLAlchemy rows was most of the time
    # an export of a million rows spent in Python.
    (
        row_id,
        source,
        source_kind,
        custom_id,
        image_id,
        metadata,
        require_signed_urls,
        creator,
        state,
        action,
        attempts,
        error_code,
        error_message,
        http_status,
        variants,
        uploaded_at,
        manifest,
        line,
        updated_at,
    ) = row
    return ReportRow(
        row_id=row_id,
        source=source,
        source_kind=source_kind,
        custom_id=custom_id,
        image_id=image_id,
        metadata=json.loads(metadata) if metadata else None,
        require_signed_urls=bool(require_signed_urls),
        creator=creator,
        state=State(state),
        action=Action(action),
        attempts=attempts,
        error_code=error_code,
        error_message=error_message,
        http_status=http_status,
        variants=json.loads(variants) if variants else [],
        uploaded_at=uploaded_at,
        manifest=manifest,
        line=line,
        updated_at=updated_at,
    )
