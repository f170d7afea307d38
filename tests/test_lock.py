"""The run lock: one run per SQLite job table, never blocked by a dead run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.errors import ExitCode, LockedError
from migrator.lock import TableLock, run_lock, sqlite_path

HOLD_LOCK = """
import sys, time
from pathlib import Path
from migrator.lock import TableLock
TableLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_in_subprocess(db: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_lock_on_the_same_table_is_refused_at_once(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with TableLock(db):
        started = time.monotonic()
        with pytest.raises(LockedError) as refused:
            TableLock(db).acquire()
        assert time.monotonic() - started < 1

    assert refused.value.exit_code == ExitCode.LOCKED
    assert str(db) in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)


def test_the_lock_is_free_again_once_released(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with TableLock(db) as first:
        assert first.held
    assert not first.held

    with TableLock(db) as second:
        assert second.held


def test_a_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    holder = hold_in_subprocess(db)
    try:
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            TableLock(db).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    holder = hold_in_subprocess(db)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()

    assert (tmp_path / "jobs.db.lock").exists()
    with TableLock(db) as lock:
        assert lock.held


def test_the_lock_file_is_private_to_its_owner(tmp_path: Path) -> None:
    with TableLock(tmp_path / "jobs.db") as lock:
        assert lock.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("migrator.db", "migrator.db"),
        ("/srv/jobs/migrator.db", "/srv/jobs/migrator.db"),
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:////srv/jobs/absolute.db", "/srv/jobs/absolute.db"),
        ("sqlite+pysqlite:///jobs.db?timeout=5", "jobs.db"),
    ],
)
def test_sqlite_tables_are_found_from_a_path_or_a_url(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://user@db.internal/images", "sqlite://", "sqlite:///:memory:"],
)
def test_tables_without_a_file_take_no_lock(url: str) -> None:
    assert sqlite_path(url) is None
    with run_lock(url) as lock:
        assert lock is None


def test_run_lock_creates_the_folder_of_a_new_table(tmp_path: Path) -> None:
    db = tmp_path / "new" / "jobs.db"
    with run_lock(str(db)) as lock:
        assert lock is not None
        assert lock.path == tmp_path / "new" / "jobs.db.lock"
