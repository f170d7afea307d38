"""The job table's tables and the closed sets of values its rows take.

These ``Table`` objects are what the store's queries are written against. The
database itself is only ever created and changed by the Alembic revisions in
``migrations/``; a test compares the two so they cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class State(str, enum.Enum):
    """Where a row stands in its migration."""

    PENDING = "pending"
    """Waiting for an attempt, not before ``next_attempt_at``."""
    CLAIMED = "claimed"
    """Leased to one worker until ``lease_expires_at``; an attempt may be in flight."""
    DONE = "done"
    """The image is in Cloudflare as the row describes it."""
    FAILED = "failed"
    """Stopped for a permanent reason or out of attempts; ``retry`` revives it."""


class Action(str, enum.Enum):
    """What the next attempt on a pending row does."""

    UPLOAD = "upload"
    """Create the image."""
    UPDATE = "update"
    """The image exists; send the row's metadata, signed-URL flag and creator."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that goes in and comes out as an aware UTC ``datetime``.

    SQLite has no time zones, so values are stored there as naive UTC text; on
    PostgreSQL the column is ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(dt.timezone.utc)  # type: ignore[no-any-return]


SCHEMA_REVISION = "0001"
"""The newest Alembic revision in migrations/versions; a test keeps them equal."""

metadata = MetaData()

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    # Identity for idempotent loading: "id:<custom id>" or "source:<source>".
    Column("key", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_kind", String(8), nullable=False),
    Column("custom_id", Text),
    Column("image_id", Text),
    Column("metadata", Text),
    Column("require_signed_urls", Boolean, nullable=False, default=False),
    Column("creator", Text),
    Column("state", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", Text),
    Column("lease_expires_at", UTCDateTime),
    Column("in_doubt", Boolean, nullable=False, default=False),
    Column("error_code", Text),
    Column("error_message", Text),
    Column("http_status", Integer),
    Column("variants", Text),
    Column("uploaded_at", UTCDateTime),
    Column("manifest", Text),
    Column("line", Integer),
    Column("content_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime),
    Index("ix_images_key", "key", unique=True),
    Index("ix_images_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_images_state_error_code", "state", "error_code"),
)
"""One row per image to migrate; see ``State`` and ``Action`` for its life."""

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("exit_reason", Text),
    Column("counts", Text),
    Column("requests", Integer, nullable=False, default=0),
    Column("throttled", Integer, nullable=False, default=0),
)
"""One row per ``migrator run``: when, where, and how it ended."""
