"""The job table as a work queue: claim rows, renew leases, record outcomes.

A row is leased to one runner (its ``owner``) for one attempt. Every outcome is
written back fenced on the row, the attempt number and the owner while the row is
still claimed, so a worker that stalled past its lease can never overwrite what a
newer attempt found. A claim whose lease ran out is claimed again, marked in doubt:
its upload may have reached Cloudflare, and the runner settles that before it
uploads again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    bindparam,
    case,
    func,
    select,
    true,
    update,
)

from migrator.store.database import Database, utcnow
from migrator.store.schema import Action, State, images

_CLAIM_COLUMNS = (
    images.c.id,
    images.c.attempts,
    images.c.key,
    images.c.source,
    images.c.source_kind,
    images.c.custom_id,
    images.c.image_id,
    images.c.metadata,
    images.c.require_signed_urls,
    images.c.creator,
    images.c.action,
    images.c.state,
    images.c.in_doubt,
)


@dataclass(frozen=True)
class Claim:
    """A row leased to a worker for one attempt."""

    row_id: int
    attempt: int
    owner: str
    key: str
    source: str
    source_kind: str
    custom_id: str | None
    image_id: str | None
    metadata: dict[str, Any] | None
    require_signed_urls: bool
    creator: str | None
    action: Action
    in_doubt: bool
    """An earlier attempt may have stored the image: settle before uploading."""


@dataclass(frozen=True)
class Completed:
    """The image is in Cloudflare: the row is done."""

    row_id: int
    attempt: int
    owner: str
    image_id: str
    variants: Sequence[str]
    uploaded_at: dt.datetime | None


@dataclass(frozen=True)
class Failed:
    """A permanent error, or the last attempt: the row fails with the reason kept."""

    row_id: int
    attempt: int
    owner: str
    error_code: str | None
    message: str
    http_status: int | None


@dataclass(frozen=True)
class Retried:
    """A transient error: the row waits until ``not_before`` for another attempt.

    ``in_doubt`` says the request may have reached Cloudflare (a dropped
    connection, a timeout, a 5xx): the next attempt settles first. Once set, it
    stays set until the row is done.
    """

    row_id: int
    attempt: int
    owner: str
    error_code: str | None
    message: str
    http_status: int | None
    not_before: dt.datetime
    in_doubt: bool


@dataclass(frozen=True)
class Released:
    """The attempt was never sent: the row is pending again, the attempt uncounted."""

    row_id: int
    attempt: int
    owner: str


Outcome = Completed | Failed | Retried | Released


class Queue(Database):
    """Claiming and settling rows; the runner's whole view of the job table."""

    def claim(self, owner: str, limit: int, lease: float) -> list[Claim]:
        """Lease up to ``limit`` rows to ``owner`` for ``lease`` seconds.

        Rows whose lease expired come first (their runner died), then pending rows
        whose time has come, oldest first. Each claim counts as an attempt.
        """
        now = utcnow()
        with self.transaction() as connection:
            rows = self._claimable(connection, now, limit)
            if not rows:
                return []
            connection.execute(
                update(images)
                .where(images.c.id.in_([row.id for row in rows]))
                .values(
                    state=State.CLAIMED.value,
                    attempts=images.c.attempts + 1,
                    lease_owner=owner,
                    lease_expires_at=now + dt.timedelta(seconds=lease),
                    updated_at=now,
                )
            )
        return [_claim_from_row(row, owner) for row in rows]

    def renew(self, owner: str, lease: float) -> int:
        """Extend every lease ``owner`` holds by ``lease`` seconds from now."""
        now = utcnow()
        with self.transaction() as connection:
            result = connection.execute(
                update(images)
                .where(images.c.state == State.CLAIMED.value)
                .where(images.c.lease_owner == owner)
                .values(lease_expires_at=now + dt.timedelta(seconds=lease))
            )
        return result.rowcount

    def record(self, outcomes: Sequence[Outcome]) -> int:
        """Write outcomes back in one transaction; return how many still applied.

        An outcome applies only while its row is claimed by the same owner at the
        same attempt; a stale one is dropped silently and not counted.
        """
        if not outcomes:
            return 0
        now = utcnow()
        applied = 0
        with self.transaction() as connection:
            for kind, statement in _RECORD_STATEMENTS.items():
                params = [
                    _record_params(outcome, now)
                    for outcome in outcomes
                    if isinstance(outcome, kind)
                ]
                if params:
                    applied += _execute_fenced(connection, statement, params)
        return applied

    def release(self, owner: str) -> int:
        """Put every row ``owner`` still holds back to pending, in doubt.

        For a runner that stops without knowing which of its claims were sent:
        each is marked in doubt, so the next attempt settles before uploading.
        """
        return self._release(images.c.lease_owner == owner)

    def release_abandoned(self) -> int:
        """Put every claimed row back to pending, in doubt, whoever held it.

        Only for a caller holding the job table's run lock, which proves that
        no other run is alive: the claims left are those of a run that was
        killed. A row with a custom ID is free at once (uploading it twice can
        only meet 5409); one without waits out its lease, since Cloudflare may
        still be storing the dead run's upload, which settling would not find.
        """
        now = utcnow()
        lease_end = func.coalesce(images.c.lease_expires_at, now)
        not_before = case((images.c.custom_id.is_(None), lease_end), else_=now)
        return self._release(true(), not_before)

    def _release(self, holder: Any, not_before: Any = None) -> int:
        now = utcnow()
        with self.transaction() as connection:
            result = connection.execute(
                update(images)
                .where(images.c.state == State.CLAIMED.value)
                .where(holder)
                .values(
                    state=State.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    in_doubt=True,
                    next_attempt_at=now if not_before is None else not_before,
                    updated_at=now,
                )
            )
        return result.rowcount

    def claimed_by(self, owner: str) -> int:
        """How many rows ``owner`` holds right now."""
        with self.reading() as connection:
            return connection.execute(
                select(func.count())
                .select_from(images)
                .where(images.c.state == State.CLAIMED.value)
                .where(images.c.lease_owner == owner)
            ).scalar_one()

    def _claimable(
        self, connection: Connection, now: dt.datetime, limit: int
    ) -> list[Any]:
        expired = (
            select(*_CLAIM_COLUMNS)
            .where(images.c.state == State.CLAIMED.value)
            .where(images.c.lease_expires_at <= now)
            .order_by(images.c.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(connection.execute(expired))
        if len(rows) < limit:
            pending = (
                select(*_CLAIM_COLUMNS)
                .where(images.c.state == State.PENDING.value)
                .where(images.c.next_attempt_at <= now)
                .order_by(images.c.next_attempt_at, images.c.id)
                .limit(limit - len(rows))
                .with_for_update(skip_locked=True)
            )
            rows.extend(connection.execute(pending))
        return rows


def _claim_from_row(row: Row[Any], owner: str) -> Claim:
    return Claim(
        row_id=row.id,
        attempt=row.attempts + 1,
        owner=owner,
        key=row.key,
        source=row.source,
        source_kind=row.source_kind,
        custom_id=row.custom_id,
        image_id=row.image_id,
        metadata=json.loads(row.metadata) if row.metadata else None,
        require_signed_urls=bool(row.require_signed_urls),
        creator=row.creator,
        action=Action(row.action),
        # A row still marked claimed had its lease run out mid-attempt.
        in_doubt=bool(row.in_doubt) or row.state == State.CLAIMED.value,
    )


def _fenced(statement: Any) -> Any:
    return (
        statement.where(images.c.id == bindparam("b_row_id"))
        .where(images.c.attempts == bindparam("b_attempt"))
        .where(images.c.lease_owner == bindparam("b_owner"))
        .where(images.c.state == State.CLAIMED.value)
    )


_LEASE_CLEARED = {"lease_owner": None, "lease_expires_at": None}

_RECORD_STATEMENTS: dict[type, Any] = {
    Completed: _fenced(
        update(images).values(
            state=State.DONE.value,
            action=Action.UPLOAD.value,
            image_id=bindparam("b_image_id"),
            variants=bindparam("b_variants"),
            uploaded_at=bindparam("b_uploaded_at"),
            done_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
            in_doubt=False,
            error_code=None,
            error_message=None,
            http_status=None,
            **_LEASE_CLEARED,
        )
    ),
    Failed: _fenced(
        update(images).values(
            state=State.FAILED.value,
            error_code=bindparam("b_error_code"),
            error_message=bindparam("b_message"),
            http_status=bindparam("b_http_status"),
            updated_at=bindparam("b_now"),
            **_LEASE_CLEARED,
        )
    ),
    Retried: _fenced(
        update(images).values(
            state=State.PENDING.value,
            error_code=bindparam("b_error_code"),
            error_message=bindparam("b_message"),
            http_status=bindparam("b_http_status"),
            next_attempt_at=bindparam("b_not_before"),
            in_doubt=images.c.in_doubt | bindparam("b_in_doubt"),
            updated_at=bindparam("b_now"),
            **_LEASE_CLEARED,
        )
    ),
    Released: _fenced(
        update(images).values(
            state=State.PENDING.value,
            attempts=images.c.attempts - 1,
            next_attempt_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
            **_LEASE_CLEARED,
        )
    ),
}


def _record_params(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    params: dict[str, Any] = {
        "b_row_id": outcome.row_id,
        "b_attempt": outcome.attempt,
        "b_owner": outcome.owner,
        "b_now": now,
    }
    if isinstance(outcome, Completed):
        params["b_image_id"] = outcome.image_id
        params["b_variants"] = json.dumps(list(outcome.variants))
        params["b_uploaded_at"] = outcome.uploaded_at
    elif isinstance(outcome, Failed | Retried):
        params["b_error_code"] = outcome.error_code
        params["b_message"] = outcome.message
        params["b_http_status"] = outcome.http_status
        if isinstance(outcome, Retried):
            params["b_not_before"] = outcome.not_before
            params["b_in_doubt"] = outcome.in_doubt
    return params


def _execute_fenced(
    connection: Connection, statement: Any, params: list[dict[str, Any]]
) -> int:
    # One executemany per kind of outcome; the fence is in the WHERE clause, and
    # both drivers sum the rows each set of parameters matched (SQLAlchemy's
    # supports_sane_multi_rowcount), which is how stale outcomes go uncounted.
    return connection.execute(statement, params).rowcount
