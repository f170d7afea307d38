"""Loading manifest rows into the job table, idempotently, in large batches.

A row is identified by its key (its custom ID, else its source). Loading inserts
rows whose key is new and compares the others with what the table holds (by
content hash, then by metadata object when only its JSON spelling differs):

- the same content: nothing changes (``unchanged``);
- a ``done`` row with new metadata, requireSignedURLs or creator: pending again,
  action ``update``, so the next run edits the image instead of uploading it;
- a ``pending`` row: takes the new content and keeps its place in the queue (and
  its doubt: a run settles an earlier attempt before trying again);
- a ``failed`` row: takes the new content and is pending again with fresh
  attempts, which is how a user fixes a failed row and loads it back;
- a ``claimed`` row whose content changed is rejected: a run is uploading the old
  content right now, and the row can be loaded again once that run ends;
- a new source under a custom ID that may already be in Cloudflare (done, being
  updated, or in doubt) is rejected: uploads never replace an image's file;
- a key given twice in one load with different content is rejected: two images
  would share one ID, or one image would get two different sets of metadata.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError

from migrator.errors import StoreError
from migrator.manifest import ManifestRow, RowError
from migrator.manifest.batches import (
    ROW_WIDTH,
    RowBatch,
    batched,
    flatten,
    in_background,
)
from migrator.store.database import Database, _reason, utcnow
from migrator.store.schema import Action, State, images

logger = logging.getLogger(__name__)

LOAD_BATCH_ROWS = 10_000
"""Rows written per transaction by ``load``."""

TRANSACTION_ROWS = 100_000
"""Manifest lines written per transaction by ``load_batches``: each commit of a
SQLite job table syncs the disk and checkpoints its write-ahead log, which costs as
much as inserting thousands of rows; a transaction of this size still ends in
about a second."""

# The columns a ManifestRow fills, in the order of its fields.
_ROW_COLUMNS = (
    "key",
    "source",
    "source_kind",
    "custom_id",
    "metadata",
    "require_signed_urls",
    "creator",
    "manifest",
    "line",
    "content_hash",
)

# SQLite's default limit on parameters in one statement before version 3.32, and
# the number sqlite3 (Python 3.11 and later) names SQLITE_LIMIT_VARIABLE_NUMBER.
_SQLITE_OLD_VARIABLE_LIMIT = 999
_SQLITE_LIMIT_VARIABLE_NUMBER = 9
# Rows per INSERT statement on SQLite: measured fastest between 100 and 1000, and
# SQLite takes seconds to prepare a statement of ten thousand rows.
_SQLITE_ROWS_PER_STATEMENT = 250

_EXISTING_COLUMNS = (
    images.c.id,
    images.c.key,
    images.c.source,
    images.c.custom_id,
    images.c.metadata,
    images.c.require_signed_urls,
    images.c.creator,
    images.c.state,
    images.c.action,
    images.c.in_doubt,
    images.c.lease_owner,
    images.c.manifest,
    images.c.line,
    images.c.content_hash,
    images.c.updated_at,
)

_CONTENT: dict[str, Any] = {
    "source": bindparam("b_source"),
    "source_kind": bindparam("b_source_kind"),
    "custom_id": bindparam("b_custom_id"),
    "metadata": bindparam("b_metadata"),
    "require_signed_urls": bindparam("b_require_signed_urls"),
    "creator": bindparam("b_creator"),
    "manifest": bindparam("b_manifest"),
    "line": bindparam("b_line"),
    "content_hash": bindparam("b_content_hash"),
    "updated_at": bindparam("b_now"),
}
_BY_ID = images.c.id == bindparam("b_id")

# What a changed row becomes, by the state it was in (see the module docstring).
_CHANGE_STATEMENTS = {
    State.PENDING: update(images).where(_BY_ID).values(**_CONTENT),
    State.FAILED: update(images)
    .where(_BY_ID)
    .values(
        **_CONTENT,
        state=State.PENDING.value,
        attempts=0,
        next_attempt_at=bindparam("b_now"),
    ),
    State.DONE: update(images)
    .where(_BY_ID)
    .values(
        **_CONTENT,
        state=State.PENDING.value,
        action=Action.UPDATE.value,
        attempts=0,
        next_attempt_at=bindparam("b_now"),
        error_code=None,
        error_message=None,
        http_status=None,
    ),
}


@dataclass
class LoadCounts:
    """What a load did with the rows it was given."""

    loaded: int = 0
    """New rows, pending upload."""
    unchanged: int = 0
    """Rows the job table already held exactly so."""
    changed: int = 0
    """Rows whose content changed: pending again (update, or upload if not done)."""
    rejected: int = 0
    """Rows skipped: invalid in the manifest, or in conflict with the table."""

    @property
    def total(self) -> int:
        return self.loaded + self.unchanged + self.changed + self.rejected


RejectHandler = Callable[[RowError], None]


class Loading(Database):
    """Filling the job table from manifests."""

    def load(
        self,
        rows: Iterable[ManifestRow | RowError],
        on_reject: RejectHandler | None = None,
        *,
        batch_rows: int = LOAD_BATCH_ROWS,
    ) -> LoadCounts:
        """Insert new rows and reconcile known ones; see the module docstring.

        ``RowError`` items (from the manifest reader) and rows rejected here are
        counted and handed to ``on_reject`` as they occur. Each batch of
        ``batch_rows`` is one transaction: an interrupted load keeps every batch
        before the interruption, and loading again finishes the job.
        """
        # Reading and checking the manifest (Python) overlaps writing the previous
        # batch (mostly inside SQLite or the server), as far as the GIL allows.
        batches = in_background(batched(rows, batch_rows))
        return self.load_batches(batches, on_reject, transaction_rows=batch_rows)

    def load_batches(
        self,
        batches: Iterable[RowBatch],
        on_reject: RejectHandler | None = None,
        *,
        transaction_rows: int = TRANSACTION_ROWS,
    ) -> LoadCounts:
        """Load batches of manifest lines as ``load`` does, reporting errors as met.

        Batches are written in transactions of at least ``transaction_rows``
        lines (whole batches); a batch's errors are reported before its rows
        are written.
        """
        counts = LoadCounts()
        stamp = utcnow()
        report = on_reject or _ignore
        remaining = iter(batches)
        try:
            while self._load_transaction(
                remaining, transaction_rows, stamp, counts, report
            ):
                pass
        except SQLAlchemyError as error:
            raise StoreError(
                f"job table write failed after {counts.loaded:,} new rows: "
                f"{_reason(error)}; loading again resumes where it stopped"
            ) from error
        logger.debug(
            "job table loaded %s new, %s unchanged, %s changed, %s rejected",
            counts.loaded,
            counts.unchanged,
            counts.changed,
            counts.rejected,
        )
        return counts

    def _load_transaction(
        self,
        batches: Iterator[RowBatch],
        size: int,
        stamp: dt.datetime,
        counts: LoadCounts,
        report: RejectHandler,
    ) -> bool:
        """Load batches in one transaction until ``size`` lines; False at the end."""
        written = 0
        with self.transaction() as connection:
            for batch in batches:
                for error in batch.errors:
                    counts.rejected += 1
                    report(error)
                if batch.values:
                    self._load_batch(connection, batch, stamp, counts, report)
                written += len(batch) + len(batch.errors)
                if written >= size:
                    return True
        return False

    def _load_batch(
        self,
        connection: Connection,
        batch: RowBatch,
        stamp: dt.datetime,
        counts: LoadCounts,
        report: RejectHandler,
    ) -> None:
        # Rows are made into ManifestRow objects only when a key repeats within
        # the batch or is already in the table: a first load never needs them.
        values = batch.values
        keys = batch.keys()
        unique: dict[str, ManifestRow] | None = None
        if len(set(keys)) < len(keys):
            unique = _first_of_each_key(batch.rows(), counts, report)
            values = flatten(unique.values())
        before = connection.execute(select(func.max(images.c.id))).scalar() or 0
        inserted = self._insert_new(connection, values, stamp)
        counts.loaded += inserted
        if inserted == len(values) // ROW_WIDTH:
            return

        # Some keys were already there: compare those rows with the manifest's.
        # The rows this batch inserted are the ones above ``before`` stamped by
        # this load; anything else holding one of its keys was there first,
        # including rows another load on a PostgreSQL table committed after
        # ``before`` was read.
        if unique is None:
            unique = {row.key: row for row in batch.rows()}
        known = connection.execute(
            select(images.c.key, images.c.content_hash).where(
                images.c.key.in_(list(unique)),
                or_(images.c.id <= before, images.c.created_at != stamp),
            )
        ).all()
        differing = [key for key, hash_ in known if unique[key].content_hash != hash_]
        counts.unchanged += len(known) - len(differing)
        if not differing:
            return
        existing = connection.execute(
            select(*_EXISTING_COLUMNS).where(images.c.key.in_(differing))
        ).all()
        changes: dict[State, list[dict[str, Any]]] = {}
        for old in existing:
            row = unique[old.key]
            verdict = _compare(row, old, stamp)
            if verdict is None:
                counts.unchanged += 1
            elif isinstance(verdict, RowError):
                counts.rejected += 1
                report(verdict)
            else:
                counts.changed += 1
                changes.setdefault(verdict, []).append(_change_params(row, old, stamp))
        for state, params in changes.items():
            connection.execute(_CHANGE_STATEMENTS[state], params)

    def _insert_new(
        self, connection: Connection, values: list[Any], stamp: dt.datetime
    ) -> int:
        """Insert the rows whose key is new; return how many that was.

        ``values`` holds the rows' fields one after another, as in ``RowBatch``.
        """
        fixed = {
            "state": State.PENDING.value,
            "action": Action.UPLOAD.value,
            "now": _processed_stamp(connection, stamp),
        }
        if self.is_sqlite:
            return _sqlite_insert(connection, values, fixed)

        # PostgreSQL: the rows go to the driver ready-made, in one executemany
        # (psycopg pipelines it); SQLAlchemy's per-row parameter handling would
        # cost more than the server's insert.
        fixed |= {"attempts": 0, "in_doubt": False}
        params = [
            dict(zip(_ROW_COLUMNS, values[start : start + ROW_WIDTH], strict=True))
            | fixed
            for start in range(0, len(values), ROW_WIDTH)
        ]
        return max(
            connection.exec_driver_sql(self._postgres_insert(), params).rowcount, 0
        )

    def _postgres_insert(self) -> str:
        """The insert-unless-the-key-exists statement, with named parameters."""
        values: dict[str, Any] = {name: bindparam(name) for name in _ROW_COLUMNS}
        values |= {
            name: bindparam(name)
            for name in ("state", "action", "attempts", "in_doubt")
        }
        values |= {
            name: bindparam("now")
            for name in ("next_attempt_at", "created_at", "updated_at")
        }
        statement = (
            postgresql.insert(images)
            .values(values)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        return statement.compile(dialect=self.engine.dialect).string


def _sqlite_insert(
    connection: Connection, values: list[Any], fixed: dict[str, Any]
) -> int:
    """Insert rows into SQLite a few hundred to a statement, new keys only.

    One multi-row VALUES statement costs SQLite less than as many single-row
    executions, binds its parameters in C, and runs in one step during which the
    sqlite3 module lets the thread reading the manifest run. The statement is
    prepared once and reused.
    """
    limit = (_sqlite_variable_limit(connection) - 3) // ROW_WIDTH
    chunk = min(_SQLITE_ROWS_PER_STATEMENT, limit) * ROW_WIDTH
    head = [fixed["state"], fixed["action"], fixed["now"]]
    inserted = 0
    for start in range(0, len(values), chunk):
        params = head + values[start : start + chunk]
        result = connection.exec_driver_sql(
            _sqlite_values_insert((len(params) - 3) // ROW_WIDTH), tuple(params)
        )
        inserted += max(result.rowcount, 0)
    return inserted


@functools.lru_cache(maxsize=8)
def _sqlite_values_insert(count: int) -> str:
    """INSERT of ``count`` rows; ?1-?3 are state, action and the load's time."""
    per_row = len(_ROW_COLUMNS)
    tuples = ", ".join(
        "("
        + ", ".join(f"?{4 + row * per_row + column}" for column in range(per_row))
        + ", ?1, ?2, 0, 0, ?3, ?3, ?3)"
        for row in range(count)
    )
    columns = ", ".join(_ROW_COLUMNS)
    return (
        f"INSERT INTO images ({columns}, state, action, attempts, in_doubt, "  # noqa: S608  (no user text)
        f"next_attempt_at, created_at, updated_at) VALUES {tuples} "
        "ON CONFLICT (key) DO NOTHING"
    )


