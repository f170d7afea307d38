"""Opening a job table: the engine, its SQLite settings, upgrades, transactions.

A job table is a SQLite file (the default) or a PostgreSQL database shared by
several hosts. Either way it is opened here, upgraded to the newest schema by the
Alembic revisions in ``migrations/``, and written only inside ``transaction()``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from migrator.errors import StoreError
from migrator.store.schema import SCHEMA_REVISION

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite statement waits for another process's lock before failing."""

# Any constant works: it only has to be the same in every process that upgrades.
_UPGRADE_LOCK_ID = 0x6D696772

_Store = TypeVar("_Store", bound="Database")


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC: the only clock the job table uses."""
    return dt.datetime.now(dt.timezone.utc)


def database_url(target: str) -> str:
    """Turn ``--db`` into an SQLAlchemy URL: a URL stays, a path becomes SQLite."""
    if "://" in target:
        return target
    return f"sqlite+pysqlite:///{Path(target).expanduser().absolute()}"


def describe(target: str) -> str:
    """Name a job table for messages without ever showing a password."""
    try:
        return make_url(database_url(target)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


class Database:
    """An open job table: one engine and the transaction helpers every query uses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls: type[_Store], target: str, *, upgrade: bool = True) -> _Store:
        """Open (creating if needed) the job table at ``target`` and upgrade it.

        ``target`` is a file path or an SQLAlchemy URL such as
        ``postgresql+psycopg://host/db``. Raises ``StoreError`` with a message a
        user can act on when it cannot be opened.
        """
        url = database_url(target)
        try:
            engine = _create_engine(url)
        except (ArgumentError, ImportError) as error:
            raise StoreError(
                f"cannot open job table {describe(target)}: {error}"
            ) from error

        store = cls(engine)
        try:
            if upgrade:
                store.upgrade()
            else:
                with store.reading() as connection:
                    connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            engine.dispose()
            raise StoreError(
                f"cannot open job table {describe(target)}: {_reason(error)}"
            ) from error
        return store

    def close(self) -> None:
        """Release every connection; the store cannot be used afterwards."""
        self.engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Run a block of writes as one transaction, committed when it ends.

        On SQLite the transaction starts with ``BEGIN IMMEDIATE``: it takes the
        write lock up front, so two processes can never deadlock upgrading a read
        lock, and waits up to the busy timeout for it.
        """
        with self.engine.begin() as connection:
            yield connection

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """Run a block of reads; on SQLite it takes no write lock."""
        with self.engine.connect() as connection:
            connection = connection.execution_options(migrator_read_only=True)
            with connection.begin():
                yield connection

    def upgrade(self) -> None:
        """Bring the schema to the newest revision, in place, keeping every row."""
        with self.transaction() as connection:
            if not self.is_sqlite:
                # Several hosts may open a new PostgreSQL job table at once.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": _UPGRADE_LOCK_ID}
                )
            current = _stored_revision(connection)
            if current == SCHEMA_REVISION:
                return
            logger.info(
                "job table upgrading from %s to %s", current or "empty", SCHEMA_REVISION
            )
            _run_alembic_upgrade(connection)

    def revision(self) -> str | None:
        """The schema revision the job table is at, ``None`` when empty."""
        with self.reading() as connection:
            return _stored_revision(connection)


def _stored_revision(connection: Connection) -> str | None:
    """The revision Alembic recorded in the table, read without importing Alembic.

    Alembic takes a quarter of a second to import; every command opens the job
    table, and it is nearly always at the newest revision already.
    """
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(
        text("SELECT version_num FROM alembic_version")
    ).scalar_one_or_none()


def _run_alembic_upgrade(connection: Connection) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def alembic_config() -> Any:
    """Alembic's configuration for the revisions shipped in migrator.migrations."""
    from alembic.config import Config

    config = Config()
    scripts = resources.files("migrator.migrations")
    config.set_main_option("script_location", str(scripts))
    return config


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    if parsed.database in (None, "", ":memory:"):
        raise StoreError("the job table must be a file, not an in-memory database")
    _create_private_file(Path(parsed.database))
    # SQLite before 3.51.3 can corrupt a WAL database when two connections of one
    # process write or checkpoint at the same instant, so every thread shares a
    # single connection: a pool of one, handed out in turn.
    engine = create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=600,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _create_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only, if it does not exist."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise StoreError(
            f"cannot create job table {path}: {error.strerror}; "
            "check the directory exists and is writable"
        ) from error
    os.close(fd)


def _configure_sqlite_connection(
    dbapi_connection: Any, _record: ConnectionPoolEntry
) -> None:
    # Hand transaction control to the "begin" listener below (pysqlite otherwise
    # issues its own deferred BEGIN).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL syncs the WAL at every commit: a claim or an outcome that was committed
    # survives a power cut, which is what makes resuming exact.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    if connection.get_execution_options().get("migrator_read_only"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _reason(error: SQLAlchemyError) -> str:
    """The driver's own words for a database error, without SQL or parameters."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        return str(error.orig).strip().splitlines()[0]
    return str(error).splitlines()[0]
