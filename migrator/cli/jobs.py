"""Commands that fill and inspect the job table: load, status, db."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click

from migrator.cli import cli
from migrator.cli.logs import progress_bar
from migrator.cli.options import db_option, json_option, open_store, writing_store
from migrator.errors import ExitCode, ManifestError
from migrator.lock import sqlite_path
from migrator.manifest import Format, IdFrom, RowError, detect_format
from migrator.manifest.batches import RowBatch, read_batches
from migrator.store import JobStore, LoadCounts, State, StoreStatus

logger = logging.getLogger(__name__)


@cli.command()
@click.argument(
    "manifests",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True),
)
@click.option(
    "--format",
    "format_",
    type=click.Choice([choice.value for choice in Format]),
    envvar="MIGRATOR_FORMAT",
    help="Read every MANIFEST in this format.  [default: from the extension: .txt, "
    ".csv, .jsonl (each also .gz); text for -]  [env: MIGRATOR_FORMAT]",
)
@click.option(
    "--id-from",
    type=click.Choice([choice.value for choice in IdFrom]),
    envvar="MIGRATOR_ID_FROM",
    help="Give rows without an id a custom ID made from the URL's path or the "
    "file's path relative to the manifest, so reruns can never duplicate an "
    "image.  [default: Cloudflare assigns IDs]  [env: MIGRATOR_ID_FROM]",
)
@db_option
@json_option
def load(
    manifests: tuple[str, ...],
    format_: str | None,
    id_from: str | None,
    db: str,
    as_json: bool,
) -> None:
    """Add the images listed in manifests to the job table.

    A manifest is text (one URL or file path a line), CSV with a header row
    (url or file, and optionally id, metadata, requireSignedURLs, creator) or
    JSON Lines with the same keys, any of them gzipped; - reads stdin.
    Every row is checked against Cloudflare's rules; a bad row is reported as
    FILE:LINE: field: problem and skipped, and the command then exits 2.
    Loading is idempotent: rows already in the job table are compared, and
    rows whose metadata changed are updated by the next run, not re-uploaded.

    \b
    Examples:
      migrator load urls.txt products.csv catalog.jsonl.gz
      find photos -name '*.jpg' | migrator load - --id-from path
      migrator load --db postgresql+psycopg://db.internal/migration export.csv
    """
    chosen = Format(format_) if format_ else None
    _check_formats(manifests, chosen)
    # The manifests are being read while the job table is locked and opened.
    batches = read_batches(
        manifests, format=chosen, id_from=IdFrom(id_from) if id_from else None
    )
    try:
        with writing_store(db) as store:
            counts = _load(store, batches)
    finally:
        batches.close()

    if as_json:
        click.echo(json.dumps(_counts_json(counts)))
    if counts.rejected:
        click.get_current_context().exit(ExitCode.USAGE)


def load_into(
    store: JobStore,
    manifests: Sequence[str],
    *,
    format: Format | None = None,
    id_from: IdFrom | None = None,
) -> LoadCounts:
    """Load ``manifests`` into ``store``, logging each rejected row and the counts.

    Rejected rows do not raise: the counts say how many there were.
    """
    batches = read_batches(manifests, format=format, id_from=id_from)
    try:
        return _load(store, batches)
    finally:
        batches.close()


def _load(store: JobStore, batches: Iterable[RowBatch]) -> LoadCounts:
    """Load batches into ``store`` under a progress bar; log rejects and counts."""
    bar = progress_bar(None, "loading", unit="row")
    try:
        counts = store.load_batches(_counted(batches, bar), on_reject=_log_rejected)
    finally:
        bar.close()

    logger.info(
        "job table %s: %s loaded, %s unchanged, %s changed, %s rejected",
        _table_name(store),
        f"{counts.loaded:,}",
        f"{counts.unchanged:,}",
        f"{counts.changed:,}",
        f"{counts.rejected:,}",
    )
    if counts.rejected:
        logger.warning(
            "manifest rows rejected: %s; fix them and load again "
            "(rows already loaded are left as they are)",
            f"{counts.rejected:,}",
        )
    return counts


@cli.command()
@db_option
@json_option
def status(db: str, as_json: bool) -> None:
    """Show how far the migration is: states, top errors, time left.

    Counts come from the job table's indexes, so this is quick on millions of
    rows and safe to run beside a running migration.

    \b
    Examples:
      migrator status
      migrator status --json | jq .states
    """
    path = sqlite_path(db)
    if path is not None and not path.exists():
        raise click.UsageError(
            f"no job table at {path}; load a manifest first (migrator load) "
            "or point --db / MIGRATOR_DB at an existing one"
        )
    store = open_store(db)
    try:
        snapshot = store.status()
        name = _table_name(store)
    finally:
        store.close()

    if as_json:
        click.echo(json.dumps({"db": name, **snapshot.to_json()}, indent=2))
    else:
        click.echo(_status_text(name, snapshot))


@cli.group()
def db() -> None:
    """Look after the job table itself."""


@db.command()
@db_option
def upgrade(db: str) -> None:
    """Bring the job table's schema up to date, keeping every row.

    Every command does this when it opens the job table; this command does it
    alone, for example before several hosts start on one PostgreSQL table.

    \b
    Examples:
      migrator db upgrade
      migrator db upgrade --db postgresql+psycopg://db.internal/migration
    """
    with writing_store(db) as store:
        revision = store.revision()
        name = _table_name(store)
    click.echo(f"job table {name} is at schema revision {revision}")


def _check_formats(manifests: Iterable[str], chosen: Format | None) -> None:
    """Refuse a manifest whose format cannot be told before loading any."""
    if chosen is not None:
        return
    for path in manifests:
        try:
            detect_format(path)
        except ManifestError as error:
            raise click.BadParameter(str(error), param_hint="MANIFEST") from error


def _counted(batches: Iterable[RowBatch], bar: Any) -> Iterator[RowBatch]:
    """Pass batches through, moving the progress bar by each one's lines."""
    for batch in batches:
        yield batch
        bar.update(len(batch) + len(batch.errors))


