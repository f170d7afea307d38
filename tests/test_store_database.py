"""Opening a job table: file permissions, upgrades, and schema drift."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrator.errors import StoreError
from migrator.store import JobStore
from migrator.store.database import alembic_config, describe
from migrator.store.schema import SCHEMA_REVISION, metadata


def test_new_sqlite_job_table_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"

    JobStore.open(str(path)).close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlite_job_table_runs_in_wal_mode(tmp_path: Path) -> None:
    store = JobStore.open(str(tmp_path / "jobs.db"))
    with store.reading() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    store.close()

    assert mode == "wal"


def test_migrations_build_exactly_the_schema_the_code_queries(store_url: str) -> None:
    store = JobStore.open(store_url)
    with store.reading() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    store.close()

    assert differences == []


def test_reopening_keeps_the_revision_and_the_rows(store_url: str) -> None:
    store = JobStore.open(store_url)
    run_id = store.start_run("first")
    revision = store.revision()
    store.close()

    store = JobStore.open(store_url)
    assert store.revision() == revision is not None
    assert store.start_run("second") == run_id + 1
    store.close()


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(StoreError, match="cannot"):
        JobStore.open(str(blocker / "jobs.db"))


def test_descriptions_never_show_a_password() -> None:
    described = describe("postgresql+psycopg://user:s3cret@db.internal/jobs")

    assert "s3cret" not in described
    assert "db.internal" in described


def test_the_schema_revision_constant_is_alembics_head() -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    assert head == SCHEMA_REVISION