def _sqlite_variable_limit(connection: Connection) -> int:
    """How many parameters one SQLite statement may hold on this connection."""
    raw = connection.connection.dbapi_connection
    getlimit = getattr(raw, "getlimit", None)  # Python 3.11 and later
    if getlimit is None:
        return _SQLITE_OLD_VARIABLE_LIMIT
    return int(getlimit(_SQLITE_LIMIT_VARIABLE_NUMBER))


def _ignore(_error: RowError) -> None:
    pass


def _first_of_each_key(
    batch: Sequence[ManifestRow], counts: LoadCounts, report: RejectHandler
) -> dict[str, ManifestRow]:
    """Keep the first row of each key in a batch; judge the repeats against it."""
    unique: dict[str, ManifestRow] = {}
    for row in batch:
        first = unique.setdefault(row.key, row)
        if first is row:
            continue
        content = (
            first.source,
            first.custom_id,
            first.metadata_json,
            first.require_signed_urls,
            first.creator,
        )
        if first.content_hash == row.content_hash or _same_content(row, content):
            counts.unchanged += 1
        else:
            counts.rejected += 1
            report(_conflict(row, first.source, first.manifest, first.line))
    return unique


def _compare(row: ManifestRow, old: Any, stamp: dt.datetime) -> State | RowError | None:
    """Judge a manifest row against the table's row with the same key.

    Returns ``None`` when nothing changed, the state whose change statement
    applies, or the reason the row is rejected.
    """
    if _same_content(row, _content_of(old)):
        return None
    if old.updated_at == stamp:
        # Inserted or changed earlier in this same load.
        return _conflict(row, old.source, old.manifest, old.line)

    state = State(old.state)
    if state is State.CLAIMED:
        return RowError(
            row.manifest,
            row.line,
            "row",
            f"changed while run {old.lease_owner!r} is uploading it; "
            "load it again when that run ends",
        )
    may_exist = state is State.DONE or old.action == Action.UPDATE.value or old.in_doubt
    if row.source != old.source and may_exist:
        return RowError(
            row.manifest,
            row.line,
            "id",
            f"{row.custom_id!r} may already hold the image from {old.source} "
            f"({old.manifest}:{old.line}); uploads never replace an image's file, "
            "so give this source another id",
        )
    return state


