"""Options several commands share, defined once so their help reads the same."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from migrator.client import CLOUDFLARE_API_URL, CLOUDFLARE_BATCH_URL
from migrator.lock import run_lock, sqlite_path
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


def _apply(function: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        function = option(function)
    return function


def rate_options(function: F) -> F:
    """``--tokens`` and ``--rate``: how fast Cloudflare may be asked."""
    return _apply(
        function,
        [
            click.option(
                "--tokens",
                type=click.IntRange(1, 64),
                default=1,
                show_default=True,
                envvar="MIGRATOR_TOKENS",
                help="Batch tokens used side by side; each adds --rate "
                "requests/s.  [env: MIGRATOR_TOKENS]",
            ),
            click.option(
                "--rate",
                type=click.FloatRange(0.1, 10_000),
                default=200.0,
                show_default=True,
                envvar="MIGRATOR_RATE",
                help="Requests per second per batch token, at most.  "
                "[env: MIGRATOR_RATE]",
            ),
        ],
    )


def cloudflare_options(function: F) -> F:
    """The account, its API token, where the two APIs are, and how fast to go."""
    return _apply(
        rate_options(function),
        [
            click.option(
                "--account-id",
                envvar="CLOUDFLARE_ACCOUNT_ID",
                help="Cloudflare account ID.  [env: CLOUDFLARE_ACCOUNT_ID]",
            ),
            click.option(
                "--api-token-file",
                type=click.Path(exists=True, dir_okay=False),
                envvar="MIGRATOR_API_TOKEN_FILE",
                help="Read the API token from this file instead of "
                "CLOUDFLARE_API_TOKEN.  [env: MIGRATOR_API_TOKEN_FILE]",
            ),
            click.option(
                "--api-url",
                default=CLOUDFLARE_API_URL,
                show_default=True,
                envvar="MIGRATOR_API_URL",
                help="Main API base URL (point it at the emulator to rehearse).  "
                "[env: MIGRATOR_API_URL]",
            ),
            click.option(
                "--batch-url",
                default=CLOUDFLARE_BATCH_URL,
                show_default=True,
                envvar="MIGRATOR_BATCH_URL",
                help="Batch API base URL.  [env: MIGRATOR_BATCH_URL]",
            ),
        ],
    )


def open_store(db: str) -> JobStore:
    """Open (and upgrade) the job table named by ``--db``."""
    return JobStore.open(db)


@contextlib.contextmanager
def writing_store(db: str, *, existing: bool = False) -> Iterator[JobStore]:
    """Open the job table for a command that writes it, holding its run lock.

    A SQLite job table is written by one process at a time (SQLite before 3.51.3
    can corrupt a WAL database when two connections write or checkpoint at the
    same instant), so a load, retry or repair refuses to start while a run holds
    the table, as a second run does. PostgreSQL tables take no lock.
    """
    with run_lock(db):
        store = open_existing_store(db) if existing else open_store(db)
        try:
            yield store
        finally:
            store.close()


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
