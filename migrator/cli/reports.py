"""Commands that report on the job table and repair it.

failures, retry and export read and write the job table only; verify and plan
also ask Cloudflare or the origins, through ``migrator.client``.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

import click

from migrator.cli import cli
from migrator.cli.logs import is_terminal
from migrator.cli.options import db_option, open_existing_store, writing_store
from migrator.cli.run import Duration
from migrator.rules import encode_metadata
from migrator.store import State, utcnow
from migrator.store.reports import MappingRow, ReportRow, RowFilter

F = TypeVar("F", bound=Callable[..., Any])

MANIFEST_COLUMNS = ("url", "file", "id", "metadata", "requireSignedURLs", "creator")
"""The columns ``migrator load`` reads; a failures CSV starts with them."""
FAILURE_COLUMNS = (
    "error_code",
    "error_message",
    "http_status",
    "attempts",
    "failed_at",
    "manifest",
    "line",
)
EXPORT_COLUMNS = ("source", "image_id", "variants", "uploaded_at")

_TABLE_HEAD_ROWS = 200
"""Rows read before the table's first line, to size the source column."""


def filter_options(function: F) -> F:
    """``--code``, ``--source``, ``--older-than``, ``--newer-than``: which failures."""
    options = [
        click.option(
            "--code",
            "codes",
            multiple=True,
            metavar="CODE",
            help="Only rows that failed with this error code (5455, http-404, ...); "
            "repeat for several.",
        ),
        click.option(
            "--source",
            "source_glob",
            metavar="GLOB",
            help="Only rows whose source matches this pattern, * and ? as in a "
            "shell, e.g. 'https://old.example.com/*'.",
        ),
        click.option(
            "--older-than",
            type=Duration(),
            help="Only rows that failed at least this long ago (30m, 2h, 7d).",
        ),
        click.option(
            "--newer-than",
            type=Duration(),
            help="Only rows that failed within this long (30m, 2h, 7d).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build_filter(
    codes: Iterable[str],
    source_glob: str | None,
    older_than: float | None,
    newer_than: float | None,
) -> RowFilter:
    """Turn the filter options (durations in seconds) into the store's filter."""
    now = utcnow()
    return RowFilter(
        error_codes=tuple(codes),
        source_glob=source_glob,
        changed_before=None if older_than is None else now - _seconds(older_than),
        changed_after=None if newer_than is None else now - _seconds(newer_than),
    )


def _seconds(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def output_option(function: F) -> F:
    """``-o/--output``: where a report goes, standard output by default."""
    return click.option(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        type=click.Path(dir_okay=False, allow_dash=True),
        help="Write here instead of standard output; the file appears complete "
        "or not at all.",
    )(function)


@cli.command()
@db_option
@filter_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "jsonl"]),
    default="table",
    show_default=True,
    help="table for people; csv is a manifest 'migrator load' reads back; "
    "jsonl for scripts.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Show at most this many rows."
)
@output_option
def failures(
    db: str,
    codes: tuple[str, ...],
    source_glob: str | None,
    older_than: float | None,
    newer_than: float | None,
    output_format: str,
    limit: int | None,
    output: str,
) -> None:
    """List failed rows: source, ID, error code, message, attempts.

    The CSV is itself a manifest: fix the rows (a new URL, a smaller file,
    valid metadata), then load the file back and run again. Columns after
    creator describe the failure and are ignored by load.

    \b
    Examples:
      migrator failures                              # a table of every failure
      migrator failures --code 5455 --code 5413      # bad format, too large
      migrator failures --source 'https://old.example.com/*' --newer-than 1d
      migrator failures --format csv -o fix.csv      # edit, then:
      migrator load fix.csv && migrator run
    """
    where = build_filter(codes, source_glob, older_than, newer_than)
    store = open_existing_store(db)
    try:
        rows = store.rows_in(State.FAILED, where, limit=limit)
        with click.open_file(
            output, "w", encoding="utf-8", atomic=output != "-"
        ) as out:
            if output_format == "csv":
                written = write_csv(
                    out, MANIFEST_COLUMNS + FAILURE_COLUMNS, rows, failure_record
                )
            elif output_format == "jsonl":
                written = write_jsonl(out, rows, failure_json)
            else:
                written = write_failure_table(out, rows)
    finally:
        store.close()

    if output_format == "table" or output != "-":
        click.echo(_failures_footer(written), err=True)


@cli.command()
@db_option
@filter_options
def retry(
    db: str,
    codes: tuple[str, ...],
    source_glob: str | None,
    older_than: float | None,
    newer_than: float | None,
) -> None:
    """Put failed rows back to pending, for the next run to try again.

    All failed rows, or those the filters match; each gets a full set of
    attempts again. Retry once the cause is gone (an origin back up, a quota
    raised): rows that failed for their content (5455 bad format, 5413 too
    large) fail again unless their source changed.

    \b
    Examples:
      migrator retry                                 # every failed row
      migrator retry --code http-502 --code http-503
      migrator retry --source 'https://cdn.example.com/*' --older-than 2h
    """
    where = build_filter(codes, source_glob, older_than, newer_than)
    with writing_store(db, existing=True) as store:
        count = store.retry_failed(where)
    if count:
        click.echo(f"{count} failed rows back to pending; 'migrator run' tries them.")
    else:
        click.echo("No failed rows matched; nothing changed.")


