"""Options several commands share, defined once so their help reads the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from migrator.lock import sqlite_path
from migrator.store import JobStore

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DB = "migrator.db"


def db_option(function: F) -> F:
    """``--db``: where the job table lives, a SQLite file or a PostgreSQL URL."""
    return click.option(
        "--db",
        default=DEFAULT_DB,
        show_default=True,
        envvar="MIGRATOR_DB",
        metavar="PATH|URL",
        help=(
            "Job table: a SQLite file, or a URL such as "
            "postgresql+psycopg://host/db to share one migration between hosts."
            "  [env: MIGRATOR_DB]"
        ),
    )(function)


def json_option(function: F) -> F:
    """``--json``: print one JSON document for scripts instead of text."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts, not text."
    )(function)


def open_store(db: str) -> JobStore:
    """Open (and upgrade) the job table named by ``--db``."""
    return JobStore.open(db)


def open_existing_store(db: str) -> JobStore:
    """Open the job table named by ``--db``; a SQLite file must already exist.

    For commands that only read or repair a table: a mistyped --db would
    otherwise create an empty one and report that all is well.
    """
    path = sqlite_path(db)
    if path is not None and not path.exists():
        raise click.BadParameter(
            f"no job table at {path}; check --db or MIGRATOR_DB", param_hint="--db"
        )
    return open_store(db)
