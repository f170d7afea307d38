"""One run at a time per SQLite job table, enforced by an advisory file lock.

A run holds ``flock(LOCK_EX)`` on ``<db>.lock`` for as long as it lives. The kernel
drops the lock when the process ends, however it ends (exit, crash, ``kill -9``,
power cut), so a lock left behind by a dead run never blocks the next one: the file
may stay on disk, but it is the flock that counts, not the file.

PostgreSQL job tables take no lock here. They are meant to be shared by several
hosts at once, and the job table's leases already keep two workers off one row; a
file lock on one host would protect nothing on another.

NOTE: ``flock`` is POSIX only, and advisory: it keeps out other migrator runs, not
other programs writing the database.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from migrator.errors import LockedError, StoreError

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def sqlite_path(url_or_path: str) -> Path | None:
    """Return the file behind a SQLite job table, or ``None`` for any other kind.

    Accepts what ``JobStore.open`` accepts: a plain path, or a SQLAlchemy URL.
    In-memory SQLite and server databases have no file and so no lock.
    """
    if "://" not in url_or_path:
        return Path(url_or_path)
    scheme, _, rest = url_or_path.partition("://")
    if not scheme.startswith("sqlite"):
        return None
    # sqlite:///relative.db and sqlite:////absolute.db: the path follows the
    # third slash; query options (?mode=...) are not part of it.
    path = rest.removeprefix("/").split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


class TableLock:
    """An exclusive, non-blocking lock on ``<db>.lock`` beside a SQLite job table.

    ``acquire`` either takes the lock at once or raises ``LockedError`` naming the
    process that holds it; it never waits. While held, the lock file says who
    holds it (pid, host, start time) so that the refusal can say so too.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``LockedError`` if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.db_path}: another migrator run holds this job "
                f"table ({holder}); wait for it to end, or stop it first"
            ) from None
        except BaseException:
            os.close(fd)
            raise

        # Written only once the lock is ours, so that a refused run never erases
        # the description of the run that holds it.
        os.ftruncate(fd, 0)
        os.write(fd, _holder_description().encode())
        self._fd = fd
        logger.debug("%s: lock taken", self.path)

    def release(self) -> None:
        """Give the lock up; the file stays, since deleting it would race a waiter."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
        logger.debug("%s: lock released", self.path)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> TableLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(url_or_path: str) -> Iterator[TableLock | None]:
    """Hold the run lock of a job table for the ``with`` block.

    Yields the held ``TableLock`` for a SQLite file, ``None`` for a PostgreSQL
    table (coordinated by leases, see the module docstring). Raises
    ``LockedError`` at once when another run holds the table.
    """
    path = sqlite_path(url_or_path)
    if path is None:
        yield None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = TableLock(path)
        lock.acquire()
    except OSError as error:
        raise StoreError(
            f"cannot lock job table {path}: {error.strerror}; "
            "check the directory exists and is writable"
        ) from error
    try:
        yield lock
    finally:
        lock.release()


def _holder_description() -> str:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": started}
    return json.dumps(holder) + "\n"


def _read_holder(fd: int) -> str:
    """Describe the process holding the lock from what it wrote, best effort."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        # The holder may be between taking the lock and writing its line.
        return "holder unknown"