def _same_content(row: ManifestRow, other: tuple[Any, ...]) -> bool:
    """Whether two rows differ only in how their metadata JSON is written.

    ``other`` holds source, custom ID, metadata JSON, requireSignedURLs and
    creator. Metadata from CSV is kept as written, so ``{"a": 1}`` and
    ``{"a":1}`` hash differently; the objects they write are what Cloudflare
    stores.
    """
    source, custom_id, metadata_json, require_signed_urls, creator = other
    if (
        row.source != source
        or row.custom_id != custom_id
        or bool(row.require_signed_urls) != bool(require_signed_urls)
        or row.creator != creator
        or (row.metadata_json is None) != (metadata_json is None)
    ):
        return False
    return metadata_json is None or row.metadata == json.loads(metadata_json)


def _content_of(row: Any) -> tuple[Any, ...]:
    """A job table row's content, in the order ``_same_content`` takes it."""
    return (
        row.source,
        row.custom_id,
        row.metadata,
        row.require_signed_urls,
        row.creator,
    )


def _conflict(
    row: ManifestRow, source: str, manifest: str | None, line: int | None
) -> RowError:
    """A key given twice in one load, with different content."""
    where = f"{manifest}:{line}"
    if row.source != source:
        return RowError(
            row.manifest,
            row.line,
            "id",
            f"{row.custom_id!r} is also the id of {source} ({where}); "
            "give each image its own id",
        )
    return RowError(
        row.manifest,
        row.line,
        "row",
        f"repeats {where} with different metadata, requireSignedURLs or creator",
    )


def _change_params(row: ManifestRow, old: Any, stamp: dt.datetime) -> dict[str, Any]:
    return {
        "b_id": old.id,
        "b_source": row.source,
        "b_source_kind": row.source_kind,
        "b_custom_id": row.custom_id,
        "b_metadata": row.metadata_json,
        "b_require_signed_urls": row.require_signed_urls,
        "b_creator": row.creator,
        "b_manifest": row.manifest,
        "b_line": row.line,
        "b_content_hash": row.content_hash,
        "b_now": stamp,
    }


def _processed_stamp(connection: Connection, stamp: dt.datetime) -> Any:
    """The load's timestamp as the driver takes it for a timestamp column.

    On SQLite the column type hands the driver a naive ``datetime``, which the
    sqlite3 module turns into text for every row; it is turned into that same
    text here, once per batch.
    """
    processor = images.c.created_at.type.bind_processor(connection.dialect)
    value = processor(stamp) if processor else stamp
    if connection.dialect.name == "sqlite" and isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return value