def _log_rejected(error: RowError) -> None:
    logger.warning(
        "%s",
        error,
        extra={"manifest": error.manifest, "line": error.line, "field": error.field},
    )


def _table_name(store: JobStore) -> str:
    """The job table as a user would name it: a file path, or a URL sans password."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def _counts_json(counts: LoadCounts) -> dict[str, int]:
    return {
        "loaded": counts.loaded,
        "unchanged": counts.unchanged,
        "changed": counts.changed,
        "rejected": counts.rejected,
    }


def _status_text(name: str, snapshot: StoreStatus) -> str:
    """The snapshot as a few aligned lines for a terminal."""
    lines = [f"Job table {name}: {snapshot.total:,} rows"]
    lines += [
        f"  {state.value:<8} {count:>12,}" for state, count in snapshot.states.items()
    ]
    for state, title in ((State.FAILED, "Failed"), (State.PENDING, "Waiting to retry")):
        errors = [error for error in snapshot.errors if error.state is state]
        if errors:
            lines.append(f"{title}, most common errors:")
        for error in errors:
            sample = (error.sample_message or "").splitlines()[0:1]
            lines.append(
                f"  {error.code or '-':<14} {error.count:>10,}  {''.join(sample)[:80]}"
            )

    run = snapshot.last_run
    if run is not None:
        lines.append(
            _run_text(run.started_at, run.ended_at, run.exit_reason, run.owner)
        )
    if snapshot.throughput:
        left = (
            f"{snapshot.remaining:,} rows left, about "
            f"{_duration(snapshot.eta_seconds or 0.0)}"
            if snapshot.remaining
            else "nothing left to do"
        )
        lines.append(
            f"Speed: {snapshot.throughput:,.1f} images/s over recent runs; {left}."
        )
    return "\n".join(lines)


def _run_text(
    started: dt.datetime, ended: dt.datetime | None, reason: str | None, owner: str
) -> str:
    start = started.strftime("%Y-%m-%d %H:%M:%S UTC")
    if ended is None:
        return f"Last run: {owner}, started {start}, not finished (running, or killed)"
    took = _duration((ended - started).total_seconds())
    return f"Last run: {owner}, started {start}, {reason or 'ended'} after {took}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