@cli.command()
@db_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="csv with variants separated by spaces, or one JSON object a line.",
)
@output_option
def export(db: str, output_format: str, output: str) -> None:
    """Write the mapping from each source to its image in Cloudflare.

    One line per done row: source, Cloudflare image ID, variants URLs and upload
    time, streamed in load order at any table size.

    \b
    Examples:
      migrator export -o mapping.csv
      migrator export --format jsonl | jq -r '.image_id'
    """
    write = write_mapping_csv if output_format == "csv" else write_mapping_jsonl
    store = open_existing_store(db)
    try:
        with click.open_file(
            output, "w", encoding="utf-8", atomic=output != "-"
        ) as out:
            written = write(out, store.mapping())
    finally:
        store.close()
    if output != "-":
        click.echo(f"{written} images written to {output}.", err=True)


def manifest_record(row: ReportRow) -> dict[str, Any]:
    """A row in the columns of a manifest, so that ``load`` takes it back as is."""
    return {
        "url": row.source if row.source_kind == "url" else "",
        "file": row.source if row.source_kind == "file" else "",
        "id": row.custom_id or "",
        "metadata": encode_metadata(row.metadata) if row.metadata is not None else "",
        "requireSignedURLs": "true" if row.require_signed_urls else "",
        "creator": row.creator or "",
    }


def failure_record(row: ReportRow) -> dict[str, Any]:
    """A failed row: its manifest columns, then why and when it failed."""
    return {
        **manifest_record(row),
        "error_code": row.error_code or "",
        "error_message": row.error_message or "",
        "http_status": row.http_status if row.http_status is not None else "",
        "attempts": row.attempts,
        "failed_at": _timestamp(row.updated_at),
        "manifest": row.manifest or "",
        "line": row.line if row.line is not None else "",
    }


def failure_json(row: ReportRow) -> dict[str, Any]:
    """A failed row as a JSON object that ``load`` also reads as a manifest line."""
    return {
        **failure_record(row),
        "metadata": row.metadata,
        "requireSignedURLs": row.require_signed_urls,
    }


def write_csv(
    out: IO[str],
    columns: tuple[str, ...],
    rows: Iterable[ReportRow],
    record: Callable[[ReportRow], dict[str, Any]],
) -> int:
    """Write a header and one CSV line per row; return how many rows."""
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(record(row))
        count += 1
    return count


def write_jsonl(
    out: IO[str],
    rows: Iterable[ReportRow],
    record: Callable[[ReportRow], dict[str, Any]],
) -> int:
    """Write one compact JSON object per row; return how many rows."""
    count = 0
    for row in rows:
        values = {k: (None if v == "" else v) for k, v in record(row).items()}
        out.write(json.dumps(values, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def write_mapping_csv(out: IO[str], rows: Iterable[MappingRow]) -> int:
    """Write the mapping as CSV, variants separated by spaces; return how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for source, image_id, variants, uploaded_at in rows:
        writer.writerow((source, image_id, " ".join(variants), _timestamp(uploaded_at)))
        count += 1
    return count


def write_mapping_jsonl(out: IO[str], rows: Iterable[MappingRow]) -> int:
    """Write the mapping as JSON Lines, variants a list; return how many."""
    count = 0
    for source, image_id, variants, uploaded_at in rows:
        record = {
            "source": source,
            "image_id": image_id,
            "variants": variants,
            "uploaded_at": _timestamp(uploaded_at) or None,
        }
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def write_failure_table(out: IO[str], rows: Iterator[ReportRow]) -> int:
    """Write failures as aligned columns; on a terminal, cut to fit its width.

    The source column is as wide as the longest source among the first rows, so
    the table streams without reading every row first. On a terminal a source
    takes at most half the width, shortened in the middle, and a message is
    shortened at its end; into a pipe or a file nothing is cut.
    """
    head = list(itertools.islice(rows, _TABLE_HEAD_ROWS))
    if not head:
        return 0

    width = shutil.get_terminal_size().columns if is_terminal(out) else None
    source_width = max(len("SOURCE"), *(len(_shown_source(row)) for row in head))
    if width is not None:
        source_width = min(source_width, width // 2)
    line = "{:<10} {:>5}  {:<" + str(source_width) + "}  {}"
    out.write(line.format("CODE", "TRIES", "SOURCE", "MESSAGE").rstrip() + "\n")

    count = 0
    for row in itertools.chain(head, rows):
        source = _shown_source(row)
        message = row.error_message or ""
        if width is not None:
            source = _cut_middle(source, source_width)
            message = _cut_end(message, max(width - source_width - 20, 20))
        code = row.error_code or "-"
        out.write(line.format(code, row.attempts, source, message).rstrip() + "\n")
        count += 1
    return count


def _shown_source(row: ReportRow) -> str:
    if row.custom_id:
        return f"{row.source} (id {row.custom_id})"
    return row.source


def _cut_middle(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` characters, keeping both ends."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


def _cut_end(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` characters, keeping its start."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _timestamp(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return (
        moment.astimezone(dt.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def _failures_footer(count: int) -> str:
    if count == 0:
        return "No failed rows match."
    return (
        f"{count} failed rows. To fix and reload them: migrator failures "
        "--format csv -o fix.csv; to try them again as they are: migrator retry"
    )
